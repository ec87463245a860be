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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.store import ActivationStore
from pipeline.types import GnomonError

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


def _unreadable_examples(path: Path) -> str | None:
    """Why an ``examples.parquet`` cannot back the ``examples`` view, or None."""
    try:
        if path.is_symlink() or not path.is_file():
            return f"{path} is not a regular file"
        names = set(pq.read_schema(path).names)
    except (OSError, pa.ArrowException) as e:
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

    def __init__(self, root: str | Path, memory_limit: str = "2GB", threads: int | None = None) -> None:
        import duckdb

        self.root = Path(str(root).removeprefix("file://")).expanduser().resolve()
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
        self.fs = _read_only_fs(self.root)
        self.con.register_filesystem(self.fs)
        shards, self.skipped = ActivationStore(self.root).valid_shards()
        self.skipped_shards = len(self.skipped)
        """Shards left out of ``activations`` because they fail their checks (``skipped``
        then lists why, followed by any unreadable ``examples`` files)."""
        base = f"{_PROTO}://{self.root}"
        examples = []
        for f in sorted((self.root / "examples").glob("*/examples.parquet")):
            why = _unreadable_examples(f)
            if why:
                self.skipped.append(why)
            else:
                examples.append(f"{_PROTO}://{f}")
        # Paths are bound (as variables), never pasted into SQL: a home path may hold a quote.
        self.con.execute("SET VARIABLE gnomon_shards = $files",
                         {"files": [f"{base}/{m['path']}" for m in shards]})
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
