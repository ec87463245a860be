"""``gnomon drift CONCEPT --fleet NAME``: does the activation shift along the base model's
direction predict the behaviour change of fine-tuned checkpoints (Chen et al. 2025), beyond
what the training schedule alone predicts?

The base model's direction is the train-split mean difference of the concept at
``layer`` (default: the base model's val-best layer among those the fine-tunes can move;
the val split is never scored by drift), read from the store (collected first when
missing). One task per version (base and every checkpoint of every seed of the skewed and
control series; :mod:`jobs.stages.drift_tasks`) reads, per neutral prompt, the projection at that
layer and the behavioural score of its greedy continuation. Prompts that share an opening
or a 20-character fragment with a training corpus are left out (``held_out``). The report
(:mod:`jobs.stages.drift_analysis`) pairs every checkpoint with the base prompt by prompt.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from jobs.runtime.engine import make_executor
from jobs.runtime.output import step
from jobs.stages.drift_analysis import analyse, behaviour_checks, screening
from jobs.stages.drift_prereg import layer_choice, read_prereg
from jobs.stages.drift_tasks import DriftTask, drift_checkpoint, lineage_corpus, read_corpus
from jobs.stages.fleet_common import ensure_collected, read_versions, report_dir, write_json
from jobs.stages.fleet_report import drift_figures
from pipeline.concepts.record import concept_record
from pipeline.home import gnomon_home
from pipeline.models import ModelSpec
from pipeline.types import GnomonError

# lazy: pyarrow, torch (heavy; imported where used)

__all__ = ["DriftSpec", "DriftTask", "drift_checkpoint", "plan_series", "read_corpus", "run_drift", "series_group"]

_SEED = re.compile(r"-seed(\d+)$")


def series_group(series: str) -> tuple[str, int | None]:
    """``ft-negative-seed2`` -> (``ft-negative``, 2); a name without the suffix -> (name, None)."""
    m = _SEED.search(series)
    return (series[: m.start()], int(m.group(1))) if m else (series, None)


@dataclass(frozen=True)
class DriftSpec:
    concept: str
    fleet: str
    base: str | None = None
    """Base version (default: the fleet's member of kind ``base`` the fine-tunes descend from)."""
    skewed: str | None = None
    """Skewed series group (default: the fine-tune series whose name does not say control/ctl;
    ``<group>-seed<k>`` series are seeds of ``<group>``)."""
    control: str | None = None
    layer: int | None = None
    """Direction layer (default: the base model's val-best among the layers the fine-tunes
    can move, see :func:`first_moved_layer`)."""
    toward: str | None = None
    """Label the skewed corpus leans to (default: the concept's negative label)."""
    corpora: dict[str, str] = field(default_factory=dict)
    """``{"skewed": path, "control": path}``; default: from the series' lineage settings."""
    n_prompts: int = 32
    max_new_tokens: int = 24
    screen_samples: int = 200
    held_out: bool = True
    """Leave out prompts sharing an opening or a 20-character fragment with a training corpus."""
    n_boot: int = 1000
    """Bootstrap replicates of every CI."""
    chat: bool = False
    html: str | None = None
    log: bool = True


def plan_series(spec: DriftSpec, home: Path) -> tuple[str, dict[str, list[tuple[Any, int]]], str, str]:
    """(base id, {series group: [(member, seed)] by seed then step}, skewed group, control group)."""
    from pipeline.fleet.registry import load_fleet, read_lineage

    fleet = load_fleet(spec.fleet, home)
    series: dict[str, list[tuple[Any, int]]] = {}
    for m in fleet.members:
        lin = None if m.kind else read_lineage(m.id, home)
        if (m.kind or (lin.kind if lin else None)) == "finetune" and m.series:
            group, sfx = series_group(m.series)
            if sfx is None:
                got = read_lineage(m.id, home).settings.get("seed", 0)
                sfx = got if isinstance(got, int) else 0
            series.setdefault(group, []).append((m, sfx))
    for members in series.values():
        members.sort(key=lambda x: (x[1], x[0].step or 0))
    if not series:
        raise GnomonError(f"fleet {spec.fleet!r} has no fine-tune series (versions of kind finetune with a series)")
    ctl = spec.control or next((s for s in series if "control" in s or "ctl" in s), None)
    skew = spec.skewed or next((s for s in series if s != ctl), None)
    if skew is None or skew not in series or ctl is None or ctl not in series:
        what, name = ("skewed", skew) if skew is None or skew not in series else ("control", ctl)
        raise GnomonError(f"no {what} series {name!r} in fleet {spec.fleet!r}; series: {', '.join(series)} "
                          f"(pass --{what})")
    base = spec.base or _root(series[skew][0][0].id, home)
    return base, {skew: series[skew], ctl: series[ctl]}, skew, ctl


def _root(vid: str, home: Path) -> str:
    """The nearest ancestor of a checkpoint that is not itself a fine-tune: the base model."""
    from pipeline.fleet.registry import lineage_chain

    for c in lineage_chain(vid, home)[1:]:
        if c.kind != "finetune":
            return c.id
    raise GnomonError(f"{vid} has no ancestor of another kind than finetune; pass --base")


def _prompts(spec: DriftSpec, known: Any, train: dict[str, list[str]]) -> tuple[tuple[str, ...], dict[str, Any]]:
    from pipeline.fleet_compare.regurgitation import held_out_prompts

    every = known.prompts()
    if not spec.held_out or not train:
        kept = tuple(every[: spec.n_prompts])
        return kept, {"held_out": False, "n": len(kept), "texts": list(kept)}
    keep, drop = held_out_prompts(every, [t for texts in train.values() for t in texts])
    if len(keep) < 3:
        raise GnomonError(f"only {len(keep)} of {len(every)} neutral prompts share no opening with the training "
                          "corpora; write more prompts or pass --no-held-out")
    kept = tuple(every[i] for i in keep[: spec.n_prompts])
    return kept, {"held_out": True, "n": len(kept), "texts": list(kept), "dropped": [every[i] for i in drop],
                  "rule": "no prompt shares its first 3 words or a 20-character fragment with a training text"}


def run_drift(spec: DriftSpec, executor: Any = None, home: Any = None, tracking_uri: str | None = None,
              log: Any = print) -> dict[str, Any]:
    from pipeline.fleet_compare import first_moved_layer, mean_diff
    _check(spec)
    home_p = gnomon_home(home)
    base, series, skew, ctl = plan_series(spec, home_p)
    known = concept_record(spec.concept, home_p)   # labels, prompts, scorer, words: read once
    pos, neg = known.labels
    toward = spec.toward or neg
    if toward not in (pos, neg):
        raise GnomonError(f"--toward {toward!r} is not a label of {spec.concept} ({pos}, {neg})")
    members = [m for name in (skew, ctl) for m, _ in series[name]]
    corpora, train_paths, screen, train = _corpora(spec, series, skew, ctl, home_p)
    executor = executor if executor is not None else make_executor("ray")
    layers = None if spec.layer is None else [spec.layer]
    versions = {v: ModelSpec(id=v).resolved(home_p) for v in [base, *[m.id for m in members]]}   # once each
    ensure_collected([versions[base]], spec.concept, home_p, executor, layers, True, log)
    per = read_versions([base], spec.concept, home_p, pos, neg, "last", layers)[base]
    if spec.layer is not None and spec.layer not in per:
        raise GnomonError(f"layer {spec.layer} is not stored for {base}; stored: {sorted(per)}")
    moved = first_moved_layer([series[name][0][0].id for name in (skew, ctl)], home_p)
    prereg = read_prereg(home_p, spec.concept, base)
    choice = _choose_layer(spec, base, per, moved, prereg)
    layer = int(choice["layer"])
    v = mean_diff(per[layer])
    unit = tuple(float(x) for x in v / np.linalg.norm(v))
    prompts, prompt_info = _prompts(spec, known, train)
    tasks = [DriftTask(model=versions[vid], home=str(home_p), concept=known, layer=layer, unit=unit, prompts=prompts,
                       max_new_tokens=spec.max_new_tokens, chat=spec.chat,
                       corpus=screen if vid == base and len(screen) == 2 else {})
             for vid in versions]
    with step(f"drift of {spec.concept}: {len(tasks)} versions at layer {layer} ({len(prompts)} prompts each)",
              total=len(tasks), unit="versions", bar=False) as progress:
        res = executor.map(drift_checkpoint, tasks, on_result=lambda _r: progress.update(1))
    b = res[0]
    rows = [(m.id, name, sd, int(m.step or 0), str(m.series)) for name in (skew, ctl) for m, sd in series[name]]
    drift = analyse(b, rows, res[1:], skew, ctl, spec.n_boot)
    if all(abs(r["projection"] - b["projection"]) < 1e-6 for r in res[1:]):   # only later blocks trained
        drift["note"] = f"no checkpoint moved layer {layer}: {UNMOVED}"
    sign = 1.0 if toward == pos else -1.0
    out = {"concept": spec.concept, "fleet": spec.fleet, "base": base, "layer": layer, "layer_choice": choice,
           "labels": [pos, neg], "toward": toward, "skewed": skew, "control": ctl,
           "behaviour_score": known.scorer or "concept-word log-odds",
           "prompts": prompt_info, "max_new_tokens": spec.max_new_tokens,
           "base_projection": b["projection"], "base_behaviour": b["behaviour"], "drift": drift,
           "behaviour_checks": behaviour_checks(b, rows, res[1:], train),
           "screening": screening(b, screen, sign, known, spec.n_boot, home_p) if len(screen) == 2 else {},
           "corpora": corpora, "training_corpora": train_paths, "preregistration": prereg,
           "screening_note": None if len(screen) == 2 else "no corpora: pass --corpus skewed=PATH --corpus control=PATH"}
    return _publish(out, spec, tracking_uri, home_p)


UNMOVED = "the fine-tunes may train only later blocks; pass --layer above the first trained block"
"""Said when no checkpoint moved the layer read: fine-tunes that train only the last blocks
leave every layer below them unchanged."""


def _check(spec: DriftSpec) -> None:
    if spec.n_prompts < 3 or spec.n_boot < 100:
        raise GnomonError(f"drift needs --prompts >= 3 and --bootstrap >= 100 (a CI from fewer replicates is not "
                          f"one); got {spec.n_prompts} and {spec.n_boot}")


def _corpora(spec: DriftSpec, series: dict[str, Any], skew: str, ctl: str, home: Path
             ) -> tuple[dict[str, str], dict[Any, str], dict[str, tuple[str, ...]], dict[Any, list[str]]]:
    """(the skewed and control corpora screened, each series' training corpus path, the
    screening samples, each series' training texts). Each series (each seed) was trained on
    its own corpus: the one its lineage names; a ``--corpus`` stands for every seed of its series."""
    members = [m for name in (skew, ctl) for m, _ in series[name]]
    train_paths = {m.series: p for m in members if (p := lineage_corpus(m.id, home))}
    corpora = dict(spec.corpora)
    for role, name in (("skewed", skew), ("control", ctl)):
        if role not in corpora and (found := train_paths.get(series[name][0][0].series)):
            corpora[role] = found
    full = {k: read_corpus(v) for k, v in corpora.items()}
    screen = {k: tuple(v[: spec.screen_samples]) for k, v in full.items()}
    train = {s: read_corpus(p) for s, p in train_paths.items()}
    for role, name in (("skewed", skew), ("control", ctl)):
        for m, _ in series[name]:
            if role in spec.corpora:
                train[m.series] = full[role]
    return corpora, train_paths, screen, train


def _choose_layer(spec: DriftSpec, base: str, per: dict[int, Any], moved: int, prereg: Any) -> dict[str, Any]:
    """The layer read: ``--layer``, else the pre-registered one, else :func:`layer_choice`."""
    if spec.layer is None and not any(k >= moved for k in per):
        raise GnomonError(f"the fine-tunes move only layers >= {moved}, none of which is stored for {base}")
    if spec.layer is not None:
        choice: dict[str, Any] = {"rule": "given (--layer)", "layer": spec.layer}
    elif prereg is not None:
        choice = {**prereg["layer_choice"], "rule": "pre-registered: " + prereg["layer_choice"]["rule"]}
    else:
        choice = layer_choice(per, moved)
    choice["preregistered_layer"] = None if prereg is None else prereg["layer_choice"]["layer"]
    if int(choice["layer"]) not in per:
        raise GnomonError(f"layer {int(choice['layer'])} is not stored for {base}; stored: {sorted(per)}")
    return choice


def _publish(out: dict[str, Any], spec: DriftSpec, tracking_uri: str | None, home: Path) -> dict[str, Any]:
    """Figures, ``drift.json``, the HTML page (and its copy at ``--html``), the MLflow run."""
    d = report_dir(home, "drift", spec.concept, spec.fleet)
    files = drift_figures(out, d)
    out["html"] = str(d / "report.html")
    write_json(d / "drift.json", out)
    if spec.html:
        shutil.copyfile(d / "report.html", spec.html)
        out["html"] = spec.html
    if spec.log:
        _log_run(out, spec, files, d, tracking_uri, home)
    return out


def _log_run(out: dict[str, Any], spec: DriftSpec, files: list[Path], d: Path, tracking_uri: str | None,
             home: Path) -> None:
    from catalog.fleet_runs import log_fleet_run

    st = out["drift"]["statistics"]
    metrics: dict[str, float] = {"pearson_r": float(out["drift"]["pearson_r"]), "layer": out["layer"],
                                 "partial_r": float(st["partial_r"]["value"]),
                                 "r2_gain_from_projection": float(st["r2"]["gain_from_projection"]["value"])}
    metrics |= {f"screening_auroc_{k}": v["auroc"] for k, v in out["screening"].items()}
    curves = {f"{k}.{m}": vals[m] for k, vals in out["drift"]["series"].items()
              for m in ("activation_shift", "behaviour_shift")}
    out["run_id"] = log_fleet_run("drift", spec.concept, spec.fleet, version=out["base"], metrics=metrics,
                                  params={"skewed": out["skewed"], "control": out["control"], "toward": out["toward"]},
                                  curves=curves, files=[*files, d / "drift.json"], run_name=f"drift-{spec.fleet}",
                                  tracking_uri=tracking_uri, home=home)
