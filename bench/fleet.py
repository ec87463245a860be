"""Fleet DAG vs the sequential ``gnomon run``: the demo concepts on SmolLM2 and two more versions.

The fleet: the bundled SmolLM2-135M-Instruct plus two versions of it written as Hugging
Face directories (not timed): ``fp16`` (weights rounded to float16 and back, a numeric
version) and ``noise`` (seeded Gaussian noise of 1% of each weight tensor's std, an edited
version). One job spec over the three: the demo's seven concepts, its six methods, both
positions, every layer, no evaluation (``--with-evaluate`` adds the demo's two).

Both sides run ``gnomon run SPEC --json`` as a subprocess on a fresh home (the converted
SmolLM2 weights primed, MLflow SQLite created by each run), same spec, same executor:

- **old**: the sequential DAG of ``--old-rev`` (default: main just before the fleet DAG,
  which walks models x concepts one after another, one task per (layer, position, method),
  each reading its contrast set), extracted with ``git archive`` into a temporary folder;
- **new**: this checkout (one DAG, a model's fits overlapping the next model's
  collection on Ray, one read per (layer, position) for every method, one model load per
  version for all its concepts).

Wall times side by side; the last line is ``fleet_speedup = <old / new>`` (target >= 1.5 on
2 idle cores). ``--smoke`` runs the same comparison on three tiny random models and two
concepts in about a minute (checks the wiring, not a figure). The machine load is printed
before and after: figures taken on a loaded machine are not figures.

Run: ``python bench/fleet.py [--smoke] [--executor auto|local|ray] [--old-rev REV]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT))

OLD_REV = "90e88ab"
"""main before the fleet DAG (the sequential ``gnomon run``)."""
DEMO_CONCEPTS = ("sentiment", "truth", "language", "formality", "tense", "honesty", "refusal")
SMOKE_MODELS = ("tiny:llama:2x16", "tiny:gpt2:2x16", "tiny:gpt_neox:2x16")


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.1f} (1 min) / {five:.1f} (5 min) on {os.cpu_count()} CPUs"


def make_versions(work: Path, cache: Path) -> list[str]:
    """Two HF-directory versions of the bundled model (numeric and edited), built once."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = []
    for tag in ("fp16", "noise"):
        d = work / "versions" / tag
        out.append(str(d))
        if (d / "config.json").is_file():
            continue
        model = AutoModelForCausalLM.from_pretrained(cache, dtype=torch.float32).eval()
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for p in model.parameters():
                if tag == "fp16":
                    p.copy_(p.half().float())
                elif p.ndim >= 1 and p.numel() > 1:
                    p.add_(torch.randn(p.shape, generator=g) * 0.01 * p.std())
        tmp = d.with_name(d.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(tmp)
        AutoTokenizer.from_pretrained(cache).save_pretrained(tmp)
        tmp.replace(d)
    return out


def write_spec(path: Path, models: list[str], concepts: tuple[str, ...], executor: str, smoke: bool,
               with_evaluate: bool, layers: str = "all") -> None:
    methods = ["mean_diff", "lda"] if smoke else ["mean_diff", "pca", "logistic", "lda", "ccs", "leace"]
    lines = ['[job]', 'name = "fleet-bench"', f"models = {json.dumps(models)}", f'executor = "{executor}"',
             "[fit]", f"concepts = {json.dumps(list(concepts))}", f"methods = {json.dumps(methods)}",
             'positions = ["last", "mean"]',
             'layers = "all"' if layers == "all" else f"layers = {json.dumps([int(x) for x in layers.split(',')])}"]
    if with_evaluate and not smoke:
        lines += ["[[evaluate]]", 'concept = "sentiment"', 'method = "mean_diff"', 'position = "mean"',
                  "chat = true", "strengths = [-4, 0, 4]", "n_prompts = 8", "max_new_tokens = 16",
                  "[[evaluate]]", 'concept = "honesty"', 'method = "mean_diff"', "strengths = [0]",
                  "n_prompts = 4", "max_new_tokens = 8"]
    path.write_text("\n".join(lines) + "\n")


def old_tree(work: Path, rev: str) -> Path:
    """The sequential implementation, as committed at ``rev``."""
    dest = work / f"old-{rev}"
    if not (dest / "pyproject.toml").is_file():
        dest.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "archive", rev], cwd=ROOT, capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest


def gnomon_run(code: Path, spec: Path, home: Path) -> tuple[float, dict[str, Any], str]:
    env = {**os.environ, "GNOMON_HOME": str(home), "PYTHONPATH": str(code)}
    cmd = [sys.executable, "-m", "jobs.cli", "run", str(spec), "--json"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=code, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{code}: {' '.join(cmd)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return wall, json.loads(proc.stdout[proc.stdout.index("{"):]), proc.stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--smoke", action="store_true", help="three tiny models, two concepts: wiring only")
    ap.add_argument("--executor", default="auto", choices=["auto", "local", "ray"])
    ap.add_argument("--old-rev", default=OLD_REV)
    ap.add_argument("--work", default=None, help="working folder (default: a temporary one)")
    ap.add_argument("--with-evaluate", action="store_true", help="add the demo's two evaluation sections")
    ap.add_argument("--concepts", default=",".join(DEMO_CONCEPTS),
                    help="comma list (default: the demo's seven; fewer to fit a time budget)")
    ap.add_argument("--layers", default="all", help='"all" (default) or a comma list, e.g. 0,6,12,18,24,30')
    ap.add_argument("--sides", default="old,new", help="which sides to run (old,new; one side: a profile, no ratio)")
    args = ap.parse_args()
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="gnomon-fleet-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"before: {load()}", flush=True)
    cache = None
    if args.smoke:
        models, concepts = list(SMOKE_MODELS), ("sentiment", "honesty")
    else:
        from collect import primed_cache

        cache = primed_cache(work)
        models, concepts = ["smollm2", *make_versions(work, cache)], tuple(args.concepts.split(","))
    spec = work / "fleet.toml"
    write_spec(spec, models, concepts, args.executor, args.smoke, args.with_evaluate, args.layers)
    print(f"{len(models)} models x {len(concepts)} concepts ({', '.join(concepts)}), layers {args.layers}", flush=True)
    side: dict[str, float] = {}
    summaries: dict[str, dict[str, Any]] = {}
    sides = [s for s in ("old", "new") if s in args.sides.split(",")]
    for tag in sides:
        code = old_tree(work, args.old_rev) if tag == "old" else ROOT
        home = work / f"home-{tag}"
        shutil.rmtree(home, ignore_errors=True)
        (home / "models").mkdir(parents=True)
        if cache is not None:
            (home / "models" / "gguf-cache").symlink_to(cache.parent, target_is_directory=True)
        print(f"{tag}: gnomon run ({code}) ...", flush=True)
        side[tag], summaries[tag], out = gnomon_run(code, spec, home)
        (work / f"{tag}.log").write_text(out)   # the stage lines ([run ]/[done] with times)
        fits = [v for k, v in summaries[tag].items() if k.startswith("fit/")]
        print(f"  {tag}: {side[tag]:.1f} s wall, {len(fits)} fit stages, "
              f"{sum(f['registered'] for f in fits)} directions registered ({load()})", flush=True)
    if len(sides) < 2:
        print(f"{sides[0]}: {side[sides[0]]:.1f} s (stage log: {work / (sides[0] + '.log')}; {load()})")
        return
    old_best = {k: [(b["method"], b["position"], b["layer"]) for b in v["best"]]
                for k, v in summaries["old"].items() if k.startswith("fit/")}
    new_best = {k: [(b["method"], b["position"], b["layer"]) for b in v["best"]]
                for k, v in summaries["new"].items() if k.startswith("fit/")}
    same = sum(old_best[k] == new_best.get(k) for k in old_best)
    print(f"\n{len(models)} models x {len(concepts)} concepts, executor {args.executor}: "
          f"old {side['old']:.1f} s, new {side['new']:.1f} s; chosen layers identical in {same}/{len(old_best)} "
          f"(model, concept) pairs")
    print(f"after: {load()}")
    print(f"fleet_speedup = {side['old'] / side['new']:.2f}")


if __name__ == "__main__":
    main()
