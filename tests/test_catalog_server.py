"""The catalog through a real ``mlflow server`` over HTTP (SQLite backend, proxied artifacts).

The server spawns worker processes, so it is started in its own session and stopped by
process group; ``finally`` makes sure no server outlives the test.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import torch

from catalog import Catalog
from pipeline.direction import Direction, Provenance

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_healthy(url: str, proc: subprocess.Popen[bytes], log: Path, limit_s: float = 90) -> None:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"mlflow server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    pytest.fail(f"mlflow server not healthy after {limit_s}s:\n{log.read_text()[-3000:]}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    pgid = os.getpgid(proc.pid)
    os.killpg(pgid, signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(pgid, signal.SIGKILL)
        proc.wait(timeout=15)


def start_server(tmp_path: Path, workers: int = 1) -> tuple[subprocess.Popen[bytes], str]:
    """An ``mlflow server`` on a free loopback port (SQLite backend, artifacts under
    ``tmp_path``), healthy; stop it with :func:`_stop`."""
    mlflow_bin = shutil.which("mlflow", path=str(Path(sys.executable).parent)) or "mlflow"
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "server.log"
    cmd = [mlflow_bin, "server", "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
           "--artifacts-destination", str(tmp_path / "artifacts"),
           "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
    with open(log, "wb") as out:
        # no job runner: gnomon uses none, and its huey workers are seven more processes to stop
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
    try:
        _wait_healthy(url, proc, log)
    except BaseException:
        _stop(proc)
        raise
    return proc, url


def test_register_and_load_through_http_server(tmp_path: Path) -> None:
    proc, url = start_server(tmp_path)
    try:
        cat = Catalog(tracking_uri=url, home=tmp_path / "client-home")
        prov = Provenance(model_id="smollm2", revision="main", fingerprint="0a1b2c3d4e5f6a7b",
                          hidden_size=8, layer=5, concept="sentiment", positive="positive",
                          negative="negative", method="mean_diff", dataset="sst2-mini",
                          dataset_hash="9f2c1e7a5b3d4c6e", split_sizes={"train": 70, "val": 15})
        d = Direction(vector=torch.linspace(-1, 2, 8), provenance=prov, pos_mean=1.0,
                      neg_mean=-1.0, spread=0.3, resid_norm=9.0,
                      metrics={"val_auroc": 0.9, "test_accuracy": 0.86})
        rec = cat.register(d, curve={"layer": [1, 3, 5], "val_auroc": [0.6, 0.8, 0.9]})
        assert rec.source.startswith("mlflow-artifacts:")  # proxied through the server
        assert cat.resolve("sentiment@best").version == rec.version
        assert cat.load("sentiment@best") == d
        assert [r.layer for r in cat.search(min_metrics={"test_accuracy": 0.85})] == [5]
        # The server, not the client home, holds the file.
        stored = list((tmp_path / "artifacts").rglob("*.safetensors"))
        assert len(stored) == 1 and Direction.load(stored[0]) == d
    finally:
        _stop(proc)
    assert proc.poll() is not None
