"""Issue 11, fault injection: kill -9 during collection, fitting and registration, two
runs at once on one home, a full disk. After each, a rerun completes and the home holds
exactly one row per example/layer/position and one catalog version per fitted direction.
(Killing during first-time catalog creation: tests/test_reliability_catalog.py; a tracking
server killed mid-fit: tests/test_reliability_server.py.)"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import write_dataset

ROOT = Path(__file__).resolve().parents[1]
# Subprocesses load torch and run whole jobs several times: minutes on 2 shared cores.
pytestmark = [pytest.mark.integration]  # ~3 min together on 2 quiet cores: part of `make test`
LAYERS = (1, 2)


def _gnomon(home: Path, *argv: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "GNOMON_HOME": str(home), "OMP_NUM_THREADS": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.Popen([sys.executable, "-m", "jobs.cli", *argv], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=ROOT)


def _collect_argv(ds: Path, shard_size: int = 4) -> list[str]:
    return ["collect", "--executor", "local", "--model", "tiny:llama", "--dataset", str(ds), "--layers", "1-2",
            "--batch-size", "2", "--shard-size", str(shard_size), "--json"]


def _fit_argv(ds: Path) -> list[str]:
    return ["fit", "--executor", "local", "--model", "tiny:llama", "--dataset", str(ds), "--layers", "1-2",
            "--positions", "last,mean", "--methods", "mean_diff,pca,lda", "--register", "all", "--json"]


def _kill_when(proc: subprocess.Popen[str], ready: Callable[[], bool], limit_s: float = 240) -> bool:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline and proc.poll() is None:
        if ready():
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
            return True
        time.sleep(0.01)
    proc.communicate(timeout=240)
    return False


def _finish(proc: subprocess.Popen[str]) -> str:
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    return out


def assert_one_row_each(home: Path, n_examples: int, positions: int = 2) -> None:
    from pipeline.contrast import StoreDB

    with StoreDB(home, memory_limit="256MB", threads=1) as db:
        rows = db.query("SELECT example_id, layer, position, count(*) AS n FROM activations GROUP BY ALL").to_pylist()
        assert not db.skipped, db.skipped
    assert len(rows) == n_examples * len(LAYERS) * positions
    assert {r["n"] for r in rows} == {1}


def assert_one_version_per_direction(home: Path, expected: int) -> None:
    from catalog import Catalog

    recs = Catalog(home=home, retries=1).versions("toy")
    keys = Counter((r.layer, r.method, r.position) for r in recs)
    assert len(recs) == expected and set(keys.values()) == {1}, keys
    left = list((home / "directions" / ".pending").glob("*.json"))
    assert not left, left


@pytest.fixture
def ds(tmp_path: Path) -> Path:
    return write_dataset(tmp_path / "toy.jsonl", n_pairs=12)


def test_kill_during_collection_then_rerun(home: Path, ds: Path) -> None:
    proc = _gnomon(home, *_collect_argv(ds))
    killed = _kill_when(proc, lambda: len(list((home / "manifests").rglob("*.json"))) >= 2)
    assert killed, "collection finished before the kill"
    _finish(_gnomon(home, *_collect_argv(ds)))
    assert_one_row_each(home, 24)


def test_kill_during_fitting_and_registration_then_rerun(home: Path, ds: Path, mlflow_template: Path) -> None:
    shutil.copyfile(mlflow_template, home / "mlflow.db")
    _finish(_gnomon(home, *_collect_argv(ds, 128)))  # the fit's own shard layout
    sweeps = home / "sweeps"
    # fitting: every shard is stored, no sweep written yet
    assert _kill_when(_gnomon(home, *_fit_argv(ds)), lambda: (home / "activations").exists() and not sweeps.exists()
                      and time.sleep(2.0) is None)
    pending = home / "directions" / ".pending"
    # registration: directions saved, markers waiting
    assert _kill_when(_gnomon(home, *_fit_argv(ds)), lambda: pending.is_dir() and any(pending.iterdir()))
    import json

    summary = json.loads(_finish(_gnomon(home, *_fit_argv(ds))))
    assert_one_row_each(home, 24)
    assert_one_version_per_direction(home, summary["registered"])


def test_two_runs_at_once_on_one_fresh_home(home: Path, ds: Path) -> None:
    import json

    procs = [_gnomon(home, *_fit_argv(ds)) for _ in range(2)]
    summaries = [json.loads(_finish(p)) for p in procs]
    assert summaries[0]["registered"] == summaries[1]["registered"] > 0
    assert_one_row_each(home, 24)
    assert_one_version_per_direction(home, summaries[0]["registered"])


def test_full_disk_during_collection(tmp_path: Path, ds: Path) -> None:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root")
    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=200k", "tmpfs", str(mnt)], check=False).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        home = mnt / "home"
        big = write_dataset(tmp_path / "toy.jsonl", n_pairs=60)
        proc = _gnomon(home, *_collect_argv(big, 8), "--dtype", "float32")
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 2, err[-2000:]
        lines = [x for x in err.splitlines() if x.startswith("gnomon")]
        assert lines and "No space left on device" in lines[-1] and "Traceback" not in err
        from pipeline.store import ActivationStore

        _, problems = ActivationStore(home).valid_shards()
        assert not problems  # whatever was completed is intact
        subprocess.run(["mount", "-o", "remount,size=20m", str(mnt)], check=True)
        _finish(_gnomon(home, *_collect_argv(big, 8), "--dtype", "float32"))
        assert_one_row_each(home, 120)
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)
