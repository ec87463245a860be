"""The collection job: plan deterministic shards, run the per-shard function, resume.

Shards are planned from the dataset alone (texts sorted by character length, then id,
cut into ``shard_size`` pieces), so the plan does not depend on the number of workers or
on the model, and a rerun finds the same shards. ``run_shard`` is the one function both
executors run; it skips (layer, shard) files whose manifest is complete, collects the rest
in one forward pass per batch, and writes each layer atomically.

Speed: a :class:`ShardRunner` keeps two shards in flight on one model, the forward pass of
one under a lock while the other's Parquet files are written and hashed, so the I/O hides
behind compute. ``run_collection`` first checks the store against the model's recorded
identity (fingerprint, layer count; see ``pipeline.models.model_identity``): when every
shard is stored it returns without importing torch, loading the model or starting an
executor.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from typing import Any, Sequence

from jobs.runtime.output import step
from jobs.runtime.results import CollectResult
from jobs.stages.collect_lock import collecting
from jobs.stages.shards import (
    ShardResult,
    ShardRunner,
    ShardTask,
    collect_shard,
    load_for_spec,
    model_pool,
    render,
    run_shard,
)
from pipeline.home import gnomon_home
from pipeline.models import ModelIdentity, model_identity
from pipeline.models.cache import is_cached
from pipeline.models.layers import ensure_layers
from pipeline.models.shape import model_shape
from pipeline.models.spec import ModelSpec
from pipeline.types import MEAN_RULE, GnomonError, check_positions

# lazy: numpy, pyarrow (heavy; imported where used)

__all__ = ["CollectSpec", "CollectPlan", "ShardTask", "ShardResult", "ShardRunner", "plan_collection", "collect",
           "run_collection", "run_shard", "collect_shard", "model_pool", "load_for_spec", "render"]

IN_FLIGHT = 2
"""Shards in flight per model worker: one in the forward pass, one being written."""


@dataclass(frozen=True)
class CollectSpec:
    """A collection request: one model, one dataset, the layers and positions to store.

    >>> CollectSpec("tiny:llama", "sentiment").model        # doctest: +SKIP
    ModelSpec(id='tiny:llama', revision='main', ...)
    >>> CollectSpec.of("smollm2", "sentiment", revision="v2", model_dtype="float32")  # doctest: +SKIP
    """

    model: ModelSpec
    """What to load, the one statement of it (id, revision, dtype, seed, trust_remote_code):
    :func:`collect` resolves its source once (unless the command resolved it already) and
    every worker, the model cache and the worker pool key on exactly this. A plain id
    (``"tiny:llama"``) is taken as ``ModelSpec(id)``; :meth:`of` takes the loose fields a
    command line gives."""
    dataset: str
    """A shipped or registered concept name, or a dataset file (JSONL, CSV, Parquet)."""
    dataset_name: str | None = None
    """Name in the store (default: the dataset's own name)."""
    layers: tuple[int, ...] | None = None
    """``None``: every layer, 0..num_layers."""
    positions: tuple[str, ...] = ("last", "mean")
    dtype: str = "float16"
    """Storage dtype of the vectors (``float16`` halves the bytes; ``float32`` on request)."""
    batch_size: int = 256
    """Most rows in one forward pass (the token budget usually binds first)."""
    token_budget: int | None = None
    """Most padded tokens (rows x longest) in one forward pass; a longer text runs alone.
    ``None``: by device (``pipeline.collect.CPU_TOKEN_BUDGET`` / ``CUDA_TOKEN_BUDGET``)."""
    shard_size: int = 512
    """Examples per stored shard (the unit of resume). Every shard costs a collect() call and
    one file plus manifest per layer; on 2,400 short texts, 2 CPU cores, all 31 layers,
    shards of 128 took 101 s and shards of 512 took 72 s (``bench/RESULTS.md``, collect)."""
    max_length: int = 512

    def __post_init__(self) -> None:
        if isinstance(self.model, str):
            object.__setattr__(self, "model", ModelSpec(id=self.model))

    @classmethod
    def of(cls, model: str, dataset: str, *, revision: str = "main", model_dtype: str = "auto",
           trust_remote_code: bool = False, seed: int = 0, **kw: Any) -> CollectSpec:
        """From the loose model fields of a command line or a job spec."""
        return cls(ModelSpec(id=model, revision=revision, dtype=model_dtype, trust_remote_code=trust_remote_code,
                             seed=seed), dataset, **kw)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class CollectPlan:
    spec: CollectSpec
    dataset_name: str
    dataset_hash: str
    shards: list[ShardTask] = field(default_factory=list)

    @property
    def n_examples(self) -> int:
        return sum(len(s.ids) for s in self.shards)


def plan_collection(spec: CollectSpec, home: Any = None, dataset: Any = None) -> CollectPlan:
    """Load and validate the dataset (unless the caller passes it), store its examples once,
    and cut the shards."""
    from pipeline.datasets import load_dataset
    from pipeline.store import ActivationStore, check_name

    if spec.batch_size < 1 or spec.shard_size < 1 or (spec.token_budget is not None and spec.token_budget < 1):
        raise GnomonError("batch_size, token_budget and shard_size must be at least 1")
    ds = dataset if dataset is not None else load_dataset(spec.dataset, home=home)
    name = check_name(spec.dataset_name or ds.name, "dataset name")
    store = ActivationStore(gnomon_home(home))
    # A changed dataset replaces its stored examples: shards record the digest of the
    # texts they were computed from, so the stale ones are redone, not read.
    store.write_examples(name, ds.table, overwrite=True)
    t = ds.table
    ids = t.column("id").to_pylist()
    texts = t.column("text").to_pylist()
    messages = t.column("messages").to_pylist() if "messages" in t.column_names else [None] * len(ids)
    size = [len(x or y or "") for x, y in zip(texts, messages)]
    order = sorted(range(len(ids)), key=lambda i: (size[i], ids[i]))
    shards = []
    for k, start in enumerate(range(0, len(order), spec.shard_size)):
        idx = order[start:start + spec.shard_size]
        task = (tuple(ids[i] for i in idx), tuple(texts[i] for i in idx), tuple(messages[i] for i in idx))
        shards.append(ShardTask(k, *task, content=_content_digest(*task)))
    return CollectPlan(spec=spec, dataset_name=name, dataset_hash=ds.content_hash, shards=shards)


CHAT_ENCODING = "chat-ids-once-v1"
"""Part of the content digest of shards that hold chat rows: since issue 21 a chat row is
tokenised once (one BOS, not two) and ``mean`` leaves the template's special tokens out, so a
chat shard stored before is collected again rather than mixed with new ones. Shards of plain
``text`` rows keep their digest."""


def _content_digest(ids: Sequence[str], texts: Sequence[str | None], messages: Sequence[Any]) -> str:
    rows = sorted(zip(ids, (t or "" for t in texts), (str(m or "") for m in messages)))
    # the pooling rule (and, for chat rows, their encoding) is part of what the rows were
    # computed from: a change re-collects rather than mixing rows of two rules
    doc: Any = {"rows": rows, "mean_rule": MEAN_RULE}
    if any(m is not None for m in messages):
        doc["chat"] = CHAT_ENCODING
    return hashlib.sha256(json.dumps(doc).encode()).hexdigest()


def summarize(results: Sequence[ShardResult]) -> dict[str, int]:
    return {"shards": len(results), "written_files": sum(r.written_layers for r in results),
            "skipped_files": sum(r.skipped_layers for r in results), "rows": sum(r.rows for r in results),
            "bytes": sum(r.bytes for r in results), "examples": sum(r.examples for r in results),
            "tokens": sum(r.tokens for r in results)}


def _incomplete(plan: CollectPlan, model: str, revision: str, fingerprint: str, layers: list[int],
                home: Any) -> int:
    """How many (layer, shard) files still need collecting (checked in the driver, so a
    fully stored request starts no workers)."""
    from pipeline.store import ActivationStore

    store = ActivationStore(home)
    positions = check_positions(plan.spec.positions)
    listed = store.stored_manifests(model, revision, plan.dataset_name)  # one listing for them all
    return sum(not store.shard_complete(model, revision, plan.dataset_name, layer, t.index,
                                        fingerprint=fingerprint, positions=positions, ids=t.ids,
                                        content=t.content, listed=listed)
               for t in plan.shards for layer in layers)


def preflight(spec: CollectSpec, home: Any = None, lm: Any = None) -> tuple[Any, Any, Any]:
    """Check the request before anything is written and find the model's identity
    (fingerprint, layer count, width): the one recorded at an earlier load under this home
    (no load now, so a fully stored request never loads the model), else from the model,
    loaded here once (converting and caching its weights) rather than racing in every
    worker. A model the caller already loaded is checked, not loaded again. Returns
    (identity, loaded model or None, the layers resolved against the model: the one check
    of the request's layers; a :class:`~pipeline.models.layers.Layers` the edge resolved
    against this model's depth is trusted)."""
    check_positions(spec.positions)
    if spec.dtype not in ("float16", "float32"):
        raise GnomonError(f"unknown storage dtype {spec.dtype!r}: use float16 or float32")
    ident = model_identity(spec.model, home) if lm is None else None
    if ident is None and lm is None:
        shape = model_shape(spec.model, home)  # config or GGUF header: refuse bad layers before a load
        if shape is not None:
            spec = replace(spec, layers=ensure_layers(spec.layers, shape.num_layers, spec.model.id))
    if ident is None:
        if lm is None:

            # a GGUF's first load converts and caches its weights: minutes, so say it
            fresh = not is_cached(spec.model, home)
            with step(f"load {spec.model.id}") if fresh else contextlib.nullcontext():
                lm = load_for_spec(spec, home)
        ident = ModelIdentity(lm.fingerprint, lm.num_layers, lm.hidden_size)
    return ident, lm, ensure_layers(spec.layers, ident.num_layers, spec.model.id)


def collect(spec: CollectSpec, executor: Any, home: Any = None, show_progress: bool = False, lm: Any = None,
            on_start: Any = None, on_shard: Any = None, dataset: Any = None) -> Any:
    """Plan and run a collection; returns a :class:`jobs.runtime.results.CollectResult`.

    Rerunning the same spec skips every complete (layer, shard) file: the run resumes;
    when everything is stored, no model is loaded and no worker started. ``dataset``: the
    request's dataset when the caller loaded it already (it is not loaded again).
    """
    from pipeline.store import ActivationStore

    home_p = gnomon_home(home)
    t0 = time.perf_counter()
    store = ActivationStore(home_p)
    # A model given as a relative path travels to the workers resolved: a worker in another
    # directory must load, and store under, the same model (pipeline.store_keys).
    # (a resolved source is kept: a relative path made absolute names the same model). The
    # source resolved here, unless the command resolved it, is the one resolution of the model.
    spec = replace(spec, model=replace(spec.model, id=store.model_key(spec.model.id).model).resolved(home_p))
    model, revision = spec.model.id, spec.model.revision
    given = lm  # a caller's model is collected with as it is; otherwise the pool loads (or reuses) one
    if dataset is None:   # a bad dataset is refused before the model loads (refusals before work)
        from pipeline.datasets import load_dataset

        dataset = load_dataset(spec.dataset, home=home_p)
    ident, lm, layers = preflight(spec, home_p, lm)
    spec = replace(spec, layers=layers)   # concrete and checked: the workers trust it
    plan = plan_collection(spec, home_p, dataset)
    todo = _incomplete(plan, model, revision, ident.fingerprint, layers, home_p)
    executor_name, choice = "none", "none (everything already stored)"
    t_run = time.perf_counter()
    if todo:
        with collecting(home_p):  # `store gc` leaves this collection's files alone
            results = _run(plan, executor, home_p, show_progress, on_start, on_shard, given)
        executor_name = getattr(executor, "name", "?")
        choice = getattr(executor, "choice", executor_name)
    else:
        results = [ShardResult(index=t.index, skipped_layers=len(layers)) for t in plan.shards]
    # str(home_p): a home on object storage reads as its URI (pipeline.home.RemoteHome)
    where = f"{home_p}/activations/model={store.key(model)}/revision={revision}/dataset={plan.dataset_name}"
    return CollectResult(
        model=model, revision=revision, dataset=plan.dataset_name, dataset_hash=plan.dataset_hash,
        fingerprint=ident.fingerprint, hidden_size=ident.hidden_size, num_layers=ident.num_layers,
        layers=tuple(layers), positions=tuple(check_positions(spec.positions)), **summarize(results),
        seconds=round(time.perf_counter() - t0, 3), collect_seconds=round(time.perf_counter() - t_run, 3),
        executor=executor_name, executor_choice=choice,
        store=str(where), stored=store.summary(model, revision, plan.dataset_name))


def run_collection(spec: CollectSpec, executor: Any, home: Any = None, show_progress: bool = False,
                   lm: Any = None, **hooks: Any) -> dict[str, Any]:
    """:func:`collect` as a JSON summary (rows, bytes, seconds, paths)."""
    return collect(spec, executor, home, show_progress, lm, **hooks).to_dict()  # type: ignore[no-any-return]


def _run(plan: CollectPlan, executor: Any, home: Any, show_progress: bool, on_start: Any,
         on_shard: Any, lm: Any = None) -> list[ShardResult]:
    tokens = [0]
    t0 = time.perf_counter()
    progress: Any = None

    def done(res: ShardResult) -> None:
        tokens[0] += res.tokens
        if progress is not None:
            progress.update(len(plan.shards[res.index].ids))
            progress.postfix(f"{tokens[0] / max(time.perf_counter() - t0, 1e-9):,.0f} tok/s")
        if on_shard is not None:
            on_shard(res)

    key, init = model_pool(plan.spec.model, str(home))
    if lm is not None:  # a model the caller loaded (and may have edited) is used as it is, in its own pool
        key, init = ("given-model", id(lm), str(home)), partial(ShardRunner, lm, str(home))
    items = [(plan.spec, plan.dataset_name, t) for t in plan.shards]
    with step(f"collect {plan.dataset_name} on {plan.spec.model.id}", total=plan.n_examples, unit="ex",
              bar=show_progress) as progress:
        results = executor.map_stateful(init, collect_shard, items, key=key, concurrency=IN_FLIGHT,
                                        on_result=done, on_start=on_start)
        progress.note(f"{tokens[0]:,} tokens, {tokens[0] / max(time.perf_counter() - t0, 1e-9):,.0f} tok/s")
    return sorted(results, key=lambda r: r.index)
