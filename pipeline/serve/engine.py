"""The decode loop the server runs: a batch of requests, each row with its own prompt, token
budget, intervention ops (:mod:`pipeline.steer.protocol`) and monitored directions, greedy
with one KV cache for the batch (a KV cache row per request).

Rows are left-padded and positioned from their attention mask exactly as
:func:`pipeline.steer.generate.greedy` does, and every generated token is fed once more so
its residual stream is read, as :func:`pipeline.monitor.monitor` does: a row alone in its
batch generates the tokens ``gnomon steer`` generates and reads what ``gnomon monitor`` reads
(tested). ``emit`` receives each row's tokens as they are decided, one step behind the
forward pass that reads them.

>>> run_batch(lm, [Row(ids, 16, ops=[], monitors=[], emit=print)])   # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from pipeline.hooks import _hidden, hooks
from pipeline.models.loading import LoadedModel
from pipeline.steer.generate import _cache_kw, _out_cache
from pipeline.steer.protocol import Op, decide, mean_weights, steering
from pipeline.types import GnomonError


@dataclass
class Watch:
    """One monitored direction of one row."""

    name: str
    layer: int
    unit: torch.Tensor
    """(D,) the direction's unit vector."""
    position: str = "last"
    """``last``: the token's own reading; ``mean``: the running mean over content tokens."""
    calibration: Any = None
    """A :class:`pipeline.monitor.Calibration` (probabilities), or None."""


@dataclass
class Row:
    """One request's row of a batch."""

    ids: Sequence[int]
    """Prompt token ids (special tokens included as the tokenizer gave them)."""
    max_new_tokens: int
    ops: Sequence[Op] = ()
    monitors: Sequence[Watch] = ()
    emit: Callable[[dict[str, Any]], None] = lambda event: None
    """Called with ``{"prompt_readings", "prompt_probs"}`` once the prompt is read, then
    ``{"token_id", "readings", "probs", "conditions"}`` per token, then ``{"done": ...}``."""
    tokens: list[int] = field(default_factory=list)


class _Running:
    """The ``mean`` rule as a running mean: the first content token is left out once there is
    a second (:data:`pipeline.types.MEAN_RULE`)."""

    def __init__(self) -> None:
        self.first: float | None = None
        self.total, self.n = 0.0, 0

    def push(self, value: float, content: bool) -> float:
        if content:
            if self.first is None:
                self.first = value
            else:
                self.total, self.n = self.total + value, self.n + 1
        if self.n:
            return self.total / self.n
        return self.first if self.first is not None else value


def monitor_hooks(lm: LoadedModel, rows: Sequence[Row]) -> tuple[Any, dict[int, torch.Tensor],
                                                                   dict[int, list[tuple[int, int]]]]:
    """Hooks that read every row's monitors: per layer one (D, K) matrix of the watches' unit
    vectors; ``seen[layer]`` gets the (B, T, K) readings of the last forward, ``cols[layer]``
    says which (row, watch) each column is. Returns (register, seen, cols)."""
    cols: dict[int, list[tuple[int, int]]] = {}                                 # layer -> [(row, watch)]
    for r, row in enumerate(rows):
        for k, w in enumerate(row.monitors):
            cols.setdefault(w.layer, []).append((r, k))
    units = {layer: torch.stack([rows[r].monitors[k].unit.float() for r, k in rc], 1).to(lm.device)
             for layer, rc in cols.items()}                                     # (D, K)
    seen: dict[int, torch.Tensor] = {}

    def make(layer: int) -> Any:
        def hook(_m: Any, _a: Any, output: Any) -> None:
            seen[layer] = (_hidden(output).float() @ units[layer]).cpu()        # (B, T, K)
        return hook

    def register() -> list[Any]:
        return [lm.adapter.layer_module(lm.model, layer).register_forward_hook(make(layer)) for layer in cols]

    return register, seen, cols


def run_batch(lm: LoadedModel, rows: Sequence[Row]) -> None:
    """Generate every row to its budget or its EOS, calling each row's ``emit``. 81 lines: one
    prefill and one decode loop sharing the per-row cache and readings; left to split."""
    if not rows:
        return
    tok, model = lm.tokenizer, lm.model
    eos = tok.eos_token_id
    pad = tok.pad_token_id if tok.pad_token_id is not None else eos
    special = set(tok.all_special_ids)
    dev = lm.device
    width = max(len(r.ids) for r in rows)
    budget = max(r.max_new_tokens for r in rows)
    if lm.max_positions is not None and width + budget > lm.max_positions:
        raise GnomonError(f"a prompt of {width} tokens plus {budget} new ones is past {lm.model_id}'s "
                          f"{lm.max_positions} positions; shorten the prompt or lower max_tokens")
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for r, row in enumerate(rows):
        if not row.ids:
            raise GnomonError("empty prompt: give at least one token of text")
        ids[r, width - len(row.ids):] = torch.as_tensor(list(row.ids))
        mask[r, width - len(row.ids):] = 1
    ids, mask = ids.to(dev), mask.to(dev)
    pos = (mask.cumsum(-1) - 1).clamp(min=0)                                    # (B, T)

    register, seen, cols = monitor_hooks(lm, rows)   # every row's watches, one matrix per layer

    running = [[_Running() for _ in row.monitors] for row in rows]

    def read(t_index: int, token_ids: Sequence[int], content_mask: Sequence[bool]) -> list[dict[str, float]]:
        """Per row, each watch's reading of the token at column ``t_index`` of the last pass."""
        out: list[dict[str, float]] = [{} for _ in rows]
        for layer, rc in cols.items():
            for j, (r, k) in enumerate(rc):
                w = rows[r].monitors[k]
                s = float(seen[layer][r, t_index, j])
                m = running[r][k].push(s, content_mask[r])
                out[r][w.name] = m if w.position == "mean" else s
        return out

    cache_kw = _cache_kw(model)
    done = [False] * len(rows)
    with torch.inference_mode(), steering(lm, [list(r.ops) for r in rows],
                                          weights=mean_weights(lm, ids, mask)) as state, hooks(register):
        decide(lm, [list(r.ops) for r in rows], state, ids, mask)             # conditions read late
        out = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True)
        cache = _out_cache(out)
        for t in range(width):                                                  # the prompt, for mean readings
            content = [bool(mask[r, t]) and int(ids[r, t]) not in special for r in range(len(rows))]
            prompt_read = read(t, [], content)
        for r, row in enumerate(rows):          # the whole prompt's reading: what the test AUROC describes
            row.emit({"prompt_readings": prompt_read[r], "prompt_probs": _probs(row, prompt_read[r])})
        step_mask, step_pos = mask, pos[:, -1:]
        for i in range(budget):
            nxt = out.logits[:, -1].argmax(-1)                                  # (B,)
            fresh = [not d for d in done]
            for r, row in enumerate(rows):
                if fresh[r]:
                    row.tokens.append(int(nxt[r]))
                    if int(nxt[r]) == eos or len(row.tokens) >= row.max_new_tokens:
                        done[r] = True
                else:
                    nxt[r] = pad
            step_mask = torch.cat([step_mask, torch.ones_like(step_mask[:, :1])], dim=1)
            step_pos = step_pos + 1
            out = model(input_ids=nxt[:, None], attention_mask=step_mask, position_ids=step_pos,
                        use_cache=True, **{cache_kw: cache})                    # also reads token i
            cache = _out_cache(out)
            content = [fresh[r] and int(nxt[r]) not in special for r in range(len(rows))]
            readings = read(0, [], content)
            for r, row in enumerate(rows):
                if fresh[r]:
                    row.emit({"token_id": row.tokens[-1], "readings": readings[r], "probs": _probs(row, readings[r]),
                              "conditions": _conditions(row, r, state)})
            if all(done):
                break
    for r, row in enumerate(rows):
        reason = "stop" if row.tokens and row.tokens[-1] == eos else "length"
        row.emit({"done": True, "finish_reason": reason, "conditions": _conditions(row, r, state)})


def _probs(row: Row, readings: dict[str, float]) -> dict[str, float]:
    return {w.name: float(w.calibration.prob([readings[w.name]])[0]) for w in row.monitors
            if w.calibration is not None}


def _conditions(row: Row, r: int, state: Any) -> dict[str, bool]:
    """Whether each conditional op of the row fired on its prompt."""
    out = {}
    for o in row.ops:
        fired = o.fired(state) if hasattr(o, "fired") else None
        if fired is not None:
            out[getattr(o, "name", "") or f"condition@L{o.layers[0]}"] = fired[r]
    return out
