"""Progress where work is long (issue 28): with output piped, every long step prints a
``[start]`` line and an ``[end] ... in <elapsed>`` line, and each line reaches the pipe when
it is printed (Python block-buffers a piped stdout: ``gnomon demo | tee log`` once showed
one line for an hour). The commands run as a user runs them, as subprocesses with their
output piped, on a tiny model."""

from __future__ import annotations

import os
import re
import select
import subprocess
import sys
from pathlib import Path

import pytest

from jobs.runtime.output import step

ROOT = Path(__file__).resolve().parents[1]

JOB = """
[job]
name = "progress"
models = ["tiny:llama"]
executor = "local"

[fit]
concepts = ["sentiment"]
methods = ["mean_diff", "lda"]
positions = ["last"]
layers = [1, 2]

[[evaluate]]
concept = "sentiment"
method = "mean_diff"
strengths = [-2, 0, 2]
n_prompts = 2
max_new_tokens = 4
probe = false

[[report]]
concepts = ["sentiment"]
layers = [1, 2]
compose = false
n_prompts = 2
max_new_tokens = 4
"""


def env(home: Path) -> dict[str, str]:
    return {**os.environ, "GNOMON_HOME": str(home), "PYTHONPATH": str(ROOT), "GNOMON_DEBUG": "1"}


def gnomon(home: Path, *args: str) -> str:
    """Run ``gnomon ARGS`` with stdout and stderr piped into one stream; its text."""
    out = subprocess.run([sys.executable, "-m", "jobs.cli", *args], cwd=home.parent, env=env(home),
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:]
    return out.stdout


def steps(text: str) -> dict[str, tuple[int, int | None]]:
    """``{what: (line of [start], line of its [end] or None)}``."""
    lines = text.splitlines()
    found: dict[str, tuple[int, int | None]] = {}
    for i, line in enumerate(lines):
        m = re.match(r"\[start\] (.*?)(?: \([\d,]+ \w+\))?$", line)
        if m:
            found[m.group(1)] = (i, None)
        m = re.match(r"\[end\] (.*?) in \d+(\.\d)?s|\[end\] (.*?) in \d+m\d\ds", line)
        if m:
            what = m.group(1) or m.group(3)
            assert what in found, f"[end] without [start]: {line}"
            found[what] = (found[what][0], i)
    return found


def test_step_prints_start_end_and_failure() -> None:
    lines: list[str] = []
    with step("load x", emit=lines.append, bar=False):
        pass
    with step("collect y", emit=lines.append, bar=False, total=3, unit="ex") as s:
        s.update(3)
        s.note("3 examples")
    with pytest.raises(ValueError), step("fit z", emit=lines.append, bar=False):
        raise ValueError("boom")
    assert lines[0] == "[start] load x" and re.fullmatch(r"\[end\] load x in \d+\.\ds", lines[1])
    assert lines[2] == "[start] collect y (3 ex)" and lines[3].endswith(": 3 examples")
    assert lines[4] == "[start] fit z" and lines[5].startswith("[failed] fit z after ")


def test_a_piped_line_arrives_when_it_is_printed(tmp_path: Path) -> None:
    """The child prints one line, then waits for input: the line must be readable before the
    child exits (with block buffering it would sit in the child's buffer until then)."""
    code = ("import sys; from jobs.runtime.output import line_buffered; line_buffered(); "
            "print('[start] long step'); sys.stdin.read()")
    p = subprocess.Popen([sys.executable, "-c", code], env=env(tmp_path / "h"), stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)
    try:
        ready, _, _ = select.select([p.stdout], [], [], 120)
        assert ready and p.stdout is not None and p.stdout.readline() == "[start] long step\n"
        assert p.poll() is None                                  # still running: the line came first
    finally:
        p.communicate("", timeout=60)


def test_long_commands_print_start_and_end_when_piped(catalog_home: Path) -> None:
    spec = catalog_home.parent / "progress.toml"
    spec.write_text(JOB)
    text = gnomon(catalog_home, "run", str(spec))
    found = steps(text)
    want = ["collect sentiment on tiny:llama", "fit sentiment on tiny:llama: mean_diff, lda",
            "best-steer for sentiment on tiny:llama (measures the top candidates)",
            "sentiment probes, erasure and method agreement at 2 layers", "load tiny:llama"]
    for what in want:
        assert what in found and found[what][1] is not None, (what, text[-3000:])
    control = [w for w in found if w.startswith("sentiment control at layer")]
    assert control and all(found[w][1] is not None for w in control), text[-3000:]
    assert re.search(r"^\[done\] evaluate/sentiment/0 in ", text, re.M)   # the DAG's own stage lines
    assert "\x1b[" not in text and "\r" not in text                      # no colour, no bar redraws
    # steer: the model load, the fluency bound and the generation, each with start and end
    text = gnomon(catalog_home, "steer", "sentiment@best", "--model", "tiny:llama", "--max-new-tokens", "4",
                  "I went to the market and")
    found = steps(text)
    assert {"load tiny:llama", "fluency bound (next-token KL on a strength grid)",
            "generate 4 tokens, unsteered and steered"} <= {w for w, (_s, e) in found.items() if e is not None}, text
