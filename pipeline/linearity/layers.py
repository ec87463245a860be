"""Layers' representation figures: probes, erasure and method agreement, from each layer's
train/val/test contrast sets (:func:`pipeline.contrast.contrast_splits`).

:func:`analyse_layers` trains the four probes of every given layer (linear and MLP, on the
activations and on their LEACE-erased copy) in one optimisation loop
(:func:`pipeline.linearity.probes.train_probes`), so a chunk of layers costs about what
its matrix products cost.

>>> entry, dirs = analyse_layer(sets, base)                       # doctest: +SKIP
>>> entry["probes"]["linear"]["test_accuracy"], entry["erasure"]["mlp"]["test_accuracy"]
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from pipeline.direction import Direction, Provenance
from pipeline.linearity.agreement import method_agreement
from pipeline.linearity.erasure import erase_splits
from pipeline.linearity.probes import ProbeTask, split_xy, train_probes
from pipeline.types import GnomonError

__all__ = ["analyse_layer", "analyse_layers"]

Sets = Mapping[Any, Any]
"""``train``/``val``/``test`` -> objects with ``pos``, ``neg`` and ``paired`` (ContrastSets)."""


def _agreement(sets: Sets, base: Provenance) -> tuple[dict[str, Any], dict[str, Direction]]:
    tr = sets["train"]
    evals = {s: (np.asarray(sets[s].pos), np.asarray(sets[s].neg)) for s in ("val", "test") if s in sets}
    try:
        with np.errstate(invalid="ignore", divide="ignore"):
            ag = method_agreement((np.asarray(tr.pos), np.asarray(tr.neg)), base, paired=bool(tr.paired),
                                  eval_sets=evals)
        return ag.to_json(), ag.directions
    except GnomonError as e:  # e.g. identical class statistics at the embedding layer
        return {"methods": [], "cosine": [], "mean_cosine": None, "val_auroc": {}, "failed": {"all": str(e)}}, {}


def analyse_layers(items: Sequence[tuple[Sets, Provenance]], *, agreement: bool = True,
                   **probe_kw: Any) -> list[tuple[dict[str, Any], dict[str, Direction]]]:
    """Per (sets, base provenance): (the layer's JSON entry, the fitted directions by method).

    Without a ``val`` split the probes choose on ``train``.
    """
    t0 = time.perf_counter()
    tasks, meta = [], []
    for sets, base in items:
        missing = [s for s in ("train", "test") if s not in sets]
        if missing:
            raise GnomonError(f"layer {base.layer}: the {missing[0]} split is empty; the report needs train and test rows")
        va = sets.get("val", sets["train"])
        train, val, test = (split_xy(s.pos, s.neg) for s in (sets["train"], va, sets["test"]))
        (etr, eva, ete), rank = erase_splits(train, val, test)
        tasks += [ProbeTask("linear", train, val, test), ProbeTask("mlp", train, val, test),
                  ProbeTask("linear", etr, eva, ete), ProbeTask("mlp", etr, eva, ete)]
        meta.append((len(train[1]), len(val[1]) if "val" in sets else 0, len(test[1]), rank))
    results = train_probes(tasks, **probe_kw)
    per = (time.perf_counter() - t0) / max(len(items), 1)
    out = []
    for i, ((sets, base), (n_tr, n_va, n_te, rank)) in enumerate(zip(items, meta)):
        lin, mlp, elin, emlp = results[4 * i: 4 * i + 4]
        entry: dict[str, Any] = {
            "layer": base.layer, "n": {"train": n_tr, "val": n_va, "test": n_te},
            "probes": {"linear": lin.to_json(), "mlp": mlp.to_json()},
            "erasure": {"linear": elin.to_json(), "mlp": emlp.to_json(), "rank": rank},
        }
        dirs: dict[str, Direction] = {}
        t1 = time.perf_counter()
        if agreement:
            torch.manual_seed(0)   # each layer's methods (CCS's init) as if it were analysed alone
            entry["agreement"], dirs = _agreement(sets, base)
        entry["seconds"] = round(per + time.perf_counter() - t1, 3)
        out.append((entry, dirs))
    return out


def analyse_layer(sets: Sets, base: Provenance, *, agreement: bool = True,
                  **probe_kw: Any) -> tuple[dict[str, Any], dict[str, Direction]]:
    """:func:`analyse_layers` for one layer."""
    return analyse_layers([(sets, base)], agreement=agreement, **probe_kw)[0]
