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

Every grid point of both probes of one input trains at once (one wide matrix product over
the grid and the two kinds), and :func:`train_probes` trains many inputs' probes (before and
after erasure, several layers) in one optimisation loop as one batched product, so the
per-step overhead that dominates small probes is paid once.

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
from pipeline.fit._common import gram_eigh, standardize, torch_device
from pipeline.types import GnomonError

__all__ = ["HIDDEN", "LR", "STEPS", "WEIGHT_DECAYS", "ProbeResult", "ProbeTask",
           "Split", "compare_probes", "split_xy", "train_probe", "train_probes"]

ProbeKind = Literal["linear", "mlp"]
Split = tuple[np.ndarray, np.ndarray]
"""(x (n, d), y (n,) bool: True = positive class)."""

WEIGHT_DECAYS: tuple[float, ...] = (1e-3, 1e-2, 1e-1)
"""L2 grid shared by both probes (on standardized inputs; mean loss + wd/2 |W|^2)."""
HIDDEN = 32
"""Width of the MLP probe's one hidden layer (ReLU): small on purpose."""
STEPS = 100
"""Full-batch Adam steps for every grid point of both probes. 100 and 150 give the same figures
on the seven shipped concepts (SmolLM2, every third layer: per-concept means of the linear,
MLP and erased-MLP test accuracies within 0.012, no sign bias; bench/RESULTS.md ``## report``)."""
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


_ALIGN = 16


def _aligned(n: int) -> int:
    return -(-n // _ALIGN) * _ALIGN


class _Joint(torch.nn.Module):
    """The probes of ``g`` inputs of one shape, each input with a linear probe and/or an MLP
    probe of ``k`` grid points, in one pass: (g, n, r) -> {kind: (g, n, k) logits}.

    Everything that multiplies an input is one product: the MLP's first layer for every
    grid point (``k * hidden`` columns) and the linear probe's ``k`` columns form one
    (r, k * hidden + k) matrix per input, and the ``g`` inputs (e.g. every layer's, before
    and after erasure) are one batched product. A narrow product of its own (``k``
    columns) costs about as much as the wide one on a CPU, so the linear probes ride along
    almost free. Every probe starts from the seeded initialisation it would get alone
    (``g`` copies of one draw; the linear probe starts at zero).

    The product's inner and outer sizes are padded to multiples of :data:`_ALIGN` (inputs
    with zero columns, weights with zero rows and unused zero columns): the CPU's GEMM
    kernels run ~15-25% faster on aligned shapes than at 339 x 99. Padding changes no
    output and no gradient: a zero input column gives its weight row no data gradient and a
    zero row no penalty gradient; an unused column gives its weights no gradient at all, so
    Adam leaves every padding entry at exactly zero.
    """

    def __init__(self, kinds: tuple[ProbeKind, ...], k: int, d: int, hidden: int, gen: torch.Generator,
                 g: int = 1) -> None:
        super().__init__()
        self.kinds, self.k, self.hidden = kinds, k, hidden
        self.m = k * hidden if "mlp" in kinds else 0          # the MLP's columns come first
        cols, bias = [], []
        if "mlp" in kinds:  # Kaiming-uniform like nn.Linear, seeded so reruns agree
            lim1, lim2 = 1.0 / d ** 0.5, 1.0 / hidden ** 0.5
            cols.append((torch.rand(d, k * hidden, generator=gen) * 2 - 1) * lim1)
            bias.append((torch.rand(k * hidden, generator=gen) * 2 - 1) * lim1)
            w2 = (torch.rand(k, hidden, generator=gen) * 2 - 1) * lim2
            self.w2 = torch.nn.Parameter(w2.expand(g, -1, -1).clone())                  # (g, k, hidden)
            self.b2 = torch.nn.Parameter(torch.zeros(g, k))
        if "linear" in kinds:
            cols.append(torch.zeros(d, k))
            bias.append(torch.zeros(k))
        used = self.m + k * ("linear" in kinds)
        w = torch.zeros(_aligned(d), _aligned(used))
        w[:d, :used] = torch.cat(cols, 1)
        b = torch.zeros(w.shape[1])
        b[:used] = torch.cat(bias)
        self.w = torch.nn.Parameter(w.expand(g, -1, -1).clone())                        # (g, d', m [+ k] + pad)
        self.b = torch.nn.Parameter(b.expand(g, -1).clone())

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``x``: (g, n, d') already padded to the weights' rows (:func:`train_probes` pads once)."""
        hh = torch.baddbmm(self.b[:, None, :], x, self.w)                               # (g, n, m [+ k] + pad)
        out = {}
        if self.m:
            h = torch.relu(hh[..., :self.m]).view(x.shape[0], x.shape[1], self.k, self.hidden)
            out["mlp"] = (h * self.w2[:, None]).sum(-1) + self.b2[:, None, :]           # (g, n, k)
        if "linear" in self.kinds:
            out["linear"] = hh[..., self.m:self.m + self.k]
        return out

    def penalty(self) -> dict[str, torch.Tensor]:
        """Per kind, the (g, k) squared norm of each grid point's weights (biases are not
        penalised)."""
        sq = (self.w * self.w).sum(1)                                                   # (g, m [+ k] + pad)
        out = {}
        if self.m:
            out["mlp"] = sq[:, :self.m].view(-1, self.k, self.hidden).sum(-1) + (self.w2 * self.w2).sum(-1)
        if "linear" in self.kinds:
            out["linear"] = sq[:, self.m:self.m + self.k]
        return out


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
    # Directions with a singular value under 1e-5 of the largest are dropped (a probe would
    # need 1e5 times the weight there to move a training logit).
    _, v = gram_eigh(z, rtol=1e-10)                                                # (d, r)
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
                 hidden: int = HIDDEN, steps: int = STEPS, lr: float = LR, seed: int = 0,
                 test_logits: dict[int, np.ndarray] | None = None) -> list[ProbeResult]:
    """Train every task's whole grid in one optimisation loop; one result per task.

    The loss is the sum of the tasks' losses and Adam's update is per coordinate, so each
    task trains exactly as it would alone (same seeded init, same gradients); sharing the
    loop only shares the per-step overhead, which dominates for small probes. Tasks on the
    same split arrays (the linear and the MLP probe of one layer) share one input and one
    product (:class:`_Joint`). Each task returns the grid point chosen on its validation
    split (``test_logits`` gets each task's chosen test logits, by index).

    Why 83 lines: the point is one optimisation loop over every task's grid; setting up the
    joint parameters, the loop and reading out each task's chosen grid point share the
    stacked tensors and their per-task slices.
    """
    if not tasks:
        return []
    device = torch_device()
    k = len(weight_decays)
    wd = torch.as_tensor(weight_decays, dtype=torch.float32, device=device)
    inputs: dict[tuple[int, ...], int] = {}      # the same six arrays -> one input (its kinds train together)
    prepared: list[tuple[list[torch.Tensor], torch.Tensor, torch.Tensor, set[str]]] = []
    bases: dict[int, Any] = {}                   # inputs on the same train array share one basis
    input_of: list[int] = []                     # per task, its input
    for t in tasks:
        key = tuple(id(a) for split in (t.train, t.val, t.test) for a in split)
        if key in inputs:
            prepared[inputs[key]][3].add(t.kind)
            input_of.append(inputs[key])
            continue
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
        inputs[key] = len(prepared)
        input_of.append(inputs[key])
        prepared.append((xs, yt, weight, {t.kind}))
    # Inputs of one shape asking for the same kinds train as one batched model (one product per step).
    groups: dict[tuple[Any, ...], list[int]] = {}
    for i, (xs, _y, _w, kinds) in enumerate(prepared):
        groups.setdefault((tuple(sorted(kinds)), *(tuple(x.shape) for x in xs)), []).append(i)
    stacks = []
    for (kinds, *_shapes), idx in groups.items():
        xs = [torch.stack([prepared[i][0][s] for i in idx]) for s in range(3)]            # (g, n, r)
        r = xs[0].shape[2]
        xs = [torch.nn.functional.pad(x, (0, _aligned(r) - r)) for x in xs]               # once, not per step
        yt = torch.stack([prepared[i][1] for i in idx])                                   # (g, n, k)
        weight = torch.stack([prepared[i][2] for i in idx])
        model = _Joint(kinds, k, r, hidden, torch.Generator().manual_seed(seed), g=len(idx))
        stacks.append((idx, model.to(device), xs, yt, weight))
    opt = _adam([p for _i, m, *_ in stacks for p in m.parameters()], lr)
    for _ in range(steps):
        opt.zero_grad()
        loss = torch.zeros((), device=device)
        for _i, m, xs, yt, weight in stacks:
            penalty = m.penalty()
            for kind, logits in m(xs[0]).items():   # inputs, kinds and grid points independent
                ce = torch.nn.functional.binary_cross_entropy_with_logits(logits, yt, reduction="none")
                loss = loss + ((ce * weight).mean(1) + 0.5 * wd * penalty[kind]).sum()
        loss.backward()
        opt.step()
    logits_of: dict[tuple[int, str], list[np.ndarray]] = {}
    with torch.no_grad():
        for idx, m, xs, _yt, _w in stacks:
            split_logits = [{kind: lg.cpu().numpy().astype(np.float64) for kind, lg in m(x).items()} for x in xs]
            for j, i in enumerate(idx):
                for kind in split_logits[0]:
                    logits_of[i, kind] = [lg[kind][j].T for lg in split_logits]          # each (k, n)
    out = []
    for t, i in zip(tasks, input_of):
        logits = logits_of[i, t.kind]
        scores = [(*_metrics(logits[1][j], t.val[1]), weight_decays[j], j) for j in range(k)]
        best = max(scores)[3]
        te = _metrics(logits[2][best], t.test[1])
        if test_logits is not None:
            test_logits[len(out)] = logits[2][best]
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
