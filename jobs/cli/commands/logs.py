"""``gnomon logs JOB_ID``: the driver output of a job sent with ``gnomon submit``.

``--follow`` streams until the job ends and exits 1 unless it succeeded.
"""

from __future__ import annotations

import argparse
import sys

from jobs.cli.commands.submit import ADDRESS_HELP
from jobs.runtime import cluster


def add_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("job_id", help="the id `gnomon submit` printed")
    p.add_argument("--address", default=None, help=ADDRESS_HELP)
    p.add_argument("--follow", "-f", action="store_true", help="stream new output until the job ends")


def run(args: argparse.Namespace) -> int:
    if not args.follow:
        sys.stdout.write(cluster.job_logs(args.job_id, address=args.address))
        return 0
    status = cluster.follow_logs(args.job_id, address=args.address)
    print(f"\n{args.job_id}: {status}", file=sys.stderr)
    return 0 if status == "SUCCEEDED" else 1
