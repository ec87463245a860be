"""Running collections announce themselves, so ``gnomon store gc`` leaves their files alone.

``store gc --min-age 0`` during a collection deleted the shard the collection was writing
(its temporary file looks exactly like one a crash left behind; issue 21). A collection
now holds an exclusive ``flock`` on ``<home>/locks/collect-<pid>-<id>.lock`` for as long as
it runs; the file holds its start time. gc asks :func:`running_since` and leaves every
file modified since the oldest running collection started. The kernel drops a lock when
its process dies, so a killed collection never blocks gc: its lock file is stale and gc
removes it. The lock file is written and locked under a temporary name and renamed into
place, so gc never sees an unlocked file of a live collection.

>>> with collecting(home):                 # doctest: +SKIP
...     running_since(home) is not None
True
"""

from __future__ import annotations

import fcntl
import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pipeline.atomic import move_into_place

__all__ = ["collecting", "running_since"]

_MARGIN_S = 2.0
"""Files modified this long before a collection's recorded start are still left alone
(file times and ``time.time()`` can disagree by a clock tick; a collection's temporary
files are never older than its start)."""


def _locks(home: Path) -> Path:
    return Path(home) / "locks"


@contextmanager
def collecting(home: Path) -> Iterator[None]:
    """Hold the "a collection is running" lock for the duration of the block."""
    folder = _locks(home)
    folder.mkdir(parents=True, exist_ok=True)
    name = f"collect-{os.getpid()}-{uuid.uuid4().hex[:8]}.lock"
    tmp = folder / f".{name}.tmp"
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, f"{time.time():.3f}\n".encode())
        move_into_place(tmp, folder / name)
        try:
            yield
        finally:
            (folder / name).unlink(missing_ok=True)
    finally:
        tmp.unlink(missing_ok=True)
        os.close(fd)   # releases the lock


def running_since(home: Path) -> float | None:
    """When the oldest collection still running under ``home`` started (``None``: none is);
    lock files of collections that died are removed."""
    folder = _locks(home)
    if not folder.is_dir():
        return None
    oldest: float | None = None
    for f in folder.glob("collect-*.lock"):
        try:
            fd = os.open(f, os.O_RDONLY)
        except FileNotFoundError:
            continue   # finished meanwhile
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:   # held: that collection is running
                try:
                    start = float(os.read(fd, 64).decode().strip() or "nan") - _MARGIN_S
                except ValueError:
                    start = float("nan")
                if start != start:   # unreadable start: protect everything
                    start = 0.0
                oldest = start if oldest is None else min(oldest, start)
            else:
                f.unlink(missing_ok=True)   # nobody holds it: its collection died
        finally:
            os.close(fd)
    return oldest
