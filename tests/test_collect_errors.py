"""Bad input to ``gnomon collect`` gives one clear line and writes nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from jobs.cli import main


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    rc = main(["collect", *args, "--executor", "local", "--json"])
    err = capsys.readouterr().err.strip().splitlines()
    return rc, err[-1] if err else ""


def _jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.mark.parametrize("case,expect", [
    ("unknown_model", "unknown model '/no/such/model'"),
    ("bad_layer", "layer 9 is out of range for tiny:llama: valid layers are 0..4"),
    ("missing_column", "missing column 'text'"),
    ("duplicate_id", "duplicate id 'a'"),
    ("empty", "dataset is empty"),
    ("bad_position", "unknown position first"),
])
def test_bad_input_one_clear_line(case: str, expect: str, home: Path, tmp_path: Path, small_dataset: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    model, dataset, extra = "tiny:llama", str(small_dataset), []
    if case == "unknown_model":
        model = "/no/such/model"
    elif case == "bad_layer":
        extra = ["--layers", "2,9"]
    elif case == "missing_column":
        dataset = _jsonl(tmp_path / "m.jsonl", [{"id": "a", "label": "p"}, {"id": "b", "label": "n"}])
    elif case == "duplicate_id":
        dataset = _jsonl(tmp_path / "d.jsonl", [{"id": "a", "text": "x", "label": "p"},
                                                {"id": "a", "text": "y", "label": "n"}])
    elif case == "empty":
        (tmp_path / "e.jsonl").write_text("")
        dataset = str(tmp_path / "e.jsonl")
    elif case == "bad_position":
        extra = ["--positions", "last,first"]
    rc, line = _run(capsys, "--model", model, "--dataset", dataset, *extra)
    assert rc == 2
    assert line.startswith("gnomon collect: error:") and expect in line
    assert not (home / "activations").exists()  # nothing written
