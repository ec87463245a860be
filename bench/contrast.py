"""Contrast-set assembly: the DuckDB path vs a naive pandas loop vs a raw pyarrow read.

Builds a synthetic store (200,000 float16 vectors of width 576, 20 shards of one layer,
a paired dataset with rows shuffled across shards), then times each path N times,
interleaved (the machine is shared), and reports medians of wall and CPU time:

- ``duckdb f16``: ``contrast_set(..., dtype=None)``: the vectors as stored (float16);
- ``duckdb f32``: ``contrast_set(...)``: float32, the default (numpy widens float16);
- ``pandas``: what a user without gnomon would write (see ``naive_pandas``);
- ``raw f16``: ``pq.read_table`` of the ``act`` column of the same files (bytes only, no
  selection): the floor any path pays; ``raw+f32`` adds one float32 numpy array.

Run: ``python bench/contrast.py [--rows 200000] [--repeat 5]``. The last line is
``contrast_speedup_vs_pandas = <x>``: pandas / ``duckdb f32``, median wall
time, both delivering float32 arrays.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.contrast import StoreDB, contrast_set
from pipeline.store import ActivationStore, activation_table

MODEL, REV, DATASET, LAYER, WIDTH = "bench/model", "main", "bench", 5, 576


def build(root: Path, rows: int, per_shard: int = 10_000) -> list[Path]:
    store = ActivationStore(root)
    ids = [f"ex{i:07d}" for i in range(rows)]
    store.write_examples(DATASET, pa.table({
        "id": ids, "text": [f"text {i}" for i in range(rows)],
        "label": ["pos" if i % 2 == 0 else "neg" for i in range(rows)],
        "pair": [f"p{i // 2:07d}" for i in range(rows)],
        "split": [("train", "val", "test")[(i // 2) % 3] for i in range(rows)]}))
    rng = np.random.default_rng(0)
    # Shuffle ids across shards so pair order != storage order (the join/sort must work).
    perm = rng.permutation(rows)
    paths = []
    for shard, start in enumerate(range(0, rows, per_shard)):
        chunk = perm[start:start + per_shard]
        acts = rng.standard_normal((len(chunk), WIDTH), dtype=np.float32)  # (n, d)
        t = activation_table([ids[i] for i in chunk], "last", np.full(len(chunk), 7), acts)
        paths.append(store.write_shard(MODEL, REV, DATASET, LAYER, shard, t, fingerprint="bench",
                                       positions=["last"]).path)
    return paths


def naive_pandas(root: Path) -> tuple[np.ndarray, np.ndarray]:
    """The pandas way: read the store, filter, merge labels, loop over rows, stack.

    ``read_parquet`` of the activations root discovers the hive partitions (model,
    revision, dataset, layer become columns); rows are filtered in pandas (the store
    holds only this layer, so nothing extra is read), merged with the examples, and a
    Python loop groups the vectors by pair; complete pairs are stacked in pair order and
    converted to float32 once.
    """
    import pandas as pd

    acts = pd.read_parquet(root / "activations")
    key = ActivationStore(root).key(MODEL)
    acts = acts[(acts["model"] == key) & (acts["revision"] == REV) & (acts["dataset"] == DATASET)
                & (acts["layer"] == LAYER) & (acts["position"] == "last")]
    ex = pd.read_parquet(ActivationStore(root).examples_path(DATASET))
    df = acts.merge(ex, left_on="example_id", right_on="id")
    df = df[df["label"].isin(["pos", "neg"])]
    by_pair: dict[str, dict[str, np.ndarray]] = {}
    for pair, label, act in zip(df["pair"], df["label"], df["act"]):
        by_pair.setdefault(pair, {})[label] = act
    pos_list, neg_list = [], []
    for pair in sorted(by_pair):
        if len(by_pair[pair]) == 2:
            pos_list.append(by_pair[pair]["pos"])
            neg_list.append(by_pair[pair]["neg"])
    return np.stack(pos_list).astype(np.float32), np.stack(neg_list).astype(np.float32)


def timed(fn: Callable[[], Any], times: dict[str, list[tuple[float, float]]], name: str) -> Any:
    """Run ``fn`` once, appending (wall seconds, CPU seconds of all this process's threads)."""
    t, c = time.perf_counter(), time.process_time()
    out = fn()
    times.setdefault(name, []).append((time.perf_counter() - t, time.process_time() - c))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--pandas-repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    args = ap.parse_args()
    load0 = f"{os.getloadavg()[0]:.1f}"
    root = Path(tempfile.mkdtemp(prefix="gnomon-bench-contrast-"))
    try:
        t0 = time.perf_counter()
        files = build(root, args.rows)
        size = sum(f.stat().st_size for f in files)
        print(f"store: {args.rows} vectors x {WIDTH} float16 in {len(files)} shards, "
              f"{size / 2**20:.0f} MiB, built in {time.perf_counter() - t0:.1f} s")
        db = StoreDB(root, threads=args.threads)
        kw: dict[str, Any] = {"model": MODEL, "revision": REV, "dataset": DATASET, "layer": LAYER,
                              "position": "last", "positive": "pos", "negative": "neg", "split": None}
        times: dict[str, list[tuple[float, float]]] = {}
        raw = lambda: pq.read_table(files, columns=["act"])
        raw32 = lambda: raw().column("act").combine_chunks().flatten().to_numpy().astype(np.float32)
        for i in range(args.repeat):
            timed(raw, times, "raw f16")
            timed(raw32, times, "raw+f32")
            half = timed(lambda: contrast_set(db, **kw, dtype=None), times, "duckdb f16")
            cs = timed(lambda: contrast_set(db, **kw), times, "duckdb f32")
            if i < args.pandas_repeat:
                pos, neg = timed(lambda: naive_pandas(root), times, "pandas")
        db.close()
        assert cs.paired and np.array_equal(cs.pos, pos) and np.array_equal(cs.neg, neg), "paths disagree"
        assert half.pos.dtype == np.float16 and np.array_equal(half.neg, neg)
        med = {k: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v), len(v))
               for k, v in times.items()}
        print(f"load average before/after: {load0} / {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
        print(f"{'path':18s} {'wall s':>8s} {'cpu s':>8s}   (medians of N; cpu = all threads)")
        notes = {"duckdb f16": f"pos {half.pos.shape} float16, as stored", "duckdb f32": "float32 (the default)",
                 "pandas": "read, filter, merge, loop",
                 "raw f16": "act column only, no selection", "raw+f32": "plus one float32 numpy array"}
        for k in ("duckdb f16", "duckdb f32", "pandas", "raw f16", "raw+f32"):
            w, c, n = med[k]
            print(f"{k:18s} {w:8.3f} {c:8.3f}   N={n}; {notes[k]}")
        rw, rc, _ = med["raw f16"]
        pw, pcpu, _ = med["pandas"]
        for k in ("duckdb f16", "duckdb f32"):
            w, c, _ = med[k]
            print(f"{k:18s} / raw f16 = {w / rw:.2f}x wall ({c / rc:.2f}x cpu); "
                  f"pandas / it = {pw / w:.1f}x wall ({pcpu / c:.1f}x cpu)")
        print(f"contrast_speedup_vs_pandas = {pw / med['duckdb f32'][0]:.1f}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
