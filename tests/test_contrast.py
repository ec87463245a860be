"""DuckDB contrast sets checked against a direct pyarrow/numpy reference, and `gnomon sql`."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs.cli import main as cli
from pipeline.contrast import StoreDB, contrast_set, contrast_splits
from pipeline.store import ActivationStore, activation_table
from pipeline.types import GnomonError

M, R, W = "org/tiny", "rev1", 16
KW = dict(model=M, revision=R, layer=2, position="last", positive="yes", negative="no")


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two datasets at layers 1-2, rows shuffled across 3 shards so storage order != pair order.

    ``pairs``: 40 pairs (one yes, one no) plus 10 rows of a third label, splits by pair.
    ``unp``: 31 yes, 17 no, no pairs. ``holey``: pairs, one missing its ``no`` half.
    """
    rng = np.random.default_rng(0)
    store = ActivationStore(tmp_path_factory.mktemp("contrast") / "store")
    datasets = {
        "pairs": [(f"p{i}", "yes" if i % 2 == 0 else "no", f"q{i // 2:03d}", ("train", "val", "test")[(i // 2) % 3])
                  for i in range(80)] + [(f"o{i}", "other", None, "train") for i in range(10)],
        "unp": [(f"u{i}", "yes" if i < 31 else "no", None, "train" if i % 4 else "test") for i in range(48)],
        "holey": [(f"h{i}", "yes" if i % 2 == 0 else "no", f"k{i // 2}", "train") for i in range(11)],
    }
    for name, rows in datasets.items():
        ids, labels, pairs, splits = map(list, zip(*rows))
        store.write_examples(name, pa.table({"id": ids, "label": labels, "pair": pairs, "split": splits,
                                             "text": [f"text of {i}" for i in ids]}))
        for layer in (1, 2):
            order = rng.permutation(len(ids))
            for shard, chunk in enumerate(np.array_split(order, 3)):
                n = len(chunk)
                # every example has a `last` and a `mean` row; the `mean` row must never leak in
                t = activation_table([ids[i] for i in chunk] * 2, ["last"] * n + ["mean"] * n,
                                     np.r_[np.full(n, 5), np.full(n, -1)],
                                     rng.standard_normal((2 * n, W)).astype(np.float32), dtype="float32")
                store.write_shard(M, R, name, layer, shard, t, fingerprint="fp", positions=["last", "mean"])
    return store.root


@pytest.fixture(scope="module")
def db(root: Path):
    with StoreDB(root, memory_limit="256MB", threads=2) as db:
        yield db


def reference(root: Path, dataset: str, layer: int = 2, position: str = "last") -> dict[str, dict]:
    """id -> {label, pair, split, vec}, read with pyarrow directly (no DuckDB)."""
    layer_dir = ActivationStore(root).shard_path(M, R, dataset, layer, 0).parent
    acts = pq.read_table(sorted(layer_dir.glob("*.parquet"))).to_pylist()
    ex = {r["id"]: r for r in ActivationStore(root).read_examples(dataset).to_pylist()}
    return {a["example_id"]: {**ex[a["example_id"]], "vec": np.array(a["act"], np.float32)}
            for a in acts if a["position"] == position}


def test_paired_matches_reference(root: Path, db: StoreDB) -> None:
    ref = reference(root, "pairs")
    for split in ("train", "val", None):
        cs = contrast_set(db, dataset="pairs", split=split, **KW)
        rows = [r for r in ref.values() if r["label"] in ("yes", "no") and split in (None, r["split"])]
        by_pair = sorted({r["pair"] for r in rows})
        want_pos = [next(r["id"] for r in rows if r["pair"] == p and r["label"] == "yes") for p in by_pair]
        want_neg = [next(r["id"] for r in rows if r["pair"] == p and r["label"] == "no") for p in by_pair]
        assert cs.paired and cs.dropped == 0
        assert cs.pos_ids == want_pos and cs.neg_ids == want_neg
        assert np.array_equal(cs.pos, np.stack([ref[i]["vec"] for i in want_pos]))
        assert np.array_equal(cs.neg, np.stack([ref[i]["vec"] for i in want_neg]))
        assert cs.pos.dtype == np.float32 and cs.pos.shape == (len(by_pair), W)


@pytest.mark.parametrize("seed", [0, 7])
def test_balanced_unpaired_matches_reference(root: Path, db: StoreDB, seed: int) -> None:
    ref = reference(root, "unp")
    cs = contrast_set(db, dataset="unp", split="train", seed=seed, **KW)
    rows = [r for r in ref.values() if r["split"] == "train"]
    pos = [r["id"] for r in rows if r["label"] == "yes"]
    neg = [r["id"] for r in rows if r["label"] == "no"]
    k = min(len(pos), len(neg))

    def keep(ids: list[str]) -> list[str]:  # the documented rule: first k by md5("seed:id"), then sorted
        return sorted(sorted(ids, key=lambda i: hashlib.md5(f"{seed}:{i}".encode()).hexdigest())[:k])

    assert not cs.paired and cs.pos_ids == keep(pos) and cs.neg_ids == keep(neg)
    assert cs.dropped == len(pos) + len(neg) - 2 * k > 0
    assert np.array_equal(cs.pos, np.stack([ref[i]["vec"] for i in cs.pos_ids]))
    assert np.array_equal(cs.neg, np.stack([ref[i]["vec"] for i in cs.neg_ids]))


def test_unbalanced_keeps_everything(db: StoreDB) -> None:
    cs = contrast_set(db, dataset="unp", split=None, balance=False, **KW)
    assert (len(cs.pos_ids), len(cs.neg_ids), cs.dropped) == (31, 17, 0)
    seeds = {contrast_set(db, dataset="unp", split=None, seed=s, **KW).neg_ids.__len__() for s in (0, 1)}
    assert seeds == {17}


def test_incomplete_pairs(db: StoreDB) -> None:
    auto = contrast_set(db, dataset="holey", split=None, **KW)  # h10 has no partner -> unpaired
    assert not auto.paired and (len(auto.pos_ids), len(auto.neg_ids), auto.dropped) == (5, 5, 1)
    forced = contrast_set(db, dataset="holey", split=None, paired=True, **KW)
    assert forced.paired and forced.dropped == 1
    assert forced.pos_ids == [f"h{2 * i}" for i in range(5)] and forced.neg_ids == [f"h{2 * i + 1}" for i in range(5)]


def test_splits_equal_single_calls(db: StoreDB) -> None:
    sets = contrast_splits(db, dataset="pairs", **KW)
    assert list(sets) == ["train", "val", "test"]
    for split, cs in sets.items():
        one = contrast_set(db, dataset="pairs", split=split, **KW)
        assert cs.pos_ids == one.pos_ids and np.array_equal(cs.neg, one.neg)
    assert sum(len(cs.pos_ids) for cs in sets.values()) == 40
    only = contrast_splits(db, dataset="unp", **KW)  # no `val` rows: left out
    assert list(only) == ["train", "test"]


def test_clear_errors(db: StoreDB) -> None:
    with pytest.raises(GnomonError, match=r"stored layers: \[1, 2\]"):
        contrast_set(db, dataset="pairs", split=None, **{**KW, "layer": 7})
    with pytest.raises(GnomonError, match="stored layers: none"):
        contrast_set(db, dataset="nope", split=None, **KW)
    with pytest.raises(GnomonError, match="'maybe' has no rows"):
        contrast_set(db, dataset="pairs", split=None, **{**KW, "negative": "maybe"})
    with pytest.raises(GnomonError, match="unknown position"):
        contrast_set(db, dataset="pairs", split=None, **{**KW, "position": "first"})
    with pytest.raises(GnomonError, match="has no 'tok' rows"):
        contrast_set(db, dataset="pairs", split=None, **{**KW, "position": "tok"})
    with pytest.raises(GnomonError):
        contrast_set(db, dataset="../pairs", split=None, **KW)


def test_mean_position_and_layer_are_selected(root: Path, db: StoreDB) -> None:
    ref = reference(root, "pairs", layer=1, position="mean")
    cs = contrast_set(db, dataset="pairs", split=None, **{**KW, "layer": 1, "position": "mean"})
    assert np.array_equal(cs.pos, np.stack([ref[i]["vec"] for i in cs.pos_ids]))


def test_connection_cannot_write(root: Path, db: StoreDB) -> None:
    before = sorted(p for p in root.rglob("*"))
    for sql in (f"COPY (SELECT 1) TO '{root}/x.csv'", f"COPY (SELECT 1) TO 'gnomon-store://{root}/x.csv'",
                f"ATTACH '{root}/x.duckdb' AS x", "SET disabled_filesystems = ''", "SET memory_limit = '64GB'"):
        with pytest.raises(Exception):
            db.query(sql)
    assert sorted(p for p in root.rglob("*")) == before
    assert db.query("SELECT count(*) AS n FROM activations WHERE layer = $l", {"l": 2}).column("n")[0].as_py() == \
        2 * (90 + 48 + 11)


def test_empty_store_has_views(tmp_path: Path) -> None:
    with StoreDB(tmp_path) as db:
        assert db.query("SELECT count(*) AS n FROM activations").column("n")[0].as_py() == 0
        with pytest.raises(GnomonError, match="stored layers: none"):
            contrast_set(db, dataset="pairs", split=None, **KW)


def test_sql_command(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    q = "SELECT dataset, count(*) AS n FROM activations WHERE layer = 2 AND position = 'last' GROUP BY 1 ORDER BY 1"
    assert cli(["--home", str(root), "sql", q, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == [{"dataset": "holey", "n": 11}, {"dataset": "pairs", "n": 90},
                                                   {"dataset": "unp", "n": 48}]
    assert cli(["--home", str(root), "sql", "SELECT id, label FROM examples ORDER BY id", "--limit", "2"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["id", "label"] and len(out) == 5 and "more not shown" in out[-1]
    before = sorted(root.rglob("*"))
    for bad in (f"COPY (SELECT 1) TO '{root}/x.csv'", "SELECT 1; SELECT 2", "PRAGMA version",
                "CREATE TABLE t AS SELECT 1", f"ATTACH '{root}/x.duckdb'", "DROP VIEW activations"):
        assert cli(["--home", str(root), "sql", bad]) == 2
        assert "error" in capsys.readouterr().err
    assert sorted(root.rglob("*")) == before


def _half_store(tmp_path: Path) -> ActivationStore:
    """float16 shards (the collection default), pairs shuffled across 2 shards."""
    rng = np.random.default_rng(1)
    store = ActivationStore(tmp_path / "half")
    ids = [f"x{i}" for i in range(20)]
    store.write_examples("half", pa.table({"id": ids, "label": ["yes", "no"] * 10,
                                           "pair": [f"q{i // 2}" for i in range(20)]}))
    for shard, chunk in enumerate(np.array_split(rng.permutation(20), 2)):
        t = activation_table([ids[i] for i in chunk], "last", np.full(len(chunk), 3),
                             rng.standard_normal((len(chunk), W)) * 300)  # float16 rounds these
        store.write_shard(M, R, "half", 2, shard, t, fingerprint="fp", positions=["last"])
    return store


def test_dtypes_are_exact(tmp_path: Path) -> None:
    store = _half_store(tmp_path)
    ref = reference(store.root, "half")
    with StoreDB(store.root, threads=2) as db:
        sets = {dt: contrast_set(db, dataset="half", split=None, dtype=dt, **KW) for dt in (None, "float16", "float32")}
        with pytest.raises(GnomonError, match="dtype"):
            contrast_set(db, dataset="half", split=None, dtype="float64", **KW)
    want = np.stack([ref[i]["vec"] for i in sets[None].pos_ids])  # float16 values, widened exactly
    assert sets[None].pos.dtype == sets["float16"].pos.dtype == np.float16
    assert sets["float32"].pos.dtype == np.float32
    for cs in sets.values():
        assert cs.paired and len(cs.pos_ids) == 10 and np.array_equal(cs.pos.astype(np.float32), want)


def test_shard_rewritten_while_reading_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A collection rerun replaces a shard (same ids, new vectors) between the query and the read."""
    store = _half_store(tmp_path)
    path = store.shard_path(M, R, "half", 2, 0)
    real = pq.read_table
    rewritten: list[bool] = []

    def read_after_rewrite(source: object, *args: object, **kwargs: object) -> pa.Table:
        if source == path and not rewritten:
            t = real(path)
            acts = np.zeros((t.num_rows, W), np.float32)
            store.write_shard(M, R, "half", 2, 0, activation_table(t.column("example_id").to_pylist(), "last",
                              np.full(t.num_rows, 3), acts), fingerprint="fp2", positions=["last"])
            rewritten.append(True)
        return real(source, *args, **kwargs)

    monkeypatch.setattr(pq, "read_table", read_after_rewrite)  # the store reads shards through pyarrow.parquet
    with StoreDB(store.root, threads=1) as db:
        with pytest.raises(GnomonError, match="changed while"):
            contrast_set(db, dataset="half", split=None, **KW)
        assert rewritten
        assert not contrast_set(db, dataset="half", split=None, **KW).pos.any(axis=1).all()  # a rerun reads the new shard
