"""Imports at the top (issue 24, item 6): move each import made inside a function of
pipeline/, catalog/ or jobs/ to the top of its module, unless it has to stay lazy.

An import stays inside its function when hoisting it would

- make the module import something heavy it does not import already (``heavy``): every
  third-party module counts as heavy (torch, transformers, ray, mlflow, duckdb, pyarrow,
  numpy, matplotlib...), and so does a project module whose module-level imports pull one
  in, transitively. So no module's import-time cost changes: ``gnomon --help``,
  ``gnomon <cmd> --help`` and ``import catalog, jobs, pipeline`` import exactly what they
  imported before;
- bind a name tests replace at its source (``patched``: a ``monkeypatch.setattr`` or
  ``mock.patch`` target in tests/ or bench/ with that name, looked up at call time);
- clash with another binding of the name in the module or the function (``clash``);
- guard an optional dependency (``optional``: inside ``try``);
- or is listed in ``KEEP`` (an import cycle the static graph does not show).

Each module that keeps lazy imports gets one comment, at the end of its top import block,
saying which and why (``# lazy: torch (heavy; imported where used)``); hoisted imports join the top
block, which ``ruff --select I`` then sorts (files this tool changed, only). Deterministic
and idempotent: a second run changes nothing. Usage: ``python tools/hoist_imports.py``
(``--check`` reports without writing).
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("pipeline", "catalog", "jobs")
COMMENT = "# lazy: "
IMPLIES = {"transformers": {"torch", "numpy"}, "accelerate": {"torch"}, "sentence_transformers": {"torch"},
           "safetensors.torch": {"torch"}, "matplotlib": {"numpy"}, "pandas": {"numpy"}, "gguf": {"numpy"},
           "sklearn": {"numpy", "scipy"}, "scipy": {"numpy"}}
"""A third-party module that imports another heavy one (for the reason the comment gives)."""

GUARDS = ("ImportError", "ModuleNotFoundError", "Exception")
"""A ``try`` whose handler catches one of these guards the imports in its body."""

KEEP: dict[str, dict[str, str]] = {
    # Start-up of the everyday commands (`gnomon catalog ls/show`, `--help`): each of these costs
    # 10-30 ms of imports that only one path through the module needs (bench/everyday.py).
    "jobs.cli": {"importlib.metadata": "start-up; only --version reads it"},
    "jobs.cli.commands.args": {"jobs.runtime.engine": "start-up; only --executor reads it"},
    "jobs.cli.commands.catalog": {"jobs.stages.steer_select": "start-up; only select-steer loads a model"},
    "catalog.readers": {"catalog.rest": "start-up; urllib and ssl only for a tracking server"},
}
"""module -> {imported module: reason}: stays lazy whatever the rules say."""

REASONS = {"heavy": "heavy; imported where used", "patched": "tests patch it at the source", "clash": "name clash",
           "optional": "optional dependency"}


def _module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


@dataclass
class Module:
    name: str
    path: Path
    tree: ast.Module
    text: str
    is_package: bool
    top: list[ast.stmt] = field(default_factory=list)   # module-level import statements (import time)


def _load() -> dict[str, Module]:
    mods = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            text = path.read_text()
            m = Module(_module_name(path), path, ast.parse(text), text, path.name == "__init__.py")
            m.top = [n for n in _import_time_nodes(m.tree) if isinstance(n, (ast.Import, ast.ImportFrom))]
            mods[m.name] = m
    return mods


def _import_time_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node run when the module is imported: not function bodies, not TYPE_CHECKING."""
    out: list[ast.AST] = []
    stack = list(ast.iter_child_nodes(tree))
    while stack:
        n = stack.pop()
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        if isinstance(n, ast.If) and "TYPE_CHECKING" in ast.unparse(n.test):
            stack.extend(n.orelse)
            continue
        out.append(n)
        stack.extend(ast.iter_child_nodes(n))
    return out


def _absolute(mod: Module, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = mod.name.split(".")
    base = base[:len(base) - node.level + (1 if mod.is_package else 0)]
    return ".".join(base + ([node.module] if node.module else []))


def _type_checking_source(mods: dict[str, Module], pkg: str, name: str) -> str | None:
    """Where a package with a module ``__getattr__`` takes ``name`` from (its TYPE_CHECKING imports)."""
    for n in ast.walk(mods[pkg].tree):
        if isinstance(n, ast.If) and "TYPE_CHECKING" in ast.unparse(n.test):
            for s in ast.walk(n):
                if isinstance(s, ast.ImportFrom) and any((a.asname or a.name) == name for a in s.names):
                    return _absolute(mods[pkg], s)
    return None


def _has_getattr(mod: Module) -> bool:
    return any(isinstance(n, ast.FunctionDef) and n.name == "__getattr__" for n in mod.tree.body)


def _targets(mods: dict[str, Module], mod: Module, node: ast.Import | ast.ImportFrom) -> list[str]:
    """Modules an import statement imports (project modules with their parent packages)."""
    names: list[str] = []
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        base = _absolute(mod, node)
        names = [base]
        for a in node.names:
            if f"{base}.{a.name}" in mods:
                names.append(f"{base}.{a.name}")
            elif base in mods and _has_getattr(mods[base]):
                names.append(_type_checking_source(mods, base, a.name) or "<dynamic>")
    out = []
    for n in names:
        parts = n.split(".")
        out += [".".join(parts[:i]) for i in range(1, len(parts) + 1)] if parts[0] in PACKAGES else [n]
    return out


def _third_party(name: str) -> set[str]:
    top = name.split(".")[0]
    if top in sys.stdlib_module_names or top == "__future__":
        return set()
    found = {top}
    for key, implied in IMPLIES.items():
        if name == key or name.startswith(key + ".") or top == key:
            found |= implied
    return found


def _heavy_all(mods: dict[str, Module]) -> dict[str, set[str]]:
    """module -> the heavy third-party modules importing it pulls in (fixpoint over the
    module-level import graph, package __init__s included)."""
    direct: dict[str, set[str]] = {}
    deps: dict[str, set[str]] = {}
    for m in mods.values():
        direct[m.name], deps[m.name] = set(), set()
        parts = m.name.split(".")
        deps[m.name] |= {".".join(parts[:i]) for i in range(1, len(parts))}
        for node in m.top:
            for t in _targets(mods, m, node):
                if t in mods:
                    deps[m.name].add(t)
                elif t == "<dynamic>":
                    direct[m.name].add("<dynamic>")
                elif t.split(".")[0] not in PACKAGES:
                    direct[m.name] |= _third_party(t)
    heavy = {k: set(v) for k, v in direct.items()}
    changed = True
    while changed:
        changed = False
        for m, ds in deps.items():
            new = heavy[m].union(*(heavy[d] for d in ds if d != m))
            if new != heavy[m]:
                heavy[m], changed = new, True
    return heavy


def _patched_names() -> set[str]:
    """Names tests and benchmarks replace: the last part of a dotted patch target, and the
    attribute a ``setattr(obj, "name", ...)`` sets."""
    names: set[str] = set()
    for d in ("tests", "bench"):
        for path in (ROOT / d).rglob("*.py"):
            for n in ast.walk(ast.parse(path.read_text())):
                if not isinstance(n, ast.Call):
                    continue
                fn = ast.unparse(n.func)
                if not (fn.endswith(("setattr", "patch", "patch.object", "delattr"))):
                    continue
                consts = [a.value for a in n.args[:2] if isinstance(a, ast.Constant) and isinstance(a.value, str)]
                for c in consts:
                    if re.fullmatch(r"[\w.]+", c):
                        names.add(c.rsplit(".", 1)[-1])
    return names


def _bound(node: ast.Import | ast.ImportFrom) -> list[str]:
    return [a.asname or (a.name.split(".")[0] if isinstance(node, ast.Import) else a.name) for a in node.names]


def _origin(mod: Module, node: ast.Import | ast.ImportFrom, alias: ast.alias) -> str:
    if isinstance(node, ast.Import):   # ``import a.b`` and ``import a.c`` both bind ``a``
        return f"import {alias.name} as {alias.asname}" if alias.asname else f"import {alias.name.split('.')[0]}"
    return f"from {_absolute(mod, node)} import {alias.name}" + (f" as {alias.asname}" if alias.asname else "")


def _scope_bindings(fn: ast.AST, skip: ast.AST | None = None) -> dict[str, list[ast.AST]]:
    """Names bound in a function's own scope (parameters, assignments, imports, defs...)."""
    out: dict[str, list[ast.AST]] = {}
    args = fn.args if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)) else None
    if args:
        for a in args.posonlyargs + args.args + args.kwonlyargs + [args.vararg, args.kwarg]:
            if a is not None:
                out.setdefault(a.arg, []).append(a)
    stack = list(ast.iter_child_nodes(fn))
    while stack:
        n = stack.pop()
        if n is skip:
            continue
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            out.setdefault(n.name, []).append(n)
            continue
        if isinstance(n, ast.Lambda):
            continue
        if isinstance(n, ast.Name) and isinstance(n.ctx, (ast.Store, ast.Del)):
            out.setdefault(n.id, []).append(n)
        elif isinstance(n, (ast.Import, ast.ImportFrom)):
            for b in _bound(n):
                out.setdefault(b, []).append(n)
        elif isinstance(n, ast.ExceptHandler) and n.name:
            out.setdefault(n.name, []).append(n)
        elif isinstance(n, (ast.Global, ast.Nonlocal)):
            for b in n.names:
                out.setdefault(b, []).append(n)
        stack.extend(ast.iter_child_nodes(n))
    return out


@dataclass
class Lazy:
    node: ast.Import | ast.ImportFrom
    functions: list[ast.AST]      # enclosing functions, innermost last
    block: list[ast.stmt]         # the statement list holding it
    in_try: bool


def _lazies(tree: ast.Module) -> list[Lazy]:
    out: list[Lazy] = []

    def block(stmts: list[ast.stmt], fns: list[ast.AST], in_try: bool) -> None:
        for s in stmts:
            if isinstance(s, (ast.Import, ast.ImportFrom)):
                if fns:
                    out.append(Lazy(s, fns, stmts, in_try))
            else:
                stmt(s, fns, in_try)

    def stmt(s: ast.stmt, fns: list[ast.AST], in_try: bool) -> None:
        if isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef)):
            block(s.body, fns + [s], False)
        elif isinstance(s, ast.ClassDef):     # a class body's imports are its attributes
            for c in s.body:
                if not isinstance(c, (ast.Import, ast.ImportFrom)):
                    stmt(c, fns, in_try)
        elif isinstance(s, ast.If) and "TYPE_CHECKING" in ast.unparse(s.test):
            return
        else:
            is_try = isinstance(s, (ast.Try, ast.TryStar)) and any(
                h.type is None or any(x in ast.unparse(h.type) for x in GUARDS) for h in s.handlers)
            for name in ("body", "orelse", "finalbody"):
                b = getattr(s, name, None)
                if isinstance(b, list) and b and isinstance(b[0], ast.stmt):
                    block(b, fns, in_try or is_try)
            for h in getattr(s, "handlers", None) or []:
                block(h.body, fns, in_try)
            for c in getattr(s, "cases", None) or []:
                block(c.body, fns, in_try)

    block(tree.body, [], False)
    return out


def plan(mods: dict[str, Module], mod: Module, heavy: dict[str, set[str]], patched: set[str]
         ) -> tuple[list[Lazy], dict[str, set[str]]]:
    """(imports to hoist, reason -> what stays lazy for it)."""
    module_bound: dict[str, set[str]] = {}
    for n in mod.tree.body:
        if isinstance(n, (ast.Import, ast.ImportFrom)):
            for a, b in zip(n.names, _bound(n)):
                module_bound.setdefault(b, set()).add(_origin(mod, n, a))
        elif isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            module_bound.setdefault(n.name, set()).add(f"def {n.name}")
        else:
            for t in ast.walk(n):
                if isinstance(t, ast.Name) and isinstance(t.ctx, ast.Store):
                    module_bound.setdefault(t.id, set()).add(f"assign {t.id}")
                elif isinstance(t, (ast.Import, ast.ImportFrom)):   # inside module-level if/try
                    for a, b in zip(t.names, _bound(t)):
                        module_bound.setdefault(b, set()).add(_origin(mod, t, a))
    own = heavy[mod.name]
    keep = KEEP.get(mod.name, {})
    lazies = _lazies(mod.tree)
    candidates: list[Lazy] = []
    why: dict[str, set[str]] = {}
    for lz in lazies:
        n = lz.node
        label = ", ".join(sorted({_absolute(mod, n) if isinstance(n, ast.ImportFrom) else a.name
                                  for a in n.names}))
        targets = _targets(mods, mod, n)
        extra: set[str] = set()
        for t in targets:
            extra |= heavy[t] if t in mods else ({"<dynamic>"} if t == "<dynamic>" else
                                                 _third_party(t) if t.split(".")[0] not in PACKAGES else set())
        extra -= own
        keep_reason = next((r for t, r in keep.items() if t in targets), None)
        if any(a.name == "*" for a in n.names):
            why.setdefault("clash", set()).add(label)
        elif keep_reason:
            why.setdefault(keep_reason, set()).add(label)
        elif lz.in_try:
            why.setdefault("optional", set()).add(label)
        elif extra:
            why.setdefault("heavy", set()).update(sorted(e for e in extra if e != "<dynamic>") or [label])
        elif isinstance(n, ast.ImportFrom) and set(_bound(n)) & patched:
            why.setdefault("patched", set()).add(label)
        else:
            candidates.append(lz)
    # clashes: one name, two meanings (in the module, among the candidates, or in a function)
    meaning: dict[str, set[str]] = {}
    for lz in candidates:
        for a, b in zip(lz.node.names, _bound(lz.node)):
            meaning.setdefault(b, set()).add(_origin(mod, lz.node, a))
    hoist: list[Lazy] = []
    for lz in candidates:
        ok = True
        for a, b in zip(lz.node.names, _bound(lz.node)):
            origin = _origin(mod, lz.node, a)
            if len(meaning[b]) > 1 or module_bound.get(b, {origin}) != {origin}:
                ok = False
            for i, fn in enumerate(lz.functions):
                binds = _scope_bindings(fn)
                others = [x for x in binds.get(b, []) if not (isinstance(x, (ast.Import, ast.ImportFrom))
                                                               and origin in {_origin(mod, x, y) for y in x.names})]
                if others:
                    ok = False
        if len([s for s in lz.block if not (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))]) <= 1:
            ok = False   # the only statement of its block
        if ok:
            hoist.append(lz)
        else:
            why.setdefault("clash", set()).add(_absolute(mod, lz.node) if isinstance(lz.node, ast.ImportFrom)
                                               else lz.node.names[0].name)
    return hoist, why


def _comment(why: dict[str, set[str]]) -> str:
    parts = [f"{', '.join(sorted(names))} ({REASONS.get(reason, reason)})" for reason, names in sorted(why.items())]
    return COMMENT + "; ".join(parts)


def _statement_text(mod: Module, node: ast.Import | ast.ImportFrom) -> list[str]:
    if isinstance(node, ast.Import):
        return [f"import {a.name}" + (f" as {a.asname}" if a.asname else "") for a in node.names]
    base = _absolute(mod, node) if node.level == 0 else "." * node.level + (node.module or "")
    return [f"from {base} import " + ", ".join(a.name + (f" as {a.asname}" if a.asname else "") for a in node.names)]


def rewrite(mod: Module, hoist: list[Lazy], why: dict[str, set[str]]) -> str:
    lines = mod.text.splitlines(keepends=True)
    drop = {i for i, line in enumerate(lines) if line.startswith(COMMENT)}
    drop |= {i - 1 for i in drop if i and not lines[i - 1].strip()}
    new_top: set[str] = set()
    hoisted = {id(h.node) for h in hoist}
    for lz in hoist:
        n = lz.node
        drop |= set(range(n.lineno - 1, n.end_lineno or n.lineno))
        new_top.update(_statement_text(mod, n))
        # the blank lines after an import that opens its block (or follows a hoisted one) go too
        idx = next(i for i, s in enumerate(lz.block) if s is n)
        before = [s for s in lz.block[:idx] if not (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))]
        if idx + 1 < len(lz.block) and (not before or id(before[-1]) in hoisted):
            gap = range(n.end_lineno or n.lineno, lz.block[idx + 1].lineno - 1)
            if all(not lines[i].strip() for i in gap):
                drop |= set(gap)
    insert = [s + "\n" for s in sorted(new_top)] + (["\n", _comment(why) + "\n"] if why else [])
    # where the top block ends: the last import of the first run of module-level imports
    lead: list[ast.stmt] = []
    for n in mod.tree.body:
        if isinstance(n, (ast.Import, ast.ImportFrom)):
            lead.append(n)
        elif lead:
            break
    if lead:
        anchor, pad_before, pad_after = lead[-1].end_lineno or lead[-1].lineno, [], []
    else:
        first = mod.tree.body[0] if mod.tree.body else None
        doc = isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
        anchor = (first.end_lineno or 0) if doc and first else 0
        pad_before, pad_after = (["\n"] if anchor else []), ["\n"]
    out = [line for i, line in enumerate(lines[:anchor]) if i not in drop]
    if insert:
        out += pad_before + insert + pad_after
    out += [line for i, line in enumerate(lines[anchor:], anchor) if i not in drop]
    return "".join(out)


def pending() -> list[str]:
    """Modules with an import that could move to the top, or whose ``# lazy:`` comment is stale."""
    mods = _load()
    heavy = _heavy_all(mods)
    patched = _patched_names()
    out = []
    for mod in mods.values():
        hoist, why = plan(mods, mod, heavy, patched)
        comment = [line for line in mod.text.splitlines() if line.startswith(COMMENT)]
        if hoist or comment != ([_comment(why)] if why else []):
            out.append(str(mod.path.relative_to(ROOT)))
    return out


def main() -> int:
    check = "--check" in sys.argv
    mods = _load()
    heavy = _heavy_all(mods)
    patched = _patched_names()
    changed = []
    for mod in mods.values():
        hoist, why = plan(mods, mod, heavy, patched)
        text = rewrite(mod, hoist, why)
        comment = [line for line in mod.text.splitlines() if line.startswith(COMMENT)]
        if check and not hoist and comment == ([_comment(why)] if why else []):
            continue
        if text != mod.text:
            changed.append(mod.path)
            print(f"{mod.path.relative_to(ROOT)}: {len(hoist)} hoisted" + (f"; {_comment(why)}" if why else ""))
            if not check:
                mod.path.write_text(text)
    if changed and not check:
        subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--quiet", "--select", "I", "--fix",
                        "--line-length", "120", *map(str, changed)], cwd=ROOT, check=False)
    print(f"hoist_imports: {len(changed)} modules {'would change' if check else 'changed'}")
    return 1 if check and changed else 0


if __name__ == "__main__":
    sys.exit(main())
