"""``gnomon evaluate``: steering, side effects, monitor and erasure on one or many checkpoints."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace

from jobs.cli.commands.args import add_executor_args, add_options
from jobs.runtime.engine import make_executor
from jobs.stages.refs import check_refs
from jobs.stages.stage_specs import EvalSpec
from pipeline.home import gnomon_home
from pipeline.types import GnomonError

# lazy: numpy (heavy; imported where used)


def add_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("ref", help="catalog reference (sentiment@best, sentiment/3) or a .safetensors direction")
    p.add_argument("--models", default=None, help="comma list of checkpoints (default: the direction's model)")
    p.add_argument("--fleet", default=None, help="evaluate on every version of this fleet (one Ray task each) "
                   "and log each version's metrics to MLflow (list them with `gnomon evals ls`)")
    d = EvalSpec  # the defaults, decided once
    strengths = ",".join(f"{x:g}" for x in d.strengths)
    p.add_argument("--strengths", default=strengths, help=f"comma list in --unit (default: {strengths}); "
                   "write --strengths=-4,0,4 (with =) when the first is negative")
    p.add_argument("--unit", default=d.unit, choices=["separation", "resid_norm", "raw"],
                   help=f"what one unit of strength means (default: {d.unit}; separation: the class-mean distance)")
    p.add_argument("--prompts", type=int, default=d.n_prompts, help=f"neutral prompts used (default: {d.n_prompts})")
    p.add_argument("--max-new-tokens", type=int, default=d.max_new_tokens,
                   help=f"tokens generated per prompt (default: {d.max_new_tokens})")
    p.add_argument("--chat", action="store_true", help="wrap the neutral prompts in the chat template")
    p.add_argument("--no-probe", action="store_true", help="skip the ablation probe")
    p.add_argument("--no-monitor", action="store_true", help="skip the monitor AUROC")
    add_options(p, "tracking_uri")
    add_options(p, json="print the results as JSON")
    add_executor_args(p)


def run(args: argparse.Namespace) -> int:
    from jobs.stages.evaluate_job import check_models, run_evaluation
    try:
        strengths = tuple(float(s) for s in args.strengths.split(","))
    except ValueError:
        raise GnomonError(f"bad --strengths {args.strengths!r}: use numbers like -4,0,4") from None
    spec = EvalSpec(ref=args.ref, models=tuple(m for m in (args.models or "").split(",") if m),
                    strengths=strengths, unit=args.unit, n_prompts=args.prompts,
                    max_new_tokens=args.max_new_tokens, probe=not args.no_probe, monitor=not args.no_monitor,
                    chat=args.chat, fleet=args.fleet)
    # a missing checkpoint is named first (each model resolved here, once: the request trusts it),
    spec = replace(spec, models=check_models(spec.models, gnomon_home()))
    # then an unknown concept or version (``@best`` scoped to the one checkpoint given): before any work
    check_refs([args.ref], args.tracking_uri, spec.models[0].id if len(spec.models) == 1 else None)
    out = run_evaluation(spec, make_executor(args.executor, args.ray_address, args.workers),
                         tracking_uri=args.tracking_uri)
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(f"{out['concept']} direction (layer {out['layer']}, {out['method']}, from {out['direction_model']}) "
          f"on {len(out['checkpoints'])} checkpoint(s), {out['seconds']:.1f} s")
    for c in out["checkpoints"]:
        if c.get("skipped"):
            print(f"  {c['model']:<28} skipped: {c['skipped']}")
            continue
        m = c["metrics"]
        line = f"  {c['model']:<28} {'same weights' if c['same_weights'] else 'other weights'}"
        if c["sweep"]:
            sw = c["sweep"]
            pairs = " ".join(f"{s:+g}:{v:+.2f}" for s, v in zip(sw["strengths"], sw["mean_scores"]))
            line += f"  score by strength [{pairs}] spearman={m['steer_spearman']:.2f}"
        if "steer_slope" in m:
            line += f" slope={m['steer_slope']:+.3f} R2={m['steer_r2']:.2f}"
        if "logodds_slope" in m:
            line += f"  log-odds slope={m['logodds_slope']:+.3f} R2={m['logodds_r2']:.2f}"
        if "side_effect_kl" in m:
            line += f"  KL={m['side_effect_kl']:.3f} ppl {m['perplexity']:.1f}->{m['perplexity_steered']:.1f}"
        if "monitor_auroc" in m:
            line += (f"  monitor (as `gnomon monitor` reads it) AUROC={m['monitor_auroc']:.3f} "
                     f"acc={m['monitor_accuracy']:.2f} ECE={m.get('monitor_ece', float('nan')):.2f}")
        if "probe_accuracy_after" in m:
            line += f"  probe acc {m['probe_accuracy_before']:.2f} -> {m['probe_accuracy_after']:.2f} after ablation"
        print(line)
        for note in c.get("notes") or []:
            print(f"    {note}")
    print(f"results: {out['path']}")
    if out.get("runs") is not None:
        print(f"logged {len(out['runs'])} MLflow run(s); list them with "
              f"`gnomon evals ls --concept {out['concept']} --fleet {args.fleet}`")
    return 0
