"""Selection that accounts for the search: is the fit's best direction real, or the best of many draws?

A fit tries hundreds of candidates (methods x positions x layers) and :mod:`pipeline.selection`
picks one on the validation split. The winner's validation AUROC is then biased upward: on
a concept the model does not represent, the best of 360 candidates on 60 validation rows
still reaches ~0.65-0.70. So an alias is set only when two held-out tests pass:

1. **Search null (validation).** The observed statistic is the largest validation AUROC over
   the candidate set. Its null distribution comes from permuting the validation labels
   ``n_perm`` times, *the same permutation for every candidate* (so the candidates' correlation
   is kept), and taking the maximum over the same candidate set each time: the
   max-statistic permutation test (Westfall & Young 1993). ``search_p`` is the fraction of
   null maxima at or above the observed one (with the +1 correction of Phipson & Smyth 2010).
2. **Confirmation (test).** The winner, chosen on validation, is scored on the test split,
   which the search never saw: its test AUROC must clear a permutation null of the test
   labels (one direction, so no search correction), ``confirm_p``.

Both at level ``alpha`` (0.05). The candidates' scores are their projections on their own
unit vector; every candidate of one fit reads the same validation and test examples in the
same order (the contrast query orders rows by label and example id). Where that does not
hold (a candidate with other row counts) the candidate is left out of the null, never the
observed maximum, so the test stays conservative.

>>> rng = np.random.default_rng(0)
>>> v = {"val": (rng.normal(1, 1, 30), rng.normal(0, 1, 30)), "test": (rng.normal(1, 1, 30), rng.normal(0, 1, 30))}
>>> confirm_selection([("a", v)], "a").reliable
True
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from pipeline.metrics import _average_ranks

__all__ = ["ALPHA", "N_PERM", "Confirmation", "confirm_selection", "max_auroc_null"]

ALPHA = 0.05
N_PERM = 1000

Scores = dict[str, tuple[np.ndarray, np.ndarray]]
"""Split name -> (positive-class scores, negative-class scores)."""


@dataclass(frozen=True)
class Confirmation:
    """What the search-corrected selection found (recorded on the chosen version as tags)."""

    reliable: bool
    reason: str
    search_size: int
    """Candidates in the search (the null takes its maximum over these)."""
    best_val_auroc: float
    null_q95: float
    """95th percentile of the null's maximum validation AUROC."""
    search_p: float
    test_auroc: float
    test_null_q95: float
    confirm_p: float
    n_perm: int

    def tags(self) -> dict[str, str]:
        """The version tags that record the selection (``selection.*``)."""
        return {f"selection.{k}": (f"{v:.4g}" if isinstance(v, float) else str(v))
                for k, v in asdict(self).items()}


def _rank_rows(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    return _average_ranks(np.concatenate([np.asarray(pos, np.float64), np.asarray(neg, np.float64)]))


def max_auroc_null(ranks: np.ndarray, n_pos: int, n_perm: int, rng: np.random.Generator) -> np.ndarray:
    """(n_perm,) maxima over candidates of the AUROC under random labellings.

    ``ranks``: (k, n) average ranks of each candidate's n scores. One random set of
    ``n_pos`` "positive" rows per permutation, shared by every candidate: AUROC is the
    Mann-Whitney U of those rows' ranks."""
    k, n = ranks.shape
    n_neg = n - n_pos
    labels = np.zeros((n_perm, n))                                             # (P, n)
    picks = np.argsort(rng.random((n_perm, n)), axis=1)[:, :n_pos]
    np.put_along_axis(labels, picks, 1.0, axis=1)
    u = labels @ ranks.T - n_pos * (n_pos + 1) / 2.0                          # (P, k)
    return (u / (n_pos * n_neg)).max(axis=1)


def _auroc(ranks: np.ndarray, n_pos: int) -> np.ndarray:
    n_neg = ranks.shape[-1] - n_pos
    return (ranks[..., :n_pos].sum(-1) - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


def confirm_selection(candidates: Sequence[tuple[Hashable, Scores]], winner: Hashable | None,
                      n_perm: int = N_PERM, alpha: float = ALPHA, seed: int = 0) -> Confirmation:
    """Test the search (every candidate's ``val`` scores) and confirm ``winner`` on ``test``.

    ``candidates``: (key, {"val": (pos, neg), "test": (pos, neg)}) for every candidate the
    selection could have picked; ``winner``: the key it picked (None: it picked none)."""
    rng = np.random.default_rng(seed)
    nan = float("nan")
    with_val = [(k, s) for k, s in candidates if "val" in s and len(s["val"][0]) and len(s["val"][1])]
    if not with_val:
        return Confirmation(False, "no validation rows: nothing can confirm a choice", len(candidates),
                            nan, nan, nan, nan, nan, nan, n_perm)
    shape = max(((len(s["val"][0]), len(s["val"][1])) for _, s in with_val),
                key=lambda sh: sum(1 for _, s in with_val if (len(s["val"][0]), len(s["val"][1])) == sh))
    ranks = np.stack([_rank_rows(*s["val"]) for _, s in with_val if (len(s["val"][0]), len(s["val"][1])) == shape])
    observed = max(float(_auroc(_rank_rows(*s["val"]), len(s["val"][0]))) for _, s in with_val)
    null = max_auroc_null(ranks, shape[0], n_perm, rng)
    search_p = float((1 + (null >= observed - 1e-12).sum()) / (n_perm + 1))
    q95 = float(np.quantile(null, 0.95))
    size = len(candidates)
    base: dict[str, Any] = {"search_size": size, "best_val_auroc": observed, "null_q95": q95,
                            "search_p": search_p, "n_perm": n_perm}
    if winner is None:
        return Confirmation(False, "no candidate is above chance on validation", test_auroc=nan,
                            test_null_q95=nan, confirm_p=nan, **base)
    scores = dict(candidates)[winner]
    if "test" not in scores or not len(scores["test"][0]) or not len(scores["test"][1]):
        return Confirmation(False, "no test rows: the choice cannot be confirmed on a split the search "
                            "never saw", test_auroc=nan, test_null_q95=nan, confirm_p=nan, **base)
    tp, tn = scores["test"]
    t_ranks = _rank_rows(tp, tn)[None, :]
    test_auroc = float(_auroc(t_ranks, len(tp))[0])
    t_null = max_auroc_null(t_ranks, len(tp), n_perm, rng)
    confirm_p = float((1 + (t_null >= test_auroc - 1e-12).sum()) / (n_perm + 1))
    t_q95 = float(np.quantile(t_null, 0.95))
    if search_p > alpha:
        reason = (f"not reliable: the best validation AUROC {observed:.3f} over {size} candidates is within "
                  f"what the search finds on shuffled labels (95% of null maxima below {q95:.3f}; p = {search_p:.3f})")
    elif confirm_p > alpha:
        reason = (f"not confirmed: the chosen direction's test AUROC {test_auroc:.3f} is within chance "
                  f"(null 95th percentile {t_q95:.3f}; p = {confirm_p:.3f})")
    else:
        reason = (f"confirmed: test AUROC {test_auroc:.3f} (null 95th percentile {t_q95:.3f}, p = {confirm_p:.3f}); "
                  f"best validation AUROC {observed:.3f} over {size} candidates (search null 95th "
                  f"percentile {q95:.3f}, p = {search_p:.3f})")
    return Confirmation(search_p <= alpha and confirm_p <= alpha, reason, test_auroc=test_auroc,
                        test_null_q95=t_q95, confirm_p=confirm_p, **base)
