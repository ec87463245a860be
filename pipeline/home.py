"""Where gnomon keeps its state: ``GNOMON_HOME`` (default ``./gnomon-home``)."""

from __future__ import annotations

import os
from pathlib import Path


def gnomon_home(home: str | Path | None = None) -> Path:
    """The gnomon home: ``home`` if given, else ``$GNOMON_HOME``, else ``./gnomon-home``.

    Layout: ``activations/``, ``examples/``, ``manifests/`` (the activation store),
    ``concepts/`` (registered datasets), ``models/`` (cached converted weights),
    ``mlflow.db`` and ``mlartifacts/`` (the default catalog), ``directions/`` (fitted
    directions kept on disk before and after registration).
    """
    path = Path(home or os.environ.get("GNOMON_HOME") or "gnomon-home").expanduser().resolve()
    if path.exists() and not path.is_dir():
        from pipeline.types import GnomonError

        raise GnomonError(f"the gnomon home {path} is not a directory; point --home or GNOMON_HOME at a directory")
    return path
