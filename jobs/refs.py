"""Resolving a command's direction references: one place, so every command says the same
thing about what ``sentiment@best`` turned out to be."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

__all__ = ["resolve_direction", "resolve_record", "say_resolved", "scope_model"]


def scope_model(model: str | None, home: Any = None) -> str | None:
    """``--model`` as fits record it (a relative path resolved, as the collection resolves it),
    so ``sentiment@best --model ckpt`` finds the aliases a fit of ``ckpt`` set."""
    if model is None:
        return None
    from pipeline.home import gnomon_home
    from pipeline.store_keys import resolve_model_key

    return resolve_model_key(model, gnomon_home(home)).model


def say_resolved(ref: str, rec: Any) -> None:
    """``sentiment@best -> sentiment/7 (model smollm2, layer 16, mean_diff on last)`` on stderr."""
    print(f"{ref} -> {rec.ref} (model {rec.model}, layer {rec.layer}, {rec.method} on {rec.position})",
          file=sys.stderr, flush=True)


def resolve_record(catalog: Any, ref: str, model: str | None = None, say: bool = True) -> Any:
    """The catalog record ``ref`` names (``model`` scopes ``@best``), said on stderr."""
    rec = catalog.resolve(ref, scope_model(model, getattr(catalog, "home", None)))
    if say:
        say_resolved(ref, rec)
    return rec


def resolve_direction(ref: str, tracking_uri: str | None = None, home: Any = None, model: str | None = None) -> Any:
    """A direction from a ``.safetensors`` file or a catalog reference."""
    from pipeline.direction import Direction

    if ref.endswith(".safetensors") or Path(ref).is_file():
        return Direction.load(ref)
    from catalog import Catalog

    cat = Catalog(tracking_uri=tracking_uri, home=home)
    return cat.load_record(resolve_record(cat, ref, model))
