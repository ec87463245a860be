"""Every command in the README's "Using it" block, and its Python example, run as written on
a tiny model (``smollm2`` -> ``tiny:llama``, local executor) in a fresh home. A README
example that stops working fails here."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def readme_blocks(lang: str) -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Using it"):]
    return re.findall(rf"```{lang}\n(.*?)```", section, flags=re.DOTALL)


def readme_commands() -> list[str]:
    """``gnomon ...`` lines of the first bash block after "Using it", comments stripped."""
    lines = []
    for raw in readme_blocks("bash")[0].splitlines():
        if raw.strip().startswith("gnomon "):
            words = shlex.split(raw, comments=True)
            lines.append(shlex.join(words))
    return lines


def test_readme_lists_the_everyday_commands() -> None:
    cmds = readme_commands()
    verbs = {shlex.split(c)[1] for c in cmds}
    assert {"concepts", "collect", "sql", "fit", "catalog", "steer", "monitor", "evaluate", "orthogonalize",
            "export-gguf", "plot", "store"} <= verbs
    assert not any("list_norm" in c for c in cmds)  # not a DuckDB 2.0 function


def test_every_readme_command_runs(catalog_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    from jobs.cli import main

    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("GNOMON_EXECUTOR", "local")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    rows = [{"id": f"{k}-{lab}", "text": f"{word} is {lab}", "label": lab, "pair": str(k)}
            for k, word in enumerate(["tea", "rain", "snow", "jazz", "rust", "salt"]) for lab in ("yes", "no")]
    (work / "my.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (work / "my_neutral.txt").write_text("I think that\nThe answer is\n")
    steer_set = True
    for line in readme_commands():
        argv = shlex.split(line)[1:]
        argv = [a.replace("smollm2", "tiny:llama") for a in argv]
        if "@best-steer" in line and not steer_set:
            # a random tiny model moves no behavioural score: the fit said so and set no
            # best-steer (tested in test_selection.py); steer with best instead
            argv = [a.replace("@best-steer", "@best") for a in argv]
        rc = main(["--home", str(catalog_home), *argv])
        out = capsys.readouterr()
        assert rc == 0, f"README command failed: {line}\n{out.out[-2000:]}\n{out.err[-2000:]}"
        if argv[0] == "fit":
            steer_set = "@best-steer ->" in out.out
            assert "sentiment@best-monitor ->" in out.out, out.out
            assert steer_set or "no best-steer:" in out.out
        if argv[0] == "sql":
            assert "mean_norm" in out.out
        if argv[0] == "concepts" and argv[1] == "add":
            assert "positive label: 'yes'" in out.out
    assert (work / "edited-model" / "config.json").is_file()
    assert (work / "sentiment.gguf").is_file()
    assert (work / "sentiment-report" / "index.html").is_file()


def test_readme_python_example_runs(catalog_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The Python block, after a small fit it needs (sentiment@best on the tiny model)."""
    from jobs.runtime.engine import LocalExecutor
    from jobs.stages.fit_job import FitSpec, run_fit

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    out = run_fit(FitSpec(model="tiny:llama", dataset="sentiment", layers=(1, 2, 3),
                          methods=("mean_diff", "logistic", "leace"), select_steer=False), LocalExecutor(), catalog_home)
    assert "best" in out["aliases"], out
    (code,) = readme_blocks("python")
    code = code.replace('print(generate(', 'printed = (generate(')
    scope: dict[str, object] = {}
    exec(compile(code, "README.md", "exec"), scope)  # noqa: S102 - the project's own README
    assert isinstance(scope["printed"], list) and len(scope["printed"]) == 1
