"""Issue 5's must-show measurements on the bundled SmolLM2-135M-Instruct (CPU).

1. Steering with the shipped ``sentiment`` direction (mean difference of class means; the
   activation-addition recipe of Turner et al. 2023, arXiv:2308.10248) moves the mean VADER
   compound score of greedy continuations of the neutral prompts monotonically with strength.
   The steering layer is given (``--layer``/``--position``); the validation-best layer of the
   layer sweep is steered too, for comparison (classification-best is not steering-best).
2. Ablating the direction: a fresh logistic probe on the ablated activations, with the LEACE
   eraser (Belrose et al. 2023, arXiv:2306.03819) and with plain mean-difference projection.
3. The ``honesty`` monitor: AUROC of the projection, deceptive vs honest, on the test split,
   at the validation-best layer per position.
4. Side effect: next-token KL(unsteered || steered) on the neutral prompts per strength.

Usage (the numbers in bench/RESULTS.md come from this exact command)::

    GNOMON_HOME=/tmp/h9-home python bench/steer_effects.py --write-results

The first run collects activations for both concepts (minutes on 2 shared cores); reruns reuse
them. The last printed line is ``sentiment_steer_spearman = <x>`` (chosen layer, full set).
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
NOTE = ('Reading: the chosen steering direction is mean_diff at layer 1, `mean` position (also the val-best layer for\n'
        'that position); layer 10 (`mean`) gives more fluent text at +-8 but one 0.003 inversion between +2 and +4; the\n'
        'overall val-best direction (mean_diff/`last`, layer 17, separation 27.7) is not monotone: +-8 separations\n'
        'break the text. At layer 1 the useful range is +-2..4 (KL <= 0.54 nats); +-8 is monotone in VADER but not fluent.\n'
        'Generations use the chat template (`chat=True`); raw prompts often end at once (empty continuations).\n')


def fitted(lm: Any, home: Path, concept: str, method: str, layer: int, position: str) -> Any:
    """One direction, fitted by the fit job's own unit of work from the stored contrast set."""
    from jobs.stages.fit_tasks import GroupTask, fit_layer
    from pipeline.datasets import load_dataset

    ds = load_dataset(concept, home=home)
    pos, neg = ds.default_contrast
    task = GroupTask(home=str(home), model="smollm2", revision="main", dataset=ds.name, concept=ds.name,
                     positive=pos, negative=neg, layer=layer, position=position, methods=(method,), params={},
                     fingerprint=lm.fingerprint, hidden_size=lm.hidden_size, dataset_hash=ds.content_hash)
    res = fit_layer(task)
    if res.failures:
        raise RuntimeError(res.failures[0][1])
    return res.directions[0]


def split_texts(lm: Any, concept: str, split: str, label: str, n: int | None = None) -> list[str]:
    from pipeline.datasets import load_dataset

    return load_dataset(concept).split_texts(split, label, lm.tokenizer, n)


def chat_prompts(lm: Any, prompts: list[str]) -> list[str]:
    """The neutral prompts as the chat template renders them (what ``chat=True`` generates from)."""
    return [lm.tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                             add_generation_prompt=True) for p in prompts]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--home", default=None, help="gnomon home (default: $GNOMON_HOME)")
    ap.add_argument("--layer", type=int, default=1, help="steering layer")
    ap.add_argument("--position", default="mean", choices=["last", "mean"])
    ap.add_argument("--strengths", default="-8,-4,-2,0,2,4,8")
    ap.add_argument("--compare", default="mean:10,last:17",
                    help="other POSITION:LAYER directions to steer with the same strengths (the demo's "
                         "default pick today is mean_diff/last at the val-best layer, 17)")
    ap.add_argument("--unit", default="separation", choices=["separation", "resid_norm"])
    ap.add_argument("--n-prompts", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=20)
    ap.add_argument("--no-chat", action="store_true", help="raw prompts instead of the chat template")
    ap.add_argument("--n-probe", type=int, default=120, help="training texts per class for the ablation probe")
    ap.add_argument("--write-results", action="store_true", help="rewrite '## steering effects' in RESULTS.md")
    args = ap.parse_args()

    import torch

    from jobs.runtime.engine import LocalExecutor
    from jobs.stages.fit_job import FitSpec, run_fit
    from pipeline.datasets import neutral_prompts
    from pipeline.evaluate import (
        ablation_probe,
        monitor_auroc,
        next_token_kl,
        steering_sweep,
    )
    from pipeline.home import gnomon_home
    from pipeline.models import load_model
    from pipeline.steer import add

    torch.manual_seed(0)
    home = gnomon_home(args.home)
    chat = not args.no_chat
    strengths = [float(s) for s in args.strengths.split(",")]
    t0 = time.perf_counter()
    lines: list[str] = []

    def out(s: str = "") -> None:
        print(s, flush=True)
        lines.append(s)

    # the layer sweeps (activations collected once, then reused): validation-best layers
    best: dict[tuple[str, str, str], int] = {}
    for concept, methods in (("sentiment", ("mean_diff", "leace")), ("honesty", ("mean_diff",))):
        s = run_fit(FitSpec(model="smollm2", dataset=concept, positions=("last", "mean"), methods=methods,
                            register="none"), LocalExecutor(), home, log=lambda *_: None)
        for b in s["best"]:
            best[(concept, b["method"], b["position"])] = b["layer"]
            out(f"sweep {concept:9s} {b['method']:9s} {b['position']:4s}: val-best layer {b['layer']:2d} "
                f"val_auroc {b['val_auroc']:.3f} test_auroc {b['test_auroc']:.3f}")
    lm = load_model("smollm2", home=home)
    prompts = neutral_prompts("sentiment")[: args.n_prompts]

    # 1. steering at the chosen layer, and at the validation-best layer of the same position
    out(f"\n1. steering: mean VADER compound of {len(prompts)} greedy continuations x {args.max_new_tokens} "
        f"tokens, chat={chat}, unit={args.unit}, mean_diff direction")
    runs = [(args.position, args.layer)] + [(c.split(":")[0], int(c.split(":")[1]))
                                            for c in args.compare.split(",") if c]
    sweeps = {}
    for position, layer in runs:
        d = fitted(lm, home, "sentiment", "mean_diff", layer, position)
        sw = steering_sweep(lm, d, prompts, strengths, unit=args.unit, max_new_tokens=args.max_new_tokens,
                            chat=chat)
        sweeps[(position, layer)] = (d, sw)
        tags = ["chosen"] if (position, layer) == runs[0] else []
        tags += ["val-best"] if best[("sentiment", "mean_diff", position)] == layer else []
        out(f"| {position} layer {layer:2d} {'(' + ', '.join(tags) + ')' if tags else ''} | "
            + " | ".join(f"{s:+g}: {m:+.3f}" for s, m in zip(sw.strengths, sw.mean_scores))
            + f" | spearman {sw.spearman:.3f} | separation {d.separation:.2f} |")
    d, sw = sweeps[runs[0]]
    out("examples (prompts 0 and 3; at this layer the extremes are no longer fluent):")
    for i in (0, 3):
        for st in dict.fromkeys((sw.strengths[0], -4.0, 0.0, 4.0, sw.strengths[-1])):
            if st in sw.strengths:
                out(f"  [{st:+g}] {prompts[i]!r} -> {sw.texts[sw.strengths.index(st)][i]!r}")

    # 4. side effects at the same strengths
    kl_prompts = chat_prompts(lm, prompts) if chat else prompts
    kls = {s: next_token_kl(lm, kl_prompts, [add(lm, d, s, args.unit)]) for s in strengths if s != 0}  # type: ignore[arg-type]
    out("\n4. next-token KL(unsteered || steered), nats, same prompts, layer "
        f"{args.layer}: " + ", ".join(f"{s:+g}: {k:.3f}" for s, k in kls.items()))

    # 2. erasure: fresh probe after ablation, LEACE eraser vs plain projection
    out(f"\n2. ablation at layer {args.layer} ({args.position}): fresh logistic probe, test accuracy")
    train = (split_texts(lm, "sentiment", "train", "positive", args.n_probe),
             split_texts(lm, "sentiment", "train", "negative", args.n_probe))
    test = (split_texts(lm, "sentiment", "test", "positive"), split_texts(lm, "sentiment", "test", "negative"))
    probes = {}
    for method in ("leace", "mean_diff"):
        dm = fitted(lm, home, "sentiment", method, args.layer, args.position)
        p = ablation_probe(lm, dm, train, test)
        probes[method] = p
        out(f"  {method:9s}: before {p['probe_accuracy_before']:.3f} (auroc {p['probe_auroc_before']:.3f}) "
            f"-> after {p['probe_accuracy_after']:.3f} (auroc {p['probe_auroc_after']:.3f})")

    # 3. the honesty monitor on the test split
    out("\n3. honesty monitor (mean_diff, val-best layer), test split, deceptive vs honest")
    for position in ("last", "mean"):
        layer = best[("honesty", "mean_diff", position)]
        dh = fitted(lm, home, "honesty", "mean_diff", layer, position)
        pos_l, neg_l = dh.provenance.positive, dh.provenance.negative
        m = monitor_auroc(lm, dh, split_texts(lm, "honesty", "test", pos_l), split_texts(lm, "honesty", "test", neg_l))
        out(f"  {position:4s} layer {layer:2d}: AUROC {m['auroc']:.3f} accuracy {m['accuracy']:.3f} "
            f"(mean score {pos_l} {m['pos_mean_score']:.2f}, {neg_l} {m['neg_mean_score']:.2f})")
    out(f"\n({time.perf_counter() - t0:.0f} s wall)")

    if args.write_results:
        cmd = "GNOMON_HOME=/tmp/h9-home python bench/steer_effects.py " + " ".join(sys.argv[1:])
        write_results("\n".join(lines), cmd)
    print(f"sentiment_steer_spearman = {sw.spearman:.3f}")
    return 0


def write_results(body: str, cmd: str) -> None:
    """Replace (or append) the ``## steering effects`` section; other sections are untouched."""
    path = ROOT / "bench" / "RESULTS.md"
    text = path.read_text() if path.is_file() else ""
    section = (f"## steering effects\n\nSmolLM2-135M-Instruct (bundled GGUF), CPU (2 shared cores). Command:\n\n"
               f"    {cmd}\n\n{NOTE}\n```\n{body}\n```\n")
    pat = re.compile(r"^## steering effects\n.*?(?=^## |\Z)", re.DOTALL | re.MULTILINE)
    text = pat.sub(lambda _m: section + "\n", text) if pat.search(text) else text.rstrip("\n") + "\n\n" + section
    path.write_text(text)


if __name__ == "__main__":
    raise SystemExit(main())
