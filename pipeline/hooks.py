"""Forward hooks, only through context managers that remove them in ``finally``.

``record_layers`` stores the residual stream at chosen layers and, when asked, stops the
forward pass right after the last of them (no later blocks, no final norm, no LM head).
Hooks here only read; every edit of the residual stream is a protocol op installed by
:mod:`pipeline.steer.protocol` (through :func:`register_edit_hook`).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Iterator

import torch

from pipeline.models.adapters import LayerAdapter


class StopForward(Exception):
    """Raised by a hook to end a forward pass early; caught by :func:`run_until`."""


def _hidden(output: Any) -> torch.Tensor:
    """Block outputs are tensors in recent transformers and tuples in older ones."""
    return output[0] if isinstance(output, tuple) else output


def _replace_hidden(output: Any, new: torch.Tensor) -> Any:
    return (new, *output[1:]) if isinstance(output, tuple) else new


@contextmanager
def hooks(handles_factory: Callable[[], list[Any]]) -> Iterator[None]:
    """Register the hooks returned by ``handles_factory`` and always remove them."""
    handles: list[Any] = []
    try:
        handles.extend(handles_factory())
        yield
    finally:
        for h in handles:
            h.remove()


@contextmanager
def record_layers(model: Any, adapter: LayerAdapter, layers: list[int],
                  stop_after: bool = True) -> Iterator[dict[int, torch.Tensor]]:
    """Record ``(B, T, D)`` residual-stream outputs at ``layers`` into the yielded dict.

    With ``stop_after``, the hook on the deepest requested layer raises :class:`StopForward`
    once it has recorded, so blocks after it never run; wrap the call in :func:`run_until`.
    """
    store: dict[int, torch.Tensor] = {}
    last = max(layers)

    def make(layer: int) -> Callable[..., None]:
        def hook(_mod: Any, _args: Any, output: Any) -> None:
            store[layer] = _hidden(output).detach()
            if stop_after and layer == last:
                raise StopForward
        return hook

    def register() -> list[Any]:
        return [adapter.layer_module(model, layer).register_forward_hook(make(layer))
                for layer in sorted(set(layers))]

    with hooks(register):
        yield store


def register_edit_hook(module: Any, hook: Callable[..., Any]) -> Any:
    """Register an output-editing hook ahead of every hook that is not a gnomon edit.

    transformers 5 records ``output_hidden_states`` with its own forward hooks, installed on
    the first forward pass and kept; an edit appended after them would change what flows on
    but not what ``hidden_states[L]`` reports. Edits therefore go first, after the gnomon
    edits already there, so several edits on one layer still run in the order entered and
    readers (:func:`record_layers`, monitors, Hugging Face's recorder) see the edited stream.
    """
    hook._gnomon_edit = True  # type: ignore[attr-defined]
    earlier = [k for k, f in module._forward_hooks.items() if getattr(f, "_gnomon_edit", False)]
    handle = module.register_forward_hook(hook, prepend=True)
    for key in reversed(earlier):     # private OrderedDict: the order torch runs the hooks in
        module._forward_hooks.move_to_end(key, last=False)
    return handle


def run_until(model: Any, **inputs: Any) -> None:
    """Run a forward pass that a :func:`record_layers` hook may end early."""
    try:
        with torch.inference_mode():
            model(**inputs)
    except StopForward:
        pass
