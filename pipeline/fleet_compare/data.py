"""Activations of one concept dataset for one version and layer, aligned by example id.

Cross-version comparisons need the *same examples* in the same order on every version
(CKA and projection correlations compare row by row), so this reads whole layers from
the store (``ActivationStore.read_layer``) and joins labels and splits from the stored
examples table, sorted by example id, rather than building per-version contrast sets.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.store import ActivationStore
from pipeline.types import GnomonError

__all__ = ["LayerData", "read_layer_data"]


@dataclass(frozen=True)
class LayerData:
    """One version's activations of one dataset at one layer, rows sorted by example id."""

    ids: list[str]
    x: np.ndarray
    """(n, d) float64."""
    is_pos: np.ndarray
    """(n,) bool: row has the positive label."""
    split: np.ndarray
    """(n,) str: train / val / test."""

    def part(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """(positive rows, negative rows) of one split."""
        m = self.split == split
        return self.x[m & self.is_pos], self.x[m & ~self.is_pos]

    @property
    def width(self) -> int:
        return int(self.x.shape[1])


def read_layer_data(home: str | Path, model: str, dataset: str, layer: int, positive: str, negative: str,
                    position: str = "last", revision: str = "main") -> LayerData:
    """Rows of ``positive``/``negative`` examples of ``dataset`` at ``layer`` (other labels dropped)."""
    store = ActivationStore(home)
    ids, x = store.read_layer(model, revision, dataset, layer, position)
    ex = store.read_examples(dataset).select(["id", "label", "split"]).to_pylist()
    meta = {r["id"]: (r["label"], r["split"]) for r in ex}
    keep = [i for i, e in enumerate(ids) if e in meta and meta[e][0] in (positive, negative)]
    keep.sort(key=lambda i: ids[i])
    if not keep:
        raise GnomonError(f"{model} {dataset} layer {layer}: no stored rows labelled {positive!r} or {negative!r}")
    sid = [ids[i] for i in keep]
    if len(set(sid)) != len(sid):
        raise GnomonError(f"{model} {dataset} layer {layer}: an example is stored twice; recollect the dataset")
    return LayerData(ids=sid, x=x[keep].astype(np.float64),
                     is_pos=np.array([meta[e][0] == positive for e in sid]),
                     split=np.array([meta[e][1] for e in sid]))
