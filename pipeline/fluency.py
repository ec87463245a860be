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

from pipeline.direction import Direction
from pipeline.models.loading import LoadedModel

__all__ = [
    "DEFAULT_FRACTION",
    "DEFAULT_UNIT",
    "FLUENCY_KL",
    "GRID",
    "DoseResponse",
    "FluencyBound",
    "SignedEffects",
    "signed_effects",
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
    from pipeline.evaluate import next_token_logp

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
    from pipeline.evaluate import next_token_logp
    from pipeline.steer import add_rows

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
    from pipeline.chat import encode_texts
    from pipeline.steer import apply

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
    from pipeline.evaluate import SCORERS
    from pipeline.steer import add_rows, generate

    # -strength and +strength as one batch (the prompts twice, one strength per row)
    kl_pos, kl_neg = _signed_kls(lm, direction, prompts, strength, unit, chat, force)
    kls = [kl_neg, kl_pos]
    if scorer:
        n = len(prompts)
        both = add_rows(lm, direction, [-strength] * n + [strength] * n, unit, force=force)  # type: ignore[arg-type]
        out = generate(lm, list(prompts) * 2, max_new_tokens=max_new_tokens, interventions=[both], chat=chat)
        scores = [float(np.mean(SCORERS[scorer](out[:n]))), float(np.mean(SCORERS[scorer](out[n:])))]
    else:   # every pair text at -strength and at +strength, one forward pass
        texts = list(pairs[0]) + list(pairs[1])
        k, n_pos = len(texts), len(pairs[0])
        both = add_rows(lm, direction, [-strength] * k + [strength] * k, unit, force=force)  # type: ignore[arg-type]
        ll = text_loglik(lm, texts * 2, [both])
        scores = [float(ll[o:o + n_pos].mean() - ll[o + n_pos:o + k].mean()) for o in (0, k)]
    return DoseResponse(strength=float(strength), unit=unit, score_neg=scores[0], score_pos=scores[1],
                        kl=max(kls) if all(math.isfinite(k) for k in kls) else math.inf,
                        scorer=scorer or "likelihood_preference")


BOOTSTRAP = 2000
"""Paired bootstrap resamples for the effect intervals."""


def _ci(deltas: np.ndarray, rng: np.random.Generator) -> tuple[float, float]:
    """Percentile 95% interval of the mean of ``deltas`` (items resampled with replacement)."""
    idx = rng.integers(0, deltas.size, size=(BOOTSTRAP, deltas.size))
    means = deltas[idx].mean(axis=1)
    return float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


@dataclass(frozen=True)
class SignedEffects:
    """Effects of steering at ``+strength`` and ``-strength`` against no steering."""

    strength: float
    unit: str
    scorer: str
    items: int
    """Prompts (scorer) or validation texts (likelihood preference) the intervals resample."""
    base: float
    plus: float
    """Mean score change at ``+strength`` (should be > 0)."""
    plus_ci: tuple[float, float]
    minus: float
    """Mean score change at ``-strength`` (should be < 0)."""
    minus_ci: tuple[float, float]
    kl: float

    @property
    def effect(self) -> float:
        """Change from ``-s`` to ``+s``: how far the direction moves the concept at this cost."""
        return self.plus - self.minus

    @property
    def steers(self) -> bool:
        """Both signs move the score the intended way, each interval clear of zero."""
        return self.plus_ci[0] > 0 and self.minus_ci[1] < 0

    def why_not(self) -> str | None:
        if self.steers:
            return None
        parts = []
        if not self.plus_ci[0] > 0:
            parts.append(f"+s changes the score by {self.plus:+.3f} (95% CI {self.plus_ci[0]:+.3f}..{self.plus_ci[1]:+.3f})")
        if not self.minus_ci[1] < 0:
            parts.append(f"-s by {self.minus:+.3f} (95% CI {self.minus_ci[0]:+.3f}..{self.minus_ci[1]:+.3f})")
        return "; ".join(parts)

    def to_json(self) -> dict[str, Any]:
        return {"strength": self.strength, "unit": self.unit, "scorer": self.scorer, "items": self.items,
                "base": self.base, "plus": self.plus, "plus_ci": list(self.plus_ci), "minus": self.minus,
                "minus_ci": list(self.minus_ci), "effect": self.effect, "kl": self.kl, "steers": self.steers}


def signed_effects(lm: LoadedModel, direction: Direction, prompts: Sequence[str],
                   pairs: tuple[Sequence[str], Sequence[str]], strength: float, unit: str = DEFAULT_UNIT,
                   scorer: str | None = None, max_new_tokens: int = 12, chat: bool = False,
                   force: bool = False, seed: int = 0,
                   words: tuple[Sequence[str], Sequence[str]] | None = None, base: Any = None) -> SignedEffects:
    """Score at ``-s``, ``0``, ``+s`` per item, effects with paired bootstrap intervals (module doc).

    With ``words`` (the concept's readout, :mod:`pipeline.concepts.behaviour`), items are the
    prompts and an item's score is the next-token log-odds of the positive words over the
    negative ones after it (one forward pass of 3 x prompts rows: the report's ``log-odds``).
    With a scorer, items are the prompts (one greedy continuation each per strength, one batch
    of 3 x prompts rows); otherwise the mean over items is the likelihood preference, and an
    item is a (positive, negative) couple of validation texts, scored as the difference of their
    per-token log-likelihoods (the i-th of each class: contrast pairs when the dataset lists
    them in pair order; for independent texts, resampling couples still gives the variance of
    a difference of means). With unequal class counts each text is its own item, signed."""
    from pipeline.evaluate import SCORERS
    from pipeline.steer import add_rows, generate

    rng = np.random.default_rng(seed)
    if words is not None:
        # one pass at -s and +s: the same next-token distributions give the KL and the log-odds
        from pipeline.dose import _first_ids
        from pipeline.evaluate import next_token_logp

        n = len(prompts)
        base = next_token_logp(lm, prompts, (), chat) if base is None else base           # (n, V)
        rows = add_rows(lm, direction, [-strength] * n + [strength] * n, unit, force=force)  # type: ignore[arg-type]
        lp = torch.cat([next_token_logp(lm, list(prompts) * 2, [rows], chat), base])       # (3n, V): -s, +s, 0
        per_row = _kl_rows(base, lp[:2 * n])                                               # (2n,)
        kl_neg, kl_pos = float(per_row[:n].mean()), float(per_row[n:].mean())
        pos_ids, neg_ids = _first_ids(lm, words[0]), _first_ids(lm, words[1])
        odds = torch.logsumexp(lp[:, pos_ids], -1) - torch.logsumexp(lp[:, neg_ids], -1)   # (3n,)
        sc = odds.double().numpy().reshape(3, n)[[0, 2, 1]]                                 # -s, 0, +s
        scorer = "log-odds"
    elif scorer:
        kl_pos, kl_neg = _signed_kls(lm, direction, prompts, strength, unit, chat, force)
        n = len(prompts)
        rows = add_rows(lm, direction, [-strength] * n + [0.0] * n + [strength] * n, unit, force=force)  # type: ignore[arg-type]
        out = generate(lm, list(prompts) * 3, max_new_tokens=max_new_tokens, interventions=[rows], chat=chat)
        sc = np.asarray(SCORERS[scorer](out), dtype=np.float64).reshape(3, n)           # (3, prompts)
    else:
        kl_pos, kl_neg = _signed_kls(lm, direction, prompts, strength, unit, chat, force)
        texts = list(pairs[0]) + list(pairs[1])
        k, n_pos = len(texts), len(pairs[0])
        rows = add_rows(lm, direction, [-strength] * k + [0.0] * k + [strength] * k, unit, force=force)  # type: ignore[arg-type]
        ll = text_loglik(lm, texts * 3, [rows]).astype(np.float64).reshape(3, k)           # (3, texts)
        if 2 * n_pos == k:   # one item per (positive, negative) couple: what the texts share cancels
            sc = ll[:, :n_pos] - ll[:, n_pos:]
        else:
            sign = np.r_[np.full(n_pos, 1.0 / max(n_pos, 1)), np.full(k - n_pos, -1.0 / max(k - n_pos, 1))] * k / 2
            sc = ll * sign   # mean over items = preference (classes weighted equally)
    minus, plus = sc[0] - sc[1], sc[2] - sc[1]
    return SignedEffects(strength=float(strength), unit=unit, scorer=scorer or "likelihood_preference",
                         items=int(sc.shape[1]), base=float(sc[1].mean()), plus=float(plus.mean()),
                         plus_ci=_ci(plus, rng), minus=float(minus.mean()), minus_ci=_ci(minus, rng),
                         kl=max(kl_pos, kl_neg) if math.isfinite(kl_pos) and math.isfinite(kl_neg) else math.inf)
