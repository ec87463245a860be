"""Registered model versions on a home on object storage (``s3://...``, see
:class:`pipeline.home.RemoteHome`).

A version is a Hugging Face directory at ``<home>/models/<id>/``. With a remote home the
node that registers a version uploads it there, every file first and ``lineage.json``
last (the lineage file is the version's manifest: a version without one does not exist,
as a shard without its manifest does not). A node that needs the version (a Ray worker
on another machine) downloads it once into its own cache keyed by the weights'
fingerprint, ``$GNOMON_CACHE/models/<fingerprint>/<id>/`` (``~/.cache/gnomon`` by
default), built in a temporary folder and renamed into place, and links
``<node-local home>/models/<id>`` to it, so every loader below reads a local folder.

>>> fetch_version("t-base", "s3://bucket/home")                       # doctest: +SKIP
PosixPath('/root/.cache/gnomon/homes/bucket-home-.../models/t-base')
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pipeline.home import RemoteHome, gnomon_home
from pipeline.storage import Storage
from pipeline.store_keys import KEY
from pipeline.types import GnomonError

# lazy: numpy, pyarrow (heavy; imported where used); pipeline.atomic (tests patch it at the source)

__all__ = ["fetch_all", "fetch_version", "is_registered", "lineage_identity", "models_cache", "remote_lineage",
           "remote_versions", "upload_version", "version_settings"]

_LINEAGE = "lineage.json"


def models_cache() -> Path:
    """This node's cache of downloaded versions: ``$GNOMON_CACHE/models``."""
    return Path(os.environ.get("GNOMON_CACHE") or Path.home() / ".cache" / "gnomon").expanduser() / "models"


def _remote(home: Any) -> tuple[RemoteHome, Any] | None:
    h = gnomon_home(home)
    if not isinstance(h, RemoteHome) or not h.uri:
        return None

    return h, Storage.open(h.uri)


def remote_lineage(version_id: str, home: Any = None) -> dict | None:
    """The lineage JSON of ``version_id`` on a remote home; None for a local home, a name
    that cannot be a version id, or a version that is not (completely) uploaded."""
    if not isinstance(version_id, str) or not KEY.fullmatch(version_id):
        return None
    found = _remote(home)
    return None if found is None else found[1].read_json(f"models/{version_id}/{_LINEAGE}")


def lineage_identity(version_id: str, home: Any = None) -> tuple[str, int, int] | None:
    """(fingerprint, num_layers, hidden_size) that a registered version's lineage records,
    read without its weights (this node's copy, else one GET from a remote home): the
    identity of the version as registered. None for a name that is no registered version,
    a version that runs quantized, or a lineage without all three."""
    if not isinstance(version_id, str) or not KEY.fullmatch(version_id):
        return None
    try:
        doc = json.loads((gnomon_home(home) / "models" / version_id / _LINEAGE).read_text())
    except (OSError, ValueError):
        doc = remote_lineage(version_id, home)
    if not isinstance(doc, dict):
        return None
    fp, n, d, settings = doc.get("fingerprint"), doc.get("num_layers"), doc.get("hidden_size"), doc.get("settings")
    if isinstance(settings, dict) and settings.get("quantize") or not (isinstance(fp, str) and fp) \
            or type(n) is not int or type(d) is not int:
        return None
    return fp, n, d


def remote_versions(home: Any = None) -> list[str]:
    """Ids of the versions completely uploaded to a remote home ([] for a local home)."""
    found = _remote(home)
    if found is None:
        return []
    return [rel.split("/")[1] for rel in found[1].glob(f"models/*/{_LINEAGE}")]


def fetch_all(home: Any = None) -> None:
    """Every version of a remote home on this node (nothing for a local home)."""
    for vid in remote_versions(home):
        fetch_version(vid, home)


def is_registered(version_id: str, home: Any = None) -> bool:
    """``version_id`` has a lineage file in the home (on object storage: fetched to this node)."""
    from pipeline.store_read import check_name

    local = gnomon_home(home) / "models" / check_name(version_id, "model version id") / _LINEAGE
    return local.is_file() or fetch_version(version_id, home) is not None


def upload_version(folder: Path, version_id: str, home: Any = None) -> Path:
    """Upload a registered version's folder to a remote home (nothing for a local home):
    the lineage file last, so a reader never sees a half-uploaded version. Returns ``folder``."""
    found = _remote(home)
    if found is None:
        return folder
    _, storage = found
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    for p in sorted(files, key=lambda p: p.name == _LINEAGE):
        rel = p.relative_to(folder).as_posix()
        storage.write_bytes(f"models/{version_id}/{rel}", p.read_bytes())
    return folder


def fetch_version(version_id: str, home: Any = None) -> Path | None:
    """The local folder of ``version_id`` registered on a remote home, downloaded once per
    node (see the module doc); None when the home is local or has no such version."""
    lineage = remote_lineage(version_id, home)
    if lineage is None or not isinstance(lineage.get("fingerprint"), str):
        return None
    found = _remote(home)
    assert found is not None
    h, storage = found
    local = h / "models" / version_id
    try:
        mine = json.loads((local / _LINEAGE).read_text())
    except (OSError, ValueError):
        mine = None
    if mine == lineage:
        return local
    from pipeline.atomic import build_dir, publish

    fp = lineage["fingerprint"]
    if not KEY.fullmatch(fp):
        return None
    cached = models_cache() / fp / version_id
    prefix = f"models/{version_id}/"

    def download(tmp: Path) -> None:
        for rel in storage.list_files(prefix):
            target = tmp / rel[len(prefix):]
            target.parent.mkdir(parents=True, exist_ok=True)
            storage.download(rel, target)

    try:
        have = json.loads((cached / _LINEAGE).read_text())
    except (OSError, ValueError):
        have = None
    if have != lineage:   # not here yet, or the same weights registered again with another lineage
        build_dir(cached, download)
    publish(local, lambda tmp: os.symlink(cached, tmp))
    return local


def version_settings(path: Path) -> dict[str, Any]:
    """``settings`` of a registered version's ``lineage.json`` (how it must be run)."""
    f = path / _LINEAGE
    if not f.is_file():
        return {}
    try:
        doc = json.loads(f.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise GnomonError(f"{f}: not valid JSON ({e})") from None
    settings = doc.get("settings") if isinstance(doc, dict) else None
    return settings if isinstance(settings, dict) else {}
