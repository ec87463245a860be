"""``gnomon drift CONCEPT --fleet NAME``: activation shift vs behaviour shift over the
fine-tune series of a fleet (every seed), paired per checkpoint; the pooled, within-series
and partial r with CIs beside the schedule baselines; the data-screening AUROC beside a
lexicon and a bag-of-words baseline."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from jobs.cli.commands.args import add_executor_args, add_options
from jobs.runtime.engine import make_executor
from pipeline.types import GnomonError

# lazy: numpy (heavy; imported where used)


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
    p.add_argument("--no-held-out", action="store_true",
                   help="keep prompts that share an opening or a 20-character fragment with a training corpus")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap replicates per CI (default: 1000)")
    p.add_argument("--chat", action="store_true", help="wrap the neutral prompts in the chat template")
    p.add_argument("--html", default=None, help="also write the HTML report here")
    p.add_argument("--no-log", action="store_true", help="do not log the report to MLflow")
    add_options(p, "tracking_uri")
    add_options(p, "json")
    add_executor_args(p)


def run(args: argparse.Namespace) -> int:
    from jobs.stages.drift_job import DriftSpec, run_drift
    corpora = {}
    for item in args.corpus:
        role, _, path = item.partition("=")
        if role not in ("skewed", "control") or not path:
            raise GnomonError(f"bad --corpus {item!r}: write skewed=PATH or control=PATH")
        corpora[role] = path
    spec = DriftSpec(concept=args.concept, fleet=args.fleet, base=args.base, skewed=args.skewed,
                     control=args.control, layer=args.layer, toward=args.toward, corpora=corpora,
                     n_prompts=args.prompts, max_new_tokens=args.max_new_tokens,
                     screen_samples=args.screen_samples, held_out=not args.no_held_out,
                     n_boot=args.bootstrap, chat=args.chat, html=args.html, log=not args.no_log)
    out = run_drift(spec, make_executor(args.executor, args.ray_address, args.workers),
                    tracking_uri=args.tracking_uri, log=lambda m: print(m, file=sys.stderr))
    if args.json:
        print(json.dumps(out, indent=1, default=float))
        return 0
    print_drift(out)
    return 0


def print_drift(out: dict[str, Any]) -> None:
    """The drift report as text (what `gnomon drift` prints without --json)."""
    from jobs.stages.fleet_report import ci_text

    st = out["drift"]["statistics"]
    print(f"{out['concept']} drift over fleet {out['fleet']}: base {out['base']}, layer {out['layer']} "
          f"({out['layer_choice']['rule']}), behaviour = {out['behaviour_score']} on {out['prompts']['n']} prompts"
          + (f" ({len(out['prompts']['dropped'])} dropped: they share an opening with a training corpus)"
             if out["prompts"].get("dropped") else ""))
    checks = {c["version"]: c for c in out["behaviour_checks"]}
    for c in st["checkpoints"]:
        b, ch = c["behaviour_shift"], checks[c["version"]]
        copied = f", copied {ch['copied_fraction']:.2f}" if "copied_fraction" in ch else ""
        print(f"  {c['version']}: act {c['activation_shift']['shift']:+.3f} beh {b['shift']:+.3f} "
              f"[{b['ci'][0]:+.3f}, {b['ci'][1]:+.3f}] paired z {b['z_paired']:+.2f} p {b['p_paired']:.4f}"
              f"{copied}, EOS {ch['eos_rate']:.2f}")
    print(f"bootstrap CIs ({int(st['bootstrap']['level'] * 100)}%) over {st['bootstrap']['over']}; "
          f"seeds: {', '.join(f'{k} {len(v)}' for k, v in st['seeds'].items())}")
    print(f"pooled r (activation vs behaviour shift, {st['n_checkpoints']} checkpoints): {ci_text(st['pooled_r'])}")
    for k, e in st["within_series_r"].items():
        print(f"  within {k}: {ci_text(e)}")
    print(f"partial r given step, series, step x series: {ci_text(st['partial_r'])}")
    for k, e in st["baselines"].items():
        print(f"  baseline {k}: r with behaviour {ci_text(e['r_behaviour'])}, with activation {ci_text(e['r_activation'])}")
    print(f"R^2 of behaviour shift on the schedule {ci_text(st['r2']['covariates'])}, with the projection "
          f"{ci_text(st['r2']['covariates_and_projection'])}")
    ct = st["control_test"]
    print(f"control ({out['control']}), paired test: "
          + ("no checkpoint moved" if ct["null_holds"] else f"moved: {', '.join(ct['moved'])}")
          + f" (max |z| {ct['max_abs_z_paired']:.2f}, alpha {ct['alpha']} Bonferroni over {ct['checkpoints']})")
    if out["drift"].get("note"):
        print(f"note: {out['drift']['note']}")
    for pos, v in out["screening"].items():
        rows = [("projection", v), *v["baselines"].items()]
        print(f"screening AUROC ({pos} position, skewed above control, {v['n_skewed']} vs {v['n_control']}): "
              + "; ".join(f"{k} {e['auroc']:.3f} [{e['ci'][0]:.3f}, {e['ci'][1]:.3f}]" for k, e in rows))
    if out["screening_note"]:
        print(f"screening: {out['screening_note']}")
    print(f"report: {out['html']}")
