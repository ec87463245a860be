"""``gnomon --help`` and every subcommand's ``--help`` answer without importing the heavy
libraries (torch, transformers, ray, mlflow): importing those is what makes a CLI slow.

Checked in a fresh interpreter (pytest's own process has imported them already), one
command after another, by looking at ``sys.modules`` after each; no timing assertion.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from jobs.cli import COMMANDS

HEAVY = ("torch", "transformers", "ray", "mlflow", "duckdb", "pyarrow", "sklearn")
ROOT = Path(__file__).resolve().parents[1]

PROBE = r"""
import contextlib, io, json, sys
from jobs.cli import COMMANDS, main
heavy = %r
out = {}
for argv in [["--help"]] + [[name, "--help"] for name in COMMANDS]:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        try:
            rc = main(argv)
        except SystemExit as e:
            rc = e.code
    out[" ".join(argv)] = {"rc": rc, "usage": buf.getvalue()[:200],
                           "heavy": sorted(m for m in heavy if m in sys.modules)}
print(json.dumps(out))
"""


def test_every_help_answers_without_heavy_imports() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", PROBE % (HEAVY,)], check=False, cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(res) == {"--help"} | {f"{name} --help" for name in COMMANDS}
    for argv, r in res.items():
        assert r["rc"] in (0, None), (argv, r)
        prog = "gnomon" if argv == "--help" else f"gnomon {argv.split()[0]}"
        assert r["usage"].startswith(f"usage: {prog}"), (argv, r["usage"])
    offenders = {argv: r["heavy"] for argv, r in res.items() if r["heavy"]}
    assert not offenders, f"--help imported heavy modules: {offenders}"


def test_new_cluster_commands_are_listed() -> None:
    assert {"submit", "status", "logs"} <= set(COMMANDS)
