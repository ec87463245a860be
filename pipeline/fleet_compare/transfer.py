"""Directions per version, probe transfer between versions, and emergence over training.

Every version's direction is the difference of class means on its *train* split (the
cheapest method, and the one whose geometry is easiest to compare; Marks & Tegmark 2023).
A direction is scored on a version's *test* split with the threshold at the midpoint of
that version's *train* class-mean projections: a version that shifts every activation
along the direction (a fine-tune, a change of numeric precision) moves the offset, not
the reading, and test labels never set the threshold. With that one rule the transfer
matrix's diagonal is each version's ordinary self-accuracy, so two identical checkpoints
transfer exactly as well as each reads itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pipeline import metrics as M
from pipeline.fleet_compare.data import LayerData
from pipeline.types import GnomonError

__all__ = ["Emergence", "Transfer", "best_layer", "emergence", "mean_diff", "score", "transfer_matrix"]


def mean_diff(data: LayerData) -> np.ndarray:
    """``mu+ - mu-`` on the train split (float64, not normalised)."""
    p, n = data.part("train")
    if len(p) == 0 or len(n) == 0:
        raise GnomonError("a version has no train rows of one class: cannot fit a direction")
    return p.mean(0) - n.mean(0)


def score(vector: np.ndarray, data: LayerData, split: str = "test") -> dict[str, float]:
    """Accuracy, AUROC and d' of ``vector`` on ``data``'s ``split``, thresholded at the
    midpoint of ``data``'s train class-mean projections (see the module doc)."""
    if vector.shape[0] != data.width:
        raise GnomonError(f"a direction of width {vector.shape[0]} cannot score activations of width {data.width}")
    norm = np.linalg.norm(vector)
    if norm == 0:  # the classes have identical means here (e.g. the same last token at layer 0)
        return {"accuracy": 0.5, "auroc": 0.5, "dprime": 0.0}
    u = vector / norm
    tp, tn = data.part("train")
    mid = 0.5 * (float((tp @ u).mean()) + float((tn @ u).mean()))
    p, n = data.part(split)
    sp, sn = p @ u, n @ u
    return {"accuracy": M.accuracy(sp, sn, mid), "auroc": M.auroc(sp, sn), "dprime": M.dprime(sp, sn)}


@dataclass(frozen=True)
class Transfer:
    labels: list[str]
    accuracy: np.ndarray
    """(k, k): row = version the direction was fitted on, column = version scored."""
    auroc: np.ndarray

    def to_json(self) -> dict[str, object]:
        return {"labels": self.labels, "accuracy": np.round(self.accuracy, 6).tolist(),
                "auroc": np.round(self.auroc, 6).tolist()}


def transfer_matrix(datas: Sequence[LayerData], labels: Sequence[str]) -> Transfer:
    """Direction fitted on version i scoring version j's test split, for all i, j."""
    vecs = [mean_diff(d) for d in datas]
    k = len(datas)
    acc, auc = np.full((k, k), np.nan), np.full((k, k), np.nan)
    for i in range(k):
        for j in range(k):
            if vecs[i].shape[0] != datas[j].width:
                continue
            s = score(vecs[i], datas[j])
            acc[i, j], auc[i, j] = s["accuracy"], s["auroc"]
    return Transfer(labels=list(labels), accuracy=acc, auroc=auc)


def best_layer(per_layer: dict[int, LayerData]) -> tuple[int, dict[str, float]]:
    """The layer whose own direction scores best on *val* (ties: the earlier layer), and
    that direction's test metrics. Falls back to test when there is no val split."""
    best: tuple[float, int] | None = None
    for layer, d in sorted(per_layer.items()):
        split = "val" if (d.split == "val").any() else "test"
        v = score(mean_diff(d), d, split)["accuracy"]
        if best is None or v > best[0]:
            best = (v, layer)
    if best is None:
        raise GnomonError("best_layer needs at least one layer")
    layer = best[1]
    return layer, score(mean_diff(per_layer[layer]), per_layer[layer], "test")


@dataclass(frozen=True)
class Emergence:
    """Test accuracy and separation of a series' own directions, by training step."""

    steps: list[int]
    layers: list[int]
    """Val-best layer at each step."""
    accuracy: list[float]
    auroc: list[float]
    dprime: list[float]
    accuracy_by_layer: list[list[float]]
    """[step][layer index] test accuracy at every compared layer."""

    def to_json(self) -> dict[str, object]:
        return {k: getattr(self, k) for k in ("steps", "layers", "accuracy", "auroc", "dprime",
                                               "accuracy_by_layer")}


def emergence(series: Sequence[tuple[int, dict[int, LayerData]]]) -> Emergence:
    """``series``: (step, {layer: data}) per checkpoint, any order; sorted by step here."""
    steps, layers, acc, auc, dp, grid = [], [], [], [], [], []
    for step, per_layer in sorted(series, key=lambda s: s[0]):
        layer, m = best_layer(per_layer)
        steps.append(int(step))
        layers.append(layer)
        acc.append(m["accuracy"])
        auc.append(m["auroc"])
        dp.append(m["dprime"])
        grid.append([score(mean_diff(d), d)["accuracy"] for _, d in sorted(per_layer.items())])
    return Emergence(steps, layers, acc, auc, dp, grid)
