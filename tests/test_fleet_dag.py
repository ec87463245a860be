"""The fleet DAG on 3 tiny model versions x 2 concepts, in-process and on a real local Ray:
every stage runs once, a rerun writes no shard file and registers no catalog version, and
editing one concept's dataset redoes that concept's stages only. The job's MLflow run
holds the stage summary the assertions read."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.conftest import write_dataset

MODELS = ("tiny:llama:2x16", "tiny:gpt2:2x16", "tiny:gpt_neox:2x16")


def _spec(tmp: Path, executor: str, mood: Path, tone: Path) -> Path:
    p = tmp / "fleet.toml"
    p.write_text(f'[job]\nname = "fleet-{executor}"\nmodels = {list(MODELS)!r}\nexecutor = "{executor}"\n'
                 f'[fit]\nconcepts = ["{mood}", "{tone}"]\nmethods = ["mean_diff", "lda"]\npositions = ["last"]\n'
                 "layers = [1, 2]\n".replace("'", '"'))
    return p


def _shards(home: Path) -> dict[str, int]:
    """Every shard file with its inode and mtime: a rewrite changes them."""
    return {str(p.relative_to(home)): p.stat().st_ino * 10**20 + p.stat().st_mtime_ns
            for p in (home / "activations").rglob("*.parquet")}


def _last_job_run(home: Path, job: str) -> dict[str, float]:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    exp = client.get_experiment_by_name(f"gnomon-jobs/{job}")
    runs = client.search_runs([exp.experiment_id], order_by=["attributes.start_time DESC"], max_results=1)
    assert runs[0].info.status == "FINISHED" and runs[0].data.tags["gnomon_kind"] == "job"
    return dict(runs[0].data.metrics)


@pytest.mark.parametrize("executor", ["local", "ray"])
def test_fleet_dag_runs_once_reruns_nothing_and_redoes_only_a_changed_concept(
        executor: str, catalog_home: Path, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    from catalog import Catalog
    from jobs.runtime.dag import run_job
    from jobs.runtime.spec import load_job

    if executor == "ray":
        request.getfixturevalue("ray_instance")
    mood = write_dataset(tmp_path / "mood.jsonl", n_pairs=20, labels=("mood_hi", "mood_lo"))
    tone = write_dataset(tmp_path / "tone.jsonl", n_pairs=20, labels=("tone_hi", "tone_lo"))
    spec = _spec(tmp_path, executor, mood, tone)
    job = f"fleet-{executor}"
    logs: list[str] = []

    def run() -> dict[str, Any]:
        logs.clear()
        return run_job(load_job(spec), home=catalog_home, show_progress=False, log=logs.append)

    out = run()
    assert sorted(out) == sorted(f"fit/{m}/main/{Path(c).stem}" for m in MODELS for c in (mood, tone))
    m = _last_job_run(catalog_home, job)
    assert (m["collect_ran"], m["fit_ran"], m["stages_skipped"]) == (6, 6, 0)
    first = _shards(catalog_home)
    assert len(first) == 3 * 2 * 2  # (model, concept, layer), one shard each
    cat = Catalog(home=catalog_home)
    versions = {c: len(cat.versions(c)) for c in ("mood", "tone")}
    assert versions == {"mood": 3 * 2, "tone": 3 * 2}  # best layer per (model, method)
    assert {r.model for r in cat.versions("tone")} == set(MODELS)

    run()  # nothing to do
    m = _last_job_run(catalog_home, job)
    assert (m["stages_ran"], m["collect_skipped"], m["fit_skipped"]) == (0, 6, 6)
    assert _shards(catalog_home) == first
    assert {c: len(cat.versions(c)) for c in ("mood", "tone")} == versions
    assert not any(line.startswith("[run ]") for line in logs)

    # edit one text of the tone dataset (same ids): only tone's shards and fits are redone
    text = tone.read_text().replace("is tone_hi number 3", "is tone_hi number three", 1)
    assert text != tone.read_text()
    tone.write_text(text)
    run()
    m = _last_job_run(catalog_home, job)
    assert (m["collect_ran"], m["collect_skipped"], m["fit_ran"], m["fit_skipped"]) == (3, 3, 3, 3)
    now = _shards(catalog_home)
    assert {k for k in now if now[k] != first.get(k)} == {k for k in first if "dataset=tone" in k}
    assert len(now) == len(first)
    after = {c: len(cat.versions(c)) for c in ("mood", "tone")}
    assert after["mood"] == versions["mood"] and after["tone"] > versions["tone"]  # only tone was refitted
    ran = [line.split()[2] for line in logs if line.startswith("[run ]")]
    assert sorted(ran) == sorted(f"fit/{m}/main/{Path(tone).stem}" for m in MODELS)
