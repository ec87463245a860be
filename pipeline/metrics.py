"""How well a direction separates two classes, from their projections on it.

All functions take the 1-D projection scores of each class (``x @ unit``) and work in
float64. ``split_metrics`` names them ``{split}_accuracy``, ``{split}_auroc`` and
``{split}_dprime`` as stored in ``Direction.metrics``.

>>> auroc(np.array([2.0, 3.0]), np.array([0.0, 1.0]))
1.0
"""

from __future__ import annotations

import math

import numpy as np

from pipeline.types import GnomonError


def _scores(x: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64).reshape(-1)
    if arr.size == 0:
        raise GnomonError(f"{name} class has no rows: cannot score a contrast with an empty class")
    return arr


def auroc(pos_scores: np.ndarray, neg_scores: np.ndarray) -> float:
    """Area under the ROC curve: P(random positive scores above random negative), ties 1/2.

    Computed as the Mann-Whitney U statistic from average ranks, so tied scores count half
    and the cost is one sort (O(n log n)), not the O(n_pos * n_neg) pair count.
    """
    p, n = _scores(pos_scores, "positive"), _scores(neg_scores, "negative")
    ranks = _average_ranks(np.concatenate([p, n]))
    u = ranks[: p.size].sum() - p.size * (p.size + 1) / 2.0
    return float(u / (p.size * n.size))


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks; tied values all get the mean of the ranks they span."""
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    # Start index of each run of equal values, and run lengths.
    starts = np.flatnonzero(np.r_[True, xs[1:] != xs[:-1]])
    lengths = np.diff(np.r_[starts, xs.size])
    mean_rank = starts + (lengths + 1) / 2.0  # 1-based mean of ranks starts+1 .. starts+len
    ranks = np.empty_like(x)
    ranks[order] = np.repeat(mean_rank, lengths)
    return ranks


def accuracy(pos_scores: np.ndarray, neg_scores: np.ndarray, threshold: float) -> float:
    """Fraction of rows on the right side of ``threshold`` (positives above); a score
    exactly at the threshold counts half. Plain (not class-balanced) accuracy."""
    p, n = _scores(pos_scores, "positive"), _scores(neg_scores, "negative")
    right = (p > threshold).sum() + (n < threshold).sum()
    ties = (p == threshold).sum() + (n == threshold).sum()
    return float((right + 0.5 * ties) / (p.size + n.size))


def dprime(pos_scores: np.ndarray, neg_scores: np.ndarray) -> float:
    """Sensitivity index d' = (mu+ - mu-) / sqrt((var+ + var-) / 2), sample variances.

    Unlike accuracy and AUROC it keeps growing once the classes separate, so it tells a
    clean direction from a barely-separating one. Infinite when both classes are constant.
    """
    p, n = _scores(pos_scores, "positive"), _scores(neg_scores, "negative")
    gap = float(p.mean() - n.mean())
    var = 0.5 * (_var(p) + _var(n))
    if var == 0.0:
        return 0.0 if gap == 0.0 else math.copysign(math.inf, gap)
    return gap / math.sqrt(var)


def _var(x: np.ndarray) -> float:
    return float(x.var(ddof=1)) if x.size > 1 else 0.0


def pooled_std(pos_scores: np.ndarray, neg_scores: np.ndarray) -> float:
    """Pooled within-class standard deviation (degrees of freedom n+ + n- - 2)."""
    p, n = _scores(pos_scores, "positive"), _scores(neg_scores, "negative")
    dof = p.size + n.size - 2
    if dof <= 0:
        return 0.0
    ss = ((p - p.mean()) ** 2).sum() + ((n - n.mean()) ** 2).sum()
    return math.sqrt(float(ss) / dof)


def split_metrics(split: str, pos_scores: np.ndarray, neg_scores: np.ndarray,
                  threshold: float) -> dict[str, float]:
    """``{split}_accuracy`` (at ``threshold``, the training midpoint), ``{split}_auroc``,
    ``{split}_dprime``."""
    return {f"{split}_accuracy": accuracy(pos_scores, neg_scores, threshold),
            f"{split}_auroc": auroc(pos_scores, neg_scores),
            f"{split}_dprime": dprime(pos_scores, neg_scores)}


def ece(pos_scores: np.ndarray, neg_scores: np.ndarray, slope: float, intercept: float, bins: int = 10) -> float:
    """Expected calibration error of ``p = sigmoid(slope * s + intercept)`` (Naeini et al. 2015):
    the row-weighted mean, over ``bins`` equal-width probability bins, of |mean p - fraction
    positive|. What a monitor's probabilities are worth, beside its accuracy at p = 0.5."""
    p, n = _scores(pos_scores, "positive"), _scores(neg_scores, "negative")
    s = np.concatenate([p, n])
    y = np.r_[np.ones(p.size), np.zeros(n.size)]
    prob = 0.5 * (1.0 + np.tanh(0.5 * (slope * s + intercept)))
    which = np.minimum((prob * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        m = which == b
        if m.any():
            total += m.sum() * abs(prob[m].mean() - y[m].mean())
    return float(total / s.size)
