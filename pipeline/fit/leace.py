"""LEACE: least-squares concept erasure (Belrose, Schneider-Joseph, Ravfogel, Cotterell,
Raff & Biderman 2023, "LEACE: Perfect linear concept erasure in closed form",
arXiv:2306.03819), following EleutherAI's concept-erasure ``leace.py``.

The eraser is the affine map that makes the concept ``z`` linearly unrecoverable
(``Cov(x', z) = 0``, so no linear classifier beats a constant) while moving ``x`` as
little as possible in the Mahalanobis sense:

    x' = x - W^+ P W (x - mean),   W = Sigma_xx^{-1/2} (whitening, pseudo-inverse on the
                                    support), P = orthogonal projection onto col(W Sigma_xz)

stored as ``x' = x - proj_left @ (proj_right @ (x - mean))`` with ``proj_left = W^+ Q``
(d, r) and ``proj_right = Q^T W`` (r, d) for an orthonormal basis ``Q`` of col(W Sigma_xz).

For a binary concept (r = 1) this is the oblique rank-1 projection

    x' = x - u (v . (x - mean)),  u = Sigma_xz / |W Sigma_xz|,  v = Sigma_xx^+ Sigma_xz / |W Sigma_xz|,

with ``v . u = 1``. The direction it erases is ``u``, which is proportional to
``Sigma_xz = p(1 - p)(mu+ - mu-)``: the same direction as ``mean_diff`` (the Direction's
vector is ``mu+ - mu-``). What LEACE adds is ``v``, the covariance-aware functional it
reads the concept with; ``fit_leace`` stores ``u``, ``v`` and ``mean`` in
``Direction.extras`` as ``leace_u``, ``leace_v``, ``leace_mean`` (each (d,), float32; saved
with the Direction as safetensors plus its JSON metadata), so the erasure at use time is
``x - leace_u * ((x - leace_mean) @ leace_v)``.

:class:`LeaceEraser` is the one eraser object: fitted here (``LeaceEraser.fit(x, z)``, or
:class:`LeaceFitter` for streams), stored in a Direction (``extras()`` / ``from_extras``),
applied by the steering op :class:`pipeline.steer.edits.Erase` and by the linearity report's
erasure (:mod:`pipeline.linearity.erasure`), to tensors or arrays.

>>> eraser = LeaceEraser.fit(x, z)                 # doctest: +SKIP
>>> x_erased = eraser(x)                           # doctest: +SKIP

Statistics stream: ``LeaceFitter.update(x, z)`` keeps float64 means and co-moments with
Chan et al.'s pairwise update, and fitters from separate shards ``merge``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import overload

import numpy as np
import torch

from pipeline.fit._common import FitResult, as_f64, check_paired, gram_eigh, orient
from pipeline.fit._params import Param
from pipeline.types import GnomonError

EXTRAS = ("leace_u", "leace_v", "leace_mean")
"""The Direction extras a rank-1 eraser is stored as (proj_left[:, 0], proj_right[0], bias)."""


@dataclass(frozen=True)
class LeaceEraser:
    """Frozen affine eraser ``x - proj_left @ (proj_right @ (x - bias))``."""

    proj_left: torch.Tensor
    """(d, r) ``W^+ Q``: where the erased component lives."""
    proj_right: torch.Tensor
    """(r, d) ``Q^T W``: how the concept component is read."""
    bias: torch.Tensor
    """(d,) mean of ``x`` on the fitting data."""

    @classmethod
    def fit(cls, x: np.ndarray | torch.Tensor, z: np.ndarray | torch.Tensor, rtol: float = 1e-10,
            dtype: torch.dtype = torch.float32) -> LeaceEraser:
        """The eraser of ``z`` ((n,) or (n, k)) from rows ``x`` (n, d): ``LeaceFitter().update(x,
        z).eraser(rtol, dtype)``, computed from the rows.

        With fewer rows than columns (hundreds of examples, d >= 576) the covariance has rank
        below n and its eigenvectors on the support come from the (n, n) Gram matrix of the
        centred rows: ``Xc Xc^T = U L U^T`` gives eigenvalues ``L / n`` and eigenvectors
        ``Xc^T U L^{-1/2}``, an eigendecomposition of size n instead of d (a third of the time
        at n ~ d / 2). The eigenvectors off the support are not needed: the eraser weights them
        by zero. Same threshold (``rtol`` of the largest eigenvalue).
        """
        fitter = LeaceFitter().update(x, z)
        xa = as_f64(x, "batch")
        if xa.shape[0] >= xa.shape[1]:
            return fitter.eraser(rtol, dtype)
        lam, evecs = gram_eigh(xa - fitter.mean_x, rtol)      # n * the eigenvalues of cov_xx on its support
        return fitter._eraser(lam / xa.shape[0], evecs, rtol, dtype)

    @classmethod
    def from_extras(cls, extras: Mapping[str, torch.Tensor]) -> LeaceEraser | None:
        """The rank-1 eraser a Direction stores (extras ``leace_u``, ``leace_v``, ``leace_mean``),
        or None when it has none."""
        if not all(k in extras for k in EXTRAS):
            return None
        u, v, mean = (extras[k].detach().float() for k in EXTRAS)
        return cls(proj_left=u[:, None], proj_right=v[None, :], bias=mean)

    def extras(self) -> dict[str, torch.Tensor]:
        """The Direction extras of a rank-1 eraser (what :meth:`from_extras` reads)."""
        if self.rank != 1:
            raise GnomonError(f"leace: a Direction stores a rank-1 eraser; this one has rank {self.rank}")
        return {"leace_u": self.proj_left[:, 0].contiguous(), "leace_v": self.proj_right[0].contiguous(),
                "leace_mean": self.bias.contiguous()}

    @overload
    def __call__(self, x: torch.Tensor) -> torch.Tensor: ...
    @overload
    def __call__(self, x: np.ndarray) -> np.ndarray: ...

    def __call__(self, x: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
        """(..., d) -> (..., d) erased, in ``x``'s dtype (computed in at least float32); an
        array in, an array out."""
        if isinstance(x, np.ndarray):
            with torch.no_grad():
                return self(torch.as_tensor(x)).numpy()
        work = x.to(torch.promote_types(x.dtype, torch.float32))
        left, right, bias = (t.to(work.device, work.dtype)
                             for t in (self.proj_left, self.proj_right, self.bias))
        return (work - ((work - bias) @ right.T) @ left.T).to(x.dtype)

    def to(self, device: torch.device | str) -> LeaceEraser:
        """A copy on ``device`` (the eraser itself is never mutated)."""
        return LeaceEraser(self.proj_left.to(device), self.proj_right.to(device), self.bias.to(device))

    @property
    def rank(self) -> int:
        return int(self.proj_left.shape[1])


class LeaceFitter:
    """Streaming statistics for LEACE: ``update(x, z)`` per batch, ``eraser()`` at the end."""

    def __init__(self) -> None:
        self.n = 0
        self.mean_x: np.ndarray | None = None  # (d,)
        self.mean_z: np.ndarray | None = None  # (k,)
        self.c_xx: np.ndarray | None = None  # (d, d) sum of centered outer products
        self.c_xz: np.ndarray | None = None  # (d, k)

    def update(self, x: np.ndarray | torch.Tensor, z: np.ndarray | torch.Tensor) -> LeaceFitter:
        """Add ``x`` (n, d) with concept ``z`` (n,) (binary/scalar) or (n, k) (e.g. one-hot)."""
        xa = as_f64(x, "batch")
        za = z.detach().to("cpu", torch.float64).numpy() if isinstance(z, torch.Tensor) else np.asarray(z, np.float64)
        za = za.reshape(xa.shape[0], -1) if za.size == xa.shape[0] else za
        if za.ndim != 2 or za.shape[0] != xa.shape[0]:
            raise GnomonError(f"leace: z must be (n,) or (n, k) for {xa.shape[0]} rows, got {za.shape}")
        if xa.shape[0] == 0:
            return self
        mx, mz = xa.mean(axis=0), za.mean(axis=0)
        xc, zc = xa - mx, za - mz
        return self._combine(xa.shape[0], mx, mz, xc.T @ xc, xc.T @ zc)

    def merge(self, other: LeaceFitter) -> LeaceFitter:
        """Fold in statistics fitted on another shard (in place; returns self)."""
        if other.n == 0:
            return self
        return self._combine(other.n, other.mean_x, other.mean_z, other.c_xx, other.c_xz)  # type: ignore[arg-type]

    def _combine(self, nb: int, mx: np.ndarray, mz: np.ndarray, cxx: np.ndarray,
                 cxz: np.ndarray) -> LeaceFitter:
        if self.n == 0:
            self.n, self.mean_x, self.mean_z = nb, mx.copy(), mz.copy()
            self.c_xx, self.c_xz = cxx.copy(), cxz.copy()
            return self
        assert self.mean_x is not None and self.mean_z is not None
        assert self.c_xx is not None and self.c_xz is not None
        if mx.shape != self.mean_x.shape or mz.shape != self.mean_z.shape:
            raise GnomonError(f"leace: batch shapes x{mx.shape} z{mz.shape} do not match the fitter's "
                              f"x{self.mean_x.shape} z{self.mean_z.shape}")
        total = self.n + nb
        dx, dz = mx - self.mean_x, mz - self.mean_z
        # Chan et al. 1979: co-moments of the union = sum of parts + a between-means term.
        self.c_xx += cxx + np.outer(dx, dx) * (self.n * nb / total)
        self.c_xz += cxz + np.outer(dx, dz) * (self.n * nb / total)
        self.mean_x += dx * (nb / total)
        self.mean_z += dz * (nb / total)
        self.n = total
        return self

    @property
    def cov_xx(self) -> np.ndarray:
        """(d, d) covariance of x (divided by n; the eraser is invariant to that choice)."""
        if self.c_xx is None:
            raise GnomonError("leace: no data has been added to the fitter")
        return self.c_xx / self.n

    @property
    def cov_xz(self) -> np.ndarray:
        """(d, k) cross-covariance of x and z."""
        if self.c_xz is None:
            raise GnomonError("leace: no data has been added to the fitter")
        return self.c_xz / self.n

    def eraser(self, rtol: float = 1e-10, dtype: torch.dtype = torch.float32) -> LeaceEraser:
        """The LEACE eraser for the statistics so far (computed in float64)."""
        evals, evecs = np.linalg.eigh(self.cov_xx)
        return self._eraser(evals, evecs, rtol, dtype)

    def _eraser(self, evals: np.ndarray, evecs: np.ndarray, rtol: float, dtype: torch.dtype) -> LeaceEraser:
        """The eraser from eigenpairs of ``cov_xx``: all of them, or only those on its support."""
        sxz = self.cov_xz
        keep = evals > rtol * max(float(evals.max(initial=0.0)), 0.0)
        root = np.sqrt(np.where(keep, evals, 0.0))
        inv_root = np.where(keep, 1.0 / np.where(keep, root, 1.0), 0.0)
        # W = Sigma^{-1/2} on the support = E diag(inv_root) E^T and W^+ = Sigma^{1/2}, applied
        # factor by factor to the thin (d, k) matrices: never formed, two (d, d, d) products saved.
        w_sxz = evecs @ (inv_root[:, None] * (evecs.T @ sxz))
        u, s, _ = np.linalg.svd(w_sxz, full_matrices=False)
        q = u[:, s > rtol * max(float(s.max(initial=0.0)), 1e-300)]  # (d, r)
        eq = evecs.T @ q

        def mk(a: np.ndarray | None) -> torch.Tensor:
            return torch.as_tensor(np.ascontiguousarray(a), dtype=dtype)

        return LeaceEraser(proj_left=mk(evecs @ (root[:, None] * eq)),          # W^+ Q
                           proj_right=mk((eq.T * inv_root) @ evecs.T),          # Q^T W
                           bias=mk(self.mean_x))


PARAMS: tuple[Param, ...] = ()
"""leace takes no parameters."""


def fit_leace(pos: np.ndarray, neg: np.ndarray, *, paired: bool = False) -> FitResult:
    """Binary LEACE with z = 1 for the positive class; see the module docstring."""
    if paired:
        check_paired(pos, neg, "leace")
    fitter = LeaceFitter().update(pos, np.ones(pos.shape[0])).update(neg, np.zeros(neg.shape[0]))
    eraser = fitter.eraser()
    if eraser.rank != 1:
        raise GnomonError("leace: the classes have identical means, there is nothing to erase")
    var_z = float(fitter.mean_z[0] * (1.0 - fitter.mean_z[0]))  # type: ignore[index]
    vector = fitter.cov_xz[:, 0] / var_z  # = mu+ - mu-
    return FitResult(vector=orient(vector, pos, neg), params={}, extras=eraser.extras())
