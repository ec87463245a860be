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
renamed into place, is the completion marker a resumed job checks (datatrove's per-rank
markers), so a crash never leaves a half shard that counts, and a rerun overwrites the
shard under the same name instead of adding rows.

The vector column ``act`` is a ``FixedSizeList<float16|float32>`` built from numpy
without copying (not Ray's tensor extension, which DuckDB cannot read). It is written
PLAIN and uncompressed, without statistics or dictionary: activations barely compress,
min/max of list elements are useless, and DuckDB 2.0 cannot read float16
BYTE_STREAM_SPLIT. Only local roots are supported (``file://`` URIs are accepted): the
atomic rename and fsync the resume logic relies on do not exist on object stores.

>>> store = ActivationStore(tmp)                                   # doctest: +SKIP
>>> t = activation_table(["a", "b"], "last", np.array([3, 5]), np.ones((2, 8)))
>>> store.write_shard("org/m", "main", "sst", 3, 0, t,             # doctest: +SKIP
...                   fingerprint="f", positions=["last"]).rows
2
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.atomic import publish
from pipeline.store_keys import ModelKey, check_key, resolve_model_key
from pipeline.store_migrate import LAYOUT, mark_current, migrate, needs_migration
from pipeline.types import POSITIONS, SPLITS, GnomonError

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

_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
_DTYPES = {"float16": pa.float16(), "float32": pa.float32()}
_META_COLUMNS = ["example_id", "position", "token_index"]

EXAMPLE_SCHEMA = pa.schema([
    ("id", pa.string()), ("text", pa.string()), ("messages", pa.string()),
    ("label", pa.string()), ("pair", pa.string()), ("split", pa.string()),
])
"""Examples as stored: ``messages`` is the chat list as JSON text, ``pair`` a string."""


def model_file_key(model_id: str, home: Any = None) -> str:
    """The name under which a model's own files are kept (sweeps, evaluations, report figures):
    its store key (:mod:`pipeline.store_keys`), so two models never share one, as they shared
    :func:`model_slug` (``./tiny_llama`` and ``tiny:llama``)."""
    from pipeline.home import gnomon_home
    from pipeline.store_keys import resolve_model_key

    return resolve_model_key(model_id, gnomon_home(home)).key


def model_slug(model_id: str) -> str:
    """A path-safe, readable name for a model id: ``org/name`` -> ``org--name``.

    Characters outside ``[A-Za-z0-9._-]`` become ``_``; idempotent. For file names of
    reports and figures; the store's folders use :meth:`ActivationStore.key` instead,
    because two models can share a slug (``./tiny_llama`` and ``tiny:llama``).
    """
    s = re.sub(r"[^A-Za-z0-9._-]", "_", str(model_id).strip().replace("\\", "/").strip("/").replace("/", "--"))
    s = s.lstrip("._-")[:200]
    if not s:
        raise GnomonError(f"model id {model_id!r} has no usable characters for a store path")
    return s


def check_name(value: str, what: str) -> str:
    """Reject a partition value that could leave the store root (``..``, ``/``, absolute)."""
    if not isinstance(value, str) or not _SAFE.match(value):
        raise GnomonError(f"{what} {value!r} must match [A-Za-z0-9][A-Za-z0-9._-]* (no '/', '..' or spaces)")
    return value


def _check_int(value: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise GnomonError(f"{what} must be a non-negative integer, got {value!r}")
    return int(value)


def _check_positions(positions: Sequence[str]) -> list[str]:
    bad = [p for p in positions if p not in POSITIONS]
    if bad or not positions:
        raise GnomonError(f"positions {list(positions)!r} must be a non-empty subset of {list(POSITIONS)}")
    return sorted(set(positions))


@dataclass(frozen=True)
class ShardRecord:
    """What ``write_shard`` wrote: the parquet file, its row count, size and checksum."""

    path: Path
    rows: int
    bytes: int
    sha256: str


def activation_table(example_ids: Sequence[str], positions: Sequence[str] | str, token_index: np.ndarray,
                     acts: np.ndarray, dtype: str = "float16", where: str = "") -> pa.Table:
    """Rows for one shard: ``acts`` (n, d) becomes a ``FixedSizeList<dtype>[d]`` column.

    ``positions`` is one string per row, or one string for every row. ``token_index`` is
    the token's index for ``tok``, the last real token's for ``last``, -1 for ``mean``.
    NaN/inf rows are refused, naming the example (and ``where``, e.g. ``layer 3``).
    """
    if dtype not in _DTYPES:
        raise GnomonError(f"dtype {dtype!r} must be one of {sorted(_DTYPES)}")
    acts = np.asarray(acts)
    if acts.ndim != 2:
        raise GnomonError(f"acts must be (n, d), got shape {acts.shape}")
    n, d = acts.shape
    with np.errstate(over="ignore"):  # an overflow becomes inf, refused below with its example
        flat = np.ascontiguousarray(acts, dtype=np.dtype(dtype)).reshape(-1)  # (n*d,)
    pos = [positions] * n if isinstance(positions, str) else list(positions)
    tok = np.asarray(token_index, dtype=np.int32)
    if len(example_ids) != n or len(pos) != n or tok.shape != (n,):
        raise GnomonError(f"example_ids, positions and token_index need {n} entries (one per row of acts)")
    _check_positions(pos or ["last"])
    _check_finite(acts, flat.reshape(n, d), example_ids, pos, dtype, where)
    values = pa.Array.from_buffers(_DTYPES[dtype], n * d, [None, pa.py_buffer(flat)])  # zero-copy
    return pa.table({
        "example_id": pa.array(list(example_ids), pa.string()),
        "position": pa.array(pos, pa.string()),
        "token_index": pa.array(tok, pa.int32()),
        "act": pa.FixedSizeListArray.from_arrays(values, d),
    })


def _check_finite(acts: np.ndarray, stored: np.ndarray, example_ids: Sequence[str], pos: Sequence[str],
                  dtype: str, where: str) -> None:
    """Refuse NaN or infinite vectors (a model with NaN weights, a float16 overflow), and
    values the storage dtype cannot hold, naming the first example affected: a store of
    NaN rows would silently poison every fit and query that reads them."""
    if acts.size == 0:
        return
    bad_in = ~np.isfinite(acts).all(axis=1)
    bad_out = ~np.isfinite(stored).all(axis=1)
    if bad_in.any():
        i = int(np.argmax(bad_in))
        raise GnomonError(f"the model produced NaN or infinite activations {where + ' ' if where else ''}"
                          f"for example {example_ids[i]!r} (position {pos[i]}; {int(bad_in.sum())} of "
                          f"{len(bad_in)} rows): check the weights "
                          "and the compute dtype (--model-dtype float32)")
    if bad_out.any():
        i = int(np.argmax(bad_out))
        peak = float(np.abs(acts[i]).max())
        raise GnomonError(f"activations {where + ' ' if where else ''}of example {example_ids[i]!r} "
                          f"(position {pos[i]}) reach {peak:.3g}, "
                          f"beyond {dtype}'s range; store them with --dtype float32")


def vectors_to_numpy(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A (fixed-size) list column of floats as an (n, d) float32 array, no per-row work."""
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    n = len(arr)
    if n == 0:
        width = arr.type.list_size if pa.types.is_fixed_size_list(arr.type) else 0
        return np.zeros((0, width), np.float32)
    if arr.null_count:
        raise GnomonError("activation column has null vectors")
    flat = arr.flatten()  # respects slicing offsets
    if len(flat) % n:
        raise GnomonError("activation vectors have different lengths")
    return flat.to_numpy(zero_copy_only=False).astype(np.float32, copy=False).reshape(n, len(flat) // n)


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def ids_digest(ids: Sequence[str]) -> str:
    """The identity of a shard's example set: sha256 of its sorted, distinct ids.

    A shard is the (layer, index) file *and* the examples it holds: a rerun with another
    shard size cuts different example sets under the same indices, so completeness and
    reading both compare this digest, never the index alone.
    """
    return hashlib.sha256("\n".join(sorted(set(ids))).encode()).hexdigest()


# sha256 of files already verified in this process, keyed by what a rewrite or an edit
# changes (inode, mtime, size): readers verify every shard they read, once.
_VERIFIED: dict[tuple[str, int, int, int], str] = {}


def _verified_sha(path: Path) -> str:
    st = path.stat()
    key = (str(path), st.st_ino, st.st_mtime_ns, st.st_size)
    if key not in _VERIFIED:
        _VERIFIED[key] = sha256_file(path)
    return _VERIFIED[key]


class ActivationStore:
    """Parquet shards of activations plus examples, under one local root."""

    def __init__(self, root: str | Path) -> None:
        text = str(root)
        if "://" in text:
            scheme, _, rest = text.partition("://")
            if scheme != "file":
                raise GnomonError(f"store root {text!r}: only local paths (or file://) are supported")
            text = rest
        self.root: Path = Path(text).expanduser().resolve()
        self._keys: dict[tuple[str, str], ModelKey] = {}
        if needs_migration(self.root):
            migrate(self.root, self.model_key)

    # ----------------------------------------------------------------- paths
    def model_key(self, model: str) -> ModelKey:
        """Where ``model``'s rows live (its key) and the id recorded with them (see
        :mod:`pipeline.store_keys`; relative paths resolve against the current directory)."""
        cache = (str(model), os.getcwd())
        if cache not in self._keys:
            self._keys[cache] = resolve_model_key(model, self.root)
        return self._keys[cache]

    def key(self, model: str) -> str:
        """The ``model=`` partition value of ``model`` (what `gnomon sql` shows as ``model``)."""
        return self.model_key(model).key

    def _part(self, kind: str, model: str, revision: str, dataset: str, layer: int | None = None) -> Path:
        return self._key_part(kind, self.key(model), revision, dataset, layer)

    def _key_part(self, kind: str, key: str, revision: str, dataset: str, layer: int | None = None) -> Path:
        p = (self.root / kind / f"model={check_key(key)}" / f"revision={check_name(revision, 'revision')}"
             / f"dataset={check_name(dataset, 'dataset')}")
        return p if layer is None else p / f"layer={_check_int(layer, 'layer')}"

    def shard_path(self, model: str, revision: str, dataset: str, layer: int, shard: int) -> Path:
        return self._part("activations", model, revision, dataset, layer) / f"part-{_check_int(shard, 'shard'):05d}.parquet"

    def manifest_path(self, model: str, revision: str, dataset: str, layer: int, shard: int) -> Path:
        return self._part("manifests", model, revision, dataset, layer) / f"part-{_check_int(shard, 'shard'):05d}.json"

    def manifest_file(self, m: dict) -> Path:
        """Where manifest ``m`` (as :meth:`manifest` returns it) lies: under its own key,
        which a relative model id read from another directory might not give back."""
        return (self._key_part("manifests", m["model_slug"], m["revision"], m["dataset"], m["layer"])
                / f"part-{_check_int(m['shard'], 'shard'):05d}.json")

    def examples_path(self, dataset: str) -> Path:
        return self.root / "examples" / f"dataset={check_name(dataset, 'dataset')}" / "examples.parquet"

    # -------------------------------------------------------------- examples
    def write_examples(self, dataset: str, table: pa.Table, overwrite: bool = False) -> Path:
        """Store a dataset's examples once; identical content again is a no-op.

        Columns are normalised to ``EXAMPLE_SCHEMA`` (missing optional columns become
        null, a non-string ``messages`` becomes JSON text, other columns are dropped), so
        every dataset shares one schema in the DuckDB ``examples`` view.
        """
        path = self.examples_path(dataset)
        new = _normalise_examples(table, dataset)
        if path.exists():
            old = pq.read_table(path).replace_schema_metadata(None)
            if old.equals(new):
                return path
            if not overwrite:
                raise GnomonError(f"dataset {dataset!r} already has different examples in the store; "
                                  "pick another name or pass overwrite=True")
        publish(path, lambda tmp: pq.write_table(new, tmp, compression="zstd"))
        return path

    def read_examples(self, dataset: str) -> pa.Table:
        path = self.examples_path(dataset)
        if not path.exists():
            raise GnomonError(f"no examples stored for dataset {dataset!r} under {self.root}")
        return pq.read_table(path).replace_schema_metadata(None)

    # ---------------------------------------------------------------- shards
    def write_shard(self, model: str, revision: str, dataset: str, layer: int, shard: int, table: pa.Table,
                    *, fingerprint: str, positions: Sequence[str], content: str | None = None) -> ShardRecord:
        """Write one shard atomically (temp + fsync + rename), then its manifest.

        ``content`` is a digest of the inputs the rows were computed from (the examples'
        texts), recorded so a rerun after the dataset's texts changed under the same ids
        redoes the shard (see ``shard_complete``).

        A shard already there is replaced, never appended to; the old manifest is removed
        first, so a crash between the two renames leaves an incomplete shard that
        ``shard_complete`` reports as such and the next run redoes.
        """
        wanted = _check_positions(positions)
        act_type = _check_shard_table(table, wanted)
        values = table.column("act").combine_chunks().flatten()
        if values.null_count or not np.isfinite(values.to_numpy(zero_copy_only=False)).all():
            raise GnomonError(f"{dataset} layer {layer} shard {shard}: activations contain NaN, infinite or "
                              "missing values; refusing to store them")
        mkey = self.model_key(model)
        path = self.shard_path(model, revision, dataset, layer, shard)
        mpath = self.manifest_path(model, revision, dataset, layer, shard)
        mpath.unlink(missing_ok=True)
        table = table.select(_META_COLUMNS + ["act"]).replace_schema_metadata(None)
        publish(path, lambda tmp: pq.write_table(
            table, tmp, compression={"example_id": "zstd", "position": "zstd", "token_index": "zstd", "act": "none"},
            use_dictionary=["example_id", "position"], write_statistics=_META_COLUMNS,
            row_group_size=65536))
        size, digest = path.stat().st_size, sha256_file(path)
        ids = sorted(set(table.column("example_id").to_pylist()))
        self._drop_overlapping(model, revision, dataset, layer, shard, set(ids))
        record = {
            "model": mkey.model, "model_slug": mkey.key, "layout": LAYOUT, "revision": revision, "dataset": dataset,
            "layer": int(layer), "shard": int(shard), "path": str(path.relative_to(self.root)),
            "rows": table.num_rows, "bytes": size, "sha256": digest, "fingerprint": fingerprint,
            "positions": wanted, "dtype": "float16" if act_type.value_type == pa.float16() else "float32",
            "hidden_size": act_type.list_size,
            "ids_sha256": ids_digest(ids), "ids": ids, "content_sha256": content,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "created_ns": time.time_ns(),
        }
        publish(mpath, lambda tmp: tmp.write_text(json.dumps(record, indent=1)))
        mark_current(self.root)
        return ShardRecord(path=path, rows=table.num_rows, bytes=size, sha256=digest)

    def shard_complete(self, model: str, revision: str, dataset: str, layer: int, shard: int, *,
                       fingerprint: str, positions: Sequence[str], verify: bool = True,
                       ids: Sequence[str] | None = None, content: str | None = None) -> bool:
        """True when the manifest and the file agree (size, and sha256 if ``verify``),
        the fingerprint matches, the shard's positions cover ``positions`` and, given
        ``ids``, the shard holds exactly that example set (see :func:`ids_digest`) and,
        given ``content``, was computed from those inputs (manifests written before the
        digest was recorded are taken as they are)."""
        wanted = _check_positions(positions)
        m = _load_json(self.manifest_path(model, revision, dataset, layer, shard))
        path = self.shard_path(model, revision, dataset, layer, shard)
        if m is None or m.get("fingerprint") != fingerprint or not set(wanted) <= set(m.get("positions", [])):
            return False
        if ids is not None and m.get("ids_sha256") != ids_digest(ids):
            return False
        if content is not None and m.get("content_sha256") not in (None, content):
            return False
        if path.is_symlink() or not path.is_file() or path.stat().st_size != m.get("bytes"):
            return False
        return not verify or sha256_file(path) == m.get("sha256")

    def _drop_overlapping(self, model: str, revision: str, dataset: str, layer: int, shard: int,
                          ids: set[str]) -> None:
        """Remove the layer's other shards that hold any of ``ids`` (left by a run with
        another shard size): manifest first, so a crash in between leaves no counted shard."""
        for mp in self._part("manifests", model, revision, dataset, layer).glob("part-*.json"):
            m = _load_json(mp)
            other = m.get("shard") if isinstance(m, dict) else None
            if other == shard or not isinstance(other, int) or isinstance(other, bool):
                continue
            held = m.get("ids")
            if isinstance(held, list) and ids.isdisjoint(map(str, held)):
                continue
            mp.unlink(missing_ok=True)
            self.shard_path(model, revision, dataset, layer, other).unlink(missing_ok=True)

    def manifest(self, model: str | None = None, revision: str | None = None,
                 dataset: str | None = None, layer: int | None = None) -> list[dict]:
        """Manifests of complete shards, optionally for one model/revision/dataset/layer."""
        pattern = "/".join([
            f"model={self.key(model) if model is not None else '*'}",
            f"revision={check_name(revision, 'revision') if revision is not None else '*'}",
            f"dataset={check_name(dataset, 'dataset') if dataset is not None else '*'}",
            f"layer={_check_int(layer, 'layer') if layer is not None else '*'}", "part-*.json"])
        found = [m for p in (self.root / "manifests").glob(pattern)
                 if isinstance(m := _load_json(p), dict) and _manifest_keys(m)]
        return sorted(found, key=lambda m: (m["model_slug"], m["revision"], m["dataset"], m["layer"], m["shard"]))

    def valid_shards(self, model: str | None = None, revision: str | None = None, dataset: str | None = None,
                     layer: int | None = None, fingerprint: str | None = None) -> tuple[list[dict], list[str]]:
        """The shards a reader may use, and why others were left out.

        A shard counts when its manifest parses, names the file at its own canonical path
        (a regular file, not a link), size and sha256 hold, and its fingerprint is
        ``fingerprint`` (default: the fingerprint of the newest manifest of that model,
        revision and dataset: a re-collection after the weights changed supersedes the
        old rows). Among counting shards of one layer, newest first, a shard whose
        examples overlap an already chosen one is left out, so every example has one row
        per position however many shard layouts were ever written. Returns
        ``(manifests, problems)``; ``problems`` names each shard that failed a check.
        """
        problems: list[str] = []
        found: list[tuple[int, dict]] = []
        # The default fingerprint is the newest of any layer's, so only a given one lets the
        # glob stop at this layer's manifests (a report or fit reading 31 layers: 31, not 961).
        for m in self.manifest(model, revision, dataset, layer if fingerprint is not None else None):
            if layer is not None and m.get("layer") != layer:
                continue
            why = self._check_manifest(m)
            if why:
                problems.append(why)
                continue
            found.append((int(m.get("created_ns") or 0), m))
        found.sort(key=lambda t: (t[0], t[1]["shard"]), reverse=True)
        fps: dict[tuple[str, str, str], str] = {}
        taken: dict[tuple[str, str, str, int], set[str]] = {}
        out = []
        for _, m in found:
            group = (m["model_slug"], m["revision"], m["dataset"])
            want = fingerprint if fingerprint is not None else fps.setdefault(group, m["fingerprint"])
            if m["fingerprint"] != want:
                continue
            ids = set(m["ids"])
            seen = taken.setdefault((*group, m["layer"]), set())
            if not ids.isdisjoint(seen):
                continue  # superseded by a newer layout
            seen |= ids
            out.append(m)
        out.sort(key=lambda m: (m["model_slug"], m["revision"], m["dataset"], m["layer"], m["shard"]))
        return out, problems

    def verify(self) -> list[tuple[dict, str]]:
        """Every manifest whose shard fails its checks (missing, another size, checksum
        against the manifest, unreadable), with why: what readers leave out. Hashes each
        shard once per process."""
        return [(m, why) for m in self.manifest() if (why := self._check_manifest(m))]

    def _check_manifest(self, m: dict) -> str | None:
        """Why manifest ``m`` cannot be read from, or None (fills in ``ids`` if missing)."""
        try:
            slug, rev, ds = m["model_slug"], m["revision"], m["dataset"]
            layer, shard = _check_int(m["layer"], "layer"), _check_int(m["shard"], "shard")
            if not isinstance(m["fingerprint"], str) or not isinstance(m["sha256"], str):
                raise GnomonError("fingerprint/sha256 are not strings")
            path = self._key_part("activations", slug, rev, ds, layer) / f"part-{shard:05d}.parquet"
        except (KeyError, TypeError, ValueError, GnomonError) as e:
            return f"manifest {m.get('path', '?')} is malformed ({e})"
        where = path.relative_to(self.root)
        if m.get("path") != str(where):
            return f"manifest for {where} names another file ({m.get('path')!r})"
        try:
            if path.is_symlink() or not path.is_file():
                return f"{where} is missing or not a regular file"
            if path.stat().st_size != m.get("bytes") or _verified_sha(path) != m["sha256"]:
                return f"{where} does not match its manifest checksum"
            if not isinstance(m.get("ids"), list):  # manifests from before ids were recorded
                col = pq.read_table(path, columns=["example_id"]).column("example_id")
                m["ids"] = sorted(set(col.to_pylist()))
        except (OSError, pa.ArrowException) as e:
            return f"{where} cannot be read ({e})"
        m["ids"] = [str(x) for x in m["ids"]]
        return None

    def layers(self, model: str, revision: str, dataset: str) -> list[int]:
        return sorted({m["layer"] for m in self.manifest(model, revision, dataset)})

    def read_layer(self, model: str, revision: str, dataset: str, layer: int,
                   position: str = "last") -> tuple[list[str], np.ndarray]:
        """All rows of one layer at one position: ids and (n, d) float32 vectors, in shard order."""
        _check_positions([position])
        shards, _ = self.valid_shards(model, revision, dataset, layer)
        if not shards:
            raise GnomonError(f"no shards for {model} {revision} {dataset} layer {layer}; "
                              f"stored layers: {self.layers(model, revision, dataset)}")
        parts = [pq.read_table(self.root / m["path"], columns=["example_id", "act"],
                               filters=pc.field("position") == position) for m in shards]
        t = pa.concat_tables(parts)
        return t.column("example_id").to_pylist(), vectors_to_numpy(t.column("act"))

    def summary(self, model: str | None = None, revision: str | None = None,
                dataset: str | None = None) -> dict:
        ms, _ = self.valid_shards(model, revision, dataset)
        return {"rows": sum(m["rows"] for m in ms), "bytes": sum(m["bytes"] for m in ms), "files": len(ms)}


def _manifest_keys(m: dict) -> bool:
    """The sort keys are there with their types (a hand-edited manifest is skipped)."""
    return (all(isinstance(m.get(k), str) for k in ("model_slug", "revision", "dataset"))
            and all(isinstance(m.get(k), int) and not isinstance(m.get(k), bool) for k in ("layer", "shard")))


def _load_json(path: Path) -> dict | None:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError):
        return None
    return doc if isinstance(doc, dict) else None


def _check_shard_table(table: pa.Table, positions: list[str]) -> pa.FixedSizeListType:
    want = {"example_id": pa.string(), "position": pa.string(), "token_index": pa.int32()}
    for name, typ in want.items():
        if name not in table.column_names or table.schema.field(name).type != typ:
            raise GnomonError(f"shard table needs column {name!r} of type {typ} (build it with activation_table)")
    act = table.schema.field("act").type if "act" in table.column_names else pa.null()
    if not (isinstance(act, pa.FixedSizeListType) and act.value_type in _DTYPES.values()):
        raise GnomonError("shard column 'act' must be a fixed-size list of float16 or float32")
    present = pc.unique(table.column("position")).to_pylist()
    if not set(present) <= set(positions):
        raise GnomonError(f"shard has positions {present} not in the declared positions {positions}")
    return act


def _normalise_examples(table: pa.Table, dataset: str) -> pa.Table:
    if "id" not in table.column_names or "label" not in table.column_names:
        raise GnomonError(f"examples for {dataset!r} need 'id' and 'label' columns")
    cols = []
    for field in EXAMPLE_SCHEMA:
        if field.name not in table.column_names:
            cols.append(pa.nulls(table.num_rows, pa.string()))
            continue
        col = table.column(field.name)
        if field.name == "messages" and not pa.types.is_string(col.type) and not pa.types.is_null(col.type):
            col = pa.array([None if v is None else json.dumps(v) for v in col.to_pylist()], pa.string())
        cols.append(pc.cast(col, pa.string()))
    new = pa.Table.from_arrays(cols, schema=EXAMPLE_SCHEMA).combine_chunks()
    if new.column("id").null_count or new.column("label").null_count:
        raise GnomonError(f"examples for {dataset!r} have empty 'id' or 'label' values")
    if pc.count_distinct(new.column("id")).as_py() != new.num_rows:
        raise GnomonError(f"examples for {dataset!r} have duplicate ids")
    bad = set(pc.unique(new.column("split").drop_null()).to_pylist()) - set(SPLITS)
    if bad:
        raise GnomonError(f"examples for {dataset!r} have unknown splits {sorted(bad)}; use {list(SPLITS)}")
    return new
