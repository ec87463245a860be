"""Curve statistics for the control and interpolation checks: least-squares line, R^2,
the fluent range of a dose-response curve and where it saturates.

All pure numpy on short curves (a handful of strengths), so they are tested on curves
whose answer is known.

>>> linear_fit([0, 1, 2], [1, 3, 5])
LineFit(slope=2.0, intercept=1.0, r2=1.0, n=3)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = ["LineFit", "fluent_range", "linear_fit", "saturation"]


@dataclass(frozen=True)
class LineFit:
    slope: float
    intercept: float
    r2: float
    """Coefficient of determination of the least-squares line (1: exactly linear). A flat
    curve (no variance) gets NaN: linearity is undefined when nothing moves."""
    n: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def linear_fit(x: Sequence[float], y: Sequence[float]) -> LineFit:
    """Ordinary least squares ``y ~ slope * x + intercept`` with its R^2."""
    xa, ya = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if xa.size < 2 or np.ptp(xa) == 0:
        return LineFit(float("nan"), float(ya.mean()) if ya.size else float("nan"), float("nan"), int(xa.size))
    slope, intercept = np.polyfit(xa, ya, 1)
    ss_tot = float(((ya - ya.mean()) ** 2).sum())
    ss_res = float(((ya - (slope * xa + intercept)) ** 2).sum())
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 1e-300 else float("nan")
    return LineFit(round(float(slope), 12), round(float(intercept), 12), round(r2, 12), int(xa.size))


def fluent_range(strengths: Sequence[float], kl: Sequence[float], bound: float) -> tuple[float, float]:
    """The widest interval ``[lo, hi]`` around strength 0 in which every measured strength
    has next-token KL below ``bound`` (steering stops being "the same model" past it).

    Strengths are scanned outwards from the one closest to 0; the first one over the bound
    on each side closes the range there. Returns ``(0, 0)`` if even the smallest fails.
    """
    s = np.asarray(strengths, np.float64)
    k = np.asarray(kl, np.float64)
    order = np.argsort(s)
    s, k = s[order], k[order]
    i0 = int(np.argmin(np.abs(s)))
    if not k[i0] < bound:
        return 0.0, 0.0
    lo = hi = i0
    while lo - 1 >= 0 and k[lo - 1] < bound:
        lo -= 1
    while hi + 1 < len(s) and k[hi + 1] < bound:
        hi += 1
    return float(s[lo]), float(s[hi])


def saturation(strengths: Sequence[float], scores: Sequence[float], slope: float,
               fraction: float) -> dict[str, float | None]:
    """Where the curve stops responding, on each side of 0.

    Walking outwards from strength 0, the saturation point is the first strength after
    which the local slope (score change per unit strength to the next measured strength)
    falls below ``fraction`` times the fitted ``slope`` in the fluent range. ``None``:
    it kept responding up to the largest strength measured (or the slope is unusable).
    """
    out: dict[str, float | None] = {"positive": None, "negative": None}
    if not np.isfinite(slope) or slope == 0:
        return out
    s = np.asarray(strengths, np.float64)
    y = np.asarray(scores, np.float64)
    order = np.argsort(s)
    s, y = s[order], y[order]
    i0 = int(np.argmin(np.abs(s)))
    for side, step in (("positive", 1), ("negative", -1)):
        i = i0
        while 0 <= i + step < len(s):
            local = (y[i + step] - y[i]) / (s[i + step] - s[i])
            if local < fraction * slope if slope > 0 else local > fraction * slope:
                out[side] = float(s[i])
                break
            i += step
    return out
