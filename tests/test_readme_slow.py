"""The README's "Using it" block as written, on the bundled SmolLM2, in a fresh home in which
``gnomon fleet build --tiny`` ran first (issue 20: the tiny fleet's fits moved ``sentiment@best``
to a random tiny model, after which the README's monitor, evaluate, orthogonalize and
export-gguf lines read, failed on or edited the wrong model). Minutes on CPU: marked slow."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from tests.test_readme import readme_commands

pytestmark = pytest.mark.slow


def test_readme_block_on_the_bundled_model_after_a_tiny_fleet(catalog_home: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    from jobs.cli import main

    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("GNOMON_EXECUTOR", "local")
    rows = [{"id": f"{k}-{lab}", "text": f"{word} is {lab}", "label": lab, "pair": str(k)}
            for k, word in enumerate(["tea", "rain", "snow", "jazz", "rust", "salt"]) for lab in ("yes", "no")]
    (work / "my.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (work / "my_neutral.txt").write_text("I think that\nThe answer is\n")
    assert main(["--home", str(catalog_home), "fleet", "build", "--tiny"]) == 0
    capsys.readouterr()
    steer_set = True
    for line in readme_commands():
        argv = shlex.split(line)[1:]
        if "@best-steer" in line and not steer_set:
            argv = [a.replace("@best-steer", "@best") for a in argv]   # the fit said why there is none
        rc = main(["--home", str(catalog_home), *argv])
        out = capsys.readouterr()
        assert rc == 0, f"README command failed: {line}\n{out.out[-2000:]}\n{out.err[-2000:]}"
        if argv[0] == "fit":
            steer_set = "@best-steer ->" in out.out
            assert "sentiment@best-monitor ->" in out.out and "for smollm2" in out.out, out.out
        if "@best" in line and argv[0] in ("steer", "monitor", "evaluate", "orthogonalize", "export-gguf"):
            said = [x for x in out.err.splitlines() if " -> sentiment/" in x]
            assert said and all("(model smollm2," in x for x in said), out.err[-2000:]
    assert (work / "edited-model" / "config.json").is_file()
    assert (work / "sentiment.gguf").is_file()
