"""Steering, erasing, interpolating and mixing directions at run time, and greedy generation
under those interventions. Every edit of the residual stream is a protocol op
(:mod:`pipeline.steer.protocol`, :mod:`pipeline.steer.edits`) installed by one hook installer;
the constructors (:mod:`pipeline.steer.ops`) build them from directions."""

from pipeline.steer.edits import Ablate, Add, Clamp, Erase
from pipeline.steer.generate import (
    Generation,
    continuation_texts,
    encode_prompts,
    generate,
    generate_rows,
    greedy,
)
from pipeline.steer.interventions import (
    POSITIONS,
    UNITS,
    Intervention,
    Positions,
    Unit,
    apply,
    check_direction,
    flatten,
    ops_of,
    scale_of,
)
from pipeline.steer.ops import (
    ablate,
    ablate_writers,
    add,
    add_rows,
    clamp,
    interpolate,
    mix,
)
from pipeline.steer.protocol import Op, State, applying, steering

__all__ = [
    "POSITIONS",
    "UNITS",
    "Ablate",
    "Add",
    "Clamp",
    "Erase",
    "Generation",
    "Intervention",
    "Op",
    "Positions",
    "State",
    "Unit",
    "ablate",
    "ablate_writers",
    "add",
    "add_rows",
    "apply",
    "applying",
    "check_direction",
    "clamp",
    "continuation_texts",
    "encode_prompts",
    "flatten",
    "generate",
    "generate_rows",
    "greedy",
    "interpolate",
    "mix",
    "ops_of",
    "scale_of",
    "steering",
]
