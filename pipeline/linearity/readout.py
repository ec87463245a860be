"""What a live model shows under interventions, read in one forward pass.

A :class:`Readout` holds the next-token log-probabilities after each prompt and the
monitors' readings (mean projection of the last prompt token on each direction's unit
vector, at the direction's own layer), both taken *after* the interventions. Everything
the control, interpolation and composition checks score comes from readouts, so one
forward pass per condition serves every concept at once.

Behavioural scores:

- ``log-odds``: log-odds of the concept's positive words over its negative words,
  ``logsumexp(logp[pos]) - logsumexp(logp[neg])``, averaged over the positions of a short
  greedy continuation and over prompts (:func:`continuation_log_odds`; the dose-response
  and interpolation), or read right after the prompt (:func:`log_odds` on a readout: the
  composition, one forward pass per condition). Each word counts by its first token
  (with a leading space). Defined for every shipped concept (:data:`CONCEPT_WORDS`).
- ``vader``: VADER compound score of greedy continuations (sentiment only; needs
  generation, see :func:`pipeline.evaluate.vader_compound`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from pipeline.direction import Direction
from pipeline.dose import word_ids, word_log_odds
from pipeline.hooks import record_layers
from pipeline.models.loading import LoadedModel
from pipeline.steer import Intervention, apply, encode_prompts, greedy

__all__ = [
    "CONCEPT_WORDS",
    "Readout",
    "continuation_log_odds",
    "encode",
    "log_odds",
    "next_token_kl",
    "read",
    "word_ids",
]

from pipeline.concepts.behaviour import CONCEPT_WORDS  # noqa: E402 - the one table (shared with evaluate)


@dataclass(frozen=True)
class Readout:
    logprobs: torch.Tensor
    """(B, V) next-token log-probabilities after each prompt (float32, CPU)."""
    monitors: dict[str, np.ndarray]
    """Direction name -> (B,) projection of the last prompt token at the direction's layer."""


def read(lm: LoadedModel, enc: Mapping[str, torch.Tensor], interventions: Sequence[Intervention] = (),
         directions: Mapping[str, Direction] | None = None) -> Readout:
    """One forward pass of the encoded prompts (left-padded) under ``interventions``.

    The recording hooks are registered after the interventions' hooks, so monitors read
    the edited residual stream.
    """
    dirs = dict(directions or {})
    layers = sorted({d.layer for d in dirs.values()})
    mask = enc["attention_mask"].long()
    inputs = {"input_ids": enc["input_ids"], "attention_mask": mask,
              "position_ids": (mask.cumsum(-1) - 1).clamp(min=0)}                       # (B, T): left padding
    with apply(list(interventions)), torch.inference_mode():
        if layers:
            with record_layers(lm.model, lm.adapter, layers, stop_after=False) as rec:
                logits = lm.model(**inputs).logits[:, -1]                                # (B, V)
        else:
            rec = {}
            logits = lm.model(**inputs).logits[:, -1]
        logp = torch.log_softmax(logits.float(), -1).cpu()
        mons = {name: (rec[d.layer][:, -1].float() @ d.unit.to(rec[d.layer].device)).cpu().numpy().astype(np.float64)
                for name, d in dirs.items()}
    return Readout(logprobs=logp, monitors=mons)


def log_odds(readout: Readout, pos_ids: Sequence[int], neg_ids: Sequence[int]) -> float:
    """Mean over prompts of logsumexp(logp[pos]) - logsumexp(logp[neg])."""
    return float(word_log_odds(readout.logprobs, pos_ids, neg_ids).mean())   # (B,) -> mean


def next_token_kl(base: Readout, other: Readout) -> float:
    """Mean KL(base || other) of the next-token distributions (the side-effect measure of
    :func:`pipeline.evaluate.next_token_kl`, from two readouts)."""
    b, o = base.logprobs, other.logprobs
    return float((b.exp() * (b - o)).sum(-1).mean())


def encode(lm: LoadedModel, prompts: Sequence[str]) -> dict[str, torch.Tensor]:
    """Prompts tokenized with left padding on the model's device."""
    return encode_prompts(lm, list(prompts))


def continuation_log_odds(lm: LoadedModel, prompts: Sequence[str], interventions: Sequence[Intervention],
                          pos_ids: Sequence[int], neg_ids: Sequence[int], max_new_tokens: int = 12) -> float:
    """Word log-odds averaged over a greedy continuation, under ``interventions``.

    The model continues each prompt greedily (steered), then one forward pass over
    prompt + continuation (steered too) gives the next-token distribution before every
    generated token; the score is the mean log-odds over those positions (up to each
    row's EOS) and prompts. Averaging over the continuation reads the concept where the
    model is actually writing, not only right after the prompt.
    """
    enc = encode(lm, prompts)
    with apply(list(interventions)):
        gen = greedy(lm, enc, max_new_tokens)
        n = gen.new_ids.shape[1]
        new_mask = (torch.arange(n, device=gen.new_ids.device)[None, :]
                    < torch.tensor(gen.lengths, device=gen.new_ids.device)[:, None]).long()   # (B, N)
        ids = torch.cat([gen.prompt_ids, gen.new_ids], 1)                                 # (B, T + N)
        mask = torch.cat([gen.prompt_mask.long(), new_mask], 1)
        with torch.inference_mode():
            logits = lm.model(input_ids=ids, attention_mask=mask,
                              position_ids=(mask.cumsum(-1) - 1).clamp(min=0)).logits        # (B, T + N, V)
    t = gen.prompt_ids.shape[1]
    lp = torch.log_softmax(logits[:, t - 1:t - 1 + n].float(), -1)                          # (B, N, V)
    per = word_log_odds(lp, pos_ids, neg_ids)                                                   # (B, N)
    valid = new_mask.to(per.dtype)
    return float((per * valid).sum() / valid.sum().clamp(min=1))
