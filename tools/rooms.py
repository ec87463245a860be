"""Give ``jobs/`` rooms (issue 24, item 6): move each module per the table below with
``git mv`` and rewrite every reference to its old name across the repository.

Rooms: ``jobs/stages/`` (what a job does: collect, fit, evaluate, report, drift, evasion,
fleet, the shards and the catalog-facing references and conditions they share),
``jobs/runtime/`` (how it is scheduled: executors, Ray, the DAG and its specs, the
scheduler, the cluster client, stage results and progress output), ``jobs/cli/`` (the
``gnomon`` command line: ``jobs/cli/__init__.py`` is the old ``jobs/cli.py``, so
``jobs.cli:main`` and ``python -m jobs.cli`` keep their names, and ``commands/``). The
OpenAI-compatible server keeps its own room, ``jobs/serve/``; ``jobs/examples/`` stays.

Rewritten in every text file git knows or would add (tracked plus untracked, not
ignored), so files this table has never seen (another branch's new command, test or doc)
are covered too:

- dotted names ``jobs.<old>`` anywhere (``import jobs.x``, ``from jobs.x import``,
  ``"jobs.x.attr"`` patch targets, ``-m jobs.x``, ``"jobs.commands.fit"`` in tables),
- ``from jobs import a, b`` (split per room; a renamed module keeps its local name),
- paths ``jobs/<old>.py`` and ``jobs/commands/...``.

Deterministic and idempotent: no new name starts with an old one after ``jobs.`` (the
room names are not old module names, and ``jobs.cli`` keeps its name), so a second run
finds nothing to move and nothing to rewrite. It refuses to start when ``jobs/`` holds a
top-level module the table does not place (add it to the table first). Left out:
``bench/RESULTS.md`` (a record of past measurements, edited only with new figures) and
this file. Usage, from the repository root:  ``python tools/rooms.py``.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

STAGES = ("best_select", "collect_job", "collect_lock", "conditions", "drift_analysis", "drift_job",
          "drift_prereg", "drift_tasks", "evaluate_job", "evasion_build", "evasion_job", "evasion_report",
          "evasion_tasks", "fit_job", "fit_tasks", "fleet_common", "fleet_compare_job", "fleet_edited",
          "fleet_job", "fleet_report", "refs", "report_job", "report_request", "shards", "steer_select",
          "store_repair")
RUNTIME = ("cluster", "dag", "engine", "job_files", "output", "ray_executor", "ray_runtime", "results", "scheduler", "spec")

MOVES: dict[str, str] = {
    **{f"jobs/{m}.py": f"jobs/stages/{m}.py" for m in STAGES},
    **{f"jobs/{m}.py": f"jobs/runtime/{m}.py" for m in RUNTIME},
    "jobs/cli.py": "jobs/cli/__init__.py",
    "jobs/commands": "jobs/cli/commands",
    "jobs/jsonout.py": "jobs/cli/jsonout.py",
    "jobs/report.py": "jobs/cli/run_summary.py",
}
"""Old path -> new path (a directory moves with everything in it)."""

STAYS = {"jobs/__init__.py", "jobs/serve", "jobs/examples", "jobs/stages", "jobs/runtime", "jobs/cli"}
"""What may stay at the top of ``jobs/``."""

NEW_FILES: dict[str, str] = {
    "jobs/stages/__init__.py": '"""What a job does: collect, fit, evaluate, report, drift, evasion and fleet\n'
                               'stages, the per-shard work and the catalog references they share."""\n',
    "jobs/runtime/__init__.py": '"""How jobs are scheduled: the local and Ray executors, the DAG with resume and\n'
                                'its TOML specs, the stage scheduler, the cluster client, stage results and\n'
                                'progress output. Nothing here imports Ray until an executor needs it."""\n',
    "jobs/cli/__main__.py": '"""``python -m jobs.cli``: the same entry point as the ``gnomon`` script."""\n\n'
                            'import sys\n\nfrom jobs.cli import main\n\nsys.exit(main())\n',
}

SKIP = {"tools/rooms.py", "bench/RESULTS.md"}


def _module(path: str) -> str:
    return path.removesuffix(".py").removesuffix("/__init__").replace("/", ".")


# "jobs.<segment>" -> new dotted name, for every old name that changes
DOTTED: dict[str, str] = {_module(o).split(".", 1)[1]: _module(n) for o, n in MOVES.items()
                          if _module(o) != _module(n)}
# "jobs/<segment>.py" or "jobs/<dir>" -> new path
PATHS: dict[str, str] = {o.split("/", 1)[1]: n for o, n in MOVES.items()}

_DOTTED_RE = re.compile(r"(?<![\w.\-])jobs\.(" + "|".join(sorted(DOTTED, key=len, reverse=True)) + r")(?!\w)")
_PATH_RE = re.compile(r"(?<![\w.\-])jobs/(" + "|".join(re.escape(k) for k in sorted(PATHS, key=len, reverse=True))
                      + r")(?!\w)")
_FROM_JOBS_RE = re.compile(r"^([ \t]*)from jobs import (\([^)]*\)|[^\n]*)$", re.M)


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, check=True, capture_output=True, text=True).stdout


def _files(under: str = "") -> list[str]:
    out = _git("ls-files", "-co", "--exclude-standard", "-z", *([under] if under else []))
    return sorted({f for f in out.split("\0") if f and (ROOT / f).is_file()})


def _tracked(path: str) -> bool:
    return bool(_git("ls-files", path).strip())


def _unplaced() -> list[str]:
    top = {p.relative_to(ROOT).as_posix() for p in (ROOT / "jobs").iterdir()
           if p.name != "__pycache__" and (p.suffix == ".py" or p.is_dir())}
    return sorted(top - STAYS - set(MOVES))


def _move_file(old: str, new: str) -> None:
    (ROOT / new).parent.mkdir(parents=True, exist_ok=True)
    if (ROOT / new).exists():
        raise SystemExit(f"rooms: both {old} and {new} exist; merge them by hand, then run again")
    if _tracked(old):
        _git("mv", old, new)
    else:
        shutil.move(ROOT / old, ROOT / new)
    print(f"moved {old} -> {new}")


def move() -> None:
    for old, new in MOVES.items():
        src = ROOT / old
        if src.is_dir():
            for f in _files(old):
                _move_file(f, new + f[len(old):])
            shutil.rmtree(src)   # what is left is __pycache__ (it would make a namespace package)
        elif src.is_file():
            _move_file(old, new)
    for path, text in NEW_FILES.items():
        if not (ROOT / path).exists():
            (ROOT / path).write_text(text)
            _git("add", path)
            print(f"created {path}")


def _split_from_jobs(m: re.Match[str]) -> str:
    indent, body = m.group(1), m.group(2)
    comment = ""
    if "#" in body and not body.startswith("("):
        body, comment = body.split("#", 1)
        comment = "  #" + comment
    names = [n.strip() for n in body.strip().strip("()").replace("\n", " ").split(",") if n.strip()]
    groups: dict[str, list[str]] = {}
    for item in names:
        name, _, alias = item.partition(" as ")
        name, alias = name.strip(), alias.strip()
        new = DOTTED.get(name)
        if new is None:
            groups.setdefault("jobs", []).append(item)
            continue
        parent, leaf = new.rsplit(".", 1)
        local = alias or name
        groups.setdefault(parent, []).append(leaf if leaf == local else f"{leaf} as {local}")
    if list(groups) == ["jobs"]:
        return m.group(0)
    lines = [f"{indent}from {parent} import {', '.join(items)}" for parent, items in sorted(groups.items())]
    return "\n".join(lines) + comment


def rewrite(text: str) -> str:
    text = _FROM_JOBS_RE.sub(_split_from_jobs, text)
    text = _DOTTED_RE.sub(lambda m: DOTTED[m.group(1)], text)
    return _PATH_RE.sub(lambda m: PATHS[m.group(1)], text)


def rewrite_all() -> int:
    changed = 0
    for f in _files():
        if f in SKIP:
            continue
        try:
            text = (ROOT / f).read_text()
        except UnicodeDecodeError:
            continue
        new = rewrite(text)
        if new != text:
            (ROOT / f).write_text(new)
            changed += 1
            print(f"rewrote {f}")
    return changed


def main() -> int:
    unplaced = _unplaced()
    if unplaced:
        print(f"rooms: jobs/ holds {', '.join(unplaced)}, which the table does not place: "
              "add each to MOVES (or STAYS) in tools/rooms.py, then run again", file=sys.stderr)
        return 2
    move()
    n = rewrite_all()
    print(f"rooms: done ({n} files rewritten)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
