"""Interventions on the residual stream: add, ablate, clamp, interpolate and mix directions.

Every operation is a rank-one (or, for LEACE, oblique rank-one) edit of the residual stream
``h`` (B, T, D) at the direction's layer, with ``u`` the unit vector and ``s = h @ u`` the
component along it:

- ``add``:         h + c u                     (activation addition; Turner et al. 2023,
                                                "Steering Language Models With Activation
                                                Engineering", arXiv:2308.10248)
- ``ablate``:      h - s u                     (directional ablation; Arditi et al. 2024,
                                                "Refusal in Language Models Is Mediated by a
                                                Single Direction", arXiv:2406.11717)
- LEACE ``ablate``: h - u_L ((h - mean) @ v_L)  (Belrose et al. 2023, arXiv:2306.03819; the
                                                eraser ``pipeline.fit.leace`` stores in extras)
- ``clamp``:       h + (value - s) u           (the component becomes exactly ``value``)
- ``interpolate``: clamp to (1 - t) neg_mean + t pos_mean

Each constructor (:mod:`pipeline.steer.ops`) returns an :class:`Intervention`, a context manager that registers one
forward hook per layer and removes every hook in ``finally`` (also when the block raises).
Interventions nest, and several can be passed together to :func:`apply` or
``generate(..., interventions=[...])``; hooks on the same layer run in the order entered.

>>> with add(lm, d, 4.0):                       # doctest: +SKIP
...     out = lm.model(**batch)                 # steered towards d's positive class
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import torch

from pipeline.direction import Direction
from pipeline.hooks import _hidden, _replace_hidden, register_edit_hook
from pipeline.models.loading import LoadedModel
from pipeline.types import GnomonError

Unit = Literal["separation", "resid_norm", "raw"]
UNITS: tuple[Unit, ...] = ("separation", "resid_norm", "raw")
Positions = Literal["all", "prompt", "generated"]
POSITIONS: tuple[Positions, ...] = ("all", "prompt", "generated")
EditKind = Literal["add", "ablate", "clamp", "leace"]


# ---- checks ------------------------------------------------------------------------------
def check_direction(lm: LoadedModel, direction: Direction, force: bool = False) -> None:
    """Refuse a direction that cannot (hidden size, site, layer) or should not (fingerprint)
    be applied to ``lm``. A direction with no recorded fingerprint (hand-made, read from a
    control-vector file) is accepted: there is nothing to compare."""
    p = direction.provenance
    name = p.concept or p.method or "direction"
    if p.hidden_size != lm.hidden_size:
        raise GnomonError(f"{name} has hidden size {p.hidden_size} but {lm.model_id} has "
                          f"{lm.hidden_size}: it was fitted on a different architecture")
    if p.site != "block_output":
        raise GnomonError(f"{name} was read at site {p.site!r}; interventions write at 'block_output' only")
    lm.check_layers([p.layer])
    if p.fingerprint and p.fingerprint != lm.fingerprint and not force:
        raise GnomonError(
            f"{name} was fitted on {p.model_id or 'another model'} (fingerprint {p.fingerprint}) but "
            f"{lm.model_id} has fingerprint {lm.fingerprint}; pass force=True (CLI: --force) to apply it anyway")


def scale_of(direction: Direction, unit: Unit) -> float:
    """The size of one ``strength`` unit, in residual-stream units along the unit vector."""
    if unit not in UNITS:
        raise GnomonError(f"unknown strength unit {unit!r}: choose from {', '.join(UNITS)}")
    value = {"separation": direction.separation, "resid_norm": direction.resid_norm,
             "raw": float(direction.vector.norm())}[unit]
    if not math.isfinite(value) or value == 0.0:
        raise GnomonError(f"the direction has no usable {unit} statistic ({value}); "
                          f"choose another --unit ({', '.join(u for u in UNITS if u != unit)})")
    return value


# ---- edits ------------------------------------------------------------------------------
class Edit:
    """One edit of the residual stream at one layer; tensors are cast once per dtype/device."""

    def __init__(self, kind: EditKind, vector: torch.Tensor, value: float = 0.0,
                 leace_v: torch.Tensor | None = None, leace_mean: torch.Tensor | None = None) -> None:
        self.kind = kind
        self.value = float(value)
        self._base = {"u": vector.detach().float()}
        if kind == "leace":
            assert leace_v is not None and leace_mean is not None
            self._base.update(v=leace_v.detach().float(), mean=leace_mean.detach().float())
        self._cache: dict[tuple[torch.dtype, torch.device], dict[str, torch.Tensor]] = {}

    def _t(self, h: torch.Tensor) -> dict[str, torch.Tensor]:
        key = (h.dtype, h.device)
        if key not in self._cache:
            self._cache[key] = {k: t.to(h.device, h.dtype) for k, t in self._base.items()}
        return self._cache[key]

    def __call__(self, h: torch.Tensor) -> torch.Tensor:
        """(B, T, D) -> (B, T, D), out of place."""
        t = self._t(h)
        u = t["u"]
        if self.kind == "add":                       # u already carries the coefficient
            return h + u
        if self.kind == "leace":
            return h - ((h - t["mean"]) @ t["v"]).unsqueeze(-1) * u
        s = (h @ u).unsqueeze(-1)                     # (B, T, 1)
        if self.kind == "ablate":
            return h - s * u
        return h + (self.value - s) * u               # clamp


def _merge_adds(edits: list[Edit]) -> list[Edit]:
    """Consecutive additions commute: sum them into one vector (one add per forward)."""
    out: list[Edit] = []
    for e in edits:
        if e.kind == "add" and out and out[-1].kind == "add":
            out[-1] = Edit("add", out[-1]._base["u"] + e._base["u"])
        else:
            out.append(e)
    return out


# ---- the context manager -----------------------------------------------------------------
@dataclass
class _Phase:
    """Which kind of forward pass is running: the prompt (empty KV cache) or a decode step."""

    prompt: bool | None = None
    """``None``: unknown (no cache seen); the hook falls back to the sequence length."""


def _cache_length(kwargs: dict[str, Any]) -> int | None:
    for key in ("cache", "past_key_values"):          # transformers 5 renamed it to ``cache``
        c = kwargs.get(key)
        if c is not None and hasattr(c, "get_seq_length"):
            return int(c.get_seq_length())
    return None


class Intervention:
    """Edits per layer, applied by forward hooks while the context is entered.

    ``positions``: ``all`` edits every token of every forward pass; ``prompt`` only passes
    with an empty KV cache (the initial prompt pass); ``generated`` only decode steps (the new
    tokens of a cached generation; the first new token is predicted from the unedited prompt).
    A pass is classified by a pre-hook on the base model that reads the cache length; without a
    cache object a pass of more than one token counts as the prompt.
    """

    def __init__(self, lm: LoadedModel, edits: dict[int | str, list[Edit]], positions: Positions = "all",
                 label: str = "") -> None:
        if positions not in POSITIONS:
            raise GnomonError(f"unknown positions {positions!r}: choose from {', '.join(POSITIONS)}")
        self.lm = lm
        # int keys: residual-stream layers; str keys: writer modules (``adapter.writers`` names).
        self.edits = {k: _merge_adds(es) for k, es in sorted(edits.items(), key=lambda kv: str(kv[0]))}
        self.positions = positions
        self.label = label
        self._stack: list[ExitStack] = []

    @property
    def layers(self) -> list[int]:
        return sorted(k for k in self.edits if isinstance(k, int))

    def _module(self, target: int | str) -> Any:
        model, adapter = self.lm.model, self.lm.adapter
        if isinstance(target, int):
            return adapter.layer_module(model, target)
        for _layer, name, module in adapter.writers(model):
            if name == target:
                return module
        raise GnomonError(f"{self.lm.model_id} has no residual writer named {target!r}")

    def _hook(self, target: int | str, phase: _Phase) -> Any:
        edits = self.edits[target]
        positions = self.positions

        def hook(_mod: Any, _args: Any, output: Any) -> Any:
            h = _hidden(output)
            if positions != "all":
                is_prompt = phase.prompt if phase.prompt is not None else h.shape[1] > 1
                if is_prompt != (positions == "prompt"):
                    return None
            for e in edits:
                h = e(h)
            return _replace_hidden(output, h)

        return hook

    def __enter__(self) -> Intervention:
        stack = ExitStack()
        try:
            model = self.lm.model
            phase = _Phase()
            if self.positions != "all":
                def pre(_mod: Any, args: Any, kwargs: dict[str, Any]) -> None:
                    n = _cache_length(kwargs)
                    phase.prompt = (n == 0) if n is not None else None
                h = model.base_model.register_forward_pre_hook(pre, with_kwargs=True)
                stack.callback(h.remove)
            for target in self.edits:
                h = register_edit_hook(self._module(target), self._hook(target, phase))
                stack.callback(h.remove)
        except BaseException:
            stack.close()
            raise
        self._stack.append(stack)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.pop().close()

    def __repr__(self) -> str:
        return f"Intervention({self.label or 'custom'}, targets={list(self.edits)}, positions={self.positions})"


@contextmanager
def apply(*interventions: Intervention | Iterable[Intervention]) -> Iterator[list[Intervention]]:
    """Enter several interventions at once (flattening lists); all are removed on exit."""
    flat: list[Intervention] = []
    for item in interventions:
        flat.extend([item] if isinstance(item, Intervention) else list(item))
    with ExitStack() as stack:
        for iv in flat:
            stack.enter_context(iv)
        yield flat
