"""The control corpus: the parent model's own sampled continuations of the openings.

A control series must show how much a concept moves when a model is fine-tuned on text
that carries no concept signal *for that model*. Text a person calls neutral is not that:
SmolLM2-Instruct writes cheerfully by default, and a fine-tune on flat, factual diary
notes pulled its VADER score down by 0.17 (3 standard errors), a sixth of what the
strongly negative corpus did. Text sampled from the model itself is a null for the tokens
it sampled: for continuation tokens drawn at temperature 1 with no truncation (no top-k,
no top-p), the expected gradient of their log-likelihood given the opening is zero,
E_{x~p(.|o)}[grad log p(x|o)] = 0. It is a null only for those tokens: the openings are
hand-written (a loss on them teaches the diary register), and a sample stops at
``max_new_tokens`` rather than where the model would end it (no EOS: length is not null).
So the fine-tune masks the openings out of the loss (``loss_on="continuation"``), and
drift measures continuation length and EOS rate as effects of their own. The
openings are the ones the skewed corpus starts with (:func:`diary_openings`), so both
corpora share their prefix tokens and differ only in what follows.

The corpus is generated once per parent (by fingerprint), kept under
``<home>/corpora/self-<fp12>-n<N>-s<seed>.jsonl`` and read back on a rerun, so a resumed
series trains on exactly the texts it started with.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pipeline.fleet.corpora import (
    Corpus,
    corpus_from_texts,
    diary_openings,
    load_corpus,
    save_corpus,
)
from pipeline.fleet.registry import read_lineage
from pipeline.home import gnomon_home
from pipeline.models.loading import ModelSpec, load_model

# lazy: torch (heavy; imported where used)

__all__ = ["self_corpus"]


def _sample(lm, openings: list[str], max_new_tokens: int, seed: int, batch_size: int) -> list[str]:
    import torch

    from pipeline.steer.generate import continuation_texts, encode_prompts, greedy

    gen = torch.Generator(device="cpu").manual_seed(seed)
    out: list[str] = []
    for i in range(0, len(openings), batch_size):
        chunk = openings[i:i + batch_size]
        new = continuation_texts(lm, greedy(lm, encode_prompts(lm, chunk), max_new_tokens, sample=gen))
        out += [o + t for o, t in zip(chunk, new)]
    return out


def self_corpus(parent: str, n: int, seed: int = 0, max_new_tokens: int = 32, home: str | Path | None = None,
                batch_size: int = 32, log: Callable[[str], None] = print) -> Corpus:
    """``n`` texts: each shared opening followed by ``parent``'s own sample (temperature 1)."""
    lin = read_lineage(parent, home)   # missing parent -> one clear line
    source = f"self:{parent}@{lin.fingerprint[:12]}:{n}:{seed}:{max_new_tokens}"
    kept = gnomon_home(home) / "corpora" / f"self-{lin.fingerprint[:12]}-n{n}-s{seed}-t{max_new_tokens}.jsonl"
    if kept.is_file():
        got = load_corpus(kept)
        if len(got.texts) == n:
            return Corpus(name="self", texts=got.texts, sha256=got.sha256, source=source,
                          prefix_chars=tuple(len(o) for o in diary_openings(n, seed)))
    lm = load_model(ModelSpec(id=parent, dtype="float32"), home=home)
    log(f"  sampling {n} control texts from {parent} ({max_new_tokens} new tokens, temperature 1)")
    openings = diary_openings(n, seed)
    texts = _sample(lm, openings, max_new_tokens, seed, batch_size)
    corpus = corpus_from_texts("self", texts, source, [len(o) for o in openings])
    save_corpus(corpus, kept)
    return corpus
