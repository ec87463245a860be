"""Dose-response of a direction on a live model, for concepts with or without a scorer.

A steering direction is useful when the behaviour it controls moves *in proportion* to the
strength: the least-squares slope of the mean behavioural score against strength says by
how much, and its R^2 how linear the response is. Sentiment has a behavioural scorer
(VADER on greedy continuations); a concept without one is scored by the **next-token
log-odds of its concept words**: ``log sum p(positive words) - log sum p(negative words)``
after each neutral prompt (the first token of each word, with a leading space), which
needs one forward pass per strength instead of a generation.

:func:`perplexity` is the other side effect beside next-token KL: how much less likely the
model finds plain neutral text once the direction is added.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from pipeline.concepts.behaviour import CONCEPT_SCORERS, CONCEPT_WORDS, concept_scorer, not_measured, readout
from pipeline.direction import Direction
from pipeline.models.loading import LoadedModel
from pipeline.steer import add, apply, encode_prompts
from pipeline.types import GnomonError

__all__ = ["CONCEPT_SCORERS", "CONCEPT_WORDS", "concept_scorer", "concept_words", "is_generative", "linear_fit",
           "logodds_sweep", "perplexity", "word_ids", "word_log_odds"]

def concept_words(concept: str, home: Any = None) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The concept's readout words (:mod:`pipeline.concepts.behaviour`); never its label names."""
    r = readout(concept, home)
    if r is None or r.words is None:
        raise GnomonError(not_measured(concept))
    return r.words


def is_generative(lm: LoadedModel) -> bool:
    """True when the model predicts tokens (has an LM head); encoders like MiniLM do not."""
    get = getattr(lm.model, "get_output_embeddings", None)
    return bool(get is not None and get() is not None)


def linear_fit(x: Sequence[float], y: Sequence[float]) -> dict[str, float]:
    """Least-squares ``y = slope * x + b``: slope and R^2 (NaN when x or y is constant)."""
    a, b = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if a.size < 2 or a.std() == 0:
        return {"slope": float("nan"), "r2": float("nan")}
    slope, icept = np.polyfit(a, b, 1)
    ss_res = float(((b - (slope * a + icept)) ** 2).sum())
    ss_tot = float(((b - b.mean()) ** 2).sum())
    return {"slope": float(slope), "r2": 1.0 - ss_res / ss_tot if ss_tot > 0 else float("nan")}


def word_ids(lm: LoadedModel, words: Sequence[str]) -> list[int]:
    """The first token id of each ``" " + word`` (sorted, distinct): what a readout's words
    are read as, by every stage (evaluate, report, best-steer, drift, fluency)."""
    ids = []
    for w in words:
        toks = lm.tokenizer(" " + w, add_special_tokens=False)["input_ids"]
        # A tokenizer that splits the leading space off (character-level) would make every
        # word's first token the space: take the first token that carries the word.
        toks = [t for t in toks if lm.tokenizer.decode([t]).strip()] or toks
        if toks:
            ids.append(int(toks[0]))
    if not ids:
        raise GnomonError(f"none of the words {list(words)} tokenizes for {lm.model_id}")
    return sorted(set(ids))


def word_log_odds(logp: torch.Tensor, pos_ids: Sequence[int], neg_ids: Sequence[int]) -> torch.Tensor:
    """``log sum p(positive words) - log sum p(negative words)``: (..., V) log-probabilities
    -> (...). The one definition of the concept-word log-odds."""
    return torch.logsumexp(logp[..., list(pos_ids)], -1) - torch.logsumexp(logp[..., list(neg_ids)], -1)


def logodds_sweep(lm: LoadedModel, direction: Direction, prompts: Sequence[str], strengths: Sequence[float],
                  words: tuple[Sequence[str], Sequence[str]], unit: str = "separation", force: bool = False,
                  chat: bool = False) -> dict[str, Any]:
    """Mean next-token log-odds of the positive vs negative words at each strength."""
    pos_ids, neg_ids = word_ids(lm, words[0]), word_ids(lm, words[1])
    enc = encode_prompts(lm, prompts, chat)
    strengths = sorted(float(s) for s in strengths)
    means = []
    for s in strengths:
        ivs = [] if s == 0 else [add(lm, direction, s, unit, force=force)]  # type: ignore[arg-type]
        with apply(ivs), torch.inference_mode():
            logp = torch.log_softmax(lm.model(**enc).logits[:, -1].float(), -1)   # (B, V)
        means.append(float(word_log_odds(logp, pos_ids, neg_ids).mean()))
    return {"strengths": strengths, "mean_scores": means, **linear_fit(strengths, means)}


def perplexity(lm: LoadedModel, texts: Sequence[str], interventions: Sequence[Any] = ()) -> float:
    """Token-level perplexity of ``texts`` (one at a time: no padding to get wrong)."""
    nll, count = 0.0, 0
    with apply(list(interventions)), torch.inference_mode():
        for t in texts:
            ids = lm.tokenizer(t, return_tensors="pt")["input_ids"].to(lm.device)   # (1, T)
            if ids.shape[1] < 2:
                continue
            logits = lm.model(input_ids=ids).logits[0, :-1].float()                # (T-1, V)
            nll += float(torch.nn.functional.cross_entropy(logits, ids[0, 1:], reduction="sum"))
            count += ids.shape[1] - 1
    if count == 0:
        raise GnomonError("perplexity needs texts of at least two tokens")
    return float(np.exp(nll / count))
