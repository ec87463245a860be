"""Read-only access to the local SQLite catalog without importing MLflow.

``gnomon catalog ls`` through MLflow costs seconds before the first row: importing mlflow
(~2 s of CPU), building its SQLAlchemy engine and checking the schema's migrations. A
listing needs none of that: the registry is four tables (``model_versions``, their tags,
``registered_model_aliases``) that this module reads with the standard library, read-only,
and turns into the same :class:`~catalog.query.DirectionRecord` values the MLflow path
builds. Writes always go through MLflow. If the file is not a schema this reader knows
(missing table or column, a non-default MLflow workspace), :meth:`SQLiteReader.for_uri`
returns None and callers use :class:`catalog.Catalog`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from pathlib import Path
from types import SimpleNamespace

from catalog.listing import ListingReader
from catalog.query import KIND_TAG, DirectionRecord, record_from_version
from catalog.refs import REGISTRY_PREFIX, concept_of, registered_name
from catalog.reroot import reroot_artifacts
from pipeline.types import GnomonError

__all__ = ["SQLiteReader"]

_NEEDED = {
    "model_versions": {"name", "version", "creation_time", "source", "run_id", "current_stage"},
    "model_version_tags": {"key", "value", "name", "version"},
    "registered_model_aliases": {"alias", "version", "name"},
    "registered_model_tags": {"key", "value", "name"},
}
_DELETED = "Deleted_Internal"
"""MLflow's stage for a deleted version still in the table."""


class SQLiteReader(ListingReader):
    """The catalog's listing queries on an MLflow SQLite file (see the module doc)."""

    def __init__(self, path: Path, tracking_uri: str) -> None:
        self.path = path
        self.tracking_uri = tracking_uri

    @classmethod
    def for_uri(cls, tracking_uri: str) -> SQLiteReader | None:
        if not tracking_uri.startswith("sqlite:///"):
            return None
        path = Path(tracking_uri.removeprefix("sqlite:///"))
        if not path.is_file():
            return None
        reroot_artifacts(tracking_uri)  # a moved or copied home: sources follow it (catalog.reroot)
        reader = cls(path, tracking_uri)
        try:
            with reader._connect() as con:
                for table, cols in _NEEDED.items():
                    have = {r[1] for r in con.execute(f"PRAGMA table_info({table})")}
                    if not cols <= have:
                        return None
                if {r[1] for r in con.execute("PRAGMA table_info(model_versions)")} >= {"workspace"}:
                    spaces = {r[0] for r in con.execute("SELECT DISTINCT workspace FROM model_versions")}
                    if spaces - {"default", None}:
                        return None
                old = con.execute("SELECT count(*) FROM registered_model_tags WHERE key = ? AND value = 'concept' "
                                  "AND substr(name, 1, ?) != ?", (KIND_TAG, len(REGISTRY_PREFIX), REGISTRY_PREFIX))
                if old.fetchone()[0]:
                    return None   # names from before namespacing: the MLflow path renames them first
        except sqlite3.Error:
            return None
        return reader

    def _connect(self) -> sqlite3.Connection:
        con = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=5.0)
        return con

    def records(self, concept: str | None = None, tags: Mapping[str, str] | None = None
                ) -> list[DirectionRecord]:
        """gnomon's live versions (of ``concept`` if given), ordered by concept and version
        (``tags`` is not pushed down: one file read is cheap)."""
        where, params = "", ()
        if concept is not None:
            where, params = " AND v.name = ?", (registered_name(concept),)
        try:
            with self._connect() as con:
                versions = con.execute(
                    "SELECT v.name, v.version, v.creation_time, v.source, v.run_id FROM model_versions v "
                    "JOIN model_version_tags k ON k.name = v.name AND k.version = v.version "
                    f"AND k.key = ? AND k.value = 'direction' WHERE v.current_stage IS NOT ?{where}",
                    (KIND_TAG, _DELETED, *params)).fetchall()
                tags: dict[tuple[str, int], dict[str, str]] = {}
                for key, value, name, version in con.execute(
                        "SELECT key, value, name, version FROM model_version_tags"
                        + (" WHERE name = ?" if concept is not None else ""), params):
                    tags.setdefault((name, int(version)), {})[key] = value
                aliases: dict[str, dict[str, int]] = {}
                for alias, version, name in con.execute(
                        "SELECT alias, version, name FROM registered_model_aliases"
                        + (" WHERE name = ?" if concept is not None else ""), params):
                    aliases.setdefault(name, {})[alias] = int(version)
        except sqlite3.Error as e:
            raise GnomonError(f"cannot read the catalog at {self.path}: {e}") from e
        recs = [record_from_version(SimpleNamespace(name=name, version=version, tags=tags.get((name, int(version)), {}),
                                                    run_id=run_id, source=source, creation_timestamp=created),
                                    aliases.get(name, {}))
                for name, version, created, source, run_id in versions]
        return sorted(recs, key=lambda r: (r.concept, r.version))

    def concepts(self) -> list[str]:
        with self._connect() as con:
            rows = con.execute("SELECT name FROM registered_model_tags WHERE key = ? AND value = 'concept'",
                               (KIND_TAG,)).fetchall()
        return sorted(concept_of(r[0]) for r in rows)


