"""Which fast reader lists a tracking URI (:mod:`catalog.listing`)."""

from __future__ import annotations

from catalog.fast import SQLiteReader
from catalog.listing import ListingReader

# lazy: catalog.rest (start-up; urllib and ssl only for a tracking server)

__all__ = ["reader_for"]


def reader_for(tracking_uri: str) -> ListingReader | None:
    """The reader that lists ``tracking_uri`` without importing MLflow or torch: the SQLite
    file read directly, a tracking server through its REST search API, else None (callers
    use :class:`catalog.Catalog`)."""
    if tracking_uri.startswith(("http://", "https://")):
        from catalog.rest import RestReader
        return RestReader(tracking_uri)
    return SQLiteReader.for_uri(tracking_uri)
