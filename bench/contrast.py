"""Contrast-set assembly: the DuckDB path vs a naive pandas loop vs a raw pyarrow read.

Builds a synthetic store (200,000 float16 vectors of width 576, 20 shards of one layer,
a paired dataset), then times, interleaved and best of N (the machine is shared):

- ``duckdb``: ``pipeline.contrast.contrast_set`` (paired, all splits), float32 out;
- ``pandas``: ``pd.read_parquet`` of the layer and the examples, then a Python loop
  that builds the pos/neg lists row by row and stacks them in pair order;
- ``raw``: ``pq.read_table`` of the ``act`` column of the same files (bytes only,
  float16, no selection): the floor any path pays; ``raw+f32`` adds the conversion to
  one float32 numpy array, which the contrast set also delivers.

Run: ``python bench/contrast.py [--rows 200000] [--repeat 5]``. The last line is
``contrast_speedup_vs_pandas = <x>``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

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
    import pandas as pd

    layer_dir = ActivationStore(root).shard_path(MODEL, REV, DATASET, LAYER, 0).parent
    acts = pd.read_parquet(layer_dir)
    ex = pd.read_parquet(ActivationStore(root).examples_path(DATASET))
    meta = {r.id: (r.label, r.pair) for r in ex.itertuples()}
    by_pair: dict[str, dict[str, np.ndarray]] = {}
    for eid, pos, act in zip(acts["example_id"], acts["position"], acts["act"]):
        if pos != "last" or eid not in meta:
            continue
        label, pair = meta[eid]
        if label in ("pos", "neg"):
            by_pair.setdefault(pair, {})[label] = np.asarray(act, dtype=np.float32)
    pos_list, neg_list = [], []
    for pair in sorted(by_pair):
        if len(by_pair[pair]) == 2:
            pos_list.append(by_pair[pair]["pos"])
            neg_list.append(by_pair[pair]["neg"])
    return np.stack(pos_list), np.stack(neg_list)


def best(fn: Callable[[], object], times: list[tuple[float, float]]) -> object:
    """Run ``fn`` once, appending (wall seconds, CPU seconds of all this process's threads)."""
    t, c = time.perf_counter(), time.process_time()
    out = fn()
    times.append((time.perf_counter() - t, time.process_time() - c))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--pandas-repeat", type=int, default=2)
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
        kw = dict(model=MODEL, revision=REV, dataset=DATASET, layer=LAYER, position="last",
                  positive="pos", negative="neg", split=None)
        t_db: list[tuple[float, float]] = []
        t_raw: list[tuple[float, float]] = []
        t_raw32: list[tuple[float, float]] = []
        t_pd: list[tuple[float, float]] = []
        for i in range(args.repeat):
            cs = best(lambda: contrast_set(db, **kw), t_db)
            best(lambda: pq.read_table(files, columns=["act"]), t_raw)
            best(lambda: pq.read_table(files, columns=["act"]).column("act").combine_chunks()
                 .flatten().to_numpy().astype(np.float32), t_raw32)
            if i < args.pandas_repeat:
                pos, neg = best(lambda: naive_pandas(root), t_pd)
        db.close()
        assert cs.paired and np.array_equal(cs.pos, pos) and np.array_equal(cs.neg, neg), "paths disagree"
        (d, dc), (p, pc_), (r, rc), (r32, r32c) = (min(t) for t in (t_db, t_pd, t_raw, t_raw32))
        print(f"load average before/after: {load0} / {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
        print(f"{'path':22s} {'wall s':>8s} {'cpu s':>8s}   (best wall of N; cpu = all threads)")
        print(f"{'duckdb contrast_set':22s} {d:8.3f} {dc:8.3f}   N={len(t_db)}; pos {cs.pos.shape}, neg {cs.neg.shape}")
        print(f"{'pandas + python loop':22s} {p:8.3f} {pc_:8.3f}   N={len(t_pd)}")
        print(f"{'pyarrow raw read':22s} {r:8.3f} {rc:8.3f}   act column only, float16")
        print(f"{'pyarrow raw + f32':22s} {r32:8.3f} {r32c:8.3f}   plus one float32 numpy array")
        print(f"duckdb / raw = {d / r:.2f}x wall ({dc / rc:.2f}x cpu); "
              f"duckdb / (raw+f32) = {d / r32:.2f}x wall ({dc / r32c:.2f}x cpu)")
        print(f"pandas / duckdb = {p / d:.1f}x wall, {pc_ / dc:.1f}x cpu")
        print(f"contrast_speedup_vs_pandas = {p / d:.1f}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
