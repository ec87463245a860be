"""Moving a store written before store keys (issue 21) to one folder per model identity.

Stores written before kept each model under ``model=<cleaned name>`` (``tiny:llama`` and
``./tiny_llama`` both under ``model=tiny_llama``). On the first open by this version,
every manifest without ``"layout": 2`` is re-keyed from the model id it recorded (see
:mod:`pipeline.store_keys`; a relative path resolves against the current directory when
it is still there, else keeps its old folder) and its shard moves with it. Nothing is
lost on a crash at any point: the shard is hard-linked (or copied) to its new name, the
new manifest is written, and only then are the old manifest and the old name removed;
a second run redoes any manifest that is still old. ``manifests/LAYOUT`` marks a store
with nothing left to migrate, so later opens cost one ``stat``.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from pipeline.atomic import publish, write_json, write_text
from pipeline.store_keys import ModelKey
from pipeline.types import GnomonError

__all__ = ["LAYOUT", "mark_current", "migrate", "needs_migration"]

LAYOUT = 2
"""The manifest layout this version writes (``"layout"`` in every manifest)."""
_MARKER = "LAYOUT"


def needs_migration(root: Path) -> bool:
    """A store with manifests and no marker may hold manifests of the old layout."""
    manifests = root / "manifests"
    return manifests.is_dir() and not (manifests / _MARKER).is_file()


def mark_current(root: Path) -> None:
    """Record that every manifest under ``root`` has the current layout."""

    marker = root / "manifests" / _MARKER
    if not marker.is_file():
        write_text(marker, f"{LAYOUT}\n")


@contextmanager
def _locked(root: Path) -> Iterator[None]:
    fd = os.open(root / "manifests" / ".migrate.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def migrate(root: Path, resolve: Callable[[str], ModelKey]) -> int:
    """Re-key every old-layout manifest and its shard (see the module doc); returns how
    many manifests were rewritten. Safe to run from several processes at once."""
    try:
        with _locked(root):
            if not needs_migration(root):
                return 0
            done = sum(_migrate_one(root, mp, resolve)
                       for mp in sorted((root / "manifests").glob("model=*/revision=*/dataset=*/layer=*/part-*.json")))
            mark_current(root)
    except OSError as e:
        raise GnomonError(f"the store {root} was written by an older gnomon and must be migrated once (one "
                          f"folder per model), which failed: {e.strerror or e}; make it writable and run "
                          "`gnomon store ls`") from None
    return done


def _migrate_one(root: Path, mp: Path, resolve: Callable[[str], ModelKey]) -> bool:
    m = _load_json(mp)
    if m is None or m.get("layout") == LAYOUT or not isinstance(m.get("model"), str):
        return False  # current, or unreadable (readers report it where it is)
    old = mp.relative_to(root / "manifests").parts[0]
    tail = mp.relative_to(root / "manifests" / old)
    target = resolve(m["model"])
    new_mp = root / "manifests" / f"model={target.key}" / tail
    old_shard = root / "activations" / old / tail.with_suffix(".parquet")
    new_shard = root / "activations" / f"model={target.key}" / tail.with_suffix(".parquet")
    if new_shard != old_shard and old_shard.is_file() and not old_shard.is_symlink():
        def link_or_copy(tmp: Path) -> None:
            try:
                os.link(old_shard, tmp)
            except OSError:
                shutil.copyfile(old_shard, tmp)
        publish(new_shard, link_or_copy)
    doc = {**m, "model": target.model, "model_slug": target.key, "path": str(new_shard.relative_to(root)),
           "layout": LAYOUT, "migrated_from": old}
    write_json(new_mp, doc, indent=1)
    if new_mp != mp:
        mp.unlink(missing_ok=True)
        old_shard.unlink(missing_ok=True)
        for d in (mp.parent, old_shard.parent):
            _prune_empty(d, root)
    return True


def _prune_empty(d: Path, root: Path) -> None:
    """Remove ``d`` and its parents while empty, up to ``root/<kind>``."""
    stop = {root, root / "manifests", root / "activations"}
    while d not in stop and d.is_dir() and not any(d.iterdir()):
        d.rmdir()
        d = d.parent


def _load_json(path: Path) -> dict | None:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError):
        return None
    return doc if isinstance(doc, dict) else None
