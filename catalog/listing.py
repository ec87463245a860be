"""The catalog's read-only listing without MLflow or torch: :class:`ListingReader` (what the
SQLite and REST readers share; :mod:`catalog.readers` picks one for a tracking URI)."""

from __future__ import annotations

from collections.abc import Mapping

from catalog.query import DirectionRecord
from catalog.refs import Ref, parse_ref, pick_record

__all__ = ["ListingReader"]


class ListingReader:
    """What both fast readers share: given ``records(concept)`` and ``concepts()``, the same
    ``search`` and ``resolve`` answers (and errors) as :class:`catalog.Catalog`."""

    tracking_uri: str

    def records(self, concept: str | None = None, tags: Mapping[str, str] | None = None
                ) -> list[DirectionRecord]:
        """gnomon's live versions (of ``concept`` if given), ordered by concept and version;
        ``tags`` is a hint a reader may push down (callers filter again)."""
        raise NotImplementedError

    def concepts(self) -> list[str]:
        raise NotImplementedError

    def search(self, *, concept: str | None = None, model: str | None = None, revision: str | None = None,
               layer: int | None = None, method: str | None = None, position: str | None = None,
               min_metrics: Mapping[str, float] | None = None) -> list[DirectionRecord]:
        """Same answer as :meth:`catalog.Catalog.search`."""
        wanted = {"model": model, "revision": revision, "layer": layer, "method": method, "position": position}
        hint = {k: str(v) for k, v in wanted.items() if v is not None}
        return [r for r in self.records(concept, hint)
                if r.matches(concept=concept, model=model, revision=revision, layer=layer, method=method,
                             position=position, min_metrics=min_metrics)]

    def resolve(self, ref: str, model: str | None = None) -> DirectionRecord:
        """Same answer (and errors) as :meth:`catalog.Catalog.resolve`."""
        parsed = parse_ref(ref)
        return self._pick(parsed.concept, parsed, model)

    def _pick(self, concept: str, ref: Ref, model: str | None = None) -> DirectionRecord:

        return pick_record(self.records(concept), ref, self.tracking_uri, self.concepts(),  # type: ignore[no-any-return]
                           model=model)
