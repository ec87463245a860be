"""Continuous batching: rows join a running generation at any step and leave when they finish.

:func:`run_continuous` keeps one KV cache for the rows in flight. A joining row's prompt is
run as its own (prefill) batch, with its ops, conditions and monitors, and its cache is merged
into the running one: the shorter of the two is left-padded with masked zero columns, so every
row keeps attending to exactly its own tokens at its own positions (the mask and
``position_ids`` are per row, as in :func:`pipeline.serve.engine.run_batch`). A finished row
leaves the batch (``batch_select_indices``) and columns no row uses any more are cropped from
the left. Each decode step feeds every row's pending token, reads the monitors on it, emits it
and picks the next. Conditions decide on the prefill and keep their decision per row.

Greedy tokens equal a lone row's up to float rounding of the padded attention (tested equal on
tiny models, as batched and unbatched generation are).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from pipeline.hooks import hooks
from pipeline.models.loading import LoadedModel
from pipeline.serve.engine import Row, _conditions, _probs, _Running, monitor_hooks
from pipeline.steer.generate import _cache_kw, _out_cache
from pipeline.steer.protocol import decide, mean_weights, steering
from pipeline.types import GnomonError


class _Flight:
    """A row in flight: its row, monitor state, pending token and per-op decisions."""

    def __init__(self, row: Row, memory: dict[int, float]) -> None:
        self.row, self.memory = row, memory
        self.running = [_Running() for _ in row.monitors]
        self.conditions: dict[str, bool] = {}


def _pad_left(t: torch.Tensor, length: int, dim: int) -> torch.Tensor:
    extra = length - t.shape[dim]
    if extra <= 0:
        return t
    shape = list(t.shape)
    shape[dim] = extra
    return torch.cat([t.new_zeros(shape), t], dim=dim)


def _merge(cache: Any, mask: torch.Tensor, new_cache: Any, new_mask: torch.Tensor) -> torch.Tensor:
    """Append ``new_cache``'s rows to ``cache`` (in place); returns the merged (B, L) mask."""
    length = max(mask.shape[1], new_mask.shape[1])
    for a, b in zip(cache.layers, new_cache.layers):
        a.keys = torch.cat([_pad_left(a.keys, length, 2), _pad_left(b.keys, length, 2)], 0)       # (B, H, L, d)
        a.values = torch.cat([_pad_left(a.values, length, 2), _pad_left(b.values, length, 2)], 0)
    return torch.cat([_pad_left(mask, length, 1), _pad_left(new_mask, length, 1)], 0)


def _crop(cache: Any, mask: torch.Tensor) -> torch.Tensor:
    """Drop leading columns no row attends to any more."""
    used = mask.any(0).nonzero()
    start = int(used[0]) if used.numel() else mask.shape[1]
    if start == 0:
        return mask
    for layer in cache.layers:
        layer.keys, layer.values = layer.keys[:, :, start:], layer.values[:, :, start:]
    return mask[:, start:]


def _read(flights: Sequence[_Flight], seen: dict[int, torch.Tensor], cols: dict[int, list[tuple[int, int]]],
          t: int, content: Sequence[bool]) -> list[dict[str, float]]:
    out: list[dict[str, float]] = [{} for _ in flights]
    for layer, rc in cols.items():
        for j, (r, k) in enumerate(rc):
            w = flights[r].row.monitors[k]
            s = float(seen[layer][r, t, j])
            m = flights[r].running[k].push(s, content[r])
            out[r][w.name] = m if w.position == "mean" else s
    return out


def _memory(flights: Sequence[_Flight], device: torch.device) -> dict[int, torch.Tensor]:
    """The per-op decisions of the rows in flight as :class:`State` memory tensors."""
    keys = {k for f in flights for k in f.memory}
    return {k: torch.tensor([f.memory.get(k, 0.0) for f in flights], device=device,
                            dtype=torch.bool if k > 0 else torch.float32) for k in keys}


def run_continuous(lm: LoadedModel, take: Callable[[int], list[Row]], max_rows: int = 16) -> None:
    """Generate rows as they come: ``take(free)`` is called before every step with the number
    of free places and returns the rows that join now (``[]``: none). Returns when no row is
    in flight and ``take`` gave none."""
    tok, model, dev = lm.tokenizer, lm.model, lm.device
    eos = tok.eos_token_id
    special = set(tok.all_special_ids)
    cache_kw = _cache_kw(model)
    flights: list[_Flight] = []
    cache: Any = None
    mask = torch.zeros((0, 0), dtype=torch.long, device=dev)
    pos = torch.zeros((0, 1), dtype=torch.long, device=dev)
    with torch.inference_mode():
        while True:
            new = take(max_rows - len(flights)) if len(flights) < max_rows else []
            if new:
                nf, ncache, nmask, npos = _prefill(lm, new, special)
                if cache is None:
                    cache, mask, pos = ncache, nmask, npos
                else:
                    mask = _merge(cache, mask, ncache, nmask)
                    pos = torch.cat([pos, npos], 0)
                flights += nf
            if not flights:
                return
            nxt = torch.tensor([f.row.tokens[-1] for f in flights], device=dev)
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            register, seen, cols = monitor_hooks(lm, [f.row for f in flights])
            with steering(lm, [list(f.row.ops) for f in flights]) as state, hooks(register):
                state.memory.update(_memory(flights, dev))
                out = model(input_ids=nxt[:, None], attention_mask=mask, position_ids=pos, use_cache=True,
                            **{cache_kw: cache})
            cache = _out_cache(out)
            pos = pos + 1
            readings = _read(flights, seen, cols, 0, [int(t) not in special for t in nxt.tolist()])
            best = out.logits[:, -1].argmax(-1).tolist()
            keep = []
            for r, f in enumerate(flights):
                row = f.row
                row.emit({"token_id": row.tokens[-1], "readings": readings[r], "probs": _probs(row, readings[r]),
                          "conditions": f.conditions})
                if row.tokens[-1] == eos or len(row.tokens) >= row.max_new_tokens:
                    row.emit({"done": True, "finish_reason": "stop" if row.tokens[-1] == eos else "length",
                              "conditions": f.conditions})
                else:
                    row.tokens.append(int(best[r]))
                    keep.append(r)
            if len(keep) < len(flights):
                idx = torch.tensor(keep, dtype=torch.long, device=dev)
                cache.batch_select_indices(idx)
                mask, pos = _crop(cache, mask[idx]), pos[idx]
                flights = [flights[r] for r in keep]
                if not flights:
                    cache = None


def _prefill(lm: LoadedModel, rows: Sequence[Row], special: set[int]) -> tuple[list[_Flight], Any, torch.Tensor,
                                                                               torch.Tensor]:
    """Run the joining rows' prompts; their first token is picked (pending)."""
    dev = lm.device
    pad = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else lm.tokenizer.eos_token_id
    width = max(len(r.ids) for r in rows)
    if any(not r.ids for r in rows):
        raise GnomonError("empty prompt: give at least one token of text")
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for r, row in enumerate(rows):
        ids[r, width - len(row.ids):] = torch.as_tensor(list(row.ids))
        mask[r, width - len(row.ids):] = 1
    ids, mask = ids.to(dev), mask.to(dev)
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    flights = [_Flight(row, {}) for row in rows]
    register, seen, cols = monitor_hooks(lm, [f.row for f in flights])
    ops = [list(r.ops) for r in rows]
    with steering(lm, ops, weights=mean_weights(lm, ids, mask)) as state, hooks(register):
        decide(lm, ops, state, ids, mask)
        out = lm.model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True)
    prompt_read: list[dict[str, float]] = [{} for _ in rows]
    for t in range(width):
        prompt_read = _read(flights, seen, cols, t,
                            [bool(mask[r, t]) and int(ids[r, t]) not in special for r in range(len(rows))])
    first = out.logits[:, -1].argmax(-1).tolist()
    for r, f in enumerate(flights):
        f.memory = {k: float(v[r]) for k, v in state.memory.items()}
        f.conditions = _conditions(f.row, r, state)
        f.row.emit({"prompt_readings": prompt_read[r], "prompt_probs": _probs(f.row, prompt_read[r])})
        f.row.tokens.append(int(first[r]))
    return flights, _out_cache(out), mask, pos[:, -1:] + 1
