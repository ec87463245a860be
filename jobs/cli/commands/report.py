"""``gnomon report``: how linear is a concept, per model version and layer (probes vs MLP,
erasure, method agreement, dose-response, interpolation, composition, verdict)."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from jobs.cli.commands.args import add_executor_args, add_options, parse_layers
from jobs.runtime.engine import make_executor
from jobs.stages.report_job import ReportSpec, fleet_models, run_report
from pipeline.concepts import CONCEPTS
from pipeline.linearity.render import table
from pipeline.types import GnomonError

# lazy: numpy, torch (heavy; imported where used)


def add_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("concept", help="a concept (see `gnomon concepts ls`), a comma list, or `all` (shipped concepts); "
                                    "two or more also measure composition")
    who = p.add_mutually_exclusive_group()
    who.add_argument("--model", default=None, help="one model (default: smollm2)")
    who.add_argument("--models", default=None, help="comma list of models / checkpoints")
    who.add_argument("--fleet", default=None, help="every version of a fleet (<home>/fleets/<name>.json)")
    p.add_argument("--revision", default="main", help="model revision label (default: main)")
    add_options(p, "layers")
    d = ReportSpec  # the defaults, decided once
    p.add_argument("--position", default=d.position, choices=["last", "mean"],
                   help=f"token position of the rows analysed (default: {d.position})")
    strengths = ",".join(f"{x:g}" for x in d.strengths)
    p.add_argument("--strengths", default=strengths, help="dose-response strengths in class-mean separations, "
                   f"at least 7 (default: {strengths}; write --strengths=-4,...)")
    p.add_argument("--prompts", type=int, default=d.n_prompts,
                   help=f"neutral prompts per concept for the live checks (default: {d.n_prompts})")
    p.add_argument("--max-new-tokens", type=int, default=d.max_new_tokens,
                   help=f"continuation length for the behavioural scores (default: {d.max_new_tokens})")
    from pipeline.concepts.behaviour import scorer_names

    p.add_argument("--score", default="auto", choices=["auto", "log-odds", *scorer_names()],
                   help="behavioural score: auto = the concept's declared scorer (VADER for sentiment), next-token "
                        "word log-odds otherwise (default: auto)")
    p.add_argument("--no-control", action="store_true", help="skip dose-response and interpolation")
    p.add_argument("--no-compose", action="store_true", help="skip composition")
    p.add_argument("--no-mlflow", action="store_true", help="do not log the report to the catalog's MLflow")
    p.add_argument("--out", default=None, help="output folder (default: <home>/reports/<concepts>)")
    p.add_argument("--name", default=None, help="report name (folder under <home>/reports)")
    p.add_argument("--html", default=None, help="also write the static HTML page to this path")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    add_options(p, "tracking_uri")
    add_options(p, json="print the JSON document instead of the table")
    add_executor_args(p)


def run(args: argparse.Namespace) -> int:
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    concepts = tuple(CONCEPTS) if args.concept == "all" else tuple(c.strip() for c in args.concept.split(",") if c.strip())
    if args.fleet:
        models = fleet_models(args.fleet)
    elif args.models:
        models = tuple(m.strip() for m in args.models.split(",") if m.strip())
    else:
        models = (args.model or "smollm2",)
    try:
        strengths = tuple(float(s) for s in args.strengths.split(","))
    except ValueError:
        raise GnomonError(f"bad --strengths {args.strengths!r}: use numbers like -4,-2,0,2,4") from None
    spec = ReportSpec(concepts=concepts, models=models, revision=args.revision, layers=parse_layers(args.layers),
                      position=args.position, control=not args.no_control, compose=not args.no_compose,
                      strengths=strengths, n_prompts=args.prompts, max_new_tokens=args.max_new_tokens, score=args.score, name=args.name)
    html = Path(args.html).expanduser() if args.html else None
    made = Path(args.out).expanduser().resolve() if args.out else None   # the report makes its --out folder
    if html is not None and not html.parent.is_dir() and html.parent.resolve() != made:   # before the work
        raise GnomonError(f"--html {args.html}: the folder {html.parent} does not exist")

    # with --json the document alone is stdout; the progress lines go to stderr
    log = (lambda m: print(m, file=sys.stderr, flush=True)) if args.json else (lambda m: print(m, flush=True))
    doc = run_report(spec, make_executor(args.executor, args.ray_address, args.workers), out=args.out,
                     tracking_uri=args.tracking_uri, log_mlflow=not args.no_mlflow, log=log)
    if html is not None and html.resolve() != Path(doc["paths"]["html"]).resolve():   # --html <out>/index.html: there already
        shutil.copyfile(doc["paths"]["html"], html)
        doc["paths"]["html_copy"] = str(html)
    if args.json:
        print(json.dumps(doc, indent=1, allow_nan=True, default=str))
        return 0

    print(table(doc))
    print(f"\nreport: {doc['paths']['json']}\nhtml:   {args.html or doc['paths']['html']}")
    return 0
