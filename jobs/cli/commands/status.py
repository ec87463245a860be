"""``gnomon status JOB_ID``: the state of a job sent with ``gnomon submit``.

Exit status: 0 while the job is pending/running or once it succeeded, 1 when it failed or
was stopped. ``--wait`` polls until the job ends (so the exit status is its outcome).
"""

from __future__ import annotations

import argparse
import json
import sys

from jobs.cli.commands.args import add_options
from jobs.cli.commands.submit import ADDRESS_HELP
from jobs.runtime import cluster


def add_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("job_id", help="the id `gnomon submit` printed")
    p.add_argument("--address", default=None, help=ADDRESS_HELP)
    p.add_argument("--wait", action="store_true", help="poll until the job ends")
    p.add_argument("--timeout", type=float, default=3600.0, help="with --wait: give up after this many seconds (default: 3600)")
    add_options(p, "json")


def _show(st: dict[str, object], as_json: bool) -> None:
    if as_json:
        print(json.dumps(st), flush=True)
    else:
        msg = f"  {st['message']}" if st.get("message") else ""
        print(f"{st['job_id']}  {st['status']}{msg}", flush=True)


def run(args: argparse.Namespace) -> int:
    if args.wait:
        st = cluster.wait(args.job_id, address=args.address, timeout_s=args.timeout,
                          on_change=None if args.json else (lambda s: _show(s, False)))
        if args.json:
            _show(st, True)
    else:
        st = cluster.job_status(args.job_id, address=args.address)
        _show(st, args.json)
    if st["status"] in ("FAILED", "STOPPED"):
        if not args.json:
            print(f"gnomon status: see `gnomon logs {args.job_id}`", file=sys.stderr)
        return 1
    return 0
