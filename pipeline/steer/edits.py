"""The rank-one edits of the residual stream, as protocol ops (:class:`pipeline.steer.protocol.Op`).

With ``h`` (b, T, D) the stream at the op's target, ``u`` the unit vector and ``s = h @ u`` the
component along it:

- :class:`Add`:    h + v                       (v = strength x unit x u; activation addition,
                                               Turner et al. 2023, arXiv:2308.10248)
- :class:`Ablate`: h - s u                     (directional ablation; Arditi et al. 2024,
                                               arXiv:2406.11717)
- :class:`Clamp`:  h + (value - s) u           (the component becomes exactly ``value``;
                                               ``interpolate`` clamps to (1 - t) neg_mean + t pos_mean)
- :class:`Erase`:  h - u_L ((h - mean) @ v_L)  (the LEACE eraser, Belrose et al. 2023,
                                               arXiv:2306.03819; see :mod:`pipeline.fit.leace`)

Each is built from a direction by :mod:`pipeline.steer.ops` (checks, units) and installed by
:mod:`pipeline.steer.protocol`. Tensors are cast once per (dtype, device).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from pipeline.fit.leace import LeaceEraser
from pipeline.steer.protocol import Op, Positions, State, Target, _Cast

__all__ = ["Ablate", "Add", "Clamp", "Erase"]


@dataclass(eq=False)
class _OneTarget(Op, _Cast):
    layer: Target

    @property
    def layers(self) -> tuple[Target, ...]:  # type: ignore[override]
        return (self.layer,)


@dataclass(eq=False)
class Add(_OneTarget):
    vector: torch.Tensor
    """(D,) or (b, 1, D): what is added (strength and unit already applied)."""
    positions: Positions = "all"

    def __call__(self, hidden: torch.Tensor, state: State) -> torch.Tensor:
        return hidden + self._t(hidden, v=self.vector)["v"]


@dataclass(eq=False)
class Ablate(_OneTarget):
    unit: torch.Tensor
    positions: Positions = "all"

    def __call__(self, hidden: torch.Tensor, state: State) -> torch.Tensor:
        u = self._t(hidden, u=self.unit)["u"]
        return hidden - (hidden @ u).unsqueeze(-1) * u                         # (b, T, D)


@dataclass(eq=False)
class Clamp(_OneTarget):
    unit: torch.Tensor
    value: float
    positions: Positions = "all"

    def __call__(self, hidden: torch.Tensor, state: State) -> torch.Tensor:
        u = self._t(hidden, u=self.unit)["u"]
        return hidden + (self.value - (hidden @ u).unsqueeze(-1)) * u


@dataclass(eq=False)
class Erase(_OneTarget):
    """Apply a LEACE eraser (:class:`pipeline.fit.leace.LeaceEraser`, the one used by fit and
    the linearity report; a Direction stores it in its extras) to the stream."""

    eraser: LeaceEraser
    positions: Positions = "all"

    def __call__(self, hidden: torch.Tensor, state: State) -> torch.Tensor:
        cache: dict[Any, LeaceEraser] = self.__dict__.setdefault("_on", {})
        if hidden.device not in cache:
            cache[hidden.device] = self.eraser.to(hidden.device)
        return cache[hidden.device](hidden)
