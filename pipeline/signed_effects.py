"""Signed steering effects: a direction's score at ``-s``, ``0`` and ``+s`` per item, with
paired bootstrap intervals, as best-steer selection reads them (the measures and their
reasons are in :mod:`pipeline.fluency`'s module docstring).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from pipeline.concepts.behaviour import score_texts
from pipeline.direction import Direction
from pipeline.dose import word_ids, word_log_odds
from pipeline.evaluate import next_token_logp
from pipeline.fluency import DEFAULT_UNIT, _kl_rows, _signed_kls, text_loglik
from pipeline.models.loading import LoadedModel
from pipeline.steer import add_rows, generate

__all__ = ["BOOTSTRAP", "SignedEffects", "signed_effects"]


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
    rng = np.random.default_rng(seed)
    if words is not None:
        # one pass at -s and +s: the same next-token distributions give the KL and the log-odds
        n = len(prompts)
        base = next_token_logp(lm, prompts, (), chat) if base is None else base           # (n, V)
        rows = add_rows(lm, direction, [-strength] * n + [strength] * n, unit, force=force)  # type: ignore[arg-type]
        lp = torch.cat([next_token_logp(lm, list(prompts) * 2, [rows], chat), base])       # (3n, V): -s, +s, 0
        per_row = _kl_rows(base, lp[:2 * n])                                               # (2n,)
        kl_neg, kl_pos = float(per_row[:n].mean()), float(per_row[n:].mean())
        odds = word_log_odds(lp, word_ids(lm, words[0]), word_ids(lm, words[1]))            # (3n,)
        sc = odds.double().numpy().reshape(3, n)[[0, 2, 1]]                                 # -s, 0, +s
        scorer = "log-odds"
    elif scorer:
        kl_pos, kl_neg = _signed_kls(lm, direction, prompts, strength, unit, chat, force)
        n = len(prompts)
        rows = add_rows(lm, direction, [-strength] * n + [0.0] * n + [strength] * n, unit, force=force)  # type: ignore[arg-type]
        out = generate(lm, list(prompts) * 3, max_new_tokens=max_new_tokens, interventions=[rows], chat=chat)
        sc = score_texts(scorer, out).reshape(3, n)           # (3, prompts)
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
