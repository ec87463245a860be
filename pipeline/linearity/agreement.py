"""Method agreement: do different estimators find the same direction?

If a concept is one direction, the difference of means, a logistic probe, LDA, PCA of the
(paired) differences and LEACE should all point roughly the same way; a concept whose
methods disagree is not one direction (or the data do not pin it down). The methods are
the catalog's own (:func:`pipeline.fit.fit_direction`), fitted on the training split.

LEACE's Direction vector is ``mu+ - mu-`` (the direction it *writes*), identical to
mean_diff by construction, so its row would say nothing; the agreement matrix uses the
eraser's reading functional (:class:`~pipeline.fit.leace.LeaceEraser`'s ``proj_right``,
stored as ``leace_v``: ``Sigma^+ (mu+ - mu-)``, covariance-aware, like
LDA's) for ``leace`` instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.direction import Direction, Provenance
from pipeline.fit import LeaceEraser, fit_direction
from pipeline.types import GnomonError

__all__ = ["AGREEMENT_METHODS", "Agreement", "method_agreement"]

AGREEMENT_METHODS: tuple[str, ...] = ("mean_diff", "logistic", "lda", "pca", "leace")


@dataclass(frozen=True)
class Agreement:
    methods: list[str]
    """Methods that produced a direction (a failing one is listed in ``failed``)."""
    cosine: list[list[float]]
    """(m, m) cosines between the methods' unit vectors (oriented: positive class higher)."""
    mean_cosine: float | None
    """Mean off-diagonal cosine (1: one direction; near 0: unrelated); None with < 2 methods."""
    directions: dict[str, Direction]
    """The fitted directions (not serialised)."""
    val_auroc: dict[str, float]
    failed: dict[str, str]

    def to_json(self) -> dict[str, Any]:
        return {"methods": self.methods, "cosine": self.cosine, "mean_cosine": self.mean_cosine,
                "val_auroc": self.val_auroc, "failed": self.failed}


def _reading_vector(d: Direction) -> np.ndarray:
    eraser = LeaceEraser.from_extras(d.extras) if d.provenance.method == "leace" else None
    v = eraser.proj_right[0] if eraser is not None else d.vector               # (d,) the reading functional
    arr = v.detach().cpu().double().numpy()
    return arr / np.linalg.norm(arr)


def method_agreement(train: tuple[np.ndarray, np.ndarray], base: Provenance, *, paired: bool = False,
                     eval_sets: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
                     methods: Sequence[str] = AGREEMENT_METHODS) -> Agreement:
    """Fit every method on ``train`` = (pos, neg) and compare their directions."""
    dirs: dict[str, Direction] = {}
    failed: dict[str, str] = {}
    for m in methods:
        try:
            dirs[m] = fit_direction(m, train[0], train[1], base=base, paired=paired, eval_sets=eval_sets)
        except GnomonError as e:
            failed[m] = str(e)
    names = list(dirs)
    if not names:
        raise GnomonError(f"no method produced a direction: {next(iter(failed.values()), '?')}")
    vecs = np.stack([_reading_vector(dirs[m]) for m in names])       # (m, d)
    cos = vecs @ vecs.T
    off = cos[~np.eye(len(names), dtype=bool)]
    return Agreement(methods=names, cosine=[[round(float(c), 4) for c in row] for row in cos],
                     mean_cosine=float(off.mean()) if off.size else None, directions=dirs,
                     val_auroc={m: float(d.metrics.get("val_auroc", float("nan"))) for m, d in dirs.items()},
                     failed=failed)
