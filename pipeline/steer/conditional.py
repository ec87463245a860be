"""Conditional steering (CAST: Lee et al. 2024, "Programming Refusal with Conditional
Activation Steering", arXiv:2409.05907): read a *condition* direction on the prompt and apply
a *behaviour* only to the rows whose reading crosses a threshold.

The condition is read the way the direction was fitted (as the monitor reads it): ``last``
reads ``h @ u`` at the prompt's last token, ``mean`` the mean of ``h @ u`` over its content
tokens by collection's pooling rule, at the condition's layer, on the prompt. The decision is
made once per row and kept for the whole generation, and the behaviour ops act on the rows that
fired at every position, prompt included, so a fired row generates exactly what the
unconditional behaviour generates and one that did not fire generates the unsteered text.
When the behaviour edits a layer before the condition's, the prompt pass would reach it before
the decision: :func:`pipeline.steer.protocol.decide` then reads the condition in a partial
prompt pass first (stopped after the condition's layer). Without that pass (a bare
:func:`~pipeline.steer.protocol.steering` context) such a behaviour starts at the first
generated token.

Where CAST compares a cosine similarity against a hand-picked threshold, gnomon picks the
threshold and the comparison from data: :func:`fit_threshold` takes the readings of the
condition's positive and negative validation prompts and returns the cut with the best F1
(positive prompts should fire), which ``gnomon condition fit`` stores in the catalog.

>>> rule = Conditional(d.layer, d.unit, 0.3, ">", add(lm, b, 2.0).ops)        # doctest: +SKIP
>>> texts, state = generate_rows(lm, prompts, [[rule]] * len(prompts))        # doctest: +SKIP
>>> rule.fired(state)                                                          # doctest: +SKIP
[True, False]
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from pipeline.steer import check_direction, flatten
from pipeline.steer.protocol import Op, State, Target, _Cast
from pipeline.types import GnomonError

Comparison = Literal[">", "<"]


@dataclass(frozen=True)
class Threshold:
    """A condition's decision rule and how well it separated the validation prompts."""

    threshold: float
    comparison: Comparison
    """``>``: fire when the reading is above the threshold; ``<``: below."""
    f1: float
    precision: float
    recall: float
    n_pos: int
    n_neg: int

    def fires(self, readings: np.ndarray | Sequence[float]) -> np.ndarray:
        r = np.asarray(readings, np.float64)
        return r > self.threshold if self.comparison == ">" else r < self.threshold


def _scores(fired: np.ndarray, truth: np.ndarray) -> tuple[float, float, float]:
    tp = float((fired & truth).sum())
    prec = tp / fired.sum() if fired.sum() else 0.0
    rec = tp / truth.sum() if truth.sum() else 0.0
    return (2 * prec * rec / (prec + rec) if prec + rec else 0.0), prec, rec


def fit_threshold(pos: Sequence[float] | np.ndarray, neg: Sequence[float] | np.ndarray) -> Threshold:
    """The threshold and comparison with the best F1 (the positive prompts are the ones that
    should fire) among the midpoints between consecutive distinct readings. Ties go to ``>``
    (the direction's positive class projects higher), then to the middle of the tying cuts."""
    p, n = np.asarray(pos, np.float64).ravel(), np.asarray(neg, np.float64).ravel()
    if p.size == 0 or n.size == 0:
        raise GnomonError(f"fitting a condition needs readings of both classes (got {p.size} positive, "
                          f"{n.size} negative validation prompts)")
    if not (np.isfinite(p).all() and np.isfinite(n).all()):
        raise GnomonError("condition readings must be finite numbers")
    x = np.concatenate([p, n])
    truth = np.concatenate([np.ones(p.size, bool), np.zeros(n.size, bool)])
    u = np.unique(x)
    cuts = np.concatenate([[u[0] - 1.0], (u[1:] + u[:-1]) / 2, [u[-1] + 1.0]])
    best: tuple[float, Comparison, list[float]] = (-1.0, ">", [])
    for comp in (">", "<"):
        for c in cuts:
            f1 = _scores(x > c if comp == ">" else x < c, truth)[0]
            if f1 > best[0] + 1e-12:
                best = (f1, comp, [float(c)])
            elif abs(f1 - best[0]) <= 1e-12 and comp == best[1]:
                best[2].append(float(c))
    f1, comp, ties = best
    thr = ties[len(ties) // 2]
    f1, prec, rec = _scores(x > thr if comp == ">" else x < thr, truth)
    return Threshold(thr, comp, f1, prec, rec, int(p.size), int(n.size))


@dataclass(eq=False)
class Conditional(Op, _Cast):
    """Apply ``then`` to the rows whose prompt reads past ``threshold`` on the condition."""

    layer: int
    """The condition's layer."""
    unit: torch.Tensor
    """(D,) the condition's unit vector."""
    threshold: float
    comparison: Comparison
    then: Sequence[Op]
    position: Literal["last", "mean"] = "last"
    """How the prompt is read (the condition direction's position policy)."""
    name: str = ""
    positions: Literal["all", "prompt", "generated"] = "all"

    def __post_init__(self) -> None:
        if self.comparison not in (">", "<"):
            raise GnomonError(f"unknown comparison {self.comparison!r}: use '>' or '<'")
        if not math.isfinite(self.threshold):
            raise GnomonError(f"the condition's threshold must be finite, got {self.threshold}")
        if self.position not in ("last", "mean"):
            raise GnomonError(f"a condition reads the prompt at 'last' or 'mean', not {self.position!r}")

    @property
    def layers(self) -> tuple[Target, ...]:  # type: ignore[override]
        return tuple(dict.fromkeys([self.layer, *(t for o in self.then for t in o.layers)]))

    @property
    def decide_layer(self) -> int:  # type: ignore[override]
        """Where the prompt is read (:func:`pipeline.steer.protocol.decide` reads it first
        when that is after a layer the behaviour edits)."""
        return self.layer

    def _read(self, hidden: torch.Tensor, state: State) -> torch.Tensor:
        """(b,) the prompt's reading per row."""
        u = self.unit.detach().float().to(hidden.device)
        proj = hidden.float() @ u                                               # (b, T)
        if self.position == "last":
            return proj[:, -1]                                                  # left padding
        if state.weights is None:
            raise GnomonError("a 'mean' condition needs the prompt's pooling weights (steering(..., weights=))")
        w = state.weights.to(hidden.device)[state.row_index(hidden.device)]     # (b, T)
        return (proj * w).sum(1)

    def __call__(self, hidden: torch.Tensor, state: State) -> torch.Tensor:
        rows = state.row_index(hidden.device)
        key = id(self)
        if state.layer == self.layer and state.prompt and key not in state.memory:
            reading = self._read(hidden, state)
            fired = reading > self.threshold if self.comparison == ">" else reading < self.threshold
            full = torch.zeros(state.batch, dtype=torch.bool, device=hidden.device)
            full[rows] = fired
            read = torch.full((state.batch,), float("nan"), device=hidden.device)
            read[rows] = reading
            state.memory[key], state.memory[-key] = full, read
        if key not in state.memory:
            return hidden
        mask = state.memory[key].to(hidden.device)[rows]                        # (b,)
        if not bool(mask.any()):
            return hidden
        outer = state.rows
        every = bool(mask.all())
        sub = hidden if every else hidden[mask]
        state.rows = rows if every else rows[mask]
        for o in self.then:
            if state.layer in o.layers and o.active(state):
                sub = o(sub, state)
        state.rows = outer
        if every:
            return sub
        out = hidden.clone()
        out[mask] = sub
        return out

    def fired(self, state: State) -> list[bool] | None:
        """Per row, whether the condition fired (None before the prompt was read)."""
        got = state.memory.get(id(self))
        return None if got is None else [bool(x) for x in got.tolist()]

    def readings(self, state: State) -> list[float] | None:
        """Per row, the prompt's reading on the condition (None before it was read)."""
        got = state.memory.get(-id(self))
        return None if got is None else [float(x) for x in got.tolist()]


def when(lm: Any, condition: Any, rule: Threshold | tuple[float, Comparison], then: Sequence[Any], *,
         force: bool = False, name: str = "") -> Conditional:
    """The rule "apply ``then`` (interventions or ops) when ``condition`` (a Direction) fires",
    checked against ``lm``; ``rule`` is a :func:`fit_threshold` result or ``(threshold, ">")``.

    >>> rule = when(lm, harmful, fit_threshold(pos, neg), [add(lm, refusal, 2.0)])   # doctest: +SKIP
    >>> texts, state = generate_rows(lm, prompts, [[rule]] * len(prompts))            # doctest: +SKIP
    """
    check_direction(lm, condition, force)
    threshold, comparison = (rule.threshold, rule.comparison) if isinstance(rule, Threshold) else rule
    ops = flatten(then)
    pos = condition.provenance.position
    return Conditional(condition.layer, condition.unit, float(threshold), comparison, ops,
                       position="mean" if pos == "mean" else "last", name=name or condition.provenance.concept)
