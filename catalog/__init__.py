"""The direction catalog: register, search, load, alias and tag directions, with MLflow as
the system of record. Importing this package imports neither MLflow nor torch (names are
resolved on first use), and nothing talks to a store until a method is called.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from catalog.query import DirectionRecord, to_arrow
    from catalog.refs import Ref, best_alias, parse_ref
    from catalog.store import Catalog

__all__ = ["Catalog", "DirectionRecord", "Ref", "best_alias", "parse_ref", "to_arrow"]

_WHERE = {"Catalog": "catalog.store", "DirectionRecord": "catalog.query", "to_arrow": "catalog.query",
          "Ref": "catalog.refs", "best_alias": "catalog.refs", "parse_ref": "catalog.refs"}


def __getattr__(name: str) -> Any:
    # lazy: `Catalog` pulls in pipeline.direction (torch); `gnomon catalog ls` reads without it
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'catalog' has no attribute {name!r}")
