"""The Parquet activation store: round trips, atomicity, manifests, path safety."""

from __future__ import annotations

import hashlib
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.store import ActivationStore, activation_table, model_slug
from pipeline.store_keys import KEY
from pipeline.types import GnomonError

M, R, D = "org/tiny-model", "main", "toy"


def _table(n: int, d: int, seed: int, dtype: str = "float32", start: int = 0) -> tuple[pa.Table, np.ndarray]:
    acts = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32) * 3
    ids = [f"e{start + i}" for i in range(n)]
    return activation_table(ids, "last", np.arange(n) + 4, acts, dtype=dtype), acts


@pytest.fixture
def store(tmp_path: Path) -> ActivationStore:
    return ActivationStore(tmp_path / "store")


def _write(store: ActivationStore, table: pa.Table, layer: int = 3, shard: int = 0, fp: str = "fp1"):
    return store.write_shard(M, R, D, layer, shard, table, fingerprint=fp, positions=["last"])


def test_float32_round_trip_is_exact(store: ActivationStore) -> None:
    t, acts = _table(37, 24, seed=0)
    _write(store, t)
    ids, back = store.read_layer(M, R, D, 3)
    assert ids == [f"e{i}" for i in range(37)]
    assert back.dtype == np.float32 and np.array_equal(back, acts)


def test_float16_round_trip_within_half_precision(store: ActivationStore) -> None:
    t, acts = _table(37, 24, seed=1, dtype="float16")
    assert t.schema.field("act").type == pa.list_(pa.float16(), 24)
    _write(store, t)
    _, back = store.read_layer(M, R, D, 3)
    assert np.array_equal(back, acts.astype(np.float16).astype(np.float32))
    np.testing.assert_allclose(back, acts, rtol=2**-10, atol=2**-14)
    assert not np.array_equal(back, acts)  # it really was stored in half precision


def test_act_column_is_plain_without_stats_or_dictionary(store: ActivationStore) -> None:
    rec = _write(store, _table(10, 8, seed=2, dtype="float16")[0])
    col = pq.ParquetFile(rec.path).metadata.row_group(0).column(3)
    assert col.path_in_schema.startswith("act")
    assert not col.is_stats_set
    assert "BYTE_STREAM_SPLIT" not in col.encodings and "RLE_DICTIONARY" not in col.encodings
    # DuckDB reads the float16 vectors back (it cannot read BYTE_STREAM_SPLIT float16).
    got = duckdb.connect().sql(f"SELECT act FROM read_parquet('{rec.path}') LIMIT 1").fetchall()[0][0]
    assert len(got) == 8


def test_manifest_records_checksums(store: ActivationStore) -> None:
    t, _ = _table(12, 8, seed=3, dtype="float16")
    rec = _write(store, t)
    (m,) = store.manifest(M, R, D)
    assert m["rows"] == rec.rows == 12 and m["bytes"] == rec.path.stat().st_size == rec.bytes
    assert m["sha256"] == hashlib.sha256(rec.path.read_bytes()).hexdigest() == rec.sha256
    assert m["ids_sha256"] == hashlib.sha256("\n".join(sorted(f"e{i}" for i in range(12))).encode()).hexdigest()
    assert (m["dtype"], m["hidden_size"], m["positions"], m["fingerprint"]) == ("float16", 8, ["last"], "fp1")
    assert store.summary() == {"rows": 12, "bytes": rec.bytes, "files": 1}


def test_shard_complete_checks_fingerprint_positions_and_bytes(store: ActivationStore) -> None:
    kw = dict(fingerprint="fp1", positions=["last"])
    assert not store.shard_complete(M, R, D, 3, 0, **kw)
    rec = _write(store, _table(20, 8, seed=4)[0])
    assert store.shard_complete(M, R, D, 3, 0, **kw)
    assert not store.shard_complete(M, R, D, 3, 0, fingerprint="other", positions=["last"])
    assert not store.shard_complete(M, R, D, 3, 0, fingerprint="fp1", positions=["last", "mean"])
    # Same size, one byte flipped: only the checksum notices.
    data = bytearray(rec.path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    rec.path.write_bytes(bytes(data))
    assert not store.shard_complete(M, R, D, 3, 0, **kw)
    assert store.shard_complete(M, R, D, 3, 0, verify=False, **kw)


def test_truncated_shard_is_detected_and_redone_without_duplicates(store: ActivationStore) -> None:
    t, acts = _table(50, 8, seed=5)
    rec = _write(store, t)
    rec.path.write_bytes(rec.path.read_bytes()[: rec.bytes // 2])  # a crash mid-copy
    assert not store.shard_complete(M, R, D, 3, 0, fingerprint="fp1", positions=["last"], verify=False)
    _write(store, t)  # the job redoes the shard
    assert store.shard_complete(M, R, D, 3, 0, fingerprint="fp1", positions=["last"])
    ids, back = store.read_layer(M, R, D, 3)
    assert len(ids) == 50 and np.array_equal(back, acts)


def test_rewrite_replaces_rows_and_leaves_no_temp_files(store: ActivationStore) -> None:
    _write(store, _table(30, 8, seed=6)[0])
    t2, acts2 = _table(30, 8, seed=7)
    rec = _write(store, t2)
    assert sorted(p.name for p in rec.path.parent.iterdir()) == ["part-00000.parquet"]
    n = duckdb.connect().sql(f"SELECT count(*) FROM read_parquet('{store.root}/activations/**/*.parquet')").fetchall()[0][0]
    assert n == 30
    assert np.array_equal(store.read_layer(M, R, D, 3)[1], acts2)
    assert len(store.manifest()) == 1


def test_duckdb_hive_count_per_layer(store: ActivationStore) -> None:
    for layer, n in ((2, 11), (3, 17)):
        for shard in range(3):
            _write(store, _table(n, 8, seed=layer * 10 + shard, start=shard * 100)[0], layer=layer, shard=shard)
    q = (f"SELECT count(*) FROM read_parquet('{store.root}/activations/**/*.parquet', hive_partitioning=true) "
         "WHERE layer=3")
    assert duckdb.connect().sql(q).fetchall()[0][0] == 3 * 17
    assert store.layers(M, R, D) == [2, 3]
    assert store.summary(M, R, D)["rows"] == 3 * (11 + 17)


def test_shard_positions_must_be_declared(store: ActivationStore) -> None:
    t = activation_table(["a", "a"], ["last", "mean"], np.array([3, -1]), np.ones((2, 4)))
    with pytest.raises(GnomonError, match="positions"):
        store.write_shard(M, R, D, 0, 0, t, fingerprint="f", positions=["last"])
    store.write_shard(M, R, D, 0, 0, t, fingerprint="f", positions=["last", "mean"])
    assert store.read_layer(M, R, D, 0, position="mean")[0] == ["a"]


def test_examples_written_once(store: ActivationStore) -> None:
    ex = pa.table({"id": ["a", "b"], "text": ["x", "y"], "label": ["p", "n"], "pair": [1, 1],
                   "messages": [[{"role": "user", "content": "hi"}], None]})
    path = store.write_examples(D, ex)
    stamp = path.stat().st_mtime_ns, path.stat().st_ino
    assert store.write_examples(D, ex) == path
    assert (path.stat().st_mtime_ns, path.stat().st_ino) == stamp  # identical content: no-op
    back = store.read_examples(D)
    assert back.column("pair").to_pylist() == ["1", "1"] and back.column("split").null_count == 2
    assert back.column("messages").to_pylist()[0] == '[{"role": "user", "content": "hi"}]'
    changed = ex.set_column(2, "label", pa.array(["p", "p"]))
    with pytest.raises(GnomonError, match="different examples"):
        store.write_examples(D, changed)
    store.write_examples(D, changed, overwrite=True)
    assert store.read_examples(D).column("label").to_pylist() == ["p", "p"]
    with pytest.raises(GnomonError, match="duplicate"):
        store.write_examples("dup", pa.table({"id": ["a", "a"], "label": ["p", "n"]}))


@pytest.mark.parametrize("bad", ["../x", "a/b", "/abs", "..", ".hidden", "a b", ""])
def test_path_traversal_rejected(store: ActivationStore, bad: str) -> None:
    t, _ = _table(2, 4, seed=8)
    with pytest.raises(GnomonError):
        store.write_shard(M, R, bad, 0, 0, t, fingerprint="f", positions=["last"])
    with pytest.raises(GnomonError):
        store.write_shard(M, bad, D, 0, 0, t, fingerprint="f", positions=["last"])
    with pytest.raises(GnomonError):
        store.write_examples(bad, pa.table({"id": ["a"], "label": ["p"]}))
    with pytest.raises(GnomonError):
        store.write_shard(M, R, D, -1, 0, t, fingerprint="f", positions=["last"])
    assert not (store.root.parent / "x").exists()


@settings(max_examples=60, deadline=None)
@given(st.text(min_size=1, max_size=40))
def test_model_slug_stays_inside_root(model_id: str) -> None:
    root = Path("/tmp/gnomon-store-root")
    store = ActivationStore(root)
    try:
        slug = model_slug(model_id)
    except GnomonError:
        return
    assert model_slug(slug) == slug and "/" not in slug and slug not in (".", "..")
    # the store's folder is the model's key (issue 21: never the slug alone), inside the root
    key = store.key(model_id)
    assert KEY.fullmatch(key) and key not in (".", "..")
    path = store.shard_path(model_id, R, D, 1, 2).resolve()
    assert path.is_relative_to(root) and path.parts[len(root.parts) + 1] == f"model={key}"


def test_model_slug_examples() -> None:
    assert model_slug("HuggingFaceTB/SmolLM2-135M-Instruct") == "HuggingFaceTB--SmolLM2-135M-Instruct"
    assert model_slug("../../etc/passwd") == "etc--passwd"
    with pytest.raises(GnomonError):
        model_slug("/../")


def test_store_root_uris(tmp_path: Path) -> None:
    assert ActivationStore(f"file://{tmp_path}").root == tmp_path.resolve()
    # object storage is a root too (tests/test_storage_s3.py); an unknown scheme is refused in one line
    with pytest.raises(GnomonError, match="unknown storage scheme 'ftp://'.*s3://") as e:
        ActivationStore("ftp://host/store")
    assert "\n" not in str(e.value)
