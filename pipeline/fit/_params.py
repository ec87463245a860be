"""Declared parameters of the fitting methods: name, type, range, default.

Each method module declares ``PARAMS`` beside its ``fit_<name>`` function, so
``--param ccs.epochs=abc`` (or ``[fit.params.ccs]`` in a job spec) is refused with one
line naming the parameter and what it takes *before* anything is collected or fitted,
instead of a TypeError deep inside the optimiser after the collection (issue 21).
``tests/test_reliability_round2_inputs.py`` checks every declaration against its
function's signature, so a new keyword cannot go undeclared.

>>> from pipeline.fit.ccs import PARAMS
>>> check_params("ccs", PARAMS, {"epochs": 500})                     # doctest: +SKIP
{'epochs': 500}
>>> check_params("ccs", PARAMS, {"epochs": "abc"})                   # doctest: +SKIP
GnomonError: --param ccs.epochs='abc': must be a whole number >= 1
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pipeline.types import GnomonError

__all__ = ["Param", "check_params"]

Kind = Literal["int", "float", "bool", "choice", "float_or_choice"]


@dataclass(frozen=True)
class Param:
    """One keyword parameter of a fitting method."""

    name: str
    kind: Kind
    """``int`` (a whole number; ``1e3`` counts), ``float`` (finite), ``bool``, ``choice``
    (one of ``choices``), ``float_or_choice`` (a number in range, or one of ``choices``)."""
    default: Any
    doc: str
    """What it does, shown in the refusal."""
    min: float | None = None
    """Smallest allowed value (inclusive unless ``min_open``)."""
    max: float | None = None
    """Largest allowed value (inclusive)."""
    min_open: bool = False
    """``min`` itself is not allowed (a learning rate > 0)."""
    choices: tuple[str, ...] = ()

    def describe(self) -> str:
        """What the parameter takes, e.g. ``a whole number >= 1``."""
        what = {"int": "a whole number", "float": "a number", "bool": "true or false",
                "choice": "one of", "float_or_choice": "a number"}[self.kind]
        if self.kind == "choice":
            return f"{what} {', '.join(self.choices)}"
        bounds = []
        if self.min is not None:
            bounds.append(f"{'>' if self.min_open else '>='} {self.min:g}")
        if self.max is not None:
            bounds.append(f"<= {self.max:g}")
        text = f"{what} {' and '.join(bounds)}".strip()
        if self.kind == "float_or_choice":
            text += f", or {' or '.join(self.choices)}"
        return text

    def check(self, method: str, value: Any) -> Any:
        """``value`` as the method takes it, or a GnomonError naming ``METHOD.NAME``."""
        given = value

        def bad() -> GnomonError:
            return GnomonError(f"--param {method}.{self.name}={given!r}: must be {self.describe()} "
                               f"({self.doc}; default {self.default!r})")

        if self.kind in ("choice", "float_or_choice") and isinstance(value, str):
            if value in self.choices:
                return value
            raise bad()
        if self.kind == "choice":
            raise bad()
        if self.kind == "bool":
            if isinstance(value, bool):
                return value
            raise bad()
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad()
        if not math.isfinite(value):
            raise bad()
        if self.kind == "int":
            if value != int(value):
                raise bad()
            value = int(value)
        else:
            value = float(value)
        if self.min is not None and (value < self.min or (self.min_open and value == self.min)):
            raise bad()
        if self.max is not None and value > self.max:
            raise bad()
        return value


def check_params(method: str, declared: Sequence[Param], params: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` checked against ``declared``: unknown names and bad values refused."""
    by_name = {p.name: p for p in declared}
    unknown = sorted(set(params) - set(by_name))
    if unknown:
        raise GnomonError(f"{method} does not take parameter(s) {', '.join(unknown)}; "
                          f"it takes: {', '.join(by_name) or 'none'}")
    return {k: by_name[k].check(method, v) for k, v in params.items()}
