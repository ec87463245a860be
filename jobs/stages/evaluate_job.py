"""The evaluation stage: check a direction's effects on one or many checkpoints.

One task per checkpoint (Ray tasks, or in-process): load the model, then measure
steering (a strength sweep on the concept's neutral prompts, scored by the concept's
scorer when it has one: VADER for sentiment), side effects (next-token KL on the neutral
prompts at the largest strength), the monitor (AUROC of the projection on the test split)
and erasure (a fresh probe after ablation). A direction applied to a checkpoint with other
weights is allowed here on purpose (that is the comparison), but never one of another
hidden size: with ``--fleet`` such a version is skipped with a line saying why.

Dose-response: the mean behavioural score against strength, its least-squares slope and
R^2 (VADER continuations for sentiment; for every concept also the next-token log-odds of
its concept words, ``pipeline.dose``), next-token KL and perplexity of the neutral prompts
at the largest strength. With ``--fleet`` every version's numbers are logged to MLflow as
one run (``catalog.fleet_runs``) and listed by ``gnomon evals ls``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from jobs.runtime.output import step
from jobs.stages.refs import resolve_direction
from jobs.stages.stage_specs import EvalSpec
from pipeline.atomic import write_json
from pipeline.chat import render_rows
from pipeline.concepts.behaviour import not_measured
from pipeline.concepts.record import concept_record
from pipeline.home import gnomon_home, push_shared, shared_copy
from pipeline.models import ModelSpec, cached_model
from pipeline.models.shape import check_width
from pipeline.store_keys import model_file_key
from pipeline.types import GnomonError

# lazy: pyarrow, torch (heavy; imported where used)


@dataclass(frozen=True)
class EvalTask:
    """One checkpoint's evaluation, resolved by :func:`plan_evaluation`."""
    spec: EvalSpec
    direction_path: str
    model: Any
    """The checkpoint's :class:`~pipeline.models.ModelSpec`, source resolved."""
    home: str
    concept: Any
    """The direction's :class:`~pipeline.concepts.record.Concept` (prompts, words, scorer), read once."""


@dataclass
class EvalResult:
    model: str
    fingerprint: str
    same_weights: bool
    metrics: dict[str, float] = field(default_factory=dict)
    sweep: dict[str, Any] | None = None
    seconds: float = 0.0
    skipped: str | None = None
    """Why this version was not evaluated (another hidden size), else None."""
    logodds: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)
    """What was not measured, and why (e.g. a concept without a behavioural readout)."""


def evaluate_checkpoint(task: EvalTask) -> EvalResult:
    """Everything measured on one checkpoint (the unit both executors schedule)."""
    import torch

    from pipeline.direction import Direction
    from pipeline.dose import is_generative, linear_fit, logodds_sweep, perplexity
    from pipeline.evaluate import next_token_kl, steering_sweep
    from pipeline.steer import add

    t0 = time.perf_counter()
    spec, d = task.spec, Direction.load(shared_copy(task.direction_path, task.home))   # object storage: any node
    lm = cached_model(task.model, home=task.home)  # the collection may have loaded it already
    name = task.model.id
    if lm.hidden_size != d.hidden_size:
        msg = f"{name} has hidden size {lm.hidden_size} but the direction has {d.hidden_size}"
        if spec.fleet is None:
            raise GnomonError(msg)
        return EvalResult(model=name, fingerprint=lm.fingerprint, same_weights=False, skipped=msg)
    torch.manual_seed(0)
    res = EvalResult(model=name, fingerprint=lm.fingerprint, same_weights=lm.fingerprint == d.provenance.fingerprint)
    known = task.concept
    prompts = known.prompts(spec.n_prompts)
    scorer = spec.scorer or known.scorer
    top = max(spec.strengths, key=abs)
    if is_generative(lm) and top != 0:  # strengths = [0]: a read-out-only evaluation, nothing to steer
        if scorer:
            sweep = steering_sweep(lm, d, prompts, spec.strengths, scorer=scorer, unit=spec.unit,
                                   max_new_tokens=spec.max_new_tokens, force=True, chat=spec.chat)
            res.sweep = sweep.to_json()
            fit = linear_fit(sweep.strengths, sweep.mean_scores)
            res.metrics.update({"steer_spearman": sweep.spearman, "steer_monotone": float(sweep.monotone),
                                "steer_score_min_strength": sweep.mean_scores[0],
                                "steer_score_max_strength": sweep.mean_scores[-1],
                                "steer_slope": fit["slope"], "steer_r2": fit["r2"]})
        words = known.words
        if words is None and not scorer:  # no readout words: said, not left as a silent null
            res.notes.append(not_measured(known.name))
        if words is not None:
            lo = logodds_sweep(lm, d, prompts, spec.strengths, words, unit=spec.unit, force=True, chat=spec.chat)
            res.logodds = lo
            res.metrics.update({"logodds_slope": lo["slope"], "logodds_r2": lo["r2"],
                                "logodds_at_zero": float(np.interp(0.0, lo["strengths"], lo["mean_scores"]))})
        steer_top = [add(lm, d, top, spec.unit, force=True)]  # type: ignore[arg-type]
        res.metrics["side_effect_kl"] = next_token_kl(lm, prompts, steer_top, chat=spec.chat)
        res.metrics["perplexity"] = perplexity(lm, prompts)
        res.metrics["perplexity_steered"] = perplexity(lm, prompts, [add(lm, d, top, spec.unit, force=True)])  # type: ignore[arg-type]
    if spec.monitor or spec.probe:
        res.metrics.update(_read_out_metrics(lm, d, spec, task.home))
    res.seconds = round(time.perf_counter() - t0, 2)
    return res


def check_models(models: tuple[Any, ...], home: Path) -> tuple[Any, ...]:
    """Every checkpoint resolves to something loadable (no model is loaded); returns their
    :class:`~pipeline.models.ModelSpec` s with the source resolved: the one resolution of
    each (a spec resolved already is returned as it is)."""
    out = []
    for m in models:
        spec = (ModelSpec(id=m) if isinstance(m, str) else m).resolved(home)
        if spec.source == "gguf" and not Path(spec.id).expanduser().is_file():
            raise GnomonError(f"model file {spec.id} does not exist")
        out.append(spec)
    return tuple(out)


def check_inputs(models: tuple[Any, ...], concept: str, home: Path) -> tuple[tuple[Any, ...], Any]:
    """Fail in a second, not after Ray has started and a model has loaded: every checkpoint
    must resolve to something loadable and the concept must have neutral prompts. Returns
    the resolved models and the concept's record (read once, handed to every task)."""
    specs = check_models(models, home)
    known = concept_record(concept or "direction", home, labels=False)   # the direction knows its labels
    known.prompts()
    return specs, known


def _read_out_metrics(lm: Any, d: Any, spec: EvalSpec, home: str) -> dict[str, float]:
    """Monitor AUROC and the ablation probe on the examples the direction was fitted on."""
    from pipeline.evaluate import ablation_probe, monitor_auroc
    from pipeline.store import ActivationStore

    name = d.provenance.dataset or d.provenance.concept
    table = ActivationStore(home).read_examples(name)
    rows = table.select(["id", "label", "split"]).to_pylist()
    texts = dict(zip(table.column("id").to_pylist(),
                     render_rows(table.column("text").to_pylist(), table.column("messages").to_pylist(),
                                 lm.tokenizer, name, ids=table.column("id").to_pylist())))

    def pick(split: str, label: str, n: int | None = None) -> list[str]:
        out = [texts[r["id"]] for r in rows if r["split"] == split and r["label"] == label]
        return out[:n] if n else out

    pos, neg = d.provenance.positive, d.provenance.negative
    out: dict[str, float] = {}
    if spec.monitor:
        m = monitor_auroc(lm, d, pick("test", pos), pick("test", neg), force=True)
        out.update({f"monitor_{k}": v for k, v in m.items()})
    if spec.probe:
        out.update(ablation_probe(lm, d, (pick("train", pos, spec.n_probe), pick("train", neg, spec.n_probe)),
                                  (pick("test", pos), pick("test", neg)), force=True))
    return out


def evaluate_on_worker(_worker: Any, task: EvalTask) -> EvalResult:
    """Evaluation as a model worker's per-item function: the worker loaded the model, and
    ``evaluate_checkpoint`` finds it in the process's model cache."""
    return evaluate_checkpoint(task)


def plan_evaluation(spec: EvalSpec, home: Path, tracking_uri: str | None = None
                    ) -> tuple[Any, list[EvalTask], list[EvalResult]]:
    """The direction (saved under the home so every worker reads the same file), one task per
    checkpoint, and the fleet versions skipped for their width."""
    given = check_models(spec.models, home)  # before the catalog (MLflow) and Ray are touched

    d = resolve_direction(spec.ref, tracking_uri, home, model=given[0].id if len(given) == 1 else None)

    for m in given:
        check_width([d], m, home)  # a width mismatch is refused before any model loads
    if not spec.strengths:
        raise GnomonError("give at least one strength")
    pre_skipped: list[EvalResult] = []
    if spec.fleet is not None:
        if spec.models:
            raise GnomonError("give --models or --fleet, not both")
        models, pre_skipped = _fleet_models(spec.fleet, d.hidden_size, home)
    else:
        models = given or (d.provenance.model_id,)
    if not models or not models[0]:
        raise GnomonError("the direction names no model: pass --models" if spec.fleet is None else
                          f"no version of fleet {spec.fleet!r} has the direction's hidden size {d.hidden_size}")
    specs, known = check_inputs(models, d.provenance.concept, home)  # before any worker starts
    path = home / "evals" / "directions" / f"{d.provenance.concept or 'direction'}-{model_file_key(d.provenance.model_id, home)}-L{d.layer}-{d.provenance.method}.safetensors"
    push_shared(d.save(path), home)   # on a home on object storage, for workers on other nodes
    return d, [EvalTask(spec=spec, direction_path=str(path), model=m, home=str(home), concept=known)
               for m in specs], pre_skipped


def write_evaluation(spec: EvalSpec, d: Any, results: list[EvalResult], executor: Any, seconds: float,
                     home: Path, tracking_uri: str | None = None) -> dict[str, Any]:
    """The summary, written to ``<home>/evals/<concept>/<time>.json`` (and, for a fleet, one MLflow run per version)."""
    summary = {"ref": spec.ref, "concept": d.provenance.concept, "layer": d.layer, "method": d.provenance.method,
               "direction_model": d.provenance.model_id, "unit": spec.unit, "strengths": list(spec.strengths),
               "executor": getattr(executor, "name", "?"), "seconds": round(seconds, 2),
               "checkpoints": [r.__dict__ for r in results]}
    out = home / "evals" / (d.provenance.concept or "direction") / f"{time.strftime('%Y%m%dT%H%M%S')}.json"
    write_json(out, summary, indent=1)
    summary["path"] = str(out)
    if spec.fleet is not None:
        summary["runs"] = _log_fleet(spec, d, results, out, tracking_uri, home)
    return summary


def run_evaluation(spec: EvalSpec, executor: Any, home: Any = None, tracking_uri: str | None = None,
                   show_progress: bool = False) -> dict[str, Any]:
    """Evaluate ``spec.ref`` on every checkpoint; writes ``<home>/evals/...json``."""
    home_p = gnomon_home(home)
    d, tasks, skipped = plan_evaluation(spec, home_p, tracking_uri)

    t0 = time.perf_counter()
    with step(f"evaluate {spec.ref} on {len(tasks)} model version(s)", total=len(tasks), unit="versions",
              bar=show_progress) as progress:
        results = executor.map(evaluate_checkpoint, tasks, on_result=lambda _r: progress.update(1)) + skipped
    return write_evaluation(spec, d, results, executor, time.perf_counter() - t0, home_p, tracking_uri)


def _fleet_models(fleet: str, width: int, home: Any) -> tuple[tuple[str, ...], list[EvalResult]]:
    """The fleet's versions of the direction's width, and a skip record for the others
    (their width read from lineage, so no model is loaded just to be refused)."""
    from pipeline.fleet.registry import load_fleet, read_lineage

    keep, skipped = [], []
    for vid in load_fleet(fleet, home).ids:
        lin = read_lineage(vid, home)
        if lin.hidden_size is not None and lin.hidden_size != width:
            skipped.append(EvalResult(model=vid, fingerprint=lin.fingerprint, same_weights=False,
                                      skipped=f"{vid} has hidden size {lin.hidden_size} but the direction has {width}"))
        else:
            keep.append(vid)
    return tuple(keep), skipped


def _log_fleet(spec: EvalSpec, d: Any, results: list[EvalResult], summary_path: Path, tracking_uri: str | None,
               home: Any) -> list[str]:
    """One MLflow run per evaluated version (skipped versions are not logged)."""
    from catalog.fleet_runs import log_fleet_run

    run_ids = []
    for r in results:
        if r.skipped:
            continue
        curves = {}
        if r.sweep:
            curves["sweep.mean_score"] = r.sweep["mean_scores"]
        if r.logodds:
            curves["sweep.logodds"] = r.logodds["mean_scores"]
        run_ids.append(log_fleet_run(
            "eval", d.provenance.concept, str(spec.fleet), version=r.model, metrics=r.metrics,
            params={"strengths": list(spec.strengths), "unit": spec.unit, "n_prompts": spec.n_prompts,
                    "max_new_tokens": spec.max_new_tokens, "layer": d.layer, "method": d.provenance.method},
            tags={"direction": Path(spec.ref).name if spec.ref.endswith(".safetensors") else spec.ref,
                  "direction_model": d.provenance.model_id, "fingerprint": r.fingerprint,
                  "same_weights": str(r.same_weights).lower(), "layer": str(d.layer)},
            curves=curves, files=[summary_path], run_name=f"eval-{r.model}", tracking_uri=tracking_uri, home=home))
    return run_ids
