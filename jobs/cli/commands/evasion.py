"""``gnomon evasion CONCEPT --fleet F``: was the concept's monitor evaded by training against
it, and where did the concept go (rotated, nonlinear, another layer, erased, behaviour lost)?"""

from __future__ import annotations

import argparse
import json
import sys

from jobs.cli.commands.args import add_executor_args, add_options
from jobs.runtime.engine import make_executor
from jobs.stages.evasion_job import EvasionSpec, run_evasion

# lazy: numpy (heavy; imported where used)


def add_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("concept", help="concept name (sentiment)")
    p.add_argument("--fleet", required=True,
                   help="the fleet with the evasion series (`gnomon fleet build --only evade-CONCEPT` writes "
                        "<fleet>-evade-<concept>; the plain fleet name finds it)")
    p.add_argument("--prompts", type=int, default=32, help="neutral prompts for the behaviour score (default 32; 0: skip)")
    p.add_argument("--max-new-tokens", type=int, default=24, help="tokens generated per prompt (default 24)")
    p.add_argument("--bootstrap", type=int, default=500, help="bootstrap replicates per standard error (default 500)")
    p.add_argument("--no-probes", action="store_true", help="only the frozen monitor and the angle (no retrained probes)")
    p.add_argument("--html", default=None, help="also write the HTML report here")
    p.add_argument("--no-log", action="store_true", help="do not log the report to MLflow")
    add_options(p, "tracking_uri", "json")
    add_executor_args(p)


def run(args: argparse.Namespace) -> int:
    from jobs.stages.evasion_report import print_evasion

    spec = EvasionSpec(concept=args.concept, fleet=args.fleet, n_prompts=args.prompts,
                       max_new_tokens=args.max_new_tokens, n_boot=args.bootstrap, probes=not args.no_probes,
                       html=args.html, log=not args.no_log)
    out = run_evasion(spec, make_executor(args.executor, args.ray_address, args.workers),
                      tracking_uri=args.tracking_uri, log=lambda m: print(m, file=sys.stderr))
    if args.json:
        print(json.dumps(out, indent=1, default=float))
    else:
        print_evasion(out)
    return 0
