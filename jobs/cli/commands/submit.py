"""``gnomon submit SPEC``: run a job spec on a Ray cluster as a Ray Job (the Jobs API).

    gnomon submit fleet.toml --address http://head:8265 --tracking-uri http://mlflow:5000 \
        --env GNOMON_HOME=/store
    gnomon status gnomon-fleet-1a2b3c4d --wait
    gnomon logs gnomon-fleet-1a2b3c4d --follow

The spec travels in the job's working folder; ``GNOMON_HOME`` and ``MLFLOW_TRACKING_URI``
travel as environment variables (see ``jobs/runtime/cluster.py``). Prints the job id.
"""

from __future__ import annotations

import argparse
import json
import sys

from jobs.cli.commands.args import add_options
from jobs.runtime import cluster

ADDRESS_HELP = "Ray Jobs API of the head, http://HEAD:8265 (default: $RAY_API_SERVER_ADDRESS, $RAY_ADDRESS, " \
               "else http://127.0.0.1:8265)"


def add_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec", help="TOML job spec (checked here before it is sent)")
    p.add_argument("--address", default=None, help=ADDRESS_HELP)
    add_options(p, "tracking_uri")
    p.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                   help="extra environment variable for the job (repeatable; default: none beyond GNOMON_HOME and MLFLOW_TRACKING_URI), e.g. GNOMON_HOME=/store")
    add_options(p, executor=dict(default=None, help="override the spec's executor (default: the spec's)"))
    p.add_argument("--submission-id", default=None, help="job id to use (default: gnomon-<job name>-<random>)")
    p.add_argument("--follow", action="store_true", help="stream the job's logs until it ends; exit 1 unless it succeeds")
    add_options(p, "json")


def run(args: argparse.Namespace) -> int:
    env = cluster.job_env(args.env, tracking_uri=args.tracking_uri)
    if "GNOMON_HOME" not in env:
        print("gnomon submit: warning: no GNOMON_HOME (--home, $GNOMON_HOME or --env GNOMON_HOME=...): the job "
              "writes its store under its temporary working folder on the head", file=sys.stderr)
    job_id = cluster.submit(args.spec, address=args.address, env=env, executor=args.executor,
                            submission_id=args.submission_id)
    if args.json:
        print(json.dumps({"job_id": job_id, "address": cluster.resolve_address(args.address),
                          "env": sorted(env)}))
    else:
        print(job_id, flush=True)
    if not args.follow:
        return 0
    status = cluster.follow_logs(job_id, address=args.address)
    print(f"\n{job_id}: {status}", file=sys.stderr)
    return 0 if status == "SUCCEEDED" else 1
