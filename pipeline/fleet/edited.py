"""Edited versions: a model with a direction baked out of its weights, with lineage.

:func:`register_orthogonalized` runs :func:`pipeline.orthogonalize.save_orthogonalized`
into a staging directory and registers the result as kind ``edited``. Its parent is the
source model's registered version: the source itself when it is one, else the registered
version with the same fingerprint (``smollm2`` -> ``smollm2-base``), else none (a root
whose settings still name the source model and its fingerprint).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from pipeline.fleet.registry import (
    LINEAGE_FILE,
    Lineage,
    list_versions,
    read_lineage,
    register_version,
    version_dir,
)
from pipeline.fleet.versions import FINGERPRINT_FILE, is_built, staging_dir
from pipeline.types import GnomonError

# lazy: torch (heavy; imported where used)

__all__ = ["edited_recipe", "register_orthogonalized", "source_version"]


def source_version(model_id: str, fingerprint: str, home: str | Path | None = None) -> Lineage | None:
    """The registered version ``model_id`` names (or, failing that, one with ``fingerprint``)."""
    try:
        if (version_dir(model_id, home) / LINEAGE_FILE).is_file():
            lin = read_lineage(model_id, home)
            if lin.fingerprint == fingerprint:
                return lin
    except GnomonError:
        pass   # a path or tiny:... id: not a version name
    same = [v for v in list_versions(home) if v.fingerprint == fingerprint and v.kind in ("base", "import")]
    same = same or [v for v in list_versions(home) if v.fingerprint == fingerprint]
    return same[0] if same else None


def edited_recipe(version_id: str, lm: Any, direction: Any, ref: str, direction_sha256: str | None,
                  home: str | Path | None = None) -> Lineage:
    p = direction.provenance
    parent = source_version(lm.model_id, lm.fingerprint, home)
    settings = {"edit": "orthogonalize", "direction_ref": ref, "direction_sha256": direction_sha256,
                "concept": p.concept, "layer": p.layer, "method": p.method, "position": p.position,
                "direction_model_fingerprint": p.fingerprint, "source_model": lm.model_id,
                "source_fingerprint": lm.fingerprint}
    return Lineage(id=version_id, kind="edited", fingerprint="", parent=parent.id if parent else None,
                   parent_fingerprint=parent.fingerprint if parent else None, series="edited",
                   settings=settings)


def register_orthogonalized(lm: Any, direction: Any, version_id: str, ref: str = "",
                            direction_sha256: str | None = None, home: str | Path | None = None,
                            force: bool = False) -> Lineage:
    """Orthogonalize ``lm`` against ``direction`` and register it as ``version_id``."""
    from pipeline.orthogonalize import save_orthogonalized

    recipe = edited_recipe(version_id, lm, direction, ref, direction_sha256, home)
    done = is_built(recipe, home)
    if done:
        return done
    staged = staging_dir(version_id, home)
    try:
        out = save_orthogonalized(lm, direction, staged / "model", ref=ref, force=force)

        fp = json.loads((out / "gnomon.json").read_text())["fingerprint"]
        (out / FINGERPRINT_FILE).write_text(json.dumps({"fingerprint": fp}))
        cfg = lm.model.config
        lin = Lineage(**{**recipe.to_json(), "fingerprint": fp, "family": str(cfg.model_type),
                         "hidden_size": int(cfg.hidden_size), "num_layers": int(cfg.num_hidden_layers)})
        register_version(out, lin, home)
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    return read_lineage(version_id, home)
