"""The end-to-end DAG: collect -> fit -> register per (model, concept), then evaluate.

Each stage that completes writes a marker under ``<home>/jobs/<name>/``; a rerun skips
completed stages (and, inside a stage, the collection job skips complete shards), so a
crashed or interrupted job resumes where it stopped. Markers record the stage's inputs;
a changed spec reruns the stages it changes.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

from jobs.spec import EvaluateSection, JobSpec


def _marker(home: Path, job: str, key: str) -> Path:
    safe = hashlib.sha256(key.encode()).hexdigest()[:16]
    return home / "jobs" / job / f"{safe}.json"


def _stage(home: Path, job: str, key: str, inputs: dict[str, Any], fn: Callable[[], dict[str, Any]],
           log: Callable[[str], None]) -> dict[str, Any]:
    m = _marker(home, job, key)
    digest = hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()
    if m.is_file():
        doc = json.loads(m.read_text())
        if doc.get("inputs_sha256") == digest:
            log(f"[skip] {key} (done {doc['finished']})")
            return doc["result"]  # type: ignore[no-any-return]
    log(f"[run ] {key}")
    t0 = time.perf_counter()
    result = fn()
    log(f"[done] {key} in {_elapsed(time.perf_counter() - t0)}")
    m.parent.mkdir(parents=True, exist_ok=True)
    tmp = m.with_suffix(".tmp")
    tmp.write_text(json.dumps({"stage": key, "inputs_sha256": digest, "inputs": inputs, "result": result,
                               "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}, default=str))
    tmp.replace(m)
    return result


def _elapsed(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    return f"{m}m{s:02d}s" if m else f"{seconds:.1f}s"


def _eval_ref(cat: Any, ev: EvaluateSection, model: str) -> str:
    if ev.ref:
        return ev.ref
    from pipeline.types import GnomonError

    recs = cat.search(concept=ev.concept, model=model, method=ev.method, position=ev.position)
    if not recs:
        raise GnomonError(f"no registered {ev.concept} direction for {model}"
                          f"{' with method ' + ev.method if ev.method else ''}"
                          f"{' at position ' + ev.position if ev.position else ''}: fit it first")
    from catalog.registry import record_candidate
    from pipeline.selection import choose

    top = choose([record_candidate(r) for r in recs])  # the rule behind @best (pipeline/selection.py)
    if top is not None:
        return str(top.key.ref)
    # nothing is clearly above chance (e.g. a tiny validation split): evaluating still measures
    # something, so take the highest validation AUROC rather than stop the job
    return str(max(recs, key=lambda r: (r.metrics.get("val_auroc", 0.0), r.layer >= 1)).ref)


def run_job(spec: JobSpec, home: Any = None, tracking_uri: str | None = None, show_progress: bool = True,
            log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run every stage of ``spec``; returns {stage key: result summary}."""
    from catalog import Catalog
    from pipeline.home import gnomon_home

    from jobs.evaluate_job import EvalSpec, run_evaluation
    from jobs.executors import make_executor
    from jobs.fit_job import FitSpec, run_fit

    t_job = time.perf_counter()
    home_p = gnomon_home(home)
    executor = make_executor(spec.executor, spec.ray_address)
    cat = Catalog(tracking_uri=tracking_uri, home=home_p)
    results: dict[str, Any] = {}
    for model in spec.models:
        for concept in spec.fit.concepts:
            fs = FitSpec(model=model, dataset=concept, revision=spec.revision, layers=spec.fit.layers,
                         positions=spec.fit.positions, methods=spec.fit.methods,
                         select_metric=spec.fit.select_metric, register=spec.fit.register)
            key = f"fit/{model}/{spec.revision}/{concept}"
            def fit_stage(fs: FitSpec = fs) -> dict[str, Any]:
                return run_fit(fs, executor, home_p, catalog=cat, show_progress=show_progress)

            results[key] = _stage(home_p, spec.name, key, {**asdict(fs), "tracking": cat.tracking_uri},
                                  fit_stage, log)
    for ev in spec.evaluate:
        ref = _eval_ref(cat, ev, spec.models[0])
        es = EvalSpec(ref=ref, models=spec.models, strengths=ev.strengths, unit=ev.unit, n_prompts=ev.n_prompts,
                      max_new_tokens=ev.max_new_tokens, probe=ev.probe, monitor=ev.monitor, chat=ev.chat)
        key = f"evaluate/{ev.concept}/{ref}"
        def eval_stage(es: EvalSpec = es) -> dict[str, Any]:
            return run_evaluation(es, executor, home_p, tracking_uri)

        results[key] = _stage(home_p, spec.name, key, {**asdict(es), "tracking": cat.tracking_uri},
                              eval_stage, log)
    log(f"[done] job {spec.name} in {_elapsed(time.perf_counter() - t_job)}")
    return results
