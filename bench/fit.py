"""Fitting throughput: local vs Ray fan-out, and gnomon vs repeng / steering-vectors.

On the bundled SmolLM2-135M-Instruct (30 blocks, layers 0..30, hidden 576) and the
shipped ``sentiment`` concept (240 contrast pairs, position ``last``), in one process:

1. **Fit from the store.** Activations are collected first (by part 2's local run; not
   timed here). Then ``run_fit`` with all six methods over every layer (186 groups,
   ``register="none"`` so MLflow is out of the picture; one task per (layer, position),
   which reads its contrast set once and fits all six methods) once with ``LocalExecutor`` and
   once with ``RayExecutor(num_workers=2)``. Ray is started beforehand and its workers
   warmed (imports), both timed and reported apart. The headline ratio is the fan-out
   (``executor.map``) time, local over Ray; ``run_fit``'s total (which also re-checks the
   store, loading the model in the driver and, on Ray, in the collection actors) is shown
   beside it. Local group times are split into the contrast read and the fits, and the
   DuckDB contrast read every group starts with is timed alone.
2. **Side by side, from raw texts.** gnomon ``run_fit`` (collect + fit ``mean_diff`` and
   ``pca``, all layers, fresh store; local and Ray) vs ``repeng.ControlVector.train``
   (``pca_diff``, ``pca_center``) vs ``steering_vectors.train_steering_vector`` (mean and
   PCA aggregators), the baselines on the same model object, the same 240 pairs and all 30
   blocks, batch 32. Then cosines between their directions and gnomon's at a few layers:
   block ``b`` output is gnomon layer ``b + 1``; repeng reads ``hidden_states[b + 1]``,
   which for the last block is taken *after* the final norm (gnomon reads before it).

Run: ``python bench/fit.py`` (about 5 minutes on 2 idle cores). The last line is
``fit_ray_speedup = <x>`` (local fan-out time over Ray fan-out time).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from collect import fresh_home, primed_cache

from jobs.runtime.engine import LocalExecutor
from jobs.runtime.ray_executor import RayExecutor
CHECK_LAYERS = (1, 8, 15, 22, 29, 30)


class _Stamps:
    """``map`` that records when each result came back (sequential locally: the gaps are
    the per-group times)."""

    stamps: list[tuple[float, Any]]

    def map(self, fn: Callable[[Any], Any], items: Sequence[Any],
            on_result: Callable[[Any], None] | None = None, **kw: Any) -> list[Any]:
        self.stamps = [(time.perf_counter(), None)]

        def hook(r: Any) -> None:
            self.stamps.append((time.perf_counter(), r))
            if on_result is not None:
                on_result(r)

        return super().map(fn, items, on_result=hook, **kw)  # type: ignore[misc]


class TimedLocal(_Stamps, LocalExecutor):
    pass


class TimedRay(_Stamps, RayExecutor):  # type: ignore[misc]  # map keeps **kw (num_cpus)
    pass


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load {one:.1f}/{five:.1f}"


def wait_quiet(limit: float | None, max_wait: float = 150.0) -> None:
    """The machine is shared: optionally wait (at most ``max_wait``) for other jobs to calm down."""
    t0 = time.perf_counter()
    while limit is not None and os.getloadavg()[0] > limit and time.perf_counter() - t0 < max_wait:
        time.sleep(5)
    if limit is not None:
        print(f"  (waited {time.perf_counter() - t0:.0f} s for load < {limit}: {load()})", flush=True)


def warm_worker(_: int) -> int:
    """Import what a fit group needs, then linger so each worker takes one."""
    import duckdb  # noqa: F401
    import torch  # noqa: F401

    import pipeline.contrast
    import pipeline.fit  # noqa: F401

    time.sleep(1.0)
    return os.getpid()


def sentiment_pairs() -> list[tuple[str, str]]:
    """(positive, negative) texts of every shipped sentiment pair, in file order."""
    from pipeline.datasets import load_dataset

    t = load_dataset("sentiment").table
    by_pair: dict[str, dict[str, str]] = defaultdict(dict)
    for pair, label, text in zip(t.column("pair").to_pylist(), t.column("label").to_pylist(),
                                 t.column("text").to_pylist()):
        by_pair[pair][label] = text
    return [(d["positive"], d["negative"]) for d in by_pair.values()]


def gnomon_run(executor: Any, home: Path, methods: tuple[str, ...]) -> tuple[float, dict[str, Any]]:
    from jobs.stages.fit_job import FitSpec, run_fit

    spec = FitSpec(model="smollm2", dataset="sentiment", positions=("last",), methods=methods, register="none")
    t0 = time.perf_counter()
    summary = run_fit(spec, executor, home, log=lambda *_: None)
    return time.perf_counter() - t0, summary


def baselines(lm: Any, pairs: list[tuple[str, str]]) -> tuple[dict[str, float], dict[str, dict[int, Any]]]:
    """Seconds and per-block directions of repeng and steering-vectors (30 blocks, batch 32).

    ``train_steering_vector`` is exactly ``extract_activations`` then
    ``aggregate_activations``; both aggregators share one extraction here (as gnomon's two
    methods share one collection), and each is reported as extraction + its aggregation.
    """
    import numpy as np

    np.float_ = np.float64  # type: ignore[attr-defined]  # repeng 0.4 still names it
    from repeng import ControlVector, DatasetEntry
    from steering_vectors import (
        aggregate_activations,
        extract_activations,
        mean_aggregator,
        pca_aggregator,
    )

    blocks = list(range(lm.num_layers))
    entries = [DatasetEntry(positive=p, negative=n) for p, n in pairs]
    secs: dict[str, float] = {}
    dirs: dict[str, dict[int, Any]] = {}
    for method in ("pca_diff", "pca_center"):
        t0 = time.perf_counter()
        cv = ControlVector.train(lm.model, lm.tokenizer, entries, hidden_layers=blocks, batch_size=32, method=method)
        secs[f"repeng {method}"] = time.perf_counter() - t0
        dirs[f"repeng {method}"] = dict(cv.directions)
        print(f"repeng {method}: {secs[f'repeng {method}']:.2f} s ({load()})", flush=True)
    t0 = time.perf_counter()
    pos, neg = extract_activations(lm.model, lm.tokenizer, pairs, layers=blocks, read_token_index=-1, batch_size=32)
    extract = time.perf_counter() - t0
    for name, agg in (("mean", mean_aggregator), ("pca", pca_aggregator)):
        t0 = time.perf_counter()
        acts = aggregate_activations(pos, neg, agg())
        secs[f"steering-vectors {name}"] = extract + time.perf_counter() - t0
        dirs[f"steering-vectors {name}"] = {k: v.float().numpy() for k, v in acts.items()}
    secs["steering-vectors mean+pca"] = (secs["steering-vectors mean"] + secs["steering-vectors pca"] - extract)
    print(f"steering-vectors: extraction {extract:.2f} s, + mean {secs['steering-vectors mean'] - extract:.3f} s, "
          f"+ pca {secs['steering-vectors pca'] - extract:.3f} s ({load()})", flush=True)
    return secs, dirs


def padding(lm: Any, pairs: list[tuple[str, str]], home: Path) -> None:
    """Real vs padded tokens each tool's batching feeds the model (explains forward-time gaps)."""
    from jobs.stages.collect_job import CollectSpec, plan_collection

    def padded(batches: list[list[str]]) -> int:
        return sum(len(b) * max(len(x) for x in lm.tokenizer(b)["input_ids"]) for b in batches)

    flat = [t for p in pairs for t in p]
    real = sum(len(x) for x in lm.tokenizer(flat)["input_ids"])
    repeng = [flat[i:i + 32] for i in range(0, len(flat), 32)]
    sv = [[p[k] for p in pairs[i:i + 32]] for i in range(0, len(pairs), 32) for k in (0, 1)]
    plan = plan_collection(CollectSpec(model="smollm2", dataset="sentiment"), home)
    gn = [[t or "" for t in s.texts[i:i + 32]] for s in plan.shards for i in range(0, len(s.texts), 32)]
    print(f"tokens fed (real {real}): gnomon (length-sorted shards) {padded(gn)}, "
          f"repeng (file order) {padded(repeng)}, steering-vectors (file order, pos/neg apart) {padded(sv)}")


def gnomon_directions(home: Path, layer: int) -> dict[str, Any]:
    """gnomon's fits at ``layer`` on every pair in the store (all splits, like the baselines)
    and on the train split (what ``run_fit`` fitted)."""
    import numpy as np

    from pipeline.contrast import StoreDB, contrast_splits
    from pipeline.fit import FIT_METHODS

    with StoreDB(home, memory_limit="1GB", threads=1) as db:
        sets = contrast_splits(db, model="smollm2", revision="main", dataset="sentiment", layer=layer,
                               position="last", positive="positive", negative="negative")
    pos = np.concatenate([s.pos for s in sets.values()]).astype(np.float64)
    neg = np.concatenate([s.neg for s in sets.values()]).astype(np.float64)
    tr = sets["train"]
    return {"mean_diff": FIT_METHODS["mean_diff"](pos, neg, paired=True).vector,
            "pca": FIT_METHODS["pca"](pos, neg, paired=True).vector,
            "pca centered": FIT_METHODS["pca"](pos, neg, paired=True, center=True).vector,
            "mean_diff train": FIT_METHODS["mean_diff"](tr.pos.astype(np.float64), tr.neg.astype(np.float64),
                                                        paired=True).vector}


def cosines(home: Path, dirs: dict[str, dict[int, Any]]) -> None:
    import numpy as np

    def cos(a: Any, b: Any) -> float:
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))

    rows = (("steering-vectors mean", "mean_diff"), ("steering-vectors mean", "mean_diff train"),
            ("steering-vectors pca", "pca"), ("repeng pca_center", "pca"),
            ("repeng pca_diff", "pca centered"), ("repeng pca_diff", "mean_diff"))
    print("\ncosine with gnomon at layer L (= block L-1 output; repeng's block 29 is post-norm):")
    print(f"{'baseline':<24}{'gnomon':<17}" + "".join(f"{'L' + str(L):>8}" for L in CHECK_LAYERS))
    g = {L: gnomon_directions(home, L) for L in CHECK_LAYERS}
    for base, mine in rows:
        print(f"{base:<24}{mine:<17}" + "".join(f"{cos(dirs[base][L - 1], g[L][mine]):>8.4f}" for L in CHECK_LAYERS))


def fit_breakdown(ex: TimedLocal) -> None:
    """Per (layer, position) group: the one contrast read and the fits of every method on it."""
    groups = [r for _, r in ex.stamps[1:]]
    read = sum(g.read_seconds for g in groups)
    fit = sum(g.fit_seconds for g in groups)
    print(f"local, {len(groups)} groups (one contrast read each, every method fitted on it): "
          f"reads {read:.1f} s, fits {fit:.1f} s ({read / max(read + fit, 1e-9):.0%} reading)")


def contrast_read_cost(home: Path, layers: Sequence[int] = (3, 12, 24)) -> float:
    """Seconds of one group's DuckDB open + contrast read (median over a few layers)."""
    import statistics

    from pipeline.contrast import StoreDB, contrast_splits

    out = []
    for layer in layers:
        t0 = time.perf_counter()
        with StoreDB(home, memory_limit="1GB", threads=1) as db:
            contrast_splits(db, model="smollm2", revision="main", dataset="sentiment", layer=layer,
                            position="last", positive="positive", negative="negative")
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fit-only", action="store_true", help="part 1 only (the store is collected untimed)")
    ap.add_argument("--quiet-load", type=float, default=None,
                    help="before each timed part, wait until the 1-minute load average is below this")
    args = ap.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TQDM_DISABLE", "1")
    import ray
    import torch

    from jobs.runtime.ray_runtime import ensure_ray
    from pipeline.models import load_model

    work = Path(tempfile.mkdtemp(prefix="gnomon-bench-fit-"))
    t_start = time.perf_counter()
    try:
        cache = primed_cache(work)
        lm = load_model("smollm2", home=fresh_home(work, cache, "baseline"))
        from threadpoolctl import threadpool_info

        blas = sorted({f"{i['internal_api']}={i['num_threads']}" for i in threadpool_info()})
        print(f"cpus {os.cpu_count()}, cuda {torch.cuda.is_available()}, torch threads {torch.get_num_threads()}, "
              f"driver thread pools {', '.join(blas)}, "
              f"{load()}; {lm.num_layers} blocks, hidden {lm.hidden_size}", flush=True)
        t0 = time.perf_counter()
        ensure_ray(num_cpus=2, object_store_memory=256 * 2**20)
        t_ray = time.perf_counter() - t0
        t0 = time.perf_counter()
        pids = ray.get([ray.remote(num_cpus=1)(warm_worker).remote(i) for i in range(2)])
        t_warm = time.perf_counter() - t0
        print(f"ray.init(num_cpus=2) {t_ray:.2f} s; warming 2 workers (imports) {t_warm:.2f} s "
              f"({len(set(pids))} distinct pids)", flush=True)

        # part 2 first: its local store is part 1's input
        home_local, home_ray = fresh_home(work, cache, "local"), fresh_home(work, cache, "ray")
        side: dict[str, float] = {}
        if args.fit_only:
            from jobs.stages.collect_job import CollectSpec, run_collection

            run_collection(CollectSpec(model="smollm2", dataset="sentiment", positions=("last",)),
                           LocalExecutor(), home_local)
        else:
            wait_quiet(args.quiet_load)
            side["gnomon local"], sl = gnomon_run(LocalExecutor(), home_local, ("mean_diff", "pca"))
            print(f"gnomon local collect+fit: {side['gnomon local']:.2f} s {sl['seconds']} ({load()})", flush=True)
            wait_quiet(args.quiet_load)
            side["gnomon ray"], sr = gnomon_run(RayExecutor(num_workers=2), home_ray, ("mean_diff", "pca"))
            print(f"gnomon ray   collect+fit: {side['gnomon ray']:.2f} s {sr['seconds']} ({load()})", flush=True)
        if not args.fit_only:
            wait_quiet(args.quiet_load)
            secs, dirs = baselines(lm, sentiment_pairs())
            side.update(secs)
            padding(lm, sentiment_pairs(), home_local)
            cosines(home_local, dirs)
            print("\nside by side (240 pairs, 30 blocks; gnomon: 31 layers, mean_diff + pca, one collection):")
            for name in ("gnomon local", "gnomon ray"):
                print("  " + name + ": " + ", ".join(
                    f"/ {k} = {side[name] / v:.2f}" for k, v in side.items() if not k.startswith("gnomon")))
            both = side["repeng pca_diff"] + side["repeng pca_center"]
            print(f"  gnomon local / (repeng pca_diff + pca_center, two passes) = {side['gnomon local'] / both:.2f}; "
                  f"gnomon ray / same = {side['gnomon ray'] / both:.2f}")

        # part 1: all six methods over every layer, from the store
        from pipeline.methods import method_names

        METHODS = method_names()

        print(f"\nfit from the store: {len(METHODS)} methods x {lm.num_layers + 1} layers, position last", flush=True)
        read_s = contrast_read_cost(home_local)
        loc, ray_ex = TimedLocal(), TimedRay(num_workers=2)
        wait_quiet(args.quiet_load)
        c0 = time.process_time()
        wl, fl = gnomon_run(loc, home_local, METHODS)
        cpu = time.process_time() - c0
        print(f"local: fan-out {fl['seconds']['fit']:.2f} s, run_fit total {wl:.2f} s {fl['seconds']}, "
              f"driver CPU {cpu:.1f} s ({load()})",
              flush=True)
        fit_breakdown(loc)
        wait_quiet(args.quiet_load)
        wr, fr = gnomon_run(ray_ex, home_local, METHODS)
        print(f"ray:   fan-out {fr['seconds']['fit']:.2f} s, run_fit total {wr:.2f} s {fr['seconds']} ({load()})",
              flush=True)
        reads = fl["groups"] // len(METHODS)  # one read per (layer, position), shared by every method
        print(f"DuckDB open + contrast read per group: {read_s:.3f} s -> {read_s * reads:.1f} s of "
              f"{fl['seconds']['fit']:.1f} s local ({read_s * reads / fl['seconds']['fit']:.0%}); "
              f"each layer is read once for all {len(METHODS)} methods (was once per method: "
              f"{read_s * fl['groups']:.1f} s of reads)")
        print(f"failed groups: local {fl['failed_groups']}, ray {len(fr['failed_groups'])}; "
              f"best layers agree: {[b['layer'] for b in fl['best']] == [b['layer'] for b in fr['best']]}")
        print(f"total bench wall {time.perf_counter() - t_start:.0f} s; {load()}")
        print(f"fit_ray_total_ratio = {wl / wr:.3f}")
        print(f"fit_ray_speedup = {fl['seconds']['fit'] / fr['seconds']['fit']:.3f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
