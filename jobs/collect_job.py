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

import threading
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

from pipeline.types import GnomonError


@dataclass(frozen=True)
class CollectSpec:
    """A collection request (also loadable from a TOML job spec, ``[collect]`` table)."""

    model: str
    """``smollm2``, ``tiny:<family>``, a HF directory, a ``.gguf`` file or a registered id."""
    dataset: str
    """A shipped or registered concept name, or a dataset file (JSONL, CSV, Parquet)."""
    revision: str = "main"
    dataset_name: str | None = None
    """Name in the store (default: the dataset's own name)."""
    layers: tuple[int, ...] | None = None
    """``None``: every layer, 0..num_layers."""
    positions: tuple[str, ...] = ("last", "mean")
    dtype: str = "float16"
    """Storage dtype of the vectors (``float16`` halves the bytes; ``float32`` on request)."""
    model_dtype: str = "auto"
    batch_size: int = 256
    """Most rows in one forward pass (the token budget usually binds first)."""
    token_budget: int | None = None
    """Most padded tokens (rows x longest) in one forward pass; a longer text runs alone.
    ``None``: by device (``pipeline.collect.CPU_TOKEN_BUDGET`` / ``CUDA_TOKEN_BUDGET``)."""
    shard_size: int = 128
    max_length: int = 512
    trust_remote_code: bool = False
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ShardTask:
    """One deterministic slice of a dataset."""

    index: int
    ids: tuple[str, ...]
    texts: tuple[str | None, ...]
    messages: tuple[str | None, ...]


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


@dataclass
class CollectPlan:
    spec: CollectSpec
    dataset_name: str
    dataset_hash: str
    shards: list[ShardTask] = field(default_factory=list)

    @property
    def n_examples(self) -> int:
        return sum(len(s.ids) for s in self.shards)


def plan_collection(spec: CollectSpec, home: Any = None) -> CollectPlan:
    """Load and validate the dataset, store its examples once, and cut the shards."""
    from pipeline.datasets import load_dataset
    from pipeline.home import gnomon_home
    from pipeline.store import ActivationStore, check_name

    if spec.batch_size < 1 or spec.shard_size < 1 or (spec.token_budget is not None and spec.token_budget < 1):
        raise GnomonError("batch_size, token_budget and shard_size must be at least 1")
    ds = load_dataset(spec.dataset, home=home)
    name = check_name(spec.dataset_name or ds.name, "dataset name")
    store = ActivationStore(gnomon_home(home))
    store.write_examples(name, ds.table)
    t = ds.table
    ids = t.column("id").to_pylist()
    texts = t.column("text").to_pylist()
    messages = t.column("messages").to_pylist() if "messages" in t.column_names else [None] * len(ids)
    size = [len(x or y or "") for x, y in zip(texts, messages)]
    order = sorted(range(len(ids)), key=lambda i: (size[i], ids[i]))
    shards = []
    for k, start in enumerate(range(0, len(order), spec.shard_size)):
        idx = order[start:start + spec.shard_size]
        shards.append(ShardTask(index=k, ids=tuple(ids[i] for i in idx),
                                texts=tuple(texts[i] for i in idx),
                                messages=tuple(messages[i] for i in idx)))
    return CollectPlan(spec=spec, dataset_name=name, dataset_hash=ds.content_hash, shards=shards)


def model_spec(spec: CollectSpec) -> Any:
    from pipeline.models import ModelSpec

    return ModelSpec(id=spec.model, revision=spec.revision, dtype=spec.model_dtype,
                     trust_remote_code=spec.trust_remote_code, seed=spec.seed)


def load_for_spec(spec: CollectSpec, home: Any = None) -> Any:
    """The model for ``spec``, from this process's model cache when it is already loaded."""
    from pipeline.models import cached_model

    return cached_model(model_spec(spec), home=home)


def render(lm: Any, task: ShardTask, dataset: str = "") -> list[str]:
    """Texts as the model sees them: chat ``messages`` go through the chat template."""
    from pipeline.datasets import render_rows

    return render_rows(task.texts, task.messages, lm.tokenizer, dataset or lm.model_id)


def run_shard(lm: Any, plan_spec: CollectSpec, dataset_name: str, task: ShardTask, home: Any = None,
              progress: Any = None, lock: Any = None) -> ShardResult:
    """Collect one shard for every requested layer not already complete in the store.

    With ``lock``, only the tokenisation and forward pass hold it (the model and its
    tokenizer are not thread-safe); the store checks and the writes run outside it.
    """
    from pipeline.collect import collect
    from pipeline.types import check_positions
    from pipeline.home import gnomon_home
    from pipeline.store import ActivationStore, activation_table

    t0 = time.perf_counter()
    store = ActivationStore(gnomon_home(home))
    layers = lm.check_layers(list(plan_spec.layers) if plan_spec.layers is not None else None)
    positions = check_positions(plan_spec.positions)
    key = (lm.model_id, lm.revision, dataset_name)
    todo = [layer for layer in layers
            if not store.shard_complete(*key, layer, task.index, fingerprint=lm.fingerprint, positions=positions,
                                        ids=task.ids)]
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
                       out_dtype=plan_spec.dtype, autocast=False if plan_spec.model_dtype == "float32" else None)
    for layer in todo:
        ex, pos, ti, acts = rows.pop(layer).arrays()
        table = activation_table(ex, pos, ti, acts, dtype=plan_spec.dtype, where=f"at layer {layer}")
        rec = store.write_shard(*key, layer, task.index, table, fingerprint=lm.fingerprint, positions=positions)
        res.rows += rec.rows
        res.bytes += rec.bytes
        res.written_layers += 1
    res.examples, res.tokens = counts["examples"], counts["tokens"]
    res.seconds = time.perf_counter() - t0
    return res


class ShardRunner:
    """Shards on one loaded model, safe to call from two threads at once: the forward
    passes take turns under a lock while the other thread writes and hashes its files."""

    def __init__(self, lm: Any, home: Any) -> None:
        self.lm, self.home = lm, home
        self.lock = threading.Lock()

    def run(self, spec: CollectSpec, dataset_name: str, task: ShardTask, progress: Any = None) -> ShardResult:
        return run_shard(self.lm, spec, dataset_name, task, self.home, progress, lock=self.lock)


def summarize(results: Sequence[ShardResult]) -> dict[str, int]:
    return {"shards": len(results), "written_files": sum(r.written_layers for r in results),
            "skipped_files": sum(r.skipped_layers for r in results), "rows": sum(r.rows for r in results),
            "bytes": sum(r.bytes for r in results), "examples": sum(r.examples for r in results),
            "tokens": sum(r.tokens for r in results)}


def _incomplete(plan: CollectPlan, model: str, revision: str, fingerprint: str, layers: list[int],
                home: Any) -> int:
    """How many (layer, shard) files still need collecting (checked in the driver, so a
    fully stored request starts no workers)."""
    from pipeline.types import check_positions
    from pipeline.store import ActivationStore

    store = ActivationStore(home)
    positions = check_positions(plan.spec.positions)
    return sum(not store.shard_complete(model, revision, plan.dataset_name, layer, t.index,
                                        fingerprint=fingerprint, positions=positions, ids=t.ids)
               for t in plan.shards for layer in layers)


def preflight(spec: CollectSpec, home: Any = None, lm: Any = None) -> tuple[Any, Any]:
    """Check the request before anything is written and find the model's identity
    (fingerprint, layer count, width): the one recorded at an earlier load under this home
    (no load now, so a fully stored request never loads the model), else from the model,
    loaded here once (converting and caching its weights) rather than racing in every
    worker. A model the caller already loaded is checked, not loaded again. Returns
    (identity, loaded model or None)."""
    from pipeline.models import ModelIdentity, model_identity
    from pipeline.models.loading import check_layers
    from pipeline.types import check_positions

    check_positions(spec.positions)
    if spec.dtype not in ("float16", "float32"):
        raise GnomonError(f"unknown storage dtype {spec.dtype!r}: use float16 or float32")
    ident = model_identity(model_spec(spec), home) if lm is None else None
    if ident is None:
        lm = lm if lm is not None else load_for_spec(spec, home)
        ident = ModelIdentity(lm.fingerprint, lm.num_layers, lm.hidden_size)
    check_layers(list(spec.layers) if spec.layers is not None else None, ident.num_layers, spec.model)
    return ident, lm


def run_collection(spec: CollectSpec, executor: Any = None, home: Any = None, show_progress: bool = False,
                   lm: Any = None, **executor_kw: Any) -> dict[str, Any]:
    """Plan, run and summarise a collection; returns the summary (rows, bytes, seconds, paths).

    Rerunning the same spec skips every complete (layer, shard) file: the run resumes.
    """
    from pipeline.home import gnomon_home
    from pipeline.models.loading import check_layers
    from pipeline.store import ActivationStore, model_slug

    from jobs.executors import make_executor

    home_p = gnomon_home(home)
    t0 = time.perf_counter()
    ident, lm = preflight(spec, home_p, lm)
    layers = check_layers(list(spec.layers) if spec.layers is not None else None, ident.num_layers, spec.model)
    plan = plan_collection(spec, home_p)
    todo = _incomplete(plan, spec.model, spec.revision, ident.fingerprint, layers, home_p)
    executor_name, choice = "none", "none (everything already stored)"
    t_run = time.perf_counter()
    if todo:
        executor = executor or make_executor("auto")
        results = _run(plan, executor, home_p, show_progress, lm, executor_kw)
        executor_name = getattr(executor, "name", "?")
        choice = getattr(executor, "choice", executor_name)
    else:  # everything is stored: no executor, no model load
        results = [ShardResult(index=t.index, skipped_layers=len(layers)) for t in plan.shards]
    t_done = time.perf_counter()
    summary: dict[str, Any] = summarize(results)
    store = ActivationStore(home_p)
    summary.update({
        "model": spec.model, "revision": spec.revision, "dataset": plan.dataset_name,
        "dataset_hash": plan.dataset_hash, "executor": executor_name, "executor_choice": choice,
        "seconds": round(time.perf_counter() - t0, 3),
        "collect_seconds": round(t_done - t_run, 3),  # executor only: model loads, forwards, writes
        "store": str(home_p / "activations" / f"model={model_slug(spec.model)}" / f"revision={spec.revision}"
                     / f"dataset={plan.dataset_name}"),
        "stored": store.summary(spec.model, spec.revision, plan.dataset_name),
        "fingerprint": ident.fingerprint, "hidden_size": ident.hidden_size, "num_layers": ident.num_layers,
    })
    return summary


def _run(plan: CollectPlan, executor: Any, home: Any, show_progress: bool, lm: Any,
         executor_kw: dict[str, Any]) -> list[ShardResult]:
    bar = None
    if show_progress:
        from tqdm import tqdm

        bar = tqdm(total=plan.n_examples, unit="ex", desc=f"collect {plan.dataset_name}", dynamic_ncols=True)
    tokens = [0]

    def progress(n: int, t: int) -> None:
        if bar is not None:
            tokens[0] += t
            bar.update(n)
            elapsed = max(bar.format_dict.get("elapsed", 0.0), 1e-9)
            bar.set_postfix_str(f"{tokens[0] / elapsed:,.0f} tok/s")

    try:
        return executor.run_collect(plan, str(home), progress, lm=lm, **executor_kw)  # type: ignore[no-any-return]
    finally:
        if bar is not None:
            bar.close()
