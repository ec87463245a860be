"""The direction catalog: MLflow as the system of record for fitted directions.

Each registration is one MLflow run in experiment ``gnomon/<concept>`` (params: the
provenance and method parameters; metrics: the direction's metrics; artifacts: the
safetensors file and the layer-sweep curve) and one version of the registered model
named after the concept, tagged with model, revision, fingerprint, layer, position,
method, dataset hash and every metric (``metric.<name>``), so search needs no run fetch.

Aliases: after each registration (``set_best=True``), among the concept's versions for
the *same model* the one with the highest ``best_metric`` gets ``best-<model slug>``
and also ``best``. So ``best`` follows the model registered most recently: with
directions for several models, ask for ``concept@best-<slug>`` (see
:func:`catalog.refs.best_alias`).

>>> cat = Catalog(home="gnomon-home")                      # doctest: +SKIP
>>> rec = cat.register(direction)                          # doctest: +SKIP
>>> cat.load("sentiment@best") == direction                # doctest: +SKIP
True
"""

from __future__ import annotations

import functools
import math
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from catalog import artifacts, backend, runs
from catalog.query import (
    KIND_TAG,
    METRIC_PREFIX,
    RESERVED_TAGS,
    DirectionRecord,
    record_from_version,
    to_arrow,
)
from catalog.refs import Ref, best_alias, check_alias, check_concept, parse_ref
from pipeline.direction import Direction
from pipeline.home import gnomon_home
from pipeline.types import GnomonError

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
        self.retries = max(1, int(retries))
        self.backoff_s = backoff_s
        self.timeout_s = timeout_s
        self._client: Any = None

    def __repr__(self) -> str:
        return f"Catalog(tracking_uri={self.tracking_uri!r}, home={str(self.home)!r})"

    # ---- plumbing -----------------------------------------------------------
    @property
    def client(self) -> Any:
        if self._client is None:
            from mlflow import MlflowClient

            if self.tracking_uri.startswith("sqlite:///"):
                Path(self.tracking_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
            self._client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)
        return self._client

    def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """``client.<name>(...)`` with bounded HTTP settings and gnomon's retries; raises
        :class:`backend.Unreachable`, which public methods reword (see :func:`_answers`)."""
        with backend.bounded_http(self.tracking_uri, self.timeout_s):
            return backend.call_with_retries(lambda: getattr(self.client, name)(*args, **kwargs),
                                             tries=self.retries, backoff_s=self.backoff_s)

    def _paged(self, name: str, filter_string: str) -> list[Any]:
        out: list[Any] = []
        token = None
        while True:
            page = self._call(name, filter_string=filter_string, max_results=1000, page_token=token)
            out.extend(page)
            token = page.token
            if not token:
                return out

    @_answers
    def concepts(self) -> list[str]:
        """Names of the concepts that have a registered model in this catalog."""
        models = self._paged("search_registered_models", f"tags.{KIND_TAG} = 'concept'")
        return sorted(m.name for m in models)

    def _alias_maps(self, names: Sequence[str]) -> dict[str, dict[str, int]]:
        """``{concept: {alias: version}}``: one search when several concepts are listed."""
        from mlflow.exceptions import MlflowException

        if len(names) > 1:
            models = self._paged("search_registered_models", f"tags.{KIND_TAG} = 'concept'")
            found = {m.name: dict(m.aliases or {}) for m in models}
            return {n: found.get(n, {}) for n in names}
        out = {}
        for n in names:
            try:
                out[n] = dict(self._call("get_registered_model", n).aliases or {})
            except MlflowException as e:
                if e.error_code != "RESOURCE_DOES_NOT_EXIST":
                    raise
                out[n] = {}
        return out

    def _records(self, concept: str | None = None, tags: Mapping[str, str] | None = None
                 ) -> list[DirectionRecord]:
        clauses = [f"tags.{KIND_TAG} = 'direction'"]
        if concept is not None:
            clauses.append(f"name = '{check_concept(concept)}'")
        # Push simple tag equalities down to MLflow; callers filter again in Python.
        clauses += [f"tags.{k} = '{v}'" for k, v in (tags or {}).items() if "'" not in v]
        versions = self._paged("search_model_versions", " AND ".join(clauses))
        aliases = self._alias_maps(sorted({mv.name for mv in versions}))
        recs = [record_from_version(mv, aliases[mv.name]) for mv in versions]
        return sorted(recs, key=lambda r: (r.concept, r.version))

    # ---- registration -------------------------------------------------------
    def register(self, direction: Direction, *, curve: Mapping[str, Sequence[float]] | None = None,
                 extra_tags: Mapping[str, str] | None = None, set_best: bool = True,
                 best_metric: str = "val_auroc") -> DirectionRecord:
        """Save ``direction`` under the home, then record it in MLflow (see module doc)."""
        check_concept(direction.provenance.concept)
        bad = RESERVED_TAGS.intersection(extra_tags or {})
        if bad or any(k.startswith(METRIC_PREFIX) for k in extra_tags or {}):
            raise GnomonError(f"extra_tags may not set catalog tags {sorted(bad) or 'metric.*'}")
        if curve:
            artifacts.check_curve(curve)  # refuse a bad curve before anything is written
        path = artifacts.save_local(direction, self.home)
        req = artifacts.PendingRegistration.of(path, curve, extra_tags, set_best, best_metric)
        marker = artifacts.write_pending(self.home, req)
        return self._register_pending_one(marker, req, direction)

    def register_pending(self) -> list[DirectionRecord]:
        """Register every direction whose registration did not complete earlier."""
        done = []
        for marker, req in artifacts.read_pending(self.home):
            if not Path(req.path).is_file():
                raise GnomonError(f"pending registration {marker} points at {req.path}, which no "
                                  "longer exists; delete the marker")
            done.append(self._register_pending_one(marker, req, Direction.load(req.path)))
        return done

    def _register_pending_one(self, marker: Path, req: artifacts.PendingRegistration,
                              direction: Direction) -> DirectionRecord:
        try:
            rec = self._register_file(direction, req)
        except backend.Unreachable as e:
            raise GnomonError(
                f"tracking server at {self.tracking_uri} did not answer after {e.tries} tries "
                f"({backend.short_error(e.last)}); the direction is saved at {req.path}; run "
                "`gnomon catalog register-pending` to retry") from e
        except Exception:
            marker.unlink(missing_ok=True)  # refused, not unreachable: retrying cannot help
            raise
        marker.unlink(missing_ok=True)
        return rec

    def _register_file(self, direction: Direction, req: artifacts.PendingRegistration
                       ) -> DirectionRecord:
        """All MLflow writes for one direction. Idempotent: a file already registered
        under its concept (same sha256) is not registered twice, so a retry after a
        crash between version creation and marker removal is harmless."""
        from mlflow.exceptions import MlflowException

        prov, path = direction.provenance, Path(req.path)
        concept, sha = prov.concept, artifacts.sha256_file(path)
        existing = self._records(concept, {"sha256": sha})
        if existing:
            version = existing[0].version
        else:
            root = backend.local_artifact_root(self.tracking_uri, self.home)
            run_id, source = runs.log_run(self._call, direction, path, req, root)
            try:
                self._call("create_registered_model", concept, tags={KIND_TAG: "concept"})
            except MlflowException as e:
                if e.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
            tags = {"model": prov.model_id, "revision": prov.revision,
                    "fingerprint": prov.fingerprint, "layer": str(prov.layer),
                    "position": prov.position, "method": prov.method,
                    "dataset_hash": prov.dataset_hash, "site": prov.site,
                    "hidden_size": str(prov.hidden_size), KIND_TAG: "direction", "sha256": sha,
                    **req.extra_tags}
            tags |= {METRIC_PREFIX + k: repr(float(v)) for k, v in direction.metrics.items()}
            mv = self._call("create_model_version", concept, source=source, run_id=run_id,
                            tags=tags)
            version = int(mv.version)
        if req.set_best:
            self._update_best(concept, prov.model_id, req.best_metric)
        return self._pick(concept, Ref(concept, version=version))

    def _update_best(self, concept: str, model: str, metric: str) -> None:
        """Point ``best-<model slug>`` and ``best`` at the model's highest-``metric`` version
        (ties: the newer version). No alias changes when no version has the metric."""
        scored = [r for r in self._records(concept, {"model": model})
                  if r.model == model and math.isfinite(r.metrics.get(metric, math.nan))]
        if not scored:
            return
        top = max(scored, key=lambda r: (r.metrics[metric], r.version))
        for alias in (best_alias(model), "best"):
            self._call("set_registered_model_alias", concept, alias, str(top.version))

    # ---- queries ------------------------------------------------------------
    @_answers
    def search(self, *, concept: str | None = None, model: str | None = None,
               revision: str | None = None, layer: int | None = None, method: str | None = None,
               position: str | None = None,
               min_metrics: Mapping[str, float] | None = None) -> list[DirectionRecord]:
        """Versions matching every given field (``min_metrics``: each metric >= its bound)."""
        pushed = {"model": model, "revision": revision, "method": method, "position": position,
                  "layer": None if layer is None else str(layer)}
        recs = self._records(concept, {k: v for k, v in pushed.items() if v is not None})
        return [r for r in recs if r.matches(concept=concept, model=model, revision=revision,
                                             layer=layer, method=method, position=position,
                                             min_metrics=min_metrics)]

    @_answers
    def versions(self, concept: str) -> list[DirectionRecord]:
        """All versions of ``concept``, oldest first (empty if the concept is unknown)."""
        return self._records(concept)

    @_answers
    def resolve(self, ref: str) -> DirectionRecord:
        """``concept@alias``, ``concept/N`` or ``concept`` (its latest version) -> its record."""
        parsed = parse_ref(ref)
        return self._pick(parsed.concept, parsed)

    def _pick(self, concept: str, ref: Ref) -> DirectionRecord:
        recs = self.versions(concept)
        if not recs:
            known = ", ".join(self.concepts()) or "none yet"
            raise GnomonError(f"no concept {concept!r} in the catalog at {self.tracking_uri}; "
                              f"known concepts: {known}")
        if ref.version is None and ref.alias is None:
            return recs[-1]
        hit = [r for r in recs if r.version == ref.version or (ref.alias and ref.alias in r.aliases)]
        if hit:
            return hit[0]
        aliases = sorted({a for r in recs for a in r.aliases})
        raise GnomonError(f"{ref} does not exist: {concept} has versions "
                          f"{', '.join(str(r.version) for r in recs)} and aliases "
                          f"{', '.join(aliases) or 'none'}")

    @_answers
    def to_arrow(self) -> pa.Table:
        """Every version, one row each (see :func:`catalog.query.to_arrow`), for DuckDB."""
        return to_arrow(self._records())

    # ---- loading and editing --------------------------------------------------
    def _download(self, rec: DirectionRecord, dst: Path) -> Path:
        """Fetch the version's file into ``dst`` and check it against its recorded sha256."""
        rel = f"direction/{rec.source.rsplit('/', 1)[-1]}"  # as logged by runs.log_run
        local = Path(self._call("download_artifacts", rec.run_id, rel, str(dst)))
        if rec.sha256 and artifacts.sha256_file(local) != rec.sha256:
            raise GnomonError(f"{rec.ref}: the downloaded file does not match its recorded sha256; "
                              "the artifact store holds a different file than was registered")
        return local

    @_answers
    def load(self, ref: str) -> Direction:
        """Download the direction ``ref`` names and return it (equal to what was registered)."""
        rec = self.resolve(ref)
        with tempfile.TemporaryDirectory() as tmp:
            return Direction.load(self._download(rec, Path(tmp)))

    @_answers
    def export(self, ref: str, path: str | Path) -> Path:
        """Copy the direction's safetensors file to ``path`` (written atomically)."""
        path = Path(path)
        if path.suffix != ".safetensors":
            raise GnomonError(f"export target {path} must end in .safetensors")
        rec = self.resolve(ref)
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            tmp_path = path.with_name(f".{path.name}.tmp")
            shutil.copyfile(self._download(rec, Path(tmp)), tmp_path)
            tmp_path.replace(path)
        return path

    @_answers
    def set_alias(self, ref: str, alias: str) -> DirectionRecord:
        """Point ``alias`` at the version ``ref`` resolves to (moving it if it existed)."""
        rec = self.resolve(ref)
        self._call("set_registered_model_alias", rec.concept, check_alias(alias), str(rec.version))
        return self._pick(rec.concept, Ref(rec.concept, version=rec.version))

    @_answers
    def tag(self, ref: str, key: str, value: str) -> None:
        """Set a free-form tag on a version (catalog-defined tags are refused)."""
        if key in RESERVED_TAGS or key.startswith(METRIC_PREFIX):
            raise GnomonError(f"tag {key!r} is set by the catalog and cannot be changed")
        rec = self.resolve(ref)
        self._call("set_model_version_tag", rec.concept, str(rec.version), key, str(value))
