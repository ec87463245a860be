"""Is the linearity report cheap next to collection? (issue 9's benchmark)

For one concept on the bundled SmolLM2-135M-Instruct, times (1) collecting its
activations at every layer 0..30 (``last`` and ``mean``, float16, local executor, into a
fresh home) and (2) the report's representation figures over the same 31 layers: per
layer, one read of the contrast splits from the store and LEACE erasure, then the linear and
MLP probes on the activations and on the erased copy, every layer's probes trained together
as batched models (:func:`pipeline.linearity.layers.analyse_layers` without method agreement,
as ``gnomon report`` runs them). The claim is
that (2) takes less than (1): the last line is ``report_vs_collect_ratio = X`` (X < 1).

Run: ``python bench/report.py [--concept sentiment] [--threads N] [--home DIR]``. Timings
are only meaningful on a quiet machine; the load average is printed before and after.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--concept", default="sentiment")
    ap.add_argument("--threads", type=int, default=None, help="torch threads for both phases")
    ap.add_argument("--home", default=None, help="a store to reuse and keep; when omitted a fresh home is made (collection timed from empty) and removed at the end")
    args = ap.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.home:
        measure(args, Path(args.home))
    else:   # a fresh home (~550 MB of activations), removed afterwards
        with tempfile.TemporaryDirectory(prefix="gnomon-bench-report-") as tmp:
            measure(args, Path(tmp))


def measure(args: argparse.Namespace, home: Path) -> None:
    import torch

    from jobs.stages.collect_job import CollectSpec, run_collection
    from jobs.runtime.engine import make_executor
    from pipeline.contrast import StoreDB, contrast_splits
    from pipeline.datasets import load_dataset
    from pipeline.direction import Provenance
    from pipeline.linearity.layers import analyse_layers

    print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; torch threads "
          f"{torch.get_num_threads()}; home {home}")
    from pipeline.models import load_model

    load_model("smollm2", home=home)  # converts and caches the GGUF once: not part of either timing
    t0 = time.perf_counter()
    got = run_collection(CollectSpec(model="smollm2", dataset=args.concept, positions=("last", "mean")),
                         make_executor("local"), home)
    t_collect = time.perf_counter() - t0
    print(f"collect {args.concept}: {got['examples']} examples, {got['written_files']} files written "
          f"({got['skipped_files']} already there), {t_collect:.1f} s")
    ds = load_dataset(args.concept)
    pos, neg = ds.default_contrast
    t1 = time.perf_counter()
    items = []
    with StoreDB(home, memory_limit="1GB", threads=1) as db:   # each layer's contrast sets read once
        for layer in range(got["num_layers"] + 1):
            sets = contrast_splits(db, model="smollm2", revision="main", dataset=got["dataset"], layer=layer,
                                   position="last", positive=pos, negative=neg, fingerprint=got["fingerprint"])
            items.append((sets, Provenance.minimal(hidden_size=got["hidden_size"], layer=layer)))
    t_read = time.perf_counter() - t1
    results = analyse_layers(items, agreement=False)   # every layer's 4 probes in one batched loop
    for entry, _ in results:
        print(f"  layer {entry['layer']:>2}: linear {entry['probes']['linear']['test_accuracy']:.2f} "
              f"mlp {entry['probes']['mlp']['test_accuracy']:.2f} erased linear "
              f"{entry['erasure']['linear']['test_accuracy']:.2f} erased mlp "
              f"{entry['erasure']['mlp']['test_accuracy']:.2f}")
    t_report = time.perf_counter() - t1
    print(f"probes + erasure over {got['num_layers'] + 1} layers: {t_report:.1f} s "
          f"(of which reading the {got['num_layers'] + 1} layers' contrast sets {t_read:.1f} s)")
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    print(f"report_vs_collect_ratio = {t_report / t_collect:.3f}")


if __name__ == "__main__":
    main()
