"""Steering, erasing, interpolating and mixing directions at run time, and greedy generation
under those interventions. See :mod:`pipeline.steer.interventions` for the maths."""

from pipeline.steer.generate import Generation, continuation_texts, encode_prompts, generate, greedy
from pipeline.steer.interventions import (
    POSITIONS,
    UNITS,
    Edit,
    Intervention,
    Positions,
    Unit,
    apply,
    check_direction,
    scale_of,
)
from pipeline.steer.ops import ablate, ablate_writers, add, add_rows, clamp, interpolate, mix

__all__ = [
    "POSITIONS",
    "UNITS",
    "Edit",
    "Generation",
    "Intervention",
    "Positions",
    "Unit",
    "ablate",
    "ablate_writers",
    "add",
    "add_rows",
    "apply",
    "check_direction",
    "clamp",
    "continuation_texts",
    "encode_prompts",
    "generate",
    "greedy",
    "interpolate",
    "mix",
    "scale_of",
]
