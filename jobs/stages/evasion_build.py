"""``gnomon fleet build --only evade-<concept>``: the evasion and control series of a concept.

Before the first evasion checkpoint the stage pre-registers the frozen monitor in
``<home>/prereg/evasion-<concept>-<base>.json`` (written once, never overwritten): the layer
(the base's val-best among the layers the fine-tune can move, ``mean`` position, ties to the
earliest: the rule of :func:`jobs.stages.drift_prereg.layer_choice`), the unit direction (train mean
difference), the threshold that best separates the validation rows, the scale of the
penalty, the penalty weight and the recipe. Then, per seed, the evasion series (LM loss on
the concept's positive train texts + the monitor penalty) and its control (same texts, no
penalty) are trained (:mod:`pipeline.fleet.evade`), and the fleet
``<fleet>-evade-<concept>`` (base + both series) is written for ``gnomon evasion``.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np

from jobs.runtime.engine import LocalExecutor
from jobs.stages.drift_prereg import base_candidates, layer_choice
from pipeline.atomic import write_text
from pipeline.evasion.figures import monitor_from_base
from pipeline.types import GnomonError

# lazy: pyarrow (heavy; imported where used)

__all__ = ["EVADE_RECIPE", "EVADE_WEIGHT", "build_evasion", "evasion_fleet", "evasion_prereg", "read_monitor"]

EVADE_WEIGHT = 1.0
"""Weight of the monitor penalty beside the LM loss, fixed before any evasion series was
trained (the logistic loss of a monitor logit in units of the base's projection SD: at the
start both terms are O(1))."""
EVADE_RECIPE: dict[str, Any] = {"steps": 30, "every": 10}
"""Overrides of the fine-tune recipe (:class:`pipeline.fleet.finetune.FinetuneConfig`: 16
trained blocks, lr 5e-5, batches of 8): three checkpoints per series, so the evasion
analysis (every layer, three probes each) stays within minutes per checkpoint on a CPU."""


def _prereg_path(home: Path, concept: str, base: str) -> Path:
    return home / "prereg" / f"evasion-{concept}-{base}.json"


def evasion_prereg(concept: str, base: str, train_blocks: int, recipe: dict[str, Any], seeds: tuple[int, ...],
                   home: Path, executor: Any, log: Any = print) -> dict[str, Any]:
    """Write (once) and return the frozen monitor of ``concept`` on ``base``."""
    p = _prereg_path(home, concept, base)
    if p.is_file():
        return json.loads(p.read_text())
    lin, moved, (pos, neg), per = base_candidates(concept, base, train_blocks, home, executor, log, "mean")
    choice = layer_choice(per, moved)
    d = per[choice["layer"]]
    splits = {s: d.part(s) for s in ("train", "val", "test")}
    mon = monitor_from_base(int(choice["layer"]), splits)
    train_proj = np.concatenate([a @ mon.unit for a in splits["train"]])
    rec = {"concept": concept, "base": base, "base_fingerprint": lin.fingerprint, "labels": [pos, neg],
           "layer_choice": {**choice, "position": "mean"},
           "monitor": {"layer": mon.layer, "position": "mean", "threshold": mon.threshold,
                       "scale": float(train_proj.std(ddof=1)), "unit": [float(x) for x in mon.unit],
                       "rule": "train mean difference (unit); threshold: best val accuracy (median of ties)"},
           "weight": EVADE_WEIGHT, "recipe": recipe, "seeds": list(seeds),
           "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    write_text(p, json.dumps(rec, indent=1))
    log(f"  pre-registered the {concept} monitor on {base}: layer {mon.layer} (mean), threshold "
        f"{mon.threshold:.3f}, penalty weight {EVADE_WEIGHT} -> {p}")
    return rec


def read_monitor(home: Path, concept: str, base: str) -> dict[str, Any]:
    p = _prereg_path(home, concept, base)
    if not p.is_file():
        raise GnomonError(f"no evasion monitor pre-registered for {concept} on {base}; run "
                          f"`gnomon fleet build --only evade-{concept}` first")
    return json.loads(p.read_text())


def evasion_fleet(fleet: str, concept: str) -> str:
    return f"{fleet}-evade-{concept}"


def build_evasion(plan: Any, concept: str, home: Path, log: Any = print) -> list[str]:
    """Pre-register the monitor, train both series for every seed, write the evasion fleet;
    returns the built version ids."""
    from pipeline.datasets import load_dataset
    from pipeline.fleet.evade import MonitorSpec, concept_corpus, evade_series
    from pipeline.fleet.finetune import FinetuneConfig, seed_suffix
    from pipeline.fleet.registry import Fleet, FleetMember, read_lineage, save_fleet

    load_dataset(concept, home=home)   # an unknown concept fails here, before any work
    base = f"{plan.prefix}-base"
    cfg = FinetuneConfig(**{**EVADE_RECIPE, **plan.finetune})
    rec = evasion_prereg(concept, base, cfg.train_blocks, asdict(cfg), plan.seeds, home, LocalExecutor(), log)
    m = rec["monitor"]
    monitor = MonitorSpec(concept, int(m["layer"]), tuple(m["unit"]), float(m["threshold"]), float(m["scale"]))
    corpus = concept_corpus(concept, rec["labels"][0], home, cfg.n_texts if plan.prefix == "tiny" else None)
    ids: list[str] = []
    for seed in plan.seeds:
        sfx = seed_suffix(seed)
        for tag, series, weight in (("evade", f"evade-{concept}{sfx}", float(rec["weight"])),
                                    ("evctl", f"evade-{concept}-control{sfx}", 0.0)):
            for lin in evade_series(base, corpus, monitor, weight, replace(cfg, seed=seed),
                                    f"{plan.prefix}-{tag}-{concept}{sfx}", series, home=home, log=log):
                log(f"  {lin.id}: {lin.fingerprint}")
                ids.append(lin.id)
    members = [FleetMember(id=base, kind="base")]
    for vid in ids:
        lin = read_lineage(vid, home)
        members.append(FleetMember(id=vid, series=lin.series, step=lin.step, kind=lin.kind))
    name = evasion_fleet(plan.name, concept)
    save_fleet(Fleet(name, tuple(members), f"evasion and control series of {concept} on {base}"), home)
    log(f"  fleet {name}: {len(members)} versions (`gnomon evasion {concept} --fleet {name}`)")
    return ids
