"""The fitting job: contrast sets from the store, one task per (layer, position).

A fit request names a model, a dataset (its concept), the two labels, and the layers,
positions and methods to sweep. Missing activations are collected first by the same code
as ``gnomon collect`` (complete shards are reused). Each group reads its contrast set
through DuckDB once and fits every method on it (``jobs.stages.fit_tasks``); the layer sweep then picks, per (method, position),
the layer with the best *validation* metric (test stays untouched for reporting), keeps
the whole curve, and registers the chosen directions in the catalog.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

from jobs.runtime.output import step
from jobs.runtime.results import FitResult
from jobs.stages.best_select import alias_targets, candidate, select_best
from jobs.stages.collect_job import CollectSpec
from jobs.stages.fit_tasks import FitFailure, GroupTask, fit_layer, plan_groups
from jobs.stages.shards import load_for_spec
from jobs.stages.steer_select import select_steer
from pipeline.atomic import write_json
from pipeline.home import gnomon_home, push_shared
from pipeline.methods import check_methods, method_names
from pipeline.models.spec import ModelSpec
from pipeline.selection import rank
from pipeline.store_keys import model_file_key
from pipeline.types import GnomonError

# lazy: numpy, pyarrow, torch (heavy; imported where used); jobs.stages.collect_job (tests patch it at the source)

__all__ = ["FitSpec", "FitFailure", "GroupTask", "fit_layer", "run_fit",
           "fit_collected", "sweep_curves", "with_layers", "SELECT_METRICS"]

SELECT_METRICS = ("val_auroc", "val_accuracy", "val_dprime")


@dataclass(frozen=True)
class FitSpec:
    """A fit request (also the ``[fit]`` table of a TOML job spec)."""

    model: str
    dataset: str
    positive: str | None = None
    """Label that should project higher (default: the concept's declared contrast)."""
    negative: str | None = None
    revision: str = "main"
    layers: tuple[int, ...] | None = None
    positions: tuple[str, ...] = ("last", "mean")
    """The one default for every fit: ``gnomon fit --positions`` and a job spec's ``[fit]``
    read it (``jobs.runtime.spec.FitSection``). Both: selection ranks per position and a concept
    may read better at the mean (mean-pooled encoders); ``last`` alone halves the work."""
    methods: tuple[str, ...] = field(default_factory=method_names)
    """Default: every registered method (``pipeline.methods``)."""
    select_metric: str = "val_auroc"
    """Validation metric that picks the best layer per method."""
    register: str = "best"
    """``best`` (one direction per method and position), ``all`` (every layer), ``none``."""
    params: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per-method parameters, e.g. ``{"logistic": {"l2": 1e-3}}``."""
    collect_dtype: str = "float16"
    batch_size: int = 32
    select_steer: bool = True
    """After registering, measure the top candidates' dose-response and set ``best-steer``
    (False: defer it to ``gnomon catalog select-steer``)."""
    resolved_model: Any = field(default=None, compare=False, repr=False)
    """The model's :class:`~pipeline.models.ModelSpec` with its source resolved, when the
    command resolved it (handed to the collection, not resolved again)."""




def sweep_curves(directions: Sequence[Any], metric: str,
                 num_layers: int | None = None) -> dict[tuple[str, str], dict[str, Any]]:
    """Per (method, position): the layer curve of every split metric and the chosen layer.

    The layer is chosen by :mod:`pipeline.selection` (never layer 0, never a layer at chance;
    ties on the validation metric's confidence bound go to the larger d', then mid-depth).
    ``eligible`` is False when no layer passes: ``best`` is then the plain arg-max, kept for
    the record, and the catalog never points an alias at it."""
    groups: dict[tuple[str, str], list[Any]] = {}
    for d in directions:
        groups.setdefault((d.provenance.method, d.provenance.position), []).append(d)
    depth = num_layers if num_layers is not None else max((d.layer for d in directions), default=0) or None
    out = {}
    for key, ds in groups.items():
        ds = sorted(ds, key=lambda d: d.layer)
        names = sorted({k for d in ds for k in d.metrics})
        curve = {"layer": [float(d.layer) for d in ds]}
        curve.update({k: [float(d.metrics.get(k, float("nan"))) for d in ds] for k in names})
        # A dataset without a validation split falls back to the training metric (said in
        # the sweep record); test metrics never choose.
        used = metric if any(metric in d.metrics for d in ds) else metric.replace("val_", "train_", 1)
        ranked = rank([candidate(d, depth) for d in ds], used)
        if ranked:
            best = ranked[0].key
        else:
            tie = used.split("_", 1)[0] + "_accuracy"
            best = max(ds, key=lambda d: (_finite(d.metrics.get(used)), _finite(d.metrics.get(tie)), -d.layer))
        out[key] = {"curve": curve, "best": best, "select_metric": used, "eligible": bool(ranked)}
    return out


def _finite(x: float | None) -> float:
    return float("-inf") if x is None or x != x else float(x)


def check_fit_spec(spec: FitSpec) -> None:
    """Refuse a bad request before anything is collected."""
    if spec.select_metric not in SELECT_METRICS:
        raise GnomonError(f"unknown selection metric {spec.select_metric!r}: use {', '.join(SELECT_METRICS)}")
    if spec.register not in ("best", "all", "none"):
        raise GnomonError(f"--register must be best, all or none, not {spec.register!r}")
    check_methods(spec.methods)
    unused = sorted(set(spec.params) - set(spec.methods))
    if unused:
        raise GnomonError(f"parameters given for {', '.join(unused)}, which is not among the methods fitted")
    from pipeline.fit import check_method_params

    for method, params in spec.params.items():
        check_method_params(method, params)  # a misspelt option fails now, not at every layer


def collect_spec(spec: FitSpec) -> Any:
    """The collection a fit needs (complete shards are reused)."""
    model = spec.resolved_model or ModelSpec(id=spec.model, revision=spec.revision)
    return CollectSpec(model=model, dataset=spec.dataset, layers=spec.layers, positions=spec.positions,
                       dtype=spec.collect_dtype, batch_size=spec.batch_size)


def run_fit(spec: FitSpec, executor: Any, home: Any = None, catalog: Any = None,
            show_progress: bool = False, log: Any = None) -> dict[str, Any]:
    """Collect what is missing, fit every group, sweep layers, register; returns a summary."""
    from jobs.stages.collect_job import collect
    from pipeline.datasets import load_dataset, validate_contrast

    check_fit_spec(spec)
    home_p = gnomon_home(home)
    ds = load_dataset(spec.dataset, home=home_p)   # once: collection and fitting are handed it
    validate_contrast(ds, spec.positive or ds.default_contrast[0], spec.negative or ds.default_contrast[1])
    collected = collect(collect_spec(spec), executor, home_p, show_progress=show_progress, dataset=ds)
    return fit_collected(spec, collected, executor, home_p, catalog, show_progress,  # type: ignore[no-any-return]
                         log=log or _stderr, dataset=ds).to_dict()


def _stderr(message: str) -> None:
    """Progress lines go to stderr, piped or not (stdout may carry JSON)."""
    print(message, file=sys.stderr, flush=True)


def fit_collected(spec: FitSpec, collected: Any, executor: Any, home: Any, catalog: Any = None,
                  show_progress: bool = False, log: Any = None, dataset: Any = None) -> Any:
    """Fit every (layer, position) group of a finished collection (its ``CollectResult``),
    sweep, register; returns a :class:`jobs.runtime.results.FitResult`. ``dataset``: the request's
    dataset when the caller loaded it (with its contrast checked), not loaded again."""
    from pipeline.datasets import load_dataset, validate_contrast

    home_p = gnomon_home(home)
    ds = dataset if dataset is not None else load_dataset(spec.dataset, home=home_p)
    positive, negative = spec.positive or ds.default_contrast[0], spec.negative or ds.default_contrast[1]
    if dataset is None:
        check_fit_spec(spec)
        validate_contrast(ds, positive, negative)
    tasks = plan_groups(collected, concept=ds.name, positive=positive, negative=negative,
                        positions=spec.positions, methods=spec.methods, params=spec.params, home=str(home_p))

    t1 = time.perf_counter()
    with step(f"fit {ds.name} on {collected.model}: {', '.join(spec.methods)}", total=len(tasks),
              unit="groups", bar=show_progress) as progress:
        groups = executor.map(fit_layer, tasks, on_result=lambda _r: progress.update(1))
    t_fit = time.perf_counter() - t1
    directions = [d for g in groups for d in g.directions]
    failures = [(g, m, e) for g in groups for m, e in g.failures]
    if not directions:
        raise GnomonError(f"no group produced a direction; first problem: {failures[0][2]}")
    sweeps = sweep_curves(directions, spec.select_metric, collected.num_layers)
    sweep_path = _write_sweep(home_p, ds.name, spec, sweeps)
    records = (_register(spec, directions, sweeps, catalog, home_p, collected.num_layers)
               if spec.register != "none" else {})
    t2 = time.perf_counter()
    aliases, steer, selection = (_select(spec, ds, positive, negative, directions, groups, sweeps, records, catalog,
                                         collected, home_p, log) if records else ({}, {}, {}))
    t_select = time.perf_counter() - t2
    return FitResult(
        concept=ds.name, model=spec.model, revision=spec.revision, positive=positive, negative=negative,
        groups=len(tasks) * len(spec.methods), executor=getattr(executor, "name", "?"),
        collect={"written_files": collected.written_files, "skipped_files": collected.skipped_files,
                 "rows": collected.rows, "seconds": collected.seconds, "executor_choice": collected.executor_choice},
        seconds={"collect": collected.seconds, "fit": round(t_fit, 3), "select": round(t_select, 3),
                 "read": round(sum(g.read_seconds for g in groups), 3),
                 "total": round(collected.seconds + time.perf_counter() - t1, 3)},
        sweep=str(sweep_path), registered=len(records), best=_best_rows(sweeps, records),
        failed_groups=[f"{m}/{g.position}/layer {g.layer}: {e}" for g, m, e in failures],
        extra={"executor_choice": getattr(executor, "choice", getattr(executor, "name", "?")),
               "aliases": aliases, "selection": selection, "steer_selection": steer})


def _select(spec: FitSpec, ds: Any, positive: str, negative: str, directions: list[Any], groups: list[Any],
            sweeps: dict[tuple[str, str], dict[str, Any]], records: dict[Any, Any], catalog: Any, collected: Any,
            home_p: Path, log: Any) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """After registering: point ``best``/``best-monitor`` (:func:`jobs.stages.best_select.select_best`),
    then measure and point ``best-steer``; returns (aliases, best-steer result, selection)."""
    steer: dict[str, Any] = {}
    if catalog is None:
        from catalog import Catalog

        catalog = Catalog(home=home_p)

    # the model as the collection resolved it (an absolute path for a relative one): the
    # identity its directions record, so the aliases are scoped to the same string
    model = collected.model
    selection = select_best(spec, ds.name, directions, groups, sweeps, records, catalog,
                            collected.num_layers, model)
    if not spec.select_steer:
        file = f" --dataset {spec.dataset}" if spec.dataset != ds.name else ""
        steer = {"alias": None, "reason": "deferred (--no-steer-select): run `gnomon catalog select-steer "
                 f"{ds.name} --model {model}{file}`", "candidates": [], "deferred": True}
    elif not selection["reliable"]:
        catalog.point(ds.name, model, "best-steer", None)
        steer = {"alias": None, "reason": "no reliable direction to steer with (see the selection above)",
                 "candidates": []}
    else:
        try:

            # the model the collection loaded, from this process's cache when it ran here
            lm = load_for_spec(collect_spec(spec), home_p)
            with step(f"best-steer for {ds.name} on {model} (measures the top candidates)"):
                steer = select_steer(catalog, ds.name, model, ds, positive, negative, home_p, lm=lm,
                                     log=log)
        except GnomonError as e:  # the fit and its registrations stand; only best-steer is missing
            steer = {"alias": None, "reason": str(e), "candidates": []}
    aliases = alias_targets(catalog, ds.name, model)
    return aliases, steer, selection


def _best_rows(sweeps: dict[tuple[str, str], dict[str, Any]], records: dict[Any, Any]) -> list[dict[str, Any]]:
    """Per (method, position): the chosen layer, its held-out metrics and its catalog reference."""
    best = []
    for (method, position), s in sorted(sweeps.items()):
        d = s["best"]
        rec = records.get((method, position, d.layer))
        best.append({"method": method, "position": position, "layer": d.layer,
                     **{k: round(v, 4) for k, v in sorted(d.metrics.items()) if not k.startswith("train_")},
                     "ref": rec.ref if rec is not None else None})
    return best


def _write_sweep(home: Path, concept: str, spec: FitSpec, sweeps: dict[tuple[str, str], dict[str, Any]]) -> Path:
    path = home / "sweeps" / concept / f"{model_file_key(spec.model, home)}-{spec.revision}.json"
    doc = {f"{m}/{p}": {"best_layer": s["best"].layer, "select_metric": s["select_metric"],
                        "eligible": s["eligible"], "curve": s["curve"]}
           for (m, p), s in sorted(sweeps.items())}

    return push_shared(write_json(path, doc, indent=1, allow_nan=True), home)   # object storage: in the bucket


def _register(spec: FitSpec, directions: Sequence[Any], sweeps: dict[tuple[str, str], dict[str, Any]],
              catalog: Any, home: Path, num_layers: int) -> dict[tuple[str, str, int], Any]:
    if catalog is None:
        from catalog import Catalog

        catalog = Catalog(home=home)
    chosen = list(directions) if spec.register == "all" else [s["best"] for s in sweeps.values()]
    items = []
    for d in chosen:
        key = (d.provenance.method, d.provenance.position)
        extra = {"best_layer": str(sweeps[key]["best"].layer), "select_metric": sweeps[key]["select_metric"],
                 "num_layers": str(num_layers), "val_rows": str(d.provenance.split_sizes.get("val", 0))}
        items.append((d, {"curve": sweeps[key]["curve"], "extra_tags": extra, "set_best": False,
                          "best_metric": spec.select_metric}))
    # every direction is saved (with its pending marker) before the first MLflow call
    recs = catalog.register_many(items)
    return {(d.provenance.method, d.provenance.position, d.layer): rec for d, rec in zip(chosen, recs, strict=True)}


def with_layers(spec: FitSpec, layers: Sequence[int] | None) -> FitSpec:
    return replace(spec, layers=tuple(layers) if layers is not None else None)
