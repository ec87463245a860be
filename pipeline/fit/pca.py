"""First principal direction of contrast-pair differences, uncentered.

Following Zou et al. 2023 ("Representation Engineering", arXiv:2310.01405) and the
``pca_aggregator`` of steering-vectors, the direction is the top right singular vector
of the matrix of differences ``D = pos - neg`` (one row per pair). The differences are
deliberately NOT centered: if every pair differs by the same shift ``s * w`` plus noise,
centering removes exactly ``s * w`` and leaves only noise, while the uncentered second
moment ``E[d d^T] = s^2 w w^T + Cov(d)`` keeps it as its top eigenvector whenever the
shift outweighs the largest noise variance. ``center=True`` is available to show the
difference (and for data whose signal is the variation of the differences).

Unpaired data: rows of the two classes are matched at random (``seed``), each class
permuted and cycled to the larger class's length so every row is used; the differences
of random matches have the same mean ``mu+ - mu-`` and a noisier covariance.

The singular vector has no sign; it is oriented so the positive class projects higher
and scaled to the mean pair difference along it (the same units as ``mean_diff``).
"""

from __future__ import annotations

import numpy as np

from pipeline.fit._common import FitResult, check_paired, orient
from pipeline.fit._params import Param


def pair_differences(pos: np.ndarray, neg: np.ndarray, paired: bool, seed: int) -> np.ndarray:
    """(n_pairs, d) ``pos - neg``: row-aligned when paired, randomly matched otherwise."""
    if paired:
        check_paired(pos, neg, "pca")
        return pos - neg
    rng = np.random.default_rng(seed)
    n = max(pos.shape[0], neg.shape[0])

    def cycled(k: int) -> np.ndarray:
        reps = -(-n // k)  # ceil(n / k)
        return np.concatenate([rng.permutation(k) for _ in range(reps)])[:n]

    return pos[cycled(pos.shape[0])] - neg[cycled(neg.shape[0])]


def top_right_singular_vector(a: np.ndarray) -> np.ndarray:
    """(n, d) -> (d,) unit top right singular vector, via the smaller Gram matrix.

    Only the top eigenvector is needed, so squaring the condition number costs nothing
    that matters, and a (d, d) or (n, n) eigh is several times faster than a full SVD.
    """
    n, d = a.shape
    if n >= d:
        return np.linalg.eigh(a.T @ a)[1][:, -1]
    left = np.linalg.eigh(a @ a.T)[1][:, -1]  # top left singular vector
    v = a.T @ left
    norm = float(np.linalg.norm(v))
    # all-zero differences (e.g. identical rows at the embedding layer): return the zero
    # vector, which fit_direction refuses with a message, instead of 0/0 and a RuntimeWarning
    return v / norm if norm > 0 else v


PARAMS = (
    Param("center", "bool", False, "centre the pair differences (drops the mean shift)"),
    Param("seed", "int", 0, "seed that pairs unpaired rows", min=0),
)
"""``--param pca.NAME=VALUE``: checked before any work (:mod:`pipeline.fit._params`)."""


def fit_pca(pos: np.ndarray, neg: np.ndarray, *, paired: bool = False, center: bool = False,
            seed: int = 0) -> FitResult:
    diffs = pair_differences(pos, neg, paired, seed)  # (n, d)
    if center:
        diffs = diffs - diffs.mean(axis=0)
    unit = orient(top_right_singular_vector(diffs), pos, neg)
    scale = float((pos.mean(axis=0) - neg.mean(axis=0)) @ unit)
    vector = unit * scale if scale > 0 else unit
    return FitResult(vector=vector, params={"center": center, "seed": seed})
