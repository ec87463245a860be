"""The activation store: hive-partitioned Parquet shards with manifests.

Layout under a store root (the gnomon home by default)::

    activations/model=<key>/revision=<rev>/dataset=<name>/layer=<L>/part-<shard:05d>.parquet
    manifests/model=<key>/revision=<rev>/dataset=<name>/layer=<L>/part-<shard:05d>.json
    examples/dataset=<name>/examples.parquet

``<key>`` is unique per model identity (:mod:`pipeline.store_keys`: a registered or
built-in id, or a readable name plus a hash of the resolved path); a store written with
the older cleaned-name folders is migrated when it is first opened
(:mod:`pipeline.store_migrate`).

Why this shape: the hive partitions let DuckDB (``pipeline.contrast``) prune to one
model/layer from the path alone; one shard per (layer, shard) file lets independent
workers write without coordination; and the manifest, written only after the shard is
in place, is the completion marker a resumed job checks (datatrove's per-rank
markers), so a crash never leaves a half shard that counts, and a rerun overwrites the
shard under the same name instead of adding rows.

The root is a local path or a URI (``s3://bucket/prefix``; every file goes through
:mod:`pipeline.storage`). The commit protocol is the same on both, in three steps:
(1) the shard's old manifest is deleted, (2) the shard is published whole under its
canonical name (locally temp + fsync + rename; on object storage one upload of the finished
file, which has no rename but makes a whole object visible at once), (3) the manifest,
holding the shard's row count, byte size and sha256, is published last. Readers list
*manifests*, never shard files, and take a shard only when its size and sha256 match its
manifest (hashed once per version of the file per process), so a shard without a
manifest (a crash between 2 and 3) does not exist for any reader, and a corrupted or
swapped object is refused. A rerun finds no complete manifest, writes the shard again
under the same key (overwriting the orphan) and then its manifest: exactly once.
Object-storage stores are always in the current layout (no migration, no marker file).

The vector column ``act`` is a ``FixedSizeList<float16|float32>`` built from numpy
without copying (not Ray's tensor extension, which DuckDB cannot read). It is written
PLAIN and uncompressed, without statistics or dictionary: activations barely compress,
min/max of list elements are useless, and DuckDB 2.0 cannot read float16
BYTE_STREAM_SPLIT.

>>> store = ActivationStore(tmp)                                   # doctest: +SKIP
>>> t = activation_table(["a", "b"], "last", np.array([3, 5]), np.ones((2, 8)))
>>> store.write_shard("org/m", "main", "sst", 3, 0, t,             # doctest: +SKIP
...                   fingerprint="f", positions=["last"]).rows
2
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.storage import Storage
from pipeline.store_keys import (
    ModelKey,
    check_key,
    ids_digest,
    model_slug,
    resolve_model_key,
)
from pipeline.store_migrate import LAYOUT, mark_current, migrate, needs_migration
from pipeline.store_read import ManifestReader, _check_int, check_name, sha256_file
from pipeline.store_tables import (
    _META_COLUMNS,
    EXAMPLE_SCHEMA,
    _check_shard_table,
    _normalise_examples,
    activation_table,
    vectors_to_numpy,
)
from pipeline.types import GnomonError, check_positions

_HELD: dict[tuple, tuple[int | None, frozenset[str] | None]] = {}
"""(store, manifest, stamp) -> (shard, example ids), read by the overlap check, per process."""

__all__ = [
    "EXAMPLE_SCHEMA",
    "ActivationStore",
    "ShardRecord",
    "activation_table",
    "check_name",
    "ids_digest",
    "model_slug",
    "sha256_file",
    "vectors_to_numpy",
]


@dataclass(frozen=True)
class ShardRecord:
    """What ``write_shard`` wrote: the parquet file, its row count, size and checksum."""

    path: Path | str
    """The shard's local path, or its URI on object storage."""
    rows: int
    bytes: int
    sha256: str


class ActivationStore(ManifestReader):
    """Parquet shards of activations plus examples, under one root: a local path or a URI.

    ``root`` is the local :class:`~pathlib.Path`, or the URI text on object storage;
    ``storage`` reads and writes either (paths in manifests are relative to the root)."""

    def __init__(self, root: str | Path) -> None:
        self.storage = Storage.open(root)
        self.root: Any = self.storage.local if self.storage.local is not None else self.storage.uri
        self._keys: dict[tuple[str, str], ModelKey] = {}
        if self.storage.local is not None and needs_migration(self.root):
            migrate(self.root, self.model_key)

    # ----------------------------------------------------------------- paths
    def model_key(self, model: str) -> ModelKey:
        """Where ``model``'s rows live (its key) and the id recorded with them (see
        :mod:`pipeline.store_keys`; relative paths resolve against the current directory)."""
        cache = (str(model), os.getcwd())
        if cache not in self._keys:
            self._keys[cache] = resolve_model_key(model, self.storage.local or self.storage)
        return self._keys[cache]

    def key(self, model: str) -> str:
        """The ``model=`` partition value of ``model`` (what `gnomon sql` shows as ``model``)."""
        return self.model_key(model).key

    def _part(self, kind: str, model: str, revision: str, dataset: str, layer: int | None = None) -> str:
        return self._key_part(kind, self.key(model), revision, dataset, layer)

    def _key_part(self, kind: str, key: str, revision: str, dataset: str, layer: int | None = None) -> str:
        """The folder, relative to the root, of one partition."""
        p = (f"{kind}/model={check_key(key)}/revision={check_name(revision, 'revision')}"
             f"/dataset={check_name(dataset, 'dataset')}")
        return p if layer is None else f"{p}/layer={_check_int(layer, 'layer')}"

    def _shard_rel(self, model: str, revision: str, dataset: str, layer: int, shard: int) -> str:
        return f"{self._part('activations', model, revision, dataset, layer)}/part-{_check_int(shard, 'shard'):05d}.parquet"

    def _manifest_rel(self, model: str, revision: str, dataset: str, layer: int, shard: int) -> str:
        return f"{self._part('manifests', model, revision, dataset, layer)}/part-{_check_int(shard, 'shard'):05d}.json"

    def _where(self, rel: str) -> Any:
        """``rel`` as a local Path, or its URI on object storage."""
        return self.root / rel if self.storage.local is not None else self.storage.uri_of(rel)

    def shard_path(self, model: str, revision: str, dataset: str, layer: int, shard: int) -> Any:
        return self._where(self._shard_rel(model, revision, dataset, layer, shard))

    def manifest_path(self, model: str, revision: str, dataset: str, layer: int, shard: int) -> Any:
        return self._where(self._manifest_rel(model, revision, dataset, layer, shard))

    def manifest_file(self, m: dict) -> Any:
        """Where manifest ``m`` (as :meth:`manifest` returns it) lies: under its own key,
        which a relative model id read from another directory might not give back."""
        return self._where(f"{self._key_part('manifests', m['model_slug'], m['revision'], m['dataset'], m['layer'])}"
                           f"/part-{_check_int(m['shard'], 'shard'):05d}.json")

    def _examples_rel(self, dataset: str) -> str:
        return f"examples/dataset={check_name(dataset, 'dataset')}/examples.parquet"

    def examples_path(self, dataset: str) -> Any:
        return self._where(self._examples_rel(dataset))

    # -------------------------------------------------------------- examples
    def write_examples(self, dataset: str, table: pa.Table, overwrite: bool = False) -> Path:
        """Store a dataset's examples once; identical content again is a no-op.

        Columns are normalised to ``EXAMPLE_SCHEMA`` (missing optional columns become
        null, a non-string ``messages`` becomes JSON text, other columns are dropped), so
        every dataset shares one schema in the DuckDB ``examples`` view.
        """
        rel = self._examples_rel(dataset)
        new = _normalise_examples(table, dataset)
        if self.storage.exists(rel):
            old = self.storage.read_parquet(rel).replace_schema_metadata(None)
            if old.equals(new):
                return self._where(rel)
            if not overwrite:
                raise GnomonError(f"dataset {dataset!r} already has different examples in the store; "
                                  "pick another name or pass overwrite=True")
        self.storage.publish(rel, lambda tmp: pq.write_table(new, tmp, compression="zstd"))
        return self._where(rel)

    def read_examples(self, dataset: str) -> pa.Table:
        rel = self._examples_rel(dataset)
        if not self.storage.exists(rel):
            raise GnomonError(f"no examples stored for dataset {dataset!r} under {self.root}")
        return self.storage.read_parquet(rel).replace_schema_metadata(None)

    # ---------------------------------------------------------------- shards
    def write_shard(self, model: str, revision: str, dataset: str, layer: int, shard: int, table: pa.Table,
                    *, fingerprint: str, positions: Sequence[str], content: str | None = None) -> ShardRecord:
        """Write one shard whole (locally temp + fsync + rename, remotely one upload), then
        its manifest (the commit protocol in the module doc).

        ``content`` is a digest of the inputs the rows were computed from (the examples'
        texts), recorded so a rerun after the dataset's texts changed under the same ids
        redoes the shard (see ``shard_complete``).

        A shard already there is replaced, never appended to; the old manifest is removed
        first, so a crash between the two renames leaves an incomplete shard that
        ``shard_complete`` reports as such and the next run redoes.
        """
        wanted = check_positions(positions)
        act_type = _check_shard_table(table, wanted)
        values = table.column("act").combine_chunks().flatten()
        if values.null_count or not np.isfinite(values.to_numpy(zero_copy_only=False)).all():
            raise GnomonError(f"{dataset} layer {layer} shard {shard}: activations contain NaN, infinite or "
                              "missing values; refusing to store them")
        mkey = self.model_key(model)
        rel = self._shard_rel(model, revision, dataset, layer, shard)
        mrel = self._manifest_rel(model, revision, dataset, layer, shard)
        # one listing of the layer's manifests serves the delete and the overlap check
        listed = dict(self.storage.glob_stamps(f"{self._part('manifests', model, revision, dataset, layer)}/part-*.json"))
        if mrel in listed:
            self.storage.delete(mrel, known=True)
        table = table.select(_META_COLUMNS + ["act"]).replace_schema_metadata(None)
        size, digest = self.storage.publish(rel, lambda tmp: pq.write_table(
            table, tmp, compression={"example_id": "zstd", "position": "zstd", "token_index": "zstd", "act": "none"},
            use_dictionary=["example_id", "position"], write_statistics=_META_COLUMNS,
            row_group_size=65536), digest=True) or (0, "")
        ids = sorted(set(table.column("example_id").to_pylist()))
        self._drop_overlapping(model, revision, dataset, layer, shard, set(ids), listed)
        record = {
            "model": mkey.model, "model_slug": mkey.key, "layout": LAYOUT, "revision": revision, "dataset": dataset,
            "layer": int(layer), "shard": int(shard), "path": rel,
            "rows": table.num_rows, "bytes": size, "sha256": digest, "fingerprint": fingerprint,
            "positions": wanted, "dtype": "float16" if act_type.value_type == pa.float16() else "float32",
            "hidden_size": act_type.list_size,
            "ids_sha256": ids_digest(ids), "ids": ids, "content_sha256": content,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "created_ns": time.time_ns(),
        }
        self.storage.publish(mrel, lambda tmp: tmp.write_text(json.dumps(record, indent=1)))
        if self.storage.local is not None:
            mark_current(self.root)
        return ShardRecord(path=self._where(rel), rows=table.num_rows, bytes=size, sha256=digest)

    def shard_complete(self, model: str, revision: str, dataset: str, layer: int, shard: int, *,
                       fingerprint: str, positions: Sequence[str], verify: bool = True,
                       ids: Sequence[str] | None = None, content: str | None = None,
                       listed: set[str] | None = None) -> bool:
        """True when the manifest and the file agree (size, and sha256 if ``verify``),
        the fingerprint matches, the shard's positions cover ``positions`` and, given
        ``ids``, the shard holds exactly that example set (see :func:`ids_digest`) and,
        given ``content``, was computed from those inputs (manifests written before the
        digest was recorded are taken as they are). ``listed``: :meth:`stored_manifests`, so a
        shard with no manifest costs no request."""
        wanted = check_positions(positions)
        mrel = self._manifest_rel(model, revision, dataset, layer, shard)
        if listed is not None and mrel not in listed:
            return False
        m = self.storage.read_json(mrel)
        rel = self._shard_rel(model, revision, dataset, layer, shard)
        if m is None or m.get("fingerprint") != fingerprint or not set(wanted) <= set(m.get("positions", [])):
            return False
        if ids is not None and m.get("ids_sha256") != ids_digest(ids):
            return False
        if content is not None and m.get("content_sha256") not in (None, content):
            return False
        if not self.storage.is_file(rel) or self.storage.size(rel) != m.get("bytes"):
            return False
        return not verify or self.storage.sha256(rel) == m.get("sha256")

    def stored_manifests(self, model: str, revision: str, dataset: str) -> set[str]:
        """Every manifest of ``model``/``revision``/``dataset``, from one listing."""
        return set(self.storage.glob(f"{self._part('manifests', model, revision, dataset)}/layer=*/part-*.json"))

    def _drop_overlapping(self, model: str, revision: str, dataset: str, layer: int, shard: int,
                          ids: set[str], listed: dict[str, tuple]) -> None:
        """Remove the layer's other shards (``listed``: manifest -> version stamp) that hold
        any of ``ids`` (left by a run with another shard size): manifest first, so a crash
        in between leaves no counted shard. Each manifest version is read once per process
        (:data:`_HELD`): the k-th shard of a layer costs no k reads."""
        for mp, stamp in listed.items():
            key = (self.storage.uri, mp, stamp)
            if key not in _HELD:
                m = self.storage.read_json(mp)
                other = m.get("shard") if isinstance(m, dict) else None
                held = m.get("ids") if isinstance(m, dict) else None
                _HELD[key] = (other if isinstance(other, int) and not isinstance(other, bool) else None,
                              frozenset(map(str, held)) if isinstance(held, list) else None)
            other, held = _HELD[key]
            if other is None or other == shard or (held is not None and ids.isdisjoint(held)):
                continue
            self.storage.delete(mp)
            self.storage.delete(self._shard_rel(model, revision, dataset, layer, other))
