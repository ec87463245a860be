"""Erasure: remove the linear information with LEACE, then probe again.

LEACE (Belrose et al. 2023, arXiv:2306.03819; :mod:`pipeline.fit.leace`) makes the concept
*linearly* unrecoverable: after erasure no linear classifier beats a constant on the data
the eraser was fitted on. A fresh linear probe must therefore fall to chance. What a
small MLP probe still recovers is information the linear eraser could not remove: if it
falls near chance too, the concept was "secretly linear" at that layer (everything a
small non-linear reader could use lived in one direction).

The eraser is fitted on the training split only and applied to every split, so the
held-out figures also measure how well the erasure generalises.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from pipeline.fit import LeaceEraser
from pipeline.linearity.probes import ProbeResult, Split, compare_probes

__all__ = ["ErasureResult", "erase_splits", "erasure_probes"]


@dataclass(frozen=True)
class ErasureResult:
    linear: ProbeResult
    """Fresh linear probe on erased activations (should be at chance)."""
    mlp: ProbeResult
    """Fresh MLP probe on erased activations (near chance: secretly linear)."""
    rank: int
    """Rank of the erasure (1 for a binary concept whose class means differ, 0 if they do not)."""

    def to_json(self) -> dict[str, Any]:
        return {"linear": self.linear.to_json(), "mlp": self.mlp.to_json(), "rank": self.rank}


def erase_splits(train: Split, *others: Split) -> tuple[list[Split], int]:
    """LEACE fitted on ``train`` (z = the label), applied to ``train`` and every other split."""
    x, y = train
    eraser = LeaceEraser.fit(x, y.astype(np.float64), dtype=torch.float64)   # n < d: from the Gram matrix
    out = [(eraser(np.asarray(xs, np.float64)), ys) for xs, ys in (train, *others)]  # float64: outlier dims
    return out, eraser.rank


def erasure_probes(train: Split, val: Split, test: Split, **kw: Any) -> ErasureResult:
    """Erase with LEACE (fitted on train), then train fresh linear and MLP probes."""
    (tr, va, te), rank = erase_splits(train, val, test)
    r = compare_probes(tr, va, te, **kw)
    return ErasureResult(linear=r["linear"], mlp=r["mlp"], rank=rank)
