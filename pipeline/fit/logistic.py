"""L2-regularised logistic-regression probe (Alain & Bengio 2016, "Understanding
intermediate layers using linear classifier probes", arXiv:1610.01644).

The probe's weight is the direction the positive class's log-odds grow along. Inputs
are standardized per coordinate before training (residual streams have outlier
coordinates that wreck the conditioning of the problem), and the learned weight ``w``
is mapped back to the raw space as ``w / sd``: ``w . (x - mu) / sd = (w / sd) . x + c``.
Note the L2 penalty therefore acts in the standardized space.

Full-batch L-BFGS with a strong-Wolfe line search on the GPU when there is one; the
loss is convex, so the result does not depend on the (zero) initialisation. Classes are
weighted to count equally by default, so an unbalanced contrast does not bias the bias.
"""

from __future__ import annotations

import numpy as np
import torch

from pipeline.fit._common import (
    FitResult,
    check_paired,
    orient,
    standardize,
    torch_device,
)
from pipeline.fit._params import Param


def train_logistic(x: np.ndarray, y: np.ndarray, *, l2: float = 1e-2, max_iter: int = 200,
                   balanced: bool = True) -> tuple[np.ndarray, float]:
    """Fit ``P(y=1|x) = sigmoid(w . x + b)`` on raw ``x`` (n, d); return raw-space (w, b).

    Minimises mean (class-weighted) cross-entropy + ``l2 / 2 * |w|^2`` in standardized
    coordinates.
    """
    device = torch_device()
    mu, sd = standardize(x)
    xs = torch.as_tensor((x - mu) / sd, dtype=torch.float32, device=device)  # (n, d)
    yt = torch.as_tensor(y, dtype=torch.float32, device=device)  # (n,)
    n_pos = float(yt.sum())
    n_neg = float(yt.numel()) - n_pos
    if balanced:
        weight = torch.where(yt > 0.5, 0.5 * yt.numel() / n_pos, 0.5 * yt.numel() / n_neg)
    else:
        weight = torch.ones_like(yt)
    w = torch.zeros(x.shape[1], device=device, requires_grad=True)
    b = torch.zeros((), device=device, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, tolerance_grad=1e-9,
                            tolerance_change=1e-12, history_size=20, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        logits = xs @ w + b
        loss = (torch.nn.functional.binary_cross_entropy_with_logits(logits, yt, reduction="none")
                * weight).mean() + 0.5 * l2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    ws = w.detach().to("cpu", torch.float64).numpy()
    w_raw = ws / sd
    b_raw = float(b.detach().cpu()) - float(w_raw @ mu)
    return w_raw, b_raw


PARAMS = (
    Param("l2", "float", 1e-2, "L2 penalty in standardized coordinates", min=0.0),
    Param("max_iter", "int", 200, "L-BFGS iterations", min=1),
    Param("balanced", "bool", True, "weight the classes equally"),
)
"""``--param logistic.NAME=VALUE``: checked before any work (:mod:`pipeline.fit._params`)."""


def fit_logistic(pos: np.ndarray, neg: np.ndarray, *, paired: bool = False, l2: float = 1e-2,
                 max_iter: int = 200, balanced: bool = True) -> FitResult:
    if paired:
        check_paired(pos, neg, "logistic")
    x = np.concatenate([pos, neg])
    y = np.r_[np.ones(pos.shape[0]), np.zeros(neg.shape[0])]
    w, _ = train_logistic(x, y, l2=l2, max_iter=max_iter, balanced=balanced)
    return FitResult(vector=orient(w, pos, neg),
                     params={"l2": l2, "max_iter": max_iter, "balanced": balanced})
