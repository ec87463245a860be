"""Difference of class means: the simplest direction and usually a strong one.

``mu+ - mu-`` is the direction "activation addition" steers with (Turner et al. 2023,
"Steering Language Models With Activation Engineering", arXiv:2308.10248) and the
"diff-in-means" probe of Marks & Tegmark 2023 ("The Geometry of Truth",
arXiv:2310.06824), who find it more causally implicated than logistic probes. It is the
only statistic needed, so it streams: :class:`MeanDiffFitter` accumulates per-class
means in float64 over any number of batches, and fitters built on separate shards merge
exactly (Chan et al. 1979 pairwise update), so shards can be fitted in parallel.

>>> f = MeanDiffFitter().update(np.array([[1.0, 0.0], [3.0, 0.0]]), np.array([1, 0]))
>>> f.vector().tolist()
[-2.0, 0.0]
"""

from __future__ import annotations

import numpy as np
import torch

from pipeline.fit._common import FitResult, as_f64, as_labels, check_paired
from pipeline.fit._params import Param
from pipeline.types import GnomonError


class _RunningMean:
    """Mean of a stream of rows in float64, updated batch-wise and mergeable."""

    def __init__(self) -> None:
        self.n = 0
        self.mean: np.ndarray | None = None  # (d,)

    def add(self, n: int, batch_mean: np.ndarray) -> None:
        if n == 0:
            return
        if self.mean is None:
            self.n, self.mean = n, batch_mean.copy()
            return
        total = self.n + n
        # mean += (batch_mean - mean) * n / total: no large running sums to lose digits in.
        self.mean += (batch_mean - self.mean) * (n / total)
        self.n = total


class MeanDiffFitter:
    """Streaming ``mu+ - mu-``: ``update(x, y)`` per batch, ``merge`` across shards.

    Also tracks the mean row L2 norm, the ``resid_norm`` a Direction records.
    """

    def __init__(self) -> None:
        self._pos = _RunningMean()
        self._neg = _RunningMean()
        self._norm = _RunningMean()
        self.dim: int | None = None

    def update(self, x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor) -> MeanDiffFitter:
        """Add a batch: ``x`` (n, d) activations, ``y`` (n,) bool or 0/1 (1 = positive)."""
        xa = as_f64(x, "batch")
        ya = as_labels(y, xa.shape[0])
        self._check_dim(xa.shape[1])
        for acc, rows in ((self._pos, xa[ya]), (self._neg, xa[~ya])):
            if rows.shape[0]:
                acc.add(rows.shape[0], rows.mean(axis=0))
        if xa.shape[0]:
            self._norm.add(xa.shape[0], np.linalg.norm(xa, axis=1).mean(keepdims=True))
        return self

    def merge(self, other: MeanDiffFitter) -> MeanDiffFitter:
        """Fold in a fitter fitted on another shard (in place; returns self)."""
        if other.dim is not None:
            self._check_dim(other.dim)
        for mine, theirs in ((self._pos, other._pos), (self._neg, other._neg),
                             (self._norm, other._norm)):
            if theirs.mean is not None:
                mine.add(theirs.n, theirs.mean)
        return self

    def _check_dim(self, d: int) -> None:
        if self.dim is None:
            self.dim = d
        elif d != self.dim:
            raise GnomonError(f"batch has width {d} but this fitter has seen width {self.dim}")

    @property
    def counts(self) -> tuple[int, int]:
        """(positive rows, negative rows) seen so far."""
        return self._pos.n, self._neg.n

    @property
    def pos_mean(self) -> np.ndarray:
        if self._pos.mean is None:
            raise GnomonError("mean_diff: the positive class is empty")
        return self._pos.mean

    @property
    def neg_mean(self) -> np.ndarray:
        if self._neg.mean is None:
            raise GnomonError("mean_diff: the negative class is empty")
        return self._neg.mean

    @property
    def resid_norm(self) -> float:
        """Mean L2 norm of every row seen."""
        return float(self._norm.mean[0]) if self._norm.mean is not None else float("nan")

    def vector(self) -> np.ndarray:
        """(d,) float64 ``mu+ - mu-`` (positive class projects higher by construction)."""
        return self.pos_mean - self.neg_mean


PARAMS: tuple[Param, ...] = ()
"""mean_diff takes no parameters."""


def fit_mean_diff(pos: np.ndarray, neg: np.ndarray, *, paired: bool = False) -> FitResult:
    """One-shot ``mu+ - mu-``. With pairs it equals the mean pair difference, so pairing
    changes nothing but the check that the rows do pair up."""
    if paired:
        check_paired(pos, neg, "mean_diff")
    fitter = MeanDiffFitter()
    fitter.update(pos, np.ones(pos.shape[0], bool)).update(neg, np.zeros(neg.shape[0], bool))
    return FitResult(vector=fitter.vector(), params={})
