"""``gnomon run SPEC.toml``: the whole DAG (collect, fit, register, evaluate) with resume."""

from __future__ import annotations

import argparse
import json


def add_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec", help="TOML job spec (see jobs/examples/demo.toml)")
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: SQLite in the home)")
    p.add_argument("--ray-address", default=None, help="Ray cluster address (default: $RAY_ADDRESS, else local)")
    p.add_argument("--executor", choices=["auto", "ray", "local"], default=None,
                   help="override the spec's executor (default: the spec's)")
    p.add_argument("--json", action="store_true", help="print every stage's result as JSON")


def run(args: argparse.Namespace) -> int:
    from jobs.output import progress_wanted
    import dataclasses

    from jobs.dag import run_job
    from jobs.spec import load_job

    spec = load_job(args.spec)
    if args.executor or args.ray_address:
        spec = dataclasses.replace(spec, executor=args.executor or spec.executor,
                                   ray_address=args.ray_address or spec.ray_address)
    results = run_job(spec, tracking_uri=args.tracking_uri, show_progress=progress_wanted(args.json))
    if args.json:
        print(json.dumps(results, indent=2, default=str))
    else:
        from jobs.report import print_report

        print_report(results)
    return 0
