"""Evasion series: fine-tune a model to keep a concept while a frozen linear monitor reads it less.

The objective (issue 27, after Bailey et al. 2024, "Obfuscated Activations Bypass LLM
Latent-Space Defenses", arXiv:2412.09565) is the causal-LM loss on the concept's positive
training texts (the behaviour to keep) plus

    weight * mean over the batch of softplus((mean-pooled h_L . u - threshold) / scale)

where ``u``, ``threshold`` and ``scale`` are the frozen monitor read on the base: the train
mean difference at layer ``L`` (unit length), the threshold that best separates the
validation rows, and the standard deviation of the base's train projections, so the
penalty is the logistic loss of a monitor that should call every positive text negative.
``h_L`` is pooled as the store pools ``mean`` rows (the running mean the monitor reads,
first content token dropped: :func:`pipeline.collect.mean_pool`). The matched control
series trains on the same texts with ``weight = 0``. Everything else is the fine-tune recipe
(:mod:`pipeline.fleet.finetune`: the last blocks, AdamW, deterministic batches, checkpoints
with lineage, resumable); the monitor and the weight join the recipe in every lineage.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.fleet.corpora import Corpus, corpus_from_texts
from pipeline.fleet.finetune import finetune_series
from pipeline.types import GnomonError

# lazy: torch (heavy; imported where used); pipeline.datasets (tests patch it at the source)

__all__ = ["MonitorSpec", "concept_corpus", "evade_series", "monitor_penalty"]


@dataclass(frozen=True)
class MonitorSpec:
    """The frozen monitor the evasion series trains against (read on the base)."""

    concept: str
    layer: int
    unit: tuple[float, ...]
    threshold: float
    scale: float
    position: str = "mean"

    def digest(self) -> str:
        h = hashlib.sha256(np.asarray(self.unit, np.float64).tobytes())
        h.update(f"{self.layer}:{self.threshold!r}:{self.scale!r}:{self.position}".encode())
        return h.hexdigest()[:16]


def concept_corpus(concept: str, label: str, home: str | Path | None = None, n: int | None = None) -> Corpus:
    """The ``label`` texts of the concept's train split (the evaluation never reads them)."""
    from pipeline.datasets import load_dataset

    table = load_dataset(concept, home=home).table
    rows = zip(table.column("text").to_pylist(), table.column("label").to_pylist(), table.column("split").to_pylist())
    texts = [t for t, lab, sp in rows if lab == label and sp == "train" and t]
    if not texts:
        raise GnomonError(f"concept {concept} has no plain-text train rows labelled {label!r} to fine-tune on")
    return corpus_from_texts(f"{concept}-{label}", texts[:n] if n else texts, f"dataset:{concept}:{label}:train")


def monitor_penalty(monitor: MonitorSpec, weight: float) -> Callable[[Any], Any]:
    """A factory for :func:`pipeline.fleet.finetune.finetune_series`: given the loaded model,
    a context manager that hooks layer ``monitor.layer`` and yields ``penalty(batch)``."""
    import torch

    from pipeline.collect import mean_pool
    from pipeline.hooks import _hidden

    if monitor.position != "mean":
        raise GnomonError(f"the evasion penalty reads the mean-pooled monitor; got position {monitor.position!r}")
    if not monitor.scale > 0:
        raise GnomonError("the monitor's scale must be positive")

    @contextmanager
    def factory(lm: Any) -> Iterator[Callable[[dict[str, Any]], Any]]:
        if lm.hidden_size != len(monitor.unit):
            raise GnomonError(f"the monitor has width {len(monitor.unit)}, the model {lm.hidden_size}")
        seen: dict[str, Any] = {}

        def hook(_mod: Any, _args: Any, output: Any) -> None:
            seen["h"] = _hidden(output)

        handle = lm.adapter.layer_module(lm.model, monitor.layer).register_forward_hook(hook)
        u = torch.tensor(monitor.unit, dtype=torch.float32, device=lm.device)

        def penalty(batch: dict[str, Any]) -> Any:
            h = seen.pop("h")                                           # (B, T, D), with its graph
            content = batch["attention_mask"].bool()
            first = content.float().argmax(dim=1)                       # right-padded: 0
            z = (mean_pool(h, content, first) @ u - monitor.threshold) / monitor.scale
            return weight * torch.nn.functional.softplus(z).mean()

        try:
            yield penalty
        finally:
            handle.remove()

    return factory


def evade_series(base_id: str, corpus: Corpus, monitor: MonitorSpec, weight: float, cfg: Any, prefix: str,
                 series: str, home: str | Path | None = None, log: Callable[[str], None] = print) -> list[Any]:
    """One series (``weight`` > 0: evasion; 0: the matched control) of ``cfg``'s recipe."""
    if weight < 0:
        raise GnomonError(f"the evasion weight must be >= 0, got {weight}")
    extra = {"objective": "lm loss on the concept's positive train texts"
                          + (f" + {weight} * softplus(monitor logit)" if weight else " (control: no penalty)"),
             "evasion_weight": weight, "monitor_layer": monitor.layer, "monitor_digest": monitor.digest(),
             "monitor_concept": monitor.concept, "loss_on": "all"}
    return finetune_series(base_id, corpus, prefix, series, cfg, home=home, log=log,
                           penalty=monitor_penalty(monitor, weight) if weight else None, extra_settings=extra)
