"""The activation store, DuckDB and the CLI on object storage: a real S3 server (moto in
server mode, a subprocess on loopback), reached through the usual AWS variables.

What is checked: shards round-trip with their checksums; a shard object without its
manifest (a crash between the two writes) is invisible and a rerun does not duplicate
rows; a corrupted object is refused; contrast sets and ``gnomon sql`` count rows on S3
exactly; ``gnomon sql`` cannot read outside the store's bucket/prefix; bad locations
(unknown scheme, unreachable endpoint, missing bucket, wrong credentials: a second moto
server with signature checks on) are one-line errors.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from pipeline.contrast import StoreDB, contrast_set
from pipeline.store import ActivationStore, activation_table
from pipeline.types import GnomonError

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "infra" / "testbed"))
from s3_server import REQUEST_LINE, argv  # noqa: E402

M, R, D = "tiny:llama", "main", "toy"
N, W = 20, 8


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def _moto(log: Path, **env: str) -> Iterator[str]:
    """The testbed's S3 server (moto's S3 under gunicorn) on loopback, a subprocess stopped by its
    process id."""
    port = _free_port()
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv("127.0.0.1", port),
                                stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **env})
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto server did not start: {log.read_text()[-2000:]}") from None
                time.sleep(0.2)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def moto_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The S3 server's log: one line per request (method, path)."""
    return tmp_path_factory.mktemp("moto") / "moto.log"


@pytest.fixture(scope="module")
def s3_endpoint(moto_log: Path) -> Iterator[str]:
    with _moto(moto_log) as url:
        yield url


def _aws_env(endpoint: str) -> dict[str, str]:
    return {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture
def s3(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    """A fresh bucket; returns the URI of a home in it (``s3://<bucket>/home``)."""
    import boto3

    for k, v in _aws_env(s3_endpoint).items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("GNOMON_CACHE", str(tmp_path / "cache"))
    bucket = f"gnomon-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=bucket)
    return f"s3://{bucket}/home"


def _client() -> Any:
    import boto3

    return boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])


def _keys(uri: str, prefix: str) -> list[str]:
    bucket, _, base = uri.removeprefix("s3://").partition("/")
    found = _client().list_objects_v2(Bucket=bucket, Prefix=f"{base}/{prefix}").get("Contents", [])
    return sorted(o["Key"] for o in found if not o["Key"].endswith("/"))  # not pyarrow's folder markers


def _fill(root: str | Path, layers: tuple[int, ...] = (1, 2), positions: tuple[str, ...] = ("last", "mean"),
          shards: int = 2) -> tuple[ActivationStore, dict]:
    """N paired examples, ``shards`` shards per layer, every position; returns the vectors written."""
    rng = np.random.default_rng(0)
    store = ActivationStore(root)
    ids = [f"x{i}" for i in range(N)]
    store.write_examples(D, pa.table({"id": ids, "label": ["yes", "no"] * (N // 2),
                                      "pair": [f"q{i // 2}" for i in range(N)], "text": ids}))
    written: dict = {}
    for layer in layers:
        for s, chunk in enumerate(np.array_split(np.arange(N), shards)):
            parts = []
            for pos in positions:
                x = rng.standard_normal((len(chunk), W)).astype(np.float16).astype(np.float32)  # stored as float16
                written.update({(layer, pos, ids[i]): x[j] for j, i in enumerate(chunk)})
                parts.append(activation_table([ids[i] for i in chunk], pos, np.full(len(chunk), 3), x))
            store.write_shard(M, R, D, layer, s, pa.concat_tables(parts), fingerprint="fp", positions=list(positions))
    return store, written


def _gnomon(home: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "GNOMON_HOME": home}
    return subprocess.run([sys.executable, "-m", "jobs.cli", *args], capture_output=True, text=True, env=env,
                          timeout=300, cwd=ROOT, check=False)


def test_shards_round_trip_with_checksums(s3: str) -> None:
    store, written = _fill(s3)
    assert store.root == s3
    shards, problems = store.valid_shards()
    assert problems == [] and len(shards) == 4
    assert all(m["path"].startswith("activations/model=") for m in shards)
    objects = _keys(s3, "activations/")
    assert len(objects) == 4 and not any(".tmp" in k for k in objects)   # no temporary objects
    bucket, _, base = s3.removeprefix("s3://").partition("/")
    for m in shards:   # the manifest holds the size and sha256 of the object as stored
        body = _client().get_object(Bucket=bucket, Key=f"{base}/{m['path']}")["Body"].read()
        assert (len(body), hashlib.sha256(body).hexdigest()) == (m["bytes"], m["sha256"])
    ids, x = store.read_layer(M, R, D, 2, "mean")
    assert sorted(ids) == sorted(f"x{i}" for i in range(N))
    assert np.array_equal(x, np.stack([written[(2, "mean", i)] for i in ids]))
    again = ActivationStore(s3)   # a fresh reader (another process, another node) verifies again
    assert [m["sha256"] for m in again.valid_shards()[0]] == [m["sha256"] for m in shards]
    assert store.shard_complete(M, R, D, 1, 0, fingerprint="fp", positions=["last", "mean"])
    assert not store.shard_complete(M, R, D, 1, 0, fingerprint="other", positions=["last"])


def test_shard_without_manifest_is_invisible_and_rerun_writes_once(s3: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.storage import Storage

    store, _ = _fill(s3, layers=(1,), positions=("last",), shards=1)
    real = Storage.publish

    def crash_before_manifest(self: Storage, rel: str, write: Any, **kw: Any) -> Any:
        if rel.startswith("manifests/"):
            raise OSError("killed between the shard and its manifest")
        return real(self, rel, write, **kw)

    monkeypatch.setattr(Storage, "publish", crash_before_manifest)
    t = activation_table([f"x{i}" for i in range(N)], "last", np.full(N, 3), np.ones((N, W)))
    with pytest.raises(OSError, match="killed"):
        store.write_shard(M, R, D, 2, 0, t, fingerprint="fp", positions=["last"])
    monkeypatch.setattr(Storage, "publish", real)
    assert len(_keys(s3, "activations/")) == 2          # the layer-2 object is there...
    assert store.layers(M, R, D) == [1]                 # ...and no reader sees it
    assert not store.shard_complete(M, R, D, 2, 0, fingerprint="fp", positions=["last"])
    with StoreDB(s3, threads=1) as db:
        assert db.query("SELECT count(*) AS n FROM activations WHERE layer = 2").column("n")[0].as_py() == 0
    from jobs.cli.commands.store import scan

    (orphan,) = scan(s3)["orphans"]                     # `gnomon store gc` would delete it
    assert str(orphan) == f"{s3}/activations/model={store.key(M)}/revision={R}/dataset={D}/layer=2/part-00000.parquet"
    for _ in range(2):   # the rerun overwrites the orphan; a second rerun replaces, never appends
        store.write_shard(M, R, D, 2, 0, t, fingerprint="fp", positions=["last"])
    assert len(_keys(s3, "activations/")) == 2 and len(_keys(s3, "manifests/")) == 2
    with StoreDB(s3, threads=1) as db:
        rows = db.query("SELECT layer, count(*) AS n, count(DISTINCT example_id) AS k FROM activations "
                        "GROUP BY layer ORDER BY layer").to_pylist()
    assert rows == [{"layer": 1, "n": N, "k": N}, {"layer": 2, "n": N, "k": N}]


def test_corrupted_object_is_refused(s3: str) -> None:
    _fill(s3, layers=(2,), positions=("last",), shards=2)
    key = _keys(s3, "activations/")[0]
    bucket = s3.removeprefix("s3://").split("/")[0]
    body = bytearray(_client().get_object(Bucket=bucket, Key=key)["Body"].read())
    body[len(body) // 2] ^= 0xFF                                  # same size, one byte flipped
    _client().put_object(Bucket=bucket, Key=key, Body=bytes(body))
    fresh = ActivationStore(s3)
    shards, problems = fresh.valid_shards()
    assert len(shards) == 1 and len(problems) == 1 and "does not match its manifest checksum" in problems[0]
    with StoreDB(s3, threads=1) as db, pytest.raises(GnomonError, match="checksum.*gnomon store repair"):
        contrast_set(db, model=M, revision=R, dataset=D, layer=2, position="last", positive="yes",
                     negative="no", split=None)
    out = _gnomon(s3, "sql", "SELECT count(*) AS n FROM activations")
    assert out.returncode == 0 and "skipped 1 shard" in out.stderr


def test_contrast_set_on_s3_equals_local(s3: str, tmp_path: Path) -> None:
    _fill(tmp_path / "local")
    _fill(s3)
    kw: dict[str, Any] = {"model": M, "revision": R, "dataset": D, "layer": 2, "position": "last",
                          "positive": "yes", "negative": "no", "split": None}
    with StoreDB(s3, threads=2) as db:
        remote = contrast_set(db, **kw)
        n = db.query("SELECT count(*) AS n FROM activations a JOIN examples e "
                     "ON a.dataset = e.dataset AND a.example_id = e.id").column("n")[0].as_py()
    with StoreDB(tmp_path / "local", threads=2) as db:
        local = contrast_set(db, **kw)
    assert n == N * 2 * 2                            # examples x layers x positions
    assert remote.paired and remote.pos_ids == local.pos_ids and np.array_equal(remote.pos, local.pos)
    assert np.array_equal(remote.neg, local.neg)


def test_gnomon_sql_counts_and_stays_in_the_store(s3: str, capsys: pytest.CaptureFixture[str],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    _fill(s3)
    bucket = s3.removeprefix("s3://").split("/")[0]
    _client().put_object(Bucket=bucket, Key="elsewhere/secret.parquet", Body=b"PAR1")
    out = _gnomon(s3, "sql", "--json", "SELECT layer, position, count(*) AS n FROM activations GROUP BY ALL ORDER BY ALL")
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert sum(r["n"] for r in rows) == N * 2 * 2 and {r["n"] for r in rows} == {N}
    escapes = [f"SELECT * FROM read_parquet('gnomon-store://{bucket}/elsewhere/secret.parquet')",
               f"SELECT * FROM read_parquet('gnomon-store://{bucket}/home/../elsewhere/secret.parquet')",
               f"SELECT * FROM read_parquet('gnomon-store://{bucket}/home2/x.parquet')",
               "SELECT * FROM glob('gnomon-store://**')",
               f"SELECT * FROM read_parquet('s3://{bucket}/elsewhere/secret.parquet')",
               "SELECT * FROM read_text('/etc/passwd')",
               "COPY (SELECT 1) TO 'gnomon-store://x/y.csv'"]
    from jobs.cli import main

    monkeypatch.setenv("GNOMON_HOME", s3)   # main() sets it from --home; restored after the test
    for sql in escapes:   # in this process (the CLI's own error path), one line each
        capsys.readouterr()
        assert main(["sql", sql]) != 0, sql
        got = capsys.readouterr()
        assert got.out == "" and len(got.err.strip().splitlines()) == 1 and "error" in got.err, (sql, got)
    out = _gnomon(s3, "store", "ls", "--verify", "--json")
    assert out.returncode == 0, out.stderr
    (row,) = json.loads(out.stdout)["datasets"]
    assert row["rows_per_layer"] == N * 2 and json.loads(out.stdout)["root"] == s3


def test_bad_locations_are_one_line(s3: str, s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> None:
    bucket = s3.removeprefix("s3://").split("/")[0]
    for scheme in ("ftp://host/x", "foo://"):
        with pytest.raises(GnomonError, match=r"unknown storage scheme .*use a local path or one of file://, s3://"):
            ActivationStore(scheme)
        out = _gnomon(scheme, "sql", "SELECT 1")
        assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, out.stderr
        assert "unknown storage scheme" in out.stderr
    out = _gnomon(f"s3://no-such-bucket-{uuid.uuid4().hex[:8]}/home", "store", "ls")
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1 and "does not exist" in out.stderr
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{_free_port()}")   # nothing listens there
    out = _gnomon(s3, "sql", "SELECT 1")
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert "AWS_ENDPOINT_URL" in out.stderr and bucket in out.stderr
    assert _keys_after_refusal_ok(s3_endpoint, bucket)


def _keys_after_refusal_ok(endpoint: str, bucket: str) -> bool:
    """Nothing was written by the refused commands."""
    import boto3

    return not boto3.client("s3", endpoint_url=endpoint).list_objects_v2(Bucket=bucket).get("Contents")


def test_collect_then_fit_on_an_s3_home(s3: str, tmp_path: Path) -> None:
    """The tiny model's collection lands in the bucket, and fit reads it from there."""
    args = ("--model", "tiny:llama", "--dataset", "sentiment", "--layers", "1-2", "--executor", "local")
    out = _gnomon(s3, "collect", *args)
    assert out.returncode == 0, out.stderr
    assert f"store: {s3}/activations/model=" in out.stdout
    assert len(_keys(s3, "activations/")) == 2 and len(_keys(s3, "manifests/")) == 2
    again = _gnomon(s3, "collect", *args)
    assert again.returncode == 0 and "nothing to collect" in again.stdout
    out = _gnomon(s3, "sql", "--json", "SELECT count(*) AS n, count(DISTINCT example_id) AS k FROM activations")
    assert json.loads(out.stdout) == [{"n": 480 * 2 * 2, "k": 480}]   # examples x layers x positions, once
    fit = _gnomon(s3, "fit", "--model", "tiny:llama", "--dataset", "sentiment", "--layers", "1-2",
                  "--methods", "mean_diff", "--executor", "local", "--no-steer-select")
    assert fit.returncode == 0, fit.stderr
    assert "sentiment/1" in fit.stdout and "everything already stored" in fit.stdout
    bucket = s3.removeprefix("s3://").split("/")[0]
    key = _keys(s3, "activations/")[0]                    # bit rot in the bucket: repaired in place
    body = bytearray(_client().get_object(Bucket=bucket, Key=key)["Body"].read())
    body[-100] ^= 0xFF
    _client().put_object(Bucket=bucket, Key=key, Body=bytes(body))
    assert _gnomon(s3, "store", "ls", "--verify").returncode == 1
    repair = _gnomon(s3, "store", "repair")
    assert repair.returncode == 0 and "repaired 1 of 1" in repair.stdout, repair.stderr
    out = _gnomon(s3, "sql", "--json", "SELECT count(*) AS n, count(DISTINCT example_id) AS k FROM activations")
    assert json.loads(out.stdout) == [{"n": 480 * 2 * 2, "k": 480}]


def test_model_versions_are_fetched_once_per_node(s3: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A version registered on an s3:// home is uploaded (lineage last); another node (its
    own GNOMON_CACHE) downloads it once into a cache keyed by the fingerprint and loads it."""
    from pipeline.fleet.registry import list_versions
    from pipeline.home import gnomon_home
    from pipeline.models import load_model
    from pipeline.models.tiny import tiny_model
    from tests.fleet_tiny import add_version

    model, tok = tiny_model("tiny:llama:2x32", seed=0)
    add_version(gnomon_home(s3), "t-base", model, tok, "base")
    uploaded = _keys(s3, "models/t-base/")
    assert any(k.endswith("/config.json") for k in uploaded) and any(k.endswith("/lineage.json") for k in uploaded)
    monkeypatch.setenv("GNOMON_CACHE", str(tmp_path / "node2"))   # another node: nothing local
    local = gnomon_home(s3) / "models" / "t-base"
    assert not local.exists()
    lm = load_model("t-base", home=s3)
    cached = tmp_path / "node2" / "models" / lm.fingerprint / "t-base"
    assert local.resolve() == cached.resolve() and (cached / "config.json").is_file()
    weights = next(cached.glob("*.safetensors"))
    before = weights.stat().st_mtime_ns
    again = load_model("t-base", home=s3)
    assert again.fingerprint == lm.fingerprint and weights.stat().st_mtime_ns == before   # not downloaded again
    assert [v.id for v in list_versions(s3)] == ["t-base"]
    assert ActivationStore(s3).key("t-base") == "t-base"                # a registered name keeps its key


def test_wrong_credentials_are_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """moto checks signatures only when asked (INITIAL_NO_AUTH_ACTION_COUNT): keys it never
    issued are refused, and the error names the variables to fix."""
    with _moto(tmp_path / "moto-auth.log", INITIAL_NO_AUTH_ACTION_COUNT="0") as url:
        for k, v in {**_aws_env(url), "AWS_ACCESS_KEY_ID": "AKIAWRONG", "AWS_SECRET_ACCESS_KEY": "wrong"}.items():
            monkeypatch.setenv(k, v)
        monkeypatch.setenv("GNOMON_CACHE", str(tmp_path / "cache"))
        with pytest.raises(GnomonError, match="access denied: check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY"):
            ActivationStore("s3://bucket/home")
        out = _gnomon("s3://bucket/home", "store", "ls")
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert "AWS_SECRET_ACCESS_KEY" in out.stderr


def test_stage_markers_are_shared_by_every_node(s3: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A job's completion markers live in the bucket: a rerun on another node (its own
    GNOMON_CACHE) skips a stage any node finished with the same inputs."""
    from jobs.runtime.engine import LocalExecutor
    from jobs.runtime.scheduler import Stage, run_stages
    from pipeline.home import gnomon_home

    calls: list[str] = []

    def stage() -> Stage:
        return Stage("fit/x", "fit", run=lambda deps: calls.append("ran") or {"n": 1}, inputs=lambda deps: {"a": 1})

    for node in ("a", "b"):
        monkeypatch.setenv("GNOMON_CACHE", str(tmp_path / node))
        out = run_stages([stage()], LocalExecutor(), gnomon_home(s3), "job", log=lambda _: None)
        assert out["fit/x"] == {"n": 1}
    assert calls == ["ran"] and len(_keys(s3, "jobs/job/")) == 1


def test_fleets_and_concepts_are_shared_through_the_bucket(s3: str, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A fleet file and a registered concept saved on one node are found on another."""
    from pipeline.datasets import list_concepts, load_dataset, register_dataset
    from pipeline.fleet.registry import (
        Fleet,
        FleetMember,
        list_fleets,
        load_fleet,
        save_fleet,
    )
    from pipeline.home import gnomon_home
    from pipeline.models.tiny import tiny_model
    from tests.conftest import write_dataset
    from tests.fleet_tiny import add_version

    monkeypatch.setenv("GNOMON_CACHE", str(tmp_path / "node-a"))
    model, tok = tiny_model("tiny:llama:2x32", seed=0)
    add_version(gnomon_home(s3), "t-base", model, tok, "base")
    save_fleet(Fleet(name="tiny", members=(FleetMember("t-base", kind="base"),)), s3)
    register_dataset(write_dataset(tmp_path / "mood.jsonl", labels=("hi", "lo")), "mood", s3, positive="hi")
    monkeypatch.setenv("GNOMON_CACHE", str(tmp_path / "node-b"))   # another node
    assert list_fleets(s3) == ["tiny"] and load_fleet("tiny", s3).ids == ["t-base"]
    ds = load_dataset("mood", home=s3)
    assert ds.contrast == ("hi", "lo") and ds.table.num_rows == 24
    assert "mood" in [c.name for c in list_concepts(s3)]


def test_a_file_the_driver_shares_is_read_by_another_node(s3: str, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """What evaluation hands its workers (a direction file under the driver's view of the
    home) reaches a node with its own cache through the bucket."""
    from pipeline.atomic import write_bytes
    from pipeline.home import gnomon_home, push_shared, shared_copy

    monkeypatch.setenv("GNOMON_CACHE", str(tmp_path / "driver"))
    sent = push_shared(write_bytes(gnomon_home(s3) / "evals" / "directions" / "d.safetensors", b"v1"), s3)
    monkeypatch.setenv("GNOMON_CACHE", str(tmp_path / "worker"))
    got = shared_copy(str(sent), s3)
    assert got != sent and got.read_bytes() == b"v1" and got.is_relative_to(tmp_path / "worker")
    assert shared_copy(tmp_path / "elsewhere.txt", tmp_path / "local-home") == tmp_path / "elsewhere.txt"


def test_many_small_objects_are_read_in_order(s3: str, tmp_path: Path) -> None:
    """``read_jsons`` overlaps the GETs on a bucket and still answers in the order asked,
    with None for a missing object, a non-JSON object and a JSON list, as one by one does
    (and as a local home does)."""
    from pipeline.storage import READ_THREADS, Storage

    answers = []
    for where in (s3, str(tmp_path / "local")):
        st = Storage.open(where)
        rels = [f"m/part-{i:03d}.json" for i in range(3 * READ_THREADS)]
        for i, rel in enumerate(rels):
            st.write_json(rel, {"i": i})
        st.write_bytes("m/not-json.json", b"{oops")
        st.write_json("m/list.json", [1, 2])
        asked = [*reversed(rels), "m/missing.json", "m/not-json.json", "m/list.json", rels[5]]
        got = st.read_jsons(asked)
        assert got == [st.read_json(r) for r in asked]
        assert [g["i"] for g in got[:len(rels)]] == list(reversed(range(len(rels))))
        assert got[len(rels):] == [None, None, None, {"i": 5}]
        answers.append(got)
    assert answers[0] == answers[1]


def test_large_objects_come_down_in_few_ranged_gets(s3: str, tmp_path: Path, moto_log: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A model version's weights are downloaded in ``REMOTE_BLOCK`` ranged GETs, byte for byte;
    ``read_bytes`` is one GET; ``sha256`` agrees with hashlib. (An input stream's ``read()``
    fetched a 32 MB file in ~130 small GETs: 4.5 s through moto, against 0.1 s.)"""
    import pipeline.storage as storage_mod
    from pipeline.storage import Storage

    monkeypatch.setattr(storage_mod, "REMOTE_BLOCK", 1 << 20)
    data = os.urandom(5 * (1 << 20) + 123)   # 6 blocks
    rel = "models/v/model.safetensors"
    for where in (s3, str(tmp_path / "local")):
        st = Storage.open(where)
        st.write_bytes(rel, data)
        mark = len(moto_log.read_text(errors="replace").splitlines())

        def gets() -> int:
            new = moto_log.read_text(errors="replace").splitlines()[mark:]
            return sum(1 for line in new if '"GET /' in line and rel in line)
        st.download(rel, tmp_path / "weights")
        assert (tmp_path / "weights").read_bytes() == data
        after_download = gets()
        assert st.read_bytes(rel) == data
        after_read = gets()
        assert st.sha256(rel) == hashlib.sha256(data).hexdigest()
        if where == s3:
            assert 6 <= after_download <= 7, after_download
            assert after_read - after_download == 1
            assert 6 <= gets() - after_read <= 7
        else:
            assert gets() == 0


def test_the_s3_server_keeps_connections_alive(s3_endpoint: str, moto_log: Path) -> None:
    """The testbed's S3 server answers request after request on one connection (``python -m
    moto.server`` closed every one: a new TCP connection and a new thread per request), sends
    requests to moto's S3 application, and logs each in the shape the request counts parse."""
    import http.client
    from urllib.parse import urlparse

    url = urlparse(s3_endpoint)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
    sockets = []
    try:
        for _ in range(3):
            conn.request("GET", "/")   # ListBuckets
            r = conn.getresponse()
            body = r.read()
            assert r.status == 200 and b"ListAllMyBucketsResult" in body
            assert not r.will_close, r.getheaders()
            sockets.append(conn.sock)
    finally:
        conn.close()
    assert sockets[0] is sockets[1] is sockets[2]
    logged = [m.group(2, 3) for line in moto_log.read_text(errors="replace").splitlines()
              if (m := REQUEST_LINE.match(line)) and '" 200 ' in line]
    assert logged.count(("GET", "/")) >= 3
