"""Fitting's per-item function: one (layer, position) group, every requested method.

A group reads its contrast set (train/val/test) from the store once, through DuckDB, and
fits each method on it: the read, not the fit, is most of a cheap method's time, so
reading once per group instead of once per method is the saving. A method that yields no
direction at a group (e.g. identical class statistics at the embedding layer) is recorded
as a failure and the sweep goes on.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from jobs.runtime.results import GroupResult
from pipeline.types import GnomonError

# lazy: numpy, pyarrow, threadpoolctl, torch (heavy; imported where used)

__all__ = ["FitFailure", "GroupTask", "fit_layer", "plan_groups"]


@dataclass(frozen=True)
class GroupTask:
    """One (layer, position) of one (model, dataset): what a fitting task needs, nothing more."""

    home: str
    model: str
    revision: str
    dataset: str
    concept: str
    positive: str
    negative: str
    layer: int
    position: str
    methods: tuple[str, ...]
    params: dict[str, dict[str, Any]]
    fingerprint: str
    hidden_size: int
    dataset_hash: str


@dataclass(frozen=True)
class FitFailure:
    """A group that produced no direction (e.g. identical class statistics at layer 0)."""

    task: Any
    error: str
    method: str = field(default="")


def plan_groups(collected: Any, *, concept: str, positive: str, negative: str, positions: Sequence[str],
                methods: Sequence[str], params: dict[str, dict[str, Any]], home: str) -> list[GroupTask]:
    """One task per (position, layer) the collection made complete (its ``CollectResult``)."""
    return [GroupTask(home=home, model=collected.model, revision=collected.revision, dataset=collected.dataset,
                      concept=concept, positive=positive, negative=negative, layer=layer, position=position,
                      methods=tuple(methods), params={m: dict(params.get(m, {})) for m in methods},
                      fingerprint=collected.fingerprint, hidden_size=collected.hidden_size,
                      dataset_hash=collected.dataset_hash)
            for position in positions for layer in collected.layers]


def fit_layer(task: GroupTask) -> Any:
    """Fit every method of one (layer, position) group: the unit both executors schedule.

    Returns a :class:`jobs.runtime.results.GroupResult`.
    """
    import torch
    from threadpoolctl import threadpool_limits

    # Small (n ~ 10^2-10^3, d ~ 10^3) problems: one thread each (torch and BLAS) is faster
    # than threads fighting over the cores, and the executors run one group per CPU, so
    # local and Ray run the same single-threaded code.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1):
            return _fit_layer(task)
    finally:
        torch.set_num_threads(threads)


def _fit_layer(task: GroupTask) -> Any:
    from pipeline.contrast import StoreDB, contrast_splits
    from pipeline.direction import Provenance
    from pipeline.fit import fit_direction

    t0 = time.perf_counter()
    only = {"model": task.model, "revision": task.revision, "dataset": task.dataset, "layer": task.layer,
            "fingerprint": task.fingerprint}
    with StoreDB(task.home, memory_limit="1GB", threads=1, only=only) as db:   # this layer's shards only
        sets = contrast_splits(db, model=task.model, revision=task.revision, dataset=task.dataset,
                               layer=task.layer, position=task.position, positive=task.positive,
                               negative=task.negative, dtype=None,  # float16 as stored: fitting widens to float64
                               fingerprint=task.fingerprint)
    if "train" not in sets:
        raise GnomonError(f"dataset {task.dataset} has no train split rows for {task.positive}/{task.negative}")
    out = GroupResult(layer=task.layer, position=task.position, read_seconds=time.perf_counter() - t0)
    train = sets["train"]
    base = Provenance(model_id=task.model, revision=task.revision, fingerprint=task.fingerprint,
                      hidden_size=task.hidden_size, layer=task.layer, position=task.position,
                      concept=task.concept, positive=task.positive, negative=task.negative,
                      dataset=task.dataset, dataset_hash=task.dataset_hash)
    evals = {s: (c.pos, c.neg) for s, c in sets.items() if s in ("val", "test")}
    t1 = time.perf_counter()
    for method in task.methods:
        try:
            d = fit_direction(method, train.pos, train.neg, base=base, paired=train.paired,
                              eval_sets=evals, **task.params.get(method, {}))
            out.directions.append(d)
            out.scores[method] = _projections(d, evals)
        except GnomonError as e:
            # e.g. identical class statistics at the embedding layer: record, keep sweeping
            out.failures.append((method, str(e)))
    out.fit_seconds = time.perf_counter() - t1
    return out


def _projections(d: Any, evals: dict[str, tuple[Any, Any]]) -> dict[str, tuple[Any, Any]]:
    """Held-out projections on ``d``'s unit vector, per split (float32; widened where used)."""
    import numpy as np

    unit = d.unit.double().numpy()
    return {s: tuple((np.asarray(x, np.float64) @ unit).astype(np.float32) for x in rows)  # type: ignore[misc]
            for s, rows in evals.items()}

