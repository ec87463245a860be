"""``gnomon compare``: how a concept's direction relates across checkpoints.

``gnomon compare REF REF [...]`` (or ``--concept C``): cosine of registered directions.
``gnomon compare CONCEPT --fleet NAME [--html OUT]``: over every version of a fleet, per
layer cosine and transfer matrices, emergence over the from-scratch series, CKA across
widths, with pictures (``jobs.stages.fleet_compare_job``).
"""

from __future__ import annotations

import argparse
import json
import sys

from jobs.cli.commands.args import add_executor_args, add_options, parse_layers
from jobs.runtime.engine import make_executor
from jobs.stages.refs import check_refs, resolve_directions
from pipeline.types import GnomonError

# lazy: numpy, pyarrow, torch (heavy; imported where used)


def add_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("refs", nargs="*", help="catalog references or .safetensors files; with --fleet: one concept name")
    p.add_argument("--concept", default=None, help="compare every registered version of this concept")
    p.add_argument("--method", default=None, help="with --concept: only this method")
    p.add_argument("--fleet", default=None, help="compare the concept over every version of this fleet")
    p.add_argument("--position", default=None, choices=["last", "mean"],
                   help="with --fleet: token position (default: last, or mean when the fleet holds an encoder such "
                        "as MiniLM, whose last token is [SEP])")
    add_options(p, layers="with --fleet: all (default: every stored layer), 3, 0,4,8 or 2-6")
    p.add_argument("--no-collect", action="store_true", help="with --fleet: never collect missing activations")
    p.add_argument("--html", default=None, help="with --fleet: also write the HTML report here")
    p.add_argument("--no-log", action="store_true", help="with --fleet: do not log the report to MLflow")
    p.add_argument("--no-figures", action="store_true", help="with --fleet: JSON only, no PNGs or HTML")
    add_options(p, "tracking_uri", json="print the comparison as JSON")
    add_executor_args(p)


def run(args: argparse.Namespace) -> int:
    if args.fleet:
        return _fleet(args)
    from pipeline.compare import compare, label

    refs = list(args.refs)
    check_refs(refs, args.tracking_uri)  # an unknown REF is refused before the --concept search starts MLflow
    if args.concept:
        from catalog import Catalog

        recs = Catalog(tracking_uri=args.tracking_uri).search(concept=args.concept, method=args.method)
        refs += [r.ref for r in recs]
    if len(refs) < 2:
        raise GnomonError("give at least two references (or --concept with two or more versions, or CONCEPT --fleet NAME)")
    dirs = resolve_directions(refs, args.tracking_uri)
    cmp = compare(dirs, [f"{r} ({label(d)})" for r, d in zip(refs, dirs)])
    if args.json:
        print(json.dumps(cmp.to_json(), indent=2))
    else:
        print("cosine similarity of unit vectors:")
        print(cmp.table())
    return 0


def _fleet(args: argparse.Namespace) -> int:
    from jobs.stages.fleet_compare_job import FleetCompareSpec, run_fleet_compare

    concepts = list(args.refs) + ([args.concept] if args.concept else [])
    if len(set(concepts)) != 1:
        raise GnomonError("with --fleet give exactly one concept name (gnomon compare sentiment --fleet NAME)"
                          if len(set(concepts)) < 2 else
                          f"directions of different concepts ({', '.join(sorted(set(concepts)))}) cannot be compared "
                          "across versions: give one concept")
    spec = FleetCompareSpec(concept=concepts[0], fleet=args.fleet, position=args.position,
                            layers=parse_layers(args.layers),
                            collect=not args.no_collect, html=args.html, log=not args.no_log,
                            figures=not args.no_figures)
    out = run_fleet_compare(spec, make_executor(args.executor, args.ray_address, args.workers),
                            tracking_uri=args.tracking_uri, log=lambda m: print(m, file=sys.stderr))
    if args.json:
        print(json.dumps(out, indent=1, default=float))
        return 0
    for g in out["groups"]:
        b = g["best_layer"]
        i = g["layers"].index(b)
        print(f"width {g['width']}: {len(g['versions'])} versions, best layer {b} "
              f"(mean val accuracy {g['mean_val_accuracy'][i]:.3f}), min pairwise cosine {g['min_cosine'][i]:.3f}")
        w = max(len(v) for v in g["versions"])
        for v, row, trow in zip(g["versions"], g["cosine"][b], g["transfer"][b]["accuracy"]):
            print(f"  {v:<{w}}  cos " + " ".join(f"{x:6.3f}" for x in row) + "   transfer acc "
                  + " ".join(f"{x:5.2f}" for x in trow))
    for name, e in out["emergence"].items():
        print(f"emergence in {name}: " + ", ".join(f"step {s}: acc {a:.2f} (L{la})"
                                                   for s, a, la in zip(e["steps"], e["accuracy"], e["layers"])))
    for c in out["cross_width"]:
        pairs = ", ".join(f"{r['layer_a']}->{r['layer_b']} ({r['cka']:.2f})" for r in c["correspondence"])
        print(f"{c['model_a']} vs {c['model_b']} ({c['n_examples']} examples): corresponding layers by CKA {pairs}")
        print(f"  best-layer test accuracy: {c['model_a']} L{c['best_layer_a']} {c['best_test_a']['accuracy']:.3f}, "
              f"{c['model_b']} L{c['best_layer_b']} {c['best_test_b']['accuracy']:.3f}")
    print(f"report: {out['html'] or out['report_dir']}")
    return 0
