"""A job as an MLflow run: the parent record of one ``gnomon run`` with its stage summary.

One run per job execution in experiment ``gnomon-jobs/<job name>``, tagged
``gnomon_kind=job``: params are the job spec, metrics count the stages that ran and were
skipped (per kind) and the wall time, and ``stages.json`` lists every stage with its
status, seconds and input digest. The run starts RUNNING when the job starts, so a job in
progress (or one that crashed) is visible as such; it ends FINISHED or FAILED.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from catalog import backend
from catalog.query import KIND_TAG
from catalog.registry import Registry
from catalog.runs import experiment

# lazy: mlflow (heavy; imported where used)

__all__ = ["start_job_run", "end_job_run"]

_MAX_PARAM = 6000


def _registry(tracking_uri: str | None, home: Path) -> Registry:
    return Registry(backend.resolve_tracking_uri(tracking_uri, home), home, retries=3, backoff_s=0.5, timeout_s=10.0)


def start_job_run(job: str, params: Mapping[str, Any], *, tracking_uri: str | None, home: Path) -> str:
    """Create the job's run (RUNNING); returns its id."""
    from mlflow.entities import Param

    reg = _registry(tracking_uri, home)
    exp_id = experiment(reg.call, f"gnomon-jobs/{job}", backend.local_artifact_root(reg.tracking_uri, home))
    run = reg.call("create_run", exp_id, run_name=job, tags={KIND_TAG: "job", "job": job})
    flat = [Param(k, str(v)[:_MAX_PARAM]) for k, v in sorted(params.items())]
    for i in range(0, len(flat), 100):
        reg.call("log_batch", run.info.run_id, params=flat[i:i + 100])
    return str(run.info.run_id)


def end_job_run(run_id: str, stages: Sequence[Mapping[str, Any]], *, seconds: float, failed: str | None,
                tracking_uri: str | None, home: Path) -> None:
    """Log the stage summary and end the run (FAILED with the error's first line when ``failed``)."""
    from mlflow.entities import Metric, RunStatus

    reg = _registry(tracking_uri, home)
    try:
        counts: dict[str, float] = {"stages_ran": 0.0, "stages_skipped": 0.0, "job_seconds": float(seconds)}
        for s in stages:
            status = "ran" if s["status"] == "ran" else "skipped"
            counts[f"stages_{status}"] += 1
            counts[f"{s['kind']}_{status}"] = counts.get(f"{s['kind']}_{status}", 0.0) + 1
            counts[f"{s['kind']}_seconds"] = counts.get(f"{s['kind']}_seconds", 0.0) + float(s["seconds"])
        run = reg.call("get_run", run_id)
        ts = int(run.info.start_time)
        reg.call("log_batch", run_id, metrics=[Metric(k, v, ts, 0) for k, v in sorted(counts.items())])
        with tempfile.TemporaryDirectory() as tmp:
            f = Path(tmp) / "stages.json"
            f.write_text(json.dumps(list(stages), indent=1))
            reg.call("log_artifact", run_id, str(f))
        if failed:
            reg.call("set_tag", run_id, "error", failed.splitlines()[0][:500] if failed else "")
        reg.call("set_terminated", run_id, RunStatus.to_string(RunStatus.FAILED if failed else RunStatus.FINISHED))
    except Exception:
        with contextlib.suppress(Exception):
            reg.call("set_terminated", run_id, RunStatus.to_string(RunStatus.FAILED))
        raise
