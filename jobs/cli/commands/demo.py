"""``gnomon demo``: the end-to-end job on the embedded defaults (``jobs/examples/demo.toml``):
the bundled SmolLM2, every shipped concept, local Ray, local MLflow, local Parquet store."""

from __future__ import annotations

import argparse

from jobs.cli.commands import run as run_cmd
from jobs.cli.commands.args import add_options
from jobs.runtime.spec import EXAMPLES


def add_parser(p: argparse.ArgumentParser) -> None:
    add_options(p, executor=dict(default=None, help="override the spec's executor (default: the spec's)"))
    add_options(p, json="print every stage's result as JSON")


def run(args: argparse.Namespace) -> int:
    args.spec = str(EXAMPLES / "demo.toml")
    args.tracking_uri = None
    args.ray_address = None
    rc = run_cmd.run(args)
    if not args.json:
        print("\nnext: gnomon catalog ls | gnomon steer sentiment@best-steer \"I went to the market\" "
              "| gnomon monitor honesty@best-monitor \"I never took the money.\" | gnomon plot sentiment "
              "| gnomon sql \"SELECT ...\"")
    return rc
