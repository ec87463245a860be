"""The named thresholds behind every verdict (also listed in the README).

A verdict is a sentence computed from measured figures and these numbers, never from
constants hidden elsewhere; change them here (or pass another :class:`Thresholds`) and
every report says so in its ``thresholds`` block.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["DEFAULT", "Thresholds"]


@dataclass(frozen=True)
class Thresholds:
    decodable: float = 0.75
    """Test accuracy a probe must reach for the concept to count as present at a layer."""
    mlp_gap: float = 0.05
    """Largest MLP-minus-linear test accuracy for "linearly readable" (non-linear part)."""
    chance_margin: float = 0.10
    """Erased probes within chance (0.5) + this count as "fell to chance"."""
    kl_bound: float = 1.0
    """Next-token KL (nats) below which steering keeps the model fluent: the control fit
    uses only strengths inside this range."""
    control_r2: float = 0.90
    """R^2 of the dose-response line (fluent range) for "linearly controllable"."""
    interp_r2: float = 0.90
    """R^2 of score vs t when moving between the class means."""
    additivity: float = 0.25
    """Largest relative additivity error |e(A+B) - e(A) - e(B)| / (|e(A)| + |e(B)|)."""
    agreement: float = 0.50
    """Mean cosine between methods' directions for "one direction"."""
    saturation_fraction: float = 0.25
    """A dose-response saturates where its local slope drops below this fraction of the
    fluent-range slope."""
    min_effect: float = 0.05
    """Smallest |slope x largest fluent strength| (score units) for a dose-response to count
    as moving at all; below it R^2 measures noise."""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


DEFAULT = Thresholds()
