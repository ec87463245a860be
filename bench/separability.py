"""Are the shipped concepts linearly separable in SmolLM2? (issue 3's must-show)

Collects all 7 shipped concepts on the bundled SmolLM2-135M-Instruct (every layer 0..30,
``last`` and ``mean`` positions, float16 store), then for each concept, position and layer
fits a difference-of-means direction on the ``train`` split (Marks & Tegmark 2023, "The
Geometry of Truth", arXiv:2310.06824, found it generalises as well as probes), reads its
accuracy on ``val`` (threshold at the training class midpoint, as ``fit_direction`` does),
picks the layer with the best validation accuracy (ties: higher validation AUROC, then the
earlier layer), and reports ``test`` accuracy and AUROC at that layer only, so the test
figure is not selected on. Contrast sets come from the store through DuckDB
(:func:`pipeline.contrast.contrast_splits`), one pass per (layer, position).

Run: ``python bench/separability.py [--home DIR] [--executor local|ray] [--write]``. The
collection resumes: rerunning with the same home skips complete shards. ``--write``
replaces the ``## separability`` section of ``bench/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

POSITIONS = ("last", "mean")
MODEL, REVISION = "smollm2", "main"


@dataclass(frozen=True)
class LayerScore:
    concept: str
    position: str
    layer: int
    val_accuracy: float
    val_auroc: float
    test_accuracy: float
    test_auroc: float
    n_train: int
    n_val: int
    n_test: int


def collect_concepts(home: Path, concepts: Sequence[str], executor: str = "local") -> dict[str, Any]:
    """Collect every concept (resuming) and return its run summaries."""
    from jobs.stages.collect_job import CollectSpec, run_collection
    from jobs.runtime.engine import make_executor
    out = {}
    ex = make_executor(executor)
    for c in concepts:
        out[c] = run_collection(CollectSpec(model=MODEL, dataset=c, positions=POSITIONS), ex, home)
    return out


def score_layers(home: Path, concepts: Sequence[str], fingerprint: str = "") -> list[LayerScore]:
    """A mean-difference direction per (concept, position, layer): its val and test metrics."""
    import numpy as np

    from pipeline.contrast import StoreDB, contrast_splits
    from pipeline.datasets import load_dataset
    from pipeline.direction import Provenance
    from pipeline.fit import fit_direction
    from pipeline.store import ActivationStore

    store = ActivationStore(home)
    scores: list[LayerScore] = []
    with StoreDB(home) as db:
        for concept in concepts:
            ds = load_dataset(concept)
            pos_label, neg_label = ds.default_contrast
            for layer in store.layers(MODEL, REVISION, concept):
                for position in POSITIONS:
                    cs = contrast_splits(db, model=MODEL, revision=REVISION, dataset=concept, layer=layer,
                                         position=position, positive=pos_label, negative=neg_label)
                    tr = cs["train"]
                    base = Provenance(model_id=MODEL, revision=REVISION, fingerprint=fingerprint,
                                      hidden_size=tr.pos.shape[1], layer=layer, position=position,
                                      concept=concept, positive=pos_label, negative=neg_label,
                                      dataset=concept, dataset_hash=ds.content_hash)
                    sizes = {s: len(cs[s].pos) + len(cs[s].neg) for s in ("train", "val", "test")}
                    if np.array_equal(tr.pos.mean(0), tr.neg.mean(0)):
                        # e.g. layer 0 at ``last``: paired sentences ending in the same token
                        # have identical embeddings there, so there is no direction: chance.
                        m = {f"{s}_{k}": 0.5 for s in ("val", "test") for k in ("accuracy", "auroc")}
                    else:
                        d = fit_direction("mean_diff", tr.pos, tr.neg, base=base, paired=tr.paired,
                                          eval_sets={s: (cs[s].pos, cs[s].neg) for s in ("val", "test")})
                        m = dict(d.metrics)
                    scores.append(LayerScore(concept, position, layer, m["val_accuracy"], m["val_auroc"],
                                             m["test_accuracy"], m["test_auroc"], sizes["train"],
                                             sizes["val"], sizes["test"]))
    return scores


def best_by_val(scores: Sequence[LayerScore], concept: str, position: str | None = None) -> LayerScore:
    """The validation-selected layer (and position, when ``position`` is None)."""
    cands = [s for s in scores if s.concept == concept and (position is None or s.position == position)]
    return max(cands, key=lambda s: (s.val_accuracy, s.val_auroc, -s.layer, s.position == "last"))


def table(scores: Sequence[LayerScore], concepts: Sequence[str]) -> str:
    """Markdown table: per concept and position, the val-selected layer and its test metrics."""
    lines = ["| concept | position | best layer (val) | val acc | test acc | test AUROC | n train/val/test |",
             "| --- | --- | ---: | ---: | ---: | ---: | --- |"]
    for c in concepts:
        overall = best_by_val(scores, c)
        for p in POSITIONS:
            s = best_by_val(scores, c, p)
            mark = " *" if s == overall else ""
            lines.append(f"| {c} | {p}{mark} | {s.layer} | {s.val_accuracy:.3f} | {s.test_accuracy:.3f} | "
                         f"{s.test_auroc:.3f} | {s.n_train}/{s.n_val}/{s.n_test} |")
    return "\n".join(lines)


def write_section(results: Path, name: str, body: str) -> None:
    """Replace (or append) ``## <name>`` in RESULTS.md, leaving other sections alone."""
    text = results.read_text() if results.is_file() else "# Benchmark results\n"
    head = f"## {name}"
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip() == head), None)
    new = [head, "", *body.strip("\n").splitlines(), ""]
    if start is None:
        out = lines + ([""] if lines and lines[-1].strip() else []) + new
    else:
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        out = lines[:start] + new + lines[end:]
    results.write_text("\n".join(out).rstrip("\n") + "\n")


def main() -> None:
    from pipeline.concepts import CONCEPTS
    from pipeline.home import gnomon_home

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--home", default=None, help="gnomon home holding the store (default: $GNOMON_HOME)")
    ap.add_argument("--concepts", default=",".join(CONCEPTS))
    ap.add_argument("--executor", default="local", choices=["local", "ray"])
    ap.add_argument("--write", action="store_true", help="write the table to bench/RESULTS.md")
    args = ap.parse_args()
    home = gnomon_home(args.home)
    concepts = args.concepts.split(",")
    t0 = time.perf_counter()
    summaries = collect_concepts(home, concepts, args.executor)
    t1 = time.perf_counter()
    fingerprint = ""
    from pipeline.store import ActivationStore

    manifest = ActivationStore(home).manifest(MODEL, REVISION, concepts[0])
    if manifest:
        fingerprint = str(manifest[0].get("fingerprint", ""))
    scores = score_layers(home, concepts, fingerprint)
    t2 = time.perf_counter()
    md = table(scores, concepts)
    written = sum(s["written_files"] for s in summaries.values())
    note = ("SmolLM2-135M-Instruct (bundled GGUF, float32 on CPU), layers 0..30, positions last+mean, "
            "float16 store; difference of means (`mean_diff`) fitted on train, layer chosen by val "
            "accuracy, test reported at that layer; `*` marks the position chosen by val. "
            + (f"Collection {t1 - t0:.0f} s ({written} files written, {args.executor} executor); "
               if written else "Collection resumed from a complete store (nothing rewritten); ")
            + f"{len(scores)} fits on DuckDB contrast sets {t2 - t1:.0f} s (2 shared CPU cores). "
            f"Command: `python bench/separability.py --write`.")
    print(md)
    print(note)
    fails = [c for c in concepts if best_by_val(scores, c).test_accuracy < 0.8]
    print(f"min best-layer test accuracy = {min(best_by_val(scores, c).test_accuracy for c in concepts):.3f}"
          + (f"; below 0.8: {', '.join(fails)}" if fails else ""))
    if args.write:
        write_section(Path(__file__).with_name("RESULTS.md"), "separability", md + "\n\n" + note)


if __name__ == "__main__":
    main()
