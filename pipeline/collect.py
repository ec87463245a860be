"""Collection: batched forward passes recording the residual stream at chosen layers.

Examples are sorted by token length and batched (little padding), left-padded, with
explicit ``position_ids`` so a left-padded row sees the same positions as when it runs
alone (batched == unbatched, also for absolute-position models such as GPT-2). The forward
pass stops after the deepest requested layer.

Rows per (layer, example): ``last`` (the last real token), ``mean`` (mean over non-special
tokens, accumulated in float32), and optionally ``tok`` (every real token).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch

from pipeline.hooks import record_layers, run_until
from pipeline.models.loading import LoadedModel
from pipeline.types import GnomonError

POSITION_CHOICES = ("last", "mean", "tok")


@dataclass
class LayerRows:
    """Collected rows for one layer, in insertion order."""

    example_ids: list[str] = field(default_factory=list)
    positions: list[str] = field(default_factory=list)
    token_index: list[np.ndarray] = field(default_factory=list)
    acts: list[np.ndarray] = field(default_factory=list)

    def arrays(self) -> tuple[list[str], list[str], np.ndarray, np.ndarray]:
        ti = np.concatenate(self.token_index).astype(np.int32) if self.token_index else np.zeros(0, np.int32)
        acts = np.concatenate(self.acts, axis=0) if self.acts else np.zeros((0, 0), np.float32)
        return self.example_ids, self.positions, ti, acts


def check_positions(positions: Sequence[str]) -> list[str]:
    bad = [p for p in positions if p not in POSITION_CHOICES]
    if bad or not positions:
        raise GnomonError(f"unknown position {bad[0] if bad else '(none)'}: choose from {', '.join(POSITION_CHOICES)}")
    return [p for p in POSITION_CHOICES if p in positions]


def token_lengths(lm: LoadedModel, texts: Sequence[str], max_length: int) -> list[int]:
    enc = lm.tokenizer(list(texts), add_special_tokens=True, truncation=True, max_length=max_length)
    return [len(ids) for ids in enc["input_ids"]]


def length_batches(lengths: Sequence[int], batch_size: int, token_budget: int | None = None) -> list[list[int]]:
    """Indices sorted by length (stable), cut into batches of ``batch_size`` rows, or fewer
    when ``rows x longest`` would exceed ``token_budget``."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches: list[list[int]] = []
    cur: list[int] = []
    for i in order:
        longest = max(lengths[i], max((lengths[j] for j in cur), default=0))
        if cur and (len(cur) >= batch_size or (token_budget and longest * (len(cur) + 1) > token_budget)):
            batches.append(cur)
            cur = []
        cur.append(i)
    if cur:
        batches.append(cur)
    return batches


def _forward_kwargs(model: Any) -> dict[str, Any]:
    params = inspect.signature(model.forward).parameters
    return {"use_cache": False} if "use_cache" in params else {}


def collect(lm: LoadedModel, ids: Sequence[str], texts: Sequence[str], layers: Sequence[int] | None = None,
            positions: Sequence[str] = ("last", "mean"), batch_size: int = 32, max_length: int = 512,
            progress: Callable[[int, int], None] | None = None) -> dict[int, LayerRows]:
    """Run ``texts`` through ``lm`` and return rows per layer (float32 numpy arrays).

    ``progress(n_examples, n_tokens)`` is called after each batch.
    """
    if len(ids) != len(texts):
        raise GnomonError(f"{len(ids)} ids but {len(texts)} texts")
    layer_list = lm.check_layers(list(layers) if layers is not None else None)
    max_length = min(max_length, lm.max_positions or max_length)  # truncate past the model's positions
    pos = check_positions(positions)
    tok = lm.tokenizer
    out = {layer: LayerRows() for layer in layer_list}
    lengths = token_lengths(lm, texts, max_length)
    extra = _forward_kwargs(lm.model)
    device = lm.device
    for batch in length_batches(lengths, batch_size):
        enc = tok([texts[i] for i in batch], return_tensors="pt", padding=True, truncation=True,
                  max_length=max_length, return_special_tokens_mask=True)
        attn = enc["attention_mask"].to(device)                              # (B, T)
        special = enc["special_tokens_mask"].to(device).bool()              # (B, T)
        position_ids = (attn.long().cumsum(-1) - 1).clamp(min=0)            # (B, T)
        with record_layers(lm.model, lm.adapter, layer_list) as rec:
            run_until(lm.model, input_ids=enc["input_ids"].to(device), attention_mask=attn,
                      position_ids=position_ids, **extra)
        missing = [layer for layer in layer_list if layer not in rec]
        if missing:
            raise GnomonError(f"layers {missing} produced no output: the adapter for "
                              f"{lm.adapter.family} does not match this model")
        real = attn.bool()
        content = real & ~special
        content = torch.where(content.any(-1, keepdim=True), content, real)  # all-special rows
        n_real = real.sum(-1)                                                # (B,)
        batch_ids = [ids[i] for i in batch]
        for layer in layer_list:
            h = rec[layer].float()                                           # (B, T, D)
            rows = out[layer]
            if "last" in pos:
                rows.example_ids += batch_ids
                rows.positions += ["last"] * len(batch)
                rows.token_index.append((n_real - 1).cpu().numpy())
                rows.acts.append(h[:, -1].cpu().numpy())                     # left padding: last real token
            if "mean" in pos:
                w = content.unsqueeze(-1).float()                            # (B, T, 1)
                mean = (h * w).sum(1) / w.sum(1)                             # (B, D)
                rows.example_ids += batch_ids
                rows.positions += ["mean"] * len(batch)
                rows.token_index.append(np.full(len(batch), -1, np.int32))
                rows.acts.append(mean.cpu().numpy())
            if "tok" in pos:
                for b, ex in enumerate(batch_ids):
                    sel = real[b]
                    n = int(sel.sum())
                    rows.example_ids += [ex] * n
                    rows.positions += ["tok"] * n
                    rows.token_index.append(np.arange(n, dtype=np.int32))
                    rows.acts.append(h[b, sel].cpu().numpy())
        if progress is not None:
            progress(len(batch), int(n_real.sum()))
    return out
