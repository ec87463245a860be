"""What the catalog knows about one direction version, and how to query many of them.

A :class:`DirectionRecord` is built from an MLflow model version alone (its tags carry
model, layer, method... and every metric as ``metric.<name>``), so listing a concept is
one search call, not one run fetch per version. :func:`to_arrow` lays records out one
row per version for DuckDB.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from catalog.refs import concept_of

# lazy: pyarrow (heavy; imported where used)

if TYPE_CHECKING:
    import pyarrow as pa

METRIC_PREFIX = "metric."
KIND_TAG = "gnomon_kind"
"""Tag marking registered models / versions written by gnomon (a shared server holds others)."""
RECORD_TAGS = ("model", "revision", "fingerprint", "layer", "position", "method", "dataset_hash",
               "sha256")
"""Version tags that define a record; :meth:`Catalog.tag` refuses to overwrite them."""
IDENTITY_TAG = "identity"
"""Hash of a version's full provenance: what makes two fits the same fitted direction."""
RESERVED_TAGS = frozenset(RECORD_TAGS) | {KIND_TAG, IDENTITY_TAG}


@dataclass(frozen=True)
class DirectionRecord:
    """One registered direction version, as listed by the catalog (no tensors)."""

    concept: str
    version: int
    ref: str
    """``concept/version``: resolves to exactly this version anywhere in the CLI and API."""
    aliases: tuple[str, ...]
    model: str
    revision: str
    fingerprint: str
    layer: int
    position: str
    method: str
    dataset_hash: str
    metrics: dict[str, float]
    sha256: str
    """Content hash of the safetensors file; downloads are checked against it."""
    run_id: str
    source: str
    """Artifact URI of the safetensors file."""
    created: datetime
    tags: dict[str, str] = field(default_factory=dict)
    """Tags that are not part of the fixed fields (``extra_tags``, :meth:`Catalog.tag`)."""

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["aliases"] = list(self.aliases)
        d["created"] = self.created.isoformat()
        # strict JSON: NaN and +-inf (e.g. a d' of identical spreads) have no JSON spelling
        d["metrics"] = {k: (v if math.isfinite(v) else None) for k, v in self.metrics.items()}
        return d

    def matches(self, *, concept: str | None = None, model: str | None = None,
                revision: str | None = None, layer: int | None = None, method: str | None = None,
                position: str | None = None,
                min_metrics: Mapping[str, float] | None = None) -> bool:
        """Equality on each given field; ``min_metrics``: every named metric present and >= bound."""
        wanted = {"concept": concept, "model": model, "revision": revision, "layer": layer,
                  "method": method, "position": position}
        if any(v is not None and getattr(self, k) != v for k, v in wanted.items()):
            return False
        # NaN compares False, so a missing or NaN metric never passes a threshold.
        return all(self.metrics.get(k, math.nan) >= b for k, b in (min_metrics or {}).items())


def record_from_version(mv: Any, aliases: Mapping[str, int]) -> DirectionRecord:
    """Build a record from an MLflow ``ModelVersion`` and its model's ``alias -> version`` map."""
    tags: dict[str, str] = dict(mv.tags or {})
    version = int(mv.version)
    metrics = {k.removeprefix(METRIC_PREFIX): float(v)
               for k, v in tags.items() if k.startswith(METRIC_PREFIX)}
    rest = {k: v for k, v in tags.items()
            if not k.startswith(METRIC_PREFIX) and k not in RESERVED_TAGS}

    concept = concept_of(mv.name)
    return DirectionRecord(
        concept=concept, version=version, ref=f"{concept}/{version}",
        aliases=tuple(sorted(a for a, v in aliases.items() if int(v) == version)),
        model=tags.get("model", ""), revision=tags.get("revision", ""),
        fingerprint=tags.get("fingerprint", ""), layer=int(tags.get("layer", -1)),
        position=tags.get("position", ""), method=tags.get("method", ""),
        dataset_hash=tags.get("dataset_hash", ""), metrics=metrics,
        sha256=tags.get("sha256", ""), run_id=mv.run_id or "",
        source=mv.source or "",
        created=datetime.fromtimestamp((mv.creation_timestamp or 0) / 1000, UTC),
        tags=rest)


_COLUMNS = ("concept", "version", "ref", "model", "revision", "fingerprint", "layer", "position",
            "method", "dataset_hash", "run_id", "source")


def to_arrow(records: Iterable[DirectionRecord]) -> pa.Table:
    """One row per version: the fixed fields, one float64 column per metric name seen in
    any record (null where a version lacks it), ``aliases`` as ``list<string>`` and
    ``created`` as a UTC timestamp. A metric whose name collides with a fixed column is
    named ``metric_<name>``.

    >>> duckdb.sql("SELECT ref FROM tbl WHERE layer = 12 ORDER BY val_auroc DESC")  # doctest: +SKIP
    """
    import pyarrow as pa

    records = list(records)
    metric_names = sorted({k for r in records for k in r.metrics})
    cols: dict[str, pa.Array] = {}
    for c in _COLUMNS:
        typ = pa.int64() if c in ("version", "layer") else pa.string()
        cols[c] = pa.array([getattr(r, c) for r in records], type=typ)
    for m in metric_names:
        name = f"metric_{m}" if m in _COLUMNS or m in ("aliases", "created") else m
        cols[name] = pa.array([r.metrics.get(m) for r in records], type=pa.float64())
    cols["aliases"] = pa.array([list(r.aliases) for r in records], type=pa.list_(pa.string()))
    cols["created"] = pa.array([r.created for r in records], type=pa.timestamp("ms", tz="UTC"))
    return pa.table(cols)
