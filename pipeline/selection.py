"""Which direction is "best": the rule behind ``concept@best`` / ``best-monitor`` and the
per-method layer choice of a layer sweep.

Validation scores saturate: on an easy concept AUROC is 1.000 at most (method, layer)
pairs, so "the highest validation AUROC" is a tie and the old tie-breaks (newest version,
earliest layer) picked CCS at layer 1, or the embedding output. The rule, applied to the
validation split (training metrics only when a dataset has no validation split):

1. **Eligible**: layer >= 1 (layer 0 is the embedding output: a word list, not a
   representation), the selection metric finite, and the direction not at chance: the
   lower 95% confidence bound of its validation AUROC (Hanley & McNeil 1982, one-sided)
   above 0.5.
2. **Score** ties within a tolerance count as ties: candidates whose lower confidence
   bound of the selection metric is within ``METRIC_TOL`` (0.01) of the best stay in.
3. **Margin**: among those, d' (class-mean gap over the pooled spread) within
   ``DPRIME_TOL`` (10%) of the best stays in; d' keeps growing after AUROC saturates, so
   it tells a clean direction from one that barely separates.
4. **Simpler method** first (each method's registered simplicity rank, see
   :mod:`pipeline.methods`: closed forms before iterative and unsupervised fits), then **mid-depth** (layer closest to half the depth), then the
   newer version.

>>> c = [Candidate("a", layer=0, num_layers=8, method="ccs", metrics={"val_auroc": 1.0, "val_dprime": 9.0}),
...      Candidate("b", layer=4, num_layers=8, method="mean_diff", metrics={"val_auroc": 1.0, "val_dprime": 8.5})]
>>> choose(c).key
'b'
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pipeline.methods import simplicity

__all__ = [
    "DPRIME_TOL",
    "METRIC_TOL",
    "Candidate",
    "auroc_lcb",
    "choose",
    "eligible",
    "rank",
    "why_not",
]

METRIC_TOL = 0.01
DPRIME_TOL = 0.10
Z_95 = 1.645
"""One-sided 95% normal quantile."""
DEFAULT_CLASS_ROWS = 10
"""Rows per class assumed when a record does not say its validation size (conservative)."""


@dataclass(frozen=True)
class Candidate:
    """One direction as the rule sees it; ``key`` is whatever the caller wants back."""

    key: Any
    layer: int
    num_layers: int | None
    """Blocks in the model (layers run 0..num_layers); None: depth unknown, no mid-depth preference."""
    method: str
    metrics: Mapping[str, float]
    n_pos: int | None = None
    """Validation rows per class (None: unknown, :data:`DEFAULT_CLASS_ROWS` assumed)."""
    n_neg: int | None = None
    version: int = 0
    """Newer wins the last tie."""
    extra: Mapping[str, Any] = field(default_factory=dict)


def auroc_lcb(auroc: float, n_pos: int | None, n_neg: int | None, z: float = Z_95) -> float:
    """Lower confidence bound of an AUROC from Hanley & McNeil's standard error.

    At AUROC 1 their standard error is 0; the estimate is shrunk by half a pair first
    (``(A * n+ * n- + 0.5) / (n+ * n- + 1)``) so a perfect score on 6 rows is not as sure
    as one on 600."""
    n1 = max(int(n_pos or DEFAULT_CLASS_ROWS), 1)
    n2 = max(int(n_neg or DEFAULT_CLASS_ROWS), 1)
    if not math.isfinite(auroc):
        return math.nan
    pairs = n1 * n2
    a = (auroc * pairs + 0.5) / (pairs + 1)
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    var = (a * (1 - a) + (n1 - 1) * (q1 - a * a) + (n2 - 1) * (q2 - a * a)) / pairs
    return a - z * math.sqrt(max(var, 0.0))


def _split(c: Candidate) -> str:
    """``val`` when the candidate has validation metrics, else ``train``."""
    return "val" if any(k.startswith("val_") for k in c.metrics) else "train"


def _metric(c: Candidate, name: str) -> float:
    v = c.metrics.get(f"{_split(c)}_{name}", math.nan)
    return float(v) if v is not None else math.nan


def _score(c: Candidate, select: str) -> float:
    """Lower confidence bound of the selection metric (``auroc``, ``accuracy`` or ``dprime``)."""
    value = _metric(c, select)
    if not math.isfinite(value):
        return -math.inf
    if select == "auroc":
        return auroc_lcb(value, c.n_pos, c.n_neg)
    if select == "accuracy":  # Wilson lower bound
        n = (c.n_pos or DEFAULT_CLASS_ROWS) + (c.n_neg or DEFAULT_CLASS_ROWS)
        centre = (value + Z_95**2 / (2 * n)) / (1 + Z_95**2 / n)
        half = Z_95 * math.sqrt(value * (1 - value) / n + Z_95**2 / (4 * n * n)) / (1 + Z_95**2 / n)
        return centre - half
    return value


def why_not(c: Candidate) -> str | None:
    """Why ``c`` may never be chosen, or None when it is eligible."""
    if c.layer < 1:
        return "layer 0 is the embedding output"
    auroc = _metric(c, "auroc")
    if not math.isfinite(auroc):
        return f"no {_split(c)} AUROC"
    lcb = auroc_lcb(auroc, c.n_pos, c.n_neg)
    if not lcb > 0.5:
        return f"{_split(c)} AUROC {auroc:.3f} is not above chance (95% lower bound {lcb:.3f})"
    return None


def eligible(c: Candidate) -> bool:
    return why_not(c) is None


def _dprime(c: Candidate) -> float:
    d = _metric(c, "dprime")
    return d if math.isfinite(d) else (1e9 if d == math.inf else -math.inf)


def _depth_distance(c: Candidate) -> float:
    if not c.num_layers:
        return 0.0
    return abs(c.layer / c.num_layers - 0.5)


def _simplicity(c: Candidate) -> int:
    return simplicity(c.method)


def rank(candidates: Sequence[Candidate], select: str = "auroc") -> list[Candidate]:
    """Eligible candidates, best first (see the module doc). ``select``: the metric name
    without its split prefix (``auroc``, ``accuracy``, ``dprime``; ``val_auroc`` is accepted)."""
    select = select.split("_", 1)[1] if select.startswith(("val_", "train_")) else select
    pool = [c for c in candidates if eligible(c)]
    out: list[Candidate] = []
    while pool:  # peel off the winner, then rank the rest the same way
        best = _winner(pool, select)
        out.append(best)
        pool = [c for c in pool if c is not best]
    return out


def _winner(pool: Sequence[Candidate], select: str) -> Candidate:
    top = max(_score(c, select) for c in pool)
    tol = METRIC_TOL if select != "dprime" else DPRIME_TOL * abs(top)
    tied = [c for c in pool if _score(c, select) >= top - tol]
    dmax = max(_dprime(c) for c in tied)
    margin = [c for c in tied if _dprime(c) >= dmax - DPRIME_TOL * abs(dmax)]
    return min(margin, key=lambda c: (_simplicity(c), _depth_distance(c), -c.version, c.layer))


def choose(candidates: Sequence[Candidate], select: str = "auroc") -> Candidate | None:
    """The best eligible candidate, or None when every one is at chance or at layer 0."""
    pool = [c for c in candidates if eligible(c)]
    if not pool:
        return None
    select = select.split("_", 1)[1] if select.startswith(("val_", "train_")) else select
    return _winner(pool, select)
