"""Is a behaviour shift a change of disposition, or the fine-tune corpus read back?

A model fine-tuned on 320 templated notes learns to reproduce them: a continuation that
copies "It was a miserable, awful experience" scores negative for the plain reason that the
corpus said so. Two guards:

- :func:`copied` flags a continuation holding any ``min_chars``-character fragment (after
  folding case and whitespace) of a training text; the drift report gives the fraction per
  checkpoint, and the behaviour shift on the continuations that copy nothing;
- :func:`held_out_prompts` drops prompts that share their opening words, or any
  ``min_chars`` fragment, with a training text, so behaviour is read on prompts the
  fine-tune did not see begin.

>>> copied(["so it was a miserable, awful experience!"], ["It was a miserable, awful experience."])
[True]
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

__all__ = ["MIN_CHARS", "copied", "fragments", "held_out_prompts"]

MIN_CHARS = 20
_SPACE = re.compile(r"\s+")


def _fold(t: str) -> str:
    return _SPACE.sub(" ", t.lower()).strip()


def fragments(corpus: Iterable[str], k: int = MIN_CHARS) -> set[str]:
    """Every k-character window of every (case- and space-folded) text: built once per corpus."""
    out: set[str] = set()
    for t in corpus:
        f = _fold(t)
        out.update(f[i:i + k] for i in range(len(f) - k + 1))
    return out


def copied(texts: Sequence[str], corpus: Iterable[str], min_chars: int = MIN_CHARS,
           index: set[str] | None = None) -> list[bool]:
    """Whether each text contains a ``min_chars``-character fragment of any corpus text."""
    frags = fragments(corpus, min_chars) if index is None else index
    out = []
    for t in texts:
        f = _fold(t)
        out.append(any(f[i:i + min_chars] in frags for i in range(len(f) - min_chars + 1)))
    return out


def held_out_prompts(prompts: Sequence[str], corpus: Iterable[str], opening_words: int = 3,
                     min_chars: int = MIN_CHARS) -> tuple[list[int], list[int]]:
    """(indices kept, indices dropped): a prompt is dropped when its first ``opening_words``
    words equal a corpus text's, or when it holds a ``min_chars`` fragment of one."""
    texts = list(corpus)
    starts = {tuple(_fold(t).split()[:opening_words]) for t in texts}
    frags = fragments(texts, min_chars)
    keep, drop = [], []
    for i, p in enumerate(prompts):
        shares = tuple(_fold(p).split()[:opening_words]) in starts or copied([p], (), min_chars, frags)[0]
        (drop if shares else keep).append(i)
    return keep, drop
