"""Data screening with baselines: does the direction rank a skewed corpus above a control
corpus better than a reader that never looks inside the model?

Chen et al. 2025 screen fine-tuning data by projecting each sample on a trait direction. A
templated corpus of strongly negative diary notes is easy to separate, so the projection's
AUROC means little alone. Beside it, on the same samples:

- a lexicon scorer (VADER for sentiment, oriented like the projection; no fitting);
- a bag-of-words logistic regression, scored out of fold (``folds``-fold stratified cross
  validation: every sample is scored by a model that never saw it).

Each AUROC comes with a percentile bootstrap CI that resamples each corpus's samples
(stratified). For the bag-of-words model the CI covers the sampling of the scored samples,
not the refitting of the folds.

>>> auroc_ci(np.array([2.0, 3.0, 4.0]), np.array([0.0, 1.0, 2.5]))["auroc"]
0.8888888888888888
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from pipeline import metrics as M
from pipeline.types import GnomonError

__all__ = ["auroc_ci", "bag_of_words_scores", "screening_table"]

_WORD = re.compile(r"[a-z']+")


def auroc_ci(pos: np.ndarray, neg: np.ndarray, n_boot: int = 1000, seed: int = 0,
             level: float = 0.95) -> dict[str, float | list[float] | int]:
    """AUROC of ``pos`` above ``neg`` with a stratified percentile bootstrap CI."""
    p, n = np.asarray(pos, np.float64).reshape(-1), np.asarray(neg, np.float64).reshape(-1)
    if p.size < 2 or n.size < 2:
        raise GnomonError(f"screening needs at least 2 samples per corpus; got {p.size} and {n.size}")
    rng = np.random.default_rng(seed)
    boot = np.array([M.auroc(p[rng.integers(0, p.size, p.size)], n[rng.integers(0, n.size, n.size)])
                     for _ in range(n_boot)])
    a = (1 - level) / 2
    return {"auroc": M.auroc(p, n), "ci": [float(np.quantile(boot, a)), float(np.quantile(boot, 1 - a))],
            "n_skewed": int(p.size), "n_control": int(n.size)}


def _features(texts: Sequence[str], vocab: dict[str, int]) -> np.ndarray:
    x = np.zeros((len(texts), len(vocab)), np.float64)                          # (N, V) binary
    for i, t in enumerate(texts):
        for w in set(_WORD.findall(t.lower())):
            j = vocab.get(w)
            if j is not None:
                x[i, j] = 1.0
    return x


def _fit_logistic(x: np.ndarray, y: np.ndarray, l2: float, iters: int = 25) -> np.ndarray:
    """Newton-Raphson for L2-penalised logistic regression (intercept unpenalised)."""
    xb = np.column_stack([np.ones(len(x)), x])                                 # (N, 1 + V)
    w = np.zeros(xb.shape[1])
    pen = np.full(xb.shape[1], l2)
    pen[0] = 0.0
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-np.clip(xb @ w, -30, 30)))
        g = xb.T @ (p - y) + pen * w
        h = (xb * (p * (1 - p))[:, None]).T @ xb + np.diag(pen + 1e-9)
        step = np.linalg.solve(h, g)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return w


def bag_of_words_scores(skewed: Sequence[str], control: Sequence[str], folds: int = 5, l2: float = 1.0,
                        seed: int = 0, max_vocab: int = 500) -> tuple[np.ndarray, np.ndarray]:
    """Out-of-fold logit of 'skewed' for every sample, from a binary bag-of-words logistic
    regression whose vocabulary and weights come from the other folds only."""
    texts = [*skewed, *control]
    y = np.r_[np.ones(len(skewed)), np.zeros(len(control))]
    if min(len(skewed), len(control)) < folds:
        raise GnomonError(f"a {folds}-fold bag-of-words baseline needs >= {folds} samples per corpus")
    rng = np.random.default_rng(seed)
    fold = np.empty(len(texts), int)
    for label in (1.0, 0.0):                                                   # stratified folds
        idx = np.flatnonzero(y == label)
        fold[rng.permutation(idx)] = np.arange(idx.size) % folds
    out = np.empty(len(texts))
    for k in range(folds):
        tr, te = np.flatnonzero(fold != k), np.flatnonzero(fold == k)
        df: dict[str, int] = {}
        for i in tr:
            for w in set(_WORD.findall(texts[i].lower())):
                df[w] = df.get(w, 0) + 1
        # The most document-frequent words of the training folds (ties by spelling): a
        # bounded vocabulary keeps each Newton step a small dense solve.
        words = sorted(df, key=lambda w: (-df[w], w))[:max_vocab]
        vocab = {w: j for j, w in enumerate(words)}
        w = _fit_logistic(_features([texts[i] for i in tr], vocab), y[tr], l2)
        out[te] = w[0] + _features([texts[i] for i in te], vocab) @ w[1:]
    return out[: len(skewed)], out[len(skewed):]


def screening_table(projection: tuple[np.ndarray, np.ndarray], skewed_texts: Sequence[str],
                    control_texts: Sequence[str], sign: float, lexicon: tuple[np.ndarray, np.ndarray] | None = None,
                    lexicon_name: str = "vader", n_boot: int = 1000) -> dict[str, dict[str, object]]:
    """AUROC with CI of each screen on the same samples: the projection (``sign`` orients it
    toward the skewed label), the lexicon scores (oriented the same way), bag-of-words."""
    if sign not in (1.0, -1.0):
        raise GnomonError("sign must be +1 or -1")
    rows: dict[str, dict[str, object]] = {
        "projection": {**auroc_ci(sign * projection[0], sign * projection[1], n_boot), "fitted": False}}
    if lexicon is not None:
        rows[lexicon_name] = {**auroc_ci(sign * lexicon[0], sign * lexicon[1], n_boot, seed=1), "fitted": False}
    sk, ct = bag_of_words_scores(skewed_texts, control_texts)
    rows["bag_of_words_logistic"] = {**auroc_ci(sk, ct, n_boot, seed=2), "fitted": True,
                                     "note": "5-fold out-of-fold scores; L2 1.0; binary features of the 500 most "
                                             "document-frequent words of the training folds"}
    return rows
