"""Issue 21, round two, store and catalog: one test per defect (1-4), each written first and
seen failing on the code before its fix, plus the migration of a store written under the
old folder naming."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from jobs.cli import main as cli
from jobs.stages.collect_job import CollectSpec, run_collection
from jobs.runtime.engine import LocalExecutor
from pipeline.contrast import StoreDB
from pipeline.store import ActivationStore, activation_table, ids_digest, sha256_file

REPO = Path(__file__).resolve().parents[1]


def _save_tiny(path: Path, seed: int) -> Path:
    """A ``tiny:llama`` with other weights (``seed``), saved as a Hugging Face directory."""
    from pipeline.models.tiny import tiny_model

    model, tok = tiny_model("tiny:llama", seed=seed)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def _models_in_sql(home: Path) -> dict[tuple[str, int], int]:
    """(model partition, layer) -> rows, as `gnomon sql` sees them."""
    with StoreDB(home, memory_limit="256MB", threads=1) as db:
        rows = db.query("SELECT model, layer, count(*) AS n FROM activations GROUP BY ALL").to_pylist()
    return {(r["model"], r["layer"]): r["n"] for r in rows}


def test_two_models_with_one_cleaned_name_keep_their_own_shards(
        home: Path, small_dataset: Path, tmp_path: Path, tiny_models: Callable[[str], Any],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Defect 1. Failed before: ``./tiny_llama`` and ``tiny:llama`` were both stored under
    ``model=tiny_llama``, so collecting the directory replaced ``tiny:llama``'s layer-1 shard
    and hid its layer-2 rows from `gnomon sql` (one model, 24 rows per layer, where there
    are two); and ``--model ckpt`` from two folders shared one folder the same way."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    _save_tiny(work / "tiny_llama", seed=1)
    run_collection(CollectSpec(model="tiny:llama", dataset=str(small_dataset), layers=(1, 2),
                               positions=("last",)), LocalExecutor(), home)
    run_collection(CollectSpec(model="./tiny_llama", dataset=str(small_dataset), layers=(1,),
                               positions=("last",)), LocalExecutor(), home)
    seen = _models_in_sql(home)
    assert len({m for m, _ in seen}) == 2, seen  # two models, two partitions
    assert sorted(seen.values()) == [24, 24, 24], seen  # tiny:llama layers 1, 2 and the directory's layer 1
    store = ActivationStore(home)
    assert [m["fingerprint"] for m in store.valid_shards("tiny:llama", "main", "toy", 1)[0]] == \
        [tiny_models("tiny:llama").fingerprint]
    own = store.valid_shards("./tiny_llama", "main", "toy", 1)[0]
    assert own and own[0]["fingerprint"] != tiny_models("tiny:llama").fingerprint
    assert own[0]["model"] == str(work / "tiny_llama")  # recorded as the resolved path

    # the same relative path from two folders is two models
    fps = {}
    for name, seed in (("a", 2), ("b", 3)):
        (tmp_path / name).mkdir()
        _save_tiny(tmp_path / name / "ckpt", seed)
        monkeypatch.chdir(tmp_path / name)
        run_collection(CollectSpec(model="ckpt", dataset=str(small_dataset), layers=(1,), positions=("last",)),
                       LocalExecutor(), home)
        fps[name] = store.valid_shards("ckpt", "main", "toy", 1)[0][0]["fingerprint"]
    assert fps["a"] != fps["b"]
    monkeypatch.chdir(tmp_path / "a")
    assert store.valid_shards("ckpt", "main", "toy", 1)[0][0]["fingerprint"] == fps["a"]
    assert len({m for m, _ in _models_in_sql(home)}) == 4
    assert cli(["store", "ls", "--json"]) == 0


def _legacy_shard(home: Path, slug: str, model: str, layer: int, ids: list[str], fp: str) -> None:
    """A shard and manifest exactly as the code before issue 21 wrote them."""
    rel = f"model={slug}/revision=main/dataset=toy/layer={layer}/part-00000"
    path = home / "activations" / f"{rel}.parquet"
    path.parent.mkdir(parents=True)
    t = activation_table(ids, "last", np.zeros(len(ids)), np.arange(len(ids) * 4).reshape(-1, 4), "float32")
    pq.write_table(t, path)
    m = {"model": model, "model_slug": slug, "revision": "main", "dataset": "toy", "layer": layer, "shard": 0,
         "path": str(path.relative_to(home)), "rows": len(ids), "bytes": path.stat().st_size,
         "sha256": sha256_file(path), "fingerprint": fp, "positions": ["last"], "dtype": "float32",
         "hidden_size": 4, "ids_sha256": ids_digest(ids), "ids": sorted(ids), "content_sha256": None,
         "created": "2026-11-01T00:00:00Z", "created_ns": 1}
    mp = home / "manifests" / f"{rel}.json"
    mp.parent.mkdir(parents=True)
    mp.write_text(json.dumps(m))


def test_a_store_written_under_the_old_naming_is_migrated_on_open(home: Path) -> None:
    """Old stores keep every row: shards under ``model=<cleaned name>`` move to their model's
    new key when the store is opened, and read as before under the model's id."""
    import pyarrow as pa

    ids = [f"e{i}" for i in range(6)]
    ActivationStore(home).write_examples("toy", pa.table({"id": ids, "label": ["a", "b"] * 3}))
    _legacy_shard(home, "tiny_llama", "tiny:llama", 1, ids, "fp-tiny")
    _legacy_shard(home, "org--m", "org/m", 2, ids, "fp-org")
    store = ActivationStore(home)
    got, x = store.read_layer("tiny:llama", "main", "toy", 1)
    assert sorted(got) == ids and x.shape == (6, 4)
    assert store.read_layer("org/m", "main", "toy", 2)[1].shape == (6, 4)
    assert not store.valid_shards()[1]
    assert sum(_models_in_sql(home).values()) == 12
    assert not list((home / "manifests").glob("model=tiny_llama/**/*.json"))  # moved, not copied
    ActivationStore(home).read_layer("tiny:llama", "main", "toy", 1)  # a second open is a no-op


def _direction(concept: str = "sentiment") -> Any:
    from pipeline.direction import Direction, Provenance

    prov = Provenance(model_id="tiny:llama", revision="main", fingerprint="f" * 16, hidden_size=8, layer=1,
                      position="last", concept=concept, positive="pos", negative="neg", method="mean_diff",
                      params={}, dataset="toy", dataset_hash="0123456789abcdef",
                      split_sizes={"train": 10, "val": 4, "test": 4})
    return Direction(vector=torch.arange(8.0), provenance=prov, pos_mean=1.0, neg_mean=-1.0, spread=0.5,
                     resid_norm=3.0, metrics={"val_auroc": 0.9})


def test_a_copied_and_moved_home_keeps_its_catalog(catalog_home: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """Defect 2. Failed before: MLflow kept absolute artifact paths, so after ``cp -r home
    home2`` and moving the original away, ``catalog export`` on home2 ended in an internal
    MlflowException and ``catalog show`` printed the old path."""
    from catalog import Catalog, artifacts

    cat = Catalog(home=catalog_home)
    rec = cat.register(_direction())
    original = sha256_file(Path(cat.export(rec.ref, tmp_path / "before.safetensors")))
    waiting = artifacts.save_local(_direction("calm"), catalog_home)  # a registration left pending
    artifacts.write_pending(catalog_home, artifacts.PendingRegistration.of(waiting, None, None, True, "val_auroc",
                                                                           cat.tracking_uri))
    copy = tmp_path / "home2"
    shutil.copytree(catalog_home, copy)
    catalog_home.rename(tmp_path / "moved-away")
    monkeypatch.setenv("GNOMON_HOME", str(copy))
    capsys.readouterr()
    assert cli(["catalog", "show", rec.ref]) == 0
    shown = capsys.readouterr().out
    assert str(catalog_home) + "/" not in shown and str(copy) in shown, shown
    out = tmp_path / "out.safetensors"
    assert cli(["catalog", "export", rec.ref, str(out)]) == 0, capsys.readouterr().err
    assert sha256_file(out) == original
    # the pending registration goes into the copy's catalog, not to where the home used to be
    assert cli(["catalog", "register-pending"]) == 0, capsys.readouterr().err
    assert not catalog_home.exists() and Catalog(home=copy).resolve("calm/1").source.startswith(copy.as_uri())
    # and a new registration into the copy lands in the copy's artifacts, not the old home's
    rec2 = Catalog(home=copy).register(_direction("mood"))
    assert str(copy) in rec2.source and not (tmp_path / "moved-away" / "mlartifacts" / "gnomon-mood").exists()


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP server that accepts connections and never answers."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(srv.accept()[0])
            except OSError:
                continue

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    yield int(srv.getsockname()[1])
    stop.set()
    t.join()
    for c in held:
        c.close()
    srv.close()


def test_job_commands_to_a_silent_server_fail_in_bounded_time(silent_server: int, tmp_path: Path) -> None:
    """Defect 3. Failed before: `submit/status/logs --address` to a server that accepts and
    never answers waited forever (killed here after 90 s); a scheme-less address took 47 s
    and ray:// 38 s to fail. Now: every call has connect and read timeouts, and the error
    is one line naming the address (and, for ray:// or host:port, the http:// to give)."""
    spec = tmp_path / "job.toml"
    spec.write_text('[job]\nname = "fleet"\nmodels = ["tiny:llama"]\n\n[fit]\nconcepts = ["sentiment"]\n')
    http = f"http://127.0.0.1:{silent_server}"
    runs = {
        "submit": ["submit", str(spec), "--address", http, "--env", "GNOMON_HOME=/x"],
        "status": ["status", "gnomon-x", "--address", http],
        "logs": ["logs", "gnomon-x", "--address", http],
        "ray": ["status", "gnomon-x", "--address", f"ray://127.0.0.1:{silent_server}"],
        "bare": ["status", "gnomon-x", "--address", f"127.0.0.1:{silent_server}"],
    }
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS")}
    t0 = time.monotonic()
    procs = {k: subprocess.Popen([sys.executable, "-m", "jobs.cli", *argv], cwd=REPO, env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for k, argv in runs.items()}
    results = {}
    try:
        for k, p in procs.items():
            _, err = p.communicate(timeout=max(1.0, 90 - (time.monotonic() - t0)))
            results[k] = (p.returncode, err.strip().splitlines(), time.monotonic() - t0)
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()
    for k, (rc, err, elapsed) in results.items():
        assert rc == 2 and err, (k, rc, err)
        assert elapsed < 40, (k, elapsed)  # all five ran at once; each alone is well under 20 s
        assert err[-1].startswith(f"gnomon {runs[k][0]}: error:") and f"127.0.0.1:{silent_server}" in err[-1], err
    for k in ("ray", "bare"):  # what to give instead: the dashboard's http:// address
        assert "http://" in results[k][1][-1], results[k]
    assert "timed out" in results["status"][1][-1] or "no answer" in results["status"][1][-1]


def _flip_bytes(path: Path) -> None:
    """Corrupt a shard in place, keeping its size (bit rot, a bad copy)."""
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid:mid + 64] = bytes(64)
    path.write_bytes(bytes(data))


def test_a_corrupted_shard_is_reported_verified_and_repaired(home: Path, small_dataset: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """Defect 4. Failed before: `gnomon sql` dropped a corrupted shard silently (fewer rows,
    exit 0, nothing on stderr) while `store ls` reported every row and flagged nothing.
    Now sql says on stderr how many shards it skipped and why, `store ls --verify` flags
    the shard (checksum against the manifest) and `store repair` collects it again."""
    run_collection(CollectSpec(model="tiny:llama", dataset=str(small_dataset), layers=(1,), positions=("last",),
                               shard_size=8), LocalExecutor(), home)
    shards = sorted((home / "activations").rglob("part-*.parquet"))
    assert len(shards) == 3
    _flip_bytes(shards[1])
    capsys.readouterr()
    assert cli(["sql", "SELECT count(*) AS n FROM activations", "--json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out) == [{"n": 16}]
    assert "skipped 1 shard" in err and "checksum" in err and "gnomon store repair" in err, err
    assert cli(["store", "ls", "--verify"]) == 1
    out, err = capsys.readouterr()
    assert shards[1].name in out + err and "checksum" in out + err
    assert cli(["store", "repair"]) == 0
    out, err = capsys.readouterr()
    assert "repaired 1" in out, out + err
    assert cli(["store", "ls", "--verify"]) == 0
    capsys.readouterr()
    assert cli(["sql", "SELECT count(*) AS n FROM activations", "--json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out) == [{"n": 24}] and not err.strip(), err


def test_repair_names_the_command_when_the_model_is_gone(home: Path, small_dataset: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """`store repair` cannot re-collect from weights that are no longer there: it says which
    `gnomon collect` command to run instead, and exits 1."""
    ckpt = _save_tiny(tmp_path / "ckpt", seed=4)
    run_collection(CollectSpec(model=str(ckpt), dataset=str(small_dataset), layers=(2,), positions=("last",)),
                   LocalExecutor(), home)
    shutil.rmtree(ckpt)
    _flip_bytes(next((home / "activations").rglob("part-*.parquet")))
    capsys.readouterr()
    assert cli(["store", "repair"]) == 1
    out, err = capsys.readouterr()
    assert f"gnomon collect --model {ckpt}" in out + err and "--layers 2" in out + err, out + err
