"""Issue 11, catalog: first-time creation of the SQLite catalog is atomic and repairable."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from catalog import Catalog
from pipeline.types import GnomonError

ROOT = Path(__file__).resolve().parents[1]
_OPEN = "import sys; from catalog import Catalog; print(Catalog(home=sys.argv[1]).concepts())"


def _spawn(home: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.Popen([sys.executable, "-c", _OPEN, str(home)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _tables(db: Path) -> set[str]:
    with sqlite3.connect(db) as con:
        return {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def _stamped(db: Path) -> bool:
    try:
        with sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True, timeout=0.05) as con:
            return bool(con.execute("SELECT version_num FROM alembic_version").fetchall())
    except sqlite3.Error:
        return False


def test_half_created_catalog_is_detected_and_repaired(tmp_path: Path) -> None:
    db = tmp_path / "mlflow.db"
    with sqlite3.connect(db) as con:  # some tables, no alembic stamp: a creation that died
        con.execute("CREATE TABLE experiments (experiment_id INTEGER PRIMARY KEY, name TEXT)")
        con.execute("CREATE INDEX idx_exp_name ON experiments (name)")
    assert "alembic_version" not in _tables(db)
    cat = Catalog(home=tmp_path, retries=1)
    assert cat.concepts() == []
    assert "alembic_version" in _tables(db)
    assert list(tmp_path.glob("mlflow.db.partial-*"))  # the broken one kept aside, not deleted


def test_partial_catalog_with_data_is_never_replaced(tmp_path: Path) -> None:
    db = tmp_path / "mlflow.db"
    with sqlite3.connect(db) as con:
        con.execute("CREATE TABLE registered_models (name TEXT)")
        con.execute("INSERT INTO registered_models VALUES ('sentiment')")
    with pytest.raises(GnomonError, match="holds runs or models"):
        Catalog(home=tmp_path, retries=1).concepts()
    assert _tables(db) == {"registered_models"}


def test_garbage_catalog_file_is_a_one_line_error(tmp_path: Path) -> None:
    (tmp_path / "mlflow.db").write_bytes(b"\x00garbage" * 100)
    with pytest.raises(GnomonError, match="unreadable"):
        Catalog(home=tmp_path, retries=1).concepts()


def test_two_first_time_openings_at_once_both_work(tmp_path: Path) -> None:
    procs = [_spawn(tmp_path) for _ in range(2)]
    outs = [p.communicate(timeout=180) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    assert Catalog(home=tmp_path, retries=1).concepts() == []


def test_kill_during_first_time_creation_leaves_a_usable_catalog(tmp_path: Path) -> None:
    proc = _spawn(tmp_path)
    deadline = time.monotonic() + 120
    killed = False
    while time.monotonic() < deadline and proc.poll() is None:
        # alembic has stamped a first revision: the migrations are under way
        if any(_stamped(f) for f in [*tmp_path.glob("mlflow.db"), *tmp_path.glob(".mlflow.db.*.creating")]):
            proc.send_signal(signal.SIGKILL)
            killed = True
            break
        time.sleep(0.005)
    proc.wait(timeout=30)
    assert killed, "the creation finished before it could be interrupted"
    assert Catalog(home=tmp_path, retries=1).concepts() == []
    assert "alembic_version" in _tables(tmp_path / "mlflow.db")


@pytest.mark.parametrize("how", ["under-a-file", "read-only"])
def test_unusable_catalog_directory_fails_in_seconds(tmp_path: Path, how: str) -> None:
    if how == "read-only" and os.geteuid() == 0:
        pytest.skip("root ignores directory permissions")
    (tmp_path / "file").write_text("x")
    home = tmp_path / "file" / "home" if how == "under-a-file" else tmp_path / "ro"
    if how == "read-only":
        home.mkdir()
        home.chmod(0o500)
    try:
        t0 = time.monotonic()
        with pytest.raises(GnomonError, match="cannot create the catalog"):
            Catalog(tracking_uri=f"sqlite:///{home}/mlflow.db", home=tmp_path, retries=3).concepts()
        assert time.monotonic() - t0 < 20
    finally:
        if how == "read-only":
            home.chmod(0o700)
