"""Drift: predicting a fine-tune's behaviour change from its activations along a direction.

Chen et al. 2025 ("Persona Vectors: Monitoring and Controlling Character Traits in
Language Models", arXiv:2507.21509) show that the shift of a fine-tuned model's
activations along the base model's trait direction predicts how much the trait shows in
its behaviour, and that projecting *training samples* on that direction screens a
dataset before fine-tuning. Here, per checkpoint:

- activation shift = mean projection of neutral-prompt activations (at the direction's
  layer, on the base direction's unit vector) minus the base model's;
- behaviour shift = mean behavioural score (VADER for sentiment) of continuations of the
  same neutral prompts minus the base model's;

and the Pearson r of the two over every checkpoint of the skewed and the control series
together. That pooled r is mostly "which series, how many steps" (two clusters along a
line); :mod:`pipeline.fleet_compare.drift_stats` reports it beside the within-series and
partial r, paired shifts and the schedule baselines, which is what ``gnomon drift`` reads. Screening:
each fine-tune sample's projection minus the base mean, oriented toward the label the
skewed corpus leans to, ranks skewed samples above control samples with some AUROC.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from pipeline import metrics as M
from pipeline.fleet.registry import read_lineage
from pipeline.fleet_compare.similarity import pearson
from pipeline.types import GnomonError

__all__ = ["DriftPoint", "behaviour_noise", "drift_points", "drift_summary", "first_moved_layer", "screening_auroc"]


@dataclass(frozen=True)
class DriftPoint:
    version: str
    series: str
    step: int
    projection: float
    """Mean projection of neutral-prompt activations on the base unit vector."""
    behaviour: float
    """Mean behavioural score of the continuations."""
    activation_shift: float
    behaviour_shift: float

    def to_json(self) -> dict[str, object]:
        return asdict(self)


def drift_points(base_projection: float, base_behaviour: float,
                 rows: Sequence[tuple[str, str, int, float, float]]) -> list[DriftPoint]:
    """``rows``: (version, series, step, mean projection, mean behaviour) per checkpoint."""
    return [DriftPoint(v, s, int(step), float(p), float(b), float(p - base_projection), float(b - base_behaviour))
            for v, s, step, p, b in rows]


def drift_summary(points: Sequence[DriftPoint]) -> dict[str, object]:
    """Per-series curves and the Pearson r of activation vs behaviour shift over all points."""
    if len(points) < 3:
        raise GnomonError(f"drift needs at least 3 fine-tuned checkpoints to correlate; got {len(points)}")
    series: dict[str, dict[str, list[float]]] = {}
    for p in sorted(points, key=lambda p: (p.series, p.step)):
        s = series.setdefault(p.series, {"step": [], "activation_shift": [], "behaviour_shift": []})
        s["step"].append(p.step)
        s["activation_shift"].append(p.activation_shift)
        s["behaviour_shift"].append(p.behaviour_shift)
    r = pearson([p.activation_shift for p in points], [p.behaviour_shift for p in points])
    return {"pearson_r": r, "n_points": len(points), "series": series,
            "points": [p.to_json() for p in points]}


def screening_auroc(skewed_scores: np.ndarray, control_scores: np.ndarray, sign: float = 1.0) -> float:
    """AUROC of ``sign * score`` ranking skewed samples above control samples (``sign=-1``
    when the skewed corpus leans toward the direction's negative label)."""
    if sign not in (1.0, -1.0):
        raise GnomonError("sign must be +1 or -1")
    return M.auroc(sign * np.asarray(skewed_scores, np.float64), sign * np.asarray(control_scores, np.float64))


def first_moved_layer(first_checkpoints: list[str], home: Any) -> int:
    """The lowest layer (hidden-state index) a fine-tune series can change: blocks below the
    first trained one are frozen, so their outputs, and every direction read there, stay
    exactly the base model's (``train_blocks`` in the series' lineage settings; 1 when a
    series does not say, i.e. anything above the embeddings may move)."""
    lowest = None
    for vid in first_checkpoints:
        lin = read_lineage(vid, home)
        tb, n = lin.settings.get("train_blocks"), lin.num_layers
        k = n - int(tb) + 1 if isinstance(tb, int) and isinstance(n, int) and 0 < tb <= n else 1
        lowest = k if lowest is None else min(lowest, k)
    return lowest or 1


def behaviour_noise(base: dict[str, Any], members: list[Any], results: list[dict[str, Any]],
                    control: str) -> dict[str, Any] | None:
    """Unpaired standard errors of the behaviour shifts (over prompts, base and checkpoint
    added in quadrature) and whether every control checkpoint stays within 2 of them.

    Superseded by :func:`~pipeline.fleet_compare.drift_stats.paired_shift`: greedy decoding
    of the same prompts is paired (most continuations repeat the base's), so this test
    overstates the noise and misses small real shifts; kept to show the difference."""
    if base.get("behaviour_se") is None or any(r.get("behaviour_se") is None for r in results):
        return None
    se = {m.id: float(np.hypot(base["behaviour_se"], r["behaviour_se"])) for m, r in zip(members, results)}
    z = {m.id: (r["behaviour"] - base["behaviour"]) / se[m.id] if se[m.id] > 0 else 0.0
         for m, r in zip(members, results)}
    ctl = [m.id for m in members if m.series == control]
    return {"shift_se": se, "shift_z": z, "control_max_abs_z": max((abs(z[v]) for v in ctl), default=0.0),
            "control_within_2se": all(abs(z[v]) <= 2.0 for v in ctl)}
