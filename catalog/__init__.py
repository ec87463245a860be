"""The direction catalog: register, search, load, alias and tag directions, with MLflow as
the system of record. Importing this package does not import MLflow (each method imports
it when it runs), and nothing talks to a store until a method is called.
"""

from catalog.query import DirectionRecord, to_arrow
from catalog.refs import Ref, best_alias, parse_ref
from catalog.store import Catalog

__all__ = ["Catalog", "DirectionRecord", "Ref", "best_alias", "parse_ref", "to_arrow"]
