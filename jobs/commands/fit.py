"""``gnomon fit``: sweep methods x layers x positions for a concept and register the best."""

from __future__ import annotations

import argparse
import contextlib

from jobs.commands.args import add_executor_args, add_params_arg, parse_choices, parse_layers, parse_params


def add_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="smollm2, tiny:<family>, a HF directory, a .gguf file or a registered id")
    p.add_argument("--dataset", required=True, help="a concept name or a dataset file (its stem names the concept)")
    p.add_argument("--positive", default=None, help="label that projects higher (default: the concept's own)")
    p.add_argument("--negative", default=None, help="label that projects lower (default: the concept's own)")
    p.add_argument("--revision", default="main", help="model revision label (default: main)")
    p.add_argument("--methods", default="all", help="all (default), or a comma list of mean_diff,pca,logistic,lda,ccs,leace")
    p.add_argument("--layers", default=None, help="all (default), 3, 0,4,8 or 2-6")
    p.add_argument("--positions", default="last,mean", help="comma list of last, mean (default: last,mean)")
    p.add_argument("--select-metric", default="val_auroc", help="validation metric that picks the best layer: val_auroc (default), val_accuracy, val_dprime")
    p.add_argument("--register", default="best", choices=["best", "all", "none"],
                   help="register the best layer per method (default), every layer, or nothing")
    p.add_argument("--no-steer-select", action="store_true",
                   help="skip measuring steering effects (best-steer); run `gnomon catalog select-steer` later")
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else SQLite in the home)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    add_params_arg(p)
    add_executor_args(p)


def run(args: argparse.Namespace) -> int:
    from jobs.output import progress_wanted
    from pipeline.models.loading import check_layers
    from pipeline.models.shape import model_shape
    from pipeline.types import METHODS, POSITIONS

    methods = parse_choices(args.methods, METHODS, "fitting method")
    layers = parse_layers(args.layers)
    shape = model_shape(args.model)  # the model's config, no weights and no torch: bad layers refused at once
    if shape is not None and layers is not None:
        check_layers(list(layers), shape.num_layers, args.model)
    params = parse_params(args.param)
    if params:
        from pipeline.fit import check_method_params   # the declarations live beside the methods (torch)

        for method, values in params.items():
            check_method_params(method, values)
    from jobs.executors import make_executor
    from jobs.fit_job import FitSpec, run_fit

    spec = FitSpec(model=args.model, dataset=args.dataset, positive=args.positive, negative=args.negative,
                   revision=args.revision, layers=layers,
                   positions=parse_choices(args.positions, POSITIONS, "position"),
                   methods=methods, select_metric=args.select_metric, register=args.register,
                   params=params, select_steer=not args.no_steer_select)
    catalog = None
    if args.register != "none":
        from catalog import Catalog

        catalog = Catalog(tracking_uri=args.tracking_uri)
    from jobs.jsonout import dumps, stdout_to_stderr

    quiet = stdout_to_stderr() if args.json else contextlib.nullcontext()
    with quiet:  # with --json, stdout carries the JSON only (MLflow prints its own lines)
        summary = run_fit(spec, make_executor(args.executor, args.ray_address, args.workers), catalog=catalog,
                          show_progress=progress_wanted(args.json))
    if args.json:
        print(dumps(summary, indent=2))
        return 0
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
    return 0
