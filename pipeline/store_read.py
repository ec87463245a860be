"""Reading the activation store: manifests, the shards a reader may use (checksums, one row
per example however many layouts were written), verification and layer reads. The
:class:`ManifestReader` mixin is the read side of ``pipeline.store.ActivationStore``."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.storage import Storage
from pipeline.store_tables import vectors_to_numpy
from pipeline.types import GnomonError, check_positions

__all__ = ["ManifestReader", "check_name", "sha256_file"]

_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")


def check_name(value: str, what: str) -> str:
    """Reject a partition value that could leave the store root (``..``, ``/``, absolute)."""
    if not isinstance(value, str) or not _SAFE.match(value):
        raise GnomonError(f"{what} {value!r} must match [A-Za-z0-9][A-Za-z0-9._-]* (no '/', '..' or spaces)")
    return value


def _check_int(value: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise GnomonError(f"{what} must be a non-negative integer, got {value!r}")
    return int(value)


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _manifest_keys(m: dict) -> bool:
    """The sort keys are there with their types (a hand-edited manifest is skipped)."""
    return (all(isinstance(m.get(k), str) for k in ("model_slug", "revision", "dataset"))
            and all(isinstance(m.get(k), int) and not isinstance(m.get(k), bool) for k in ("layer", "shard")))


class ManifestReader:
    """The read side of the store (``ActivationStore`` provides ``root``, ``storage``,
    ``key`` and ``_key_part``)."""

    root: Path | str
    storage: Storage

    def key(self, model: str) -> str:   # pragma: no cover - ActivationStore's
        raise NotImplementedError

    def _key_part(self, kind: str, key: str, revision: str, dataset: str, layer: int | None = None) -> str:
        raise NotImplementedError   # pragma: no cover - ActivationStore's

    def _pattern(self, model: str | None, revision: str | None, dataset: str | None, layer: int | None) -> str:
        """The glob, below ``manifests/`` or ``activations/``, of the parts (without suffix)."""
        return "/".join([f"model={self.key(model) if model is not None else '*'}",
                         f"revision={check_name(revision, 'revision') if revision is not None else '*'}",
                         f"dataset={check_name(dataset, 'dataset') if dataset is not None else '*'}",
                         f"layer={_check_int(layer, 'layer') if layer is not None else '*'}", "part-*"])

    def manifest(self, model: str | None = None, revision: str | None = None,
                 dataset: str | None = None, layer: int | None = None) -> list[dict]:
        """Manifests of complete shards, optionally for one model/revision/dataset/layer."""
        paths = self.storage.glob(f"manifests/{self._pattern(model, revision, dataset, layer)}.json")
        found = [m for m in self.storage.read_jsons(paths) if isinstance(m, dict) and _manifest_keys(m)]
        return sorted(found, key=lambda m: (m["model_slug"], m["revision"], m["dataset"], m["layer"], m["shard"]))

    def valid_shards(self, model: str | None = None, revision: str | None = None, dataset: str | None = None,
                     layer: int | None = None, fingerprint: str | None = None,
                     hashed: bool = True) -> tuple[list[dict], list[str]]:
        """The shards a reader may use, and why others were left out.

        A shard counts when its manifest parses, names the file at its own canonical path
        (a regular file, not a link), size and sha256 hold, and its fingerprint is
        ``fingerprint`` (default: the fingerprint of the newest manifest of that model,
        revision and dataset: a re-collection after the weights changed supersedes the
        old rows). Among counting shards of one layer, newest first, a shard whose
        examples overlap an already chosen one is left out, so every example has one row
        per position however many shard layouts were ever written. Returns
        ``(manifests, problems)``; ``problems`` names each shard that failed a check.
        ``hashed=False`` (a count, not a read) checks sizes only: no shard is downloaded.
        """
        problems: list[str] = []
        found: list[tuple[int, dict]] = []
        # The default fingerprint is the newest of any layer's, so only a given one lets the
        # glob stop at this layer's manifests (a report or fit reading 31 layers: 31, not 961).
        at = layer if fingerprint is not None else None
        listed = dict(self.storage.glob_stamps(f"activations/{self._pattern(model, revision, dataset, at)}.parquet"))
        for m in self.manifest(model, revision, dataset, at):
            if layer is not None and m.get("layer") != layer:
                continue
            why = self._check_manifest(m, listed, hashed)
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
        listed = dict(self.storage.glob_stamps(f"activations/{self._pattern(None, None, None, None)}.parquet"))
        return [(m, why) for m in self.manifest() if (why := self._check_manifest(m, listed))]

    def _check_manifest(self, m: dict, listed: dict[str, tuple], hashed: bool = True) -> str | None:
        """Why manifest ``m`` cannot be read from, or None (fills in ``ids`` if missing).
        ``listed``: the shard files a listing just found (path -> stamp, size last)."""
        try:
            slug, rev, ds = m["model_slug"], m["revision"], m["dataset"]
            layer, shard = _check_int(m["layer"], "layer"), _check_int(m["shard"], "shard")
            if not isinstance(m["fingerprint"], str) or not isinstance(m["sha256"], str):
                raise GnomonError("fingerprint/sha256 are not strings")
            where = f"{self._key_part('activations', slug, rev, ds, layer)}/part-{shard:05d}.parquet"
        except (KeyError, TypeError, ValueError, GnomonError) as e:
            return f"manifest {m.get('path', '?')} is malformed ({e})"
        if m.get("path") != where:
            return f"manifest for {where} names another file ({m.get('path')!r})"
        st = self.storage
        try:
            stamp = listed.get(where)
            if stamp is None:
                return f"{where} is missing or not a regular file"
            if stamp[-1] != m.get("bytes") or \
                    hashed and st.verified_sha256(where, m["sha256"], stamp) != m["sha256"]:
                return f"{where} does not match its manifest checksum"
            if not isinstance(m.get("ids"), list):  # manifests from before ids were recorded
                col = st.read_parquet(where, columns=["example_id"]).column("example_id")
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
        check_positions([position])
        shards, _ = self.valid_shards(model, revision, dataset, layer)
        if not shards:
            raise GnomonError(f"no shards for {model} {revision} {dataset} layer {layer}; "
                              f"stored layers: {self.layers(model, revision, dataset)}")
        parts = [self.storage.read_parquet(m["path"], columns=["example_id", "act"],
                                           filters=pc.field("position") == position) for m in shards]
        t = pa.concat_tables(parts)
        return t.column("example_id").to_pylist(), vectors_to_numpy(t.column("act"))

    def summary(self, model: str | None = None, revision: str | None = None,
                dataset: str | None = None) -> dict:
        """Rows, bytes and files of the shards that count (sizes checked, nothing downloaded)."""
        ms, _ = self.valid_shards(model, revision, dataset, hashed=False)
        return {"rows": sum(m["rows"] for m in ms), "bytes": sum(m["bytes"] for m in ms), "files": len(ms)}
