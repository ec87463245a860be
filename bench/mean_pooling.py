"""Does ``mean`` pooling follow sentence length? The first-token rule, before and after.

On the bundled SmolLM2 and a shipped concept (default ``sentiment``, 480 sentences), the
``mean`` rows at several layers are collected three times: with the documented rule (the
first content token always left out, ``pipeline.collect.MEAN_RULE``), with the rule before
it (left out only where its norm is an outlier, ``SINK_RATIO`` x the median of the others',
so rows of one layer were pooled differently) and with every content token kept (the rule
before that). Each collection's validation AUROC of the difference of means is printed too
(the figure a rule change moves). For each, the top principal component of the
centred rows is correlated (|Pearson r|) with 1/length (content tokens per text); the
concept's label is correlated with the same component for comparison. Nothing here is a
timing, so load does not matter.

Run: ``python bench/mean_pooling.py [--concept sentiment] [--layers 2,6,12,18,24,29]``.
Last line: ``mean_length_corr = X``, the largest |r| with 1/length over the layers under
the documented rule.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def top_pc(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64) - x.mean(0)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    return x @ vt[0]


def corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(abs(np.corrcoef(a, b)[0, 1]))


def _auroc(x: np.ndarray, labels: np.ndarray, split: np.ndarray) -> float:
    """Test AUROC of the difference of class means fitted on the rest (train+val), or nan."""
    from pipeline.metrics import auroc

    test = split == "test"
    if not test.any():
        return float("nan")
    fit = ~test
    u = x[fit & (labels == 1)].mean(0) - x[fit & (labels == 0)].mean(0)
    s = x[test] @ u
    return auroc(s[labels[test] == 1], s[labels[test] == 0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--concept", default="sentiment")
    ap.add_argument("--layers", default="2,6,12,18,24,29")
    args = ap.parse_args()
    import pipeline.collect as pc
    from pipeline.concepts import DATA_DIR
    from pipeline.models import load_model

    rows = [json.loads(line) for line in (DATA_DIR / f"{args.concept}.jsonl").read_text().splitlines() if line]
    ids, texts = [r["id"] for r in rows], [r["text"] for r in rows]
    where = {i: k for k, i in enumerate(ids)}
    labels = np.array([r["label"] == rows[0]["label"] for r in rows], dtype=np.float64)
    layers = [int(x) for x in args.layers.split(",")]
    lm = load_model("smollm2")
    enc = lm.tokenizer(texts, return_special_tokens_mask=True)
    n_content = np.array([len(m) - sum(m) for m in enc["special_tokens_mask"]], dtype=np.float64)
    rule = pc.collect(lm, ids, texts, layers=layers, positions=["mean"])
    original = pc.mean_pool
    variants = {}
    for name, ratio in (("all", float("inf")), ("outlier", pc.SINK_RATIO)):
        pc.mean_pool = functools.partial(original, sink_ratio=ratio)  # type: ignore[assignment]
        try:
            variants[name] = pc.collect(lm, ids, texts, layers=layers, positions=["mean"])
        finally:
            pc.mean_pool = original  # type: ignore[assignment]
    variants["always"] = rule
    split = np.array([r.get("split") or "" for r in rows])
    print(f"{args.concept}: {len(texts)} texts, {n_content.min():.0f}-{n_content.max():.0f} content tokens; "
          f"|r| of the top PC of `mean` rows with 1/length, and the test AUROC of the train mean difference")
    print(f"{'layer':>6}" + "".join(f"{n + ' 1/len':>14}{n + ' auroc':>14}" for n in variants))
    worst = 0.0
    for layer in layers:
        out = []
        for name, res in variants.items():
            got_ids, _, _, acts = res[layer].arrays()
            order = np.argsort([where[i] for i in got_ids])  # back to file order
            x = acts[order].astype(np.float64)
            pc1 = top_pc(x)
            out += [corr(pc1, 1 / n_content), _auroc(x, labels, split)]
        worst = max(worst, out[-2])
        print(f"{layer:>6}" + "".join(f"{v:>14.3f}" for v in out))
    print(f"mean_length_corr = {worst:.3f}")


if __name__ == "__main__":
    main()
