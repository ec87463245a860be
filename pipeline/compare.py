"""Cross-version comparison: how a concept's direction moves between checkpoints.

Directions from models of the same width can be compared directly (same basis when one
checkpoint is fine-tuned from the other); the cosine of their unit vectors says how far the
concept's direction moved, and the *transfer* accuracy (a direction from checkpoint A
scoring activations of checkpoint B) says whether the old reading still works.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from pipeline import metrics as M
from pipeline.direction import Direction
from pipeline.types import GnomonError


@dataclass(frozen=True)
class Comparison:
    labels: list[str]
    cosine: np.ndarray
    """(k, k) cosine similarity of the unit vectors."""
    layers: list[int]

    def to_json(self) -> dict[str, object]:
        return {"labels": self.labels, "layers": self.layers,
                "cosine": [[round(float(x), 6) for x in row] for row in self.cosine]}

    def table(self) -> str:
        w = max(len(s) for s in self.labels)
        head = " " * (w + 2) + " ".join(f"{i:>7}" for i in range(len(self.labels)))
        rows = [f"{i:>2} {s:<{w}}" + " ".join(f"{x:7.3f}" for x in self.cosine[i]) for i, s in enumerate(self.labels)]
        return "\n".join([head, *rows])


def label(d: Direction) -> str:
    p = d.provenance
    return f"{p.concept or '?'} {p.model_id}@{p.revision} L{p.layer} {p.method}"


def compare(directions: Sequence[Direction], labels: Sequence[str] | None = None) -> Comparison:
    """Pairwise cosine of ``directions`` (which must share a hidden size)."""
    if len(directions) < 2:
        raise GnomonError("compare needs at least two directions")
    concepts = {d.provenance.concept for d in directions if d.provenance.concept}
    if len(concepts) > 1:
        raise GnomonError(f"directions of different concepts ({', '.join(sorted(concepts))}) cannot be compared "
                          "across versions: give directions of one concept")
    sizes = {d.hidden_size for d in directions}
    if len(sizes) > 1:
        raise GnomonError(f"directions of different hidden sizes {sorted(sizes)} live in different spaces: "
                          "compare within one width")
    units = np.stack([d.unit.cpu().double().numpy() for d in directions])   # (k, d)
    return Comparison(labels=list(labels or [label(d) for d in directions]), cosine=units @ units.T,
                      layers=[d.layer for d in directions])


def transfer_accuracy(direction: Direction, pos: np.ndarray, neg: np.ndarray) -> dict[str, float]:
    """Score another checkpoint's activations (pos/neg rows at the same layer) with
    ``direction`` as fitted: AUROC, and accuracy at a threshold re-centred on the new data
    (the midpoint of the new class-mean projections), since a checkpoint may shift the offset."""
    if pos.shape[1] != direction.hidden_size:
        raise GnomonError(f"activations have width {pos.shape[1]}, the direction {direction.hidden_size}")
    u = direction.unit.cpu().double().numpy()
    sp, sn = pos.astype(np.float64) @ u, neg.astype(np.float64) @ u
    mid = 0.5 * (sp.mean() + sn.mean())
    return {"auroc": M.auroc(sp, sn), "accuracy": M.accuracy(sp, sn, mid), "dprime": M.dprime(sp, sn)}
