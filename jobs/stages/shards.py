"""Collection's per-shard function and the model worker that runs it.

``run_shard`` is the one function every executor runs: it skips (layer, shard) files whose
manifest is complete for this model fingerprint, example set and texts, collects the rest
in one forward pass per batch, and writes each layer atomically. A :class:`ShardRunner`
is a model worker's state (``Executor.map_stateful``): the model loaded once, two shards
in flight, the forward pass of one under a lock while the other's files are written.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Hashable
from contextlib import nullcontext
from dataclasses import dataclass, replace
from functools import partial
from typing import TYPE_CHECKING, Any

from pipeline.chat import render_rows
from pipeline.home import gnomon_home
from pipeline.models import cached_model
from pipeline.models.cache import weights_signature
from pipeline.models.layers import Layers
from pipeline.types import check_positions

# lazy: numpy, pyarrow, torch (heavy; imported where used)

if TYPE_CHECKING:
    from jobs.stages.collect_job import CollectSpec

__all__ = ["ShardTask", "ShardResult", "ShardRunner", "run_shard", "collect_shard", "model_pool",
           "load_for_spec", "render"]


@dataclass(frozen=True)
class ShardTask:
    """One deterministic slice of a dataset."""

    index: int
    ids: tuple[str, ...]
    texts: tuple[str | None, ...]
    messages: tuple[str | None, ...]
    content: str | None = None
    """Digest of the shard's inputs (ids, texts, messages): a text edited under the same id
    makes the stored shard stale."""


@dataclass
class ShardResult:
    index: int
    skipped_layers: int = 0
    written_layers: int = 0
    rows: int = 0
    bytes: int = 0
    examples: int = 0
    tokens: int = 0
    seconds: float = 0.0


def load_for_spec(spec: CollectSpec, home: Any = None) -> Any:
    """The model for ``spec``, from this process's model cache when it is already loaded."""
    return cached_model(spec.model, home=home)


def render(lm: Any, task: ShardTask, dataset: str = "") -> list[str]:
    """Texts as the model sees them: chat ``messages`` go through the chat template."""
    return render_rows(task.texts, task.messages, lm.tokenizer, dataset or lm.model_id, ids=task.ids)


def run_shard(lm: Any, plan_spec: CollectSpec, dataset_name: str, task: ShardTask, home: Any = None,
              progress: Any = None, lock: Any = None) -> ShardResult:
    """Collect one shard for every requested layer not already complete in the store.

    With ``lock``, only the tokenisation and forward pass hold it (the model and its
    tokenizer are not thread-safe); the store checks and the writes run outside it.
    """
    from pipeline.collect import collect
    from pipeline.store import ActivationStore, activation_table

    t0 = time.perf_counter()
    store = ActivationStore(gnomon_home(home))
    layers = lm.check_layers(plan_spec.layers)   # resolved once by collect(): trusted here
    positions = check_positions(plan_spec.positions)
    key = (lm.model_id, lm.revision, dataset_name)
    listed = store.stored_manifests(*key)   # one listing, not a request per layer
    todo = Layers([layer for layer in layers   # a subset of checked layers is checked
                   if not store.shard_complete(*key, layer, task.index, fingerprint=lm.fingerprint, listed=listed,
                                               positions=positions, ids=task.ids, content=task.content)],
                  lm.num_layers)
    res = ShardResult(index=task.index, skipped_layers=len(layers) - len(todo))
    if not todo:
        if progress is not None:
            progress(len(task.ids), 0)
        return res
    counts = {"examples": 0, "tokens": 0}

    def tick(n: int, tokens: int) -> None:
        counts["examples"] += n
        counts["tokens"] += tokens
        if progress is not None:
            progress(n, tokens)

    with lock if lock is not None else nullcontext():
        rows = collect(lm, list(task.ids), render(lm, task, dataset_name), layers=todo, positions=positions,
                       batch_size=plan_spec.batch_size, token_budget=plan_spec.token_budget,
                       max_length=plan_spec.max_length, progress=tick,
                       out_dtype=plan_spec.dtype, autocast=False if plan_spec.model.dtype == "float32" else None)
    for layer in todo:
        ex, pos, ti, acts = rows.pop(layer).arrays()
        table = activation_table(ex, pos, ti, acts, dtype=plan_spec.dtype, where=f"at layer {layer}")
        rec = store.write_shard(*key, layer, task.index, table, fingerprint=lm.fingerprint, positions=positions,
                                content=task.content)
        res.rows += rec.rows
        res.bytes += rec.bytes
        res.written_layers += 1
    res.examples, res.tokens = counts["examples"], counts["tokens"]
    res.seconds = time.perf_counter() - t0
    return res


class ShardRunner:
    """Shards on one loaded model, safe to call from two threads at once: the forward
    passes take turns under a lock while the other thread writes and hashes its files.
    It is the state of a model worker (``Executor.map_stateful``)."""

    def __init__(self, lm: Any, home: Any) -> None:
        self.lm, self.home = lm, home
        self.lock = threading.Lock()

    def run(self, spec: CollectSpec, dataset_name: str, task: ShardTask, progress: Any = None) -> ShardResult:
        return run_shard(self.lm, spec, dataset_name, task, self.home, progress, lock=self.lock)


def model_worker(model: Any, home: str) -> ShardRunner:
    """A model worker's state: the model (from this process's cache), threads as the
    executor granted (Ray sets ``OMP_NUM_THREADS`` to an actor's CPUs)."""
    threads = os.environ.get("OMP_NUM_THREADS", "")
    if threads.isdigit() and int(threads) > 0:
        import torch

        torch.set_num_threads(int(threads))

    return ShardRunner(cached_model(model, home=home), home)


def model_pool(model: Any, home: str) -> tuple[Hashable, Any]:
    """(pool key, init) of the worker pool for ``model`` (a :class:`~pipeline.models.ModelSpec`):
    every stage on the same model version (each concept's collection, evaluation) shares one
    pool and one load. The key is the spec's identity, as the model cache keys it."""

    # the weights' signature too: a version rebuilt under the same id gets a fresh pool
    sig = weights_signature(model, gnomon_home(home))
    key = ("model", replace(model, source=None), str(home), sig)
    return key, partial(model_worker, model, str(home))


def collect_shard(runner: ShardRunner, item: tuple[CollectSpec, str, ShardTask]) -> ShardResult:
    """The per-item function of collection (run by a model worker)."""
    spec, dataset_name, task = item
    return runner.run(spec, dataset_name, task)
