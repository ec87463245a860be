"""`gnomon compare CONCEPT --fleet` over a tiny fleet: matrices, emergence, CKA, report, MLflow."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from jobs.cli import main
from jobs.runtime.engine import LocalExecutor
from jobs.stages.fleet_compare_job import FleetCompareSpec, run_fleet_compare
from tests.fleet_tiny import build_tiny_fleet, register_small_sentiment


def test_compare_over_a_tiny_fleet(catalog_home: Path) -> None:
    from catalog.fleet_runs import search_fleet_runs

    build_tiny_fleet(catalog_home, scratch=True, bert=True)
    register_small_sentiment(catalog_home)
    out = run_fleet_compare(FleetCompareSpec("senti", "tiny", position="last"), LocalExecutor(), catalog_home,
                            log=lambda m: None)
    groups = {g["width"]: g for g in out["groups"]}
    assert sorted(groups) == [16, 24, 32]
    g = groups[32]
    assert g["versions"] == ["t-base", "t-copy", "t-edit"] and g["layers"] == [1, 2]
    assert g["degenerate_layers"] == [0]   # every text ends in the same character: nothing at layer 0
    for layer in g["layers"]:
        c = np.array(g["cosine"][layer])
        np.testing.assert_array_equal(c, c.T)
        np.testing.assert_array_equal(np.diag(c), 1.0)
        assert c[0, 1] == pytest.approx(1.0, abs=1e-9)       # identical weights, identical direction
        acc = np.array(g["transfer"][layer]["accuracy"])
        assert acc[0, 1] == acc[0, 0] == acc[1, 1]           # identical checkpoints: transfer = self-accuracy
    assert g["min_cosine"][g["layers"].index(g["best_layer"])] < 1.0   # the edited version moved
    e = out["emergence"]["scratch"]
    assert e["steps"] == [1, 10, 100] and len(e["accuracy"]) == 3 and all(0 <= a <= 1 for a in e["accuracy"])
    (cw,) = out["cross_width"]
    assert {cw["model_a"], cw["model_b"]} == {"t-base", "t-bert"}
    cka = np.array(cw["cka"])
    assert cka.shape == (3, 3)
    fin = cka[1:, 1:]   # layer 0 of the char-level llama is constant at the last token: CKA undefined
    assert np.all((fin > 0) & (fin <= 1 + 1e-9))
    assert [r["layer_a"] for r in cw["correspondence"]] == [1, 2] if cw["model_a"] == "t-base" else True
    html = Path(out["html"]).read_text()
    assert html.count("<img") >= 6 and "t-edit" in html
    runs = search_fleet_runs("compare", concept="senti", fleet="tiny", home=catalog_home)
    assert len(runs) == 1 and runs[0].metrics["w32.best_layer"] == g["best_layer"]
    # Second run: nothing to collect (activations reused), same matrices.
    again = run_fleet_compare(FleetCompareSpec("senti", "tiny", position="last", log=False, figures=False),
                              LocalExecutor(), catalog_home,
                              log=lambda m: pytest.fail(f"collected again: {m}"))
    assert again["groups"][0]["cosine"] == out["groups"][0]["cosine"]


def test_compare_cli_errors(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compare", "sentiment", "truth", "--fleet", "tiny"]) == 2
    assert "different concepts" in capsys.readouterr().err
    assert main(["compare", "sentiment", "--fleet", "../x"]) == 2
    assert "fleet name" in capsys.readouterr().err
    assert main(["compare", "sentiment", "--fleet", "nosuch"]) == 2
    assert "unknown fleet" in capsys.readouterr().err


def test_compare_refuses_directions_of_different_concepts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    from pipeline.direction import Direction, Provenance

    for name, concept in (("a", "sentiment"), ("b", "truth")):
        Direction(torch.tensor([1.0, 0.0]), Provenance.minimal(hidden_size=2, layer=1, concept=concept),
                  pos_mean=1.0, neg_mean=-1.0).save(tmp_path / f"{name}.safetensors")
    assert main(["compare", str(tmp_path / "a.safetensors"), str(tmp_path / "b.safetensors")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "different concepts (sentiment, truth)" in err


def test_compare_json_cli(catalog_home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    build_tiny_fleet(catalog_home)
    register_small_sentiment(catalog_home, 24)
    assert main(["compare", "senti", "--fleet", "tiny", "--executor", "local", "--layers", "1,2",
                 "--json", "--no-figures", "--no-log"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["groups"][0]["layers"] == [1, 2] and out["html"] is None
    assert Path(out["report_dir"], "compare.json").is_file()
