"""Issue 11: a tracking server killed mid-fit loses no direction; pending markers go back
to the server they were meant for; `fit --json` stdout stays JSON."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from catalog import Catalog
from catalog.registry import Registry
from jobs.cli import main as cli
from tests.test_catalog_server import _free_port, _stop, _wait_healthy

# Subprocesses load torch and run whole jobs several times: minutes on 2 shared cores.
pytestmark = [pytest.mark.integration]  # ~3 min together on 2 quiet cores: part of `make test`


def _server(tmp_path: Path, port: int) -> subprocess.Popen[bytes]:
    mlflow_bin = shutil.which("mlflow", path=str(Path(sys.executable).parent)) or "mlflow"
    cmd = [mlflow_bin, "server", "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
           "--artifacts-destination", str(tmp_path / "artifacts"),
           "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    log = tmp_path / "server.log"
    with open(log, "ab") as out:
        # no job runner: gnomon uses none, and its huey workers are seven more processes to stop
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
    _wait_healthy(f"http://127.0.0.1:{port}", proc, log, limit_s=300)  # slow to start on a loaded machine
    return proc


def test_server_killed_mid_fit_loses_nothing(tmp_path: Path, home: Path, small_dataset: Path,
                                             monkeypatch: pytest.MonkeyPatch,
                                             capfd: pytest.CaptureFixture[str]) -> None:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    proc = _server(tmp_path, port)
    real = Registry.register_file
    calls = {"n": 0}

    def then_die(self: Registry, *a: Any, **kw: Any) -> int:
        out = real(self, *a, **kw)
        calls["n"] += 1
        if calls["n"] == 1:
            _stop(proc)  # the server dies after the first registration
        return out

    argv = ["fit", "--model", "tiny:llama", "--dataset", str(small_dataset), "--methods", "mean_diff,pca",
            "--layers", "1-2", "--positions", "last", "--executor", "local", "--tracking-uri", url, "--json"]
    try:
        monkeypatch.setattr(Registry, "register_file", then_die)
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "3")
        assert cli(argv) == 2
        err = capfd.readouterr().err
        assert "did not answer" in err and "register-pending" in err
        saved = list((home / "directions" / "toy").glob("*.safetensors"))
        markers = list((home / "directions" / ".pending").glob("*.json"))
        assert len(saved) == 2  # 2 methods x 1 position, all on disk
        assert len(markers) == 1 and all(json.loads(m.read_text())["tracking_uri"] == url for m in markers)
        monkeypatch.setattr(Registry, "register_file", real)
        proc = _server(tmp_path, port)
        # no --tracking-uri: the markers say where they belong (not the home's SQLite)
        assert cli(["catalog", "register-pending"]) == 0
        assert not list((home / "directions" / ".pending").glob("*.json"))
        assert len(Catalog(tracking_uri=url, home=home).versions("toy")) == 2
        capfd.readouterr()
        # a rerun registers nothing twice, and --json stdout is only the JSON document
        assert cli(argv) == 0
        out = capfd.readouterr().out
        summary = json.loads(out)
        assert summary["registered"] == 2
        assert len(Catalog(tracking_uri=url, home=home).versions("toy")) == 2
    finally:
        _stop(proc)
