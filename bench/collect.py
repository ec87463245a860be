"""Collection throughput: ``gnomon collect`` vs a bare transformers forward pass.

On the bundled SmolLM2-135M-Instruct, over the texts of shipped concepts (default
``sentiment`` + ``truth``, 960 sentences, written to one JSONL file), measured side by
side and interleaved (the machine is shared), one warm-up round then ``--repeat`` rounds,
medians reported:

- ``bare``: the model already loaded in this process (not timed), then for each batch of
  32 texts in file order: tokenize (``padding=True``, the tokenizer's default right
  padding), forward with ``output_hidden_states=True`` under ``torch.no_grad``. Nothing is
  kept or written: the floor a user's own loop pays.
- ``gnomon-ray`` / ``gnomon-local``: ``gnomon collect --model smollm2 --dataset <file>
  --json [--executor local]`` as a subprocess, all layers (0..30), ``last`` + ``mean``,
  float16 Parquet with manifests and sha256, each run in a fresh ``GNOMON_HOME`` whose
  ``models/gguf-cache`` is a link to an already converted cache (the one-off GGUF
  dequantisation is not timed; process start-up, imports, model load, Ray start-up and the
  writes are).
- ``ray-steady``: the same Ray collection in a child process with per-shard timings, so
  the fixed start-up cost can be told apart from the steady state.

Run: ``python bench/collect.py [--concepts sentiment,truth] [--repeat 3]``. The last line
is ``collect_ratio = <x>`` (gnomon on Ray, the CLI default, over bare; < 1 is faster).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def write_dataset(concepts: list[str], out: Path, limit: int | None) -> tuple[Path, list[str]]:
    from pipeline.concepts import DATA_DIR

    rows: list[str] = []
    for c in concepts:
        rows += [line for line in (DATA_DIR / f"{c}.jsonl").read_text().splitlines() if line.strip()]
    rows = rows[:limit] if limit else rows
    path = out / "bench_collect.jsonl"
    path.write_text("\n".join(rows) + "\n")
    return path, [json.loads(r)["text"] for r in rows]


def primed_cache(work: Path) -> Path:
    """The converted-weights cache of the bundled model (converting it once if needed)."""
    from pipeline.home import gnomon_home
    from pipeline.models.loading import _gguf_cache_dir, bundled_gguf

    gguf = bundled_gguf()
    for home in (gnomon_home(), work / "primed"):
        cache = _gguf_cache_dir(gguf, home)
        if (cache / "config.json").is_file() and (cache / "gnomon-fingerprint.json").is_file():
            return cache
    from pipeline.models import load_model

    load_model("smollm2", home=work / "primed")
    return _gguf_cache_dir(gguf, work / "primed")


def fresh_home(work: Path, cache: Path, tag: str) -> Path:
    home = work / f"home-{tag}"
    shutil.rmtree(home, ignore_errors=True)
    (home / "models").mkdir(parents=True)
    (home / "models" / "gguf-cache").symlink_to(cache.parent, target_is_directory=True)
    return home


def run_cli(dataset: Path, home: Path, executor: str) -> tuple[float, dict[str, Any]]:
    cmd = ["gnomon", "collect", "--model", "smollm2", "--dataset", str(dataset), "--json", "--executor", executor]
    env = {**os.environ, "GNOMON_HOME": str(home)}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT, check=False)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return wall, json.loads(proc.stdout[proc.stdout.index("{"):])


def load_bare(cache: Path) -> tuple[Any, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(cache, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(cache)


def run_bare(model: Any, tok: Any, texts: list[str], batch_size: int = 32) -> tuple[float, int, int]:
    """Seconds, real tokens, padded tokens."""
    import torch

    real = padded = 0
    t0 = time.perf_counter()
    with torch.no_grad():
        for i in range(0, len(texts), batch_size):
            enc = tok(texts[i:i + batch_size], return_tensors="pt", padding=True)
            out = model(**enc, output_hidden_states=True)
            assert len(out.hidden_states) == model.config.num_hidden_layers + 1
            real += int(enc["attention_mask"].sum())
            padded += enc["attention_mask"].numel()
    return time.perf_counter() - t0, real, padded


def ray_steady(dataset: str, home: str) -> None:
    """Child-process mode: one Ray collection with per-shard timings, printed as JSON."""
    t0 = time.perf_counter()
    from jobs.collect_job import CollectSpec, run_collection
    from jobs.executors import RayExecutor
    from jobs.ray_runtime import ensure_ray

    t_imp = time.perf_counter()
    ensure_ray()
    t_ray = time.perf_counter()
    shards: list[dict[str, float]] = []
    starts: list[float] = []
    summary = run_collection(CollectSpec(model="smollm2", dataset=dataset), RayExecutor(), home,
                             on_shard=lambda r: shards.append({"examples": r.examples, "tokens": r.tokens,
                                                               "seconds": r.seconds}),
                             on_start=lambda actors: starts.append(time.perf_counter()))
    t_end = time.perf_counter()
    import ray

    actors = min(int(ray.cluster_resources().get("CPU", 1)), len(shards))
    print(json.dumps({"imports_s": t_imp - t0, "ray_init_s": t_ray - t_imp,
                      "preflight_plan_s": starts[0] - t_ray, "pool_s": t_end - starts[0],
                      "total_s": t_end - t0, "summary_s": summary["seconds"], "actors": actors,
                      "shards": shards}))


def ray_child(dataset: Path, home: Path) -> dict[str, Any]:
    env = {**os.environ, "GNOMON_HOME": str(home)}
    proc = subprocess.run([sys.executable, __file__, "--_ray-steady", str(dataset), str(home)],
                          env=env, capture_output=True, text=True, cwd=ROOT, check=False)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--concepts", default="sentiment,truth")
    ap.add_argument("--limit", type=int, default=None, help="use only the first N rows")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-steady", action="store_true", help="skip the per-shard Ray run")
    ap.add_argument("--_ray-steady", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._ray_steady:
        ray_steady(*args._ray_steady)
        return
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    work = Path(tempfile.mkdtemp(prefix="gnomon-bench-collect-"))
    try:
        dataset, texts = write_dataset(args.concepts.split(","), work, args.limit)
        cache = primed_cache(work)
        model, tok = load_bare(cache)
        print(f"{len(texts)} texts ({args.concepts}); torch threads {torch.get_num_threads()}, "
              f"cpus {os.cpu_count()}, cuda {torch.cuda.is_available()}; cache {cache}", flush=True)
        times: dict[str, list[float]] = {"bare": [], "ray": [], "local": []}
        info: dict[str, Any] = {}
        steady: list[dict[str, Any]] = []
        for r in range(args.repeat + 1):  # round 0 is the warm-up
            tb, real, padded = run_bare(model, tok, texts)
            tr, sr = run_cli(dataset, fresh_home(work, cache, "ray"), "ray")
            tl, sl = run_cli(dataset, fresh_home(work, cache, "local"), "local")
            st = None if args.no_steady else ray_child(dataset, fresh_home(work, cache, "steady"))
            tag = ("warm-up" if r == 0 else f"round {r}") + f" (load avg {os.getloadavg()[0]:.1f})"
            print(f"{tag}: bare {tb:.2f} s, gnomon ray {tr:.2f} s (inside {sr['seconds']:.2f}), "
                  f"gnomon local {tl:.2f} s (inside {sl['seconds']:.2f})"
                  + (f", ray child pool {st['pool_s']:.2f} s" if st else ""), flush=True)
            if r == 0:
                continue
            times["bare"].append(tb)
            times["ray"].append(tr)
            times["local"].append(tl)
            if st:
                steady.append(st)
            info = {"real": real, "padded": padded, "rows": sr["rows"], "bytes": sr["bytes"],
                    "files": sr["written_files"], "tokens_gnomon": sr["tokens"], "examples": sr["examples"],
                    "inside_ray": info.get("inside_ray", []) + [sr["seconds"]],
                    "inside_local": info.get("inside_local", []) + [sl["seconds"]]}
        report(texts, times, info, steady)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def report(texts: list[str], times: dict[str, list[float]], info: dict[str, Any],
           steady: list[dict[str, Any]]) -> None:
    med = {k: statistics.median(v) for k, v in times.items()}
    n = len(texts)
    print(f"\nmedians over {len(times['bare'])} rounds, {n} texts, {info['real']} real tokens "
          f"(bare pads to {info['padded']}; gnomon counts {info['tokens_gnomon']}):")
    print(f"{'path':<14}{'seconds':>9}{'ex/s':>9}{'tok/s':>9}{'ratio':>8}")
    for k, label in (("bare", "bare"), ("ray", "gnomon-ray"), ("local", "gnomon-local")):
        print(f"{label:<14}{med[k]:>9.2f}{n / med[k]:>9.1f}{info['real'] / med[k]:>9.0f}{med[k] / med['bare']:>8.2f}")
    print(f"inside run_collection (median): ray {statistics.median(info['inside_ray']):.2f} s, "
          f"local {statistics.median(info['inside_local']):.2f} s; wrote {info['files']} files, "
          f"{info['rows']} rows, {info['bytes'] / 2**20:.1f} MiB")
    if steady:
        keys = ("imports_s", "ray_init_s", "preflight_plan_s", "pool_s", "total_s")
        m = {k: statistics.median(s[k] for s in steady) for k in keys}
        per = [sh for s in steady for sh in s["shards"]]
        cpus = steady[0]["actors"]
        actor_s = statistics.median(sum(sh["seconds"] for sh in s["shards"]) for s in steady)
        print("ray child (median): " + ", ".join(f"{k} {v:.2f}" for k, v in m.items()))
        print(f"ray per-shard: {len(per) // len(steady)} shards of <=128, median {statistics.median(sh['seconds'] for sh in per):.2f} s "
              f"per shard on one actor (1 thread); sum over shards {actor_s:.2f} actor-s on {cpus} actors "
              f"-> steady state {actor_s / cpus:.2f} s wall, ratio {actor_s / cpus / med['bare']:.2f} vs bare")
        print(f"ray fixed cost outside the pool: {m['total_s'] - m['pool_s']:.2f} s; "
              f"pool (actor start + model load + shards) {m['pool_s']:.2f} s")
    print(f"collect_ratio_local = {med['local'] / med['bare']:.3f}")
    print(f"collect_ratio = {med['ray'] / med['bare']:.3f}")


if __name__ == "__main__":
    main()
