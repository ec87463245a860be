"""Store keys: the folder (``model=<key>``) that holds one model's activations.

The key must be unique per model identity, or two models share shard files and one
collection overwrites the other's rows (issue 21: ``./tiny_llama`` and ``tiny:llama``
both became ``tiny_llama``; ``--model ckpt`` from two folders both became ``ckpt``).
So a key is never a cleaned display name alone:

- a model that lives in a file or a directory (a Hugging Face folder, a ``.gguf``) is
  keyed by its *resolved* path: ``<folder name>-h<10 hex of sha256(path)>``; the
  manifest records the absolute path as the model's id;
- a named model (``smollm2``, ``tiny:<family>``, a version registered under
  ``<home>/models``, a hub-style ``org/name``) keeps its id when the id is already a
  safe folder name (``org/name`` reads ``org--name``), else it gets the same kind of
  hash suffix of the id (``tiny:llama`` -> ``tiny_llama-h...``).

The two kinds hash different strings (``path:...`` and ``id:...``) and a name that
happens to end like a hash suffix is itself hashed, so two identities never share a key.
A key may be passed back wherever a model id is expected (``gnomon sql`` shows keys):
a folder of that name in the store names itself.

>>> resolve_model_key("org/m", Path("/tmp/none")).key
'org--m'
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.home import gnomon_home
from pipeline.types import GnomonError

__all__ = ["KEY", "ModelKey", "check_key", "ids_digest", "model_file_key", "model_slug", "resolve_model_key"]

KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
"""What a key looks like (also what every partition value must look like)."""
_HASHED = re.compile(r"-h[0-9a-f]{10}$")
_NAMED_PREFIXES = ("tiny:",)
_NAMED = ("smollm2", "tiny")


@dataclass(frozen=True)
class ModelKey:
    """Where a model's rows live in the store, and the id recorded with them."""

    key: str
    """The ``model=`` partition value."""
    model: str
    """The model's resolved id: the absolute path for a file or folder, else the id."""


def check_key(key: str) -> str:
    if not isinstance(key, str) or not KEY.fullmatch(key):
        raise GnomonError(f"store key {key!r} must match {KEY.pattern}")
    return key


def _digest(kind: str, text: str) -> str:
    return hashlib.sha256(f"{kind}:{text}".encode()).hexdigest()[:10]


def _clean(text: str) -> str:
    s = re.sub(r"[^A-Za-z0-9._-]", "_", text.replace("/", "--")).lstrip("._-")[:180]
    return s or "model"


def _name_key(model_id: str) -> ModelKey:
    readable = model_id.replace("/", "--")
    if "--" not in model_id and KEY.fullmatch(readable) and not _HASHED.search(readable):
        return ModelKey(readable, model_id)  # lossless: the id can be read back from it
    return ModelKey(f"{_clean(model_id)}-h{_digest('id', model_id)}", model_id)


def _expand(text: str) -> Path:
    """``~`` and ``~user`` expanded when they name a home; left as they are otherwise."""
    try:
        return Path(text).expanduser()
    except (RuntimeError, ValueError):  # ~nosuchuser, a NUL byte
        return Path(text)


def _path_key(path: Path) -> ModelKey:
    resolved = path.resolve()
    return ModelKey(f"{_clean(resolved.name or 'root')}-h{_digest('path', str(resolved))}", str(resolved))


def _pathlike(model_id: str) -> bool:
    """Written as a path (absolute, ``./``, ``../``, ``~``), so it names a file even when
    nothing is there any more (the store keeps a deleted checkpoint's rows)."""
    return model_id.startswith(("/", "./", "../", "~")) or model_id in (".", "..")


def _has(root: Any, rel: str, folder: bool) -> bool:
    """A file (or, with ``folder``, a folder) ``rel`` is under ``root``: a local Path, or a
    :class:`pipeline.storage.Storage` (on object storage a folder is a prefix with objects)."""
    if isinstance(root, Path):
        return (root / rel).is_dir() if folder else (root / rel).is_file()
    return bool(root.exists(rel)) if folder else bool(root.is_file(rel))


def resolve_model_key(model_id: str, root: Any) -> ModelKey:
    """The key of ``model_id`` in the store at ``root`` (also the gnomon home, where
    registered models live; a local Path, or the store's ``Storage`` on object storage). The source is decided in the order
    :meth:`pipeline.models.ModelSpec.resolved_source` loads it: bundled, ``tiny:``,
    ``.gguf`` file, directory, registered id; then an existing key, then a path whose
    rows are stored, then a plain name."""
    if not isinstance(model_id, str) or not model_id.strip():
        raise GnomonError(f"model id {model_id!r} is empty")
    mid = model_id.strip()
    if mid in _NAMED or mid.startswith(_NAMED_PREFIXES):
        return _name_key(mid)
    path = _expand(mid)
    try:
        if path.suffix == ".gguf" or path.is_dir():
            return _path_key(path)
        if KEY.fullmatch(mid.replace("/", "--")) and _has(root, f"models/{mid}/config.json", False):
            return _name_key(mid)  # a registered version
        if KEY.fullmatch(mid) and _has(root, f"manifests/model={mid}", True):
            return ModelKey(mid, mid)  # a key, passed back
        if _pathlike(mid) or _has(root, f"manifests/model={_path_key(path).key}", True):
            return _path_key(path)
    except (OSError, ValueError):  # not usable as a path (too long, a NUL byte): a name
        pass
    return _name_key(mid)


def model_file_key(model_id: str, home: Any = None) -> str:
    """The name under which a model's own files are kept (sweeps, evaluations, report figures):
    its store key (:mod:`pipeline.store_keys`), so two models never share one, as they shared
    :func:`model_slug` (``./tiny_llama`` and ``tiny:llama``)."""
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


def ids_digest(ids: Sequence[str]) -> str:
    """The identity of a shard's example set: sha256 of its sorted, distinct ids.

    A shard is the (layer, index) file *and* the examples it holds: a rerun with another
    shard size cuts different example sets under the same indices, so completeness and
    reading both compare this digest, never the index alone.
    """
    return hashlib.sha256("\n".join(sorted(set(ids))).encode()).hexdigest()
