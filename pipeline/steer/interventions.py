"""Interventions on the residual stream: a direction turned into protocol ops, with checks and units.

An :class:`Intervention` is a labelled list of ops (:mod:`pipeline.steer.edits`: add, ablate,
clamp, LEACE erase) built by the constructors of :mod:`pipeline.steer.ops` (``add``, ``add_rows``,
``ablate``, ``ablate_writers``, ``clamp``, ``interpolate``, ``mix``). It is a value: ``.ops`` go
into a per-row batch (:func:`pipeline.steer.protocol.steering`, the server) or a conditional
rule, and entering it as a context manager installs its ops on every row through the same
installer (:func:`pipeline.steer.protocol.applying`), removed in ``finally`` (also when the block
raises). Interventions nest, and several can be passed together to :func:`apply` or
``generate(..., interventions=[...])``; ops on the same layer run in the order entered.

>>> with add(lm, d, 4.0):                       # doctest: +SKIP
...     out = lm.model(**batch)                 # steered towards d's positive class
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import Literal

from pipeline.direction import Direction
from pipeline.models.loading import LoadedModel
from pipeline.steer.protocol import POSITIONS, Op, Positions, Target, applying
from pipeline.types import GnomonError

Unit = Literal["separation", "resid_norm", "raw"]
UNITS: tuple[Unit, ...] = ("separation", "resid_norm", "raw")
__all__ = ["POSITIONS", "UNITS", "Intervention", "Positions", "Unit", "apply", "check_direction", "flatten", "ops_of",
           "scale_of"]


# ---- checks ------------------------------------------------------------------------------
def check_direction(lm: LoadedModel, direction: Direction, force: bool = False) -> None:
    """Refuse a direction that cannot (hidden size, site, layer) or should not (fingerprint)
    be applied to ``lm``. A direction with no recorded fingerprint (hand-made, read from a
    control-vector file) is accepted: there is nothing to compare."""
    p = direction.provenance
    name = p.concept or p.method or "direction"
    if p.hidden_size != lm.hidden_size:
        raise GnomonError(f"{name} has hidden size {p.hidden_size} but {lm.model_id} has "
                          f"{lm.hidden_size}: it was fitted on a different architecture")
    if p.site != "block_output":
        raise GnomonError(f"{name} was read at site {p.site!r}; interventions write at 'block_output' only")
    lm.check_layers([p.layer])
    if p.fingerprint and p.fingerprint != lm.fingerprint and not force:
        raise GnomonError(
            f"{name} was fitted on {p.model_id or 'another model'} (fingerprint {p.fingerprint}) but "
            f"{lm.model_id} has fingerprint {lm.fingerprint}; pass force=True (CLI: --force) to apply it anyway")


def scale_of(direction: Direction, unit: Unit) -> float:
    """The size of one ``strength`` unit, in residual-stream units along the unit vector."""
    if unit not in UNITS:
        raise GnomonError(f"unknown strength unit {unit!r}: choose from {', '.join(UNITS)}")
    value = {"separation": direction.separation, "resid_norm": direction.resid_norm,
             "raw": float(direction.vector.norm())}[unit]
    if not math.isfinite(value) or value == 0.0:
        raise GnomonError(f"the direction has no usable {unit} statistic ({value}); "
                          f"choose another --unit ({', '.join(u for u in UNITS if u != unit)})")
    return value


# ---- the value and its context manager ---------------------------------------------------
class Intervention:
    """Protocol ops with a label; entering it applies the ops to every row (see the module doc).

    ``positions``: ``all`` edits every token of every forward pass; ``prompt`` only passes
    with an empty KV cache (the initial prompt pass); ``generated`` only decode steps (the new
    tokens of a cached generation; the first new token is predicted from the unedited prompt).
    """

    def __init__(self, lm: LoadedModel, ops: Sequence[Op], positions: Positions = "all", label: str = "") -> None:
        if positions not in POSITIONS:
            raise GnomonError(f"unknown positions {positions!r}: choose from {', '.join(POSITIONS)}")
        self.lm = lm
        self.ops = list(ops)
        """The ops, each carrying ``positions`` (the constructors set it)."""
        self.positions = positions
        self.label = label
        self._stack: list[ExitStack] = []

    @property
    def layers(self) -> list[int]:
        """The layers whose outputs it edits (residual writers not included)."""
        return sorted({t for o in self.ops for t in o.layers if isinstance(t, int)})

    @property
    def targets(self) -> list[Target]:
        return list(dict.fromkeys(t for o in self.ops for t in o.layers))

    def __enter__(self) -> Intervention:
        stack = ExitStack()
        stack.enter_context(applying(self.lm, self.ops))
        self._stack.append(stack)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.pop().close()

    def __repr__(self) -> str:
        return f"Intervention({self.label or 'custom'}, targets={self.targets}, positions={self.positions})"


def flatten(*interventions: Intervention | Op | Iterable[Intervention | Op]) -> list[Op]:
    """The ops of interventions, ops, or lists of either, in order."""
    out: list[Op] = []
    for item in interventions:
        for x in [item] if isinstance(item, (Intervention, Op)) else list(item):
            out.extend(x.ops if isinstance(x, Intervention) else [x])
    return out


def ops_of(intervention: Intervention | Op | Iterable[Intervention | Op]) -> list[Op]:
    """The ops an intervention holds (``intervention.ops``; a list of them, flattened)."""
    return flatten(intervention)


@contextmanager
def apply(*interventions: Intervention | Iterable[Intervention]) -> Iterator[list[Intervention]]:
    """Enter several interventions at once (flattening lists), in order; all are removed on exit."""
    flat: list[Intervention] = []
    for item in interventions:
        flat.extend([item] if isinstance(item, Intervention) else list(item))
    with ExitStack() as stack:
        for iv in flat:
            stack.enter_context(iv)
        yield flat
