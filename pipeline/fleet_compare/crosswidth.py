"""Comparing two models of different widths through the same examples.

Directions of SmolLM2 (576) and MiniLM (384) live in unrelated bases, so their cosine
means nothing; what can be compared is how each model *arranges the same examples*:
linear CKA of the two activation matrices at every layer pair, and the Pearson
correlation of the concept's projection scores (each model's own train-split mean
difference, scored on the shared test rows) at every layer pair. The layer of B with the
highest CKA for each layer of A is the correspondence reported.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from pipeline.fleet_compare.data import LayerData
from pipeline.fleet_compare.similarity import correspondence, linear_cka, pearson
from pipeline.fleet_compare.transfer import best_layer, mean_diff
from pipeline.types import GnomonError

__all__ = ["CrossWidth", "cross_width"]


@dataclass(frozen=True)
class CrossWidth:
    model_a: str
    model_b: str
    layers_a: list[int]
    layers_b: list[int]
    n_examples: int
    cka: np.ndarray
    """(len(layers_a), len(layers_b)) linear CKA over the shared examples (all splits)."""
    projection_corr: np.ndarray
    """Same shape: Pearson r of the two models' projection scores on the shared test rows."""
    correspondence: list[tuple[int, int, float]]
    best_a: tuple[int, dict[str, float]]
    best_b: tuple[int, dict[str, float]]

    def to_json(self) -> dict[str, object]:
        return {"model_a": self.model_a, "model_b": self.model_b, "layers_a": self.layers_a,
                "layers_b": self.layers_b, "n_examples": self.n_examples,
                "cka": np.round(self.cka, 6).tolist(), "projection_corr": np.round(self.projection_corr, 6).tolist(),
                "correspondence": [{"layer_a": a, "layer_b": b, "cka": round(c, 6)} for a, b, c in self.correspondence],
                "best_layer_a": self.best_a[0], "best_test_a": self.best_a[1],
                "best_layer_b": self.best_b[0], "best_test_b": self.best_b[1]}


def _align(per_layer: Mapping[int, LayerData], ids: list[str]) -> dict[int, LayerData]:
    out = {}
    for layer, d in per_layer.items():
        pos = {e: i for i, e in enumerate(d.ids)}
        idx = [pos[e] for e in ids]
        out[layer] = LayerData(ids=list(ids), x=d.x[idx], is_pos=d.is_pos[idx], split=d.split[idx])
    return out


def cross_width(model_a: str, a: Mapping[int, LayerData], model_b: str, b: Mapping[int, LayerData]) -> CrossWidth:
    """CKA and projection correlation of every layer pair over the examples both stored."""
    if not a or not b:
        raise GnomonError("cross_width needs at least one layer of each model")
    shared = sorted(set.intersection(*(set(d.ids) for d in list(a.values()) + list(b.values()))))
    if len(shared) < 4:
        raise GnomonError(f"{model_a} and {model_b} share {len(shared)} stored examples; collect the same dataset on both")
    a, b = _align(a, shared), _align(b, shared)
    la, lb = sorted(a), sorted(b)
    cka = np.array([[linear_cka(a[i].x, b[j].x) for j in lb] for i in la])
    test = a[la[0]].split == "test"

    def proj(d: LayerData) -> np.ndarray:
        v = mean_diff(d)
        n = np.linalg.norm(v)
        return d.x[test] @ (v / n) if n > 0 else np.zeros(int(test.sum()))   # zeros: r is NaN

    pa, pb = [proj(a[i]) for i in la], [proj(b[j]) for j in lb]
    corr = np.array([[pearson(x, y) for y in pb] for x in pa])
    return CrossWidth(model_a, model_b, la, lb, len(shared), cka, corr, correspondence(cka, la, lb),
                      best_layer(a), best_layer(b))
