"""The share of import statements that sit inside functions, per package (issue 24).

Counts ``import``/``from ... import`` statements (``from __future__`` left out) in every
module of pipeline/, catalog/ and jobs/ (and each room of jobs/), and how many of them are
inside a function body. Usage: ``python tools/import_share.py``.
"""

from __future__ import annotations

import ast
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def counts(path: Path) -> tuple[int, int]:
    """(imports, imports inside a function) in one module."""
    total = inside = 0

    def walk(node: ast.AST, in_function: bool) -> None:
        nonlocal total, inside
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                if isinstance(child, ast.ImportFrom) and child.module == "__future__":
                    continue
                total += 1
                inside += in_function
            walk(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

    walk(ast.parse(path.read_text()), False)
    return total, inside


def main() -> int:
    total: Counter[str] = Counter()
    inside: Counter[str] = Counter()
    for pkg in ("pipeline", "catalog", "jobs"):
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = path.relative_to(ROOT).parts
            keys = [pkg, "all"] + (["/".join(parts[:2])] if pkg == "jobs" and len(parts) > 2 else [])
            t, i = counts(path)
            for k in keys:
                total[k] += t
                inside[k] += i
    for k in sorted(total, key=lambda k: (k == "all", k)):
        print(f"{k:<14} {inside[k]:>5} / {total[k]:<5} inside functions ({100 * inside[k] / max(total[k], 1):.0f}%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
