"""The end-to-end DAG over a fleet: collect -> fit -> register per (model, concept), then evaluate,
then the linearity reports (``[[report]]``).

``build_stages`` lays out one stage per unit of work, each a call of a per-item function
through the executor (see :mod:`jobs.runtime.engine`), and :mod:`jobs.runtime.scheduler` runs them:

- ``collect/<model>/<rev>/<concept>``: the model's worker pool (one model load serves every
  concept of that version) collects the shards the store lacks; the store decides.
- ``fit/<model>/<rev>/<concept>``: one task per (layer, position), each reading its contrast
  set once for every method; starts as soon as that collection is done, while the next
  model collects where the executor overlaps stages (a cluster, a GPU; on a CPU-only node
  the collection already uses every core, so stages run one at a time). Its ``best-steer``
  measurement runs on the model the collection loaded. Keyed by the fit settings, the dataset's content hash, the model
  fingerprint and the catalog, so a rerun registers nothing and an edited concept refits.
- ``evaluate/<concept>``: the chosen direction on every model, each on its model's pool.
- ``report/<name>``: the linearity report (``jobs.stages.report_job``) after the fits.

Adding a stage is one per-item function and one line in ``build_stages``. The job is an
MLflow run (``catalog.job_runs``) holding the stage summary: which stages ran, which were
skipped, and their times.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from jobs.runtime.engine import make_executor
from jobs.runtime.scheduler import Stage, elapsed, run_stages
from jobs.runtime.spec import EvaluateSection, JobSpec
from jobs.stages.fit_job import FitSpec, collect_spec, fit_collected
from jobs.stages.report_job import ReportSpec, run_report
from jobs.stages.shards import model_pool
from pipeline.home import gnomon_home
from pipeline.models import ModelSpec
from pipeline.selection import choose
from pipeline.types import GnomonError

# lazy: numpy, pyarrow, torch (heavy; imported where used); jobs.stages.collect_job (tests patch it at the source)

__all__ = ["run_job", "build_stages"]


@dataclass
class Context:
    """What every stage of one job shares: the spec, the home, the catalog, the executor."""

    spec: JobSpec
    home: Path
    cat: Any
    executor: Any
    tracking_uri: str | None
    show_progress: bool
    log: Callable[[str], None] = print


def _fit_spec(ctx: Context, model: str, concept: str) -> Any:
    f = ctx.spec.fit
    return FitSpec(model=model, dataset=concept, revision=ctx.spec.revision, layers=f.layers, positions=f.positions,
                   methods=f.methods, select_metric=f.select_metric, register=f.register, params=f.params)


def concept_label(concept: str) -> str:
    """A concept's name in stage keys: a concept file's stem (the concept it registers as), so
    a spec whose files moved, or travelled with a submitted job (``jobs.runtime.cluster``), keeps its
    keys; the file's content is keyed by its hash in the stage inputs."""
    from pipeline.datasets import FORMATS

    path = Path(concept)
    return path.stem if path.suffix.lower() in FORMATS else concept


def _pool(ctx: Context, model: str) -> Any:
    return model_pool(ModelSpec(id=model, revision=ctx.spec.revision), str(ctx.home))


def collect_stage(ctx: Context, model: str, concept: str) -> Stage:
    from jobs.stages.collect_job import collect

    cs = collect_spec(_fit_spec(ctx, model, concept))
    return Stage(key=f"collect/{model}/{ctx.spec.revision}/{concept_label(concept)}", kind="collect", report=False,
                 log=False,
                 pools=(_pool(ctx, model)[0],), did_work=lambda r: r.written_files > 0,
                 run=lambda _deps: collect(cs, ctx.executor, ctx.home, show_progress=ctx.show_progress))


def fit_stage(ctx: Context, model: str, concept: str) -> Stage:
    fs = _fit_spec(ctx, model, concept)
    dep = f"collect/{model}/{ctx.spec.revision}/{concept_label(concept)}"

    def inputs(deps: dict[str, Any]) -> dict[str, Any]:
        c = deps[dep]
        return {**asdict(fs), "dataset": concept_label(concept), "tracking": ctx.cat.tracking_uri,
                "dataset_hash": c.dataset_hash,
                "fingerprint": c.fingerprint, "layers": list(c.layers)}

    def run(deps: dict[str, Any]) -> dict[str, Any]:
        return fit_collected(fs, deps[dep], ctx.executor, ctx.home, catalog=ctx.cat,  # type: ignore[no-any-return]
                             show_progress=ctx.show_progress).to_dict()

    return Stage(key=f"fit/{model}/{ctx.spec.revision}/{concept_label(concept)}", kind="fit", deps=(dep,),
                 inputs=inputs, run=run)


def evaluate_stage(ctx: Context, ev: EvaluateSection, index: int) -> Stage:
    from jobs.stages.evaluate_job import EvalSpec, evaluate_on_worker, plan_evaluation, write_evaluation

    spec = ctx.spec
    chosen: dict[str, Any] = {}

    def inputs(_deps: dict[str, Any]) -> dict[str, Any]:
        ref = _eval_ref(ctx.cat, ev, spec.models[0])
        chosen["es"] = es = EvalSpec(ref=ref, models=() if ev.fleet else spec.models, strengths=ev.strengths,
                                     unit=ev.unit, n_prompts=ev.n_prompts, max_new_tokens=ev.max_new_tokens,
                                     probe=ev.probe, monitor=ev.monitor, chat=ev.chat, fleet=ev.fleet)
        return {**asdict(es), "tracking": ctx.cat.tracking_uri}

    def run(_deps: dict[str, Any]) -> dict[str, Any]:
        es = chosen["es"]
        d, tasks, skipped = plan_evaluation(es, ctx.home, ctx.tracking_uri)
        t0 = time.perf_counter()
        results = []
        for task in tasks:  # each on its model's worker pool (loaded once for collection too)
            key, init = _pool(ctx, task.model.id)
            results += ctx.executor.map_stateful(init, evaluate_on_worker, [task], key=key)
        return write_evaluation(es, d, results + skipped, ctx.executor, time.perf_counter() - t0, ctx.home,
                                ctx.tracking_uri)

    fits = tuple(f"fit/{spec.models[0]}/{spec.revision}/{concept_label(c)}" for c in spec.fit.concepts)
    return Stage(key=f"evaluate/{ev.concept}/{index}", kind="evaluate", deps=fits, inputs=inputs, run=run,
                 pools=tuple(_pool(ctx, m)[0] for m in spec.models),
                 name=lambda r: f"evaluate/{ev.concept}/{r['ref']}")


def report_stage(ctx: Context, rep: Any, after: tuple[str, ...]) -> Stage:
    rs = ReportSpec(models=ctx.spec.models, revision=ctx.spec.revision, **asdict(rep))

    def run(_deps: dict[str, Any]) -> dict[str, Any]:
        doc = run_report(rs, ctx.executor, ctx.home, tracking_uri=ctx.tracking_uri, log=ctx.log)
        return {"verdicts": [r["verdict"]["line"] for r in doc["results"]], "paths": doc["paths"]}

    return Stage(key=f"report/{rs.name or '-'.join(map(concept_label, rs.concepts))}", kind="report", deps=after, run=run,
                 inputs=lambda _deps: {**asdict(rs), "tracking": ctx.cat.tracking_uri})


def build_stages(ctx: Context) -> list[Stage]:
    """Every stage of the job, in the order they are preferred (a model's concepts together)."""
    spec, stages = ctx.spec, []
    labels = [concept_label(c) for c in spec.fit.concepts]
    if len(set(labels)) < len(labels):
        twice = sorted({x for x in labels if labels.count(x) > 1})
        raise GnomonError(f"[fit] concepts: two entries are the concept {', '.join(twice)} (a file's name is its "
                          "concept); rename one")
    for model in spec.models:
        stages += [collect_stage(ctx, model, concept) for concept in spec.fit.concepts]
        stages += [fit_stage(ctx, model, concept) for concept in spec.fit.concepts]
    stages += [evaluate_stage(ctx, ev, i) for i, ev in enumerate(spec.evaluate)]
    stages += [report_stage(ctx, rep, tuple(s.key for s in stages)) for rep in spec.report]
    return stages


def _eval_ref(cat: Any, ev: EvaluateSection, model: str) -> str:
    if ev.ref:
        return ev.ref

    recs = cat.search(concept=ev.concept, model=model, method=ev.method, position=ev.position)
    if not recs:
        raise GnomonError(f"no registered {ev.concept} direction for {model}"
                          f"{' with method ' + ev.method if ev.method else ''}"
                          f"{' at position ' + ev.position if ev.position else ''}: fit it first")
    from catalog.registry import record_candidate

    top = choose([record_candidate(r) for r in recs])  # the rule behind @best (pipeline/selection.py)
    if top is not None:
        return str(top.key.ref)
    # nothing is clearly above chance (e.g. a tiny validation split): evaluating still measures
    # something, so take the highest validation AUROC rather than stop the job
    return str(max(recs, key=lambda r: (r.metrics.get("val_auroc", 0.0), r.layer >= 1)).ref)


def _check_before_start(spec: JobSpec, home: Path) -> None:
    """What would otherwise fail after minutes of collecting and fitting: the datasets load,
    every ``[fit.params]`` value is of its method's declared type and range, and every
    concept that is evaluated has its neutral prompts (``<name>_neutral.txt``)."""
    from pipeline.datasets import load_dataset, neutral_prompts
    from pipeline.fit import check_method_params

    for method, params in spec.fit.params.items():
        check_method_params(method, params)
    for concept in spec.fit.concepts:
        load_dataset(concept, home=home)
    for ev in spec.evaluate:
        neutral_prompts(ev.concept, home=home)


def run_job(spec: JobSpec, home: Any = None, tracking_uri: str | None = None, show_progress: bool = True,
            log: Callable[[str], None] = print, executor: Any = None) -> dict[str, Any]:
    """Run every stage of ``spec``; returns {stage key: result summary} for fits and evaluations."""
    from catalog import Catalog
    from catalog.job_runs import end_job_run, start_job_run

    t_job = time.perf_counter()
    home_p = gnomon_home(home)
    # Ray pools leave a CPU to the fits of the model collected before (overlap).
    spare = 1 if (os.cpu_count() or 1) >= 2 else 0
    own = executor is None  # created once for the job, closed at its end
    executor = executor or make_executor(spec.executor, spec.ray_address, spare_cpus=spare)
    ctx = Context(spec, home_p, Catalog(tracking_uri=tracking_uri, home=home_p), executor, tracking_uri,
                  show_progress, log)
    _check_before_start(spec, home_p)
    stages = build_stages(ctx)
    log(f"[plan] {len(stages)} stages, " + ("overlapped (a model's fits beside the next model's collection)"
                                           if getattr(executor, "overlaps", False) else
                                           "one at a time (the collection uses every core of this node)"))
    run_id = start_job_run(spec.name, _params(spec), tracking_uri=tracking_uri, home=home_p)
    failed: str | None = None
    try:
        out = run_stages(stages, executor, home_p, spec.name, log)
    except BaseException as e:
        failed = f"{type(e).__name__}: {e}"
        raise
    finally:
        records = [s.record.to_dict() for s in stages if s.record is not None]
        end_job_run(run_id, records, seconds=time.perf_counter() - t_job, failed=failed,
                    tracking_uri=tracking_uri, home=home_p)
        if own:
            executor.close()
    ran = sum(r["status"] == "ran" for r in records)
    log(f"[done] job {spec.name} in {elapsed(time.perf_counter() - t_job)}: {ran} stage(s) ran, "
        f"{len(records) - ran} skipped (MLflow run {run_id})")
    return {(s.name(out[s.key]) if s.name else s.key): out[s.key] for s in stages if s.report}


def _params(spec: JobSpec) -> dict[str, Any]:
    d = asdict(spec)
    fit = d.pop("fit")
    evals = d.pop("evaluate")
    return {**d, **{f"fit.{k}": v for k, v in fit.items()},
            "evaluate": [e["concept"] for e in evals]}
