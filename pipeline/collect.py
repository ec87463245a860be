"""Collection: batched forward passes recording the residual stream at chosen layers.

Texts are tokenised once, sorted by token length and packed into batches by a token
budget (``rows x longest <= token_budget``): many short texts share a forward pass, long
ones run in small batches, and padding stays small because neighbours have similar
lengths. Rows are left-padded with explicit ``position_ids`` so a padded row sees the same
positions as when it runs alone (batched == unbatched, also for absolute-position models
such as GPT-2). The forward pass runs under ``torch.inference_mode`` and stops after the
deepest requested layer (no later blocks, final norm or LM head). On CUDA the inputs go
through pinned memory, float32 weights run under bfloat16 autocast where the GPU supports
it, and the pooled rows are reduced and cast on the device before one copy back.

Rows per (layer, example): ``last`` (the last real token), ``mean`` (see below), and
optionally ``tok`` (every real token).

``mean`` pooling rule (:data:`MEAN_RULE`, one rule for every row and layer): the mean,
accumulated in float32, over the example's content tokens (real tokens that are not special
tokens such as BOS), **always leaving out the first content token** when there are two or
more; an example with one content token keeps it. Many decoders turn the first position
into an attention sink (SmolLM2-135M on the shipped sentences: 7-10x the median norm at
layers 3-8, 40-180x at layers 12-28); left in, that one token dominates the mean, which
then follows 1/length instead of the text (``bench/mean_pooling.py``). An earlier rule
dropped it only where its norm was an outlier (more than ``SINK_RATIO`` x the median),
so rows of one layer were pooled differently and the winner of a fit could change with
it (temperature, layer 9: val AUROC 0.941 with that rule, 0.999 with this one). The rule
is simple enough for :func:`pipeline.monitor.monitor` to apply as a running mean while it
generates, so a ``mean`` direction reads there what it was fitted on.
"""

from __future__ import annotations

import inspect
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch

from pipeline.chat import ChatRow, special_token_ids
from pipeline.hooks import record_layers, run_until
from pipeline.models.loading import LoadedModel
from pipeline.types import MEAN_RULE, POSITIONS, GnomonError, check_positions

__all__ = ["MEAN_RULE", "POSITION_CHOICES", "SINK_RATIO", "CPU_TOKEN_BUDGET", "CUDA_TOKEN_BUDGET", "LayerRows",
           "check_positions", "collect", "default_token_budget", "length_batches", "mean_pool", "token_lengths"]

POSITION_CHOICES = POSITIONS
SINK_RATIO = 4.0
"""The earlier rule's norm ratio, for ``bench/mean_pooling.py`` only (``mean_pool(..., sink_ratio=SINK_RATIO)``)."""
CPU_TOKEN_BUDGET = 512
"""Padded tokens per forward pass per CPU thread (up to 8 threads). Smaller batches run
faster per token there: a batch's activations (tokens x 1,536 floats in SmolLM2's MLP) then
stay in the caches, and the matmuls are already near peak at a few hundred rows (measured
on one thread: 512 best of 256-4,096, see bench/RESULTS.md; the per-thread scaling is a
guess to re-check with ``bench/collect.py --budgets`` on a quiet machine)."""
CUDA_TOKEN_BUDGET = 16384
"""Padded tokens per forward pass on a GPU, which needs large batches to fill its units."""


def default_token_budget(device: Any) -> int:
    if torch.device(device).type == "cuda":
        return CUDA_TOKEN_BUDGET
    return CPU_TOKEN_BUDGET * min(max(torch.get_num_threads(), 1), 8)


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


def _encode(lm: LoadedModel, texts: Sequence[str], max_length: int) -> tuple[list[list[int]], list[list[int]]]:
    """Token ids and special-token masks of every text, unpadded (one tokenizer call for the
    plain texts). A chat row (:class:`pipeline.chat.ChatRow`) brings its ids, tokenised once
    from the template's output: tokenising its text again would add a second BOS; its
    special tokens (BOS, turn markers) are masked so ``mean`` leaves them out."""
    plain = [i for i, t in enumerate(texts) if not isinstance(t, ChatRow)]
    ids: list[list[int]] = [[] for _ in texts]
    special: list[list[int]] = [[] for _ in texts]
    if plain:
        enc = lm.tokenizer([str(texts[i]) for i in plain], add_special_tokens=True, truncation=True,
                           max_length=max_length, return_special_tokens_mask=True)
        for k, i in enumerate(plain):
            ids[i], special[i] = enc["input_ids"][k], enc["special_tokens_mask"][k]
    if len(plain) < len(texts):
        marks = special_token_ids(lm.tokenizer)
        left = getattr(lm.tokenizer, "truncation_side", "right") == "left"
        for i, t in enumerate(texts):
            if isinstance(t, ChatRow):
                row = list(t.ids[-max_length:] if left else t.ids[:max_length])
                ids[i], special[i] = row, [int(x in marks) for x in row]
    return ids, special


def token_lengths(lm: LoadedModel, texts: Sequence[str], max_length: int) -> list[int]:
    return [len(ids) for ids in _encode(lm, texts, max_length)[0]]


def length_batches(lengths: Sequence[int], batch_size: int, token_budget: int | None = None) -> list[list[int]]:
    """Indices sorted by length (stable), cut into batches of at most ``batch_size`` rows
    and, when ``token_budget`` is set, at most ``token_budget`` padded tokens (rows x the
    batch's longest length); a text longer than the budget runs alone."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches: list[list[int]] = []
    cur: list[int] = []
    for i in order:  # ascending, so the newcomer is the batch's longest
        if cur and (len(cur) >= batch_size or (token_budget and lengths[i] * (len(cur) + 1) > token_budget)):
            batches.append(cur)
            cur = []
        cur.append(i)
    if cur:
        batches.append(cur)
    return batches


def _pad_left(ids: list[list[int]], special: list[list[int]], pad_id: int) -> tuple[torch.Tensor, ...]:
    """Left-padded ``(B, T)`` input ids, attention mask and special-token mask."""
    width = max(len(x) for x in ids)
    input_ids = torch.full((len(ids), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(ids), width), dtype=torch.long)
    spec = torch.zeros((len(ids), width), dtype=torch.bool)
    for b, (row, sp) in enumerate(zip(ids, special)):
        n = len(row)
        if n:
            input_ids[b, width - n:] = torch.tensor(row, dtype=torch.long)
            attn[b, width - n:] = 1
            spec[b, width - n:] = torch.tensor(sp, dtype=torch.bool)
    return input_ids, attn, spec


def mean_pool(h: torch.Tensor, content: torch.Tensor, first: torch.Tensor,
              sink_ratio: float = 0.0) -> torch.Tensor:
    """``mean`` rows: float32 mean of ``h`` (B, T, D) over ``content`` (B, T) tokens, leaving
    out the first content token (index ``first``, (B,)) of every row that has another one
    (:data:`MEAN_RULE`). ``sink_ratio`` > 0 (benchmarks only) drops it only where its norm
    exceeds that multiple of the median norm of the row's other content tokens."""
    h = h.float()
    rows = torch.arange(h.shape[0], device=h.device)
    others = content.clone()
    others[rows, first] = False
    if sink_ratio > 0:
        norms = h.norm(dim=-1)                                               # (B, T)
        med = torch.where(others, norms, torch.full_like(norms, float("nan"))).nanmedian(dim=-1).values  # (B,)
        sink = norms[rows, first] > sink_ratio * med                         # NaN median (one token): False
    else:
        sink = others.any(dim=-1)                                            # another content token: drop the first
    keep = content.clone()
    keep[rows[sink], first[sink]] = False
    w = keep.unsqueeze(-1).to(h.dtype)                                       # (B, T, 1)
    return (h * w).sum(1) / w.sum(1)                                         # (B, D)


def _forward_kwargs(model: Any) -> dict[str, Any]:
    params = inspect.signature(model.forward).parameters
    return {"use_cache": False} if "use_cache" in params else {}


def _autocast(lm: LoadedModel, wanted: bool | None) -> Any:
    """bfloat16 autocast on CUDA for float32 weights when the GPU supports it (``wanted``
    None), never on CPU (the stored == ``output_hidden_states`` guarantee is float32 there)."""
    device = lm.device
    if device.type != "cuda" or wanted is False:
        return nullcontext()
    param_dtype = next(lm.model.parameters()).dtype
    if wanted is None and not (param_dtype == torch.float32 and torch.cuda.is_bf16_supported()):
        return nullcontext()
    return torch.autocast("cuda", dtype=torch.bfloat16)


def collect(lm: LoadedModel, ids: Sequence[str], texts: Sequence[str], layers: Sequence[int] | None = None,
            positions: Sequence[str] = ("last", "mean"), batch_size: int = 256, max_length: int = 512,
            progress: Callable[[int, int], None] | None = None, token_budget: int | None = None,
            out_dtype: str = "float32", autocast: bool | None = None) -> dict[int, LayerRows]:
    """Run ``texts`` through ``lm`` and return rows per layer as numpy arrays of ``out_dtype``.

    ``batch_size`` caps the rows and ``token_budget`` the padded tokens of one forward pass
    (default by device: ``CPU_TOKEN_BUDGET``, ``CUDA_TOKEN_BUDGET``).
    ``progress(n_examples, n_tokens)`` is called after each batch.

    Why 84 lines: one loop whose steps (batches cut by the token budget, the hooked forward
    pass, pooling per position, the hand-off of rows) share the batch, the hook buffers, the
    autocast state and the counters; split, they passed a dozen locals back and forth.

    >>> rows = collect(lm, ["a", "b"], ["hello", "a longer text"], layers=[2])  # doctest: +SKIP
    >>> rows[2].arrays()[3].shape                                               # doctest: +SKIP
    (4, 32)
    """
    if len(ids) != len(texts):
        raise GnomonError(f"{len(ids)} ids but {len(texts)} texts")
    if batch_size < 1:
        raise GnomonError("batch_size must be at least 1")
    layer_list = lm.check_layers(layers)   # a Layers resolved against this model is trusted
    max_length = min(max_length, lm.max_positions or max_length)  # truncate past the model's positions
    pos = check_positions(positions)
    cast = {"float32": torch.float32, "float16": torch.float16}[out_dtype]
    out = {layer: LayerRows() for layer in layer_list}
    all_ids, all_special = _encode(lm, texts, max_length)
    extra = _forward_kwargs(lm.model)
    device = lm.device
    cuda = device.type == "cuda"
    pad_id = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else 0

    def to_device(t: torch.Tensor) -> torch.Tensor:
        return t.pin_memory().to(device, non_blocking=True) if cuda else t.to(device)

    budget = token_budget if token_budget is not None else default_token_budget(device)
    for batch in length_batches([len(x) for x in all_ids], batch_size, budget):
        input_ids, attn_cpu, special_cpu = _pad_left([all_ids[i] for i in batch], [all_special[i] for i in batch],
                                                     pad_id)
        attn, special = to_device(attn_cpu), to_device(special_cpu)          # (B, T)
        position_ids = (attn.cumsum(-1) - 1).clamp(min=0)                    # (B, T)
        with record_layers(lm.model, lm.adapter, layer_list) as rec, _autocast(lm, autocast):
            run_until(lm.model, input_ids=to_device(input_ids), attention_mask=attn,
                      position_ids=position_ids, **extra)
        missing = [layer for layer in layer_list if layer not in rec]
        if missing:
            raise GnomonError(f"layers {missing} produced no output: the adapter for "
                              f"{lm.adapter.family} does not match this model")
        real = attn.bool()
        content = real & ~special
        content = torch.where(content.any(-1, keepdim=True), content, real)  # all-special rows
        n_real = real.sum(-1)                                                # (B,)
        first = content.int().argmax(-1)                                     # (B,) first content token
        batch_ids = [ids[i] for i in batch]
        with torch.inference_mode():
            # pooled rows of every layer reduced on the device, then one copy to the host
            pooled: dict[str, np.ndarray] = {}
            if "last" in pos:
                pooled["last"] = torch.stack([rec[layer][:, -1] for layer in layer_list]).to(cast).cpu().numpy()
            if "mean" in pos:
                pooled["mean"] = torch.stack([mean_pool(rec[layer], content, first) for layer in layer_list]
                                             ).to(cast).cpu().numpy()            # (L, B, D)
            last_index = (n_real - 1).int().cpu().numpy()
        for k, layer in enumerate(layer_list):
            rows = out[layer]
            if "last" in pos:
                rows.example_ids += batch_ids
                rows.positions += ["last"] * len(batch)
                rows.token_index.append(last_index)
                rows.acts.append(pooled["last"][k])                          # left padding: last real token
            if "mean" in pos:
                rows.example_ids += batch_ids
                rows.positions += ["mean"] * len(batch)
                rows.token_index.append(np.full(len(batch), -1, np.int32))
                rows.acts.append(pooled["mean"][k])
            if "tok" in pos:
                h = rec[layer]
                for b, ex in enumerate(batch_ids):
                    sel = real[b]
                    n = int(sel.sum())
                    rows.example_ids += [ex] * n
                    rows.positions += ["tok"] * n
                    rows.token_index.append(np.arange(n, dtype=np.int32))
                    rows.acts.append(h[b, sel].float().to(cast).cpu().numpy())
        if progress is not None:
            progress(len(batch), int(n_real.sum()))
    return out
