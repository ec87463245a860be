"""Linearity reports in MLflow: one run per (concept, model version) in the concept's
experiment ``gnomon/<concept>``, beside the runs of its registered directions.

The run is tagged ``gnomon_kind=report`` (so it is never mistaken for a direction), with
the model, the verdict word and the catalog references of the concept's directions for
that model (``directions``: the versions the report is "against"). Metrics: the per-layer
accuracies as histories over layers (``linear_acc``, ``mlp_acc``, ``erased_linear_acc``,
``erased_mlp_acc``; step = layer) and the verdict's figures; artifacts: the report JSON,
the PNGs and the HTML page.
"""

from __future__ import annotations

import contextlib
import json
import math
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from catalog import backend, runs
from catalog.query import KIND_TAG
from catalog.store import Catalog, _answers

# lazy: mlflow (heavy; imported where used)

__all__ = ["log_report"]


def _metrics(result: Mapping[str, Any], ts: int) -> list[Any]:
    from mlflow.entities import Metric

    out = []
    for e in result["layers"]:
        for name, v in (("linear_acc", e["probes"]["linear"]["test_accuracy"]),
                        ("mlp_acc", e["probes"]["mlp"]["test_accuracy"]),
                        ("erased_linear_acc", e["erasure"]["linear"]["test_accuracy"]),
                        ("erased_mlp_acc", e["erasure"]["mlp"]["test_accuracy"])):
            out.append(Metric(name, float(v), ts, int(e["layer"])))
    for k, v in result["verdict"]["figures"].items():
        if isinstance(v, (int, float)) and math.isfinite(float(v)):
            out.append(Metric(f"verdict.{k}", float(v), ts, 0))
    return out


@_answers
def _log(cat: Catalog, result: Mapping[str, Any], files: Sequence[Path], thresholds: Mapping[str, Any]) -> str:
    from mlflow.entities import Param, RunStatus

    call = cat._reg.call
    concept, model = result["concept"], result["model"]
    root = backend.local_artifact_root(cat.tracking_uri, cat.home)
    exp_id = runs.experiment(call, f"gnomon/{concept}", root)
    refs = ",".join(str(r.ref) for r in cat.search(concept=concept, model=model))
    run = call("create_run", exp_id, run_name=f"report-{model}",
               tags={KIND_TAG: "report", "concept": concept, "model": model, "revision": result["revision"],
                     "verdict": result["verdict"]["word"], "directions": refs[:5000]})
    run_id = run.info.run_id
    try:
        metrics = _metrics(result, int(run.info.start_time))
        params = [Param(f"threshold.{k}", str(v)) for k, v in thresholds.items()]
        params.append(Param("control_layer", str(result.get("control_layer"))))
        for i in range(0, max(len(metrics), len(params)), 100):
            call("log_batch", run_id, metrics=metrics[i:i + 100], params=params[i:i + 100])
        with tempfile.TemporaryDirectory() as tmp:
            js = Path(tmp) / "result.json"
            js.write_text(json.dumps(result, indent=1, default=str))
            call("log_artifact", run_id, str(js), "report")
        for f in files:
            call("log_artifact", run_id, str(f), "report")
        call("set_terminated", run_id, RunStatus.to_string(RunStatus.FINISHED))
    except Exception:
        with contextlib.suppress(Exception):
            call("set_terminated", run_id, RunStatus.to_string(RunStatus.FAILED))
        raise
    return str(run_id)


def log_report(result: Mapping[str, Any], files: Sequence[Path], thresholds: Mapping[str, Any], *,
               tracking_uri: str | None = None, home: str | Path | None = None) -> str:
    """Log one (concept, model) report result; returns the MLflow run id."""
    return _log(Catalog(tracking_uri=tracking_uri, home=home), result, files, thresholds)
