"""Shared plumbing for the fitting methods: input coercion, sign fixing, the result type.

Every method module exposes ``fit_<name>(pos, neg, *, paired=False, **params) -> FitResult``
taking float64 ``(n, d)`` arrays; :func:`pipeline.fit.fit_direction` wraps them into a
:class:`~pipeline.direction.Direction`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from pipeline.types import GnomonError


@dataclass(frozen=True)
class FitResult:
    """What a method returns before the scale statistics and metrics are attached."""

    vector: np.ndarray
    """(d,) float64, oriented so the positive class projects higher."""
    params: dict[str, Any]
    """Resolved parameters (defaults included), JSON-ready: recorded in the provenance."""
    extras: dict[str, torch.Tensor] = field(default_factory=dict)
    """Tensors the method needs at use time (LEACE's eraser)."""


def as_f64(x: np.ndarray | torch.Tensor, name: str) -> np.ndarray:
    """(n, d) float64 numpy copy of ``x`` (numpy or torch, any float dtype incl. float16).

    Statistics are computed in float64: residual streams carry outlier dimensions whose
    squares overflow float16 and lose digits in float32.
    """
    if isinstance(x, torch.Tensor):
        arr = x.detach().to("cpu", torch.float64).numpy()
    else:
        arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 2:
        raise GnomonError(f"{name} activations must be a 2-D (rows, hidden) array, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise GnomonError(f"{name} activations contain NaN or infinite values")
    return arr


def as_labels(y: np.ndarray | torch.Tensor | list[Any], n: int) -> np.ndarray:
    """(n,) bool from a bool/int 0-1 label vector."""
    if isinstance(y, torch.Tensor):
        y = y.detach().cpu().numpy()
    arr = np.asarray(y).reshape(-1)
    if arr.shape[0] != n:
        raise GnomonError(f"got {arr.shape[0]} labels for {n} rows")
    if arr.dtype != np.bool_:
        if not np.isin(arr, (0, 1)).all():
            raise GnomonError("labels must be bool or 0/1 (1 = positive class)")
        arr = arr.astype(bool)
    return arr


def orient(v: np.ndarray, pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """Flip ``v`` if needed so the positive class's mean projects higher.

    PCA, SVD and CCS determine a direction only up to sign; the labels fix it. Comparing
    class means (not per-row votes) is what ``pos_mean > neg_mean`` in a Direction means.
    """
    gap = float(pos.mean(axis=0) @ v - neg.mean(axis=0) @ v)
    return -v if gap < 0 else v


def check_paired(pos: np.ndarray, neg: np.ndarray, method: str) -> None:
    if pos.shape[0] != neg.shape[0]:
        raise GnomonError(f"{method}: paired data needs as many positive as negative rows "
                          f"(row i of each forms a pair), got {pos.shape[0]} and {neg.shape[0]}")


def torch_device() -> torch.device:
    """Where the iterative probes train: the GPU when there is one."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def standardize(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-coordinate mean and scale (constant coordinates get scale 1).

    Residual streams have a few coordinates hundreds of times larger than the rest; a
    probe trained on raw activations is badly conditioned. A weight ``w`` learned on
    ``(x - mu) / sd`` is ``w / sd`` in the raw space.
    """
    mu = x.mean(axis=0)
    sd = x.std(axis=0)
    sd = np.where(sd > 1e-12 * max(float(sd.max()), 1e-300), sd, 1.0)
    return mu, sd


def gram_eigh(xc: np.ndarray, rtol: float = 1e-10) -> tuple[np.ndarray, np.ndarray]:
    """Eigenpairs of ``xc.T @ xc`` on its support, from the (n, n) Gram matrix ``xc @ xc.T``.

    For n rows of width d > n: eigenvalues ``lam`` (r,) above ``rtol`` of the largest and
    orthonormal eigenvectors ``xc.T @ u / sqrt(lam)`` (d, r), an eigendecomposition of size n
    instead of d (a third of an SVD's or a (d, d) ``eigh``'s time at n ~ d / 2). The
    eigenvalues carry rounding ~ n * eps * max, so the default ``rtol`` drops the null
    directions (centring leaves one) with every direction whose singular value is under 1e-5
    of the largest.
    """
    lam, u = np.linalg.eigh(xc @ xc.T)
    keep = lam > rtol * max(float(lam.max(initial=0.0)), 1e-300)
    return lam[keep], xc.T @ (u[:, keep] / np.sqrt(lam[keep]))
