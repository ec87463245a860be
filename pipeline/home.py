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
        return Path(chosen).expanduser().resolve()
    here = Path.cwd().resolve()
    for d in (here, *here.parents):
        if (d / "gnomon-home").is_dir():
            return d / "gnomon-home"
    return here / "gnomon-home"
