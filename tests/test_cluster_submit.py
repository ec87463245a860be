"""``gnomon submit/status/logs`` without a cluster: address resolution, the job's
environment and working folder, and one-line errors for bad input or no Jobs API.
(The real submission to a started head is in ``tests/test_fleet_cluster.py``.)"""

from __future__ import annotations

import socket
import tomllib
from pathlib import Path

import pytest

from jobs.runtime import cluster
from jobs.cli import main
from pipeline.types import GnomonError

SPEC = '[job]\nname = "fleet"\nmodels = ["tiny:llama"]\n\n[fit]\nconcepts = ["sentiment"]\nmethods = ["mean_diff"]\n'


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again when the block ends


def test_explicit_address_wins_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAY_API_SERVER_ADDRESS", raising=False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert cluster.resolve_address(None) == cluster.DEFAULT_ADDRESS
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    assert cluster.resolve_address(None) == "10.0.0.1:6379"
    monkeypatch.setenv("RAY_API_SERVER_ADDRESS", "http://head:8265")
    assert cluster.resolve_address(None) == "http://head:8265"
    assert cluster.resolve_address("http://other:8265") == "http://other:8265"


def test_job_env_forwards_home_and_tracking_and_checks_items() -> None:
    env = cluster.job_env(["A_B=1=2", "EMPTY="], tracking_uri="http://m:5000",
                          environ={"GNOMON_HOME": "/store", "MLFLOW_TRACKING_URI": "sqlite:///x", "OTHER": "no"})
    assert env == {"GNOMON_HOME": "/store", "MLFLOW_TRACKING_URI": "http://m:5000", "A_B": "1=2", "EMPTY": ""}
    # a home on object storage is a URI, not a path to make absolute
    assert cluster.job_env([], environ={"GNOMON_HOME": "s3://gnomon/home"})["GNOMON_HOME"] == "s3://gnomon/home"
    assert cluster.job_env([], environ={}) == {}
    assert cluster.job_env([], environ={"GNOMON_HOME": "rel/home"})["GNOMON_HOME"] == str(Path("rel/home").absolute())
    for bad in ("NOEQUALS", "=x", "1A=x", "A-B=x"):
        with pytest.raises(GnomonError, match="KEY=VALUE"):
            cluster.job_env([bad], environ={})


def test_build_job_ships_only_the_checked_spec(tmp_path: Path) -> None:
    spec = tmp_path / "my fleet.toml"
    spec.write_text(SPEC)
    work = tmp_path / "work"
    work.mkdir()
    entry, runtime = cluster.build_job(spec, work, {"GNOMON_HOME": "/store"}, executor="local")
    assert entry == "gnomon run 'my fleet.toml' --executor local"
    assert runtime == {"working_dir": str(work), "env_vars": {"GNOMON_HOME": "/store"}}
    assert [p.name for p in work.iterdir()] == ["my fleet.toml"]
    assert tomllib.loads((work / "my fleet.toml").read_text())["job"]["name"] == "fleet"
    bad = tmp_path / "bad.toml"
    bad.write_text('[job]\nname = "x"\n')
    with pytest.raises(GnomonError, match="needs name and models"):
        cluster.build_job(bad, work, {})


def test_build_job_ships_the_concept_files_the_spec_names(tmp_path: Path) -> None:
    """The driver runs on the head, which may not see this disk: every concept file the
    spec names (relative to it or absolute) travels in the job's folder and the shipped spec
    points at the copy; a concept that is a shipped name (no file) stays as it is."""
    from jobs.runtime.spec import load_job

    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "mood.jsonl").write_text('{"text": "a", "label": "x"}\n')
    (tmp_path / "tone.jsonl").write_text('{"text": "b", "label": "y"}\n')
    spec = tmp_path / "fleet.toml"
    spec.write_text(SPEC.replace('concepts = ["sentiment"]',
                                 f'concepts = ["sentiment", "data/mood.jsonl", "{tmp_path / "tone.jsonl"}"]'))
    work = tmp_path / "work"
    work.mkdir()
    cluster.build_job(spec, work, {})
    shipped = load_job(work / "fleet.toml").fit.concepts
    assert shipped[0] == "sentiment" and all(not Path(c).is_absolute() for c in shipped)
    assert sorted(Path(c).stem for c in shipped[1:]) == ["mood", "tone"]    # the stem names the concept
    assert sorted((work / c).read_text() for c in shipped[1:]) == sorted(
        [(tmp_path / "data" / "mood.jsonl").read_text(), (tmp_path / "tone.jsonl").read_text()])


def test_cli_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[job]\nname = \"x\"\nmodels = [\"tiny:llama\"]\n[fit]\nmethods = [\"nope\"]\n")
    addr = f"http://127.0.0.1:{_closed_port()}"
    assert main(["submit", str(bad), "--address", addr]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("gnomon submit: error:") and "nope" in err[-1]
    spec = tmp_path / "ok.toml"
    spec.write_text(SPEC)
    for argv in (["submit", str(spec), "--address", addr, "--env", "GNOMON_HOME=/x"],
                 ["status", "gnomon-x", "--address", addr], ["logs", "gnomon-x", "--address", addr]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith(f"gnomon {argv[0]}: error: no Ray Jobs API at {addr}"), err


def test_a_tracking_server_that_is_down_refuses_the_submission(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    """Checked before the Jobs API is asked (the address here answers nothing either: the
    tracking server's line comes first, so the job was never sent)."""
    spec = tmp_path / "ok.toml"
    spec.write_text(SPEC)
    tracking = f"http://127.0.0.1:{_closed_port()}"
    addr = f"http://127.0.0.1:{_closed_port()}"
    assert main(["submit", str(spec), "--address", addr, "--tracking-uri", tracking, "--env", "GNOMON_HOME=/x"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"gnomon submit: error: the tracking server at {tracking} is not "
                                               "answering"), err
    assert "nothing was submitted" in err[0]
