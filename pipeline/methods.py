"""The registry of fitting methods: each registers once (name, function, declared
parameters, simplicity rank, help) and everything that names methods reads it: the
``--methods`` and ``--param`` options and their help, job-spec validation, the fit
itself, selection's tie-break and the docs. Adding a method is one module that calls
:func:`register_method`; importing this module imports no torch (``gnomon --help`` stays
fast), since built-in methods are named by ``"module:attribute"`` and loaded on first use.

>>> from pipeline.methods import register_method, MethodInfo
>>> register_method(MethodInfo("median_diff", fit=fit_median_diff, simplicity=15,
...                            help="difference of class medians"))         # doctest: +SKIP
>>> "median_diff" in method_names()                                          # doctest: +SKIP
True
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pipeline.types import GnomonError

__all__ = ["MethodInfo", "check_methods", "method", "method_names", "methods_help", "register_method",
           "simplicity", "unregister_method"]


@dataclass(frozen=True)
class MethodInfo:
    """One fitting method as the rest of gnomon sees it."""

    name: str
    fit: str | Callable[..., Any]
    """``fit_<name>(pos, neg, *, paired, **params) -> FitResult`` (see ``pipeline.fit``), or
    ``"module:function"`` naming it, imported on first use."""
    simplicity: int
    """Rank in selection's tie-break (lower = simpler = preferred on a tie): closed forms
    before iterative and unsupervised ones."""
    help: str
    """One line for ``--methods`` help and the docs."""
    params: str | Sequence[Any] = ()
    """Its declared parameters (``pipeline.fit._params.Param``), or ``"module:PARAMS"``."""

    def function(self) -> Callable[..., Any]:
        return _load(self.fit)

    def declared(self) -> tuple[Any, ...]:
        return tuple(_load(self.params)) if isinstance(self.params, str) else tuple(self.params)


def _load(ref: Any) -> Any:
    if not isinstance(ref, str):
        return ref
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


_REGISTRY: dict[str, MethodInfo] = {}


def register_method(info: MethodInfo, replace: bool = False) -> MethodInfo:
    """Add ``info`` to the registry (a second registration of a name is refused unless ``replace``)."""
    if not info.name.isidentifier():
        raise GnomonError(f"method name {info.name!r} must be an identifier (it is used as METHOD.KEY=VALUE)")
    if info.name in _REGISTRY and not replace and _REGISTRY[info.name] != info:
        raise GnomonError(f"fitting method {info.name!r} is already registered")
    _REGISTRY[info.name] = info
    return info


def unregister_method(name: str) -> None:
    """Remove a method (tests that register one undo it with this)."""
    _REGISTRY.pop(name, None)


def method_names() -> tuple[str, ...]:
    """Every registered method, in registration order (the order ``--methods all`` fits)."""
    return tuple(_REGISTRY)


def method(name: str) -> MethodInfo:
    """The registered method ``name``, or one line naming the choices."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise GnomonError(f"unknown method {name!r}: choose from {', '.join(_REGISTRY)}") from None


def check_methods(names: Sequence[str]) -> tuple[str, ...]:
    """``names`` as a tuple, every one registered (one line naming the first that is not)."""
    if not names:
        raise GnomonError(f"no fitting method given: choose from {', '.join(_REGISTRY)}")
    return tuple(method(n).name for n in names)


def simplicity(name: str) -> int:
    """Selection's tie-break rank; an unknown method ranks after every registered one."""
    info = _REGISTRY.get(name)
    return info.simplicity if info is not None else 1 << 30


def methods_help() -> str:
    return "; ".join(f"{m.name}: {m.help}" for m in _REGISTRY.values())


for _name, _rank, _help in (
        ("mean_diff", 10, "difference of class means (closed form)"),
        ("pca", 30, "first principal component of the paired differences"),
        ("logistic", 40, "L2-regularised logistic-regression probe"),
        ("lda", 20, "Fisher linear discriminant with shrinkage (closed form)"),
        ("ccs", 60, "contrast-consistent search (unsupervised, iterative; Burns et al. 2022)"),
        ("leace", 50, "LEACE's eraser direction (Belrose et al. 2023)")):
    register_method(MethodInfo(_name, f"pipeline.fit.{_name}:fit_{_name}", _rank, _help,
                               f"pipeline.fit.{_name}:PARAMS"))
