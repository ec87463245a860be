"""Argument helpers every command shares, so one option means one thing everywhere.

Choices come from pipeline's constants (``METHODS``, ``POSITIONS``), never restated;
``--param METHOD.KEY=VALUE`` reaches a fitting method's parameters from the command line
as ``[fit.params.METHOD]`` does from a job spec. Importing this module imports nothing
heavy (``gnomon --help`` stays fast).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from typing import Any

from pipeline.types import METHODS, POSITIONS, GnomonError

__all__ = ["parse_layers", "parse_choices", "parse_params", "add_executor_args", "add_tracking_arg",
           "add_json_arg", "add_layers_arg", "add_methods_arg", "add_positions_arg", "add_params_arg",
           "resolve_direction", "check_refs", "is_direction_file", "EXECUTOR_CHOICES"]

EXECUTOR_CHOICES = ("auto", "local", "ray")


def parse_layers(text: str | None) -> tuple[int, ...] | None:
    """``all``/None, ``3``, ``0,4,8`` or ``2-6`` (inclusive ranges)."""
    if text is None or text == "all":
        return None
    out: list[int] = []
    try:
        for part in text.split(","):
            if "-" in part.strip()[1:]:
                a, b = part.split("-", 1)
                if int(b) < int(a):
                    raise GnomonError(f"bad --layers {text!r}: range {part.strip()} runs backwards; write {b}-{a}")
                out.extend(range(int(a), int(b) + 1))
            else:
                out.append(int(part))
    except ValueError:
        raise GnomonError(f"bad --layers {text!r}: use all, 3, 0,4,8 or 2-6") from None
    return tuple(out)


def parse_choices(text: str, choices: Sequence[str], what: str) -> tuple[str, ...]:
    """A comma list checked against ``choices`` (``all`` for every one)."""
    if text == "all":
        return tuple(choices)
    items = tuple(x.strip() for x in text.split(",") if x.strip())
    bad = [x for x in items if x not in choices]
    if not items:
        raise GnomonError(f"no {what} given: choose from {', '.join(choices)}")
    if bad:
        raise GnomonError(f"unknown {what} {bad[0]}: choose from {', '.join(choices)}")
    return items


def _value(text: str) -> Any:
    """A parameter value as JSON when it parses (``500``, ``1e-3``, ``true``), else the string."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_params(items: Sequence[str] | None) -> dict[str, dict[str, Any]]:
    """``["ccs.epochs=500", "logistic.l2=1e-3"]`` -> ``{"ccs": {"epochs": 500}, "logistic": {"l2": 0.001}}``."""
    out: dict[str, dict[str, Any]] = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        method, dot, name = key.strip().partition(".")
        if not sep or not dot or not name:
            raise GnomonError(f"bad --param {item!r}: use METHOD.KEY=VALUE, e.g. ccs.epochs=500")
        if method not in METHODS:
            raise GnomonError(f"--param {item!r}: unknown method {method!r}; choose from {', '.join(METHODS)}")
        out.setdefault(method, {})[name] = _value(value.strip())
    return out


def add_executor_args(p: argparse.ArgumentParser) -> None:
    import os

    p.add_argument("--executor", choices=EXECUTOR_CHOICES, default=os.environ.get("GNOMON_EXECUTOR") or "auto",
                   help="auto (in-process on one node with few cores and at most one GPU, Ray actors with several "
                        "GPUs or a cluster address; stated in the summary), local (no Ray) or ray (a local Ray "
                        "instance, or a cluster via --ray-address); default: $GNOMON_EXECUTOR, else auto")
    p.add_argument("--ray-address", default=None, help="Ray cluster address (default: $RAY_ADDRESS, else local)")
    p.add_argument("--workers", type=int, default=None,
                   help="model workers (actors) on Ray (default: one per GPU, else per CPU)")


def add_tracking_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tracking-uri", default=None,
                   help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else SQLite in the home)")


def add_json_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def add_layers_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--layers", default=None, help="all (default), 3, 0,4,8 or 2-6")


def add_methods_arg(p: argparse.ArgumentParser, default: str = "all") -> None:
    p.add_argument("--methods", default=default, help=f"all (default), or a comma list of {','.join(METHODS)}")


def add_positions_arg(p: argparse.ArgumentParser, default: str = "last,mean") -> None:
    p.add_argument("--positions", default=default,
                   help=f"comma list of {', '.join(POSITIONS)} (default: {default})")


def add_params_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--param", action="append", default=[], metavar="METHOD.KEY=VALUE",
                   help="a fitting method's parameter, e.g. ccs.epochs=500 or logistic.l2=1e-3 (repeatable; default: none, each method's own defaults)")


def resolve_direction(ref: str, tracking_uri: str | None = None, home: Any = None) -> Any:
    """A direction from a catalog reference (``sentiment@best``, ``sentiment/3``) or a
    ``.safetensors`` file: the one resolver every command uses."""
    from jobs.refs import resolve_direction as resolve

    return resolve(ref, tracking_uri, home)


def is_direction_file(ref: str) -> bool:
    """A REF that names a file (``.safetensors``, ``.gguf``, or any existing path), not the catalog."""
    from pathlib import Path

    return ref.endswith((".safetensors", ".gguf")) or Path(ref).expanduser().exists()


def check_refs(refs: Sequence[str], tracking_uri: str | None = None, model: str | None = None) -> list[Any]:
    """The catalog record of every catalog REF in ``refs`` (files are skipped), or one line
    saying which concept, version or alias does not exist: in well under a second, before
    MLflow is imported, a catalog database created or a model loaded (issue 21: an unknown
    concept took 18-45 s to be refused). A local SQLite catalog is read directly
    (:class:`catalog.fast.SQLiteReader`); a missing one has no concepts, and is not created
    by a refusal; a tracking server is asked through :class:`catalog.Catalog`. ``model``
    scopes ``best``/``best-monitor``/``best-steer`` (issue 20)."""
    from catalog.backend import resolve_tracking_uri, sqlite_path
    from catalog.fast import SQLiteReader
    from catalog.refs import parse_ref
    from pipeline.home import gnomon_home

    wanted = [r for r in refs if not is_direction_file(r)]
    if not wanted:
        return []
    uri = resolve_tracking_uri(tracking_uri, gnomon_home())
    db = sqlite_path(uri)
    if db is not None and not db.is_file():
        ref = parse_ref(wanted[0])
        raise GnomonError(f"no concept {ref.concept!r} in the catalog at {uri}; known concepts: none yet "
                          "(fit one with `gnomon fit`)")
    reader: Any = SQLiteReader.for_uri(uri)
    if reader is None:
        from catalog import Catalog

        reader = Catalog(tracking_uri=tracking_uri)
    from jobs.refs import scope_model

    scope = scope_model(model)
    return [reader.resolve(r, scope) for r in wanted]
