"""Conditional activation steering (CAST, Lee et al. 2024, arXiv:2409.05907) on the bundled
SmolLM2: a condition read on the prompt decides whether a behaviour direction is applied.

Condition: ``refusal@best-monitor`` (harmful vs harmless requests), its threshold chosen on the
validation split by ``gnomon condition fit`` (run it first). Behaviour: ``sentiment@best``
added at ``--strength`` times its fluency bound (negative: toward negative sentiment), an
arbitrary but measurable behaviour (VADER on greedy continuations). On the refusal concept's
*test* split (prompts neither the direction nor the threshold saw), for each class:

- how often the condition fires (precision / recall / F1 of firing on harmful prompts);
- the mean VADER compound of the continuations unsteered, steered unconditionally, and
  steered conditionally, and the fraction of continuations each steering changed.

CAST's claim holds when the conditional rule moves the harmful prompts about as far as the
unconditional steering does and leaves the harmless ones where they were (by construction a
prompt that fires is steered exactly as the unconditional steering steers it, and one that
does not is not steered, so what is measured is how well the condition fires). Deterministic
(greedy); not a timing benchmark.

Run: ``python bench/cast.py [--model smollm2] [--condition refusal@best-monitor]
[--behaviour sentiment@best] [--strength -0.5] [--max-new-tokens 24]``.
Last line: ``cast_changed = <harmful changed fraction> vs <harmless changed fraction>`` (conditional).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--condition", default="refusal@best-monitor")
    ap.add_argument("--behaviour", default="sentiment@best")
    ap.add_argument("--strength", type=float, default=-0.5, help="fraction of the behaviour's fluency bound")
    ap.add_argument("--max-new-tokens", type=int, default=24)
    ap.add_argument("--batch", type=int, default=16)
    args = ap.parse_args()

    import numpy as np

    from catalog import Catalog
    from jobs.stages.conditions import describe_rule, rule_of
    from jobs.stages.refs import resolve_record, scope_model
    from jobs.serve.resolve import fluency_bound_of
    from pipeline.datasets import load_dataset
    from pipeline.evaluate import vader_compound
    from pipeline.models import load_model
    from pipeline.steer import add, generate, generate_rows

    cat = Catalog()
    crec = resolve_record(cat, args.condition, args.model)
    brec = resolve_record(cat, args.behaviour, args.model)
    cond, beh = cat.load_record(crec), cat.load_record(brec)
    del scope_model
    lm = load_model(args.model)
    print(describe_rule(crec))
    bound = fluency_bound_of(lm, beh, "separation")
    s = args.strength * bound
    print(f"behaviour {brec.ref} (layer {beh.layer}) at {s:+.3g} separations ({args.strength:+g} x its bound {bound:g}); "
          f"condition layer {cond.layer}")
    steer = add(lm, beh, s)
    ds = load_dataset(cond.provenance.concept)
    pos_label, neg_label = cond.provenance.positive, cond.provenance.negative
    classes = {pos_label: ds.split_texts("test", pos_label), neg_label: ds.split_texts("test", neg_label)}
    fired_by: dict[str, list[bool]] = {}
    rows = []
    for label, prompts in classes.items():
        plain, always, conditional, fired = [], [], [], []
        for i in range(0, len(prompts), args.batch):
            chunk = prompts[i:i + args.batch]
            rule = rule_of(crec, cond, steer.ops)
            texts, state = generate_rows(lm, chunk, [[rule]] * len(chunk), args.max_new_tokens)
            conditional += texts
            fired += rule.fired(state) or []
            plain += generate(lm, chunk, args.max_new_tokens)
            always += generate(lm, chunk, args.max_new_tokens, interventions=[steer])
        fired_by[label] = fired
        v = {k: float(np.mean(vader_compound(t))) for k, t in
             (("unsteered", plain), ("always", always), ("conditional", conditional))}
        changed = (float(np.mean([a != b for a, b in zip(plain, always)])),
                   float(np.mean([a != b for a, b in zip(plain, conditional)])))
        rows.append((label, len(prompts), float(np.mean(fired)), v, changed))
    tp = sum(fired_by[pos_label])
    n_fired = tp + sum(fired_by[neg_label])
    prec = tp / n_fired if n_fired else float("nan")
    rec = tp / len(fired_by[pos_label])
    f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
    print(f"\nfiring on the test split: precision {prec:.3f}, recall {rec:.3f}, F1 {f1:.3f}")
    print(f"{'class':<10} {'n':>4} {'fired':>6} {'VADER: unsteered':>17} {'always':>8} {'conditional':>12} "
          f"{'changed: always':>16} {'conditional':>12}")
    for label, n, fr, v, ch in rows:
        print(f"{label:<10} {n:>4} {fr:>6.2f} {v['unsteered']:>17.3f} {v['always']:>8.3f} {v['conditional']:>12.3f} "
              f"{ch[0]:>16.2f} {ch[1]:>12.2f}")
    changed = {label: ch[1] for label, _n, _f, _v, ch in rows}
    print(f"cast_changed = {changed[pos_label]:.2f} vs {changed[neg_label]:.2f}")


if __name__ == "__main__":
    main()
