"""The collection job: plan deterministic shards, run the per-shard function, resume.

Shards are planned from the dataset alone (texts sorted by character length, then id,
cut into ``shard_size`` pieces), so the plan does not depend on the number of workers or
on the model, and a rerun finds the same shards. ``run_shard`` is the one function both
executors run; it skips (layer, shard) files whose manifest is complete, collects the rest
in one forward pass per batch, and writes each layer atomically.
"""

from __future__ import annotations

import time
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
    batch_size: int = 32
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

    if spec.batch_size < 1 or spec.shard_size < 1:
        raise GnomonError("batch_size and shard_size must be at least 1")
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


def load_for_spec(spec: CollectSpec, home: Any = None) -> Any:
    from pipeline.models import ModelSpec, load_model

    return load_model(ModelSpec(id=spec.model, revision=spec.revision, dtype=spec.model_dtype,
                                trust_remote_code=spec.trust_remote_code, seed=spec.seed), home=home)


def render(lm: Any, task: ShardTask, dataset: str = "") -> list[str]:
    """Texts as the model sees them: chat ``messages`` go through the chat template."""
    from pipeline.datasets import render_rows

    return render_rows(task.texts, task.messages, lm.tokenizer, dataset or lm.model_id)


def run_shard(lm: Any, plan_spec: CollectSpec, dataset_name: str, task: ShardTask, home: Any = None,
              progress: Any = None) -> ShardResult:
    """Collect one shard for every requested layer not already complete in the store."""
    from pipeline.collect import check_positions, collect
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

    rows = collect(lm, list(task.ids), render(lm, task, dataset_name), layers=todo, positions=positions,
                   batch_size=plan_spec.batch_size, max_length=plan_spec.max_length, progress=tick)
    for layer in todo:
        ex, pos, ti, acts = rows[layer].arrays()
        table = activation_table(ex, pos, ti, acts, dtype=plan_spec.dtype, where=f"at layer {layer}")
        rec = store.write_shard(*key, layer, task.index, table, fingerprint=lm.fingerprint, positions=positions)
        res.rows += rec.rows
        res.bytes += rec.bytes
        res.written_layers += 1
    res.examples, res.tokens = counts["examples"], counts["tokens"]
    res.seconds = time.perf_counter() - t0
    return res


def summarize(results: Sequence[ShardResult]) -> dict[str, int]:
    return {"shards": len(results), "written_files": sum(r.written_layers for r in results),
            "skipped_files": sum(r.skipped_layers for r in results), "rows": sum(r.rows for r in results),
            "bytes": sum(r.bytes for r in results), "examples": sum(r.examples for r in results),
            "tokens": sum(r.tokens for r in results)}


def _incomplete(plan: CollectPlan, lm: Any, home: Any) -> int:
    """How many (layer, shard) files still need collecting (checked in the driver, so a
    fully stored request starts no workers)."""
    from pipeline.collect import check_positions
    from pipeline.store import ActivationStore

    store = ActivationStore(home)
    layers = lm.check_layers(list(plan.spec.layers) if plan.spec.layers is not None else None)
    positions = check_positions(plan.spec.positions)
    return sum(not store.shard_complete(lm.model_id, lm.revision, plan.dataset_name, layer, t.index,
                                        fingerprint=lm.fingerprint, positions=positions, ids=t.ids)
               for t in plan.shards for layer in layers)


def preflight(spec: CollectSpec, home: Any = None, lm: Any = None) -> Any:
    """Check model, layers and positions in the driver before anything is written, and
    convert/cache the weights once here rather than racing in every worker. A model the
    caller already loaded is checked, not loaded again."""
    from pipeline.collect import check_positions

    check_positions(spec.positions)
    if spec.dtype not in ("float16", "float32"):
        raise GnomonError(f"unknown storage dtype {spec.dtype!r}: use float16 or float32")
    lm = lm if lm is not None else load_for_spec(spec, home)
    lm.check_layers(list(spec.layers) if spec.layers is not None else None)
    return lm


def run_collection(spec: CollectSpec, executor: Any = None, home: Any = None, show_progress: bool = False,
                   lm: Any = None, **executor_kw: Any) -> dict[str, Any]:
    """Plan, run and summarise a collection; returns the summary (rows, bytes, seconds, paths).

    Rerunning the same spec skips every complete (layer, shard) file: the run resumes.
    """
    from pipeline.home import gnomon_home
    from pipeline.store import ActivationStore, model_slug

    from jobs.executors import LocalExecutor, make_executor

    home_p = gnomon_home(home)
    executor = executor or make_executor("ray")
    t0 = time.perf_counter()
    lm = preflight(spec, home_p, lm)
    plan = plan_collection(spec, home_p)
    if isinstance(executor, LocalExecutor):
        executor_kw.setdefault("lm", lm)
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

    todo = _incomplete(plan, lm, home_p)
    n_layers = len(lm.check_layers(list(spec.layers) if spec.layers is not None else None))
    model_info = {"fingerprint": lm.fingerprint, "hidden_size": lm.hidden_size, "num_layers": lm.num_layers}
    if not isinstance(executor, LocalExecutor):
        lm = None  # workers load their own copy (from the converted-weights cache)
    try:
        if todo:
            results = executor.run_collect(plan, str(home_p), progress, **executor_kw)
        else:  # everything is stored: no workers, no model loads
            results = [ShardResult(index=t.index, skipped_layers=n_layers) for t in plan.shards]
            if bar is not None:
                bar.update(plan.n_examples)
    finally:
        if bar is not None:
            bar.close()
    summary: dict[str, Any] = summarize(results)
    store = ActivationStore(home_p)
    summary.update({
        "model": spec.model, "revision": spec.revision, "dataset": plan.dataset_name,
        "dataset_hash": plan.dataset_hash, "executor": getattr(executor, "name", "?"),
        "seconds": round(time.perf_counter() - t0, 3),
        "store": str(home_p / "activations" / f"model={model_slug(spec.model)}" / f"revision={spec.revision}"
                     / f"dataset={plan.dataset_name}"),
        "stored": store.summary(spec.model, spec.revision, plan.dataset_name),
        **model_info,
    })
    return summary
