"""Scheduling overhead of gnomon's own machinery, with the model work made negligible.

What the fleet estimate in ``infra/SCALE.md`` needs to know is what each unit of work
costs *besides* the forward pass: dispatching a shard to a worker, writing its Parquet file
and manifest, scheduling a fit task, registering a direction, and querying a store made of
many small files. This bench runs the real code paths on a trivial model
(``tiny:llama:1x8``: one block of width 8, one-word texts), one example per shard so every
shard is pure overhead:

- ``collect``: ``plan_collection`` + the executor's ``map_stateful`` (collection's per-shard function) over ``--shards``
  shards (local, then a local Ray with ``--ray-workers`` actors). Per shard:
  ``in-shard`` = time inside ``run_shard`` (forward + Parquet + manifest + sha256),
  ``overhead`` = worker-slot time not spent inside a shard,
  ``(wall - start-up) * workers - sum(in-shard)) / shards``, where start-up (Ray: actors
  loading the model) is the time to the first result less that shard's own time.
- ``tasks``: ``executor.map`` of a no-op over ``--tasks`` items (the fit fan-out's
  scheduling floor), per task.
- ``register``: ``Catalog.register`` of ``--registrations`` width-8 directions into a fresh
  MLflow SQLite catalog (``--tracking-uri`` for a server), per registration, then the cost
  of listing them.
- ``duckdb``: ``count(*)`` and one contrast-shaped query over the ``--shards`` files the
  collection wrote (one file per shard and layer), the store read path at that file count.

Run: ``python bench/scheduler.py [--shards 2000] [--tasks 2000] [--registrations 200]
[--executors local,ray]`` on a quiet machine. Prints the load average, one line per
measurement, and last ``scheduler_overhead_ms_per_shard = <ray, else local>``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
MODEL = "tiny:llama:1x8"


def _noop(x: int) -> int:
    return x


def _dataset(path: Path, n: int) -> Path:
    rows = [{"id": f"e{i:06d}", "text": f"w{i % 97}", "label": "a" if i % 2 else "b", "pair": f"p{i // 2}"}
            for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def bench_collect(executor: Any, dataset: Path, home: Path, workers: int) -> dict[str, float]:
    from jobs.stages.collect_job import (IN_FLIGHT, CollectSpec, collect_shard, load_for_spec, model_pool,
                                  plan_collection)

    spec = CollectSpec(model=MODEL, dataset=str(dataset), layers=(1,), positions=("last",), shard_size=1,
                       batch_size=1, dtype="float32")
    load_for_spec(spec, home)  # converted and cached once, as the collection job does in the driver
    plan = plan_collection(spec, home)
    first: list[float] = []
    key, init = model_pool(spec.model, str(home))
    t0 = time.perf_counter()
    results = executor.map_stateful(init, collect_shard, [(spec, plan.dataset_name, t) for t in plan.shards],
                                    key=key, concurrency=IN_FLIGHT,
                                    on_result=lambda r: first.append(time.perf_counter() - r.seconds) if not first
                                    else None)
    wall = time.perf_counter() - t0
    n = len(results)
    inside = sum(r.seconds for r in results)
    startup = max(0.0, (first[0] - t0) if first else 0.0)
    overhead = ((wall - startup) * workers - inside) / n
    return {"shards": n, "wall_s": wall, "startup_s": startup, "in_shard_ms": 1e3 * inside / n,
            "overhead_ms": 1e3 * overhead, "files": sum(r.written_layers for r in results)}


def bench_tasks(executor: Any, n: int) -> dict[str, float]:
    executor.map(_noop, list(range(min(n, 8))))  # warm the worker pool
    t0 = time.perf_counter()
    out = executor.map(_noop, list(range(n)))
    wall = time.perf_counter() - t0
    assert out == list(range(n))
    return {"tasks": n, "wall_s": wall, "per_task_ms": 1e3 * wall / n}


def bench_register(home: Path, n: int, tracking_uri: str | None) -> dict[str, float]:
    import torch

    from catalog import Catalog
    from pipeline.direction import Direction, Provenance

    cat = Catalog(tracking_uri=tracking_uri, home=home)
    cat.concepts()  # create/migrate the database outside the timing
    t0 = time.perf_counter()
    for i in range(n):
        prov = Provenance(model_id=f"bench-model-{i % 10}", revision="main", fingerprint=f"{i:016x}",
                          hidden_size=8, layer=i % 30, concept="bench", positive="a", negative="b",
                          method="mean_diff", dataset="bench", dataset_hash="0" * 16, split_sizes={"train": 1})
        d = Direction(vector=torch.randn(8, generator=torch.Generator().manual_seed(i)), provenance=prov,
                      pos_mean=1.0, neg_mean=-1.0, spread=0.5, resid_norm=1.0, metrics={"val_auroc": 0.5})
        cat.register(d, set_best=False)
    wall = time.perf_counter() - t0
    t1 = time.perf_counter()
    listed = len(cat.versions("bench"))
    t_list = time.perf_counter() - t1
    return {"registrations": n, "per_registration_ms": 1e3 * wall / n, "list_all_s": t_list, "listed": listed}


def bench_duckdb(home: Path) -> dict[str, float]:
    from pipeline.contrast import StoreDB

    t0 = time.perf_counter()
    with StoreDB(home, memory_limit="1GB", threads=1) as db:
        t_open = time.perf_counter() - t0
        t1 = time.perf_counter()
        row = db.con.execute("SELECT count(*) FROM activations").fetchone()
        n = int(row[0]) if row else 0
        t_count = time.perf_counter() - t1
        t2 = time.perf_counter()
        db.con.execute("SELECT e.label, count(*), avg(list_avg(a.act)) FROM activations a JOIN examples e "
                       "ON e.id = a.example_id AND e.dataset = a.dataset WHERE a.layer = 1 AND a.position = 'last' GROUP BY 1").fetchall()
        t_join = time.perf_counter() - t2
    files = sum(1 for _ in (home / "activations").rglob("*.parquet"))
    return {"files": files, "rows": n, "open_s": t_open, "count_s": t_count, "contrast_s": t_join}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shards", type=int, default=2000)
    ap.add_argument("--tasks", type=int, default=2000)
    ap.add_argument("--registrations", type=int, default=200)
    ap.add_argument("--executors", default="local,ray")
    ap.add_argument("--ray-workers", type=int, default=2)
    ap.add_argument("--tracking-uri", default=None, help="MLflow server for the registration bench "
                    "(default: a fresh SQLite catalog)")
    ap.add_argument("--keep", action="store_true", help="keep the scratch homes")
    args = ap.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    torch.set_num_threads(1)
    from jobs.runtime.engine import make_executor
    scratch = Path(tempfile.mkdtemp(prefix="gnomon-bench-sched-"))
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs; model {MODEL}; "
          f"{args.shards} shards of 1 example, 1 layer")
    dataset = _dataset(scratch / "bench.jsonl", args.shards)
    per_shard: dict[str, float] = {}
    try:
        for kind in [k.strip() for k in args.executors.split(",") if k.strip()]:
            home = scratch / f"home-{kind}"
            if kind == "ray":
                from jobs.runtime.ray_runtime import ensure_ray

                ensure_ray(num_cpus=args.ray_workers, object_store_memory=256 * 1024 * 1024)
                executor = make_executor("ray", num_workers=args.ray_workers)
                workers = args.ray_workers
            else:
                executor, workers = make_executor("local"), 1
            c = bench_collect(executor, dataset, home, workers)
            per_shard[kind] = c["overhead_ms"]
            print(f"collect  {kind:<5} {c['shards']} shards on {workers} worker(s): wall {c['wall_s']:.1f} s, "
                  f"start-up {c['startup_s']:.1f} s, in-shard {c['in_shard_ms']:.1f} ms/shard, "
                  f"overhead {c['overhead_ms']:.1f} ms/shard, {c['files']} files")
            t = bench_tasks(executor, args.tasks)
            print(f"tasks    {kind:<5} {t['tasks']} no-op tasks: {t['per_task_ms']:.2f} ms/task")
            d = bench_duckdb(home)
            print(f"duckdb   {kind:<5} {d['files']} files / {d['rows']} rows: open {d['open_s']:.2f} s, "
                  f"count {d['count_s']:.2f} s, contrast join {d['contrast_s']:.2f} s")
        r = bench_register(scratch / "home-catalog", args.registrations, args.tracking_uri)
        print(f"register {r['registrations']} directions: {r['per_registration_ms']:.1f} ms/registration; "
              f"listing {r['listed']} versions {r['list_all_s']:.2f} s")
        print(f"load average after {os.getloadavg()[0]:.2f}")
        key = "ray" if "ray" in per_shard else next(iter(per_shard), None)
        print(f"scheduler_overhead_ms_per_shard = {per_shard[key]:.2f}" if key else "scheduler_overhead_ms_per_shard = nan")
    finally:
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
