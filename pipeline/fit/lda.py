"""Fisher's linear discriminant with a shrunk covariance.

Fisher 1936 ("The use of multiple measurements in taxonomic problems"): the direction
maximising between-class over within-class variance of the projections is
``Sigma^-1 (mu+ - mu-)``, with ``Sigma`` the pooled within-class covariance. Where
``mean_diff`` points along the mean shift, LDA discounts coordinates in which the noise
is large, which matters when the noise is strongly anisotropic (residual streams are).

With d comparable to n the sample covariance is ill-conditioned or singular, so it is
shrunk toward a scaled identity, ``(1 - a) S + a (tr S / d) I``, with ``a`` chosen by
Ledoit & Wolf 2004 ("A well-conditioned estimator for large-dimensional covariance
matrices", J. Multivariate Anal. 88) when ``shrinkage="auto"`` (the same estimator as
scikit-learn's ``ledoit_wolf_shrinkage``), or fixed. Everything is float64, and the
solve uses a symmetric eigendecomposition with tiny eigenvalues clipped.
"""

from __future__ import annotations

import numpy as np

from pipeline.fit._common import FitResult, check_paired, orient
from pipeline.fit._params import Param
from pipeline.types import GnomonError


def ledoit_wolf_shrinkage(xc: np.ndarray) -> float:
    """Ledoit-Wolf intensity ``a`` in [0, 1] for centered rows ``xc`` (n, d)."""
    n, d = xc.shape
    s = xc.T @ xc / n  # (d, d) sample covariance (MLE)
    mu = np.trace(s) / d
    # delta: squared distance of S from the target; beta: estimated error of S itself,
    # (1 / n^2) sum_i |x_i x_i^T - S|_F^2 = (1/n) (mean_i |x_i|^4 - |S|_F^2).
    delta = (np.sum(s * s) - 2 * mu * np.trace(s) + d * mu * mu) / d
    beta = (np.mean(np.sum(xc * xc, axis=1) ** 2) - np.sum(s * s)) / (n * d)
    if delta <= 0:
        return 1.0
    return float(min(max(beta, 0.0), delta) / delta)


def shrunk_covariance(pos: np.ndarray, neg: np.ndarray,
                      shrinkage: float | str = "auto") -> tuple[np.ndarray, float]:
    """Pooled within-class covariance shrunk toward ``(tr S / d) I``; returns (cov, a)."""
    xc = np.concatenate([pos - pos.mean(axis=0), neg - neg.mean(axis=0)])  # (n, d)
    if shrinkage == "auto":
        a = ledoit_wolf_shrinkage(xc)
    elif isinstance(shrinkage, (int, float)) and 0.0 <= shrinkage <= 1.0:
        a = float(shrinkage)
    else:
        raise GnomonError(f"lda: shrinkage must be 'auto' or a number in [0, 1], got {shrinkage!r}")
    s = xc.T @ xc / xc.shape[0]
    target = np.trace(s) / s.shape[0]
    cov = (1.0 - a) * s
    cov[np.diag_indices_from(cov)] += a * target
    return cov, a


def solve_psd(cov: np.ndarray, b: np.ndarray, rcond: float = 1e-10) -> np.ndarray:
    """``cov^+ b`` for symmetric PSD ``cov`` via eigh, dropping eigenvalues below
    ``rcond * max``: stable even when shrinkage is 0 and ``cov`` is singular."""
    evals, evecs = np.linalg.eigh(cov)
    keep = evals > rcond * max(float(evals.max()), 0.0)
    inv = np.where(keep, 1.0 / np.where(keep, evals, 1.0), 0.0)
    return evecs @ (inv * (evecs.T @ b))


PARAMS = (
    Param("shrinkage", "float_or_choice", "auto", "covariance shrinkage toward a scaled identity",
          min=0.0, max=1.0, choices=("auto",)),
)
"""``--param lda.NAME=VALUE``: checked before any work (:mod:`pipeline.fit._params`)."""


def fit_lda(pos: np.ndarray, neg: np.ndarray, *, paired: bool = False,
            shrinkage: float | str = "auto") -> FitResult:
    if paired:
        check_paired(pos, neg, "lda")
    cov, a = shrunk_covariance(pos, neg, shrinkage)
    v = solve_psd(cov, pos.mean(axis=0) - neg.mean(axis=0))
    # Sigma^-1 is positive definite, so v . (mu+ - mu-) > 0 already; orient is a guard.
    return FitResult(vector=orient(v, pos, neg),
                     params={"shrinkage": shrinkage, "shrinkage_used": a})
