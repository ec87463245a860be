"""Wall time of the everyday commands a user types between jobs, as subprocesses (process
start-up and imports included, as the user pays them).

Setup (not timed): a fresh home with a migrated MLflow SQLite catalog holding
``--versions`` registered directions of one concept, a small activation store (tiny model,
3 layers) and a layer sweep. Timed, ``--repeat`` rounds each, medians reported:

- ``help``: ``gnomon --help``
- ``catalog-ls`` / ``catalog-show``: ``gnomon catalog ls`` and ``gnomon catalog show c@best``
  (target: under 2 s on the local store; they read the SQLite file without MLflow)
- ``catalog-ls-mlflow``: the same listing through MLflow's client (``catalog.Catalog``),
  the path a remote tracking server takes, for comparison
- ``store-ls``: ``gnomon store ls``
- ``evaluate-bad-model``: ``gnomon evaluate c/1 --models /no/such/model.gguf``, which must
  fail before Ray starts (exit 2)

Run: ``python bench/everyday.py [--repeat 5] [--versions 40]``. Prints the load average
(the numbers mean little on a loaded machine) and, last, ``catalog_ls_seconds = <median>``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _setup(home: Path, versions: int) -> None:
    import numpy as np
    import torch

    from catalog import Catalog
    from pipeline.direction import Direction, Provenance
    from pipeline.store import ActivationStore, activation_table

    cat = Catalog(home=home)
    for i in range(versions):
        prov = Provenance.minimal(hidden_size=16, layer=1 + i % 8, method=("mean_diff", "lda", "logistic")[i % 3],
                                  position="last", concept="bench", model_id="tiny:llama", revision="main",
                                  positive="pos", negative="neg")
        d = Direction(torch.randn(16, generator=torch.Generator().manual_seed(i)), prov, pos_mean=1.0,
                      neg_mean=-1.0, spread=0.5, resid_norm=3.0,
                      metrics={"val_auroc": 0.9 + 0.001 * i, "val_dprime": 3.0, "test_auroc": 0.88})
        cat.register(d, extra_tags={"num_layers": "8", "val_rows": "60"}, set_best=(i == versions - 1))
    store = ActivationStore(home)
    for layer in (1, 2, 3):
        t = activation_table([f"e{k}" for k in range(64)], "last", np.zeros(64, dtype=np.int64),
                             np.ones((64, 16), np.float32))
        store.write_shard("tiny:llama", "main", "bench", layer, 0, t, fingerprint="f", positions=["last"])


def _time(cmd: list[str], env: dict[str, str], expect: int = 0) -> float:
    t0 = time.perf_counter()
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT, check=False)
    dt = time.perf_counter() - t0
    if res.returncode != expect:
        raise SystemExit(f"{' '.join(cmd)} exited {res.returncode}, expected {expect}:\n{res.stderr[-2000:]}")
    return dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5, help="timed rounds per command (default: 5)")
    ap.add_argument("--versions", type=int, default=40, help="registered directions in the catalog (default: 40)")
    args = ap.parse_args()
    py = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        home.mkdir()
        os.environ["GNOMON_HOME"] = str(home)
        sys.path.insert(0, str(ROOT))
        _setup(home, args.versions)
        env = {**os.environ, "GNOMON_HOME": str(home), "PYTHONPATH": str(ROOT)}
        cli = [py, "-m", "jobs.cli"]
        cases = {
            "help": (cli + ["--help"], 0),
            "catalog-ls": (cli + ["catalog", "ls"], 0),
            "catalog-show": (cli + ["catalog", "show", "bench@best"], 0),
            "catalog-ls-mlflow": ([py, "-c", "from catalog import Catalog; print(len(Catalog().search()))"], 0),
            "store-ls": (cli + ["store", "ls"], 0),
            "evaluate-bad-model": (cli + ["evaluate", "bench/1", "--models", "/no/such/model.gguf"], 2),
        }
        print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; {args.versions} versions; "
              f"{args.repeat} rounds")
        medians = {}
        for name, (cmd, rc) in cases.items():
            _time(cmd, env, rc)  # warm-up (file cache, .pyc)
            times = [_time(cmd, env, rc) for _ in range(args.repeat)]
            medians[name] = statistics.median(times)
            print(f"{name:<20} median {medians[name]:6.2f} s   (min {min(times):.2f}, max {max(times):.2f})")
        print(f"load average after {os.getloadavg()[0]:.1f}")
        print(f"catalog_ls_seconds = {medians['catalog-ls']:.2f}")


if __name__ == "__main__":
    main()
