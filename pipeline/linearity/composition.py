"""Composition: do two directions add, and does steering one move the others?

For concepts A and B with directions ``d_A``, ``d_B``, steered at one strength ``s``
(``pipeline.steer.add`` alone, ``pipeline.steer.mix`` together), the *effect* of a
condition on a reader is its reading minus the unsteered reading. Then

- additivity error of the pair on reader c (c is A's or B's):
  ``|e_mix - e_A - e_B| / (|e_A| + |e_B|)`` -- 0 when the mix is exactly the sum;
- cross-talk ``X[a][b] = e_a(reader b) / e_a(reader a)``: how far steering a moves b's
  reader, relative to how far it moves a's own (diagonal 1; 0 = no interference);
- the cosine matrix of the directions (residual-stream coordinates are shared across
  layers, so directions at different layers still compare, loosely).

Readers are :class:`~pipeline.linearity.control.Scorer` s on one readout per condition:
``monitor`` (each concept's projection at its own layer, i.e. its monitor's reading) and
``score`` (the behavioural log-odds). At one layer with orthogonal directions the monitor
readings are exactly additive (the tests check it on a tiny model).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.direction import Direction
from pipeline.linearity.control import Scorer
from pipeline.linearity.readout import encode, read
from pipeline.models.loading import LoadedModel
from pipeline.steer import add, mix
from pipeline.types import GnomonError

__all__ = ["COMPOSE_STRENGTH", "Composition", "additivity_error", "composition"]

COMPOSE_STRENGTH = 2.0
"""Strength (class-mean separations) each direction is added with, alone and mixed."""
_TINY = 1e-9


def additivity_error(e_mix: float, e_a: float, e_b: float) -> float:
    """``|e_mix - e_a - e_b| / (|e_a| + |e_b|)`` (NaN if neither moves the reader)."""
    denom = abs(e_a) + abs(e_b)
    return abs(e_mix - e_a - e_b) / denom if denom > _TINY else float("nan")


@dataclass(frozen=True)
class Composition:
    concepts: list[str]
    strength: float
    cosine: list[list[float]]
    crosstalk: dict[str, list[list[float]]]
    """Reader kind -> (n, n) matrix, row = concept steered, column = reader."""
    pairs: list[dict[str, Any]]
    """One entry per pair: ``a``, ``b`` and per reader kind the error on each concept."""
    additivity: dict[str, dict[str, float | None]]
    """Reader kind -> concept -> worst additivity error over the pairs it is in (None: the
    reader never moved, so additivity is undefined)."""

    def to_json(self) -> dict[str, Any]:
        return {"concepts": self.concepts, "strength": self.strength, "cosine": self.cosine,
                "crosstalk": self.crosstalk, "pairs": self.pairs, "additivity": self.additivity}


def composition(lm: LoadedModel, directions: Mapping[str, Direction], prompts: Sequence[str],
                readers: Mapping[str, Mapping[str, Scorer]], strength: float = COMPOSE_STRENGTH,
                unit: str = "separation") -> Composition:
    """Measure every pair of ``directions`` with every reader (see the module doc).

    ``readers``: reader kind -> concept -> scorer (readout-only scorers: no generation).
    """
    names = list(directions)
    if len(names) < 2:
        raise GnomonError("composition needs at least two concepts")
    for kind, rs in readers.items():
        if set(rs) != set(names) or any(s.needs_text for s in rs.values()):
            raise GnomonError(f"reader {kind!r} must give a readout-only scorer for each of {names}")
    enc = encode(lm, prompts)
    dirs = dict(directions)

    def measure(ivs: list[Any]) -> dict[str, dict[str, float]]:
        r = read(lm, enc, ivs, dirs)
        return {kind: {c: rs[c].fn(r, None) for c in names} for kind, rs in readers.items()}

    base = measure([])

    def effect(ivs: list[Any]) -> dict[str, dict[str, float]]:
        m = measure(ivs)
        return {k: {c: m[k][c] - base[k][c] for c in names} for k in m}

    single = {a: effect([add(lm, dirs[a], strength, unit, force=True)]) for a in names}  # type: ignore[arg-type]
    pairs: list[dict[str, Any]] = []
    worst: dict[str, dict[str, float | None]] = {k: {c: None for c in names} for k in readers}
    for a, b in itertools.combinations(names, 2):
        both = effect([mix(lm, [(dirs[a], strength), (dirs[b], strength)], unit, force=True)])  # type: ignore[arg-type]
        entry: dict[str, Any] = {"a": a, "b": b}
        for k in readers:
            errs = {c: additivity_error(both[k][c], single[a][k][c], single[b][k][c]) for c in (a, b)}
            entry[k] = {c: (round(e, 6) if np.isfinite(e) else None) for c, e in errs.items()}
            for c, e in errs.items():
                if np.isfinite(e):
                    worst[k][c] = max(worst[k][c] or 0.0, e)
        pairs.append(entry)
    crosstalk = {}
    for k in readers:
        mat = []
        for a in names:
            own = single[a][k][a]
            mat.append([round(single[a][k][b] / own, 6) if abs(own) > _TINY else float("nan") for b in names])
        crosstalk[k] = mat
    cos = [[round(dirs[a].cosine(dirs[b]), 6) for b in names] for a in names]
    return Composition(concepts=names, strength=strength, cosine=cos, crosstalk=crosstalk, pairs=pairs,
                       additivity={k: {c: None if v is None else round(v, 6) for c, v in w.items()}
                                   for k, w in worst.items()})
