"""Where gnomon keeps its state: ``GNOMON_HOME`` (default ``./gnomon-home``), a local
folder or a URI on object storage (``s3://bucket/prefix``, see :mod:`pipeline.storage`)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path, PosixPath
from typing import Any

from pipeline.atomic import write_bytes
from pipeline.storage import Storage, split_uri
from pipeline.types import GnomonError

__all__ = ["RemoteHome", "gnomon_home", "pull_shared", "push_shared", "push_tree", "shared_copy"]


class RemoteHome(PosixPath):
    """A home on object storage, seen from one node: as a path it is this node's own
    folder for what is node-local (converted-weight caches, locks, a default SQLite
    catalog), and ``uri`` is where the shared data lives (the activation store: every
    ``ActivationStore(home)`` opens the URI).

    ``str()`` gives the URI, so a home handed to workers as text (the executors do) comes
    back as the same home on every node through :func:`gnomon_home`, while ``os.fspath``
    gives the local folder to file calls. Paths built under it (``home / "models"``) are
    plain node-local paths."""

    uri: str | None = None

    def __str__(self) -> str:
        return self.uri or super().__str__()

    def __fspath__(self) -> str:
        return super().__str__()

    def __reduce__(self) -> Any:
        return (gnomon_home, (self.uri,)) if self.uri else super().__reduce__()


def _remote_home(uri: str) -> RemoteHome:
    """The node-local folder of a remote home: ``$GNOMON_CACHE/homes/<prefix>-<hash>``
    (``GNOMON_CACHE`` defaults to ``~/.cache/gnomon``)."""
    scheme, rest = split_uri(uri)
    uri = f"{scheme}://{rest.strip('/')}"
    cache = Path(os.environ.get("GNOMON_CACHE") or Path.home() / ".cache" / "gnomon").expanduser()
    name = rest.strip("/").replace("/", "-")[-60:] or "root"
    home = RemoteHome(cache.resolve() / "homes" / f"{name}-{hashlib.sha256(uri.encode()).hexdigest()[:10]}")
    home.uri = uri
    return home


def pull_shared(folder: str, home: Any = None) -> Path:
    """The home's ``folder`` (``fleets``, ``concepts``), with, on a home on object storage,
    every file the bucket holds there brought to this node first (small files: each is read
    and rewritten locally only when it differs). Returns the local folder."""
    h = gnomon_home(home)
    if isinstance(h, RemoteHome) and h.uri:
        storage = Storage.open(h.uri)
        for rel in storage.list_files(folder):
            data, local = storage.read_bytes(rel), h / rel
            if not local.is_file() or local.read_bytes() != data:
                write_bytes(local, data)
    return h / folder


def push_shared(path: Path, home: Any = None) -> Path:
    """Upload ``path`` (a file just written under the home) to a home on object storage,
    where every node's :func:`pull_shared` finds it; nothing for a local home."""
    h = gnomon_home(home)
    if isinstance(h, RemoteHome) and h.uri:
        Storage.open(h.uri).write_bytes(Path(path).relative_to(h).as_posix(), Path(path).read_bytes())
    return path


def push_tree(folder: Path, home: Any = None) -> Path:
    """:func:`push_shared` for every file under ``folder`` (a report), when it lies under
    the home."""
    h = gnomon_home(home)
    if isinstance(h, RemoteHome) and h.uri and Path(folder).is_relative_to(h):
        for f in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
            push_shared(f, h)
    return folder


def shared_copy(path: str | Path, home: Any = None) -> Path:
    """This node's copy of ``path``, a file another node wrote under its own view of the
    home and uploaded with :func:`push_shared` (a direction a driver hands to workers).
    ``path`` itself when the home is local. The two nodes' folders share their last part
    (``<prefix>-<hash of the URI>``), which locates the file in the home; it is read from
    the bucket every time (a local file of that name may be an older one)."""
    p, h = Path(path), gnomon_home(home)
    if not (isinstance(h, RemoteHome) and h.uri) or h.name not in p.parts:
        return p
    rel = "/".join(p.parts[len(p.parts) - p.parts[::-1].index(h.name):])
    return write_bytes(h / rel, Storage.open(h.uri).read_bytes(rel))


def gnomon_home(home: str | Path | None = None) -> Path:
    """The gnomon home: ``home`` if given, else ``$GNOMON_HOME``, else the nearest
    ``gnomon-home`` directory in the current directory or one of its parents (as git finds
    ``.git``), else ``./gnomon-home`` (created on first write).

    So a command run from a subdirectory of a project uses the project's home instead of
    starting an empty one; ``--home`` / ``GNOMON_HOME`` pin it explicitly. A URI
    (``s3://bucket/prefix``) gives a :class:`RemoteHome`.

    Layout: ``activations/``, ``examples/``, ``manifests/`` (the activation store),
    ``concepts/`` (registered datasets), ``models/`` (cached converted weights),
    ``mlflow.db`` and ``mlartifacts/`` (the default catalog), ``directions/`` (fitted
    directions kept on disk before and after registration).
    """
    if isinstance(home, RemoteHome) and home.uri:
        return home
    chosen = home or os.environ.get("GNOMON_HOME")
    if chosen and "://" in str(chosen) and not str(chosen).startswith("file://"):
        return _remote_home(str(chosen))
    if chosen:
        path = Path(str(chosen).removeprefix("file://")).expanduser().resolve()
    else:
        here = Path.cwd().resolve()
        path = next((d / "gnomon-home" for d in (here, *here.parents) if (d / "gnomon-home").is_dir()),
                    here / "gnomon-home")
    if path.exists() and not path.is_dir():
        raise GnomonError(f"the gnomon home {path} is not a directory; point --home or GNOMON_HOME at a directory")
    return path
