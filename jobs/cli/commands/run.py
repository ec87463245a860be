"""``gnomon run SPEC.toml``: the whole DAG (collect, fit, register, evaluate) with resume."""

from __future__ import annotations

import argparse
import dataclasses
import json

from jobs.cli.commands.args import add_options
from jobs.cli.run_summary import print_report
from jobs.runtime.dag import run_job
from jobs.runtime.output import progress_wanted
from jobs.runtime.spec import load_job


def add_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec", help="TOML job spec (see jobs/examples/demo.toml)")
    add_options(p, "tracking_uri")
    add_options(p, "ray_address")
    add_options(p, executor=dict(default=None, help="override the spec's executor (default: the spec's)"))
    add_options(p, json="print every stage's result as JSON")


def run(args: argparse.Namespace) -> int:
    spec = load_job(args.spec)
    if args.executor or args.ray_address:
        spec = dataclasses.replace(spec, executor=args.executor or spec.executor,
                                   ray_address=args.ray_address or spec.ray_address)
    results = run_job(spec, tracking_uri=args.tracking_uri, show_progress=progress_wanted(args.json))
    if args.json:
        print(json.dumps(results, indent=2, default=str))
    else:
        print_report(results)
    return 0
