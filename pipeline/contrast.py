"""Contrast sets from the activation store, assembled by DuckDB.

A contrast set is the two clouds of vectors a fitting method needs: activations of the
examples labelled ``positive`` and of those labelled ``negative``, at one model,
revision, layer and position, optionally in one split. For paired datasets (each
``pair`` holds one example of each label) row i of ``pos`` and row i of ``neg`` are the
two halves of one pair, which paired methods (difference-of-means on pair differences,
PCA of differences as in Zou et al. 2023, "Representation Engineering", arXiv:2310.01405)
rely on. Unpaired sets are balanced by deterministic downsampling of the larger class,
so a class-prior imbalance does not leak into the direction.

How the work is split: SQL does everything that is about *which* rows -- selection,
the join with ``examples``, pairing, seeded balancing, ordering -- over metadata only:
one query selects the rows of every requested split from the layer's shards (listed from
the hive layout, so other layers are never scanned) and returns each row's (file index,
row number); the per-split pairing/balancing queries then run over that small result
held as Arrow. The vectors are gathered by those coordinates, each file's ``act`` column
read once, straight from the Parquet pages into one preallocated array (no per-row
Python). Moving the 1-2 KB vector payload through DuckDB's join and sort costs 3-4x a
raw read (DuckDB has no float16 type, so it widens every list first). With
``dtype=None`` the vectors stay float16 as stored and the whole call costs ~1.5x a raw
read of the bytes; float32 output adds the widening (see ``bench/contrast.py``).

>>> with StoreDB(gnomon_home()) as db:                                # doctest: +SKIP
...     cs = contrast_set(db, model="org/m", revision="main", dataset="sst", layer=3,
...                       position="last", positive="pos", negative="neg", split="train")
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.store import ActivationStore, check_name
from pipeline.store_db import StoreDB
from pipeline.types import POSITIONS, GnomonError

__all__ = ["ContrastSet", "StoreDB", "contrast_set", "contrast_splits"]

@dataclass(frozen=True)
class ContrastSet:
    """Vectors of the two classes of a concept at one layer and position."""

    pos: np.ndarray
    """(n, d) rows labelled ``positive``, float32 unless another ``dtype`` was asked for."""
    neg: np.ndarray
    """(m, d) rows labelled ``negative``; m == n when paired or balanced."""
    pos_ids: list[str]
    neg_ids: list[str]
    paired: bool
    """Row i of ``pos`` and of ``neg`` share a ``pair`` (ordered by pair)."""
    dropped: int
    """Rows removed by balancing (unpaired) or as members of incomplete pairs (paired)."""
    model: str
    revision: str
    dataset: str
    layer: int
    position: str
    split: str | None
    positive: str
    negative: str


# The selection, once for every requested split: rows of the layer's shards (``$files``;
# ``file_index`` is the position in that list) at one position, joined with their labels.
_SEL = """SELECT a.file_index::INTEGER AS fi, a.file_row_number AS r, a.example_id AS id, a.token_index AS t,
       e.label = $positive AS is_pos, e.pair AS pair, e.split AS split
FROM read_parquet($files, file_row_number=true) a JOIN examples e ON e.dataset = $dataset AND e.id = a.example_id
WHERE a.position = $position AND e.label IN ($positive, $negative)
  AND ($all_rows OR list_contains($splits::VARCHAR[], e.split))"""
# Per split, over the selection held as Arrow: complete pairs (one row of each label)...
_SPLIT = "s AS (SELECT * FROM {sel} WHERE $split::VARCHAR IS NULL OR split = $split::VARCHAR)"
_PAIRED = f"""WITH {_SPLIT}, good AS (SELECT pair FROM s WHERE pair IS NOT NULL GROUP BY pair
  HAVING count(*) = 2 AND count(*) FILTER (WHERE is_pos) = 1)
SELECT fi, r, id, is_pos FROM s SEMI JOIN good USING (pair) ORDER BY NOT is_pos, pair"""
# ...or balancing: rank each class by md5(seed:id) (stable across DuckDB versions,
# reproducible outside SQL) and keep the first min(n_pos, n_neg) of each.
_UNPAIRED = f"""WITH {_SPLIT},
ranked AS (SELECT *, row_number() OVER (PARTITION BY is_pos ORDER BY md5($seed || ':' || id), t) AS k FROM s)
SELECT fi, r, id, is_pos FROM ranked WHERE k <= $keep ORDER BY NOT is_pos, id, t"""


def _q(db: StoreDB, sql: str, params: dict) -> pa.Table:
    """Bind only the ``$names`` the statement uses (DuckDB refuses extra ones)."""
    used = set(re.findall(r"\$(\w+)", sql))
    return db.query(sql, {k: v for k, v in params.items() if k in used})


def _shards(db: StoreDB, p: dict, fingerprint: str | None) -> list[str]:
    """The layer's verified shard files, relative to the root (manifest, checksum and fingerprint hold; one
    shard layout: see ``ActivationStore.valid_shards``). A shard that fails its checks
    is an error, not a silently smaller contrast set."""
    store = ActivationStore(db.storage.local or db.root)
    found, problems = store.valid_shards(p["model"], p["revision"], p["dataset"], p["layer"], fingerprint)
    if problems:
        raise GnomonError(f"{problems[0]}; run `gnomon store repair` to collect it again")
    if not found:
        mine = store.valid_shards(p["model"], p["revision"], p["dataset"], fingerprint=fingerprint)[0]
        other = [] if mine or fingerprint is None else store.valid_shards(p["model"], p["revision"], p["dataset"])[0]
        stored = sorted({m["layer"] for m in mine or other})
        note = f" (from other weights: fingerprint {other[0]['fingerprint']}, not {fingerprint})" if other else ""
        raise GnomonError(f"nothing in the store {db.root} for model {p['model']} revision {p['revision']} dataset "
                          f"{p['dataset']} layer {p['layer']}; stored layers: {stored or 'none'}{note}")
    return [m["path"] for m in found]


def _stamp(db: StoreDB, files: list[str]) -> list[tuple]:
    """What changes when a shard is rewritten (atomic rename: a new inode) or edited."""
    return [db.storage.stamp(f) for f in files]


def _plan(db: StoreDB, sel: str, p: dict, counts: dict, paired: bool | None,
          balance: bool) -> tuple[pa.Table, bool, int]:
    """Rows to gather for one split, in output order (positives first), whether paired, rows dropped."""
    n_pos, n_neg = counts.get(True, 0), counts.get(False, 0)
    for label, n in ((p["positive"], n_pos), (p["negative"], n_neg)):
        if n == 0:
            present = _q(db, "SELECT DISTINCT label FROM examples WHERE dataset = $dataset ORDER BY 1", p)
            raise GnomonError(f"label {label!r} has no rows in {p['dataset']} (split {p['split']}) "
                              f"at layer {p['layer']}/{p['position']}: a contrast needs both classes; "
                              f"labels present: {present.column(0).to_pylist()}")
    plan = None
    if paired is not False:
        plan = _q(db, _PAIRED.format(sel=sel), p)
        if paired and plan.num_rows == 0:
            raise GnomonError(f"paired=True but no pair in {p['dataset']} has one {p['positive']!r} "
                              f"and one {p['negative']!r} example")
    use_pairs = paired is True or (plan is not None and plan.num_rows == n_pos + n_neg)
    if not use_pairs:
        keep = min(n_pos, n_neg) if balance else n_pos + n_neg
        plan = _q(db, _UNPAIRED.format(sel=sel), {**p, "keep": keep})
    assert plan is not None
    return plan, use_pairs, n_pos + n_neg - plan.num_rows


def _gather(db: StoreDB, files: list[str], plan: pa.Table, dtype: str | None) -> np.ndarray:
    """Vectors at ``plan``'s (file index, row) coordinates, (n, d), in plan order.

    Only the ``act`` column is read, each file once, in parallel threads (pyarrow's
    decode and numpy's copies release the GIL). Each file's rows are picked from the
    zero-copy view of its values and written, converted if asked, into their slots of
    one preallocated array: the float16 -> float32 widening is fused into that copy.
    """
    which = plan.column("fi").to_numpy()
    rows = plan.column("r").to_numpy()
    act = db.storage.parquet_schema(files[0]).field("act").type
    width, stored = act.list_size, act.value_type.to_pandas_dtype()
    out = np.empty((plan.num_rows, width), np.dtype(dtype) if dtype else stored)
    order = np.argsort(which, kind="stable")
    bounds = np.searchsorted(which[order], np.arange(len(files) + 1))

    def fill(j: int) -> None:
        dest = order[bounds[j]:bounds[j + 1]]  # plan positions of this file's rows
        if len(dest) == 0:
            return
        col = db.storage.read_parquet(files[j], columns=["act"], use_threads=False).column("act").combine_chunks()
        if col.type.list_size != width or col.null_count:
            raise GnomonError(f"{db.storage.uri_of(files[j])} holds {col.type} vectors (nulls: {col.null_count}), other shards {act}")
        x = col.flatten().to_numpy(zero_copy_only=False).reshape(-1, width)  # (rows in file, d), no copy
        src = rows[dest]
        if src.max() >= len(x):
            raise GnomonError(f"{db.storage.uri_of(files[j])} changed while the contrast set was read; run it again")
        out[dest] = x[src]  # (rows, d), widened in the same copy if asked

    with ThreadPoolExecutor(max_workers=db.threads) as pool:
        list(pool.map(fill, range(len(files))))
    return out


def _params(model: str, revision: str, dataset: str, layer: int, position: str,
            positive: str, negative: str, seed: int) -> dict:
    if position not in POSITIONS:
        raise GnomonError(f"unknown position {position!r}; use one of {list(POSITIONS)}")
    if positive == negative:
        raise GnomonError(f"positive and negative labels are both {positive!r}")
    return {"model": model, "revision": check_name(revision, "revision"),
            "dataset": check_name(dataset, "dataset"), "layer": int(layer), "position": position,
            "positive": positive, "negative": negative, "seed": str(seed)}


def contrast_set(db: StoreDB, *, model: str, revision: str, dataset: str, layer: int, position: str,
                 positive: str, negative: str, split: str | None, paired: bool | None = None,
                 balance: bool = True, seed: int = 0, dtype: str | None = "float32",
                 fingerprint: str | None = None) -> ContrastSet:
    """The contrast set of one concept at one layer and position (see the module doc).

    ``paired=None`` pairs iff every selected row has a ``pair`` and every pair holds one
    row of each label; ``paired=True`` keeps only such complete pairs; ``paired=False``
    ignores pairs. ``balance`` (unpaired only) downsamples the larger class by a seeded
    hash order; ``dropped`` counts the rows removed either way. ``dtype`` is the vectors'
    dtype (``"float32"``, ``"float16"``, or ``None`` for the stored one, which skips the
    conversion: fitting methods widen to float64 themselves). ``fingerprint`` restricts
    the read to shards collected from those weights (default: the newest collection's).
    """
    return contrast_splits(db, model=model, revision=revision, dataset=dataset, layer=layer, position=position,
                           positive=positive, negative=negative, splits=(split,), paired=paired,
                           balance=balance, seed=seed, skip_empty=False, dtype=dtype,
                           fingerprint=fingerprint)[split]


def contrast_splits(db: StoreDB, *, model: str, revision: str, dataset: str, layer: int, position: str,
                    positive: str, negative: str, splits: Sequence[str | None] = ("train", "val", "test"),
                    paired: bool | None = None, balance: bool = True, seed: int = 0,
                    skip_empty: bool = True, dtype: str | None = "float32",
                    fingerprint: str | None = None) -> dict[str | None, ContrastSet]:
    """One contrast set per split, from one selection query and one pass over the shards.

    A split with no rows at all is left out when ``skip_empty`` (a dataset may have no
    ``val``); a split with only one of the two labels is an error. The shards are
    stat-ed before the query and after the read: a shard rewritten in between (a
    collection job rerun) is an error rather than a silently mixed set.
    """
    if dtype not in (None, "float16", "float32"):
        raise GnomonError(f"dtype {dtype!r} must be 'float32', 'float16' or None (as stored)")
    p = _params(model, revision, dataset, layer, position, positive, negative, seed)
    files = _shards(db, p, fingerprint)
    before = _stamp(db, files)
    named = [s for s in splits if s is not None]
    sel = _q(db, _SEL, {**p, "files": [db.file_uri(f) for f in files], "all_rows": len(named) < len(splits),
                        "splits": named})
    if sel.num_rows == 0:
        stored = _q(db, "SELECT DISTINCT position FROM read_parquet($files) ORDER BY 1",
                    {"files": [db.file_uri(f) for f in files]}).column(0).to_pylist()
        if position not in stored:
            raise GnomonError(f"layer {layer} of {dataset} has no {position!r} rows; stored: {stored}")
    counts: dict[tuple[str | None, bool], int] = {}
    for row in sel.group_by(["split", "is_pos"]).aggregate([("r", "count")]).to_pylist():
        counts[row["split"], row["is_pos"]] = row["r_count"]
    name = f"gnomon_sel_{uuid.uuid4().hex}"
    db.con.register(name, sel)
    try:
        plans: list[tuple[str | None, pa.Table, bool, int]] = []
        for split in splits:
            c = {k: sum(n for (s, pos), n in counts.items() if pos == k and split in (None, s)) for k in (True, False)}
            if skip_empty and not any(c.values()):
                continue
            plans.append((split, *_plan(db, name, {**p, "split": split}, c, paired, balance)))
    finally:
        db.con.unregister(name)
    plan = pa.concat_tables([pl for _, pl, _, _ in plans]) if plans else None
    vectors = _gather(db, files, plan, dtype) if plan is not None and plan.num_rows else np.zeros((0, 0))
    if _stamp(db, files) != before:
        raise GnomonError(f"shards of {dataset} layer {layer} changed while the contrast set was read; run it again")
    out: dict[str | None, ContrastSet] = {}
    start = 0
    for split, pl, is_paired, dropped in plans:
        n_pos = pc.sum(pl.column("is_pos")).as_py() or 0
        block = vectors[start:start + pl.num_rows]  # (n_pos + n_neg, d): positives first
        start += pl.num_rows
        ids = pl.column("id").to_pylist()
        out[split] = ContrastSet(pos=block[:n_pos], neg=block[n_pos:], pos_ids=ids[:n_pos], neg_ids=ids[n_pos:],
                                 paired=is_paired, dropped=dropped, model=model, revision=revision,
                                 dataset=dataset, layer=int(layer), position=position, split=split,
                                 positive=positive, negative=negative)
    return out
