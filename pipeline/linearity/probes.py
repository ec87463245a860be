"""Linear vs MLP probes with the same splits and the same tuning budget.

The gap between what a small MLP and a linear probe can decode from the same activations
is the part of a concept that is *not* linearly readable (Hewitt & Liang 2019, "Designing
and Interpreting Probes with Control Tasks", arXiv:1909.03368, on why probe capacity must
be fixed and reported). To make the comparison fair both probes get:

- the same rows (train to fit, val to choose, test to report),
- the same standardization (train mean and scale per coordinate: residual streams have
  outlier coordinates),
- the same tuning budget: one grid of ``len(WEIGHT_DECAYS)`` L2 strengths, the same
  optimizer (full-batch Adam), the same number of steps, chosen on validation AUROC
  (ties: validation accuracy, then the stronger penalty).

Every grid point of a probe trains at once as one batched model (one wide matrix product
over the grid), so a probe costs a few hundred small matrix products regardless of the grid size.

>>> r = compare_probes(train, val, test)                    # doctest: +SKIP
>>> r["linear"].test_accuracy, r["mlp"].test_accuracy      # doctest: +SKIP
(0.97, 0.98)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import torch

from pipeline import metrics as M
from pipeline.fit._common import standardize, torch_device
from pipeline.types import GnomonError

__all__ = ["WEIGHT_DECAYS", "HIDDEN", "STEPS", "LR", "ProbeResult", "Split", "train_probe",
           "compare_probes", "split_xy"]

ProbeKind = Literal["linear", "mlp"]
Split = tuple[np.ndarray, np.ndarray]
"""(x (n, d), y (n,) bool: True = positive class)."""

WEIGHT_DECAYS: tuple[float, ...] = (1e-3, 1e-2, 1e-1)
"""L2 grid shared by both probes (on standardized inputs; mean loss + wd/2 |W|^2)."""
HIDDEN = 32
"""Width of the MLP probe's one hidden layer (ReLU): small on purpose."""
STEPS = 200
"""Full-batch Adam steps for every grid point of both probes."""
LR = 1e-2


@dataclass(frozen=True)
class ProbeResult:
    """One probe's chosen grid point and its figures."""

    kind: str
    weight_decay: float
    val_auroc: float
    val_accuracy: float
    test_auroc: float
    test_accuracy: float
    train_accuracy: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def split_xy(pos: np.ndarray, neg: np.ndarray) -> Split:
    """Stack a contrast split into (x, y) with y True for ``pos`` rows."""
    x = np.concatenate([np.asarray(pos), np.asarray(neg)]).astype(np.float32, copy=False)
    y = np.r_[np.ones(len(pos), bool), np.zeros(len(neg), bool)]
    return x, y


class _Batched(torch.nn.Module):
    """``k`` independent probes on the same rows in one pass: (n, d) -> (n, k) logits.

    The inputs are shared, so the first layer of every grid point is one (n, d) x (d, k*h)
    product (one GEMM, not k small ones).
    """

    def __init__(self, kind: ProbeKind, k: int, d: int, hidden: int, gen: torch.Generator) -> None:
        super().__init__()
        self.kind, self.k, self.hidden = kind, k, hidden
        if kind == "linear":
            self.w = torch.nn.Parameter(torch.zeros(d, k))
            self.b = torch.nn.Parameter(torch.zeros(k))
        else:  # Kaiming-uniform like nn.Linear, seeded so reruns agree
            lim1, lim2 = 1.0 / d ** 0.5, 1.0 / hidden ** 0.5
            self.w1 = torch.nn.Parameter((torch.rand(d, k * hidden, generator=gen) * 2 - 1) * lim1)
            self.b1 = torch.nn.Parameter((torch.rand(k * hidden, generator=gen) * 2 - 1) * lim1)
            self.w2 = torch.nn.Parameter((torch.rand(k, hidden, generator=gen) * 2 - 1) * lim2)
            self.b2 = torch.nn.Parameter(torch.zeros(k))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "linear":
            return x @ self.w + self.b                                             # (n, k)
        h = torch.relu(x @ self.w1 + self.b1).view(x.shape[0], self.k, self.hidden)  # (n, k, hidden)
        return (h * self.w2).sum(-1) + self.b2                                    # (n, k)

    def penalty(self) -> torch.Tensor:
        """(k,) squared norm of each grid point's weights (biases are not penalised)."""
        if self.kind == "linear":
            return (self.w * self.w).sum(0)
        w1 = (self.w1 * self.w1).sum(0).view(self.k, self.hidden).sum(-1)
        return w1 + (self.w2 * self.w2).sum(-1)


def _metrics(logits: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(auroc, accuracy at logit 0) of one probe's logits."""
    if y.all() or not y.any():
        raise GnomonError("a probe split holds rows of only one class")
    return M.auroc(logits[y], logits[~y]), float(((logits > 0) == y).mean())


def train_probe(kind: ProbeKind, train: Split, val: Split, test: Split, *,
                weight_decays: tuple[float, ...] = WEIGHT_DECAYS, hidden: int = HIDDEN,
                steps: int = STEPS, lr: float = LR, seed: int = 0) -> ProbeResult:
    """Train the whole grid of one probe kind at once; return the grid point chosen on val."""
    (xtr, ytr), (xva, yva), (xte, yte) = train, val, test
    if xtr.ndim != 2 or xtr.shape[0] < 4:
        raise GnomonError(f"a probe needs a (rows, hidden) training array with a few rows, got {xtr.shape}")
    device = torch_device()
    mu, sd = standardize(np.asarray(xtr, np.float64))
    k = len(weight_decays)

    def prep(x: np.ndarray) -> torch.Tensor:  # (n, d), standardized with the train statistics
        return torch.as_tensor(((np.asarray(x, np.float64) - mu) / sd).astype(np.float32), device=device)

    xs = [prep(x) for x in (xtr, xva, xte)]
    yt = torch.as_tensor(ytr, dtype=torch.float32, device=device)[:, None].expand(-1, k)  # (n, k)
    n_pos = float(ytr.sum())
    weight = torch.where(yt > 0.5, 0.5 * len(ytr) / n_pos, 0.5 * len(ytr) / (len(ytr) - n_pos))
    wd = torch.as_tensor(weight_decays, dtype=torch.float32, device=device)
    gen = torch.Generator().manual_seed(seed)
    model = _Batched(kind, k, xtr.shape[1], hidden, gen).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        ce = torch.nn.functional.binary_cross_entropy_with_logits(model(xs[0]), yt, reduction="none")
        loss = ((ce * weight).mean(0) + 0.5 * wd * model.penalty()).sum()  # grid points are independent
        loss.backward()
        opt.step()
    with torch.no_grad():
        logits = [model(x).T.cpu().numpy().astype(np.float64) for x in xs]         # each (k, n)
    scores = []
    for i in range(k):
        va = _metrics(logits[1][i], yva)
        scores.append((va[0], va[1], weight_decays[i], i))
    _, _, _, best = max(scores)
    tr_acc = float(((logits[0][best] > 0) == ytr).mean())
    te = _metrics(logits[2][best], yte)
    return ProbeResult(kind=kind, weight_decay=weight_decays[best], val_auroc=scores[best][0],
                       val_accuracy=scores[best][1], test_auroc=te[0], test_accuracy=te[1],
                       train_accuracy=tr_acc)


def compare_probes(train: Split, val: Split, test: Split, **kw: Any) -> dict[str, ProbeResult]:
    """``{"linear": ..., "mlp": ...}`` on the same splits with the same budget."""
    return {kind: train_probe(kind, train, val, test, **kw) for kind in ("linear", "mlp")}  # type: ignore[arg-type]
