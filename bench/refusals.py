"""How long bad input takes to be refused (issue 21, defects 6-8): each case is the real CLI
in a fresh subprocess, in a fresh copy of a home that holds a catalog with one direction
(``toy/1``, fitted on ``tiny:llama``), a small dataset and a non-empty output folder.

Every case must end with exit code 2 and one ``gnomon CMD: error:`` line; the time is the
whole process (interpreter start and imports included), since that is what a user waits
for. The target is under 2 s each, with no model loaded. ``--repo`` runs another checkout's
code (e.g. an export of the commit before the fix) for a before/after table.

    python bench/refusals.py                 # this checkout
    python bench/refusals.py --repo /tmp/base --timeout 300

Prints a table, the load average, and as its last line ``median_refusal_s = <value>``.
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

ROOT = Path(__file__).resolve().parents[1]

# (defect, name, argv); {home}, {data}, {dfile}, {out}, {gguf} are filled in per case
CASES: list[tuple[str, str, list[str]]] = [
    ("7", "steer unknown concept", ["steer", "nosuch@best", "hello"]),
    ("7", "monitor unknown concept", ["monitor", "nosuch@best-monitor", "hello"]),
    ("7", "catalog alias unknown concept", ["catalog", "alias", "nosuch/1", "mine"]),
    ("7", "catalog show unknown concept", ["catalog", "show", "nosuch@best"]),
    ("7", "steer unknown version", ["steer", "toy/99", "hello"]),
    ("7", "export-gguf unknown concept", ["export-gguf", "nosuch@best", "{home}/x.gguf"]),
    ("7", "collect tiny --layers 99", ["collect", "--executor", "local", "--model", "tiny:llama", "--dataset",
                                       "{data}", "--layers", "99"]),
    ("7", "fit tiny --layers 99", ["fit", "--executor", "local", "--model", "tiny:llama", "--dataset", "{data}",
                                   "--layers", "99", "--register", "none"]),
    ("7", "collect smollm2 --layers 99", ["collect", "--executor", "local", "--model", "smollm2", "--dataset",
                                          "{data}", "--layers", "99"]),
    ("7", "report tiny --layers 99", ["report", "sentiment", "--model", "tiny:llama", "--layers", "99"]),
    ("7", "orthogonalize --out non-empty", ["orthogonalize", "{dfile}", "--out", "{out}"]),
    ("6", "fit --param ccs.epochs=abc", ["fit", "--executor", "local", "--model", "tiny:llama", "--dataset",
                                         "{data}", "--methods", "ccs", "--register", "none", "--param",
                                         "ccs.epochs=abc"]),
    ("6", "fit --param ccs.lr=fast", ["fit", "--executor", "local", "--model", "tiny:llama", "--dataset", "{data}",
                                      "--methods", "ccs", "--register", "none", "--param", "ccs.lr=fast"]),
    ("6", "store gc --min-age -1", ["store", "gc", "--min-age", "-1"]),
    ("8", "export-gguf onto an existing file", ["export-gguf", "{dfile}", "{gguf}"]),
]


def build_template(root: Path) -> dict[str, str]:
    """A home with a migrated catalog holding ``toy/1``, plus the files the cases name."""
    sys.path.insert(0, str(ROOT))
    import torch

    from catalog import Catalog
    from pipeline.direction import Direction, Provenance

    home = root / "home"
    home.mkdir(parents=True)
    prov = Provenance(model_id="tiny:llama", revision="main", fingerprint="f" * 16, hidden_size=32, layer=2,
                      concept="toy", positive="pos", negative="neg", method="mean_diff", dataset="toy",
                      dataset_hash="0" * 16, split_sizes={"train": 20, "val": 4, "test": 4})
    d = Direction(vector=torch.randn(32, generator=torch.Generator().manual_seed(0)), provenance=prov,
                  pos_mean=1.0, neg_mean=-1.0, spread=0.5, resid_norm=3.0, metrics={"val_auroc": 0.9})
    Catalog(home=home).register(d, set_best=False)
    d.save(root / "d.safetensors")
    rows = [{"id": f"{lab}{i}", "text": f"text {i} is {lab}", "label": lab, "pair": f"p{i}"}
            for i in range(8) for lab in ("pos", "neg")]
    (root / "toy.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "out").mkdir()
    (root / "out" / "keep.txt").write_text("mine")
    (root / "v.gguf").write_bytes(b"precious")
    return {"data": str(root / "toy.jsonl"), "dfile": str(root / "d.safetensors"), "out": str(root / "out"),
            "gguf": str(root / "v.gguf")}


def run_case(repo: Path, template: Path, argv: list[str], files: dict[str, str], timeout: float,
             scratch: Path) -> tuple[int | None, float, str]:
    home = scratch / "home"
    shutil.rmtree(home, ignore_errors=True)
    shutil.copytree(template, home)
    env = {k: v for k, v in os.environ.items() if k not in ("GNOMON_VERBOSE", "GNOMON_DEBUG")}
    env.update(GNOMON_HOME=str(home), PYTHONPATH=str(repo), TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1")
    args = [a.format(home=home, **files) for a in argv]
    t0 = time.perf_counter()
    try:
        p = subprocess.run([sys.executable, "-m", "jobs.cli", *args], cwd=repo, env=env, capture_output=True,
                           text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, time.perf_counter() - t0, f"timed out after {timeout:g} s"
    secs = time.perf_counter() - t0
    lines = [x for x in p.stderr.splitlines() if x.strip()]
    tail = lines or p.stdout.strip().splitlines() or [""]
    return p.returncode, secs, tail[-1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repo", type=Path, default=ROOT, help="checkout whose code runs (default: this one)")
    ap.add_argument("--timeout", type=float, default=240.0, help="seconds before a case counts as hung")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="gnomon-refusals-") as tmp:
        root = Path(tmp)
        files = build_template(root / "t")
        times = []
        print(f"repo {args.repo}")
        print(f"{'defect':<6} {'case':<36} {'rc':>4} {'seconds':>8}  message")
        for defect, name, argv in CASES:
            (root / "t" / "v.gguf").write_bytes(b"precious")
            rc, secs, msg = run_case(args.repo, root / "t" / "home", argv, files, args.timeout, root)
            times.append(secs)
            ok = "" if rc == 2 else "  <- not refused with exit 2"
            print(f"{defect:<6} {name:<36} {rc if rc is not None else '-':>4} {secs:>8.2f}  {msg[:110]}{ok}",
                  flush=True)
        load = os.getloadavg()
        print(f"load average (1, 5, 15 min): {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; "
              f"{os.cpu_count()} CPUs")
        print(f"median_refusal_s = {statistics.median(times):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
