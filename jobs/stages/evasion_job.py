"""``gnomon evasion CONCEPT --fleet F``: when a model was trained against a frozen linear
monitor, did the concept leave the linear subspace?

For every checkpoint of the evasion series and its control (every seed), on the concept's
held-out rows, at the monitor's layer and every other stored layer: (a) the frozen monitor's
AUROC (and the share of positive rows it still flags), (b) a linear probe retrained on the
checkpoint, (c) an MLP probe retrained, (d) the MLP after LEACE, (e) the behaviour shift
against the base (paired over the neutral prompts, bootstrap CI), (f) the angle between the
original direction and the checkpoint's own. Standard errors are bootstrap over test rows.
The verdict per checkpoint (:mod:`pipeline.evasion.verdict`) says which happened: evaded
but still linear (rotated), only nonlinear, moved layers, erased, shifted, behaviour lost.
One task per version (:mod:`jobs.stages.evasion_tasks`) through the executor; a JSON, PNGs, an
HTML page and an MLflow run like the other fleet analyses.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jobs.runtime.engine import make_executor
from jobs.stages.fleet_common import ensure_collected, report_dir, write_json
from pipeline.home import gnomon_home
from pipeline.types import GnomonError

# lazy: numpy, pyarrow, torch (heavy; imported where used)

__all__ = ["EvasionSpec", "run_evasion"]

_SERIES = re.compile(r"^evade-(?P<concept>.+?)(?P<control>-control)?(?:-seed(?P<seed>\d+))?$")


@dataclass(frozen=True)
class EvasionSpec:
    concept: str
    fleet: str
    n_prompts: int = 32
    max_new_tokens: int = 24
    n_boot: int = 500
    probes: bool = True
    html: str | None = None
    log: bool = True


def _members(spec: EvasionSpec, home: Path) -> tuple[str, list[Any], str]:
    """(base, evasion and control members, the fleet used): ``--fleet smollm2`` finds the
    ``smollm2-evade-<concept>`` fleet the build wrote."""
    from jobs.stages.evasion_build import evasion_fleet
    from pipeline.fleet.registry import list_fleets, load_fleet

    names = [spec.fleet]
    if evasion_fleet(spec.fleet, spec.concept) in list_fleets(home):
        names.insert(0, evasion_fleet(spec.fleet, spec.concept))
    for name in names:
        fl = load_fleet(name, home)
        mine = [m for m in fl.members if m.series and (g := _SERIES.match(m.series)) and g["concept"] == spec.concept]
        bases = [m.id for m in fl.members if m.kind == "base"]
        if mine and bases:
            return bases[0], sorted(mine, key=lambda m: (m.series, m.step or 0)), name
    raise GnomonError(f"fleet {spec.fleet} has no evasion series of {spec.concept}; build them with "
                      f"`gnomon fleet build --only evade-{spec.concept}`")


def run_evasion(spec: EvasionSpec, executor: Any = None, home: Any = None, tracking_uri: str | None = None,
                log: Any = print) -> dict[str, Any]:
    from jobs.stages.evasion_build import read_monitor
    from jobs.stages.evasion_tasks import EvasionTask, evasion_checkpoint
    from pipeline.concepts.behaviour import CONCEPT_SCORERS
    from pipeline.datasets import neutral_prompts
    from pipeline.store import ActivationStore

    if spec.n_boot < 100:
        raise GnomonError(f"evasion needs --bootstrap >= 100, got {spec.n_boot}")
    home_p = gnomon_home(home)
    base, members, fleet = _members(spec, home_p)
    rec = read_monitor(home_p, spec.concept, base)
    if executor is None:
        executor = make_executor("local")
    versions = [base, *[m.id for m in members]]
    ensure_collected(versions, spec.concept, home_p, executor, None, True, log)
    store = ActivationStore(home_p)
    layers = sorted(set.intersection(*(set(store.layers(v, "main", spec.concept)) for v in versions)))
    mon = rec["monitor"]
    if int(mon["layer"]) not in layers:
        raise GnomonError(f"the monitor's layer {mon['layer']} is not stored for every version; recollect {spec.concept}")
    prompts = tuple(neutral_prompts(spec.concept, home_p)[: spec.n_prompts]) if spec.n_prompts else ()
    tasks = [EvasionTask(model=v, base=base, home=str(home_p), concept=spec.concept, labels=tuple(rec["labels"]),
                         layers=tuple(layers), monitor=mon, prompts=prompts, max_new_tokens=spec.max_new_tokens,
                         n_boot=spec.n_boot, probes=spec.probes) for v in versions]
    log(f"evasion {spec.concept} on {fleet}: {len(versions)} versions x {len(layers)} layers")
    res = executor.map(evasion_checkpoint, tasks)
    as_int = [{int(k): v for k, v in r["layers"].items()} for r in res]
    b = res[0]
    rows = _rows(members, res, as_int, int(mon["layer"]), spec.n_boot, bool(prompts))
    out = {"concept": spec.concept, "fleet": fleet, "base": base, "monitor_layer": int(mon["layer"]),
           "monitor_threshold": float(mon["threshold"]), "labels": rec["labels"], "layers": layers,
           "weight": rec["weight"], "recipe": rec["recipe"], "preregistration": {k: v for k, v in rec.items()
                                                                             if k != "monitor"},
           "behaviour_score": CONCEPT_SCORERS.get(spec.concept, "concept-word log-odds"),
           "n_prompts": len(prompts), "n_boot": spec.n_boot, "base_figures": {str(k): v for k, v in as_int[0].items()},
           "base_behaviour": b.get("behaviour"), "checkpoints": rows, "summary": _summary(rows)}
    d = report_dir(home_p, "evasion", spec.concept, fleet)
    from jobs.stages.evasion_report import evasion_figures

    files = evasion_figures(out, d)
    out["html"] = str(d / "report.html")
    write_json(d / "evasion.json", out)
    if spec.html:
        shutil.copyfile(d / "report.html", spec.html)
        out["html"] = spec.html
    if spec.log:
        out["run_id"] = _log_run(out, [*files, d / "evasion.json"], tracking_uri, home_p)
    return out


def _log_run(out: dict[str, Any], files: list[Path], tracking_uri: str | None, home: Path) -> str:
    """An MLflow run: (a)-(d) at the monitor's layer on the last checkpoint of each kind."""
    from catalog.fleet_runs import log_fleet_run

    lay = str(out["monitor_layer"])
    last = {r["control"]: r for r in out["checkpoints"]}   # rows are sorted by step
    metrics = {f"{'control' if c else 'evade'}_{k}": float(r["layers"][lay][k]["auroc"])
               for c, r in last.items() for k in ("frozen", "linear", "mlp", "mlp_after_leace") if k in r["layers"][lay]}
    return log_fleet_run("evasion", out["concept"], out["fleet"], version=out["base"], metrics=metrics,
                         params={"monitor_layer": out["monitor_layer"], "weight": out["weight"]},
                         tags={"verdict": out["summary"]["evasion"]}, files=files,
                         run_name=f"evasion-{out['fleet']}", tracking_uri=tracking_uri, home=home)


def _rows(members: list[Any], res: list[dict[str, Any]], as_int: list[dict[int, Any]], layer: int, n_boot: int,
          behaviour: bool) -> list[dict[str, Any]]:
    """One row per checkpoint: its figures, its paired behaviour shift, its verdict."""
    from pipeline.evasion.verdict import verdict
    from pipeline.fleet_compare.drift_stats import paired_shift

    rows = []
    for m, r, figs in zip(members, res[1:], as_int[1:]):
        g = _SERIES.match(m.series)
        beh = paired_shift(res[0]["scores"], r["scores"], n_boot=max(n_boot, 1000)) if behaviour else None
        rows.append({"version": m.id, "series": m.series, "control": bool(g["control"]), "seed": int(g["seed"] or 0),
                     "step": int(m.step or 0), "layers": {str(k): v for k, v in figs.items()},
                     "behaviour": beh, "verdict": verdict(as_int[0], figs, layer, beh)})
    return rows


def _summary(rows: list[dict[str, Any]]) -> dict[str, str]:
    """The last checkpoint's headline per kind and seed, joined: ``rotated (seed 0)``."""
    last: dict[tuple[bool, int], dict[str, Any]] = {}
    for r in rows:
        last[r["control"], r["seed"]] = r
    def say(control: bool) -> str:
        got = [(s, r["verdict"]["headline"]) for (c, s), r in sorted(last.items()) if c == control]
        return "; ".join(f"{h} (seed {s}, step {last[control, s]['step']})" for s, h in got) or "none"
    return {"evasion": say(False), "control": say(True)}
