"""References (``sentiment@best``, ``sentiment/7``, ``sentiment``) and the names MLflow accepts.

MLflow restricts registered-model names (no ``/`` or ``:``) and alias names (``[\\w-]``
only, at most 255 characters, not ``latest`` in any case, not ``v<digits>``, which it
reserves for version references). Concepts are checked up front so a bad name fails
with one line before anything is written; model ids (``HuggingFaceTB/SmolLM2-135M``,
local paths) are turned into alias-safe slugs.

>>> parse_ref("sentiment@best")
Ref(concept='sentiment', version=None, alias='best')
>>> parse_ref("sentiment/7").version
7
>>> best_alias("smollm2")
'best-smollm2'
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pipeline.types import GnomonError

_CONCEPT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
_ALIAS = re.compile(r"^[\w\-]+$", re.ASCII)
_VERSION_LIKE = re.compile(r"^[vV]\d+$")
_MAX_ALIAS = 255
_MAX_SLUG = 120


@dataclass(frozen=True)
class Ref:
    """A parsed reference: exactly one of ``version`` / ``alias`` is set, or neither (latest)."""

    concept: str
    version: int | None = None
    alias: str | None = None

    def __str__(self) -> str:
        if self.version is not None:
            return f"{self.concept}/{self.version}"
        return f"{self.concept}@{self.alias}" if self.alias else self.concept


def check_concept(concept: str) -> str:
    """Return ``concept`` if it can name a registered model and appear in a reference."""
    if not concept or not _CONCEPT.match(concept):
        raise GnomonError(
            f"concept name {concept!r} is not usable in the catalog: use letters, digits, "
            "'_', '-' or '.' (starting with a letter or digit)")
    return concept


def check_alias(alias: str) -> str:
    """Return ``alias`` if MLflow accepts it as a registered-model alias."""
    if not alias or len(alias) > _MAX_ALIAS or not _ALIAS.match(alias):
        raise GnomonError(f"alias {alias!r} is not valid: use 1-{_MAX_ALIAS} letters, digits, '_' or '-'")
    if alias.lower() == "latest" or _VERSION_LIKE.match(alias):
        raise GnomonError(f"alias {alias!r} is reserved by MLflow (it means the latest version "
                          "or a version number); choose another name")
    return alias


def parse_ref(ref: str) -> Ref:
    """``concept@alias`` -> that alias, ``concept/N`` -> version N, ``concept`` -> latest."""
    ref = ref.strip()
    if "@" in ref:
        concept, alias = ref.split("@", 1)
        return Ref(check_concept(concept), alias=check_alias(alias))
    if "/" in ref:
        concept, version = ref.rsplit("/", 1)
        if not version.isdigit() or int(version) < 1:
            raise GnomonError(f"reference {ref!r}: the version after '/' must be a positive integer")
        return Ref(check_concept(concept), version=int(version))
    return Ref(check_concept(ref))


def slug(text: str) -> str:
    """An alias-safe, lower-case rendering of ``text``.

    When sanitising changed anything (``HuggingFaceTB/SmolLM2`` vs ``huggingfacetb-smollm2``),
    a short hash of the original is appended so two model ids never share a slug.
    """
    s = re.sub(r"[^a-z0-9_\-]+", "-", text.lower()).strip("-_")[:_MAX_SLUG] or "unnamed"
    if s != text:
        s = f"{s}-{hashlib.sha1(text.encode()).hexdigest()[:6]}"
    return s


def best_alias(model_id: str) -> str:
    """The alias that marks the best version of a concept for one model: ``best-<slug>``."""
    return f"best-{slug(model_id)}"


def pick_record(recs: Sequence[Any], ref: Ref, tracking_uri: str, known: Sequence[str]) -> Any:
    """The record ``ref`` names among its concept's ``recs`` (oldest first): the latest when
    it names neither version nor alias; one clear line naming what exists otherwise. Shared by
    the MLflow-backed :class:`~catalog.Catalog` and the fast SQLite reader."""
    if not recs:
        raise GnomonError(f"no concept {ref.concept!r} in the catalog at {tracking_uri}; "
                          f"known concepts: {', '.join(known) or 'none yet'}")
    if ref.version is None and ref.alias is None:
        return recs[-1]
    hit = [r for r in recs if r.version == ref.version or (ref.alias and ref.alias in r.aliases)]
    if hit:
        return hit[0]
    aliases = sorted({a for r in recs for a in r.aliases})
    raise GnomonError(f"{ref} does not exist: {ref.concept} has versions "
                      f"{', '.join(str(r.version) for r in recs)} and aliases "
                      f"{', '.join(aliases) or 'none'}")
