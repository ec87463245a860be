"""Keeping a local SQLite catalog's artifact paths under the catalog when its home moves.

MLflow stores absolute ``file://`` URIs (experiment artifact locations, run artifact
URIs, model version sources), so a home copied with ``cp -r`` and moved kept pointing at
the old place: ``catalog export`` failed with MLflow's own exception and ``catalog show``
printed the old path; worse, a copy still beside its original wrote new runs into the
original's folder. gnomon keeps the artifacts of a SQLite catalog beside the database
(``<db folder>/mlartifacts``, :func:`catalog.backend.local_artifact_root`), so on every
open the recorded root is compared with that folder and, when it differs, every stored
URI under the old root is rewritten to the new one, in one SQLite transaction under the
catalog's write lock. A home can then be copied, moved, backed up and restored. Only
``file://`` locations whose parent folder is named ``mlartifacts`` are touched; a remote
tracking server keeps its own artifact store and is never rewritten.

Standard library only: the fast read path (:mod:`catalog.fast`) calls it without MLflow.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from catalog.backend import sqlite_path, write_lock
from pipeline.types import GnomonError

__all__ = ["reroot_artifacts"]

_COLUMNS = (("experiments", "artifact_location"), ("runs", "artifact_uri"), ("model_versions", "source"),
            ("model_versions", "storage_location"), ("logged_models", "artifact_location"))
"""Every column in which MLflow 3 records an artifact URI."""


def _old_roots(con: sqlite3.Connection, new: str) -> list[str]:
    """Artifact roots recorded in the experiments that are not ``new``."""
    rows = con.execute("SELECT DISTINCT artifact_location FROM experiments WHERE artifact_location LIKE 'file://%'")
    roots = {loc.rsplit("/", 1)[0] for (loc,) in rows if loc and "/" in loc}
    return sorted(r for r in roots if r.endswith("/mlartifacts") and r != new)


def _present(con: sqlite3.Connection) -> list[tuple[str, str]]:
    out = []
    for table, col in _COLUMNS:
        if col in {r[1] for r in con.execute(f"PRAGMA table_info({table})")}:
            out.append((table, col))
    return out


def reroot_artifacts(uri: str) -> int:
    """Rewrite the artifact URIs of the SQLite catalog at ``uri`` recorded under another
    root to its own ``mlartifacts`` folder (see the module doc); returns rows changed.
    Costs one small read when nothing moved; anything but ``sqlite:///`` is left alone."""
    path = sqlite_path(uri)
    if path is None or not path.is_file():
        return 0
    new = (path.resolve().parent / "mlartifacts").as_uri()
    try:
        with sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=10) as con:
            if not _old_roots(con, new):
                return 0
    except sqlite3.Error:
        return 0  # not a catalog MLflow made (yet): MLflow reports it when it opens it
    try:
        with write_lock(uri):
            con = sqlite3.connect(path, timeout=30)
            try:
                with con:  # one transaction: every URI moves, or none
                    old = _old_roots(con, new)
                    changed = 0
                    for table, col in _present(con):
                        for root in old:
                            cur = con.execute(f"UPDATE {table} SET {col} = ? || substr({col}, ?) "  # noqa: S608
                                              f"WHERE substr({col}, 1, ?) = ?",
                                              (new, len(root) + 1, len(root) + 1, root + "/"))
                            changed += cur.rowcount
            finally:
                con.close()
    except (OSError, sqlite3.Error) as e:
        raise GnomonError(f"the catalog {path} was moved from elsewhere and its artifact paths must be updated "
                          f"to {Path(path).resolve().parent / 'mlartifacts'}, which failed ({e}); make it "
                          "writable and try again") from None
    return changed
