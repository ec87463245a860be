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
the join with ``examples``, pairing, seeded balancing, ordering -- over metadata only,
and returns each chosen row's (file, row number). The vectors are then gathered by those
coordinates, file by file, straight from the Parquet pages into one preallocated float32
array (no per-row Python). Moving the 1-2 KB vector payload through DuckDB's join and
sort costs 3-4x a raw read (DuckDB has no float16 type, so it widens every list first);
the gather costs ~2.5x a raw float16 read, less than a raw read plus float32 conversion
(see ``bench/contrast.py``).

>>> with StoreDB(gnomon_home()) as db:                                # doctest: +SKIP
...     cs = contrast_set(db, model="org/m", revision="main", dataset="sst", layer=3,
...                       position="last", positive="pos", negative="neg", split="train")
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.store import check_name, model_slug
from pipeline.types import POSITIONS, GnomonError

__all__ = ["StoreDB", "ContrastSet", "contrast_set", "contrast_splits"]

_PROTO = "gnomon-store"
_HIVE = "hive_types={'model': 'VARCHAR', 'revision': 'VARCHAR', 'dataset': 'VARCHAR', 'layer': 'INTEGER'}"
_EMPTY_ACTS = ("SELECT NULL::VARCHAR AS example_id, NULL::VARCHAR AS position, NULL::INTEGER AS token_index, "
               "NULL::FLOAT[] AS act, NULL::VARCHAR AS filename, NULL::BIGINT AS file_row_number, "
               "NULL::VARCHAR AS dataset, NULL::INTEGER AS layer, NULL::VARCHAR AS model, "
               "NULL::VARCHAR AS revision WHERE false")
_EMPTY_EXAMPLES = ("SELECT NULL::VARCHAR AS id, NULL::VARCHAR AS text, NULL::VARCHAR AS messages, "
                   "NULL::VARCHAR AS label, NULL::VARCHAR AS pair, NULL::VARCHAR AS split, "
                   "NULL::VARCHAR AS dataset WHERE false")


def _read_only_fs(root: Path) -> Any:
    """An fsspec filesystem that can only open files under ``root`` for reading.

    DuckDB's own local filesystem is disabled on the connection, so this is the only way
    it can touch files: COPY, ATTACH or EXPORT into the store fail at the filesystem.
    """
    from fsspec.implementations.local import LocalFileSystem

    class ReadOnlyStoreFS(LocalFileSystem):
        protocol = (_PROTO,)

        @classmethod
        def _strip_protocol(cls, path: Any) -> Any:
            path = str(path)
            return super()._strip_protocol(path[len(_PROTO) + 3:] if path.startswith(_PROTO + "://") else path)

        def _open(self, path: Any, mode: str = "rb", **kwargs: Any) -> Any:
            real = Path(self._strip_protocol(path)).resolve()
            if mode != "rb" or not real.is_relative_to(root):
                raise PermissionError(f"the gnomon store is read-only here ({mode} {path})")
            return super()._open(str(real), mode, **kwargs)

        def _refuse(self, *args: Any, **kwargs: Any) -> None:
            raise PermissionError("the gnomon store is read-only here")

        mkdir = makedirs = rm = rm_file = mv = cp_file = touch = rmdir = _refuse  # type: ignore[assignment]

    return ReadOnlyStoreFS()


class StoreDB:
    """A DuckDB connection over a store with views ``activations`` and ``examples``.

    ``activations`` has the shard columns plus the hive partitions (``model`` is the
    slug, ``layer`` an integer) and ``filename``/``file_row_number``; ``examples`` has
    the example columns plus ``dataset``. The connection cannot write: DuckDB's local
    filesystem is disabled, files are read through a read-only filesystem confined to
    the store, and the configuration is locked. ``memory_limit`` bounds DuckDB (its
    default is 80% of RAM) and, with the local filesystem off, DuckDB cannot spill: a
    query over more than ``memory_limit`` fails (``temp_directory`` is still set to a
    private directory so nothing lands in the working directory).
    """

    def __init__(self, root: str | Path, memory_limit: str = "2GB", threads: int | None = None) -> None:
        import duckdb

        self.root = Path(str(root).removeprefix("file://")).expanduser().resolve()
        self.memory_limit = memory_limit
        self._tmp = tempfile.mkdtemp(prefix="gnomon-duckdb-")
        config: dict[str, Any] = {"memory_limit": memory_limit, "temp_directory": self._tmp,
                                  "autoinstall_known_extensions": False, "autoload_known_extensions": False}
        self.threads = int(threads or os.cpu_count() or 1)
        config["threads"] = self.threads
        self.con = duckdb.connect(config=config)
        self.con.register_filesystem(_read_only_fs(self.root))
        base = f"{_PROTO}://{self.root}"
        if any((self.root / "activations").glob("**/*.parquet")):
            acts = (f"SELECT * FROM read_parquet('{base}/activations/**/*.parquet', hive_partitioning=true, "
                    f"filename=true, file_row_number=true, {_HIVE})")
        else:
            acts = _EMPTY_ACTS
        if any((self.root / "examples").glob("*/examples.parquet")):
            exs = (f"SELECT * FROM read_parquet('{base}/examples/*/examples.parquet', hive_partitioning=true, "
                   "hive_types={'dataset': 'VARCHAR'})")
        else:
            exs = _EMPTY_EXAMPLES
        self.con.execute(f"CREATE VIEW activations AS {acts}")
        self.con.execute(f"CREATE VIEW examples AS {exs}")
        self.con.execute("SET disabled_filesystems = 'LocalFileSystem'")
        self.con.execute("SET lock_configuration = true")

    def query(self, sql: str, params: Sequence | dict | None = None, limit: int | None = None) -> pa.Table:
        """Run one statement with bound parameters (``?`` or ``$name``); result as Arrow.

        Spilling is off (it would need the local filesystem), so a query that needs more
        than ``memory_limit`` fails; the error says so.
        """
        import duckdb

        try:
            rel = self.con.sql(sql, params=params)
            if rel is None:
                return pa.table({})
            return (rel.limit(limit) if limit else rel).to_arrow_table()
        except duckdb.PermissionException as e:
            raise GnomonError(f"DuckDB needed a file outside the read-only store: the statement writes "
                              f"(refused), or it needs more than memory_limit={self.memory_limit} (spilling "
                              f"to disk is off on this connection). {str(e).splitlines()[0]}") from None

    def local_path(self, filename: str) -> Path:
        """The local path of a ``filename`` from the ``activations`` view (inside the root)."""
        path = Path(filename.removeprefix(f"{_PROTO}://")).resolve()
        if not path.is_relative_to(self.root):
            raise GnomonError(f"{filename} is outside the store {self.root}")
        return path

    def close(self) -> None:
        self.con.close()
        shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> StoreDB:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class ContrastSet:
    """Vectors of the two classes of a concept at one layer and position."""

    pos: np.ndarray
    """(n, d) float32, rows labelled ``positive``."""
    neg: np.ndarray
    """(m, d) float32, rows labelled ``negative``; m == n when paired or balanced."""
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


_SEL = """sel AS (
  SELECT a.filename AS f, a.file_row_number AS r, a.example_id AS id, a.token_index AS t,
         e.label = $positive AS is_pos, e.pair AS pair
  FROM activations a JOIN examples e ON e.dataset = a.dataset AND e.id = a.example_id
  WHERE a.model = $model AND a.revision = $revision AND a.dataset = $dataset AND a.layer = $layer
    AND a.position = $position AND e.label IN ($positive, $negative)
    AND ($split::VARCHAR IS NULL OR e.split = $split::VARCHAR))"""
_GOOD_PAIRS = """good AS (SELECT pair FROM sel WHERE pair IS NOT NULL GROUP BY pair
  HAVING count(*) = 2 AND count(*) FILTER (WHERE is_pos) = 1)"""
_STATS = f"""WITH {_SEL}, {_GOOD_PAIRS}
SELECT count(*) FILTER (WHERE is_pos) AS n_pos, count(*) FILTER (WHERE NOT is_pos) AS n_neg,
       count(*) FILTER (WHERE pair IS NULL OR pair NOT IN (SELECT pair FROM good)) AS unpaired FROM sel"""
_PAIRED = f"""WITH {_SEL}, {_GOOD_PAIRS}
SELECT f, r, id, is_pos FROM sel WHERE pair IN (SELECT pair FROM good) ORDER BY NOT is_pos, pair"""
# Balancing: rank each class by md5(seed:id) (stable across DuckDB versions, reproducible
# outside SQL) and keep the first min(n_pos, n_neg) of each.
_UNPAIRED = f"""WITH {_SEL},
ranked AS (SELECT *, row_number() OVER (PARTITION BY is_pos ORDER BY md5($seed || ':' || id), t) AS k FROM sel),
keep AS (SELECT min(c) AS m FROM (SELECT count(*) AS c FROM sel GROUP BY is_pos))
SELECT f, r, id, is_pos FROM ranked WHERE NOT $balance OR k <= (SELECT m FROM keep) ORDER BY NOT is_pos, id, t"""


def _q(db: StoreDB, sql: str, params: dict) -> pa.Table:
    """Bind only the ``$names`` the statement uses (DuckDB refuses extra ones)."""
    used = set(re.findall(r"\$(\w+)", sql))
    return db.query(sql, {k: v for k, v in params.items() if k in used})


def _plan(db: StoreDB, params: dict, paired: bool | None, balance: bool) -> tuple[pa.Table, bool, int]:
    """Rows to gather, in output order (positives first), whether paired, rows dropped."""
    n_pos, n_neg, unpaired = _q(db, _STATS, params).to_pylist()[0].values()
    for label, n in ((params["positive"], n_pos), (params["negative"], n_neg)):
        if n == 0:
            present = _q(db, "SELECT DISTINCT label FROM examples WHERE dataset = $dataset ORDER BY 1", params)
            raise GnomonError(f"label {label!r} has no rows in {params['dataset']} (split {params['split']}) "
                              f"at layer {params['layer']}/{params['position']}: a contrast needs both classes; "
                              f"labels present: {present.column(0).to_pylist()}")
    use_pairs = unpaired == 0 if paired is None else paired
    if use_pairs:
        plan = _q(db, _PAIRED, params)
        if plan.num_rows == 0:
            raise GnomonError(f"paired=True but no pair in {params['dataset']} has one {params['positive']!r} "
                              f"and one {params['negative']!r} example")
    else:
        plan = _q(db, _UNPAIRED, {**params, "balance": balance})
    return plan, use_pairs, n_pos + n_neg - plan.num_rows


def _gather(db: StoreDB, plan: pa.Table) -> np.ndarray:
    """Vectors of ``plan``'s (file, row) coordinates as (n, d) float32, in plan order.

    Files are read in parallel threads (pyarrow and numpy's copies release the GIL);
    each writes its rows into disjoint slots of one preallocated array.
    """
    from concurrent.futures import ThreadPoolExecutor

    if plan.num_rows == 0:
        return np.zeros((0, 0), np.float32)
    files = plan.column("f").combine_chunks().dictionary_encode()
    which = files.indices.to_numpy()
    rows = plan.column("r").to_numpy()
    ids = plan.column("id").combine_chunks()
    order = np.argsort(which, kind="stable")
    bounds = np.searchsorted(which[order], np.arange(len(files.dictionary) + 1))
    names = files.dictionary.to_pylist()
    width = pq.read_schema(db.local_path(names[0])).field("act").type.list_size
    out = np.empty((plan.num_rows, width), np.float32)

    def fill(j: int) -> None:
        dest = order[bounds[j]:bounds[j + 1]]  # plan positions of this file's rows
        src = rows[dest]
        t = pq.read_table(db.local_path(names[j]), columns=["example_id", "act"], use_threads=False)
        if src.max() >= t.num_rows or not pc.take(t.column("example_id"), src).combine_chunks().equals(ids.take(dest)):
            raise GnomonError(f"{names[j]} changed while the contrast set was read; run it again")
        act = t.column("act").combine_chunks()
        if act.type.list_size != width:
            raise GnomonError(f"{names[j]} has hidden size {act.type.list_size}, other shards {width}")
        out[dest] = act.flatten().to_numpy(zero_copy_only=False).reshape(-1, width)[src]  # (rows, d)

    with ThreadPoolExecutor(max_workers=db.threads) as pool:
        list(pool.map(fill, range(len(names))))
    return out


def _params(db: StoreDB, model: str, revision: str, dataset: str, layer: int, position: str,
            positive: str, negative: str, split: str | None, seed: int) -> dict:
    if position not in POSITIONS:
        raise GnomonError(f"unknown position {position!r}; use one of {list(POSITIONS)}")
    if positive == negative:
        raise GnomonError(f"positive and negative labels are both {positive!r}")
    p = {"model": model_slug(model), "revision": check_name(revision, "revision"),
         "dataset": check_name(dataset, "dataset"), "layer": int(layer), "position": position,
         "positive": positive, "negative": negative, "split": split, "seed": str(seed)}
    stored = _q(db, "SELECT layer, list(DISTINCT position ORDER BY position) AS positions FROM activations "
                    "WHERE model = $model AND revision = $revision AND dataset = $dataset GROUP BY 1 ORDER BY 1", p)
    layers = dict(zip(stored.column("layer").to_pylist(), stored.column("positions").to_pylist()))
    if p["layer"] not in layers:
        raise GnomonError(f"nothing in the store {db.root} for model {model} revision {revision} dataset "
                          f"{dataset} layer {layer}; stored layers: {list(layers) or 'none'}")
    if position not in layers[p["layer"]]:
        raise GnomonError(f"layer {layer} of {dataset} has no {position!r} rows; stored: {layers[p['layer']]}")
    return p


def contrast_set(db: StoreDB, *, model: str, revision: str, dataset: str, layer: int, position: str,
                 positive: str, negative: str, split: str | None, paired: bool | None = None,
                 balance: bool = True, seed: int = 0) -> ContrastSet:
    """The contrast set of one concept at one layer and position (see the module doc).

    ``paired=None`` pairs iff every selected row has a ``pair`` and every pair holds one
    row of each label; ``paired=True`` keeps only such complete pairs; ``paired=False``
    ignores pairs. ``balance`` (unpaired only) downsamples the larger class by a seeded
    hash order; ``dropped`` counts the rows removed either way.
    """
    return contrast_splits(db, model=model, revision=revision, dataset=dataset, layer=layer, position=position,
                           positive=positive, negative=negative, splits=(split,), paired=paired,
                           balance=balance, seed=seed, skip_empty=False)[split]


def contrast_splits(db: StoreDB, *, model: str, revision: str, dataset: str, layer: int, position: str,
                    positive: str, negative: str, splits: Sequence[str | None] = ("train", "val", "test"),
                    paired: bool | None = None, balance: bool = True, seed: int = 0,
                    skip_empty: bool = True) -> dict[str | None, ContrastSet]:
    """One contrast set per split, gathered in a single pass over the shards.

    A split with no rows at all is left out when ``skip_empty`` (a dataset may have no
    ``val``); a split with only one of the two labels is an error.
    """
    plans: list[tuple[str | None, pa.Table, bool, int]] = []
    for split in splits:
        p = _params(db, model, revision, dataset, layer, position, positive, negative, split, seed)
        if skip_empty and _q(db, f"WITH {_SEL} SELECT count(*) FROM sel", p).column(0)[0].as_py() == 0:
            continue
        plans.append((split, *_plan(db, p, paired, balance)))
    vectors = _gather(db, pa.concat_tables([plan for _, plan, _, _ in plans])) if plans else np.zeros((0, 0))
    out: dict[str | None, ContrastSet] = {}
    start = 0
    for split, plan, is_paired, dropped in plans:
        n_pos = pc.sum(plan.column("is_pos")).as_py() or 0
        block = vectors[start:start + plan.num_rows]  # (n_pos + n_neg, d): positives first
        start += plan.num_rows
        ids = plan.column("id").to_pylist()
        out[split] = ContrastSet(pos=block[:n_pos], neg=block[n_pos:], pos_ids=ids[:n_pos], neg_ids=ids[n_pos:],
                                 paired=is_paired, dropped=dropped, model=model, revision=revision,
                                 dataset=dataset, layer=int(layer), position=position, split=split,
                                 positive=positive, negative=negative)
    return out
