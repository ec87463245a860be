"""`gnomon evaluate REF --fleet`: one Ray task per version, results found by a catalog query."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from jobs.cli import main
from jobs.runtime.engine import LocalExecutor
from jobs.runtime.ray_executor import RayExecutor
from tests.fleet_tiny import build_tiny_fleet, register_small_sentiment


def _direction(home: Path) -> Path:
    """A sentiment mean-difference direction of t-base at layer 1, fitted from its stored rows."""
    from jobs.stages.fleet_common import ensure_collected
    from pipeline.direction import Provenance
    from pipeline.fit import fit_direction
    from pipeline.fleet_compare import read_layer_data

    ensure_collected(["t-base"], "senti", home, LocalExecutor(), log=lambda m: None)
    d = read_layer_data(home, "t-base", "senti", 1, "positive", "negative")
    from pipeline.fleet.registry import read_lineage

    base = Provenance.minimal(hidden_size=32, layer=1, model_id="t-base", concept="sentiment", dataset="senti",
                              fingerprint=read_lineage("t-base", home).fingerprint,
                              positive="positive", negative="negative", method="mean_diff", position="last")
    direction = fit_direction("mean_diff", *d.part("train"), base=base)
    return direction.save(home / "senti-L1.safetensors")


def test_evaluate_over_a_fleet_as_ray_tasks_then_catalog_query(catalog_home: Path, ray_instance: object,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    from catalog.fleet_runs import search_fleet_runs
    from jobs.stages.evaluate_job import EvalSpec, run_evaluation

    build_tiny_fleet(catalog_home, bert=True)
    register_small_sentiment(catalog_home, 24)
    path = _direction(catalog_home)
    spec = EvalSpec(ref=str(path), fleet="tiny", strengths=(-2.0, 0.0, 2.0), n_prompts=3, max_new_tokens=4,
                    n_probe=16)
    out = run_evaluation(spec, RayExecutor(), catalog_home)
    assert out["executor"] == "ray"
    by = {c["model"]: c for c in out["checkpoints"]}
    assert set(by) == {"t-base", "t-copy", "t-edit", "t-bert"}
    assert by["t-bert"]["skipped"] and "hidden size 16" in by["t-bert"]["skipped"]
    assert by["t-base"]["same_weights"] and by["t-copy"]["same_weights"] and not by["t-edit"]["same_weights"]
    # Identical weights, identical measurements (deterministic greedy decoding).
    np.testing.assert_equal(by["t-base"]["metrics"], by["t-copy"]["metrics"])   # NaN-aware equality
    m = by["t-edit"]["metrics"]
    assert "steer_slope" in m and "steer_r2" in m   # VADER on a random model's text may be constant
    for key in ("logodds_slope", "logodds_r2", "side_effect_kl", "perplexity", "perplexity_steered",
                "monitor_auroc", "probe_accuracy_after"):
        assert key in m and math.isfinite(m[key]), key
    assert m["side_effect_kl"] > 0 and m["perplexity"] > 1
    runs = search_fleet_runs("eval", concept="sentiment", fleet="tiny", home=catalog_home)
    assert sorted(r.version for r in runs) == ["t-base", "t-copy", "t-edit"]
    run = next(r for r in runs if r.version == "t-edit")
    assert run.metrics["logodds_slope"] == pytest.approx(m["logodds_slope"])
    assert run.tags["direction"] == "senti-L1.safetensors" and run.tags["fingerprint"] == by["t-edit"]["fingerprint"]
    assert search_fleet_runs("eval", concept="sentiment", fleet="other", home=catalog_home) == []
    # The same query from the CLI.
    assert main(["evals", "ls", "--concept", "sentiment", "--fleet", "tiny", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert {r["version"] for r in listed} == {"t-base", "t-copy", "t-edit"}
    assert all(r["metrics"]["monitor_auroc"] is not None for r in listed)
    assert main(["evals", "ls", "--concept", "sentiment", "--fleet", "tiny"]) == 0
    assert "t-edit" in capsys.readouterr().out


def test_evaluate_fleet_errors(catalog_home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    build_tiny_fleet(catalog_home)
    register_small_sentiment(catalog_home, 24)
    path = _direction(catalog_home)
    assert main(["evaluate", str(path), "--fleet", "nosuch", "--executor", "local"]) == 2
    assert "unknown fleet 'nosuch'" in capsys.readouterr().err
    assert main(["evaluate", str(path), "--fleet", "tiny", "--models", "t-base", "--executor", "local"]) == 2
    assert "not both" in capsys.readouterr().err
    assert main(["evals", "ls", "--fleet", "bad'name"]) == 2
    assert "fleet" in capsys.readouterr().err


def test_job_spec_evaluate_section_takes_a_fleet(tmp_path: Path) -> None:
    from jobs.runtime.spec import load_job

    p = tmp_path / "job.toml"
    p.write_text('[job]\nname = "f"\nmodels = ["smollm2"]\n\n[[evaluate]]\nconcept = "sentiment"\nfleet = "smollm2"\n')
    spec = load_job(p)
    assert spec.evaluate[0].fleet == "smollm2"


def test_a_rebuilt_version_is_collected_again(home: Path) -> None:
    """Stored rows of a version rebuilt under the same id (new weights, new fingerprint) are
    not the new version's: the fleet commands collect them again instead of reading them."""
    import shutil

    from jobs.stages.fleet_common import ensure_collected
    from pipeline.fleet_compare import read_layer_data
    from tests.fleet_tiny import add_version, perturbed

    build_tiny_fleet(home)
    register_small_sentiment(home)
    assert ensure_collected(["t-edit"], "senti", home, LocalExecutor(), log=lambda m: None) == ["t-edit"]
    assert ensure_collected(["t-edit"], "senti", home, LocalExecutor(), log=lambda m: None) == []   # complete
    before = read_layer_data(home, "t-edit", "senti", 1, "positive", "negative")
    shutil.rmtree(home / "models" / "t-edit")
    m, tok = perturbed("tiny:llama:2x32", 0.5, seed=7)
    add_version(home, "t-edit", m, tok, "edited", parent="t-base")
    assert ensure_collected(["t-edit"], "senti", home, LocalExecutor(), log=lambda m: None) == ["t-edit"]
    after = read_layer_data(home, "t-edit", "senti", 1, "positive", "negative")
    assert not np.allclose(before.x, after.x)


def test_read_out_only_evaluation_reports_no_steering_figures(catalog_home: Path) -> None:
    """``strengths = [0]`` (the demo's lie detector) asks only for the read-out: no sweep, no
    log-odds and no next-token KL at a "max strength" of 0, which would read 0.000 and look
    like a direction that moves nothing."""
    from jobs.stages.evaluate_job import EvalSpec, run_evaluation

    build_tiny_fleet(catalog_home)
    register_small_sentiment(catalog_home, 24)
    path = _direction(catalog_home)
    out = run_evaluation(EvalSpec(ref=str(path), models=("t-base",), strengths=(0.0,), n_prompts=3,
                                  max_new_tokens=4, n_probe=16), LocalExecutor(), catalog_home)
    m = out["checkpoints"][0]["metrics"]
    assert math.isfinite(m["monitor_auroc"]) and "probe_accuracy_after" in m
    assert not [k for k in m if k.startswith(("steer_", "logodds_", "perplexity")) or k == "side_effect_kl"]
