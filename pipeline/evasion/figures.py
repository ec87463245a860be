"""What one checkpoint of an evasion series shows, layer by layer.

For every stored layer of a checkpoint (its activations on the concept's held-out rows):

- ``frozen``: the original monitor, frozen (the base's train mean difference at that layer,
  its threshold calibrated on the base): test AUROC with a bootstrap standard error over
  test rows, and the fraction of positive test rows it still flags at its threshold;
- ``linear``: a linear probe retrained on the checkpoint (train to fit, val to choose);
- ``mlp``: an MLP probe retrained with the same rows and budget
  (:mod:`pipeline.linearity.probes`);
- ``mlp_after_leace``: the MLP probe after LEACE erased the linear information
  (:mod:`pipeline.linearity.erasure`);
- ``angle``: degrees between the original direction and the checkpoint's own train mean
  difference at that layer.

Each probe's AUROC carries a bootstrap standard error over the test rows (the test logits
resampled within each class, so every replicate has both). Pure numpy/torch on arrays:
the planted cases in the tests build the arrays by hand.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline import metrics as M
from pipeline.types import GnomonError

# lazy: torch (heavy; imported where used)

__all__ = ["Monitor", "Splits", "auroc_se", "checkpoint_figures", "monitor_from_base"]

Splits = Mapping[str, tuple[np.ndarray, np.ndarray]]
"""``{"train"|"val"|"test": (positive rows (n, d), negative rows (m, d))}``."""

N_BOOT = 500


@dataclass(frozen=True)
class Monitor:
    """A frozen linear monitor at one layer: reads ``x @ unit`` and flags ``> threshold``."""

    layer: int
    unit: np.ndarray
    threshold: float

    def read(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x, np.float64) @ self.unit


def monitor_from_base(layer: int, splits: Splits) -> Monitor:
    """The base's train mean difference (unit length) with the threshold that best separates
    the validation rows (midpoint of the class means when validation is empty)."""
    pos, neg = splits["train"]
    v = np.asarray(pos, np.float64).mean(0) - np.asarray(neg, np.float64).mean(0)
    norm = float(np.linalg.norm(v))
    if not norm > 0:
        raise GnomonError(f"layer {layer}: the classes have the same mean on the base; no monitor to evade")
    unit = v / norm
    vp, vn = (np.asarray(a, np.float64) @ unit for a in splits.get("val", splits["train"]))
    if not len(vp) or not len(vn):
        vp, vn = (np.asarray(a, np.float64) @ unit for a in splits["train"])
    cand = np.unique(np.r_[vp, vn])
    mids = np.r_[cand[0] - 1.0, (cand[:-1] + cand[1:]) / 2, cand[-1] + 1.0]
    acc = [((vp > t).sum() + (vn <= t).sum()) / (len(vp) + len(vn)) for t in mids]
    best = float(max(acc))
    tied = mids[np.asarray(acc) >= best - 1e-12]
    return Monitor(layer=layer, unit=unit, threshold=float(np.median(tied)))


def auroc_se(pos: np.ndarray, neg: np.ndarray, n_boot: int = N_BOOT, seed: int = 0) -> tuple[float, float]:
    """(AUROC, bootstrap SE): rows resampled within each class, ``n_boot`` replicates."""
    pos, neg = np.asarray(pos, np.float64), np.asarray(neg, np.float64)
    value = M.auroc(pos, neg)
    rng = np.random.default_rng(seed)
    reps = [M.auroc(pos[rng.integers(0, len(pos), len(pos))], neg[rng.integers(0, len(neg), len(neg))])
            for _ in range(n_boot)]
    return float(value), float(np.std(reps, ddof=1))


def _xy(split: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    from pipeline.linearity.probes import split_xy

    return split_xy(*split)


def _probe_entry(result: Any, logits: np.ndarray, y: np.ndarray, n_boot: int) -> dict[str, float]:
    value, se = auroc_se(logits[y], logits[~y], n_boot)
    return {"auroc": value, "se": se, "accuracy": float(result.test_accuracy), "weight_decay": result.weight_decay}


def checkpoint_figures(layers: Mapping[int, Splits], originals: Mapping[int, np.ndarray], monitor: Monitor,
                       n_boot: int = N_BOOT, probes: bool = True) -> dict[int, dict[str, Any]]:
    """Per layer: the frozen original direction (at the monitor's layer, the monitor itself
    with its threshold), the retrained linear and MLP probes, the MLP after LEACE, and the
    angle to the original direction. ``originals[layer]`` is the base's train mean
    difference at that layer (any length)."""
    from pipeline.linearity.erasure import erase_splits
    from pipeline.linearity.probes import ProbeTask, train_probes

    out: dict[int, dict[str, Any]] = {}
    tasks: list[ProbeTask] = []
    owners: list[tuple[int, str]] = []
    for layer, sp in sorted(layers.items()):
        for name in ("train", "val", "test"):
            p, n = sp[name]
            if not len(p) or not len(n):
                raise GnomonError(f"layer {layer}: the {name} split needs rows of both classes "
                                  f"(has {len(p)} positive, {len(n)} negative)")
        o = np.asarray(originals[layer], np.float64)
        u = o / np.linalg.norm(o)
        tp, tn = (np.asarray(a, np.float64) @ u for a in sp["test"])
        value, se = auroc_se(tp, tn, n_boot)
        entry: dict[str, Any] = {"frozen": {"auroc": value, "se": se}}
        if layer == monitor.layer:
            mp, mn = monitor.read(sp["test"][0]), monitor.read(sp["test"][1])
            value, se = auroc_se(mp, mn, n_boot)
            entry["frozen"] = {"auroc": value, "se": se,
                               "flagged_positive": float((mp > monitor.threshold).mean()),
                               "flagged_negative": float((mn > monitor.threshold).mean()),
                               "mean_reading_positive": float(mp.mean()), "mean_reading_negative": float(mn.mean())}
        own = np.asarray(sp["train"][0], np.float64).mean(0) - np.asarray(sp["train"][1], np.float64).mean(0)
        cos = float(own @ u / max(np.linalg.norm(own), 1e-300))
        entry["angle"] = float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))
        out[layer] = entry
        if probes:
            tr, va, te = _xy(sp["train"]), _xy(sp["val"]), _xy(sp["test"])
            (etr, eva, ete), rank = erase_splits(tr, va, te)
            entry["leace_rank"] = rank
            tasks += [ProbeTask("linear", tr, va, te), ProbeTask("mlp", tr, va, te), ProbeTask("mlp", etr, eva, ete)]
            owners += [(layer, "linear"), (layer, "mlp"), (layer, "mlp_after_leace")]
    if tasks:
        scores: dict[int, np.ndarray] = {}
        results = train_probes(tasks, test_logits=scores)
        for i, ((layer, name), res, t) in enumerate(zip(owners, results, tasks)):
            out[layer][name] = _probe_entry(res, scores[i], t.test[1], n_boot)
    return out
