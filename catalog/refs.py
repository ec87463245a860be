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
>>> scoped_alias("best", "smollm2")
'best--smollm2'

**Per-model aliases.** ``best``, ``best-monitor`` and ``best-steer`` (:data:`SCOPED`) are set by
a fit on one model and mean nothing for another (a direction only applies to the model it was
read from). They are stored as ``<alias>--<model slug>`` and a bare ``concept@best`` resolves
against the model the command is about (``--model``), or the only model that has one; when
several models have one it is refused with the candidates listed, never guessed.
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


REGISTRY_PREFIX = "gnomon."
"""Registered-model names are ``gnomon.<concept>``: a shared tracking server holds other
teams' models, and a model of theirs named ``sentiment`` must never receive our versions."""


def registered_name(concept: str) -> str:
    """The MLflow registered-model name of ``concept`` (``models:/gnomon.sentiment@...``)."""
    return REGISTRY_PREFIX + check_concept(concept)


def concept_of(name: str) -> str:
    """The concept a registered-model name holds (``gnomon.sentiment`` -> ``sentiment``)."""
    return name[len(REGISTRY_PREFIX):] if name.startswith(REGISTRY_PREFIX) else name


SCOPED = ("best", "best-monitor", "best-steer")
"""Aliases that belong to one model (see the module doc)."""
SCOPE_SEP = "--"
"""Between a scoped alias and its model slug; a slug never contains it."""


def model_scope(model_id: str) -> str:
    """The model part of a scoped alias: :func:`slug` without repeated dashes."""
    return re.sub(r"-{2,}", "-", slug(model_id))


def scoped_alias(alias: str, model_id: str) -> str:
    """``best`` for ``smollm2`` -> ``best--smollm2`` (the name MLflow stores)."""
    if alias not in SCOPED:
        raise GnomonError(f"{alias!r} is not a per-model alias ({', '.join(SCOPED)})")
    return f"{alias}{SCOPE_SEP}{model_scope(model_id)}"


def unscope(alias: str) -> tuple[str, str] | None:
    """``best--smollm2`` -> ``("best", "smollm2")``; None for an alias that is not scoped."""
    base, sep, scope = alias.partition(SCOPE_SEP)
    return (base, scope) if sep and base in SCOPED and scope else None


def best_alias(model_id: str) -> str:
    """The stored name of ``best`` for one model (``best--<slug>``)."""
    return scoped_alias("best", model_id)


def display_aliases(aliases: Sequence[str]) -> list[str]:
    """Aliases as a user writes them: ``best--smollm2`` -> ``best``."""
    return sorted({u[0] if (u := unscope(a)) else a for a in aliases})


def _scoped_pick(recs: Sequence[Any], ref: Ref, model: str | None) -> Any:
    """The version a per-model alias points at for ``model`` (or the only model that has one)."""
    alias = ref.alias or ""
    holders = [(r, a) for r in recs for a in r.aliases if (u := unscope(a)) and u[0] == alias]
    listing = "; ".join(f"{r.model}: {r.ref}" for r, _ in holders)
    if model is not None:
        want = scoped_alias(alias, model)
        hit = [r for r, a in holders if a == want]
        if hit:
            return hit[0]
        raise GnomonError(f"{ref} has no version for model {model!r} "
                          + (f"(it is set for {listing}); name a version (e.g. {holders[0][0].ref}) or "
                             f"fit {ref.concept} on {model}" if holders else
                             f"(no model has one: `gnomon fit` sets it when a direction clears selection; "
                             f"see `gnomon catalog ls --concept {ref.concept}`)"))
    if len(holders) == 1:
        return holders[0][0]
    if not holders:
        raise GnomonError(f"{ref} is not set for any model: `gnomon fit` sets it only when a direction "
                          f"clears selection (see its output, or `gnomon catalog ls --concept {ref.concept}`)")
    raise GnomonError(f"{ref} is ambiguous: it is set for {len(holders)} models ({listing}); "
                      "pass --model MODEL or name the version")


def pick_record(recs: Sequence[Any], ref: Ref, tracking_uri: str, known: Sequence[str],
                model: str | None = None) -> Any:
    """The record ``ref`` names among its concept's ``recs`` (oldest first): the latest when
    it names neither version nor alias; a per-model alias (:data:`SCOPED`) for ``model``, or
    the only model that has it; one clear line naming what exists otherwise. Shared by the
    MLflow-backed :class:`~catalog.Catalog` and the fast SQLite reader."""
    if not recs:
        raise GnomonError(f"no concept {ref.concept!r} in the catalog at {tracking_uri}; "
                          f"known concepts: {', '.join(known) or 'none yet'}")
    if ref.version is None and ref.alias is None:
        if model is not None:
            mine = [r for r in recs if r.model == model]
            if not mine:
                raise GnomonError(f"{ref.concept} has no version for model {model!r} (models: "
                                  f"{', '.join(sorted({r.model for r in recs}))})")
            return mine[-1]
        return recs[-1]
    if ref.alias in SCOPED:
        return _scoped_pick(recs, ref, model)
    hit = [r for r in recs if r.version == ref.version or (ref.alias and ref.alias in r.aliases)]
    if hit:
        return hit[0]
    aliases = display_aliases([a for r in recs for a in r.aliases])
    raise GnomonError(f"{ref} does not exist: {ref.concept} has versions "
                      f"{', '.join(str(r.version) for r in recs)} and aliases "
                      f"{', '.join(aliases) or 'none'}")
