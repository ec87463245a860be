"""Greedy batched generation with a KV cache, under any interventions.

gnomon runs its own decode loop instead of ``model.generate`` for three reasons: it sets
``position_ids`` explicitly from the attention mask (so a left-padded row generates exactly
what it generates alone, for absolute-position models such as GPT-2 too), it can feed the
last generated token once more so a monitor sees the hidden state of every generated token,
and it has no per-step overhead beyond the forward pass (which is what the steering
benchmark measures). Greedy decoding is deterministic, so steered and unsteered
continuations differ only by the intervention.

>>> generate(lm, ["The movie was"], 16, interventions=[add(lm, d, 4.0)])   # doctest: +SKIP
[' wonderful, and ...']
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from pipeline.models.loading import LoadedModel
from pipeline.steer.interventions import Intervention, apply
from pipeline.steer.protocol import Op, State, decide, mean_weights, steering
from pipeline.types import GnomonError


@dataclass(frozen=True)
class Generation:
    """Token ids of a batched greedy generation (left-padded prompts)."""

    prompt_ids: torch.Tensor
    """(B, T) left-padded prompt ids."""
    prompt_mask: torch.Tensor
    """(B, T) 1 for real prompt tokens."""
    new_ids: torch.Tensor
    """(B, N) generated ids; after a row's EOS the row holds padding."""
    lengths: list[int]
    """Generated tokens per row, up to and including its EOS."""


def encode_prompts(lm: LoadedModel, prompts: Sequence[str], chat: bool = False) -> dict[str, torch.Tensor]:
    """Tokenize with left padding (the loader sets it); ``chat`` applies the chat template."""
    if not prompts:
        raise GnomonError("no prompts given")
    tok = lm.tokenizer
    texts = list(prompts)
    if chat:
        if not getattr(tok, "chat_template", None):
            raise GnomonError(f"{lm.model_id}'s tokenizer has no chat template; drop --chat")
        texts = [tok.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                         add_generation_prompt=True) for p in texts]
    enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=not chat)
    return {"input_ids": enc["input_ids"].to(lm.device), "attention_mask": enc["attention_mask"].to(lm.device)}


def _cache_kw(model: Any) -> str:
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def _out_cache(out: Any) -> Any:
    return getattr(out, "cache", None) if getattr(out, "cache", None) is not None else out.past_key_values


def greedy(lm: LoadedModel, enc: dict[str, torch.Tensor], max_new_tokens: int,
           feed_last: bool = False, sample: torch.Generator | None = None) -> Generation:
    """Greedy decode ``max_new_tokens`` (fewer when every row has emitted EOS).

    ``feed_last`` runs one more forward pass on the last generated token (its logits are
    discarded), so hooks observe the residual stream of every generated token. ``sample``
    (a CPU generator) draws each token from the full next-token distribution instead
    (temperature 1, no top-k or top-p: the model's own samples, as the fleet's null
    control corpus needs).
    """
    if max_new_tokens < 1:
        raise GnomonError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    model = lm.model
    eos = lm.tokenizer.eos_token_id
    pad = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else eos
    cache_kw = _cache_kw(model)
    ids, mask = enc["input_ids"], enc["attention_mask"].long()                  # (B, T)
    limit = lm.max_positions
    if limit is not None and ids.shape[1] + max_new_tokens > limit:
        raise GnomonError(f"the prompt has {ids.shape[1]} tokens and {max_new_tokens} more are asked for, past "
                          f"{lm.model_id}'s {limit} positions; shorten the prompt or lower --max-new-tokens")
    pos = (mask.cumsum(-1) - 1).clamp(min=0)                                   # (B, T)
    b = ids.shape[0]
    done = torch.zeros(b, dtype=torch.bool, device=ids.device)
    lengths = [0] * b
    new: list[torch.Tensor] = []
    with torch.inference_mode():
        out = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True)
        cache = _out_cache(out)
        step_mask, step_pos = mask, pos[:, -1:]                                 # (B, 1)
        for i in range(max_new_tokens):
            if sample is None:
                nxt = out.logits[:, -1].argmax(-1)                              # (B,)
            else:
                probs = torch.softmax(out.logits[:, -1].float().cpu(), -1)
                nxt = torch.multinomial(probs, 1, generator=sample).squeeze(1).to(ids.device)
            nxt = torch.where(done, torch.full_like(nxt, pad), nxt)
            new.append(nxt)
            for r in range(b):
                if not done[r]:
                    lengths[r] = i + 1
            if eos is not None:
                done = done | (nxt == eos)
            last = i == max_new_tokens - 1 or bool(done.all())
            if last and not feed_last:
                break
            step_mask = torch.cat([step_mask, torch.ones_like(step_mask[:, :1])], dim=1)
            step_pos = step_pos + 1
            out = model(input_ids=nxt[:, None], attention_mask=step_mask, position_ids=step_pos,
                        use_cache=True, **{cache_kw: cache})
            cache = _out_cache(out)
            if last:
                break
    return Generation(prompt_ids=ids, prompt_mask=mask, new_ids=torch.stack(new, dim=1),
                      lengths=lengths)


def continuation_texts(lm: LoadedModel, gen: Generation) -> list[str]:
    """Decode each row's generated tokens, stopping before its EOS."""
    eos = lm.tokenizer.eos_token_id
    texts = []
    for r, n in enumerate(gen.lengths):
        ids = gen.new_ids[r, :n].tolist()
        if ids and ids[-1] == eos:
            ids = ids[:-1]
        texts.append(lm.tokenizer.decode(ids, skip_special_tokens=True))
    return texts


def generate(lm: LoadedModel, prompts: Sequence[str], max_new_tokens: int = 32,
             interventions: Sequence[Intervention] = (), chat: bool = False) -> list[str]:
    """Greedy continuations (texts of the new tokens only) with ``interventions`` applied."""
    enc = encode_prompts(lm, prompts, chat)
    with apply(list(interventions)):
        gen = greedy(lm, enc, max_new_tokens)
    return continuation_texts(lm, gen)


def generate_rows(lm: LoadedModel, prompts: Sequence[str], rows: Sequence[Sequence[Op]],
                  max_new_tokens: int = 32, chat: bool = False) -> tuple[list[str], State]:
    """Greedy continuations with ``rows[i]`` (protocol ops) applied to prompt ``i``; also the
    final state (e.g. which conditions fired: :meth:`Conditional.fired`)."""
    if len(rows) != len(prompts):
        raise GnomonError(f"{len(rows)} op lists for {len(prompts)} prompts: give one list per prompt")
    enc = encode_prompts(lm, prompts, chat)
    w = mean_weights(lm, enc["input_ids"], enc["attention_mask"])
    with steering(lm, rows, weights=w) as state:
        decide(lm, rows, state, enc["input_ids"], enc["attention_mask"])
        gen = greedy(lm, enc, max_new_tokens)
    return continuation_texts(lm, gen), state
