"""The options every command shares, defined once: one option means one thing everywhere.

``OPTIONS`` is the table (layers, positions, methods, params, executor, ray address,
workers, tracking URI, home, json); a command asks for the ones it takes with
:func:`add_options`, overriding only the help or default where its meaning is narrower.
Choices come from the registries (``pipeline.methods``, ``jobs.runtime.engine.EXECUTORS``) and
pipeline's constants (``POSITIONS``), never restated, and are read when the parser is
built, so a method registered by a plugin module is offered too. ``--layers`` is parsed by
``pipeline.types.parse_layers``, which a job spec's ``layers =`` goes through as well.
Direction references resolve through :mod:`jobs.stages.refs`. Importing this module imports
nothing heavy (``gnomon --help`` stays fast).
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable, Sequence
from typing import Any

from pipeline.methods import method_names, methods_help
from pipeline.types import POSITIONS, GnomonError, parse_layers

# lazy: jobs.runtime.engine (start-up; only --executor reads it)

__all__ = ["OPTIONS", "add_options", "add_executor_args", "parse_layers", "parse_choices", "parse_params",
           "parse_methods", "parse_positions"]


def _executor() -> dict[str, Any]:
    from jobs.runtime.engine import EXECUTORS
    kinds = "; ".join(f"{k.name}: {k.help}" for k in EXECUTORS.values())
    return dict(flags=("--executor",), choices=tuple(EXECUTORS), default=os.environ.get("GNOMON_EXECUTOR") or "auto",
                help=f"where the work runs ({kinds}); default: $GNOMON_EXECUTOR, else auto")


def _methods() -> dict[str, Any]:
    return dict(flags=("--methods",), default="all",
                help=f"all (default), or a comma list of {','.join(method_names())} ({methods_help()})")


OPTIONS: dict[str, Callable[[], dict[str, Any]]] = {
    "layers": lambda: dict(flags=("--layers",), default=None, help="all (default), 3, 0,4,8 or 2-6"),
    "positions": lambda: dict(flags=("--positions",), default="last,mean",
                              help=f"comma list of {', '.join(POSITIONS)} (default: %(default)s)"),
    "methods": _methods,
    "params": lambda: dict(flags=("--param",), action="append", default=[], metavar="METHOD.KEY=VALUE",
                           help="a fitting method's parameter, e.g. ccs.epochs=500 or logistic.l2=1e-3 (repeatable; "
                                "default: none, each method's own defaults)"),
    "executor": _executor,
    "ray_address": lambda: dict(flags=("--ray-address",), default=None,
                                help="Ray cluster address (default: $RAY_ADDRESS, else local)"),
    "workers": lambda: dict(flags=("--workers",), type=int, default=None,
                            help="model workers (actors) on Ray (default: one per GPU, else per CPU)"),
    "tracking_uri": lambda: dict(flags=("--tracking-uri",), default=None,
                                 help="MLflow tracking URI of the catalog (default: $MLFLOW_TRACKING_URI, "
                                      "else sqlite:///<home>/mlflow.db)"),
    "home": lambda: dict(flags=("--home",), default=None,
                         help="gnomon home (default: $GNOMON_HOME, else the nearest ./gnomon-home in this "
                              "directory or a parent, else ./gnomon-home)"),
    "json": lambda: dict(flags=("--json",), action="store_true", help="print the result as JSON"),
}
"""Each shared option: its flags and ``add_argument`` keywords (built when asked for)."""


def add_options(p: argparse.ArgumentParser, *names: str, **overrides: str | dict[str, Any]) -> None:
    """Add the shared options ``names`` to ``p``; a keyword adds one too, with its help
    (a string) or its keywords (a dict: ``default``, ``help``...) overridden.

    >>> add_options(p, "layers", "tracking_uri", json="print the trace as JSON")  # doctest: +SKIP
    """
    for name in (*names, *overrides):
        if name not in OPTIONS:
            raise KeyError(f"no shared option {name!r}: add it to jobs.cli.commands.args.OPTIONS")
        kw = OPTIONS[name]()
        extra = overrides.get(name, {})
        kw.update({"help": extra} if isinstance(extra, str) else extra)
        flags = kw.pop("flags")
        p.add_argument(*flags, **kw)


def add_executor_args(p: argparse.ArgumentParser) -> None:
    """``--executor``, ``--ray-address`` and ``--workers``."""
    add_options(p, "executor", "ray_address", "workers")


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


def parse_methods(text: str) -> tuple[str, ...]:
    """``--methods``: ``all`` (every registered method) or a comma list of registered ones."""
    return parse_choices(text, method_names(), "fitting method")


def parse_positions(text: str) -> tuple[str, ...]:
    """``--positions`` as a tuple in the order given, each one known."""
    return parse_choices(text, POSITIONS, "position")


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
        if method not in method_names():
            raise GnomonError(f"--param {item!r}: unknown method {method!r}; choose from {', '.join(method_names())}")
        out.setdefault(method, {})[name] = _value(value.strip())
    return out
