"""Removing things from the catalog: a direction version, or an alias.

Deleting a version removes it from MLflow (its run and artifact stay, as MLflow keeps
them); MLflow drops the aliases that pointed at it. ``best``, ``best-monitor`` and
``best-steer`` are not re-pointed to another version: choosing them takes the fit's held-out
scores and its search correction (``pipeline/confirm.py``), so rerun ``gnomon fit`` (or
``gnomon catalog select-steer``) to choose again.
"""

from __future__ import annotations

from typing import Any

from catalog.refs import SCOPED, parse_ref, registered_name, scoped_alias
from pipeline.types import GnomonError

__all__ = ["delete_alias", "delete_version"]


def delete_version(cat: Any, ref: str) -> Any:
    """Delete the version ``concept/N`` names (an alias is refused: say which version)."""
    parsed = parse_ref(ref)
    if parsed.version is None:
        raise GnomonError(f"{ref}: name the version to delete as concept/N (aliases move; versions do not)")
    rec = cat.resolve(ref)
    reg = cat._reg
    reg.call("delete_model_version", registered_name(rec.concept), str(rec.version))
    return rec


def delete_alias(cat: Any, ref: str) -> int:
    """Delete ``concept@alias``; returns the version it pointed at."""
    parsed = parse_ref(ref)
    if parsed.alias is None:
        raise GnomonError(f"{ref}: name the alias to delete as concept@alias")
    rec = cat.resolve(ref)
    stored = scoped_alias(parsed.alias, rec.model) if parsed.alias in SCOPED else parsed.alias
    cat._reg.call("delete_registered_model_alias", registered_name(parsed.concept), stored)
    return int(rec.version)
