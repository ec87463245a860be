"""``StoreDB``: a read-only DuckDB connection over the activation store, with the store's
Parquet files (``acts``) and examples (``examples``) as views; ``gnomon sql`` and the
contrast queries (:mod:`pipeline.contrast`) run through it.

>>> with StoreDB(gnomon_home()) as db:                                # doctest: +SKIP
...     db.query("SELECT layer, count(*) FROM acts GROUP BY layer")
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa

from pipeline.storage import Storage
from pipeline.store import ActivationStore
from pipeline.types import GnomonError

# lazy: duckdb, fsspec (heavy; imported where used)

__all__ = ["StoreDB"]

_PROTO = "gnomon-store"
_HIVE = "hive_types={'model': 'VARCHAR', 'revision': 'VARCHAR', 'dataset': 'VARCHAR', 'layer': 'INTEGER'}"
_EMPTY_ACTS = ("SELECT NULL::VARCHAR AS example_id, NULL::VARCHAR AS position, NULL::INTEGER AS token_index, "
               "NULL::FLOAT[] AS act, NULL::VARCHAR AS filename, NULL::BIGINT AS file_row_number, "
               "NULL::VARCHAR AS dataset, NULL::INTEGER AS layer, NULL::VARCHAR AS model, "
               "NULL::VARCHAR AS revision WHERE false")
_EMPTY_EXAMPLES = ("SELECT NULL::VARCHAR AS id, NULL::VARCHAR AS text, NULL::VARCHAR AS messages, "
                   "NULL::VARCHAR AS label, NULL::VARCHAR AS pair, NULL::VARCHAR AS split, "
                   "NULL::VARCHAR AS dataset WHERE false")


_GLOB = re.compile(r"[*?\[{]")


def _read_only_fs(root: Path) -> Any:
    """An fsspec filesystem that can only list and open, for reading, what is under ``root``.

    DuckDB's own local filesystem is disabled on the connection, so this is the only way
    it can touch files: COPY, ATTACH or EXPORT into the store fail at the filesystem, and
    ``glob('gnomon-store:///**')`` or ``read_text('gnomon-store:///etc/passwd')`` are
    refused because every path (a glob's literal prefix included) must lie under the root.
    Symbolic links are not listed and a link is only opened when its target is inside.
    The last refusal is kept in ``refused`` so the caller can report it in one line
    (DuckDB wraps a Python exception in a traceback).
    """
    from fsspec.implementations.local import LocalFileSystem

    def inside(path: str) -> bool:
        if ".." in path.split("/"):
            return False
        wild = _GLOB.search(path)
        base = path if wild is None else (path[:wild.start()].rpartition("/")[0] or "/")
        try:
            resolved = Path(base).resolve()
        except (OSError, RuntimeError):
            return False
        return resolved == root or resolved.is_relative_to(root)

    class ReadOnlyStoreFS(LocalFileSystem):
        protocol = (_PROTO,)
        refused: str | None = None

        @classmethod
        def _strip_protocol(cls, path: Any) -> Any:
            path = str(path)
            stripped = super()._strip_protocol(path[len(_PROTO) + 3:] if path.startswith(_PROTO + "://") else path)
            if not inside(stripped):
                cls.refused = f"{path} is outside the gnomon store {root}: only files under it can be read"
                raise PermissionError(cls.refused)
            return stripped

        def ls(self, path: Any, detail: bool = False, **kwargs: Any) -> Any:
            infos = [i for i in super().ls(path, detail=True, **kwargs) if not i.get("islink")]
            return infos if detail else [i["name"] for i in infos]

        def _open(self, path: Any, mode: str = "rb", **kwargs: Any) -> Any:
            real = Path(self._strip_protocol(path)).resolve()
            if mode != "rb" or not real.is_relative_to(root):
                type(self).refused = f"the gnomon store is read-only and confined to {root} ({mode} {path})"
                raise PermissionError(type(self).refused)
            return super()._open(str(real), mode, **kwargs)

        def _refuse(self, *args: Any, **kwargs: Any) -> None:
            type(self).refused = "the gnomon store is read-only here"
            raise PermissionError(type(self).refused)

        mkdir = makedirs = rm = rm_file = mv = cp_file = touch = rmdir = _refuse  # type: ignore[assignment]

    return ReadOnlyStoreFS()


def _read_only_object_fs(storage: Storage) -> Any:
    """The object-storage twin of :func:`_read_only_fs`: an fsspec wrapper of the store's
    ``pyarrow.fs`` filesystem that lists and opens, for reading, only keys under the
    store's ``bucket/prefix``. Another bucket, another prefix, ``..`` and every write are
    refused (and DuckDB's local filesystem is off, so local files cannot be named either)."""
    from fsspec.implementations.arrow import ArrowFSWrapper

    base = storage.base

    def inside(path: str) -> bool:
        if ".." in path.split("/"):
            return False
        wild = _GLOB.search(path)
        lit = path if wild is None else path[:wild.start()].rpartition("/")[0]
        return lit == base or lit.startswith(base + "/")

    class ReadOnlyObjectFS(ArrowFSWrapper):
        protocol = (_PROTO,)  # type: ignore[assignment]
        root_marker = ""
        refused: str | None = None

        @classmethod
        def _strip_protocol(cls, path: Any) -> Any:
            text = str(path)
            stripped = (text[len(_PROTO) + 3:] if text.startswith(_PROTO + "://") else text).strip("/")
            if not inside(stripped):
                cls.refused = f"{text} is outside the gnomon store {storage.uri}: only objects under it can be read"
                raise PermissionError(cls.refused)
            return stripped

        def _open(self, path: Any, mode: str = "rb", **kwargs: Any) -> Any:
            if mode != "rb":
                type(self).refused = f"the gnomon store is read-only ({mode} {path})"
                raise PermissionError(type(self).refused)
            return super()._open(self._strip_protocol(path), mode, **kwargs)

        def _refuse(self, *args: Any, **kwargs: Any) -> None:
            type(self).refused = "the gnomon store is read-only here"
            raise PermissionError(type(self).refused)

        mkdir = makedirs = rm = rm_file = mv = cp_file = touch = rmdir = _refuse  # type: ignore[assignment]

    return ReadOnlyObjectFS(storage.fs)


def _unreadable_examples(storage: Storage, rel: str) -> str | None:
    """Why an ``examples.parquet`` cannot back the ``examples`` view, or None."""
    path = storage.uri_of(rel)
    try:
        if not storage.is_file(rel):
            return f"{path} is not a regular file"
        names = set(storage.parquet_schema(rel).names)
    except (OSError, pa.ArrowException, GnomonError) as e:
        return f"{path} is not readable Parquet ({str(e).splitlines()[0] if str(e) else type(e).__name__})"
    missing = {"id", "label", "pair", "split", "text", "messages"} - names
    return f"{path} lacks columns {sorted(missing)}" if missing else None


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

    def __init__(self, root: str | Path, memory_limit: str = "2GB", threads: int | None = None,
                 only: Mapping[str, Any] | None = None) -> None:
        """``only``: the shards of one model/revision/dataset (layer, fingerprint) as
        :meth:`ActivationStore.valid_shards` takes them. A fit task or a report reads one
        collection; checking every shard of the store (on object storage, downloading
        each to hash it) cost every task the whole store."""
        import duckdb

        store = ActivationStore(root)
        self.storage = store.storage
        self.root: Any = store.root
        """The store's root: a local Path, or its URI on object storage."""
        self.memory_limit = memory_limit
        self._tmp = tempfile.mkdtemp(prefix="gnomon-duckdb-")
        config: dict[str, Any] = {"memory_limit": memory_limit, "temp_directory": self._tmp,
                                  "autoinstall_known_extensions": False, "autoload_known_extensions": False}
        self.threads = int(threads or os.cpu_count() or 1)
        config["threads"] = self.threads
        try:
            self.con = duckdb.connect(config=config)
        except duckdb.Error as e:
            shutil.rmtree(self._tmp, ignore_errors=True)
            raise GnomonError(f"cannot open DuckDB with memory_limit={memory_limit!r}, threads={self.threads} "
                              f"({str(e).splitlines()[0]}); give a size such as 2GB") from None
        self.fs = _read_only_fs(self.root) if self.storage.local is not None else _read_only_object_fs(self.storage)
        self.con.register_filesystem(self.fs)
        shards, self.skipped = store.valid_shards(**(only or {}))
        self.skipped_shards = len(self.skipped)
        """Shards left out of ``activations`` because they fail their checks (``skipped``
        then lists why, followed by any unreadable ``examples`` files)."""
        examples = []
        for f in self.storage.glob("examples/*/examples.parquet"):
            why = _unreadable_examples(self.storage, f)
            if why:
                self.skipped.append(why)
            else:
                examples.append(self.file_uri(f))
        # Paths are bound (as variables), never pasted into SQL: a home path may hold a quote.
        self.con.execute("SET VARIABLE gnomon_shards = $files",
                         {"files": [self.file_uri(m["path"]) for m in shards]})
        self.con.execute("SET VARIABLE gnomon_examples = $files", {"files": examples})
        if shards:
            acts = ("SELECT * FROM read_parquet(getvariable('gnomon_shards'), hive_partitioning=true, "
                    f"filename=true, file_row_number=true, {_HIVE})")
        else:
            acts = _EMPTY_ACTS
        if examples:
            exs = ("SELECT * FROM read_parquet(getvariable('gnomon_examples'), hive_partitioning=true, "
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

        type(self.fs).refused = None
        try:
            rel = self.con.sql(sql, params=params)
            if rel is None:
                return pa.table({})
            return (rel.limit(limit) if limit else rel).to_arrow_table()
        except duckdb.Error as e:
            if type(self.fs).refused:
                raise GnomonError(f"query refused: {type(self.fs).refused}") from None
            if not isinstance(e, duckdb.PermissionException):
                raise
            raise GnomonError(f"DuckDB needed a file outside the read-only store: the statement writes "
                              f"(refused), or it needs more than memory_limit={self.memory_limit} (spilling "
                              f"to disk is off on this connection). {str(e).splitlines()[0]}") from None

    def file_uri(self, rel: str) -> str:
        """How this connection names the store's file ``rel`` (a path relative to the root)."""
        return f"{_PROTO}://{self.storage.path(rel)}"

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
