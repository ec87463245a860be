"""The catalog's MLflow adapter: one client, bounded retries, and the reads and writes
that map directions onto runs, registered models, versions, tags and aliases.

:class:`catalog.Catalog` adds the policy around it (the on-disk copy, pending markers,
references and user-facing errors). Every MLflow call goes through :meth:`Registry.call`,
which raises :class:`backend.Unreachable` when the store does not answer.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from catalog import artifacts, backend, runs
from catalog.query import (
    IDENTITY_TAG,
    KIND_TAG,
    METRIC_PREFIX,
    DirectionRecord,
    record_from_version,
)
from catalog.refs import (
    REGISTRY_PREFIX,
    concept_of,
    registered_name,
    scoped_alias,
)
from catalog.reroot import reroot_artifacts
from pipeline.direction import Direction
from pipeline.fleet.registry import lineage_tags
from pipeline.selection import Candidate, choose
from pipeline.types import GnomonError

# lazy: mlflow (heavy; imported where used)

MONITOR_ALIAS = "best-monitor"
"""The version to read a concept with (monitor, probe): the selection rule's winner."""
STEER_ALIAS = "best-steer"
"""The version to steer with: the largest measured dose-response within the fluency bound."""


def record_candidate(r: DirectionRecord) -> Any:
    """A catalog record as :mod:`pipeline.selection` sees it (sizes and depth from its tags)."""
    def tag_int(name: str) -> int | None:
        v = r.tags.get(name, "")
        return int(v) if v.isdigit() else None

    val_rows, depth = tag_int("val_rows"), tag_int("num_layers")
    n = val_rows // 2 if val_rows else None
    return Candidate(key=r, layer=r.layer, num_layers=depth, method=r.method, metrics=r.metrics,
                     n_pos=n, n_neg=n, version=r.version)


class Registry:
    """MLflow access for one tracking URI; the client is created on first use."""

    def __init__(self, tracking_uri: str, home: Path, retries: int, backoff_s: float,
                 timeout_s: float) -> None:
        self.tracking_uri = tracking_uri
        self.home = home
        self.retries = max(1, int(retries))
        self.backoff_s = backoff_s
        self.timeout_s = timeout_s
        self._client: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            from mlflow import MlflowClient

            # migration notes are MLflow's; set after its import, which configures its loggers
            # (the CLI also sets MLFLOW_LOGGING_LEVEL, see jobs.runtime.output.quiet_libraries)
            if not os.environ.get("GNOMON_VERBOSE"):
                for name in ("mlflow", "alembic"):
                    logging.getLogger(name).setLevel(logging.WARNING)

            backend.ensure_catalog(self.tracking_uri)  # atomic first-time creation, repair
            reroot_artifacts(self.tracking_uri)  # a moved or copied home: artifact paths follow it
            self._client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)
            self._namespace_models()
        return self._client

    def _namespace_models(self) -> None:
        """Rename gnomon's concept models registered before names were namespaced
        (``sentiment`` -> ``gnomon.sentiment``); only models gnomon tagged as its own."""
        models = self.paged("search_registered_models", f"tags.{KIND_TAG} = 'concept'")
        old = [m.name for m in models if not m.name.startswith(REGISTRY_PREFIX)]
        if not old:
            return
        with backend.write_lock(self.tracking_uri):
            for name in old:
                self.call("rename_registered_model", name, REGISTRY_PREFIX + name)

    def call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """``client.<name>(...)`` with bounded HTTP settings and gnomon's retries; raises
        :class:`backend.Unreachable`, which the catalog rewords."""
        with backend.bounded_http(self.tracking_uri, self.timeout_s):
            return backend.call_with_retries(lambda: getattr(self.client, name)(*args, **kwargs),
                                             tries=self.retries, backoff_s=self.backoff_s)

    def paged(self, name: str, filter_string: str) -> list[Any]:
        out: list[Any] = []
        token = None
        while True:
            page = self.call(name, filter_string=filter_string, max_results=1000, page_token=token)
            out.extend(page)
            token = page.token
            if not token:
                return out

    def concept_aliases(self) -> dict[str, dict[str, int]]:
        """``{concept: {alias: version}}`` of every concept in the catalog."""
        return {concept_of(n): a for n, a in self._model_aliases().items()}

    def _model_aliases(self) -> dict[str, dict[str, int]]:
        models = self.paged("search_registered_models", f"tags.{KIND_TAG} = 'concept'")
        return {m.name: dict(m.aliases or {}) for m in models}

    def alias_maps(self, names: Sequence[str]) -> dict[str, dict[str, int]]:
        """``{registered name: {alias: version}}``: one search when several models are listed."""
        from mlflow.exceptions import MlflowException

        if len(names) > 1:
            found = self._model_aliases()
            return {n: found.get(n, {}) for n in names}
        out = {}
        for n in names:
            try:
                out[n] = dict(self.call("get_registered_model", n).aliases or {})
            except MlflowException as e:
                if e.error_code != "RESOURCE_DOES_NOT_EXIST":
                    raise
                out[n] = {}
        return out

    def records(self, concept: str | None = None, tags: Mapping[str, str] | None = None
                ) -> list[DirectionRecord]:
        """gnomon's versions (of ``concept`` if given) whose tags equal ``tags``."""
        clauses = [f"tags.{KIND_TAG} = 'direction'"]
        if concept is not None:
            clauses.append(f"name = '{registered_name(concept)}'")
        # Push simple tag equalities down to MLflow; callers filter again in Python.
        clauses += [f"tags.{k} = '{v}'" for k, v in (tags or {}).items() if "'" not in v]
        versions = self.paged("search_model_versions", " AND ".join(clauses))
        aliases = self.alias_maps(sorted({mv.name for mv in versions}))
        recs = [record_from_version(mv, aliases[mv.name]) for mv in versions]
        return sorted(recs, key=lambda r: (r.concept, r.version))

    def register_file(self, direction: Direction, req: artifacts.PendingRegistration) -> int:
        """All MLflow writes for one direction. Idempotent: a file already registered
        under its concept (same sha256) is not registered twice, so a retry after a
        crash between version creation and marker removal is harmless. Returns the version."""
        self.client  # noqa: B018 (creates the catalog first: that takes the same lock)
        with backend.write_lock(self.tracking_uri):
            return self._register_file(direction, req)

    def _register_file(self, direction: Direction, req: artifacts.PendingRegistration) -> int:
        from mlflow.exceptions import MlflowException

        prov, path = direction.provenance, Path(req.path)
        concept, sha = prov.concept, artifacts.sha256_file(path)
        ident = artifacts.identity(direction)
        existing = self.records(concept, {"sha256": sha}) or self.records(concept, {IDENTITY_TAG: ident})
        if existing:
            version = existing[0].version
        else:
            root = backend.local_artifact_root(self.tracking_uri, self.home)
            run_id, source = runs.log_run(self.call, direction, path, req, root)
            try:
                self.call("create_registered_model", registered_name(concept), tags={KIND_TAG: "concept"})
            except MlflowException as e:
                if e.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
            tags = {"model": prov.model_id, "revision": prov.revision,
                    "fingerprint": prov.fingerprint, "layer": str(prov.layer),
                    "position": prov.position, "method": prov.method,
                    "dataset_hash": prov.dataset_hash, "site": prov.site,
                    "hidden_size": str(prov.hidden_size), KIND_TAG: "direction", "sha256": sha,
                    IDENTITY_TAG: ident,
                    # the selection rule's confidence bound needs the validation size
                    **({"val_rows": str(prov.split_sizes["val"])} if prov.split_sizes.get("val") else {}),
                    **req.extra_tags}
            tags |= lineage_tags(prov.model_id, prov.fingerprint, self.home)
            tags |= {METRIC_PREFIX + k: repr(float(v)) for k, v in direction.metrics.items()}
            mv = self.call("create_model_version", registered_name(concept), source=source, run_id=run_id,
                           tags=tags)
            version = self._settle(concept, ident, int(mv.version), run_id)
        if req.set_best:
            self.update_best(concept, prov.model_id, req.best_metric)
        return version

    def _settle(self, concept: str, ident: str, mine: int, run_id: str) -> int:
        """The version that stands for ``ident`` once ``mine`` was created. On one SQLite file
        the write lock already serialised the check and the creation; on a tracking server
        two workers can both find nothing and both create. The server numbers versions in
        creation order, so the lowest version of an identity never changes once it exists:
        every writer keeps that one and deletes its own if it is higher (version and run),
        so no version is lost and none is left twice, with no lock outside the server."""
        if backend.sqlite_path(self.tracking_uri) is not None:
            return mine
        same = sorted(r.version for r in self.records(concept, {IDENTITY_TAG: ident}))
        keep = same[0] if same else mine
        if keep < mine:
            self.call("delete_model_version", registered_name(concept), str(mine))
            self.call("delete_run", run_id)
        return keep

    def update_best(self, concept: str, model: str, metric: str) -> None:
        """Only for ``register(set_best=True)`` by callers that hold no held-out scores: point
        ``best`` and ``best-monitor`` of ``model`` at the rule's pick among its versions
        (:mod:`pipeline.selection`: never layer 0, never at chance), or remove them. A fit
        sets them through :meth:`point` instead, after its search-corrected selection."""
        recs = [r for r in self.records(concept, {"model": model}) if r.model == model]
        if not recs:
            return
        top = choose([record_candidate(r) for r in recs], metric)
        for alias in ("best", MONITOR_ALIAS):
            self.point(concept, model, alias, None if top is None else top.key.version, {})

    def point(self, concept: str, model: str, alias: str, version: int | None,
              tags: Mapping[str, str]) -> None:
        """Set (or, for ``version`` None, remove) ``model``'s per-model ``alias`` of ``concept``."""
        from mlflow.exceptions import MlflowException

        stored = scoped_alias(alias, model)
        if version is not None:
            self.call("set_registered_model_alias", registered_name(concept), stored, str(version))
            for k, v in tags.items():
                self.call("set_model_version_tag", registered_name(concept), str(version), k, str(v))
            return
        try:
            self.call("delete_registered_model_alias", registered_name(concept), stored)
        except MlflowException as e:
            if e.error_code not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                raise

    def download(self, rec: DirectionRecord, dst: Path) -> Path:
        """Fetch the version's file into ``dst`` and check it against its recorded sha256.
        The source is the run's ``direction/`` folder, or (versions registered before it was
        a folder) the safetensors file itself."""
        name = rec.source.rstrip("/").rsplit("/", 1)[-1]
        if not name.endswith(".safetensors"):
            files = [a.path for a in self.call("list_artifacts", rec.run_id, "direction")
                     if a.path.endswith(".safetensors")]
            if len(files) != 1:
                raise GnomonError(f"{rec.ref}: its run {rec.run_id} holds {len(files)} direction files "
                                  "under direction/ (expected one); the artifact store was changed")
            name = files[0].rsplit("/", 1)[-1]
        rel = f"direction/{name}"  # as logged by runs.log_run
        local = Path(self.call("download_artifacts", rec.run_id, rel, str(dst)))
        if rec.sha256 and artifacts.sha256_file(local) != rec.sha256:
            raise GnomonError(f"{rec.ref}: the downloaded file does not match its recorded sha256; "
                              "the artifact store holds a different file than was registered")
        return local
