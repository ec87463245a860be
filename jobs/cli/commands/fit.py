"""``gnomon fit``: sweep methods x layers x positions for a concept and register the best."""

from __future__ import annotations

import argparse
import contextlib
from typing import Any

from jobs.cli.commands.args import (
    add_executor_args,
    add_options,
    parse_layers,
    parse_methods,
    parse_params,
    parse_positions,
)
from jobs.cli.jsonout import dumps, stdout_to_stderr
from jobs.runtime.engine import make_executor
from jobs.runtime.output import progress_wanted
from jobs.stages.fit_job import FitSpec, run_fit
from pipeline.models.loading import ModelSpec
from pipeline.models.shape import model_shape

# lazy: numpy, pyarrow, torch (heavy; imported where used); pipeline.models.layers (tests patch it at the source)


def add_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="smollm2, tiny:<family>, a HF directory, a .gguf file or a registered id")
    p.add_argument("--dataset", required=True, help="a concept name or a dataset file (its stem names the concept)")
    p.add_argument("--positive", default=None, help="label that projects higher (default: the concept's own)")
    p.add_argument("--negative", default=None, help="label that projects lower (default: the concept's own)")
    p.add_argument("--revision", default="main", help="model revision label (default: main)")
    add_options(p, "methods", "layers", "positions")
    p.add_argument("--select-metric", default="val_auroc", help="validation metric that picks the best layer: val_auroc (default), val_accuracy, val_dprime")
    p.add_argument("--register", default="best", choices=["best", "all", "none"],
                   help="register the best layer per method (default), every layer, or nothing")
    p.add_argument("--no-steer-select", action="store_true",
                   help="skip measuring steering effects (best-steer); run `gnomon catalog select-steer` later")
    add_options(p, "tracking_uri", "params", json="print the summary as JSON")
    add_executor_args(p)


def run(args: argparse.Namespace) -> int:
    from pipeline.models.layers import check_layers
    methods = parse_methods(args.methods)
    layers = parse_layers(args.layers)
    model = ModelSpec(id=args.model, revision=args.revision).resolved()   # the one resolution of the model
    shape = model_shape(model)  # the model's config, no weights and no torch: bad layers refused at once
    if shape is not None:
        layers = check_layers(layers, shape.num_layers, args.model)   # the one check: concrete from here down
    params = parse_params(args.param)
    if params:
        from pipeline.fit import check_method_params  # the declarations live beside the methods (torch)

        for method, values in params.items():
            check_method_params(method, values)
    spec = FitSpec(model=args.model, dataset=args.dataset, positive=args.positive, negative=args.negative,
                   revision=args.revision, layers=layers,
                   positions=parse_positions(args.positions),
                   methods=methods, select_metric=args.select_metric, register=args.register,
                   params=params, select_steer=not args.no_steer_select, resolved_model=model)
    catalog = None
    if args.register != "none":
        from catalog import Catalog

        catalog = Catalog(tracking_uri=args.tracking_uri)

    quiet = stdout_to_stderr() if args.json else contextlib.nullcontext()
    with quiet:  # with --json, stdout carries the JSON only (MLflow prints its own lines)
        summary = run_fit(spec, make_executor(args.executor, args.ray_address, args.workers), catalog=catalog,
                          show_progress=progress_wanted(args.json))
    if args.json:
        print(dumps(summary, indent=2))
    else:
        _print(summary)
    return 0


def _print(summary: dict[str, Any]) -> None:
    print(f"{summary['concept']} ({summary['positive']} vs {summary['negative']}) on {summary['model']}: "
          f"{summary['groups']} fits in {summary['seconds']['fit']:.1f} s ({summary['executor_choice']}), "
          f"collection {summary['seconds']['collect']:.1f} s ({summary['collect']['executor_choice']})")
    print(f"{'method':<10} {'position':<8} {'layer':>5} {'val_auroc':>9} {'val_acc':>7} {'test_acc':>8} {'test_auroc':>10}  ref")
    for b in summary["best"]:
        print(f"{b['method']:<10} {b['position']:<8} {b['layer']:>5} {b.get('val_auroc', float('nan')):>9.3f} "
              f"{b.get('val_accuracy', float('nan')):>7.3f} {b.get('test_accuracy', float('nan')):>8.3f} "
              f"{b.get('test_auroc', float('nan')):>10.3f}  {b['ref'] or '-'}")
    sel = summary.get("selection") or {}
    if sel:
        print(f"selection: {sel['reason']}")
    for alias, t in summary.get("aliases", {}).items():
        print(f"{summary['concept']}@{alias} -> {t['ref']} for {summary['model']} "
              f"(layer {t['layer']}, {t['method']}/{t['position']})")
    if sel and not sel.get("reliable"):
        print(f"no best/best-monitor alias for {summary['model']}: no reliable direction (see the selection line)")
    if summary.get("steer_selection", {}).get("reason"):
        print(f"no best-steer: {summary['steer_selection']['reason']}")
    secs = summary["seconds"]
    print(f"time: collect {secs['collect']:.1f} s, fit {secs['fit']:.1f} s, alias selection "
          f"{secs.get('select', 0.0):.1f} s, total {secs['total']:.1f} s")
    print(f"layer sweep: {summary['sweep']}")
