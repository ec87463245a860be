"""Interventions as an open protocol: one small object per operation, ``(hidden, state) -> hidden``.

An :class:`Op` declares its layer(s) and edits the residual stream ``h`` (b, T, D) of the rows
it was given; :func:`steering` installs one forward hook per layer and hands each op only the
rows that carry it, so one batch holds a different list of ops per row (the server batches
requests that steer with different directions); ops on a row compose in order (as
steering-vectors keeps one operator per hook). The rank-one edits of
:mod:`pipeline.steer.interventions`, same maths (``u`` the unit vector, ``s = h @ u``):
:class:`Add` h + v (v = strength x unit x u); :class:`Ablate` h - s u; :class:`Clamp`
h + (value - s) u; :class:`Erase` h - u_L ((h - mean) @ v_L) (LEACE, arXiv:2306.03819);
:class:`pipeline.steer.conditional.Conditional` applies another op per row only when a
condition read on the prompt crosses a threshold (CAST, Lee et al. 2024).
:func:`ops_of` turns any :class:`~pipeline.steer.interventions.Intervention` (``add``,
``ablate``, ``clamp``, ``interpolate``, ``mix``) into ops, so checks and units are shared and
a row steered through ops generates exactly what the context-manager path generates (tested
token for token).

>>> rows = [ops_of(add(lm, d, 2.0)), []]              # doctest: +SKIP
>>> generate_rows(lm, ["I went", "I went"], rows, 16)  # row 0 steered, row 1 not
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from pipeline.hooks import _hidden, _replace_hidden, register_edit_hook
from pipeline.models.loading import LoadedModel
from pipeline.types import GnomonError

Positions = Literal["all", "prompt", "generated"]


@dataclass
class State:
    """What the ops of one generation share; one per :func:`steering` context."""

    batch: int
    """Rows in the batch."""
    layer: int = -1
    """The layer whose output is being edited."""
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
    """Base of the protocol: ``layers`` and ``positions`` fields, ``__call__(hidden, state)``."""

    layers: tuple[int, ...] = ()
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


@dataclass(eq=False)
class Add(Op, _Cast):
    layer: int
    vector: torch.Tensor
    """(D,) or (b, 1, D): what is added (strength and unit already applied)."""
    positions: Positions = "all"

    @property
    def layers(self) -> tuple[int, ...]:  # type: ignore[override]
        return (self.layer,)

    def __call__(self, hidden: torch.Tensor, state: State) -> torch.Tensor:
        return hidden + self._t(hidden, v=self.vector)["v"]


@dataclass(eq=False)
class Ablate(Op, _Cast):
    layer: int
    unit: torch.Tensor
    positions: Positions = "all"

    @property
    def layers(self) -> tuple[int, ...]:  # type: ignore[override]
        return (self.layer,)

    def __call__(self, hidden: torch.Tensor, state: State) -> torch.Tensor:
        u = self._t(hidden, u=self.unit)["u"]
        return hidden - (hidden @ u).unsqueeze(-1) * u                         # (b, T, D)


@dataclass(eq=False)
class Clamp(Op, _Cast):
    layer: int
    unit: torch.Tensor
    value: float
    positions: Positions = "all"

    @property
    def layers(self) -> tuple[int, ...]:  # type: ignore[override]
        return (self.layer,)

    def __call__(self, hidden: torch.Tensor, state: State) -> torch.Tensor:
        u = self._t(hidden, u=self.unit)["u"]
        return hidden + (self.value - (hidden @ u).unsqueeze(-1)) * u


@dataclass(eq=False)
class Erase(Op, _Cast):
    """The LEACE eraser of a direction (extras ``leace_u``, ``leace_v``, ``leace_mean``)."""

    layer: int
    u: torch.Tensor
    v: torch.Tensor
    mean: torch.Tensor
    positions: Positions = "all"

    @property
    def layers(self) -> tuple[int, ...]:  # type: ignore[override]
        return (self.layer,)

    def __call__(self, hidden: torch.Tensor, state: State) -> torch.Tensor:
        t = self._t(hidden, u=self.u, v=self.v, mean=self.mean)
        return hidden - ((hidden - t["mean"]) @ t["v"]).unsqueeze(-1) * t["u"]


def ops_of(intervention: Any) -> list[Op]:
    """The ops an :class:`~pipeline.steer.interventions.Intervention` applies, in its order."""
    out: list[Op] = []
    pos = intervention.positions
    for target, edits in intervention.edits.items():
        if not isinstance(target, int):
            raise GnomonError(f"{intervention.label} edits residual writers ({target}); per-row ops act on "
                              "layer outputs only: use the context manager for it")
        for e in edits:
            b = e._base
            if e.kind == "add":
                out.append(Add(target, b["u"], pos))
            elif e.kind == "ablate":
                out.append(Ablate(target, b["u"], pos))
            elif e.kind == "clamp":
                out.append(Clamp(target, b["u"], e.value, pos))
            else:
                out.append(Erase(target, b["u"], b["v"], b["mean"], pos))
    return out


# ---- the runner ---------------------------------------------------------------------------
def _groups(rows: Sequence[Sequence[Op]], device: torch.device) -> list[tuple[list[Op], torch.Tensor | None]]:
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
    for key in ("cache", "past_key_values"):
        c = kwargs.get(key)
        if c is not None and hasattr(c, "get_seq_length"):
            return int(c.get_seq_length())
    return None


@contextmanager
def steering(lm: LoadedModel, rows: Sequence[Sequence[Op]], weights: torch.Tensor | None = None
             ) -> Iterator[State]:
    """Apply ``rows[i]`` (a list of ops) to batch row ``i`` of every forward pass inside the
    block; hooks are removed in ``finally``. ``weights``: the prompt's ``mean`` pooling weights
    (:func:`mean_weights`), needed only by ops that read a ``mean`` direction."""
    state = State(batch=len(rows), weights=weights)
    layers = sorted({layer for ops in rows for o in ops for layer in o.layers})
    lm.check_layers(layers)
    groups = _groups(rows, lm.device)

    def pre(_mod: Any, _args: Any, kwargs: dict[str, Any]) -> None:
        if state.deciding:
            state.prompt = True
            return
        n = _cache_length(kwargs)
        ids = kwargs.get("input_ids")
        state.prompt = (n == 0) if n is not None else (ids.shape[1] > 1 if ids is not None else None)

    def make(layer: int) -> Any:
        def hook(_mod: Any, _args: Any, output: Any) -> Any:
            h = _hidden(output)
            if h.shape[0] != state.batch:
                raise GnomonError(f"per-row steering was set up for {state.batch} rows but the batch has {h.shape[0]}")
            state.layer, out = layer, h
            if state.prompt is None:                          # no cache object: a long pass is the prompt
                state.prompt = h.shape[1] > 1
            for ops, idx in groups:
                mine = [o for o in ops if layer in o.layers and o.active(state)]
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
            return None if out is h else _replace_hidden(output, out)
        return hook

    with ExitStack() as stack:
        if layers:
            handle = lm.model.base_model.register_forward_pre_hook(pre, with_kwargs=True)
            stack.callback(handle.remove)
        for layer in layers:
            handle = register_edit_hook(lm.adapter.layer_module(lm.model, layer), make(layer))
            stack.callback(handle.remove)
        yield state


def decide(lm: LoadedModel, rows: Sequence[Sequence[Op]], state: State, ids: torch.Tensor,
           mask: torch.Tensor) -> None:
    """Let the ops that read the prompt (conditions) decide before the prompt pass, when one of
    them reads a layer after one it edits: a partial forward pass of the prompt, stopped after
    the deepest such layer. Then the prompt pass itself is steered for the rows that fired,
    so a fired row generates exactly what the unconditional steering generates. Call inside
    :func:`steering`; nothing to do (no pass) when every condition reads before it edits."""
    from pipeline.hooks import record_layers, run_until

    late = [o.decide_layer for ops in rows for o in ops
            if o.decide_layer is not None and o.decide_layer > min(o.layers)]
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


def generate_rows(lm: LoadedModel, prompts: Sequence[str], rows: Sequence[Sequence[Op]],
                  max_new_tokens: int = 32, chat: bool = False) -> tuple[list[str], State]:
    """Greedy continuations with ``rows[i]`` applied to prompt ``i``; also the final state
    (e.g. which conditions fired: :meth:`Conditional.fired`)."""
    from pipeline.steer.generate import continuation_texts, encode_prompts, greedy

    if len(rows) != len(prompts):
        raise GnomonError(f"{len(rows)} op lists for {len(prompts)} prompts: give one list per prompt")
    enc = encode_prompts(lm, prompts, chat)
    w = mean_weights(lm, enc["input_ids"], enc["attention_mask"])
    with steering(lm, rows, weights=w) as state:
        decide(lm, rows, state, enc["input_ids"], enc["attention_mask"])
        gen = greedy(lm, enc, max_new_tokens)
    return continuation_texts(lm, gen), state
