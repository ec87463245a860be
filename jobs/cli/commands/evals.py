"""``gnomon evals ls``: evaluation results logged to MLflow by ``gnomon evaluate --fleet``."""

from __future__ import annotations

import argparse
import json

from jobs.cli.commands.args import add_options

# lazy: numpy, pyarrow, torch (heavy; imported where used)

_SHOWN = ("steer_slope", "steer_r2", "logodds_slope", "side_effect_kl", "perplexity_steered", "monitor_auroc",
          "probe_accuracy_after")


def add_parser(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="evals_cmd", metavar="SUBCOMMAND", required=True)
    ls = sub.add_parser("ls", help="list evaluation runs, one per (evaluation, version)")
    ls.add_argument("--concept", default=None, help="only this concept (default: all)")
    ls.add_argument("--fleet", default=None, help="only versions of this fleet (default: all)")
    ls.add_argument("--version", default=None, help="one model version id")
    ls.add_argument("--direction", default=None, help="the reference evaluated (sentiment@best)")
    ls.add_argument("--latest", action="store_true", help="only the newest run per (version, direction)")
    add_options(ls, "tracking_uri")
    add_options(ls, "json")


def run(args: argparse.Namespace) -> int:
    from catalog.fleet_runs import search_fleet_runs

    runs = search_fleet_runs("eval", concept=args.concept, fleet=args.fleet, version=args.version,
                             direction=args.direction, tracking_uri=args.tracking_uri)
    if args.latest:  # newest first already
        newest: dict[tuple[str, str], object] = {}
        for r in runs:
            newest.setdefault((r.version, r.tags.get("direction", "")), r)
        runs = [r for r in runs if newest[(r.version, r.tags.get("direction", ""))] is r]
    if args.json:
        print(json.dumps([r.to_json() for r in runs], indent=2))
        return 0
    if not runs:
        print("no evaluation runs match")
        return 0
    print(f"{'version':<26} {'fleet':<12} {'direction':<18} " + " ".join(f"{m[:12]:>12}" for m in _SHOWN))
    for r in runs:
        vals = " ".join(f"{r.metrics[m]:>12.3f}" if m in r.metrics else f"{'-':>12}" for m in _SHOWN)
        print(f"{r.version:<26} {r.fleet:<12} {r.tags.get('direction', ''):<18} {vals}")
    return 0
