"""Removing things from the catalog: a direction version, or an alias.

Deleting a version removes it from MLflow (its run and artifact stay, as MLflow keeps
them) and re-points the ``best``/``best-monitor`` aliases of its model by the selection
rule, since MLflow drops the aliases that pointed at a deleted version. ``best-steer`` is
not re-measured here: rerun the fit (``gnomon fit``) to choose it again.
"""

from __future__ import annotations

from typing import Any

from catalog.refs import parse_ref
from pipeline.types import GnomonError

__all__ = ["delete_alias", "delete_version"]


def delete_version(cat: Any, ref: str) -> Any:
    """Delete the version ``concept/N`` names (an alias is refused: say which version)."""
    parsed = parse_ref(ref)
    if parsed.version is None:
        raise GnomonError(f"{ref}: name the version to delete as concept/N (aliases move; versions do not)")
    rec = cat.resolve(ref)
    reg = cat._reg
    reg.call("delete_model_version", rec.concept, str(rec.version))
    metric = rec.tags.get("select_metric", "val_auroc")
    if any(r.model == rec.model for r in reg.records(rec.concept)):
        reg.update_best(rec.concept, rec.model, metric)
    return rec


def delete_alias(cat: Any, ref: str) -> int:
    """Delete ``concept@alias``; returns the version it pointed at."""
    parsed = parse_ref(ref)
    if parsed.alias is None:
        raise GnomonError(f"{ref}: name the alias to delete as concept@alias")
    rec = cat.resolve(ref)
    cat._reg.call("delete_registered_model_alias", parsed.concept, parsed.alias)
    return int(rec.version)
