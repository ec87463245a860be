"""Which direction each residual writer must stop writing so the stream never holds ``u``.

For a writer added to the stream as is (embeddings, o_proj, down_proj, MoE experts) that is
``u`` itself. For a writer followed by a sandwich norm (Gemma 2/3, OLMo 2/3:
``stream += norm(W x)`` with ``norm(z) = g * z / s(z)``, ``s(z)`` a scalar) it is the unit
vector along ``g * u``: ``u . norm(z) = (g * u) . z / s(z)``, zero exactly when ``z`` has no
component along ``g * u``. Removing that component from the writer's output (at run time,
:func:`pipeline.steer.ablate_writers`) or from its weights
(:func:`pipeline.orthogonalize.orthogonalize`) gives the same model, and in both the residual
stream has no component along ``u`` at any layer.

What this cannot give for sandwich-norm families: removing ``u`` from the *norm's* output
(``y - (u . y) u``). The norm's gain and its division by ``s(z)`` sit between the weights and
the stream, so no weight edit reproduces that; the rescaling by ``s`` also moves the other
components slightly. The two removals agree on the stream's ``u`` component (zero) and differ
elsewhere.
"""

from __future__ import annotations

from typing import Any

import torch

from pipeline.models.adapters import LayerAdapter
from pipeline.types import GnomonError

_RMS_FORM_TOL = 1e-4


@torch.no_grad()
def rms_gain(norm: Any, width: int) -> torch.Tensor:
    """The gain ``g`` (up to a positive scale) of ``norm``, checked to be of the form
    ``g * z / s(z)`` on random inputs: a LayerNorm (which subtracts the mean) or anything else
    is refused, since then no direction of ``z`` maps to ``u`` alone."""
    p = next(norm.parameters(), None)
    dtype, device = (p.dtype, p.device) if p is not None else (torch.float32, torch.device("cpu"))
    g = norm(torch.ones(1, width, dtype=dtype, device=device))[0].double()            # (D,)
    z = torch.randn(4, width, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    y = norm(z.to(device, dtype)).double().cpu()                                        # (4, D)
    gz = g.cpu() * z
    scale = (y * gz).sum(-1, keepdim=True) / (gz * gz).sum(-1, keepdim=True)          # (4, 1)
    err = float(((y - scale * gz).norm(dim=-1) / y.norm(dim=-1).clamp_min(1e-30)).max())
    tol = _RMS_FORM_TOL if dtype == torch.float32 or dtype == torch.float64 else 1e-2
    if err > tol:
        raise GnomonError(f"{type(norm).__name__} is not an RMS-style norm g * z / s(z) (relative misfit {err:.1e}): "
                          "gnomon cannot tell which direction its writer must stop writing")
    return g


def writer_units(adapter: LayerAdapter, model: Any, u: torch.Tensor) -> list[tuple[int, str, Any, torch.Tensor]]:
    """``(layer, writer name, module, unit vector to remove from its output)`` for every writer.

    A writer whose norm gain is zero all along ``u`` never writes along it and is left out.
    """
    u64 = u.detach().to(torch.float64).cpu()
    width = int(u64.numel())
    out: list[tuple[int, str, Any, torch.Tensor]] = []
    for layer, name, module in adapter.writers(model):
        norm = adapter.writer_norm(model, name)
        if norm is None:
            out.append((layer, name, module, u64))
            continue
        v = rms_gain(norm, width).cpu() * u64
        size = float(v.norm())
        if size <= 1e-12 * float(u64.norm()):
            continue
        out.append((layer, name, module, v / size))
    return out
