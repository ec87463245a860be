"""The direction catalog: MLflow as the system of record for fitted directions.

Each registration is one MLflow run in experiment ``gnomon/<concept>`` (params: the
provenance and method parameters; metrics: the direction's metrics; artifacts: the
safetensors file and the layer-sweep curve) and one version of the registered model
named after the concept, tagged with model, revision, fingerprint, layer, position,
method, dataset hash and every metric (``metric.<name>``), so search needs no run fetch.

Aliases: ``best``, ``best-monitor`` and ``best-steer`` belong to one model (stored as
``best--<model slug>``, :func:`catalog.refs.scoped_alias`) and are set by a fit's selection
(:meth:`Catalog.point`), which has the held-out scores that setting one needs; a bare
``concept@best`` resolves against the ``model`` a caller names, or the only model that has
one, and is refused when that is ambiguous.

>>> cat = Catalog(home="gnomon-home")                      # doctest: +SKIP
>>> rec = cat.register(direction)                          # doctest: +SKIP
>>> cat.load("sentiment@best", model="smollm2") == direction   # doctest: +SKIP
True
"""

from __future__ import annotations

import functools
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from catalog import artifacts, backend, runs
from catalog.query import METRIC_PREFIX, RESERVED_TAGS, DirectionRecord, to_arrow
from catalog.refs import SCOPED, Ref, check_alias, check_concept, parse_ref, pick_record, registered_name, scoped_alias
from catalog.registry import Registry
from pipeline.atomic import publish
from pipeline.direction import Direction
from pipeline.home import gnomon_home
from pipeline.types import GnomonError

# lazy: mlflow (heavy; imported where used)

if TYPE_CHECKING:
    import pyarrow as pa

T = TypeVar("T")


def _answers(fn: Callable[..., T]) -> Callable[..., T]:
    """Reword :class:`backend.Unreachable` from a public method as a one-line GnomonError."""
    @functools.wraps(fn)
    def wrapper(self: Catalog, *args: Any, **kwargs: Any) -> T:
        try:
            return fn(self, *args, **kwargs)
        except backend.Unreachable as e:
            raise GnomonError(f"tracking server at {self.tracking_uri} did not answer after "
                              f"{e.tries} tries ({backend.short_error(e.last)})") from e
    return wrapper


class Catalog:
    """Register, find and load directions. Nothing touches MLflow until a method is called."""

    def __init__(self, tracking_uri: str | None = None, home: str | Path | None = None,
                 retries: int = 3, backoff_s: float = 0.5, timeout_s: float = 10.0) -> None:
        self.home = gnomon_home(home)
        self.tracking_uri = backend.resolve_tracking_uri(tracking_uri, self.home)
        self._reg = Registry(self.tracking_uri, self.home, retries, backoff_s, timeout_s)

    def __repr__(self) -> str:
        return f"Catalog(tracking_uri={self.tracking_uri!r}, home={str(self.home)!r})"

    @_answers
    def concepts(self) -> list[str]:
        """Names of the concepts that have a registered model in this catalog."""
        return sorted(self._reg.concept_aliases())

    # ---- registration -------------------------------------------------------
    def register(self, direction: Direction, *, curve: Mapping[str, Sequence[float]] | None = None,
                 extra_tags: Mapping[str, str] | None = None, set_best: bool = True,
                 best_metric: str = "val_auroc") -> DirectionRecord:
        """Save ``direction`` under the home, then record it in MLflow (see module doc)."""
        return self.register_many([(direction, {"curve": curve, "extra_tags": extra_tags, "set_best": set_best,
                                                "best_metric": best_metric})])[0]

    def register_many(self, items: Sequence[tuple[Direction, Mapping[str, Any]]]) -> list[DirectionRecord]:
        """Register several directions (each with :meth:`register`'s keyword arguments).

        Every direction is saved under the home with its pending marker *before* MLflow is
        contacted, so a tracking server that dies midway loses none of them: the ones not
        registered yet wait for ``gnomon catalog register-pending``, which sends them to
        the tracking URI recorded in their marker.
        """
        saved = []
        for direction, kw in items:  # refuse anything bad before writing
            check_concept(direction.provenance.concept)
            tags = kw.get("extra_tags") or {}
            bad = RESERVED_TAGS.intersection(tags)
            if bad or any(k.startswith(METRIC_PREFIX) for k in tags):
                raise GnomonError(f"extra_tags may not set catalog tags {sorted(bad) or 'metric.*'}")
            if kw.get("curve"):
                artifacts.check_curve(kw["curve"])
        for direction, kw in items:
            path = artifacts.save_local(direction, self.home)
            req = artifacts.PendingRegistration.of(path, kw.get("curve"), kw.get("extra_tags"),
                                                   kw.get("set_best", True), kw.get("best_metric", "val_auroc"),
                                                   self.tracking_uri)
            marker = artifacts.write_pending(self.home, req)
            artifacts.drop_superseded(self.home, path, artifacts.identity(direction))
            saved.append((marker, req, direction))
        out = []
        for i, (marker, req, direction) in enumerate(saved):
            try:
                out.append(self._register_saved(marker, req, direction, self._reg))
            except backend.Unreachable as e:
                raise self._unanswered(e, req.path, len(saved) - i) from e
        return out

    def _registry(self, uri: str | None) -> Registry:
        if uri is None or uri == self.tracking_uri:
            return self._reg
        r = self._reg
        return Registry(uri, self.home, r.retries, r.backoff_s, r.timeout_s)

    def register_pending(self, redirect: bool = False) -> list[DirectionRecord]:
        """Register every direction whose registration did not complete earlier, each in
        the catalog its marker names (this catalog for markers that name none, or for
        all of them with ``redirect``: the original server is gone for good).

        Stops at once if a store does not answer; a direction MLflow refuses is skipped
        (its marker stays) and reported after the others are registered."""
        done, failed = [], []
        for marker, req in artifacts.read_pending(self.home):
            reg = self._registry(None if redirect else req.tracking_uri)
            try:
                if not Path(req.path).is_file():
                    raise GnomonError(f"{req.path} no longer exists")
                done.append(self._register_saved(marker, req, Direction.load(req.path), reg))
            except backend.Unreachable as e:
                raise self._unanswered(e, req.path, uri=reg.tracking_uri) from e
            except GnomonError as e:
                failed.append(f"{marker.name}: {e}")
        if failed:
            raise GnomonError(f"registered {len(done)}; {len(failed)} failed (fix them or delete "
                              f"their markers in {marker.parent}): {' | '.join(failed)}")
        return done

    def _unanswered(self, e: backend.Unreachable, path: str, waiting: int = 1,
                    uri: str | None = None) -> GnomonError:
        what = f"the direction is saved at {path}" if waiting == 1 else \
            f"{waiting} directions are saved under {Path(path).parent} (first: {Path(path).name})"
        return GnomonError(
            f"tracking server at {uri or self.tracking_uri} did not answer after {e.tries} tries "
            f"({backend.short_error(e.last)}); {what}; run `gnomon catalog register-pending` to retry")

    def _register_saved(self, marker: Path, req: artifacts.PendingRegistration,
                        direction: Direction, reg: Registry) -> DirectionRecord:
        """Register a saved direction and drop its marker; the marker stays on any failure."""
        from mlflow.exceptions import MlflowException

        try:
            version = reg.register_file(direction, req)
        except MlflowException as e:  # refused, not unreachable
            raise GnomonError(f"MLflow at {reg.tracking_uri} refused the registration "
                              f"({backend.short_error(e)}); the direction is saved at "
                              f"{req.path}") from e
        marker.unlink(missing_ok=True)
        concept = direction.provenance.concept
        return self._pick(concept, Ref(concept, version=version), reg)

    # ---- queries ------------------------------------------------------------
    @_answers
    def search(self, *, concept: str | None = None, model: str | None = None,
               revision: str | None = None, layer: int | None = None, method: str | None = None,
               position: str | None = None,
               min_metrics: Mapping[str, float] | None = None) -> list[DirectionRecord]:
        """Versions matching every given field (``min_metrics``: each metric >= its bound)."""
        pushed = {"model": model, "revision": revision, "method": method, "position": position,
                  "layer": None if layer is None else str(layer)}
        recs = self._reg.records(concept, {k: v for k, v in pushed.items() if v is not None})
        return [r for r in recs if r.matches(concept=concept, model=model, revision=revision,
                                             layer=layer, method=method, position=position,
                                             min_metrics=min_metrics)]

    @_answers
    def versions(self, concept: str) -> list[DirectionRecord]:
        """All versions of ``concept``, oldest first (empty if the concept is unknown)."""
        return self._reg.records(concept)

    @_answers
    def resolve(self, ref: str, model: str | None = None) -> DirectionRecord:
        """``concept@alias``, ``concept/N`` or ``concept`` (its latest version) -> its record.
        ``model`` scopes ``best``/``best-monitor``/``best-steer`` (and a bare concept) to one model."""
        parsed = parse_ref(ref)
        return self._pick(parsed.concept, parsed, model=model)

    def _pick(self, concept: str, ref: Ref, reg: Registry | None = None, model: str | None = None) -> DirectionRecord:
        reg = reg or self._reg

        return pick_record(reg.records(concept), ref, reg.tracking_uri, sorted(reg.concept_aliases()),  # type: ignore[no-any-return]
                           model=model)

    @_answers
    def to_arrow(self) -> pa.Table:
        """Every version, one row each (see :func:`catalog.query.to_arrow`), for DuckDB."""
        return to_arrow(self._reg.records())

    # ---- loading and editing --------------------------------------------------
    @_answers
    def load(self, ref: str, model: str | None = None) -> Direction:
        """Download the direction ``ref`` names and return it (equal to what was registered)."""
        return self.load_record(self.resolve(ref, model))

    @_answers
    def load_record(self, rec: DirectionRecord) -> Direction:
        """The direction of an already resolved record."""
        with tempfile.TemporaryDirectory() as tmp:
            return Direction.load(self._reg.download(rec, Path(tmp)))

    @_answers
    def export(self, ref: str, path: str | Path, model: str | None = None) -> Path:
        """Copy the direction's safetensors file to ``path`` (written atomically)."""
        path = Path(path)
        if path.suffix != ".safetensors":
            raise GnomonError(f"export target {path} must end in .safetensors")
        rec = self.resolve(ref, model)
        with tempfile.TemporaryDirectory() as tmp:
            src = self._reg.download(rec, Path(tmp))
            return publish(path, lambda out: shutil.copyfile(src, out))

    @_answers
    def set_alias(self, ref: str, alias: str, model: str | None = None) -> DirectionRecord:
        """Point ``alias`` at the version ``ref`` resolves to (moving it if it existed). A
        per-model alias (``best``, ``best-monitor``, ``best-steer``) is set for the version's model."""
        rec = self.resolve(ref, model)
        stored = scoped_alias(alias, rec.model) if alias in SCOPED else check_alias(alias)
        self._reg.call("set_registered_model_alias", registered_name(rec.concept), stored, str(rec.version))
        return self._pick(rec.concept, Ref(rec.concept, version=rec.version))

    @_answers
    def point(self, concept: str, model: str, alias: str, version: int | None,
              tags: Mapping[str, str] | None = None) -> None:
        """Set the per-model ``alias`` of ``model`` to ``version`` (with ``tags`` on that version,
        e.g. the selection's evidence), or remove it when ``version`` is None: a selection that
        finds nothing reliable must not leave the alias on an earlier choice."""
        self._reg.point(concept, model, alias, version, tags or {})

    @_answers
    def log_evidence(self, concept: str, name: str, doc: Mapping[str, Any]) -> str:
        """Log what a selection measured (e.g. ``select-steer``) as an MLflow run of the
        concept's experiment; returns the run id."""
        root = backend.local_artifact_root(self.tracking_uri, self.home)
        return runs.log_evidence(self._reg.call, check_concept(concept), name, dict(doc), root)

    @_answers
    def tag(self, ref: str, key: str, value: str) -> None:
        """Set a free-form tag on a version (catalog-defined tags are refused)."""
        if key in RESERVED_TAGS or key.startswith(METRIC_PREFIX):
            raise GnomonError(f"tag {key!r} is set by the catalog and cannot be changed")
        rec = self.resolve(ref)

        self._reg.call("set_model_version_tag", registered_name(rec.concept), str(rec.version), key, str(value))
