"""Issue 11: bad input is a one-line `gnomon CMD: error:` with exit code 2, never a traceback."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from jobs.cli import main as cli
from pipeline.direction import Direction, Provenance
from pipeline.types import GnomonError


def _files(d: Path) -> dict[str, Path]:
    (d / "bin.jsonl").write_bytes(bytes(range(256)) * 4)
    (d / "latin.csv").write_bytes("id,text,label\n1,caf\xe9,a\n2,b,b\n".encode("latin-1"))
    (d / "empty.parquet").write_bytes(b"")
    (d / "garbage.parquet").write_bytes(b"PAR1" + bytes(range(100)) + b"PAR1")
    (d / "nested.jsonl").write_text('{"id": "1", "text": ' + "[" * 100000 + "]" * 100000 + ', "label": "a"}\n')
    (d / "dup.csv").write_text("id,text,label,label\n1,a,x,y\n2,b,y,x\n3,c,x,y\n4,d,y,x\n")
    (d / "g.gguf").write_bytes(b"GGUF" + bytes(range(200)))
    (d / "afile").write_text("x")
    rows = [{"id": f"{lab}{i}", "text": f"text {i} {lab}", "label": lab, "pair": f"p{i}"} for i in range(6) for lab in "ab"]
    (d / "ok.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return {p.stem: p for p in d.iterdir()}


COLLECT = ["collect", "--executor", "local", "--model", "tiny:llama", "--dataset"]


@pytest.mark.parametrize("argv, message", [
    (COLLECT + ["{bin}"], "not UTF-8"),
    (COLLECT + ["{latin}"], "not UTF-8"),
    (COLLECT + ["{empty}"], "cannot read it as PARQUET"),
    (COLLECT + ["{garbage}"], "cannot read it as PARQUET"),
    (COLLECT + ["{nested}"], "nested too deeply"),
    (COLLECT + ["{dup}"], "appear more than once"),
    (["--home", "{afile}"] + COLLECT + ["{ok}"], "not a directory"),
    (["sql", "--memory-limit", "bogus", "SELECT 1"], "memory_limit"),
    (["fit", "--executor", "local", "--model", "tiny:llama", "--dataset", "{ok}", "--methods", ",", "--register", "none"],
     "no fitting method"),
    (["collect", "--executor", "local", "--model", "tiny:llama:2x33", "--dataset", "{ok}"], "bad tiny model spec"),
    (["collect", "--executor", "local", "--model", "{g}", "--dataset", "{ok}"], "not a GGUF model"),
    (COLLECT + ["{ok}", "--layers", "3-1"], "runs backwards"),
])
def test_bad_input_is_one_line(home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                               argv: list[str], message: str) -> None:
    files = _files(tmp_path)
    rc = cli([a.format(**files) for a in argv])
    err = capsys.readouterr().err
    assert rc == 2, err
    lines = [x for x in err.splitlines() if not x.startswith("collect ")]  # a progress bar may precede it
    assert len(lines) == 1 and lines[0].startswith("gnomon ") and ": error: " in lines[0] and message in lines[0]


def test_read_only_home_is_one_line(tmp_path: Path, small_dataset: Path, capsys: pytest.CaptureFixture[str],
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    if os.geteuid() == 0:
        pytest.skip("root ignores permissions")
    home = tmp_path / "ro"
    home.mkdir()
    home.chmod(0o500)
    monkeypatch.setenv("GNOMON_HOME", str(home))
    try:
        rc = cli(COLLECT + [str(small_dataset)])
    finally:
        home.chmod(0o700)
    err = capsys.readouterr().err
    assert rc == 2 and "Permission denied" in err and "Traceback" not in err


def _direction(lm: object) -> Direction:
    prov = Provenance.minimal(hidden_size=32, layer=1, concept="toy", positive="a", negative="b")
    return Direction(vector=torch.ones(32), provenance=prov, pos_mean=1.0, neg_mean=-1.0, spread=0.5,
                     resid_norm=3.0)


@pytest.mark.parametrize("strength", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_strength_is_refused(tiny_lm: object, strength: float) -> None:
    from pipeline.gguf_io import steering_vectors
    from pipeline.steer import add

    d = _direction(tiny_lm)
    with pytest.raises(GnomonError, match="finite"):
        add(tiny_lm, d, strength, force=True)
    with pytest.raises(GnomonError, match="finite"):
        steering_vectors([d], strength=strength)


@pytest.mark.parametrize("threshold", [float("nan"), 0.0, 1.0, 1.5, -0.1])
def test_threshold_must_be_a_probability(tiny_lm: object, threshold: float) -> None:
    from pipeline.monitor import monitor

    with pytest.raises(GnomonError, match="between 0 and 1"):
        monitor(tiny_lm, [_direction(tiny_lm)], ["hello"], threshold=threshold, force=True)
