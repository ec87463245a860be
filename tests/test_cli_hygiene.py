"""The CLI a new user meets: help and defaults for every option, --version, no colour or
banners in piped output, the home found the same way from any directory."""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from jobs.cli import COMMANDS, build_parser

ROOT = Path(__file__).resolve().parents[1]
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _subparsers(p: argparse.ArgumentParser, path: str) -> list[tuple[str, argparse.ArgumentParser]]:
    out = [(path, p)]
    for a in p._actions:
        if isinstance(a, argparse._SubParsersAction):
            for name, sp in a.choices.items():
                out += _subparsers(sp, f"{path} {name}")
    return out


def _all_parsers() -> list[tuple[str, argparse.ArgumentParser]]:
    out = []
    for name in COMMANDS:
        parser = build_parser([name])
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        out += _subparsers(sub.choices[name], name)
    return out


@pytest.mark.parametrize("path,parser", _all_parsers(), ids=lambda x: x if isinstance(x, str) else "")
def test_every_option_has_help_and_says_its_default(path: str, parser: argparse.ArgumentParser) -> None:
    for a in parser._actions:
        if isinstance(a, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        name = "/".join(a.option_strings) or a.dest
        assert a.help, f"gnomon {path}: {name} has no help text"
        if a.option_strings and a.default not in (None, False, argparse.SUPPRESS) and a.nargs != 0:
            assert "default" in a.help.lower(), f"gnomon {path}: {name} does not say its default ({a.default!r})"


def test_version_flag(capsys: pytest.CaptureFixture[str]) -> None:
    from jobs.cli import main

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert re.match(r"gnomon \d+\.\d+", capsys.readouterr().out)


def test_home_is_found_the_same_way_from_any_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.home import gnomon_home

    monkeypatch.delenv("GNOMON_HOME", raising=False)
    (tmp_path / "proj" / "gnomon-home").mkdir(parents=True)
    (tmp_path / "proj" / "sub" / "deeper").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "proj" / "sub" / "deeper")
    assert gnomon_home() == (tmp_path / "proj" / "gnomon-home").resolve()  # found upwards
    monkeypatch.chdir(tmp_path / "proj")
    assert gnomon_home() == (tmp_path / "proj" / "gnomon-home").resolve()
    monkeypatch.setenv("GNOMON_HOME", str(tmp_path / "elsewhere"))
    assert gnomon_home() == (tmp_path / "elsewhere").resolve()  # the variable wins


def test_piped_output_has_no_ansi_banner_or_emoji(catalog_home: Path, tmp_path: Path) -> None:
    """A real (local-executor) fit through the CLI with stdout and stderr piped."""
    from tests.conftest import write_dataset

    data = write_dataset(tmp_path / "toy.jsonl", n_pairs=20)
    env = {**os.environ, "GNOMON_HOME": str(catalog_home), "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    env.pop("FORCE_COLOR", None)
    out = subprocess.run([sys.executable, "-m", "jobs.cli", "fit", "--model", "tiny:llama", "--dataset", str(data),
                          "--methods", "mean_diff,pca", "--layers", "1,2", "--executor", "local"],
                         capture_output=True, text=True, timeout=600, cwd=tmp_path, env=env, check=False)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text
    assert not ANSI.search(text), "ANSI escape codes in piped output"
    assert "RuntimeWarning" not in text and "INFO mlflow" not in text and "Started a local Ray" not in text
    assert not re.search(r"[\U0001F300-\U0001FAFF\u2600-\u27BF]", text), "emoji in output"
    assert max(len(line) for line in text.splitlines()) < 400, "a progress bar piled up into one line"
