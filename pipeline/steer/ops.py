"""The intervention constructors: ``add``, ``add_rows``, ``ablate``, ``ablate_writers``,
``clamp``, ``interpolate`` and ``mix``; each checks the direction against the model, turns its
strength into residual-stream units and returns an :class:`Intervention` holding protocol ops
(the maths is in :mod:`pipeline.steer.edits`).

>>> with add(lm, d, 4.0):                       # doctest: +SKIP
...     out = lm.model(**batch)                 # steered towards d's positive class
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from pipeline.direction import Direction
from pipeline.fit.leace import LeaceEraser
from pipeline.models.loading import LoadedModel
from pipeline.models.writers import writer_units
from pipeline.steer.edits import Ablate, Add, Clamp, Erase
from pipeline.steer.interventions import (
    Intervention,
    Positions,
    Unit,
    check_direction,
    scale_of,
)
from pipeline.types import GnomonError

__all__ = ["ablate", "ablate_writers", "add", "add_rows", "clamp", "interpolate", "mix"]


def add(lm: LoadedModel, direction: Direction, strength: float, unit: Unit = "separation", *,
        positions: Positions = "all", force: bool = False) -> Intervention:
    """Add ``strength x scale(unit) x u``: with ``unit="separation"`` a strength of 1 moves a
    row by the distance between the class means; ``resid_norm`` counts in mean residual norms;
    ``raw`` in multiples of the fitted vector. Negative strength suppresses the concept."""
    check_direction(lm, direction, force)
    coef = float(strength) * scale_of(direction, unit)
    if not math.isfinite(coef):
        raise GnomonError(f"steering strength {strength} x the {unit} unit of {_name(direction)} is not a finite "
                          "number; give a finite --strength")
    return Intervention(lm, [Add(direction.layer, direction.unit * coef, positions)], positions,
                        f"add({_name(direction)}, {strength} {unit})")


def add_rows(lm: LoadedModel, direction: Direction, strengths: Sequence[float], unit: Unit = "separation", *,
             positions: Positions = "all", force: bool = False) -> Intervention:
    """:func:`add` with one strength per batch row: the batch must have ``len(strengths)``
    rows, row ``i`` gets ``strengths[i]``. Several strengths (e.g. ``+s`` and ``-s`` on the
    same prompts, stacked) then cost one forward pass instead of one each."""
    check_direction(lm, direction, force)
    coefs = torch.as_tensor([float(s) for s in strengths], dtype=torch.float32) * scale_of(direction, unit)
    if coefs.numel() == 0 or not bool(torch.isfinite(coefs).all()):
        raise GnomonError(f"steering strengths {list(strengths)} x the {unit} unit of {_name(direction)} must be "
                          "a non-empty list of finite numbers")
    vec = coefs[:, None, None] * direction.unit.float()[None, None, :]           # (rows, 1, D)
    return Intervention(lm, [Add(direction.layer, vec, positions)], positions,
                        f"add({_name(direction)}, {len(coefs)} row strengths, {unit})")


def ablate(lm: LoadedModel, direction: Direction, *, layers: Sequence[int] | None = None,
           positions: Positions = "all", force: bool = False) -> Intervention:
    """Project the direction out (its component becomes 0). A LEACE direction (extras
    ``leace_u``, ``leace_v``, ``leace_mean``) applies its eraser instead, which makes the
    concept linearly unrecoverable at that layer. ``layers`` overrides the direction's layer
    (e.g. every layer, which equals :func:`pipeline.orthogonalize.orthogonalize`)."""
    check_direction(lm, direction, force)
    targets = lm.check_layers(list(layers)) if layers is not None else [direction.layer]
    eraser = LeaceEraser.from_extras(direction.extras)
    ops = [Erase(layer, eraser, positions) if eraser is not None else Ablate(layer, direction.unit, positions)
           for layer in targets]
    return Intervention(lm, ops, positions, f"ablate({_name(direction)})")


def ablate_writers(lm: LoadedModel, direction: Direction, *, positions: Positions = "all",
                   force: bool = False) -> Intervention:
    """Project the unit direction out of the output of every residual-stream writer
    (``adapter.writers``: embeddings, attention output and MLP down projections).

    This is the run-time twin of :func:`pipeline.orthogonalize.orthogonalize` (equal up to
    float rounding). Ablating at every block *output* is not quite the same for sequential
    blocks (Llama, GPT-2): the MLP reads the mid-block stream, which still holds the
    attention output's component; only parallel-residual blocks (GPT-NeoX) coincide.
    A writer followed by a sandwich norm (Gemma 2/3, OLMo 2/3) loses the direction that norm
    maps onto ``u`` (:mod:`pipeline.models.writers`), so ``u`` stays out of the stream.
    """
    check_direction(lm, direction, force)
    units = writer_units(lm.adapter, lm.model, direction.unit)
    if not units:
        raise GnomonError(f"the {lm.adapter.family} adapter lists no residual writers")
    return Intervention(lm, [Ablate(name, v.float(), positions) for _layer, name, _m, v in units], positions,
                        f"ablate_writers({_name(direction)})")


def clamp(lm: LoadedModel, direction: Direction, value: float, *, positions: Positions = "all",
          force: bool = False) -> Intervention:
    """Set the component along the unit vector to ``value`` at every edited token."""
    check_direction(lm, direction, force)
    if not math.isfinite(value):
        raise GnomonError(f"clamp value must be finite, got {value}")
    return Intervention(lm, [Clamp(direction.layer, direction.unit, value, positions)], positions,
                        f"clamp({_name(direction)}, {value:g})")


def interpolate(lm: LoadedModel, direction: Direction, t: float, *, positions: Positions = "all",
                force: bool = False) -> Intervention:
    """Clamp the component to ``(1 - t) neg_mean + t pos_mean``: t=0 puts every token at the
    negative class mean, t=1 at the positive one; t outside [0, 1] extrapolates."""
    if not (math.isfinite(direction.pos_mean) and math.isfinite(direction.neg_mean)):
        raise GnomonError("interpolate needs the direction's class means (pos_mean, neg_mean)")
    value = (1.0 - t) * direction.neg_mean + t * direction.pos_mean
    iv = clamp(lm, direction, value, positions=positions, force=force)
    iv.label = f"interpolate({_name(direction)}, t={t:g})"
    return iv


def mix(lm: LoadedModel, weighted: Sequence[tuple[Direction, float]], unit: Unit = "separation", *,
        positions: Positions = "all", force: bool = False) -> Intervention:
    """Add several directions with weights, each at its own layer; effects add. Directions at
    the same layer are summed into one vector, so there is one hook (and one add) per layer."""
    if not weighted:
        raise GnomonError("mix needs at least one (direction, weight) pair")
    per_layer: dict[int, torch.Tensor] = {}
    for d, w in weighted:
        check_direction(lm, d, force)
        v = d.unit * (float(w) * scale_of(d, unit))
        per_layer[d.layer] = per_layer[d.layer] + v if d.layer in per_layer else v
    label = "mix(" + ", ".join(f"{_name(d)}x{w:g}" for d, w in weighted) + ")"
    return Intervention(lm, [Add(layer, v, positions) for layer, v in per_layer.items()], positions, label)


def _name(d: Direction) -> str:
    p = d.provenance
    return f"{p.concept or p.method or 'direction'}@L{p.layer}"
