"""One way to publish a file or a directory: write it under a unique temporary name beside
its target, fsync it, rename it over the target, fsync the folder.

Every file gnomon publishes (shards, manifests, directions, reports, caches, markers)
goes through here, so a crash never leaves half a file under the real name, two writers
never share a temporary name, and a reader sees the old file or the new one, never a mix.
``tests/test_architecture.py`` checks that no other module calls ``os.replace`` or
``Path.rename``/``replace``.

>>> from pathlib import Path; import tempfile
>>> p = write_json(Path(tempfile.mkdtemp()) / "a.json", {"x": 1})
>>> p.read_text()
'{"x": 1}'
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["build_dir", "move_into_place", "publish", "temp_beside", "write_bytes", "write_json", "write_text"]


def temp_beside(target: str | Path, tag: str = "tmp") -> Path:
    """A unique hidden name in ``target``'s folder (same filesystem, so the rename is atomic).

    It starts with a dot and ends in ``.<tag>`` (``.part-0.parquet.<hex>.tmp``), so scans
    for ``*.parquet`` or ``*.json`` never see a half-written file.
    """
    target = Path(target)
    return target.with_name(f".{target.name}.{uuid.uuid4().hex[:12]}.{tag}")


def _fsync(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass          # some filesystems refuse fsync on a directory; the rename is still atomic
    finally:
        os.close(fd)


def move_into_place(src: str | Path, target: str | Path) -> Path:
    """Publish an already-written ``src`` (a file or a folder, beside ``target``) as ``target``.

    A folder that already exists at ``target`` is first moved aside and removed after the
    swap, so readers see the old folder or the new one.
    """
    src, target = Path(src), Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    if src.is_file():
        _fsync(src)
    if src.is_dir() and target.is_dir() and not target.is_symlink():
        old = temp_beside(target, "old")
        os.replace(target, old)
        os.replace(src, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(src, target)
    _fsync(target.parent)
    return target


def publish(target: str | Path, write: Callable[[Path], object], tag: str = "tmp") -> Path:
    """Call ``write(tmp)`` with a unique temporary path, then move it into place as ``target``.

    ``write`` may create a file or a folder at ``tmp``; on failure nothing is left behind.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_beside(target, tag)
    try:
        write(tmp)
        return move_into_place(tmp, target)
    finally:
        if tmp.is_dir() and not tmp.is_symlink():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)


def build_dir(target: str | Path, build: Callable[[Path], object]) -> Path:
    """Build a folder with ``build(tmp_dir)`` (the folder exists, empty) and publish it as ``target``."""
    def make(tmp: Path) -> None:
        tmp.mkdir()
        build(tmp)
    return publish(target, make, "tmpdir")


def write_bytes(target: str | Path, data: bytes) -> Path:
    """Publish ``data`` as ``target``."""
    return publish(target, lambda tmp: tmp.write_bytes(data))


def write_text(target: str | Path, text: str, encoding: str = "utf-8") -> Path:
    """Publish ``text`` as ``target``."""
    return publish(target, lambda tmp: tmp.write_text(text, encoding=encoding))


def write_json(target: str | Path, doc: Any, **dumps: Any) -> Path:
    """Publish ``json.dumps(doc, **dumps)`` as ``target`` (``indent``, ``default``, ``allow_nan``...)."""
    return write_text(target, json.dumps(doc, **dumps))
