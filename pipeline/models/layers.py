"""A request's layers, resolved once against a model's depth.

Layers are numbered as Hugging Face numbers ``hidden_states``: 0 is the embedding output,
L the output of block L, so a model with ``num_layers`` blocks has layers 0..num_layers.
:func:`check_layers` is the one check (at the edge, where a request is resolved);
everything below receives a :class:`Layers` and trusts it (:func:`ensure_layers`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pipeline.types import GnomonError

__all__ = ["Layers", "check_layers", "ensure_layers"]


class Layers(tuple[int, ...]):
    """Layers resolved against a model with ``num_layers`` blocks: concrete (never "all"),
    sorted, unique, in range. Made only by :func:`check_layers`, once, where a request is
    resolved; code below trusts it (:func:`ensure_layers`) instead of checking again."""

    num_layers: int

    def __new__(cls, layers: Sequence[int] = (), num_layers: int = -1) -> Layers:
        obj = super().__new__(cls, layers)
        obj.num_layers = num_layers
        return obj

    def __reduce__(self) -> tuple[Any, ...]:   # travels to Ray workers with its depth
        return (Layers, (tuple(self), self.num_layers))


def check_layers(layers: Sequence[int] | None, num_layers: int, model_id: str) -> Layers:
    """Requested layers (``None`` = all) of a model with ``num_layers`` blocks, sorted."""
    if layers is None:
        return Layers(range(num_layers + 1), num_layers)
    bad = [layer for layer in layers if not 0 <= layer <= num_layers]
    if bad:
        raise GnomonError(f"layer {bad[0]} is out of range for {model_id}: valid layers are 0..{num_layers}")
    return Layers(sorted(set(layers)), num_layers)


def ensure_layers(layers: Sequence[int] | None, num_layers: int, model_id: str) -> Layers:
    """``layers`` if they were already resolved against a model of this depth, else checked now."""
    if isinstance(layers, Layers) and layers.num_layers == num_layers:
        return layers
    return check_layers(layers, num_layers, model_id)
