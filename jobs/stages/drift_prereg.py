"""Pre-registering a drift analysis: its layer and settings, fixed before any fine-tune.

``gnomon fleet build`` writes ``<home>/prereg/drift-<concept>-<base>.json`` just before its
first fine-tune stage: the layer drift will read (the base's val-best among the layers the
fine-tunes can move, ties to the earliest; the val split is never scored by drift), every
candidate's val accuracy and the tie, the fine-tune recipe and seeds, and drift's own
settings. The file is written once and never overwritten (delete it to pre-register again);
``gnomon drift`` reads the layer from it and reports the record, so a layer picked after
seeing results shows up as a departure from it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from jobs.stages.fleet_common import concept_labels, ensure_collected, read_versions
from pipeline.atomic import write_json
from pipeline.types import GnomonError

# lazy: numpy, pyarrow (heavy; imported where used)

__all__ = ["DRIFT_DEFAULTS", "base_candidates", "layer_choice", "prereg_path", "preregister", "read_prereg"]

DRIFT_DEFAULTS = {"n_prompts": 32, "max_new_tokens": 24, "held_out": True, "n_boot": 1000, "behaviour": "vader",
                  "position": "last"}
"""What ``gnomon drift`` scores with unless told otherwise (recorded beside the layer)."""


def layer_choice(per: dict[int, Any], moved: int) -> dict[str, Any]:
    """Val accuracy of each candidate layer's own direction, and which layers tie at the top:
    the rule (earliest of the tied) is fixed before any checkpoint is scored."""
    from pipeline.fleet_compare import mean_diff, score

    val = {k: score(mean_diff(d), d, "val" if (d.split == "val").any() else "test")["accuracy"]
           for k, d in sorted(per.items()) if k >= moved}
    if not val:
        raise GnomonError(f"the fine-tunes move only layers >= {moved}, none of which is stored")
    top = max(val.values())
    tied = [k for k, v in val.items() if v >= top - 1e-12]
    return {"rule": "val accuracy of the base's train mean difference; ties: the earliest layer",
            "candidates_from": moved, "val_accuracy": val, "tied": tied, "layer": tied[0]}


def base_candidates(concept: str, base: str, train_blocks: int, home: Path, executor: Any, log: Any,
                    position: str) -> tuple[Any, int, tuple[str, str], dict[int, Any]]:
    """What a pre-registration chooses from, on the base: its lineage, the first layer a
    fine-tune of the last ``train_blocks`` blocks moves, the concept's labels, and the
    concept's rows per layer at ``position`` (collected first when missing)."""
    from pipeline.fleet.registry import read_lineage

    lin = read_lineage(base, home)
    n = lin.num_layers or 0
    moved = n - train_blocks + 1 if 0 < train_blocks <= n else 1
    labels = concept_labels(concept, home)
    ensure_collected([base], concept, home, executor, None, True, log)
    return lin, moved, labels, read_versions([base], concept, home, *labels, position)[base]


def prereg_path(home: Path, concept: str, base: str) -> Path:
    return home / "prereg" / f"drift-{concept}-{base}.json"


def read_prereg(home: Path, concept: str, base: str) -> dict[str, Any] | None:
    p = prereg_path(home, concept, base)
    return json.loads(p.read_text()) if p.is_file() else None


def preregister(concept: str, base: str, train_blocks: int, recipe: dict[str, Any], seeds: tuple[int, ...],
                home: Path, executor: Any, log: Any = print, checkpoints_before: list[str] | None = None) -> dict[str, Any]:
    """Write (once) the pre-registration of ``concept``'s drift on fine-tunes of ``base``;
    ``checkpoints_before`` names fine-tuned checkpoints that already existed (a record
    written after them is not a pre-registration, and says so)."""
    if (got := read_prereg(home, concept, base)) is not None:
        return got
    lin, moved, _labels, per = base_candidates(concept, base, train_blocks, home, executor, log, "last")
    rec = {"concept": concept, "base": base, "base_fingerprint": lin.fingerprint, "layer_choice": layer_choice(per, moved),
           "finetune": recipe, "seeds": list(seeds), "drift": DRIFT_DEFAULTS,
           "checkpoints_before": list(checkpoints_before or []),
           "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    p = prereg_path(home, concept, base)
    write_json(p, rec, indent=1)
    log(f"  pre-registered {concept} drift on {base}: layer {rec['layer_choice']['layer']} -> {p}")
    return rec
