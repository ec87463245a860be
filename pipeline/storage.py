"""Storage by URI: one place that reads and writes gnomon's files, on a local disk or on
object storage.

A location is a local path, a ``file://`` URI, or any URI ``pyarrow.fs.FileSystem.from_uri``
opens: ``s3://bucket/prefix`` (the S3 client reads the usual AWS variables:
``AWS_ENDPOINT_URL`` / ``AWS_ENDPOINT_URL_S3`` for a non-AWS endpoint such as MinIO,
``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION``), ``gs://``,
``hdfs://``. Paths below the root are relative POSIX strings (``manifests/.../part-00000.json``).

Publishing differs by backend, and only here: locally a file is written under a temporary
name and renamed into place (:func:`pipeline.atomic.publish`); an object store has no
rename, but a single PUT (or a completed multipart upload) makes a whole object visible at
once, so the bytes are built in a local temporary file first and uploaded as one object
(S3 is opened with ``allow_delayed_open``, so a small file is one PUT). Callers that need
several objects to appear together (a shard and its manifest) order the writes themselves.

>>> s = Storage.open(tmp)                                           # doctest: +SKIP
>>> s.write_json("a/b.json", {"x": 1}); s.read_json("a/b.json")     # doctest: +SKIP
{'x': 1}
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import stat
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.storage_uri import SCHEMES, remote_error, split_uri
from pipeline.types import GnomonError

# lazy: pyarrow (heavy; imported where used); pipeline.atomic (tests patch it at the source)

__all__ = ["SCHEMES", "Storage", "split_uri"]

# sha256 of files already verified in this process (readers verify every shard they read, once)
_VERIFIED: dict[tuple, str] = {}
READ_THREADS = 16
"""Remote small-object reads in flight at once (:meth:`Storage.read_jsons`)."""
REMOTE_BLOCK = 16 << 20
"""Bytes per ranged GET of a large object read in blocks (each GET is a round trip: ~30 ms here)."""


@dataclass
class Storage:
    """A root directory on one filesystem; every path argument is relative to it."""

    uri: str
    """The root as users write it (a resolved local path, or ``s3://bucket/prefix``)."""
    fs: Any
    """The ``pyarrow.fs.FileSystem``."""
    base: str
    """The root's path inside ``fs`` (``bucket/prefix``, or the absolute local path)."""
    local: Path | None = None
    """The root as a local path, when it is one."""

    @classmethod
    def open(cls, location: str | Path) -> Storage:
        """The storage at ``location`` (nothing is created; a remote bucket is checked once)."""
        import pyarrow.fs as pafs

        location = getattr(location, "uri", None) or location  # a pipeline.home.RemoteHome
        scheme, rest = split_uri(location)
        if scheme in ("", "file"):
            root = Path(rest).expanduser().resolve()
            return cls(str(root), pafs.LocalFileSystem(), str(root), root)
        uri = f"{scheme}://{rest.strip('/')}"
        # S3: one PUT for a small object, not a multipart upload (the bucket is checked below)
        opts = ("&" if "?" in uri else "?") + "allow_delayed_open=true" if scheme == "s3" else ""
        try:
            fs, base = pafs.FileSystem.from_uri(uri + opts)
            bucket = base.split("/")[0]
            found = fs.get_file_info(bucket)
        except (OSError, ValueError, TypeError) as e:
            raise remote_error(uri, e) from None
        if found.type == pafs.FileType.NotFound:
            raise GnomonError(f"object storage {uri}: the bucket {bucket!r} does not exist (create it or fix the URI)")
        return cls(uri, fs, base.rstrip("/"))

    # ------------------------------------------------------------------ names
    def path(self, rel: str) -> str:
        """``rel``'s path inside ``fs``."""
        return f"{self.base}/{rel}" if rel else self.base

    def uri_of(self, rel: str) -> str:
        """``rel`` as users read it (a local path, or a full URI)."""
        return str(self.local / rel) if self.local is not None else f"{self.uri}/{rel}"

    def _call(self, what: Callable[[], Any]) -> Any:
        try:
            return what()
        except FileNotFoundError:
            raise
        except OSError as e:
            if self.local is not None:
                raise
            raise remote_error(self.uri, e) from None

    # ------------------------------------------------------------------ reads
    def info(self, rel: str) -> Any:
        return self._call(lambda: self.fs.get_file_info(self.path(rel)))

    def exists(self, rel: str) -> bool:
        """Anything is at ``rel`` (remotely: an object, or objects under it as a prefix)."""
        if self.local is not None:
            return (self.local / rel).exists()
        import pyarrow.fs as pafs

        return bool(self.info(rel).type != pafs.FileType.NotFound)

    def is_file(self, rel: str) -> bool:
        """A regular file (locally: not a link) is there."""
        if self.local is not None:
            p = self.local / rel
            return p.is_file() and not p.is_symlink()
        import pyarrow.fs as pafs

        return bool(self.info(rel).type == pafs.FileType.File)

    def size(self, rel: str) -> int | None:
        if self.local is not None:
            return (self.local / rel).stat().st_size if (self.local / rel).is_file() else None
        i = self.info(rel)
        return i.size if i.is_file else None

    def stamp(self, rel: str) -> tuple:
        """What a rewrite changes (locally a rename gives a new inode)."""
        if self.local is not None:
            s = (self.local / rel).stat()
            return (s.st_ino, s.st_mtime_ns, s.st_size)
        i = self.info(rel)
        return (i.mtime_ns, i.size)

    def _reader(self, rel: str) -> Any:
        """``rel`` opened for reading; remotely a random-access file, one HEAD then a ranged GET per
        ``read(n)`` (an input stream's ``read()`` took 4.5 s for 32 MB through moto, this 0.1 s)."""
        if self.local is not None:
            return open(self.local / rel, "rb")
        return self._call(lambda: self.fs.open_input_file(self.path(rel)))

    def read_bytes(self, rel: str) -> bytes:
        if self.local is not None:
            return (self.local / rel).read_bytes()
        with self._reader(rel) as f:
            return bytes(self._call(f.read))

    def _blocks(self, rel: str) -> Iterator[bytes]:
        """``rel``'s bytes in 1 MiB blocks locally, :data:`REMOTE_BLOCK` remotely (a ranged GET each)."""
        size = 1 << 20 if self.local is not None else REMOTE_BLOCK
        with self._reader(rel) as f:
            yield from iter(lambda: self._call(lambda: f.read(size)), b"")

    def download(self, rel: str, target: Path) -> None:
        """Copy ``rel`` to the local file ``target`` block by block (never whole in memory)."""
        with open(target, "wb") as out:
            out.writelines(self._blocks(rel))

    def read_json(self, rel: str) -> dict | None:
        """The JSON object at ``rel``, or None when it is missing or not a JSON object."""
        try:
            doc = json.loads(self.read_bytes(rel))
        except (OSError, ValueError, RecursionError):
            return None
        return doc if isinstance(doc, dict) else None

    def read_jsons(self, rels: list[str]) -> list[dict | None]:
        """:meth:`read_json` of each of ``rels``, in order; remotely ``READ_THREADS`` GETs overlap."""
        if self.local is not None or len(rels) < 2:
            return [self.read_json(r) for r in rels]
        with ThreadPoolExecutor(max_workers=min(READ_THREADS, len(rels))) as pool:
            return list(pool.map(self.read_json, rels))

    def sha256(self, rel: str) -> str:
        """Hex sha256 of a file, read in :meth:`_blocks`."""
        h = hashlib.sha256()
        for block in self._blocks(rel):
            h.update(block)
        return h.hexdigest()

    def verified_sha256(self, rel: str, expected: str = "", stamp: tuple | None = None) -> str:
        """sha256 of ``rel``, hashed once per version of the file in this process. A local
        version is (inode, mtime, size); an object's mtime has one-second resolution, so
        its key adds the checksum the caller expects (a rewrite comes with a new one).
        ``stamp``: the version a listing just gave (no request for it)."""
        key = (self.uri, rel, *(stamp or self.stamp(rel)), "" if self.local is not None else expected)
        if key not in _VERIFIED:
            _VERIFIED[key] = self.sha256(rel)
        return _VERIFIED[key]

    def glob(self, pattern: str) -> list[str]:
        """Relative paths of files matching ``pattern`` (``*`` never crosses a ``/``),
        sorted. Remotely one listing of the pattern's literal prefix."""
        if self.local is not None:
            return sorted(str(p.relative_to(self.local)) for p in self.local.glob(pattern))
        return [rel for rel, _ in self.glob_stamps(pattern)]

    def glob_stamps(self, pattern: str) -> list[tuple[str, tuple]]:
        """:meth:`glob`'s regular files (locally: not links, and not gone since the listing)
        with each one's :meth:`stamp` (size last), remotely from the one listing."""
        if self.local is not None:
            found = []
            for rel in self.glob(pattern):
                try:
                    st = (self.local / rel).lstat()
                except FileNotFoundError:
                    continue
                if stat.S_ISREG(st.st_mode):
                    found.append((rel, (st.st_ino, st.st_mtime_ns, st.st_size)))
            return found
        import pyarrow.fs as pafs

        parts = pattern.split("/")
        fixed = next((i for i, p in enumerate(parts) if any(c in p for c in "*?[")), len(parts))
        prefix = "/".join(parts[:fixed])
        sel = pafs.FileSelector(self.path(prefix), recursive=True, allow_not_found=True)
        found = []
        for i in self._call(lambda: self.fs.get_file_info(sel)):
            rel = i.path[len(self.base) + 1:]
            names = rel.split("/")
            if i.is_file and len(names) == len(parts) and all(fnmatch.fnmatchcase(n, p)
                                                              for n, p in zip(names, parts)):
                found.append((rel, (i.mtime_ns, i.size)))
        return sorted(found)

    def list_files(self, prefix: str) -> list[str]:
        """Relative paths of every file under the folder ``prefix`` (recursively), sorted."""
        if self.local is not None:
            top = self.local / prefix
            return sorted(str(p.relative_to(self.local)) for p in top.rglob("*") if p.is_file()) \
                if top.is_dir() else []
        import pyarrow.fs as pafs

        sel = pafs.FileSelector(self.path(prefix.rstrip("/")), recursive=True, allow_not_found=True)
        return sorted(i.path[len(self.base) + 1:] for i in self._call(lambda: self.fs.get_file_info(sel))
                      if i.is_file)

    def read_parquet(self, rel: str, **kwargs: Any) -> Any:
        """``pyarrow.parquet.read_table`` of ``rel`` (``columns=``, ``filters=``...)."""
        import pyarrow.parquet as pq

        if self.local is not None:
            return pq.read_table(self.local / rel, **kwargs)
        return self._call(lambda: pq.read_table(self.path(rel), filesystem=self.fs, **kwargs))

    def parquet_schema(self, rel: str) -> Any:
        import pyarrow.parquet as pq

        if self.local is not None:
            return pq.read_schema(self.local / rel)
        return self._call(lambda: pq.read_schema(self.path(rel), filesystem=self.fs))

    # ----------------------------------------------------------------- writes
    def publish(self, rel: str, write: Callable[[Path], object], digest: bool = False) -> tuple[int, str] | None:
        """Publish the file ``write(tmp)`` creates as ``rel``, whole or not at all: locally
        by rename (:func:`pipeline.atomic.publish`); remotely the finished local file is
        uploaded as one object, so no reader sees a partial one. With ``digest``,
        returns the published file's (size, sha256): remotely of the bytes sent, so a
        shard's manifest never records what a faulty upload left (and costs no read-back)."""
        if self.local is not None:
            from pipeline.atomic import publish

            publish(self.local / rel, write)
            return ((self.local / rel).stat().st_size, self.sha256(rel)) if digest else None
        with tempfile.TemporaryDirectory(prefix="gnomon-up-") as d:
            tmp = Path(d) / Path(rel).name
            write(tmp)
            data = tmp.read_bytes()

            def put() -> None:
                with self.fs.open_output_stream(self.path(rel)) as f:
                    f.write(data)
            self._call(put)
        return (len(data), hashlib.sha256(data).hexdigest()) if digest else None

    def write_bytes(self, rel: str, data: bytes) -> None:
        self.publish(rel, lambda tmp: tmp.write_bytes(data))

    def write_json(self, rel: str, doc: Any, **dumps: Any) -> None:
        self.write_bytes(rel, json.dumps(doc, **dumps).encode())

    def delete(self, rel: str, known: bool = False) -> None:
        """Remove a file; a missing one is fine. ``known``: the caller just listed it there
        (no HEAD to check)."""
        if self.local is not None:
            (self.local / rel).unlink(missing_ok=True)
            return
        # HEAD first: pyarrow's S3 delete leaves an empty "folder/" marker object behind
        # (even for a missing key), so a fresh shard's write costs no DELETE and no marker
        if not known and not self.is_file(rel):
            return
        try:
            self._call(lambda: self.fs.delete_file(self.path(rel)))
        except FileNotFoundError:
            pass
