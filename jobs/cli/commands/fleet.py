"""``gnomon fleet build|ls|show``: build a fleet of model versions and list fleets.

``gnomon fleet build`` makes the base, numeric, MiniLM, fine-tuning, from-scratch and
edited versions (``--only`` picks stages) and saves the fleet file after every stage;
rerunning skips what is built and resumes training series.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace

from jobs.cli.commands.args import add_options
from pipeline.types import GnomonError

# lazy: numpy, pyarrow, torch (heavy; imported where used)


def add_parser(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="fleet_cmd", metavar="SUBCOMMAND", required=True)
    b = sub.add_parser("build", help="build (or finish) every version of a fleet")
    b.add_argument("--name", default="smollm2", help="fleet name (default smollm2; tiny: tiny)")
    b.add_argument("--only", default=None,
                   help="comma list of stages: base,numeric,minilm,ft-negative,ft-control,scratch,edited; "
                        "evade-<concept> (only when named) trains an evasion and a control series against "
                        "the concept's frozen monitor")
    b.add_argument("--tiny", action="store_true", help="a tiny random Llama fleet (seconds; for tests and smoke runs)")
    b.add_argument("--corpus", default=None, help="JSONL/CSV/Parquet with a 'text' column for the skewed fine-tune")
    b.add_argument("--control-corpus", default=None, help="same, for the control fine-tune")
    b.add_argument("--steps", type=int, default=None, help="fine-tune steps (default 30)")
    b.add_argument("--every", type=int, default=None, help="fine-tune checkpoint interval (default 5)")
    b.add_argument("--seeds", default=None,
                   help="comma list of fine-tune seeds, one series each (default 0,1,2; seed 0 keeps the plain ids)")
    b.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    add_options(b, json="print the summary as JSON")
    add_options(sub.add_parser("ls", help="list fleets"), "json")
    s = sub.add_parser("show", help="list a fleet's versions with their lineage")
    s.add_argument("name", help="fleet name (see `gnomon fleet ls`)")
    add_options(s, "json")


def run(args: argparse.Namespace) -> int:
    return {"build": _build, "ls": _ls, "show": _show}[args.fleet_cmd](args)


def _build(args: argparse.Namespace) -> int:
    from jobs.stages.fleet_job import build_fleet, plan_for

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    over: dict[str, object] = {}
    if args.corpus:
        over["corpus_negative"] = args.corpus
    if args.control_corpus:
        over["corpus_control"] = args.control_corpus
    if args.seeds:
        try:
            over["seeds"] = tuple(int(x) for x in args.seeds.split(",") if x.strip())
        except ValueError:
            raise GnomonError(f"--seeds takes a comma list of integers, got {args.seeds!r}") from None
    plan = plan_for(args.name, tiny=args.tiny, **over)
    ft = {k: v for k, v in (("steps", args.steps), ("every", args.every)) if v is not None}
    if ft:
        plan = replace(plan, finetune={**plan.finetune, **ft})
    only = tuple(s.strip() for s in args.only.split(",") if s.strip()) if args.only else None
    out = build_fleet(plan, only=only, log=(lambda _s: None) if args.json else print)
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        stages = ", ".join(f"{k} {v:.0f} s" for k, v in out["stage_seconds"].items())
        print(f"fleet {out['fleet']}: {len(out['versions'])} versions ({stages})")
    return 0


def _ls(args: argparse.Namespace) -> int:
    from pipeline.fleet import list_fleets, load_fleet

    rows = [{"name": n, "versions": len(load_fleet(n).members), "description": load_fleet(n).description}
            for n in list_fleets()]
    if args.json:
        print(json.dumps(rows, indent=2))
    elif not rows:
        print("no fleets yet; build one with `gnomon fleet build`")
    for r in [] if args.json else rows:
        print(f"{r['name']:<20} {r['versions']:>3} versions  {r['description']}")
    return 0


def _show(args: argparse.Namespace) -> int:
    from pipeline.fleet import load_fleet, read_lineage

    fleet = load_fleet(args.name)
    lins = []
    for m in fleet.members:  # a corrupt lineage file is reported and skipped, not fatal to the others
        try:
            lins.append(read_lineage(m.id))
        except GnomonError as e:
            print(f"gnomon fleet: skipped {e}", file=sys.stderr)
    if args.json:
        print(json.dumps({"name": fleet.name, "description": fleet.description,
                          "versions": [lin.to_json() for lin in lins]}, indent=2))
        return 0
    print(f"fleet {fleet.name}: {fleet.description}")
    print(f"{'id':<26} {'kind':<9} {'series':<12} {'step':>5} {'parent':<26} fingerprint")
    for lin in lins:
        step = "" if lin.step is None else str(lin.step)
        print(f"{lin.id:<26} {lin.kind:<9} {lin.series or '':<12} {step:>5} {lin.parent or '-':<26} {lin.fingerprint}")
    return 0
