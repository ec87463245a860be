"""Where gnomon keeps its state: ``GNOMON_HOME`` (default ``./gnomon-home``)."""

from __future__ import annotations

import os
from pathlib import Path


def gnomon_home(home: str | Path | None = None) -> Path:
    """The gnomon home: ``home`` if given, else ``$GNOMON_HOME``, else the nearest
    ``gnomon-home`` directory in the current directory or one of its parents (as git finds
    ``.git``), else ``./gnomon-home`` (created on first write).

    So a command run from a subdirectory of a project uses the project's home instead of
    starting an empty one; ``--home`` / ``GNOMON_HOME`` pin it explicitly.

    Layout: ``activations/``, ``examples/``, ``manifests/`` (the activation store),
    ``concepts/`` (registered datasets), ``models/`` (cached converted weights),
    ``mlflow.db`` and ``mlartifacts/`` (the default catalog), ``directions/`` (fitted
    directions kept on disk before and after registration).
    """
    chosen = home or os.environ.get("GNOMON_HOME")
    if chosen:
        path = Path(chosen).expanduser().resolve()
    else:
        here = Path.cwd().resolve()
        path = next((d / "gnomon-home" for d in (here, *here.parents) if (d / "gnomon-home").is_dir()),
                    here / "gnomon-home")
    if path.exists() and not path.is_dir():
        from pipeline.types import GnomonError

        raise GnomonError(f"the gnomon home {path} is not a directory; point --home or GNOMON_HOME at a directory")
    return path
