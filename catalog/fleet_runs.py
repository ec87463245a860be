"""Fleet analyses in MLflow: one run per (evaluation, version), and one per comparison.

An evaluation of a direction over a fleet logs one run per version in experiment
``gnomon-evals/<concept>``, tagged ``gnomon_kind=eval``, ``concept``, ``fleet``,
``version`` (the registered model id), ``fingerprint`` and ``direction`` (the reference
evaluated), with every measured number as a metric and the sweep curve as metric history
(step = index of the strength). A comparison or drift report is one run in
``gnomon-compare/<concept>`` with its PNGs, JSON and HTML as artifacts. So
"how did sentiment@best do on every version of fleet F" is one ``search_runs`` call:
:func:`search_fleet_runs`.

Tag values in filters come from names already checked against ``[A-Za-z0-9._-]``
(``check_name``), so no value can break out of the filter string.
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from catalog import backend
from catalog.query import KIND_TAG
from catalog.registry import Registry
from catalog.runs import experiment
from pipeline.home import gnomon_home
from pipeline.types import GnomonError

# lazy: mlflow (heavy; imported where used)

__all__ = ["FleetRun", "log_fleet_run", "search_fleet_runs"]

_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@/+-]*$")
_EXPERIMENT = {"eval": "gnomon-evals", "compare": "gnomon-compare", "drift": "gnomon-compare",
               "evasion": "gnomon-compare"}


@dataclass(frozen=True)
class FleetRun:
    """One logged analysis run, as listed (no artifacts)."""

    run_id: str
    kind: str
    concept: str
    fleet: str
    version: str
    tags: dict[str, str]
    metrics: dict[str, float]
    artifact_uri: str

    def to_json(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "kind": self.kind, "concept": self.concept, "fleet": self.fleet,
                "version": self.version, "tags": self.tags, "artifact_uri": self.artifact_uri,
                "metrics": {k: (None if math.isnan(v) else v) for k, v in self.metrics.items()}}


def _check(value: str, what: str) -> str:
    if not isinstance(value, str) or not _SAFE.match(value) or "'" in value:
        raise GnomonError(f"{what} {value!r} must match [A-Za-z0-9][A-Za-z0-9._@/+-]*")
    return value


def _registry(tracking_uri: str | None, home: str | Path | None) -> Registry:
    h = gnomon_home(home)
    return Registry(backend.resolve_tracking_uri(tracking_uri, h), h, retries=3, backoff_s=0.5, timeout_s=10.0)


def log_fleet_run(kind: str, concept: str, fleet: str, *, version: str = "", metrics: Mapping[str, float] = {},
                  params: Mapping[str, Any] = {}, tags: Mapping[str, str] = {},
                  curves: Mapping[str, Sequence[float]] = {}, files: Sequence[Path] = (),
                  run_name: str | None = None, tracking_uri: str | None = None,
                  home: str | Path | None = None) -> str:
    """Log one analysis run; returns its run id. Non-finite metrics are left out (MLflow
    stores them, but they break sorting in the UI); the run ends FAILED if a write fails."""
    from mlflow.entities import Metric, Param, RunStatus

    if kind not in _EXPERIMENT:
        raise GnomonError(f"unknown analysis kind {kind!r}; one of {', '.join(_EXPERIMENT)}")
    _check(concept, "concept")
    _check(fleet, "fleet name")
    reg = _registry(tracking_uri, home)
    try:
        exp_id = experiment(reg.call, f"{_EXPERIMENT[kind]}/{concept}",
                            backend.local_artifact_root(reg.tracking_uri, reg.home))
        all_tags = {KIND_TAG: kind, "concept": concept, "fleet": fleet, "version": version,
                    **{str(k): str(v) for k, v in tags.items()}}
        run = reg.call("create_run", exp_id, run_name=run_name or f"{kind}-{version or fleet}", tags=all_tags)
    except backend.Unreachable as e:
        raise GnomonError(f"tracking server at {reg.tracking_uri} did not answer ({backend.short_error(e.last)})") from e
    run_id = run.info.run_id
    try:
        ts = int(run.info.start_time)
        ms = [Metric(k, float(v), ts, 0) for k, v in metrics.items() if math.isfinite(float(v))]
        ms += [Metric(k, float(y), ts, i) for k, ys in curves.items() for i, y in enumerate(ys)
               if math.isfinite(float(y))]
        ps = [Param(str(k), str(v)[:6000]) for k, v in params.items()]
        for i in range(0, max(len(ps), len(ms), 1), 100):
            reg.call("log_batch", run_id, metrics=ms[i:i + 100], params=ps[i:i + 100])
        for f in files:
            reg.call("log_artifact", run_id, str(f), Path(f).suffix.lstrip(".") or "files")
        reg.call("set_terminated", run_id, RunStatus.to_string(RunStatus.FINISHED))
    except Exception:
        with contextlib.suppress(Exception):
            reg.call("set_terminated", run_id, RunStatus.to_string(RunStatus.FAILED))
        raise
    return str(run_id)


def search_fleet_runs(kind: str = "eval", concept: str | None = None, fleet: str | None = None,
                      version: str | None = None, direction: str | None = None,
                      tracking_uri: str | None = None, home: str | Path | None = None) -> list[FleetRun]:
    """Finished runs of ``kind`` matching every given field, newest first."""
    if kind not in _EXPERIMENT:
        raise GnomonError(f"unknown analysis kind {kind!r}; one of {', '.join(_EXPERIMENT)}")
    filters = {k: _check(v, k) for k, v in (("fleet", fleet), ("version", version), ("direction", direction))
               if v is not None}
    reg = _registry(tracking_uri, home)
    try:
        if concept is not None:
            exps = [reg.call("get_experiment_by_name", f"{_EXPERIMENT[kind]}/{_check(concept, 'concept')}")]
        else:
            exps = [e for e in reg.call("search_experiments", max_results=1000)
                    if e.name.startswith(_EXPERIMENT[kind] + "/")]
        ids = [e.experiment_id for e in exps if e is not None]
        if not ids:
            return []
        clauses = [f"tags.{KIND_TAG} = '{kind}'", "attributes.status = 'FINISHED'"]
        clauses += [f"tags.{key} = '{val}'" for key, val in filters.items()]
        runs: list[Any] = []
        token = None
        while True:
            page = reg.call("search_runs", ids, filter_string=" AND ".join(clauses), max_results=1000,
                            order_by=["attributes.start_time DESC"], page_token=token)
            runs.extend(page)
            token = page.token
            if not token:
                break
    except backend.Unreachable as e:
        raise GnomonError(f"tracking server at {reg.tracking_uri} did not answer ({backend.short_error(e.last)})") from e
    return [FleetRun(run_id=r.info.run_id, kind=kind, concept=r.data.tags.get("concept", ""),
                     fleet=r.data.tags.get("fleet", ""), version=r.data.tags.get("version", ""),
                     tags={k: v for k, v in r.data.tags.items() if not k.startswith("mlflow.")},
                     metrics=dict(r.data.metrics), artifact_uri=r.info.artifact_uri) for r in runs]
