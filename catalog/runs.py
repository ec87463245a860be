"""One MLflow run per registered direction: its params, metrics and artifacts.

``call(name, *args)`` invokes ``MlflowClient.<name>`` with the catalog's bounded retries,
so this module never holds a client and every write is retried the same way.
"""

from __future__ import annotations

import contextlib
import json
import math
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from catalog.artifacts import PendingRegistration, curve_steps, write_curve
from catalog.query import KIND_TAG
from pipeline.direction import Direction

# lazy: mlflow (heavy; imported where used); PIL (optional dependency)

Call = Callable[..., Any]
_MAX_PARAM = 6000  # MLflow's limit on a param value


def log_run(call: Call, direction: Direction, path: Path, req: PendingRegistration,
            artifact_root: Path | None) -> tuple[str, str]:
    """Log one direction as a run of experiment ``gnomon/<concept>``; return its run id
    and the artifact URI of its ``direction/`` folder (the safetensors file and a
    ``direction.json`` copy of its metadata), the model version's ``source``: a folder, so
    ``mlflow.artifacts.download_artifacts("models:/gnomon.<concept>@<alias>")`` fetches the
    file (a single-file source downloads nothing). The run ends FAILED if any write fails,
    so a half-logged run is visible as such in the UI."""
    from mlflow.entities import Metric, Param, RunStatus

    prov = direction.provenance
    exp_id = experiment(call, f"gnomon/{prov.concept}", artifact_root)
    run = call("create_run", exp_id,
               run_name=f"{prov.method or 'direction'}-L{prov.layer}-{prov.position}",
               tags={KIND_TAG: "direction", "concept": prov.concept})
    run_id = run.info.run_id
    try:
        flat = {k: v for k, v in prov.to_json().items() if k not in ("params", "split_sizes")}
        flat |= {f"split_sizes.{k}": v for k, v in prov.split_sizes.items()}
        flat |= {f"method.{k}": v for k, v in prov.params.items()}
        params = [Param(k, str(v)[:_MAX_PARAM]) for k, v in flat.items()]
        ts = int(run.info.start_time)
        metrics = [Metric(k, float(v), ts, 0) for k, v in direction.metrics.items()
                   if math.isfinite(float(v))]
        scale = {"scale.pos_mean": direction.pos_mean, "scale.neg_mean": direction.neg_mean,
                 "scale.spread": direction.spread, "scale.resid_norm": direction.resid_norm}
        metrics += [Metric(k, float(v), ts, 0) for k, v in scale.items() if math.isfinite(v)]
        if req.curve:
            metrics += [Metric(k, v, ts, step) for k, v, step in curve_steps(req.curve)]
        for i in range(0, max(len(params), len(metrics)), 100):  # log_batch caps params at 100
            call("log_batch", run_id, metrics=metrics[i:i + 100], params=params[i:i + 100])
        call("log_artifact", run_id, str(path), "direction")
        with tempfile.TemporaryDirectory() as tmp:
            meta = Path(tmp) / "direction.json"   # readable without safetensors (the file is the truth)
            meta.write_text(json.dumps({"file": path.name, **direction.metadata()}, indent=1, default=str))
            call("log_artifact", run_id, str(meta), "direction")
        if req.curve:
            with tempfile.TemporaryDirectory() as tmp:
                title = f"{prov.concept} on {prov.model_id}: {prov.method}, position {prov.position}"
                for f in write_curve(req.curve, Path(tmp), title, selected_layer=prov.layer):
                    call("log_artifact", run_id, str(f), "curve")
                    if f.suffix == ".png":   # also as an MLflow image: the run page's charts show it
                        from PIL import Image

                        with Image.open(f) as im:
                            call("log_image", run_id, im.convert("RGB"), key="per_layer_curve", step=0)
        call("set_terminated", run_id, RunStatus.to_string(RunStatus.FINISHED))
    except Exception:
        # The store is failing already; the original error is the one to report.
        with contextlib.suppress(Exception):
            call("set_terminated", run_id, RunStatus.to_string(RunStatus.FAILED))
        raise
    return run_id, f"{run.info.artifact_uri}/direction"


def log_evidence(call: Call, concept: str, name: str, doc: dict[str, Any], artifact_root: Path | None) -> str:
    """Log a selection's evidence as a run of ``gnomon/<concept>``: ``doc`` as a JSON artifact,
    its scalar fields as params, and per-candidate numbers as metrics (step = candidate rank)."""
    from mlflow.entities import Metric, Param, RunStatus

    exp_id = experiment(call, f"gnomon/{concept}", artifact_root)
    run = call("create_run", exp_id, run_name=name, tags={KIND_TAG: "evidence", "concept": concept,
                                                          "model": str(doc.get("model", ""))})
    run_id = run.info.run_id
    ts = int(run.info.start_time)
    params = [Param(k, str(v)[:_MAX_PARAM]) for k, v in doc.items() if isinstance(v, (str, int, float, bool))]
    metrics = [Metric(name, float(v), ts, step) for step, c in enumerate(doc.get("candidates", []))
               for name, v in _candidate_numbers(c) if math.isfinite(float(v))]
    status = "FINISHED"
    try:
        call("log_batch", run_id, metrics=metrics[:1000], params=params[:100])
        with tempfile.TemporaryDirectory() as tmp:
            f = Path(tmp) / f"{name}.json"
            f.write_text(json.dumps(doc, indent=1, default=str))
            call("log_artifact", run_id, str(f), "evidence")
    except Exception:
        status = "FAILED"
        raise
    finally:
        with contextlib.suppress(Exception):
            call("set_terminated", run_id, RunStatus.to_string(getattr(RunStatus, status)))
    return str(run_id)


def _candidate_numbers(c: dict[str, Any]) -> list[tuple[str, float]]:
    """A measured candidate's numbers as metric values: scalars as they are, a two-number
    interval ``x_ci`` as ``x_ci_low`` / ``x_ci_high``, ``qualifies`` as 1/0."""
    out: list[tuple[str, float]] = []
    for k in ("fluency_bound", "strength", "base", "plus", "minus", "effect", "kl", "layer", "qualifies"):
        v = c.get(k)
        if isinstance(v, (int, float)):
            out.append((k, float(v)))
    for k in ("plus_ci", "minus_ci"):
        v = c.get(k)
        if isinstance(v, (list, tuple)) and len(v) == 2 and all(isinstance(x, (int, float)) for x in v):
            out += [(f"{k}_low", float(v[0])), (f"{k}_high", float(v[1]))]
    return out


def experiment(call: Call, name: str, artifact_root: Path | None) -> str:
    """The id of experiment ``name``, created if missing. Database stores get an explicit
    artifact location (MLflow would otherwise write into ``./mlruns`` of the current
    directory); a server decides its own."""
    from mlflow.exceptions import MlflowException

    exp = call("get_experiment_by_name", name)
    if exp is not None:
        return str(exp.experiment_id)
    loc = (artifact_root / name.replace("/", "-")).as_uri() if artifact_root is not None else None
    try:
        return str(call("create_experiment", name, artifact_location=loc))
    except MlflowException as e:  # created concurrently by another job
        if e.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        return str(call("get_experiment_by_name", name).experiment_id)
