"""``gnomon monitor``: continue a prompt and show how strongly each generated token reads on
each direction (the lie detector). Tokens are coloured by calibrated probability
(blue = negative class, red = positive class; underlined = at or above ``--threshold``);
``--json`` prints the full trace. Set ``NO_COLOR`` or pass ``--no-color`` for plain text.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from jobs.cli.commands.args import add_options
from jobs.cli.commands.steer import add_source_args, allow_prompt_after_options, model_for
from jobs.stages.refs import resolve_directions
from pipeline.types import GnomonError

# lazy: numpy, torch (heavy; imported where used)

# 256-colour backgrounds from "negative" to "positive" and a dark/light foreground for each.
_BG = (27, 75, 252, 215, 203, 160)
_FG = (231, 16, 16, 16, 16, 231)


def add_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("refs", nargs="+", metavar="REF", help="direction(s): catalog ref or .safetensors/.gguf file")
    p.add_argument("prompt", help="prompt to continue")
    p.add_argument("--threshold", type=float, default=0.5, help="alert probability (default 0.5)")
    p.add_argument("--max-new-tokens", type=int, default=32, help="tokens to generate and score (default: 32)")
    p.add_argument("--include-prompt", action="store_true", help="also score the prompt tokens")
    p.add_argument("--chat", action="store_true", help="wrap the prompt in the model's chat template")
    add_options(p, json="print the trace as JSON")
    p.add_argument("--no-color", action="store_true", help="plain text with [p] after each token")
    p.add_argument("--color", action="store_true",
                   help="colour tokens even when stdout is not a terminal (default: only on a terminal)")
    add_source_args(p)
    allow_prompt_after_options(p)


def _paint(token: str, prob: float, alert: bool, color: bool) -> str:
    shown = token.replace("\n", "\\n")
    if not color:
        return f"{shown}[{prob:.2f}]{'!' if alert else ''}"
    i = min(int(prob * len(_BG)), len(_BG) - 1)
    style = f"\x1b[48;5;{_BG[i]}m\x1b[38;5;{_FG[i]}m" + ("\x1b[4m" if alert else "")
    return f"{style}{shown}\x1b[0m"


def render(trace: Any, color: bool) -> str:
    lines = [f"prompt: {trace.prompt!r}"]
    for name, probs in trace.probs.items():
        thr = trace.thresholds[name]
        meta = trace.directions[name]
        label = f"{meta['negative'] or 'neg'} -> {meta['positive'] or 'pos'}"
        if trace.prompt_tokens:
            lines.append(f"[{name}] prompt: " + "".join(
                _paint(t, p, p >= thr, color) for t, p in zip(trace.prompt_tokens, trace.prompt_probs[name])))
        if name in trace.reading:
            how = "running mean of its tokens" if meta.get("position") == "mean" else "its last token"
            lines.append(f"[{name}] the prompt reads {trace.reading[name]:+.3f} (p {meta['positive'] or 'pos'} = "
                         f"{trace.reading_prob[name]:.2f}, {how}: the figure its test AUROC/accuracy describe)")
        lines.append(f"[{name}] ({label}, threshold {thr:g}): " + "".join(
            _paint(t, p, p >= thr, color) for t, p in zip(trace.tokens, probs)))
        n = sum(a["direction"] == name for a in trace.alerts)
        mean = sum(probs) / len(probs) if probs else float("nan")
        lines.append(f"    {n} of {len(probs)} tokens at or above threshold; mean probability {mean:.2f}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:

    # plain options before any catalog read or model load
    if not 0.0 < args.threshold < 1.0:
        raise GnomonError(f"--threshold must be a probability strictly between 0 and 1, got {args.threshold:g}")
    if args.max_new_tokens < 1:
        raise GnomonError(f"--max-new-tokens must be at least 1, got {args.max_new_tokens}")
    directions = resolve_directions(args.refs, args.tracking_uri, getattr(args, "model", None))
    lm = model_for(directions, args.model)
    from pipeline.monitor import monitor

    (trace,) = monitor(lm, directions, [args.prompt], args.max_new_tokens, threshold=args.threshold,
                       include_prompt=args.include_prompt, force=args.force, chat=args.chat)
    if args.json:
        print(trace.to_json())
        return 0
    # colour only on a terminal (a log or a pipe gets plain text), unless --color forces it
    color = not args.no_color and (args.color or (sys.stdout.isatty() and "NO_COLOR" not in os.environ))
    print(render(trace, color))
    sys.stdout.flush()
    return 0
