"""The linearity report job: how linear is each concept, per model version and layer.

For every model (a list, or every version of a fleet) and concept: collect what the
store lacks (the collection job; complete shards are reused), read each layer's contrast
splits once, and measure probes, erasure and method agreement there
(:mod:`pipeline.linearity.layers`). Then, on the live model: dose-response and
interpolation of the concept's difference-of-means direction at its *control layer*
(best validation AUROC of mean_diff; among layers within 0.005 of it, the one nearest
the middle of the network, where steering works best), and the composition of every
pair of concepts. Verdicts come from :mod:`pipeline.linearity.thresholds`.

Output, under ``<home>/reports/<name>/`` (or ``out``): ``report.json`` (format
``gnomon-linearity-report/1``, keys documented in the README), PNG plots and
``index.html``; each (concept, model) result is also logged to MLflow
(:func:`catalog.reports.log_report`).
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from jobs.runtime.engine import make_executor
from jobs.runtime.output import step
from jobs.stages.collect_job import CollectSpec, run_collection
from jobs.stages.report_request import resolve_report
from jobs.stages.stage_specs import ReportSpec
from pipeline.atomic import write_json
from pipeline.home import gnomon_home, push_tree
from pipeline.linearity import DEFAULT as th
from pipeline.linearity import render
from pipeline.linearity.verdict import concept_verdict, layer_class
from pipeline.models import load_model
from pipeline.store_keys import model_file_key
from pipeline.types import GnomonError

# lazy: numpy, pyarrow, torch (heavy; imported where used)

FORMAT = "gnomon-linearity-report/1"


def fleet_models(fleet: str, home: Any = None) -> tuple[str, ...]:
    """Model ids of every version of fleet ``fleet``: ``<home>/fleets/<fleet>.json``,
    whose ``versions`` list holds objects with an ``id`` (registered model ids)."""
    from pipeline.store import check_name

    path = gnomon_home(home) / "fleets" / f"{check_name(fleet, 'fleet name')}.json"
    if not path.is_file():
        known = sorted(p.stem for p in path.parent.glob("*.json")) if path.parent.is_dir() else []
        raise GnomonError(f"no fleet {fleet!r} at {path}; known fleets: {', '.join(known) or 'none'}")
    try:
        versions = json.loads(path.read_text())["versions"]
        ids = tuple(str(v["id"] if isinstance(v, dict) else v) for v in versions)
    except (ValueError, KeyError, TypeError) as e:
        raise GnomonError(f"{path} is not a fleet file (needs a 'versions' list of {{'id': ...}}): {e}") from None
    if not ids:
        raise GnomonError(f"fleet {fleet!r} has no versions")
    return ids


def _control_layer(entries: list[dict[str, Any]], dirs: dict[int, Any], num_layers: int) -> int | None:
    scored = [(d.metrics.get("val_auroc", d.metrics.get("train_auroc", 0.0)), layer) for layer, d in dirs.items()]
    if not scored:
        return None
    best = max(s for s, _ in scored)
    near = [layer for s, layer in scored if s >= best - 0.005]
    return min(near, key=lambda layer: (abs(layer - num_layers / 2), layer))


def _layers(spec: ReportSpec, rm: Any, concept: str, ds: Any, executor: Any, home: Path, th: Any,
            log: Callable[[str], None]) -> dict[str, Any]:
    """Collect if needed, then the per-layer representation figures of one concept (``rm``:
    the resolved model and layers, ``ds``: the loaded dataset, both trusted)."""
    from pipeline.contrast import StoreDB, contrast_splits
    from pipeline.direction import Provenance
    from pipeline.linearity.layers import analyse_layers

    model = rm.id
    positive, negative = ds.default_contrast
    t0 = time.perf_counter()
    got = run_collection(CollectSpec(rm.spec, concept, layers=rm.layers, positions=("last", "mean")), executor, home,
                         dataset=ds)
    t_collect = time.perf_counter() - t0
    layers = list(got["layers"])
    entries: list[dict[str, Any]] = []
    md: dict[int, Any] = {}
    t1 = time.perf_counter()
    items = []
    only = {"model": model, "revision": spec.revision, "dataset": got["dataset"], "fingerprint": got["fingerprint"]}
    with StoreDB(home, memory_limit="1GB", threads=1, only=only) as db:   # each layer's contrast sets read once
        for layer in layers:
            sets = contrast_splits(db, model=model, revision=spec.revision, dataset=got["dataset"], layer=layer,
                                   position=spec.position, positive=positive, negative=negative,
                                   fingerprint=got["fingerprint"])   # the rows just collected or checked
            items.append((sets, Provenance(model_id=model, revision=spec.revision, fingerprint=got["fingerprint"],
                                           hidden_size=got["hidden_size"], layer=layer, position=spec.position,
                                           concept=ds.name, positive=positive, negative=negative,
                                           dataset=got["dataset"], dataset_hash=ds.content_hash)))
    # every layer's probes train in one batched loop; method agreement then runs per layer
    with step(f"{concept} probes, erasure and method agreement at {len(layers)} layers", emit=log):
        for entry, dirs in analyse_layers(items):
            entry["class"] = layer_class(entry, th)
            entries.append(entry)
            if "mean_diff" in dirs:
                md[entry["layer"]] = dirs["mean_diff"]
            log(f"  {concept} layer {entry['layer']:>2}: {entry['class']:<13} linear "
                f"{entry['probes']['linear']['test_accuracy']:.2f} mlp {entry['probes']['mlp']['test_accuracy']:.2f} "
                f"erased mlp {entry['erasure']['mlp']['test_accuracy']:.2f} ({entry['seconds']:.1f} s)")
    control_layer = _control_layer(entries, md, got["num_layers"])
    return {"model": model, "revision": spec.revision, "fingerprint": got["fingerprint"], "concept": ds.name,
            "positive": positive, "negative": negative, "dataset_hash": ds.content_hash, "layers": entries,
            "control_layer": control_layer, "control_method": "mean_diff",
            "_direction": md.get(control_layer) if control_layer is not None else None,
            "seconds": {"collect": round(t_collect, 3), "layers": round(time.perf_counter() - t1, 3)}}


def _live(spec: ReportSpec, rm: Any, results: list[dict[str, Any]], known: dict[str, Any], home: Path,
          th: Any, log: Callable[[str], None]) -> dict[str, Any] | None:
    """Control and interpolation per concept, then composition; returns the composition.
    ``known``: each concept's record (prompts, words, scorer), read once for the request."""
    import torch

    from pipeline.linearity.composition import composition
    from pipeline.linearity.control import concept_scorer, dose_response, interpolation, monitor_scorer

    with step(f"load {rm.id}", emit=log):
        lm = load_model(rm.spec, home=home)
    usable = {r["concept"]: r for r in results if r["_direction"] is not None}
    for c, r in usable.items():
        if not spec.control:
            break
        t0 = time.perf_counter()
        torch.manual_seed(0)
        try:
            prompts = known[c].prompts(spec.n_prompts)
            scorer = concept_scorer(lm, known[c], spec.score, prompts, spec.max_new_tokens)
        except GnomonError as e:  # e.g. a registered concept without neutral prompts or a readout
            r["notes"].append(f"control skipped: {e}")
            r["not_measured"] = str(e)
            continue
        d = r["_direction"]
        with step(f"{c} control at layer {r['control_layer']}: {len(spec.strengths)} strengths x "
                  f"{len(prompts)} prompts, greedy continuations", emit=log):
            r["control"] = dose_response(lm, d, prompts, scorer, spec.strengths, th=th,
                                         max_new_tokens=spec.max_new_tokens).to_json()
        with step(f"{c} interpolation at layer {r['control_layer']}", emit=log):
            r["interpolation"] = interpolation(lm, d, prompts, scorer, max_new_tokens=spec.max_new_tokens).to_json()
        r["seconds"]["control"] = round(time.perf_counter() - t0, 3)
        log(f"  {c} control at layer {r['control_layer']}: R² {r['control']['fit']['r2']}, "
            f"interpolation R² {r['interpolation']['fit']['r2']} ({r['seconds']['control']:.0f} s)")
    if not spec.compose or len(usable) < 2:
        return None
    names = [c for c in usable if known[c].neutral_prompts and known[c].words is not None]
    if len(names) < 2:
        return None
    per = max(2, spec.n_prompts // len(names))
    prompts = [p for c in names for p in known[c].prompts(per)]
    readers = {"score": {c: concept_scorer(lm, known[c], "log-odds") for c in names},
               "monitor": {c: monitor_scorer(c) for c in names}}
    with step(f"composition of {', '.join(names)}", emit=log):
        comp = composition(lm, {c: usable[c]["_direction"] for c in names}, prompts, readers)
    return comp.to_json()


def report_name(spec: ReportSpec) -> str:
    """``--name``, checked; else the concepts joined, a dataset file by its stem
    (``gnomon report data/My Reviews.jsonl`` -> ``My-Reviews``), cut to what a folder name allows."""
    from pipeline.datasets import FORMATS
    from pipeline.store import check_name

    if spec.name:
        return check_name(spec.name, "report name")
    parts = [Path(c).stem if Path(c).suffix.lower() in FORMATS or os.sep in c or Path(c).is_file() else c
             for c in spec.concepts]
    return re.sub(r"[^A-Za-z0-9._-]+", "-", "-".join(parts))[:60].strip("-._") or "report"


def _measure(spec: ReportSpec, request: Any, executor: Any, home: Path, th: Any,
             log: Callable[[str], None]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Per model: every concept's layers, the live checks, the verdicts; (results, compositions)."""
    results: list[dict[str, Any]] = []
    comps: dict[str, Any] = {}
    for rm in request.models:
        model = rm.id
        log(f"[report] {model}: {', '.join(spec.concepts)}")
        mine = []
        for c in spec.concepts:
            r = _layers(spec, rm, c, request.datasets[c], executor, home, th, log)
            r.update(control=None, interpolation=None, notes=[])
            mine.append(r)
        if spec.control or spec.compose:
            comps[model] = _live(spec, rm, mine, request.concepts, home, th, log)
        for r in mine:
            add = (comps.get(model) or {}).get("additivity", {}).get("score", {}).get(r["concept"])
            r["verdict"] = concept_verdict(r["concept"], model, r["layers"], r["control"], r["interpolation"],
                                           add, th, not_measured=r.get("not_measured"))
            r.pop("_direction")
            log(f"  verdict: {r['verdict']['line']}")
        results += mine
    return results, comps


def _figures(doc: dict[str, Any], out_dir: Path, home: Path, th: Any) -> tuple[list[list[Path]], list[Path], Path]:
    """Each result's plots, the compositions' plots and ``index.html``: (per result, all images, html)."""
    images: list[Path] = []
    per_result: list[list[Path]] = []
    for r in doc["results"]:
        stem = f"{model_file_key(r['model'], home)}-{r['concept']}"
        files = [render.plot_probes(r, out_dir / f"probes-{stem}.png", th.decodable)]
        ctl = render.plot_control(r, out_dir / f"control-{stem}.png")
        files += [ctl] if ctl else []
        per_result.append(files)
        images += files
    for model, comp in doc["composition"].items():
        if comp:
            images.append(render.plot_composition(model, comp, out_dir / f"composition-{model_file_key(model, home)}.png"))
    return per_result, images, render.write_html(doc, images, out_dir / "index.html")


def run_report(spec: ReportSpec, executor: Any = None, home: Any = None, out: str | Path | None = None,
               tracking_uri: str | None = None, log_mlflow: bool = True,
               log: Callable[[str], None] = print) -> dict[str, Any]:
    """Measure, judge, write ``report.json``, plots and ``index.html``; returns the document."""
    home_p = gnomon_home(home)
    out_dir = Path(out) if out is not None else home_p / "reports" / report_name(spec)
    request = resolve_report(spec, home_p)   # checked, and models, layers, datasets, concepts resolved once
    from pipeline.linearity import probes

    executor = executor or make_executor("ray")
    t0 = time.perf_counter()
    results, comps = _measure(spec, request, executor, home_p, th, log)
    doc: dict[str, Any] = {
        "format": FORMAT, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "concepts": list(spec.concepts), "models": list(spec.models), "revision": spec.revision,
        "position": spec.position, "thresholds": th.to_json(),
        "probe_budget": {"weight_decays": list(probes.WEIGHT_DECAYS), "hidden": probes.HIDDEN,
                         "steps": probes.STEPS, "lr": probes.LR, "select": "val_auroc"},
        "spec": asdict(spec), "results": results, "composition": comps,
        "seconds": round(time.perf_counter() - t0, 3)}
    per_result, images, html = _figures(doc, out_dir, home_p, th)
    if log_mlflow:
        from catalog.reports import log_report

        for r, files in zip(results, per_result):
            r["mlflow_run"] = log_report(r, [*files, html], th.to_json(), tracking_uri=tracking_uri, home=home_p)
    path = write_json(out_dir / "report.json", doc, indent=1, allow_nan=True, default=str)
    push_tree(out_dir, home_p)   # a home on object storage: the report lands in the bucket too
    doc["paths"] = {"json": str(path), "html": str(html), "images": [str(p) for p in images]}
    return doc
