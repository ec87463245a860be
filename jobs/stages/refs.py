"""Resolving a command's direction references: the one resolver every command uses, so
each says the same thing about what ``sentiment@best`` turned out to be.

A REF is a catalog reference (``sentiment@best``, ``sentiment/7``), a direction file
(``.safetensors``) or a llama.cpp control vector (``.gguf``). :func:`check_refs` refuses a
bad catalog REF in well under a second, before MLflow or torch is imported;
:func:`resolve_directions` then loads them all (files directly, the rest through the
catalog) and says on stderr what each catalog REF resolved to.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from catalog.backend import resolve_tracking_uri, sqlite_path
from catalog.readers import reader_for
from catalog.refs import parse_ref
from pipeline.home import gnomon_home
from pipeline.store_keys import resolve_model_key
from pipeline.types import GnomonError

# lazy: numpy, pyarrow, torch (heavy; imported where used)

__all__ = ["check_refs", "is_direction_file", "resolve_direction", "resolve_directions", "resolve_record",
           "say_resolved", "scope_model"]


def scope_model(model: str | None, home: Any = None) -> str | None:
    """``--model`` as fits record it (a relative path resolved, as the collection resolves it),
    so ``sentiment@best --model ckpt`` finds the aliases a fit of ``ckpt`` set."""
    if model is None:
        return None
    return resolve_model_key(model, gnomon_home(home)).model


def say_resolved(ref: str, rec: Any) -> None:
    """``sentiment@best -> sentiment/7 (model smollm2, layer 16, mean_diff on last)`` on stderr."""
    print(f"{ref} -> {rec.ref} (model {rec.model}, layer {rec.layer}, {rec.method} on {rec.position})",
          file=sys.stderr, flush=True)


def resolve_record(catalog: Any, ref: str, model: str | None = None, say: bool = True) -> Any:
    """The catalog record ``ref`` names (``model`` scopes ``@best``), said on stderr."""
    rec = catalog.resolve(ref, scope_model(model, getattr(catalog, "home", None)))
    if say:
        say_resolved(ref, rec)
    return rec


def is_direction_file(ref: str) -> bool:
    """A REF that names a file (``.safetensors``, ``.gguf``, or any existing path), not the catalog."""
    return ref.endswith((".safetensors", ".gguf")) or Path(ref).expanduser().exists()


def check_refs(refs: Sequence[str], tracking_uri: str | None = None, model: str | None = None,
               home: Any = None) -> list[Any]:
    """The catalog record of every catalog REF in ``refs`` (files are skipped), or one line
    saying which concept, version or alias does not exist: in well under a second, before
    MLflow is imported, a catalog database created or a model loaded (issue 21: an unknown
    concept took 18-45 s to be refused). A local SQLite catalog is read directly
    (:class:`catalog.fast.SQLiteReader`); a missing one has no concepts, and is not created
    by a refusal; a tracking server is asked through its REST search API (:mod:`catalog.rest`). ``model``
    scopes ``best``/``best-monitor``/``best-steer`` (issue 20)."""
    wanted = [r for r in refs if not is_direction_file(r)]
    if not wanted:
        return []
    uri = resolve_tracking_uri(tracking_uri, gnomon_home(home))
    db = sqlite_path(uri)
    if db is not None and not db.is_file():
        ref = parse_ref(wanted[0])
        raise GnomonError(f"no concept {ref.concept!r} in the catalog at {uri}; known concepts: none yet "
                          "(fit one with `gnomon fit`)")
    reader: Any = reader_for(uri)
    if reader is None:
        from catalog import Catalog

        reader = Catalog(tracking_uri=tracking_uri, home=home)
    scope = scope_model(model, home)
    return [reader.resolve(r, scope) for r in wanted]


def resolve_directions(refs: Sequence[str], tracking_uri: str | None = None, model: str | None = None,
                       say: bool = True, home: Any = None) -> list[Any]:
    """Directions for REFs: files are read directly, anything else goes through the catalog
    (``model`` scopes ``best``/``best-monitor``/``best-steer``). Every catalog REF is checked
    first, so a bad second one is refused before the first downloads, and what each resolved
    to is said on stderr (unless ``say`` is False). A ``.gguf`` control vector may hold
    several directions (one per layer)."""
    # before torch is imported: a refusal takes a fraction of a second
    records = iter(check_refs(refs, tracking_uri, model, home))
    from pipeline.direction import Direction

    out: list[Any] = []
    catalog = None
    for ref in refs:
        path = Path(ref).expanduser()
        if path.suffix == ".gguf":
            from pipeline.gguf_io import read_control_vector

            out.extend(read_control_vector(path))
        elif path.suffix == ".safetensors":
            out.append(Direction.load(path))
        elif path.exists():
            raise GnomonError(f"{ref} is a file but neither .safetensors nor .gguf")
        else:
            if catalog is None:
                from catalog import Catalog

                catalog = Catalog(tracking_uri=tracking_uri, home=home)
            rec = next(records)   # check_refs resolved the catalog REFs, in order
            if say:
                say_resolved(ref, rec)
            out.append(catalog.load_record(rec))
    return out


def resolve_direction(ref: str, tracking_uri: str | None = None, home: Any = None, model: str | None = None) -> Any:
    """The one direction ``ref`` names (see :func:`resolve_directions`)."""
    found = resolve_directions([ref], tracking_uri, model, home=home)
    if len(found) != 1:
        raise GnomonError(f"{ref} holds {len(found)} directions; this command takes one")
    return found[0]
