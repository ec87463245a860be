"""Control: does moving along the direction move behaviour linearly?

- :func:`dose_response`: add ``strength x unit`` of the direction (``pipeline.steer.add``)
  at >= 7 strengths, score the behaviour at each, and measure next-token KL against the
  unsteered model. The line is fitted only inside the *fluent range* (every strength from
  0 outwards with KL below the bound), and the saturation points say where the response
  flattens.
- :func:`interpolation`: clamp the component to ``(1 - t) neg_mean + t pos_mean``
  (``pipeline.steer.interpolate``) for t = 0 ... 1; is the score linear in t?

Scores come from a :class:`Scorer`: the log-odds of the concept's words (one forward pass
per condition), VADER on greedy continuations (sentiment), or a monitor's reading.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.concepts.behaviour import not_measured, readout, score_texts, scorer_names
from pipeline.direction import Direction
from pipeline.linearity.readout import (
    Readout,
    continuation_log_odds,
    encode,
    log_odds,
    next_token_kl,
    read,
    word_ids,
)
from pipeline.linearity.stats import LineFit, fluent_range, linear_fit, saturation
from pipeline.linearity.thresholds import DEFAULT, Thresholds
from pipeline.models.loading import LoadedModel
from pipeline.steer import add, generate, interpolate
from pipeline.types import GnomonError

__all__ = [
    "STRENGTHS",
    "TS",
    "DoseResponse",
    "Interpolation",
    "Scorer",
    "analyse_dose",
    "concept_scorer",
    "dose_response",
    "interpolation",
    "monitor_scorer",
]

STRENGTHS: tuple[float, ...] = (-4.0, -3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0, 4.0)
"""Default dose grid, in units of the class-mean separation (9 strengths)."""
TS: tuple[float, ...] = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
"""Default interpolation grid."""


@dataclass(frozen=True)
class Scorer:
    """A behavioural score of one condition: from its readout, and its continuations when
    ``needs_text`` (then ``generate`` is run under the same interventions)."""

    name: str
    fn: Callable[[Readout, list[str] | None], float]
    needs_text: bool = False
    live: Callable[[list[Any]], float] | None = None
    """When set, the score of a condition is ``live(interventions)`` (it runs the model
    itself, e.g. over a continuation); ``fn`` still scores readouts (composition)."""


def monitor_scorer(name: str) -> Scorer:
    """Mean reading of monitor ``name`` (a direction passed to :func:`read`)."""
    return Scorer(f"monitor:{name}", lambda r, _t: float(np.mean(r.monitors[name])))


def concept_scorer(lm: LoadedModel, concept: Any, kind: str = "auto", prompts: Sequence[str] | None = None,
                   max_new_tokens: int = 12, home: Any = None) -> Scorer:
    """The concept's readout (:mod:`pipeline.concepts.behaviour`): its scorer (``vader`` for
    sentiment) by default, or ``log-odds`` of its words: over a greedy continuation of
    ``prompts`` when given, else right after the prompt. A concept without a readout is
    refused with :func:`~pipeline.concepts.behaviour.not_measured`'s line. ``concept``: a
    name, or the :class:`~pipeline.concepts.record.Concept` the caller read already."""
    found = readout(concept, home) if isinstance(concept, str) else (
        concept if concept.words is not None or concept.scorer else None)
    concept = concept if isinstance(concept, str) else concept.name
    if found is None:
        raise GnomonError(not_measured(concept))
    if kind == "auto":
        kind = found.scorer or "log-odds"
    if kind in scorer_names():   # a registered scorer of generated text (vader, or one a plugin added)
        name = kind
        return Scorer(name, lambda _r, texts: float(np.mean(score_texts(name, texts or []))), needs_text=True)
    if kind == "log-odds":
        if found.words is None:
            raise GnomonError(not_measured(concept) + " (it has a scorer but no words for the log-odds)")
        pos, neg = (word_ids(lm, ws) for ws in found.words)
        live = None
        if prompts is not None:
            ps = list(prompts)
            live = lambda ivs: continuation_log_odds(lm, ps, ivs, pos, neg, max_new_tokens)
        return Scorer("log-odds", lambda r, _t: log_odds(r, pos, neg), live=live)
    raise GnomonError(f"unknown score kind {kind!r}: use auto, log-odds or {' or '.join(scorer_names())}")


@dataclass(frozen=True)
class DoseResponse:
    strengths: list[float]
    unit: str
    score: str
    scores: list[float]
    kl: list[float]
    fluent: tuple[float, float]
    """[lo, hi] strengths with next-token KL under the bound."""
    fit: LineFit
    """Least-squares line over the strengths inside ``fluent``."""
    saturation: dict[str, float | None]
    effect: float
    """|slope| x the largest |strength| inside the fluent range: how far the score moves."""
    kl_bound: float

    def to_json(self) -> dict[str, Any]:
        return {"strengths": self.strengths, "unit": self.unit, "score": self.score, "scores": self.scores,
                "kl": self.kl, "fluent_range": list(self.fluent), "kl_bound": self.kl_bound,
                "fit": self.fit.to_json(), "saturation": self.saturation, "effect": self.effect}


def analyse_dose(strengths: Sequence[float], scores: Sequence[float], kl: Sequence[float], *, unit: str = "separation",
                 score: str = "", th: Thresholds = DEFAULT) -> DoseResponse:
    """Fluent range, line fit inside it and saturation points of a measured curve."""
    if len(strengths) < 7:
        raise GnomonError(f"a dose-response needs at least 7 strengths, got {len(strengths)}")
    order = np.argsort(np.asarray(strengths, np.float64))
    s = [float(strengths[i]) for i in order]
    y = [float(scores[i]) for i in order]
    k = [float(kl[i]) for i in order]
    lo, hi = fluent_range(s, k, th.kl_bound)
    inside = [i for i, v in enumerate(s) if lo <= v <= hi]
    fit = linear_fit([s[i] for i in inside], [y[i] for i in inside])
    reach = max((abs(s[i]) for i in inside), default=0.0)
    effect = abs(fit.slope) * reach if np.isfinite(fit.slope) else 0.0
    return DoseResponse(strengths=s, unit=unit, score=score, scores=y, kl=k, fluent=(lo, hi), fit=fit,
                        saturation=saturation(s, y, fit.slope, th.saturation_fraction), effect=float(effect),
                        kl_bound=th.kl_bound)


def _conditions(lm: LoadedModel, prompts: Sequence[str], ivs_per_point: Sequence[list[Any]], scorer: Scorer,
                monitors: dict[str, Direction], max_new_tokens: int) -> tuple[list[float], list[float]]:
    """(scores, KL vs unsteered) per condition."""
    enc = encode(lm, prompts)
    base = read(lm, enc, [], monitors)
    scores, kls = [], []
    for ivs in ivs_per_point:
        r = read(lm, enc, ivs, monitors)
        if scorer.live is not None:
            scores.append(scorer.live(ivs))
        else:
            texts = generate(lm, list(prompts), max_new_tokens, interventions=ivs) if scorer.needs_text else None
            scores.append(scorer.fn(r, texts))
        kls.append(next_token_kl(base, r))
    return scores, kls


def dose_response(lm: LoadedModel, direction: Direction, prompts: Sequence[str], scorer: Scorer,
                  strengths: Sequence[float] = STRENGTHS, *, unit: str = "separation", th: Thresholds = DEFAULT,
                  monitors: dict[str, Direction] | None = None, max_new_tokens: int = 24) -> DoseResponse:
    """Steer with ``add`` at each strength (0 = unsteered) and analyse the curve."""
    ivs = [[] if s == 0 else [add(lm, direction, s, unit, force=True)] for s in strengths]  # type: ignore[arg-type]
    scores, kls = _conditions(lm, prompts, ivs, scorer, monitors or {}, max_new_tokens)
    return analyse_dose(strengths, scores, kls, unit=unit, score=scorer.name, th=th)


@dataclass(frozen=True)
class Interpolation:
    ts: list[float]
    scores: list[float]
    kl: list[float]
    fit: LineFit
    score: str

    def to_json(self) -> dict[str, Any]:
        return {"t": self.ts, "scores": self.scores, "kl": self.kl, "fit": self.fit.to_json(), "score": self.score}


def interpolation(lm: LoadedModel, direction: Direction, prompts: Sequence[str], scorer: Scorer,
                  ts: Sequence[float] = TS, *, monitors: dict[str, Direction] | None = None,
                  max_new_tokens: int = 24) -> Interpolation:
    """Clamp the component between the class means (t=0: negative, t=1: positive)."""
    ivs = [[interpolate(lm, direction, float(t), force=True)] for t in ts]
    scores, kls = _conditions(lm, prompts, ivs, scorer, monitors or {}, max_new_tokens)
    return Interpolation(ts=[float(t) for t in ts], scores=scores, kl=kls, fit=linear_fit(ts, scores),
                         score=scorer.name)
