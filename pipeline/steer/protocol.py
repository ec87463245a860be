"""Interventions as an open protocol: one small object per operation, ``(hidden, state) -> hidden``,
and the one hook installer every caller goes through.

An :class:`Op` declares its target(s) (a layer's output, or a residual writer module named by
the adapter) and edits the residual stream ``h`` (b, T, D) of the rows it was given. The rank-one
edits are in :mod:`pipeline.steer.edits` (add, ablate, clamp, LEACE erase), the conditional one
in :mod:`pipeline.steer.conditional` (CAST); the constructors of :mod:`pipeline.steer.ops` build
them from directions, with checks and units.

Two ways to install ops, one installer (:func:`_install`: one forward hook per target, removed
in ``finally``, plus a pre-hook on the base model that tells the prompt pass from decode steps):

- :func:`steering` ``(lm, rows)``: ``rows[i]`` is the op list of batch row ``i``, so one batch
  holds a different list per row (the server batches requests with different directions); rows
  with the same list share one call per op, others are indexed;
- :func:`applying` ``(lm, ops)``: the same ops on every row of any batch (what an
  :class:`~pipeline.steer.interventions.Intervention` enters; ``gnomon steer``, evaluate,
  monitor and the linearity report use it).

Ops on a row compose in order, as steering-vectors keeps one operator per hook.

>>> rows = [add(lm, d, 2.0).ops, []]                   # doctest: +SKIP
>>> generate_rows(lm, ["I went", "I went"], rows, 16)  # row 0 steered, row 1 not
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from pipeline.hooks import _hidden, _replace_hidden, record_layers, register_edit_hook, run_until
from pipeline.models.loading import LoadedModel
from pipeline.types import GnomonError

Positions = Literal["all", "prompt", "generated"]
POSITIONS: tuple[Positions, ...] = ("all", "prompt", "generated")
Target = int | str
"""A layer's output (int, numbered as ``hidden_states``) or a residual writer (``adapter.writers`` name)."""


@dataclass
class State:
    """What the ops of one generation share; one per installed context."""

    batch: int
    """Rows in the batch (with :func:`applying`: the batch of the pass being edited)."""
    layer: Target = -1
    """The target whose output is being edited."""
    rows: torch.Tensor | None = None
    """(b,) batch rows of the ``hidden`` an op is called with (None: every row, in order)."""
    prompt: bool | None = None
    """True on the prompt pass (empty KV cache), False on decode steps, None when unknown."""
    weights: torch.Tensor | None = None
    """(B, T) pooling weights of the prompt's tokens under the ``mean`` rule (rows sum to 1),
    for ops that read a ``mean``-position direction on the prompt; see :func:`mean_weights`."""
    memory: dict[int, torch.Tensor] = field(default_factory=dict)
    """Per-op memory across passes, keyed by ``id(op)`` (a conditional's per-row decisions)."""
    deciding: bool = False
    """True during :func:`decide`'s partial prompt pass."""

    def row_index(self, device: torch.device) -> torch.Tensor:
        return self.rows if self.rows is not None else torch.arange(self.batch, device=device)


class Op:
    """Base of the protocol: ``layers`` (targets) and ``positions`` fields, ``__call__(hidden, state)``."""

    layers: tuple[Target, ...] = ()
    positions: Positions = "all"
    decide_layer: int | None = None
    """Where an op reads the prompt to decide something (a condition), else None."""

    def active(self, state: State) -> bool:
        """Whether the op edits this pass (``prompt``: the prompt pass; ``generated``: decode steps)."""
        return self.positions == "all" or bool(state.prompt) == (self.positions == "prompt")

    def __call__(self, hidden: torch.Tensor, state: State) -> torch.Tensor:  # (b, T, D) -> (b, T, D)
        raise NotImplementedError


class _Cast:
    """Tensors cast once per (dtype, device)."""

    def _t(self, h: torch.Tensor, **base: torch.Tensor) -> dict[str, torch.Tensor]:
        cache: dict[Any, dict[str, torch.Tensor]] = self.__dict__.setdefault("_cache", {})
        key = (h.dtype, h.device)
        if key not in cache:
            cache[key] = {k: t.detach().float().to(h.device, h.dtype) for k, t in base.items()}
        return cache[key]


# ---- the installer ------------------------------------------------------------------------
Groups = list[tuple[list[Op], torch.Tensor | None]]


def _groups(rows: Sequence[Sequence[Op]], device: torch.device) -> Groups:
    """Rows with the same op list share one call per op; ``None`` indexes every row."""
    by_key: dict[tuple[int, ...], list[int]] = {}
    first: dict[tuple[int, ...], list[Op]] = {}
    for r, ops in enumerate(rows):
        key = tuple(id(o) for o in ops)
        if key:
            by_key.setdefault(key, []).append(r)
            first.setdefault(key, list(ops))
    return [(first[k], None if len(idx) == len(rows) else torch.tensor(idx, device=device))
            for k, idx in by_key.items()]


def _cache_length(kwargs: dict[str, Any]) -> int | None:
    for key in ("cache", "past_key_values"):          # transformers 5 renamed it to ``cache``
        c = kwargs.get(key)
        if c is not None and hasattr(c, "get_seq_length"):
            return int(c.get_seq_length())
    return None


def _module(lm: LoadedModel, target: Target) -> Any:
    if isinstance(target, int):
        return lm.adapter.layer_module(lm.model, target)
    for _layer, name, module in lm.adapter.writers(lm.model):
        if name == target:
            return module
    raise GnomonError(f"{lm.model_id} has no residual writer named {target!r}")


def _edit(groups: Groups, target: Target, state: State, h: torch.Tensor) -> torch.Tensor:
    """Each group's ops that act on ``target`` this pass, applied to the group's rows of ``h``."""
    state.layer, out = target, h
    for ops, idx in groups:
        mine = [o for o in ops if target in o.layers and o.active(state)]
        if not mine:
            continue
        state.rows = idx
        sub = out if idx is None else out[idx]
        for o in mine:
            sub = o(sub, state)
        if idx is None:
            out = sub
        else:
            out = out.clone() if out is h else out
            out[idx] = sub
    state.rows = None
    return out


@contextmanager
def _install(lm: LoadedModel, ops: Sequence[Op], groups: Groups, state: State, per_row: bool) -> Iterator[State]:
    """The one hook installer: an edit hook per target of ``ops`` (:func:`register_edit_hook`,
    so readers registered later see the edited stream) and the phase pre-hook; all removed in
    ``finally``, also when the forward pass raises."""
    targets = list(dict.fromkeys(t for o in ops for t in o.layers))

    def pre(_mod: Any, _args: Any, kwargs: dict[str, Any]) -> None:
        if state.deciding:
            state.prompt = True
            return
        n = _cache_length(kwargs)
        ids = kwargs.get("input_ids")
        state.prompt = (n == 0) if n is not None else (ids.shape[1] > 1 if ids is not None else None)

    def make(target: Target) -> Any:
        def hook(_mod: Any, _args: Any, output: Any) -> Any:
            h = _hidden(output)
            if not per_row:
                state.batch = h.shape[0]
            elif h.shape[0] != state.batch:
                raise GnomonError(f"per-row steering was set up for {state.batch} rows but the batch has {h.shape[0]}")
            if state.prompt is None:                          # no cache object: a long pass is the prompt
                state.prompt = h.shape[1] > 1
            out = _edit(groups, target, state, h)
            return None if out is h else _replace_hidden(output, out)
        return hook

    with ExitStack() as stack:
        modules = [(t, _module(lm, t)) for t in targets]
        if targets:
            handle = lm.model.base_model.register_forward_pre_hook(pre, with_kwargs=True)
            stack.callback(handle.remove)
        for target, module in modules:
            handle = register_edit_hook(module, make(target))
            stack.callback(handle.remove)
        yield state


def steering(lm: LoadedModel, rows: Sequence[Sequence[Op]], weights: torch.Tensor | None = None
             ) -> Any:
    """Context manager: apply ``rows[i]`` (a list of ops) to batch row ``i`` of every forward
    pass inside the block; yields the :class:`State`. ``weights``: the prompt's ``mean``
    pooling weights (:func:`mean_weights`), needed only by ops that read a ``mean`` direction."""
    state = State(batch=len(rows), weights=weights)
    lm.check_layers(sorted({t for ops in rows for o in ops for t in o.layers if isinstance(t, int)}))
    return _install(lm, [o for ops in rows for o in ops], _groups(rows, lm.device), state, per_row=True)


def applying(lm: LoadedModel, ops: Sequence[Op]) -> Any:
    """Context manager: apply ``ops`` in order to every row of every forward pass inside the
    block, whatever the batch size; yields the :class:`State`. The ops' layers are not checked
    again here: the constructors (:mod:`pipeline.steer.ops`) check them once."""
    ops = list(ops)
    return _install(lm, ops, [(ops, None)] if ops else [], State(batch=0), per_row=False)


def decide(lm: LoadedModel, rows: Sequence[Sequence[Op]], state: State, ids: torch.Tensor,
           mask: torch.Tensor) -> None:
    """Let the ops that read the prompt (conditions) decide before the prompt pass, when one of
    them reads a layer after one it edits: a partial forward pass of the prompt, stopped after
    the deepest such layer. Then the prompt pass itself is steered for the rows that fired,
    so a fired row generates exactly what the unconditional steering generates. Call inside
    :func:`steering`; nothing to do (no pass) when every condition reads before it edits."""
    late = [o.decide_layer for ops in rows for o in ops if o.decide_layer is not None
            and any(not isinstance(t, int) or o.decide_layer > t for t in o.layers)]
    if not late:
        return
    pos = (mask.long().cumsum(-1) - 1).clamp(min=0)
    state.deciding = True
    try:
        with record_layers(lm.model, lm.adapter, [max(late)], stop_after=True):
            run_until(lm.model, input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False)
    finally:
        state.deciding = False


def mean_weights(lm: LoadedModel, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, T) weights whose sum of ``w * score`` is the ``mean`` reading of each prompt: its
    content tokens (real, not special), leaving out the first when there are two or more
    (:data:`pipeline.types.MEAN_RULE`, as collection and the monitor pool)."""
    special = torch.isin(ids, torch.as_tensor(sorted(set(lm.tokenizer.all_special_ids)), dtype=ids.dtype,
                                              device=ids.device))
    content = mask.bool() & ~special                                           # (B, T)
    count = content.cumsum(1)
    first = content & (count == 1)
    keep = content & ~first
    w = torch.where(keep.sum(1, keepdim=True) > 0, keep, first).float()
    return w / w.sum(1, keepdim=True).clamp(min=1.0)
