"""``gnomon drift CONCEPT --fleet NAME``: does the activation shift along the base model's
direction predict the behaviour change of fine-tuned checkpoints (Chen et al. 2025)?

The base model's direction is the train-split mean difference of the concept at
``layer`` (default: the base model's val-best layer), read from the store (collected
first when missing). One Ray task per version (base and every checkpoint of the
fine-tune series; one model load each) reads the neutral prompts' activations at that
layer and the behavioural score of greedy continuations of the same prompts (VADER for
sentiment; the next-token log-odds of the concept words otherwise). The base task also
projects every fine-tuning sample of the skewed and control corpora for the data
screening AUROC. See ``pipeline.fleet_compare.drift`` for the definitions.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.types import GnomonError

_CORPUS_KEYS = ("corpus_path", "corpus", "data_path", "data", "dataset_path")


@dataclass(frozen=True)
class DriftSpec:
    concept: str
    fleet: str
    base: str | None = None
    """Base version (default: the fleet's member of kind ``base`` the fine-tunes descend from)."""
    skewed: str | None = None
    """Skewed series name (default: the fine-tune series whose name does not say control/ctl)."""
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
    chat: bool = False
    html: str | None = None
    log: bool = True


@dataclass(frozen=True)
class DriftTask:
    model: str
    home: str
    concept: str
    layer: int
    unit: tuple[float, ...]
    prompts: tuple[str, ...]
    max_new_tokens: int
    chat: bool
    corpus: dict[str, tuple[str, ...]] = field(default_factory=dict)


def drift_checkpoint(task: DriftTask) -> dict[str, Any]:
    """Mean projection and behavioural score on one version (and corpus projections)."""
    import torch

    from pipeline.concepts.behaviour import CONCEPT_SCORERS
    from pipeline.dose import concept_words, logodds_sweep
    from pipeline.evaluate import SCORERS, _acts
    from pipeline.models import load_model
    from pipeline.steer import generate

    lm = load_model(task.model, home=task.home)
    u = np.asarray(task.unit, np.float64)
    if lm.hidden_size != u.size:
        raise GnomonError(f"{task.model} has hidden size {lm.hidden_size}, the base direction {u.size}")
    torch.manual_seed(0)
    proj = _acts(lm, task.prompts, task.layer, "last") @ u
    scorer = CONCEPT_SCORERS.get(task.concept)
    if scorer:
        texts = generate(lm, task.prompts, task.max_new_tokens, chat=task.chat)
        scores = np.asarray(SCORERS[scorer](texts), np.float64)
        behaviour = float(np.mean(scores))
        se = float(scores.std(ddof=1) / np.sqrt(scores.size)) if scores.size > 1 else None
    else:
        from pipeline.direction import Direction, Provenance

        zero = Direction(torch.tensor(u), Provenance.minimal(hidden_size=u.size, layer=task.layer), 1.0, -1.0)
        lo = logodds_sweep(lm, zero, task.prompts, [0.0], concept_words(task.concept), force=True, chat=task.chat)
        behaviour, texts, se = lo["mean_scores"][0], [], None
    out: dict[str, Any] = {"model": task.model, "projection": float(proj.mean()), "behaviour": behaviour,
                           "behaviour_se": se, "texts": texts[:4]}
    for name, samples in task.corpus.items():
        out[f"corpus.{name}"] = {pos: (_acts(lm, samples, task.layer, pos) @ u).tolist() for pos in ("last", "mean")}
    return out


def read_corpus(path: str, n: int) -> list[str]:
    """Texts of a fine-tuning corpus: JSONL/Parquet with a ``text`` column, or one text a line."""
    p = Path(path)
    if not p.is_file():
        raise GnomonError(f"corpus file {p} does not exist")
    if p.suffix == ".parquet":
        import pyarrow.parquet as pq

        t = pq.read_table(p)
        if "text" not in t.column_names:
            raise GnomonError(f"{p} has no text column")
        texts = [str(x) for x in t.column("text").to_pylist() if x]
    elif p.suffix == ".jsonl":
        texts = []
        for i, line in enumerate(p.read_text(encoding="utf-8").splitlines()):
            if line.strip():
                row = json.loads(line)
                if not isinstance(row, dict) or not isinstance(row.get("text"), str):
                    raise GnomonError(f"{p}:{i + 1}: each row needs a text string")
                texts.append(row["text"])
    else:
        texts = [ln.strip() for ln in p.read_text(encoding="utf-8").splitlines() if ln.strip()]
    if not texts:
        raise GnomonError(f"corpus {p} holds no text")
    return texts[:n]


def _lineage_corpus(series_first: str, home: Path) -> str | None:
    from pipeline.fleet.registry import read_lineage

    lin = read_lineage(series_first, home)
    # The fleet builders keep each series' corpus as <home>/corpora/<series>-<sha12>.jsonl.
    if lin.series and lin.data_sha256:
        kept = home / "corpora" / f"{lin.series}-{lin.data_sha256[:12]}.jsonl"
        if kept.is_file():
            return str(kept)
    settings = lin.settings
    for k in _CORPUS_KEYS:
        v = settings.get(k)
        if isinstance(v, str) and v:
            p = Path(v) if Path(v).is_absolute() else home / v
            if p.is_file():
                return str(p)
    return None


def plan_series(spec: DriftSpec, home: Path) -> tuple[str, dict[str, list[Any]], str, str]:
    """(base id, {series: members by step}, skewed name, control name)."""
    from pipeline.fleet.registry import load_fleet, read_lineage

    fleet = load_fleet(spec.fleet, home)
    kinds = {m.id: m.kind or read_lineage(m.id, home).kind for m in fleet.members}
    series: dict[str, list[Any]] = {}
    for m in fleet.members:
        if kinds[m.id] == "finetune" and m.series:
            series.setdefault(m.series, []).append(m)
    for members in series.values():
        members.sort(key=lambda m: m.step or 0)
    if not series:
        raise GnomonError(f"fleet {spec.fleet!r} has no fine-tune series (versions of kind finetune with a series)")
    ctl = spec.control or next((s for s in series if "control" in s or "ctl" in s), None)
    skew = spec.skewed or next((s for s in series if s != ctl), None)
    if skew is None or skew not in series or ctl is None or ctl not in series:
        what, name = ("skewed", skew) if skew is None or skew not in series else ("control", ctl)
        raise GnomonError(f"no {what} series {name!r} in fleet {spec.fleet!r}; series: {', '.join(series)} "
                          f"(pass --{what})")
    base = spec.base or _root(series[skew][0].id, home)
    return base, {skew: series[skew], ctl: series[ctl]}, skew, ctl


def _root(vid: str, home: Path) -> str:
    """The nearest ancestor of a checkpoint that is not itself a fine-tune: the base model."""
    from pipeline.fleet.registry import lineage_chain

    for c in lineage_chain(vid, home)[1:]:
        if c.kind != "finetune":
            return c.id
    raise GnomonError(f"{vid} has no ancestor of another kind than finetune; pass --base")


def run_drift(spec: DriftSpec, executor: Any = None, home: Any = None, tracking_uri: str | None = None,
              log: Any = print) -> dict[str, Any]:
    from jobs.fleet_common import (
        concept_labels,
        ensure_collected,
        read_versions,
        report_dir,
        write_json,
    )
    from pipeline.datasets import neutral_prompts
    from pipeline.fleet_compare import (
        behaviour_noise,
        best_layer,
        drift_points,
        drift_summary,
        first_moved_layer,
        mean_diff,
        screening_auroc,
    )
    from pipeline.home import gnomon_home

    home_p = gnomon_home(home)
    base, series, skew, ctl = plan_series(spec, home_p)
    pos, neg = concept_labels(spec.concept, home_p)
    toward = spec.toward or neg
    if toward not in (pos, neg):
        raise GnomonError(f"--toward {toward!r} is not a label of {spec.concept} ({pos}, {neg})")
    corpora = dict(spec.corpora)
    for role, name in (("skewed", skew), ("control", ctl)):
        if role not in corpora and (found := _lineage_corpus(series[name][0].id, home_p)):
            corpora[role] = found
    screen = {k: tuple(read_corpus(v, spec.screen_samples)) for k, v in corpora.items()}
    if executor is None:
        from jobs.executors import make_executor

        executor = make_executor("ray")
    layers = None if spec.layer is None else [spec.layer]
    ensure_collected([base], spec.concept, home_p, executor, layers, True, log)
    per = read_versions([base], spec.concept, home_p, pos, neg, "last", layers)[base]
    if spec.layer is not None and spec.layer not in per:
        raise GnomonError(f"layer {spec.layer} is not stored for {base}; stored: {sorted(per)}")
    moved = first_moved_layer([m.id for name in (skew, ctl) for m in series[name][:1]], home_p)
    if spec.layer is None and not any(k >= moved for k in per):
        raise GnomonError(f"the fine-tunes move only layers >= {moved}, none of which is stored for {base}")
    layer = spec.layer if spec.layer is not None else best_layer({k: d for k, d in per.items() if k >= moved})[0]
    v = mean_diff(per[layer])
    unit = tuple(float(x) for x in v / np.linalg.norm(v))
    prompts = tuple(neutral_prompts(spec.concept, home=home_p)[: spec.n_prompts])
    members = [m for name in (skew, ctl) for m in series[name]]
    tasks = [DriftTask(model=vid, home=str(home_p), concept=spec.concept, layer=layer, unit=unit, prompts=prompts,
                       max_new_tokens=spec.max_new_tokens, chat=spec.chat,
                       corpus=screen if vid == base and len(screen) == 2 else {})
             for vid in [base, *[m.id for m in members]]]
    res = executor.map(drift_checkpoint, tasks)
    b = res[0]
    rows = [(m.id, m.series, int(m.step or 0), r["projection"], r["behaviour"]) for m, r in zip(members, res[1:])]
    drift = drift_summary(drift_points(b["projection"], b["behaviour"], rows))
    if all(abs(r[3] - b["projection"]) < 1e-6 for r in rows):
        # Fine-tunes that train only the last blocks leave every layer below them unchanged.
        drift["note"] = (f"no checkpoint moved layer {layer}: the fine-tunes may train only later blocks; "
                         "pass --layer above the first trained block")
    drift["noise"] = behaviour_noise(b, members, res[1:], ctl)
    sign = 1.0 if toward == pos else -1.0
    screening = {}
    if len(screen) == 2:
        for p_ in ("last", "mean"):
            sk, ct = np.array(b["corpus.skewed"][p_]), np.array(b["corpus.control"][p_])
            screening[p_] = {"auroc": screening_auroc(sk - b["projection"], ct - b["projection"], sign),
                             "n_skewed": int(sk.size), "n_control": int(ct.size),
                             "mean_projection_difference_skewed": float((sk - b["projection"]).mean()),
                             "mean_projection_difference_control": float((ct - b["projection"]).mean())}
    from pipeline.concepts.behaviour import CONCEPT_SCORERS

    out = {"concept": spec.concept, "fleet": spec.fleet, "base": base, "layer": layer, "labels": [pos, neg],
           "toward": toward, "skewed": skew, "control": ctl,
           "behaviour_score": CONCEPT_SCORERS.get(spec.concept, "concept-word log-odds"),
           "base_projection": b["projection"], "base_behaviour": b["behaviour"], "drift": drift,
           "screening": screening, "corpora": corpora,
           "screening_note": None if screening else "no corpora: pass --corpus skewed=PATH --corpus control=PATH"}
    d = report_dir(home_p, "drift", spec.concept, spec.fleet)
    from jobs.fleet_report import drift_figures

    files = drift_figures(out, d)
    out["html"] = str(d / "report.html")
    write_json(d / "drift.json", out)
    if spec.html:
        shutil.copyfile(d / "report.html", spec.html)
        out["html"] = spec.html
    if spec.log:
        from catalog.fleet_runs import log_fleet_run

        metrics: dict[str, float] = {"pearson_r": float(drift["pearson_r"]), "layer": layer}  # type: ignore[arg-type]
        metrics |= {f"screening_auroc_{k}": v["auroc"] for k, v in screening.items()}
        by_series: dict[str, dict[str, list[float]]] = drift["series"]  # type: ignore[assignment]
        curves = {f"{k}.{m}": vals[m] for k, vals in by_series.items()
                  for m in ("activation_shift", "behaviour_shift")}
        out["run_id"] = log_fleet_run("drift", spec.concept, spec.fleet, version=base, metrics=metrics,
                                      params={"skewed": skew, "control": ctl, "toward": toward},
                                      curves=curves, files=[*files, d / "drift.json"], run_name=f"drift-{spec.fleet}",
                                      tracking_uri=tracking_uri, home=home_p)
    return out
