"""How hard a direction can push before the text breaks, and how much it moves the concept.

**Fluency bound.** Adding ``s x unit x u`` to the residual stream changes the next-token
distribution; past some strength the text collapses (repeated tokens, another language).
:func:`fluency_bound` measures it: the mean next-token KL(unsteered || steered) on a few
prompts at a geometric grid of strengths (both signs), and returns the largest strength
whose KL stays under :data:`FLUENCY_KL` nats. One forward pass per grid point: cheap
enough to run before every ``gnomon steer``.

**Dose-response.** :func:`dose_response` steers at ``-s`` and ``+s`` and measures the
concept's behavioural score: the concept's scorer on greedy continuations when it has one
(VADER for sentiment), otherwise the likelihood preference, i.e. the mean per-token
log-likelihood of the positive validation texts minus that of the negative ones (teacher
forced; no generation). Its change from ``-s`` to ``+s`` is the effect; the selection of
``best-steer`` keeps the direction with the largest effect among those whose KL at ``s``
stays inside the bound.

**Signed effects.** :func:`signed_effects` is what ``best-steer`` is chosen on: the score
per item (prompt, or validation text) at ``-s``, ``0`` and ``+s``; the effect at each sign
against the unsteered score, with a paired bootstrap 95% interval over items. A direction
steers toward the positive label when ``+s`` raises the score and ``-s`` lowers it, each
interval clear of zero; "the largest change from -s to +s" alone also rewards a direction
that lowers the score at both signs less at one of them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from pipeline.chat import encode_texts
from pipeline.concepts.behaviour import score_texts
from pipeline.direction import Direction
from pipeline.evaluate import next_token_logp
from pipeline.models.loading import LoadedModel
from pipeline.steer import add_rows, apply, generate

__all__ = [
    "DEFAULT_FRACTION",
    "DEFAULT_UNIT",
    "FLUENCY_KL",
    "GRID",
    "DoseResponse",
    "FluencyBound",
    "dose_response",
    "fluency_bound",
    "likelihood_preference",
    "measure_kl",
    "text_loglik",
]

FLUENCY_KL = 1.0
"""Nats of mean next-token KL past which a steered text is no longer treated as fluent."""
GRID = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0)
DEFAULT_UNIT = "separation"
"""The unit ``best-steer`` is measured in and ``gnomon steer`` defaults to. Measured on
SmolLM2 (``bench/fluency.py``), the bound moves by about an order of magnitude between
layers in either unit (sentiment mean_diff: 4 separations / 0.3 residual norms at layer 8,
0.5 separations / under 0.05 residual norms at layer 16), so no fixed default strength is
safe in any unit: the default strength is measured per direction instead (half its bound)."""
DEFAULT_FRACTION = 0.5
"""``gnomon steer`` without ``--strength`` steers at this fraction of the measured bound."""


@dataclass(frozen=True)
class FluencyBound:
    unit: str
    bound: float
    """Largest grid strength whose KL (both signs) is <= ``kl_max``; 0.0 when none is."""
    kl_max: float
    kls: dict[float, float]
    """Measured grid: strength -> mean next-token KL (max over the two signs)."""

    def kl_at(self, strength: float) -> float | None:
        return self.kls.get(abs(float(strength)))

    def past(self, strength: float) -> bool:
        return abs(strength) > self.bound


def fluency_bound(lm: LoadedModel, direction: Direction, prompts: Sequence[str], unit: str = DEFAULT_UNIT,
                  kl_max: float = FLUENCY_KL, grid: Sequence[float] = GRID, chat: bool = False,
                  force: bool = False, extra: Sequence[float] = (), base: Any = None,
                  top_first: bool = False) -> FluencyBound:
    """The largest grid strength whose KL stays within ``kl_max``, found by bisecting the
    grid: KL grows with |s|, so this is the same strength an upward walk stops before, in
    ~log2(len(grid)) measurements instead of up to len(grid) (4 instead of 12 for a bound of
    3 separations). Strengths in ``extra`` (e.g. the one the user asked for) are measured too.
    ``base``: the prompts' unsteered next-token log-probabilities, when the caller has them.
    ``top_first``: measure the grid's largest strength first, and stop there when it is
    within the bound (the same answer under the same monotonicity; one measurement instead
    of four when a direction is gentle, five instead of four otherwise)."""
    if base is None:
        base = next_token_logp(lm, prompts, (), chat)   # the unsteered reference, once for the whole walk

    def kl(s: float) -> float:
        return measure_kl(lm, direction, prompts, s, unit, chat=chat, force=force, base=base)

    kls: dict[float, float] = {}
    points = sorted(float(s) for s in grid)
    lo, hi = -1, len(points)   # points[lo] is within the bound (-1: none known), points[hi] past it
    if top_first and points:
        kls[points[-1]] = kl(points[-1])
        lo, hi = (len(points) - 1, len(points)) if kls[points[-1]] <= kl_max else (-1, len(points) - 1)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        kls[points[mid]] = kl(points[mid])
        if kls[points[mid]] > kl_max:
            hi = mid
        else:
            lo = mid
    bound = points[lo] if lo >= 0 else 0.0
    for s in extra:
        if abs(float(s)) not in kls and s != 0:
            kls[abs(float(s))] = kl(abs(float(s)))
    return FluencyBound(unit=unit, bound=bound, kl_max=kl_max, kls=kls)


def measure_kl(lm: LoadedModel, direction: Direction, prompts: Sequence[str], strength: float,
               unit: str = DEFAULT_UNIT, chat: bool = False, force: bool = False, base: Any = None) -> float:
    """Mean next-token KL of adding the direction at ``+strength`` or ``-strength``, whichever
    is larger (``base``: the prompts' unsteered next-token log-probabilities, if known). Both
    signs run as one batch (the prompts twice, one strength per row)."""
    kl_pos, kl_neg = _signed_kls(lm, direction, prompts, strength, unit, chat, force, base)
    return max(kl_pos, kl_neg)


def _signed_kls(lm: LoadedModel, direction: Direction, prompts: Sequence[str], strength: float, unit: str,
                chat: bool, force: bool, base: Any = None) -> tuple[float, float]:
    """(KL at +strength, KL at -strength), from one forward pass over the prompts twice."""
    n = len(prompts)
    base = next_token_logp(lm, prompts, (), chat) if base is None else base
    iv = add_rows(lm, direction, [strength] * n + [-strength] * n, unit, force=force)  # type: ignore[arg-type]
    steered = next_token_logp(lm, list(prompts) * 2, [iv], chat)                       # (2n, V)
    per_row = _kl_rows(base, steered)                                                  # (2n,)
    return float(per_row[:n].mean()), float(per_row[n:].mean())


def _kl_rows(base: torch.Tensor, steered: torch.Tensor) -> torch.Tensor:
    """KL(base || steered) per row; ``steered`` stacks whole copies of ``base``'s rows (k n, V)."""
    k = steered.shape[0] // base.shape[0]
    return (base.exp().repeat(k, 1) * (base.repeat(k, 1) - steered)).sum(-1)


def likelihood_preference(lm: LoadedModel, pos_texts: Sequence[str], neg_texts: Sequence[str],
                          interventions: Sequence[Any] = ()) -> float:
    """Mean per-token log-likelihood of the positive texts minus the negative ones (nats)."""
    ll = text_loglik(lm, list(pos_texts) + list(neg_texts), interventions)
    return float(ll[:len(pos_texts)].mean() - ll[len(pos_texts):].mean())


def text_loglik(lm: LoadedModel, texts: Sequence[str], interventions: Sequence[Any] = ()) -> np.ndarray:
    """(len(texts),) mean per-token log-likelihood of each text, in one forward pass (explicit
    ``position_ids`` from the mask, so a row's value does not depend on its batch's padding)."""
    rows = encode_texts(lm.tokenizer, texts)   # a chat row's own ids: no second BOS
    width = max(len(r) for r in rows)
    pad = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else 0
    ids = torch.full((len(rows), width), pad, dtype=torch.long)                 # (B, T), left-padded
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for b, r in enumerate(rows):
        if r:
            ids[b, width - len(r):] = torch.tensor(r, dtype=torch.long)
            mask[b, width - len(r):] = 1
    ids, mask = ids.to(lm.device), mask.to(lm.device)
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.inference_mode(), apply(list(interventions)):
        logits = lm.model(input_ids=ids, attention_mask=mask, position_ids=pos).logits.float()  # (B, T, V)
        target = logits[:, :-1].gather(-1, ids[:, 1:, None])[..., 0]                         # (B, T-1)
        logp = target - torch.logsumexp(logits[:, :-1], -1)
        m = mask[:, 1:].float() * mask[:, :-1].float()
        per_text = (logp * m).sum(1) / m.sum(1).clamp(min=1)
    return per_text.cpu().numpy()


@dataclass(frozen=True)
class DoseResponse:
    strength: float
    unit: str
    score_neg: float
    """Behavioural score at ``-strength``."""
    score_pos: float
    kl: float
    """Next-token KL at ``+strength`` (max of the two signs)."""
    scorer: str

    @property
    def effect(self) -> float:
        """Score change from ``-s`` to ``+s`` (positive: steers the right way). Compared
        between directions at the same fraction of each one's fluency bound, it says how far
        a direction moves the concept at equal cost to the text."""
        return self.score_pos - self.score_neg

    def to_json(self) -> dict[str, Any]:
        return {"strength": self.strength, "unit": self.unit, "score_neg": self.score_neg,
                "score_pos": self.score_pos, "kl": self.kl, "effect": self.effect, "scorer": self.scorer}


def dose_response(lm: LoadedModel, direction: Direction, prompts: Sequence[str],
                  pairs: tuple[Sequence[str], Sequence[str]], strength: float, unit: str = DEFAULT_UNIT,
                  scorer: str | None = None, max_new_tokens: int = 12, chat: bool = False,
                  force: bool = False) -> DoseResponse:
    """Behavioural score at ``-strength`` and ``+strength`` (see the module doc)."""

    # -strength and +strength as one batch (the prompts twice, one strength per row)
    kl_pos, kl_neg = _signed_kls(lm, direction, prompts, strength, unit, chat, force)
    kls = [kl_neg, kl_pos]
    if scorer:
        n = len(prompts)
        both = add_rows(lm, direction, [-strength] * n + [strength] * n, unit, force=force)  # type: ignore[arg-type]
        out = generate(lm, list(prompts) * 2, max_new_tokens=max_new_tokens, interventions=[both], chat=chat)
        scores = [float(np.mean(score_texts(scorer, out[:n]))), float(np.mean(score_texts(scorer, out[n:])))]
    else:   # every pair text at -strength and at +strength, one forward pass
        texts = list(pairs[0]) + list(pairs[1])
        k, n_pos = len(texts), len(pairs[0])
        both = add_rows(lm, direction, [-strength] * k + [strength] * k, unit, force=force)  # type: ignore[arg-type]
        ll = text_loglik(lm, texts * 2, [both])
        scores = [float(ll[o:o + n_pos].mean() - ll[o + n_pos:o + k].mean()) for o in (0, k)]
    return DoseResponse(strength=float(strength), unit=unit, score_neg=scores[0], score_pos=scores[1],
                        kl=max(kls) if all(math.isfinite(k) for k in kls) else math.inf,
                        scorer=scorer or "likelihood_preference")
