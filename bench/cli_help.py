"""How fast ``gnomon --help`` and every subcommand's ``--help`` answer (issue target: < 1 s).

Each is a fresh process (``python -m jobs.cli <cmd> --help``, the same import path as the
``gnomon`` script), run ``--repeat`` times; the median wall time is printed per command
and the slowest median is the last line, ``cli_help_max_s = <seconds>``. The import-side
guarantee (no torch/ray/mlflow at ``--help``) is a test: ``tests/test_cli_help.py``.

Run: ``python bench/cli_help.py [--repeat 5]`` on a quiet machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    from jobs.cli import COMMANDS

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs; python {sys.version.split()[0]}")
    medians = {}
    for argv in [["--help"]] + [[c, "--help"] for c in COMMANDS]:
        times = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "jobs.cli", *argv], cwd=ROOT, env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
            times.append(time.perf_counter() - t0)
        name = " ".join(argv)
        medians[name] = statistics.median(times)
        print(f"  gnomon {name:<24} {medians[name]:.3f} s")
    print(f"load average after {os.getloadavg()[0]:.2f}")
    print(f"cli_help_max_s = {max(medians.values()):.3f}")


if __name__ == "__main__":
    main()
