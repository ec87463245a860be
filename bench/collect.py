"""Collection throughput: the default ``gnomon collect`` path vs a bare forward loop, and
both against the machine's FLOP ceiling, measured in the same run.

Run it alone on a quiet machine (it prints the load average; figures taken under load say
nothing): ``python bench/collect.py`` (about 30-60 min on 2 cores with the defaults), or
``--sizes 480 --kinds short --repeat 1`` for a quick look. Last line: ``collect_ratio = X``,
the default path's wall time over the bare loop's, the worst over the workloads (< 1 is
faster; the target is <= 0.67).

Workloads (``--sizes`` x ``--kinds``): ``short`` texts are the shipped concepts' sentences
(~10 tokens; 480 = sentiment, larger sizes take the other concepts' rows in turn); ``long``
texts join consecutive sentences until each has about 200 tokens. Each workload is one
JSONL file.

Paths, timed side by side and interleaved, medians over ``--repeat`` rounds after one
warm-up round:

- ``bare``: the model already loaded in this process (not timed); for each batch of 32
  texts in file order: tokenize (``padding=True``), forward with
  ``output_hidden_states=True`` under ``torch.no_grad``. Nothing is kept or written: what a
  user's own loop pays.
- ``default``: ``gnomon collect --model smollm2 --dataset <file> --json`` as a subprocess
  (the CLI defaults: executor ``auto``, all layers, ``last`` + ``mean``, float16 Parquet with
  manifests and sha256), each run in a fresh ``GNOMON_HOME`` whose ``models/gguf-cache``
  links to an already converted cache (the one-off GGUF conversion is not timed; process
  start-up, imports, model load, executor start and the writes are).
- ``--paths default,ray,local`` adds the forced executors.
- ``--floor`` adds the least work any collection of these rows must do, as a lower bound
  on every implementation: in this process (like ``bare``: imports and model load not
  timed), the texts tokenised and cut into the default path's length-sorted token-budget
  batches, and only the model body's forward under ``torch.inference_mode`` (all blocks, no
  LM head; nothing recorded, pooled or written). ``floor+torch`` adds the wall time of
  ``python -c "import torch"`` measured in the same round: the least a *command* pays, even
  one that skipped transformers. If ``floor / bare`` is above the target, no collection
  path computing this forward on this machine can meet it.

The FLOP ceiling: the best of several float32 ``torch.mm`` runs (2048 x 2048, all of
torch's threads) gives the machine's peak FLOP/s; a forward pass costs about
``2 x non-embedding parameters`` FLOP per token (plus attention's ``4 x layers x context x
width``, counted at the workload's mean length), so ``peak / cost`` is the tokens/s no
implementation can beat on this CPU. Each path's real tokens/s is printed as a fraction of
it, end to end and, for gnomon, inside the executor (``collect_seconds``: model load,
forwards, writes; no process start, imports or planning).

``--profile`` (instead of the timing rounds) breaks one in-process collection down by
component, in process CPU seconds (``time.process_time``: torch's worker threads included,
and disturbed by load far less than wall time) and as shares of the run's CPU: model load,
tokenisation, padding, forward (the record hooks' own time shown apart, inside it), mean
pooling on the device, the rest of ``collect`` (last-token rows, device-to-host copies),
float16 conversion + table building, Parquet writes, sha256 (of new files and of the
completeness checks), fsync. Shards run one at a time there (no write overlap) so the CPU
deltas do not mix. With ``--paths ray`` it also times the Ray start and the first shard's
return (actor start + model load + one shard; the actors' CPU is in other processes).
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
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
LONG_TOKENS = 200


# ----------------------------------------------------------------------------- workloads
def concept_rows() -> list[dict[str, Any]]:
    from pipeline.concepts import CONCEPTS, DATA_DIR

    order = ["sentiment"] + sorted(c for c in CONCEPTS if c != "sentiment")
    rows: list[dict[str, Any]] = []
    for c in order:
        f = DATA_DIR / f"{c}.jsonl"
        if f.is_file():
            rows += [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
    return [r for r in rows if r.get("text")]


def workload(kind: str, size: int, tok: Any, out: Path) -> tuple[Path, list[str]]:
    """One JSONL dataset of ``size`` texts, short sentences or ~200-token paragraphs."""
    rows = concept_rows()
    texts: list[str] = []
    if kind == "short":
        texts = [rows[i % len(rows)]["text"] for i in range(size)]
    else:
        k = 0
        while len(texts) < size:
            parts: list[str] = []
            while len(tok(" ".join(parts))["input_ids"]) < LONG_TOKENS:
                parts.append(rows[k % len(rows)]["text"])
                k += 1
            texts.append(" ".join(parts))
    path = out / f"{kind}-{size}.jsonl"
    path.write_text("".join(json.dumps({"id": f"{kind}-{i:05d}", "text": t, "label": "ab"[i % 2]}) + "\n"
                            for i, t in enumerate(texts)))
    return path, texts


# ------------------------------------------------------------------------ model + ceiling
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


def load_bare(cache: Path) -> tuple[Any, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(cache, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(cache)


def matmul_peak(sizes: tuple[int, ...] = (1024, 2048, 4096), seconds: float = 2.0) -> tuple[float, int]:
    """Best float32 matmul FLOP/s over repeated ``n x n`` products of each size (all torch
    threads), and the size that reached it: the machine's peak, as fair a ceiling as we can
    measure (large products reach more of it than the model's small ones)."""
    import torch

    best, best_n = 0.0, sizes[0]
    for n in sizes:
        a, b = torch.randn(n, n), torch.randn(n, n)
        torch.mm(a, b)  # warm-up
        t_end = time.perf_counter() + seconds
        while time.perf_counter() < t_end:
            t0 = time.perf_counter()
            torch.mm(a, b)
            flops = 2 * n**3 / (time.perf_counter() - t0)
            if flops > best:
                best, best_n = flops, n
    return best, best_n


def flop_per_token(model: Any, mean_len: float) -> tuple[float, int]:
    """(FLOP per token of a forward pass, non-embedding parameters)."""
    cfg = model.config
    emb = {id(p) for m in (model.get_input_embeddings(), model.get_output_embeddings()) if m is not None
           for p in m.parameters()}
    non_emb = sum(p.numel() for p in model.parameters() if id(p) not in emb)
    attn = 4 * cfg.num_hidden_layers * mean_len * cfg.hidden_size
    return 2 * non_emb + attn, non_emb


# ----------------------------------------------------------------------------- the paths
def run_bare(model: Any, tok: Any, texts: list[str], batch_size: int = 32) -> tuple[float, int]:
    """Seconds and real tokens of the plain ``output_hidden_states`` loop."""
    import torch

    real = 0
    t0 = time.perf_counter()
    with torch.no_grad():
        for i in range(0, len(texts), batch_size):
            enc = tok(texts[i:i + batch_size], return_tensors="pt", padding=True)
            out = model(**enc, output_hidden_states=True)
            assert len(out.hidden_states) == model.config.num_hidden_layers + 1
            real += int(enc["attention_mask"].sum())
    return time.perf_counter() - t0, real


def run_floor(model: Any, tok: Any, texts: list[str]) -> float:
    """Seconds of the floor path (see the module docstring): the default path's batches
    through the model body alone, nothing kept."""
    import torch

    from jobs.stages.collect_job import CollectSpec
    from pipeline.collect import _pad_left, default_token_budget, length_batches

    body = model.get_decoder() if hasattr(model, "get_decoder") else model.base_model
    budget = default_token_budget(next(body.parameters()).device)   # the default path's batches
    t0 = time.perf_counter()
    enc = tok(texts, truncation=True, max_length=CollectSpec.max_length, return_special_tokens_mask=True)
    ids, special = enc["input_ids"], enc["special_tokens_mask"]
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    with torch.inference_mode():
        for batch in length_batches([len(x) for x in ids], CollectSpec.batch_size, budget):
            input_ids, attn, _ = _pad_left([ids[i] for i in batch], [special[i] for i in batch], pad)
            body(input_ids=input_ids, attention_mask=attn, position_ids=(attn.cumsum(-1) - 1).clamp(min=0),
                 use_cache=False)
    return time.perf_counter() - t0


def torch_import_seconds() -> float:
    """Wall seconds of ``python -c "import torch"``: the least any command using torch pays."""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import torch"], check=True, capture_output=True)
    return time.perf_counter() - t0


BARE_SCRIPT = """
import json, sys, time
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
cache, path = sys.argv[1], sys.argv[2]
model = AutoModelForCausalLM.from_pretrained(cache, dtype=torch.float32).eval()
tok = AutoTokenizer.from_pretrained(cache)
texts = [json.loads(line)["text"] for line in open(path)]
with torch.no_grad():
    for i in range(0, len(texts), 32):
        enc = tok(texts[i:i + 32], return_tensors="pt", padding=True)
        model(**enc, output_hidden_states=True)
"""


def run_bare_process(cache: Path, dataset: Path) -> float:
    """Wall seconds of the bare loop as a user's script pays it: a fresh interpreter that
    imports torch and transformers, loads the model from the same converted weights and runs
    the loop (what ``gnomon collect`` as a command is compared with on equal terms)."""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", BARE_SCRIPT, str(cache), str(dataset)], check=True,
                   capture_output=True, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    return time.perf_counter() - t0


def fresh_home(work: Path, cache: Path, tag: str) -> Path:
    home = work / f"home-{tag}"
    shutil.rmtree(home, ignore_errors=True)
    (home / "models").mkdir(parents=True)
    (home / "models" / "gguf-cache").symlink_to(cache.parent, target_is_directory=True)
    return home


def run_cli(dataset: Path, home: Path, executor: str | None) -> tuple[float, dict[str, Any]]:
    cmd = [sys.executable, "-m", "jobs.cli", "collect", "--model", "smollm2", "--dataset", str(dataset), "--json"]
    cmd += ["--executor", executor] if executor else []
    env = {**os.environ, "GNOMON_HOME": str(home), "PYTHONPATH": str(ROOT)}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT, check=False)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return wall, json.loads(proc.stdout[proc.stdout.index("{"):])


# ------------------------------------------------------------------------------ profile
class Meter:
    """Process CPU seconds, wall seconds and calls per component, from wrapped functions."""

    def __init__(self) -> None:
        self.cpu: dict[str, float] = defaultdict(float)
        self.wall: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.lock = threading.Lock()

    def wrap(self, owner: Any, attr: str, label: str) -> None:
        fn = getattr(owner, attr)

        def timed(*a: Any, **kw: Any) -> Any:
            c0, w0 = time.process_time(), time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                with self.lock:
                    self.cpu[label] += time.process_time() - c0
                    self.wall[label] += time.perf_counter() - w0
                    self.calls[label] += 1

        setattr(owner, attr, timed)


def profile(dataset: Path, home: Path, executor: str) -> None:
    """One in-process collection with every component's CPU time; prints the breakdown."""
    import pyarrow.parquet as pq

    import jobs.runtime.engine as je
    import jobs.runtime.ray_runtime as rr
    import pipeline.collect as pc
    import pipeline.hooks as ph
    import pipeline.models.cache as mc
    import pipeline.storage as pst
    import pipeline.store as ps
    from jobs.runtime.engine import make_executor
    je.IN_FLIGHT = 1  # one shard at a time: clean CPU deltas
    m = Meter()
    m.wrap(pc, "_encode", "tokenise")
    m.wrap(pc, "run_until", "forward (record hooks included)")
    m.wrap(ph, "_hidden", "  record hooks (inside forward)")
    m.wrap(pc, "mean_pool", "mean pooling on the device")
    m.wrap(pc, "_pad_left", "pad batches")
    m.wrap(ps, "activation_table", "float16 + table build")
    m.wrap(pq, "write_table", "parquet write")
    m.wrap(pst.Storage, "sha256", "sha256 (writes + completeness checks)")   # the store hashes through its storage
    m.wrap(os, "fsync", "fsync")
    m.wrap(mc, "load_model", "model load")
    m.wrap(rr, "ensure_ray", "ray start")
    m.wrap(pc, "collect", "collect() total")
    from jobs.stages.collect_job import CollectSpec, run_collection

    c0, w0 = time.process_time(), time.perf_counter()
    first: list[float] = []
    summary = run_collection(CollectSpec(model="smollm2", dataset=str(dataset)), make_executor(executor), home,
                             on_shard=lambda r: first.append(time.perf_counter()) if not first else None)
    cpu_total, wall_total = time.process_time() - c0, time.perf_counter() - w0
    inner = {"tokenise", "forward (record hooks included)", "mean pooling on the device", "pad batches"}
    other = m.cpu["collect() total"] - sum(m.cpu[k] for k in inner)
    rows = [(k, m.cpu[k], m.wall[k], m.calls[k]) for k in m.cpu if k != "collect() total"]
    rows.append(("collect(): rest (last rows, copies, lists)", other, 0.0, m.calls["collect() total"]))
    print(f"\nprofile ({summary['executor_choice']}), {summary['examples']} examples, {summary['tokens']:,} tokens; "
          f"process CPU {cpu_total:.2f} s, wall {wall_total:.2f} s (load avg {os.getloadavg()[0]:.1f})")
    print(f"{'component':<46}{'cpu s':>8}{'share':>8}{'wall s':>8}{'calls':>7}")
    for k, c, w, n in sorted(rows, key=lambda r: -r[1]):
        print(f"{k:<46}{c:>8.2f}{c / max(cpu_total, 1e-9):>8.1%}{w:>8.2f}{n:>7}")
    if executor == "ray":
        print("ray actors run in other processes: their CPU is not in the table; "
              f"first shard back {first[0] - w0 if first else float('nan'):.2f} s after the start "
              f"(Ray start {m.wall['ray start']:.2f} s; the rest is actor start + model load + one shard)")


def budgets(texts: list[str], budgets_: list[int], model: Any, tok: Any) -> None:
    """Real tokens per process-CPU second of in-process ``collect`` (all layers, last + mean)
    at several token budgets, and of the bare loop, best of 2 (CPU time: usable under load)."""
    from pipeline.collect import collect
    from pipeline.models import load_model

    lm = load_model("smollm2")
    ids = [str(i) for i in range(len(texts))]
    real = sum(len(x) for x in tok(texts)["input_ids"])

    def cpu(f: Callable[[], Any]) -> float:
        best = float("inf")
        for _ in range(2):
            c0 = time.process_time()
            f()
            best = min(best, time.process_time() - c0)
        return best

    print(f"{len(texts)} texts, {real:,} real tokens; tokens per CPU second (load {os.getloadavg()[0]:.1f}):")
    print(f"  bare loop (batch 32)  {real / cpu(lambda: run_bare(model, tok, texts)):8.0f}")
    for b in budgets_:
        print(f"  collect budget {b:<6} {real / cpu(lambda: collect(lm, ids, texts, token_budget=b)):8.0f}", flush=True)


# --------------------------------------------------------------------------------- main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="480,2400", help="texts per workload")
    ap.add_argument("--kinds", default="short,long", help="short (~10-token sentences), long (~200 tokens)")
    ap.add_argument("--paths", default="default", help="gnomon paths besides bare: default, local, ray")
    ap.add_argument("--repeat", type=int, default=1, help="timed rounds after the warm-up round")
    ap.add_argument("--bare-process", action="store_true",
                    help="also time the bare loop as a user's script (fresh interpreter, imports, model load)")
    ap.add_argument("--floor", action="store_true",
                    help="also time the floor: the model body's forward alone on the default batches, "
                    "in this process, and that plus `python -c 'import torch'` (lower bounds)")
    ap.add_argument("--no-warmup", action="store_true",
                    help="no warm-up round (for long workloads run after a short one has warmed the caches)")
    ap.add_argument("--profile", action="store_true", help="component breakdown instead of timing rounds")
    ap.add_argument("--budgets", default=None, help="e.g. 256,512,1024,4096: CPU cost per token of in-process "
                    "collect at these token budgets (first workload), instead of timing rounds")
    args = ap.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    work = Path(tempfile.mkdtemp(prefix="gnomon-bench-collect-"))
    try:
        cache = primed_cache(work)
        model, tok = load_bare(cache)
        kinds, sizes = args.kinds.split(","), [int(s) for s in args.sizes.split(",")]
        print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, cpus {os.cpu_count()}, "
              f"cuda {torch.cuda.is_available()}; load avg {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
        if args.budgets:
            _, texts = workload(kinds[0], sizes[0], tok, work)
            budgets(texts, [int(b) for b in args.budgets.split(",")], model, tok)
            return
        if args.profile:
            for kind in kinds:
                for size in sizes:
                    dataset, _ = workload(kind, size, tok, work)
                    for path in args.paths.split(","):
                        profile(dataset, fresh_home(work, cache, f"prof-{path}"),
                                "auto" if path == "default" else path)
            return
        peak, n = matmul_peak()
        print(f"fp32 matmul peak {peak / 1e9:.1f} GFLOP/s (best of 1024^2, 2048^2, 4096^2: {n}^2, "
              f"{torch.get_num_threads()} threads)", flush=True)
        ratios: list[float] = []
        for kind in kinds:
            for size in sizes:
                ratios.append(time_workload(kind, size, model, tok, cache, work, peak, args))
        print(f"\nload avg at the end {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        print(f"collect_ratio = {max(ratios):.3f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def time_workload(kind: str, size: int, model: Any, tok: Any, cache: Path, work: Path, peak: float,
                  args: argparse.Namespace) -> float:
    dataset, texts = workload(kind, size, tok, work)
    lengths = [len(x) for x in tok(texts)["input_ids"]]
    mean_len = sum(lengths) / len(lengths)
    cost, non_emb = flop_per_token(model, mean_len)
    ceiling = peak / cost
    paths = [p for p in args.paths.split(",") if p]
    times: dict[str, list[float]] = defaultdict(list)
    inner: dict[str, list[float]] = defaultdict(list)
    real = 0
    choice = ""
    for r in range(1 if args.no_warmup else 0, args.repeat + 1):  # round 0 is the warm-up
        tb, real = run_bare(model, tok, texts)
        line = [f"bare {tb:.2f} s"]
        if args.bare_process:
            tp = run_bare_process(cache, dataset)
            line.append(f"bare-process {tp:.2f} s")
        if args.floor:
            tf, ti = run_floor(model, tok, texts), torch_import_seconds()
            line.append(f"floor {tf:.2f} s, import torch {ti:.2f} s")
        for p in paths:
            tw, s = run_cli(dataset, fresh_home(work, cache, p), None if p == "default" else p)
            choice = s["executor_choice"] if p == "default" else choice
            line.append(f"{p} {tw:.2f} s (executor {s['collect_seconds']:.2f} s)")
            if r:
                times[p].append(tw)
                inner[p].append(s["collect_seconds"])
        if r:
            times["bare"].append(tb)
            if args.bare_process:
                times["bare-process"].append(tp)
            if args.floor:
                times["floor"].append(tf)
                times["floor+torch"].append(tf + ti)
        print(f"  {kind}-{size} {'warm-up' if r == 0 else f'round {r}'} (load {os.getloadavg()[0]:.1f}): "
              + ", ".join(line), flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"\n{kind} x {size}: {real:,} real tokens (mean {mean_len:.0f}/text); {non_emb / 1e6:.1f} M non-embedding "
          f"params, {cost / 1e9:.3f} GFLOP/token -> ceiling {ceiling:,.0f} tok/s; default = {choice}")
    proc = med.get("bare-process")
    print(f"{'path':<13}{'wall s':>9}{'tok/s':>9}{'of ceiling':>12}{'ratio':>8}"
          + (f"{'vs process':>12}" if proc else "") + f"{'executor s':>12}{'of ceiling':>12}")
    floors = ["floor", "floor+torch"] if args.floor else []
    for k in ["bare", *(["bare-process"] if proc else []), *floors, *paths]:
        tps = real / med[k]
        ex = statistics.median(inner[k]) if k in inner else None
        print(f"{k:<13}{med[k]:>9.2f}{tps:>9.0f}{tps / ceiling:>12.1%}{med[k] / med['bare']:>8.2f}"
              + (f"{med[k] / proc:>12.2f}" if proc else "")
              + (f"{ex:>12.2f}{real / ex / ceiling:>12.1%}" if ex else ""))
    ratio = med[paths[0]] / med["bare"] if paths else float("nan")
    if floors:
        print(f"floor_ratio[{kind}-{size}] = {med['floor'] / med['bare']:.3f}   "
              f"(floor+torch {med['floor+torch'] / med['bare']:.3f}; the target for the default path is 0.67)")
    if paths and proc:
        print(f"collect_ratio_vs_process[{kind}-{size}] = {med[paths[0]] / proc:.3f}")
    print(f"collect_ratio[{kind}-{size}] = {ratio:.3f}")
    return ratio


if __name__ == "__main__":
    main()
