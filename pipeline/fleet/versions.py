"""Writing a version: stage a model directory under the home, fingerprint it, register it.

Every builder ends the same way: weights and tokenizer are saved into
``<home>/models/.staging/<id>-<pid>/`` (same filesystem as the home, so registration is
one ``rename``), the fingerprint ``load_model`` will report is cached beside them, and
:func:`~pipeline.fleet.registry.register_version` moves the directory into place with its
``lineage.json``. A crash leaves at most a staging directory, never a half-written version.

Resuming: :func:`is_built` says whether a version with the same recipe (kind, parent,
step, data hash and settings) is already registered, so a rerun skips it.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

from pipeline.fleet.registry import (
    Lineage,
    read_lineage,
    register_version,
    version_dir,
)
from pipeline.home import gnomon_home
from pipeline.models.loading import fingerprint_model
from pipeline.types import GnomonError
from pipeline.version_cache import is_registered

__all__ = ["FINGERPRINT_FILE", "is_built", "recipe_matches", "save_version", "staging_dir"]

FINGERPRINT_FILE = "gnomon-fingerprint.json"
"""The fingerprint cache ``load_model`` reads for registered and cached models."""


def staging_dir(version_id: str, home: str | Path | None = None) -> Path:
    """A fresh, empty ``<home>/models/.staging/<id>-<pid>`` directory."""
    version_dir(version_id, home)  # validates the id
    d = gnomon_home(home) / "models" / ".staging" / f"{version_id}-{os.getpid()}"
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    return d


def recipe_matches(old: Lineage, new: Lineage) -> bool:
    """Same recipe: kind, parent (and its fingerprint), series, step, data and settings."""
    keys = ("kind", "parent", "parent_fingerprint", "series", "step", "data_sha256")
    same = all(getattr(old, k) == getattr(new, k) for k in keys)
    # JSON round trip so tuples and lists compare equal.
    return same and json.loads(json.dumps(old.settings)) == json.loads(json.dumps(new.settings))


def is_built(recipe: Lineage, home: str | Path | None = None) -> Lineage | None:
    """The registered lineage of ``recipe.id`` if it was built with the same recipe.

    A version registered under that id with a *different* recipe is an error (a rerun must
    not silently keep stale weights, nor overwrite someone's version).
    """
    if not is_registered(recipe.id, home):
        return None
    old = read_lineage(recipe.id, home)
    if not recipe_matches(old, recipe):
        raise GnomonError(f"model version {recipe.id!r} exists with another recipe "
                          f"({old.kind}, parent {old.parent}, step {old.step}); "
                          "remove it or build under another name")
    return old


def save_version(model: Any, tokenizer: Any, lineage: Lineage, home: str | Path | None = None,
                 fingerprint: str | None = None, extra_files: dict[str, bytes] | None = None) -> Lineage:
    """Save ``model`` + ``tokenizer`` as version ``lineage.id`` and register it.

    ``fingerprint`` defaults to ``fingerprint_model(model)``; pass it when the version runs
    differently from its stored weights (int8 quantized at load time). Returns the lineage
    as registered (with the fingerprint filled in).
    """
    if lineage.parent is not None and not is_registered(lineage.parent, home):
        raise GnomonError(f"parent version {lineage.parent!r} of {lineage.id!r} is not registered; "
                          "build or register the parent first")
    fp = fingerprint or fingerprint_model(model)
    lineage = replace(lineage, fingerprint=fp, family=str(model.config.model_type),
                      hidden_size=int(model.config.hidden_size),
                      num_layers=int(getattr(model.config, "num_hidden_layers", 0)) or None)
    staged = staging_dir(lineage.id, home)
    try:
        model.save_pretrained(staged, safe_serialization=True)
        tokenizer.save_pretrained(staged)
        for name, data in (extra_files or {}).items():
            (staged / name).write_bytes(data)
        (staged / FINGERPRINT_FILE).write_text(json.dumps({"fingerprint": fp}))
        register_version(staged, lineage, home)
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    return lineage
