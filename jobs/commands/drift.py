"""``gnomon drift CONCEPT --fleet NAME``: activation shift vs behaviour shift over the
fine-tune series of a fleet, their Pearson r, and the data-screening AUROC."""

from __future__ import annotations

import argparse
import json

from jobs.commands.collect import add_executor_args


def add_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("concept", help="concept name (sentiment)")
    p.add_argument("--fleet", required=True, help="the fleet holding the fine-tune series and their base")
    p.add_argument("--base", default=None, help="base version (default: the fine-tunes' nearest non-fine-tune ancestor)")
    p.add_argument("--skewed", default=None, help="skewed fine-tune series (default: the one not named control/ctl)")
    p.add_argument("--control", default=None, help="control series (default: the one named control/ctl)")
    p.add_argument("--layer", type=int, default=None,
                   help="direction layer (default: the base model's val-best among the layers the fine-tunes "
                        "can move, i.e. above their frozen blocks)")
    p.add_argument("--toward", default=None, help="label the skewed corpus leans to (default: the negative label)")
    p.add_argument("--corpus", action="append", default=[], metavar="ROLE=PATH",
                   help="skewed=PATH and control=PATH fine-tuning corpora (default: from the series' lineage)")
    p.add_argument("--prompts", type=int, default=32, help="neutral prompts used (default: 32)")
    p.add_argument("--max-new-tokens", type=int, default=24, help="tokens generated per prompt (default: 24)")
    p.add_argument("--screen-samples", type=int, default=200, help="corpus samples per corpus for screening (default: 200)")
    p.add_argument("--chat", action="store_true", help="wrap the neutral prompts in the chat template")
    p.add_argument("--html", default=None, help="also write the HTML report here")
    p.add_argument("--no-log", action="store_true", help="do not log the report to MLflow")
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else SQLite in the home)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    add_executor_args(p)


def run(args: argparse.Namespace) -> int:
    import sys

    from jobs.drift_job import DriftSpec, run_drift
    from jobs.executors import make_executor
    from pipeline.types import GnomonError

    corpora = {}
    for item in args.corpus:
        role, _, path = item.partition("=")
        if role not in ("skewed", "control") or not path:
            raise GnomonError(f"bad --corpus {item!r}: write skewed=PATH or control=PATH")
        corpora[role] = path
    spec = DriftSpec(concept=args.concept, fleet=args.fleet, base=args.base, skewed=args.skewed,
                     control=args.control, layer=args.layer, toward=args.toward, corpora=corpora,
                     n_prompts=args.prompts, max_new_tokens=args.max_new_tokens,
                     screen_samples=args.screen_samples, chat=args.chat, html=args.html, log=not args.no_log)
    out = run_drift(spec, make_executor(args.executor, args.ray_address, args.workers),
                    tracking_uri=args.tracking_uri, log=lambda m: print(m, file=sys.stderr))
    if args.json:
        print(json.dumps(out, indent=1, default=float))
        return 0
    print(f"{out['concept']} drift over fleet {out['fleet']}: base {out['base']}, layer {out['layer']}, "
          f"behaviour = {out['behaviour_score']}")
    for name, s in out["drift"]["series"].items():
        pts = ", ".join(f"s{st}: act {a:+.3f} beh {b:+.3f}"
                        for st, a, b in zip(s["step"], s["activation_shift"], s["behaviour_shift"]))
        print(f"  {name}: {pts}")
    print(f"Pearson r (activation shift vs behaviour shift, {out['drift']['n_points']} checkpoints): "
          f"{out['drift']['pearson_r']:.3f}")
    if out["drift"].get("note"):
        print(f"note: {out['drift']['note']}")
    for pos, v in out["screening"].items():
        print(f"screening AUROC ({pos} position, skewed above control): {v['auroc']:.3f} "
              f"({v['n_skewed']} vs {v['n_control']} samples)")
    if out["screening_note"]:
        print(f"screening: {out['screening_note']}")
    print(f"report: {out['html']}")
    return 0
