"""A model's width without its weights: enough to refuse a direction of another hidden size
before anything loads (a 135M model takes seconds to load here; a 7B one minutes)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipeline.home import gnomon_home
from pipeline.types import GnomonError

__all__ = ["check_width", "model_width"]

_WIDTH_KEYS = ("hidden_size", "d_model", "n_embd", "dim")


def model_width(model_id: str, home: Any = None) -> int | None:
    """The hidden size of ``model_id`` from what is on disk (a tiny spec, a recorded identity,
    a ``config.json``), or None when only loading the weights would tell."""
    from pipeline.models.loading import ModelSpec, model_identity
    from pipeline.models.tiny import parse_tiny

    spec = ModelSpec(id=model_id)
    source = spec.resolved_source(gnomon_home(home))  # an unknown model is refused here, in milliseconds
    if source == "tiny":
        return parse_tiny(model_id)[2]
    ident = model_identity(spec, home)
    if ident is not None:
        return ident.hidden_size
    folder = {"hf_dir": Path(model_id).expanduser(),
              "registered": gnomon_home(home) / "models" / model_id}.get(source)
    if folder is None:
        return None
    try:
        cfg = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return None
    for doc in (cfg, cfg.get("text_config") or {}):
        for key in _WIDTH_KEYS:
            if isinstance(doc.get(key), int):
                return int(doc[key])
    return None


def check_width(directions: Any, model_id: str, home: Any = None) -> None:
    """Refuse directions whose hidden size differs from ``model_id``'s, before it loads (no
    ``--force`` can apply a vector of another width)."""
    width = model_width(model_id, home)
    if width is None:
        return
    for d in directions:
        p = d.provenance
        if p.hidden_size and int(p.hidden_size) != width:
            raise GnomonError(f"{p.concept or 'the direction'} (layer {p.layer}, fitted on {p.model_id}) has hidden "
                              f"size {p.hidden_size}, but {model_id} has {width}: use a direction fitted on "
                              f"{model_id} (e.g. CONCEPT@best --model {model_id}) or a model of width {p.hidden_size}")
