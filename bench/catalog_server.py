"""``gnomon catalog ls`` and ``catalog show`` against a real ``mlflow server`` holding 200
registered directions (issue 23: "under 2 s with 200 registered directions; today the server
path takes ~7 s").

Setup (not timed): an ``mlflow server`` on loopback (SQLite backend, local artifacts: the
listing reads the backend only), 200 directions of four concepts and five models registered
through :class:`catalog.Catalog`. Timed, as subprocesses (start-up and imports included, as the
user pays them), ``--repeat`` rounds each, side by side in one run:

- ``ls-rest``: ``gnomon catalog ls`` (the REST search API, :mod:`catalog.rest`)
- ``ls-filtered``: ``gnomon catalog ls --concept truth --layer 3`` (filters pushed down)
- ``show``: ``gnomon catalog show truth/3``
- ``ls-mlflow-client``: the same listing through MLflow's client (``catalog.Catalog.search``),
  what ``catalog ls`` did against a server before

Run: ``python bench/catalog_server.py [--repeat 5] [--versions 200]``. Prints the load average
beside the figures and, last, ``catalog_ls_server_seconds = <median of ls-rest>``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
BIN = Path(sys.executable).parent
CONCEPTS = ("sentiment", "truth", "tense", "honesty")
CLIENT = ("from catalog import Catalog; import sys; "
          "print(len(Catalog(tracking_uri=sys.argv[1]).search()))")


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _register(url: str, home: Path, n: int) -> None:
    import torch

    from catalog import Catalog
    from pipeline.direction import Direction, Provenance

    cat = Catalog(tracking_uri=url, home=home)
    for i in range(n):
        prov = Provenance(model_id=f"m{i % 5}", revision="main", fingerprint="0a1b2c3d4e5f6a7b", hidden_size=8,
                          layer=i // 20, concept=CONCEPTS[i % 4], positive="positive", negative="negative",
                          method=("mean_diff", "pca", "logistic", "lda", "leace")[(i // 4) % 5], dataset="d",
                          dataset_hash="9f2c1e7a5b3d4c6e", split_sizes={"train": 70, "val": 15})
        d = Direction(vector=torch.randn(8, generator=torch.Generator().manual_seed(i)), provenance=prov,
                      pos_mean=1.0, neg_mean=-1.0, spread=0.3, resid_norm=9.0,
                      metrics={"val_auroc": 0.5 + i / 1000, "test_accuracy": 0.86})
        cat.register(d, set_best=False)


def _time(argv: list[str], env: dict[str, str], repeat: int) -> tuple[float, list[float], str]:
    times, out = [], ""
    for _ in range(repeat):
        t0 = time.perf_counter()
        r = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=ROOT, check=False)
        times.append(time.perf_counter() - t0)
        if r.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} failed: {r.stderr[-1000:]}")
        out = r.stdout
    return statistics.median(times), times, out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--versions", type=int, default=200)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="gnomon-catbench-"))
    port = _port()
    url = f"http://127.0.0.1:{port}"
    log = (work / "server.log").open("wb")
    server = subprocess.Popen([str(BIN / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{work / 'db.sqlite'}",
                               "--artifacts-destination", str(work / "artifacts"), "--host", "127.0.0.1",
                               "--port", str(port), "--workers", "1"], stdout=log, stderr=subprocess.STDOUT,
                              start_new_session=True, env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
    try:
        for _ in range(180):
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2):
                    break
            except OSError:
                time.sleep(0.5)
        os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
        t0 = time.perf_counter()
        _register(url, work / "client", args.versions)
        print(f"setup: {args.versions} directions registered in {time.perf_counter() - t0:.0f} s")
        env = {**os.environ, "MLFLOW_TRACKING_URI": url, "GNOMON_HOME": str(work / "lister"), "PYTHONPATH": str(ROOT)}
        gnomon = [sys.executable, "-m", "jobs.cli"]
        rows = []
        load0 = os.getloadavg()[0]
        for name, argv in [("ls-rest", [*gnomon, "catalog", "ls"]),
                           ("ls-filtered", [*gnomon, "catalog", "ls", "--concept", "truth", "--layer", "3"]),
                           ("show", [*gnomon, "catalog", "show", "truth/3"]),
                           ("ls-mlflow-client", [sys.executable, "-c", CLIENT, url])]:
            med, times, out = _time(argv, env, args.repeat)
            listed = int(out.strip()) if name == "ls-mlflow-client" else max(0, len(out.strip().splitlines()) - 1)
            rows.append((name, med, min(times), max(times), listed))
        load1 = os.getloadavg()[0]
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)
    print(f"\nload average (1 min): {load0:.2f} at start, {load1:.2f} at end; {args.repeat} rounds, medians\n")
    print("| command | median s | min s | max s | rows listed |")
    print("| --- | --- | --- | --- | --- |")
    for name, med, lo, hi, listed in rows:
        print(f"| {name} | {med:.2f} | {lo:.2f} | {hi:.2f} | {listed} |")
    rest, client = rows[0][1], rows[-1][1]
    print(f"\nMLflow client / REST: {client / rest:.1f}x")
    print(f"catalog_ls_server_seconds = {rest:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
