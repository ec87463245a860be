"""Linear vs MLP probes with the same splits and the same tuning budget.

The gap between what a small MLP and a linear probe can decode from the same activations
is the part of a concept that is *not* linearly readable (Hewitt & Liang 2019, "Designing
and Interpreting Probes with Control Tasks", arXiv:1909.03368, on why probe capacity must
be fixed and reported). To make the comparison fair both probes get:

- the same rows (train to fit, val to choose, test to report),
- the same standardization (train mean and scale per coordinate: residual streams have
  outlier coordinates), expressed in the span of the training rows when they are fewer
  than the width (lossless for L2-regularised probes, see :func:`_row_space`),
- the same tuning budget: one grid of ``len(WEIGHT_DECAYS)`` L2 strengths, the same
  optimizer (full-batch Adam), the same number of steps, chosen on validation AUROC
  (ties: validation accuracy, then the stronger penalty).

Every grid point of a probe trains at once as one batched model (one wide matrix product
over the grid), and :func:`train_probes` trains many probes (linear and MLP, before and
after erasure, several layers) in one optimisation loop, so the per-step overhead that
dominates small probes is paid once.

>>> r = compare_probes(train, val, test)                    # doctest: +SKIP
>>> r["linear"].test_accuracy, r["mlp"].test_accuracy      # doctest: +SKIP
(0.97, 0.98)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import torch

from pipeline import metrics as M
from pipeline.fit._common import standardize, torch_device
from pipeline.types import GnomonError

__all__ = [
    "HIDDEN",
    "LR",
    "STEPS",
    "WEIGHT_DECAYS",
    "ProbeResult",
    "ProbeTask",
    "Split",
    "compare_probes",
    "split_xy",
    "train_probe",
    "train_probes",
]

ProbeKind = Literal["linear", "mlp"]
Split = tuple[np.ndarray, np.ndarray]
"""(x (n, d), y (n,) bool: True = positive class)."""

WEIGHT_DECAYS: tuple[float, ...] = (1e-3, 1e-2, 1e-1)
"""L2 grid shared by both probes (on standardized inputs; mean loss + wd/2 |W|^2)."""
HIDDEN = 32
"""Width of the MLP probe's one hidden layer (ReLU): small on purpose."""
STEPS = 150
"""Full-batch Adam steps for every grid point of both probes."""
LR = 2e-2


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
    """``g`` probes of one kind on inputs of one shape, each with ``k`` grid points, in one
    pass: (g, n, d) -> (g, n, k) logits.

    The grid points of a probe share its inputs, so its first layer is one (n, d) x (d, k*h)
    product, and the ``g`` probes (e.g. every layer's, before and after erasure) are one
    batched product; every probe starts from the same seeded initialisation it would get
    alone (``g`` copies of one draw).
    """

    def __init__(self, kind: ProbeKind, k: int, d: int, hidden: int, gen: torch.Generator, g: int = 1) -> None:
        super().__init__()
        self.kind, self.k, self.hidden = kind, k, hidden
        if kind == "linear":
            self.w = torch.nn.Parameter(torch.zeros(g, d, k))
            self.b = torch.nn.Parameter(torch.zeros(g, k))
        else:  # Kaiming-uniform like nn.Linear, seeded so reruns agree
            lim1, lim2 = 1.0 / d ** 0.5, 1.0 / hidden ** 0.5
            w1 = (torch.rand(d, k * hidden, generator=gen) * 2 - 1) * lim1
            b1 = (torch.rand(k * hidden, generator=gen) * 2 - 1) * lim1
            w2 = (torch.rand(k, hidden, generator=gen) * 2 - 1) * lim2
            self.w1 = torch.nn.Parameter(w1.expand(g, -1, -1).clone())
            self.b1 = torch.nn.Parameter(b1.expand(g, -1).clone())
            self.w2 = torch.nn.Parameter(w2.expand(g, -1, -1).clone())
            self.b2 = torch.nn.Parameter(torch.zeros(g, k))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "linear":
            return torch.baddbmm(self.b[:, None, :], x, self.w)                           # (g, n, k)
        h = torch.relu(torch.baddbmm(self.b1[:, None, :], x, self.w1))                    # (g, n, k*hidden)
        h = h.view(x.shape[0], x.shape[1], self.k, self.hidden)
        return (h * self.w2[:, None]).sum(-1) + self.b2[:, None, :]                       # (g, n, k)

    def penalty(self) -> torch.Tensor:
        """(g, k) squared norm of each grid point's weights (biases are not penalised)."""
        if self.kind == "linear":
            return (self.w * self.w).sum(1)
        w1 = (self.w1 * self.w1).sum(1).view(-1, self.k, self.hidden).sum(-1)
        return w1 + (self.w2 * self.w2).sum(-1)


def _metrics(logits: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(auroc, accuracy at logit 0) of one probe's logits."""
    if y.all() or not y.any():
        raise GnomonError("a probe split holds rows of only one class")
    return M.auroc(logits[y], logits[~y]), float(((logits > 0) == y).mean())


def _row_space(xtr: np.ndarray) -> Any:
    """Standardize with the train statistics, then (when the train rows span fewer than
    ``d`` dimensions) express every row in an orthonormal basis of the centred train rows.

    An L2-regularised probe's optimal first-layer weights lie in that span (a component
    orthogonal to every training row changes no training logit and only adds penalty),
    and on standardized data the train mean is 0, so the basis loses nothing the probe
    could learn; with n < d rows (the usual case: hundreds of examples, d >= 576) it
    shrinks every product of the probe from d to n - 1 columns.
    """
    mu, sd = standardize(xtr)
    z = (xtr - mu) / sd                                                            # (n, d)
    if z.shape[0] - 1 >= z.shape[1]:
        return lambda x: (np.asarray(x, np.float64) - mu) / sd
    _, s, vt = np.linalg.svd(z, full_matrices=False)
    v = vt[s > 1e-9 * max(float(s.max(initial=0.0)), 1e-300)].T                   # (d, r)
    if v.shape[1] == 0:  # every training row identical (e.g. the embedding of one token): nothing to learn
        v = np.zeros((z.shape[1], 1))
    return lambda x: ((np.asarray(x, np.float64) - mu) / sd) @ v                   # (n, r)


@dataclass(frozen=True)
class ProbeTask:
    """One probe to train: its kind and its three splits."""

    kind: ProbeKind
    train: Split
    val: Split
    test: Split


def train_probes(tasks: Sequence[ProbeTask], *, weight_decays: tuple[float, ...] = WEIGHT_DECAYS,
                 hidden: int = HIDDEN, steps: int = STEPS, lr: float = LR, seed: int = 0) -> list[ProbeResult]:
    """Train every task's whole grid in one optimisation loop; one result per task.

    The loss is the sum of the tasks' losses and Adam's update is per coordinate, so each
    task trains exactly as it would alone (same seeded init, same gradients); sharing the
    loop only shares the per-step overhead, which dominates for small probes. Each task
    returns the grid point chosen on its validation split.
    """
    if not tasks:
        return []
    device = torch_device()
    k = len(weight_decays)
    wd = torch.as_tensor(weight_decays, dtype=torch.float32, device=device)
    prepared = []
    bases: dict[int, Any] = {}   # tasks on the same train array (linear and MLP) share one basis
    for t in tasks:
        (xtr, ytr), (xva, _), (xte, _) = t.train, t.val, t.test
        if xtr.ndim != 2 or xtr.shape[0] < 4:
            raise GnomonError(f"a probe needs a (rows, hidden) training array with a few rows, got {xtr.shape}")
        basis = bases.get(id(xtr))
        if basis is None:
            basis = bases[id(xtr)] = _row_space(np.asarray(xtr, np.float64))
        xs = [torch.as_tensor(basis(x).astype(np.float32), device=device) for x in (xtr, xva, xte)]  # (n, r)
        yt = torch.as_tensor(ytr, dtype=torch.float32, device=device)[:, None].expand(-1, k)  # (n, k)
        n_pos = float(ytr.sum())
        weight = torch.where(yt > 0.5, 0.5 * len(ytr) / n_pos, 0.5 * len(ytr) / (len(ytr) - n_pos))
        prepared.append((xs, yt, weight))
    # Tasks of one kind and one shape train as one batched model (one product per step).
    groups: dict[tuple[Any, ...], list[int]] = {}
    for i, (t, (xs, _y, _w)) in enumerate(zip(tasks, prepared)):
        groups.setdefault((t.kind, *(tuple(x.shape) for x in xs)), []).append(i)
    stacks = []
    for (kind, *_shapes), idx in groups.items():
        xs = [torch.stack([prepared[i][0][s] for i in idx]) for s in range(3)]            # (g, n, r)
        yt = torch.stack([prepared[i][1] for i in idx])                                   # (g, n, k)
        weight = torch.stack([prepared[i][2] for i in idx])
        model = _Batched(kind, k, xs[0].shape[2], hidden, torch.Generator().manual_seed(seed), g=len(idx))
        stacks.append((idx, model.to(device), xs, yt, weight))
    opt = _adam([p for _i, m, *_ in stacks for p in m.parameters()], lr)
    for _ in range(steps):
        opt.zero_grad()
        loss = torch.zeros((), device=device)
        for _i, m, xs, yt, weight in stacks:
            ce = torch.nn.functional.binary_cross_entropy_with_logits(m(xs[0]), yt, reduction="none")
            loss = loss + ((ce * weight).mean(1) + 0.5 * wd * m.penalty()).sum()  # tasks and grid points independent
        loss.backward()
        opt.step()
    per_task: dict[int, list[np.ndarray]] = {}
    with torch.no_grad():
        for idx, m, xs, _yt, _w in stacks:
            split_logits = [m(x).cpu().numpy().astype(np.float64) for x in xs]            # each (g, n, k)
            for j, i in enumerate(idx):
                per_task[i] = [lg[j].T for lg in split_logits]                           # each (k, n)
    out = []
    for i, t in enumerate(tasks):
        logits = per_task[i]
        scores = [(*_metrics(logits[1][j], t.val[1]), weight_decays[j], j) for j in range(k)]
        best = max(scores)[3]
        te = _metrics(logits[2][best], t.test[1])
        out.append(ProbeResult(kind=t.kind, weight_decay=weight_decays[best], val_auroc=scores[best][0],
                               val_accuracy=scores[best][1], test_auroc=te[0], test_accuracy=te[1],
                               train_accuracy=float(((logits[0][best] > 0) == t.train[1]).mean())))
    return out


def _adam(params: list[torch.Tensor], lr: float) -> torch.optim.Optimizer:
    """Adam with the fused kernel where torch has it for the device (CPU and CUDA since
    torch 2.4): one pass over every parameter per step instead of a loop of elementwise
    ops; on the report's ~2 M probe parameters that is most of a step's non-matmul time."""
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(params, lr=lr)


def train_probe(kind: ProbeKind, train: Split, val: Split, test: Split, **kw: Any) -> ProbeResult:
    """One probe kind's grid, chosen on ``val``."""
    return train_probes([ProbeTask(kind, train, val, test)], **kw)[0]


def compare_probes(train: Split, val: Split, test: Split, **kw: Any) -> dict[str, ProbeResult]:
    """``{"linear": ..., "mlp": ...}`` on the same splits with the same budget (one loop)."""
    lin, mlp = train_probes([ProbeTask("linear", train, val, test), ProbeTask("mlp", train, val, test)], **kw)
    return {"linear": lin, "mlp": mlp}
