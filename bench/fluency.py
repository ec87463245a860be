"""Where steering breaks the text, in which unit: the fluency bound of difference-of-means
directions on the bundled SmolLM2, per concept and layer, in mean residual norms and in
class separations.

For each concept and layer: activations of 40 training texts per class (``mean`` position,
read in-process, not through the store), the ``mean_diff`` direction, then
:func:`pipeline.fluency.fluency_bound` on 4 of the concept's neutral prompts (mean
next-token KL <= 1 nat, both signs) in ``resid_norm`` and in ``separation`` units. A good
default unit is one whose bound varies little between directions: the spread is reported
as the ratio max/min of the bounds over all (concept, layer). Deterministic (greedy, no
sampling); not a timing benchmark.

Run: ``python bench/fluency.py [--concepts sentiment,truth,...] [--layers 6,12,18,24]``.
Last line: ``fluency_bound_spread_resid_norm = <max/min>`` (the separation spread is on the
line before).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--concepts", default="sentiment,truth,formality,honesty", help="comma list (default: 4 concepts)")
    ap.add_argument("--layers", default="6,12,18,24", help="comma list of layers (default: 6,12,18,24)")
    ap.add_argument("--n", type=int, default=40, help="training texts per class (default: 40)")
    args = ap.parse_args()

    import torch

    from pipeline.datasets import load_dataset, neutral_prompts
    from pipeline.direction import Provenance
    from pipeline.evaluate import _acts
    from pipeline.fit import fit_direction
    from pipeline.fluency import fluency_bound
    from pipeline.models import load_model

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    lm = load_model("smollm2")
    layers = [int(x) for x in args.layers.split(",")]
    print(f"load average {os.getloadavg()[0]:.1f}; {lm.model_id}, {lm.num_layers} layers")
    print(f"{'concept':<10} {'layer':>5} {'sep/resid':>9} {'bound resid_norm':>16} {'bound separation':>16}")
    bounds: dict[str, list[float]] = {"resid_norm": [], "separation": []}
    for concept in args.concepts.split(","):
        ds = load_dataset(concept)
        pos_label, neg_label = ds.default_contrast
        pos_t = ds.split_texts("train", pos_label, lm.tokenizer, args.n)
        neg_t = ds.split_texts("train", neg_label, lm.tokenizer, args.n)
        prompts = neutral_prompts(concept)[:4]
        for layer in layers:
            p, n = _acts(lm, pos_t, layer, "mean"), _acts(lm, neg_t, layer, "mean")
            base = Provenance.minimal(hidden_size=lm.hidden_size, layer=layer, concept=concept,
                                      model_id=lm.model_id, fingerprint=lm.fingerprint, position="mean")
            d = fit_direction("mean_diff", p, n, base=base)
            row = {u: fluency_bound(lm, d, prompts, u).bound for u in bounds}
            for u, b in row.items():
                if b > 0:
                    bounds[u].append(b)
            print(f"{concept:<10} {layer:>5} {d.separation / d.resid_norm:>9.3f} {row['resid_norm']:>16g} "
                  f"{row['separation']:>16g}", flush=True)
    spread = {u: (max(b) / min(b) if b else float("nan")) for u, b in bounds.items()}
    print(f"load average after {os.getloadavg()[0]:.1f}")
    print(f"fluency_bound_spread_separation = {spread['separation']:.2f}")
    print(f"fluency_bound_spread_resid_norm = {spread['resid_norm']:.2f}")


if __name__ == "__main__":
    main()
