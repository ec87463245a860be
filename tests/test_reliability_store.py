"""Issue 11, store and SQL: shard identity is the example set, readers read verified shards
only, `gnomon sql` cannot list or open anything outside the store, the root is bound."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch

from jobs.cli import main as cli
from jobs.stages.collect_job import CollectSpec, run_collection
from jobs.runtime.engine import LocalExecutor
from pipeline.contrast import StoreDB, contrast_set
from pipeline.store import ActivationStore, activation_table
from pipeline.types import GnomonError

M, R, D = "org/tiny", "main", "toy"


def _rows_per_example(root: Path) -> dict[tuple[str, int, str], int]:
    """(example, layer, position) -> rows, as every reader sees them (the `activations` view)."""
    with StoreDB(root, memory_limit="256MB", threads=1) as db:
        rows = db.query("SELECT example_id, layer, position, count(*) AS n FROM activations GROUP BY ALL").to_pylist()
    return {(r["example_id"], r["layer"], r["position"]): r["n"] for r in rows}


def _layout(store: ActivationStore, ids: list[str], shard_size: int, seed: int, fp: str = "fp") -> None:
    rng = np.random.default_rng(seed)
    for k, start in enumerate(range(0, len(ids), shard_size)):
        chunk = ids[start:start + shard_size]
        t = activation_table(chunk, "last", np.zeros(len(chunk)), rng.standard_normal((len(chunk), 4)), "float32")
        store.write_shard(M, R, D, 1, k, t, fingerprint=fp, positions=["last"])


@pytest.mark.parametrize("sizes", [(80, 16), (16, 80), (16, 7, 80, 33)])
def test_changing_shard_size_never_duplicates_rows(tmp_path: Path, sizes: tuple[int, ...]) -> None:
    store = ActivationStore(tmp_path)
    ids = [f"e{i:03d}" for i in range(80)]
    store.write_examples(D, pa.table({"id": ids, "label": ["a", "b"] * 40}))
    for seed, size in enumerate(sizes):
        _layout(store, ids, size, seed)
    counts = _rows_per_example(tmp_path)
    assert sorted(k[0] for k in counts) == ids and set(counts.values()) == {1}
    ids_read, _ = store.read_layer(M, R, D, 1)
    assert sorted(ids_read) == ids


def test_collect_again_with_another_shard_size_keeps_one_row_each(home: Path, small_dataset: Path) -> None:
    base = CollectSpec(model="tiny:llama", dataset=str(small_dataset), layers=(1,), batch_size=8)
    run_collection(base, LocalExecutor(), home)
    from dataclasses import replace

    again = run_collection(replace(base, shard_size=5), LocalExecutor(), home)
    assert again["written_files"] == 5  # the new layout's example sets differ: redone, not skipped
    counts = _rows_per_example(home)
    assert len(counts) == 24 * 2 and set(counts.values()) == {1}
    assert again["stored"]["rows"] == 24 * 2


def test_flipped_bytes_are_never_read(tmp_path: Path) -> None:
    store = ActivationStore(tmp_path)
    ids = [f"e{i:03d}" for i in range(40)]
    store.write_examples(D, pa.table({"id": ids, "label": ["a", "b"] * 20, "split": ["train"] * 40}))
    _layout(store, ids, 20, 0)
    victim = store.shard_path(M, R, D, 1, 1)
    data = bytearray(victim.read_bytes())
    data[len(data) // 3] ^= 0xFF
    victim.write_bytes(bytes(data))
    counts = _rows_per_example(tmp_path)
    assert len(counts) == 20  # only the intact shard
    with StoreDB(tmp_path, memory_limit="256MB", threads=1) as db:
        assert any("checksum" in s for s in db.skipped)
        with pytest.raises(GnomonError, match="checksum"):
            contrast_set(db, model=M, revision=R, dataset=D, layer=1, position="last", positive="a",
                         negative="b", split="train")
    assert not store.shard_complete(M, R, D, 1, 1, fingerprint="fp", positions=["last"])


def test_readers_take_the_current_fingerprint_only(tmp_path: Path) -> None:
    store = ActivationStore(tmp_path)
    ids = [f"e{i:03d}" for i in range(10)]
    store.write_examples(D, pa.table({"id": ids, "label": ["a", "b"] * 5, "split": ["train"] * 10}))
    _layout(store, ids, 10, 0, fp="old")
    store.write_shard(M, R, D, 2, 0, activation_table(ids, "last", np.zeros(10), np.ones((10, 4)), "float32"),
                      fingerprint="new", positions=["last"])
    with StoreDB(tmp_path, memory_limit="256MB", threads=1) as db:
        layers = db.query("SELECT DISTINCT layer FROM activations").column(0).to_pylist()
        assert layers == [2]  # newest collection's weights; layer 1 is from other weights
        with pytest.raises(GnomonError, match=r"layer 1; stored layers: \[2\]"):
            contrast_set(db, model=M, revision=R, dataset=D, layer=1, position="last", positive="a",
                         negative="b", split="train", fingerprint="new")
        cs = contrast_set(db, model=M, revision=R, dataset=D, layer=1, position="last", positive="a",
                          negative="b", split="train", fingerprint="old")
        assert len(cs.pos) == 5


@pytest.fixture
def sql_home(home: Path) -> Path:
    store = ActivationStore(home)
    ids = [f"e{i}" for i in range(6)]
    store.write_examples(D, pa.table({"id": ids, "label": ["a", "b"] * 3}))
    _layout(store, ids, 3, 0)
    (home / "secret-outside").mkdir()
    return home


def _sql(query: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    rc = cli(["sql", "--json", query])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.mark.parametrize("query", [
    "SELECT * FROM glob('gnomon-store:///**')",
    "SELECT * FROM glob('gnomon-store:///etc/*')",
    "SELECT * FROM read_text('gnomon-store:///etc/passwd')",
    "SELECT * FROM read_text('gnomon-store://{root}/../../etc/passwd')",
    "SELECT * FROM glob('gnomon-store://{root}*')",
    "SELECT * FROM glob('gnomon-store://{root}/link/*')",
    "SELECT * FROM read_text('gnomon-store://{root}/link/passwd')",
])
def test_sql_cannot_list_or_open_outside_the_store(sql_home: Path, query: str,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    (sql_home / "link").symlink_to("/etc")
    rc, out, err = _sql(query.format(root=sql_home), capsys)
    names = json.loads(out) if rc == 0 else []
    assert rc in (0, 2)
    assert not any("passwd" in json.dumps(r) or "/etc/" in json.dumps(r) for r in names)
    if rc == 2:
        assert err.startswith("gnomon sql: error:") and err.count("\n") == 1 and "Traceback" not in err


def test_sql_lists_inside_the_store_and_refuses_outside_in_one_line(sql_home: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = _sql(f"SELECT count(*) AS n FROM glob('gnomon-store://{sql_home}/activations/**') WHERE file LIKE '%.parquet'", capsys)
    assert rc == 0 and json.loads(out) == [{"n": 2}]
    rc, _, err = _sql("SELECT * FROM read_text('gnomon-store:///etc/passwd')", capsys)
    assert rc == 2 and "outside the gnomon store" in err and "Traceback" not in err and err.count("\n") == 1


def test_a_bad_symlink_or_garbage_file_does_not_break_queries(sql_home: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    layer = sql_home / "activations" / "model=org--tiny" / "revision=main" / "dataset=toy" / "layer=1"
    (layer / "part-00009.parquet").symlink_to("/nonexistent/file")
    (layer / "part-00008.parquet").write_bytes(b"not parquet")
    bad_ex = sql_home / "examples" / "dataset=junk"
    bad_ex.mkdir()
    (bad_ex / "examples.parquet").write_bytes(b"PAR1garbage")
    rc, out, err = _sql("SELECT count(*) AS n FROM activations", capsys)
    assert rc == 0 and json.loads(out) == [{"n": 6}], err
    rc, out, err = _sql("SELECT count(*) AS n FROM examples", capsys)
    assert rc == 0 and json.loads(out) == [{"n": 6}], err


def test_store_root_with_a_quote_is_bound_not_pasted(tmp_path: Path) -> None:
    root = tmp_path / "it's a home"
    store = ActivationStore(root)
    ids = [f"e{i}" for i in range(8)]
    store.write_examples(D, pa.table({"id": ids, "label": ["a", "b"] * 4, "split": ["train"] * 8}))
    _layout(store, ids, 8, 0)
    with StoreDB(root, memory_limit="256MB", threads=1) as db:
        assert db.query("SELECT count(*) FROM activations").column(0).to_pylist() == [8]
        assert db.query("SELECT count(*) FROM examples").column(0).to_pylist() == [8]
        cs = contrast_set(db, model=M, revision=R, dataset=D, layer=1, position="last", positive="a",
                          negative="b", split="train")
    assert len(cs.pos) == len(cs.neg) == 4


def test_nan_weights_are_refused_at_collection_naming_layer_and_example(home: Path, small_dataset: Path) -> None:
    from pipeline.models import load_model

    lm = load_model("tiny:llama")  # a private copy: its weights are spoiled below
    with torch.no_grad():
        lm.adapter.get_blocks(lm.model)[1].mlp.down_proj.weight.fill_(float("nan"))  # block 1 -> layer 2
    spec = CollectSpec(model="tiny:llama", dataset=str(small_dataset), layers=(1, 2), shard_size=100)
    with pytest.raises(GnomonError, match=r"NaN or infinite activations at layer 2 for example '(pos|neg)-\d+'"):
        run_collection(spec, LocalExecutor(), home, lm=lm)
    assert 2 not in {m["layer"] for m in ActivationStore(home).valid_shards()[0]}  # nothing stored for it


def test_float16_overflow_is_refused() -> None:
    acts = np.ones((3, 4), np.float32)
    acts[1, 2] = 1e6
    with pytest.raises(GnomonError, match=r"'b'.*beyond float16's range"):
        activation_table(["a", "b", "c"], "last", np.zeros(3), acts, "float16")
    assert activation_table(["a", "b", "c"], "last", np.zeros(3), acts, "float32").num_rows == 3


def test_store_never_writes_non_finite_rows(tmp_path: Path) -> None:
    store = ActivationStore(tmp_path)
    t = activation_table(["a"], "last", np.zeros(1), np.ones((1, 4)), "float32")
    arr = t.column("act").combine_chunks()
    vals = arr.flatten().to_numpy().copy()
    vals[0] = np.nan
    bad = t.set_column(3, "act", pa.FixedSizeListArray.from_arrays(pa.array(vals, pa.float32()), 4))
    with pytest.raises(GnomonError, match="NaN"):
        store.write_shard(M, R, D, 1, 0, bad, fingerprint="fp", positions=["last"])
    assert not list(tmp_path.rglob("*.parquet"))
