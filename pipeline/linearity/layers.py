"""One layer's representation figures: probes, erasure and method agreement, from the
train/val/test contrast sets of that layer (:func:`pipeline.contrast.contrast_splits`).

>>> entry = analyse_layer(sets, base)                # doctest: +SKIP
>>> entry["probes"]["linear"]["test_accuracy"], entry["erasure"]["mlp"]["test_accuracy"]
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from pipeline.direction import Direction, Provenance
from pipeline.linearity.agreement import method_agreement
from pipeline.linearity.erasure import erasure_probes
from pipeline.linearity.probes import compare_probes, split_xy
from pipeline.types import GnomonError

__all__ = ["analyse_layer"]


def analyse_layer(sets: Mapping[Any, Any], base: Provenance, *, agreement: bool = True,
                  **probe_kw: Any) -> tuple[dict[str, Any], dict[str, Direction]]:
    """(the layer's JSON entry, the fitted directions by method).

    ``sets`` maps ``train``/``val``/``test`` to objects with ``pos``, ``neg`` and
    ``paired`` (ContrastSets). Without a ``val`` split the probes choose on ``train``.
    """
    missing = [s for s in ("train", "test") if s not in sets]
    if missing:
        raise GnomonError(f"layer {base.layer}: the {missing[0]} split is empty; the report needs train and test rows")
    t0 = time.perf_counter()
    tr, te = sets["train"], sets["test"]
    va = sets.get("val", tr)
    train, val, test = (split_xy(s.pos, s.neg) for s in (tr, va, te))
    probes = compare_probes(train, val, test, **probe_kw)
    erased = erasure_probes(train, val, test, **probe_kw)
    entry: dict[str, Any] = {
        "layer": base.layer,
        "n": {"train": len(train[1]), "val": len(val[1]) if "val" in sets else 0, "test": len(test[1])},
        "probes": {k: p.to_json() for k, p in probes.items()},
        "erasure": erased.to_json(),
    }
    dirs: dict[str, Direction] = {}
    if agreement:
        evals = {s: (np.asarray(sets[s].pos), np.asarray(sets[s].neg)) for s in ("val", "test") if s in sets}
        try:
            with np.errstate(invalid="ignore", divide="ignore"):
                ag = method_agreement((np.asarray(tr.pos), np.asarray(tr.neg)), base, paired=bool(tr.paired),
                                      eval_sets=evals)
            entry["agreement"] = ag.to_json()
            dirs = ag.directions
        except GnomonError as e:  # e.g. identical class statistics at the embedding layer
            entry["agreement"] = {"methods": [], "cosine": [], "mean_cosine": None, "val_auroc": {},
                                  "failed": {"all": str(e)}}
    entry["seconds"] = round(time.perf_counter() - t0, 3)
    return entry, dirs
