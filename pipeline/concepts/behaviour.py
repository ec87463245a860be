"""How a concept's behaviour is measured when a direction steers it: its readout.

A readout is either **words** (``log p(positive words) - log p(negative words)`` at the next
token, the report's and ``evaluate``'s log-odds; the first token of each word with a leading
space) or a **scorer** of generated text (``vader`` for sentiment). Shipped concepts have
theirs here (:data:`CONCEPT_WORDS`, :data:`CONCEPT_SCORERS`: the one table every stage
reads); a registered concept declares its own at ``gnomon concepts add`` (``--words-positive``,
``--words-negative``, ``--scorer``), kept in ``<home>/concepts/<name>.readout.json``, or in its
dataset metadata (``<name>.contrast.json``, beside the positive/negative labels: the keys
``positive_words``, ``negative_words``, ``scorer``; a readout file, when there is one, is the readout). A
concept without one is never scored on its label names: control, interpolation and
composition are reported as *not measured*, with :func:`not_measured` saying how to declare one.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.atomic import write_text
from pipeline.home import gnomon_home
from pipeline.types import GnomonError

__all__ = ["CONCEPT_SCORERS", "CONCEPT_WORDS", "Readout", "concept_scorer", "declare_readout", "not_measured",
           "metadata", "readout", "register_scorer", "score_texts", "scorer_function", "scorer_names"]

CONCEPT_WORDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "sentiment": (("good", "great", "wonderful", "happy", "love", "beautiful"),
                  ("bad", "terrible", "awful", "sad", "hate", "horrible")),
    "truth": (("true", "correct", "right", "yes", "indeed"), ("false", "wrong", "incorrect", "no", "not")),
    "language": (("the", "and", "is", "of", "with", "to"), ("le", "la", "et", "est", "de", "les")),
    "formality": (("Dear", "Regards", "Please", "kindly", "sincerely", "therefore"),
                  ("hey", "yeah", "gonna", "lol", "cool", "guys")),
    "tense": (("was", "had", "went", "did", "were", "said"), ("is", "has", "goes", "does", "are", "says")),
    "honesty": (("lie", "pretend", "deny", "fake", "hide", "never"),
                ("truth", "honest", "admit", "confess", "actually", "really")),
    "refusal": (("sorry", "cannot", "unable", "can't", "refuse", "not"),
                ("sure", "here", "yes", "certainly", "first", "step")),
}
"""Per shipped concept: words whose next-token probability rises with the positive label
(first tuple) and with the negative label (second)."""
CONCEPT_SCORERS = {"sentiment": "vader"}
"""Shipped concepts whose behaviour has a scorer of generated text (see :func:`register_scorer`)."""

_SCORERS: dict[str, str | Callable[[Sequence[str]], Any]] = {}


def register_scorer(name: str, fn: str | Callable[[Sequence[str]], Any]) -> None:
    """Register a scorer of generated text: ``fn(texts) -> (n,) float array``, or
    ``"module:function"`` naming it (imported on first use). Every stage that scores text
    (evaluate, report, best-steer, drift, fluency) and ``concepts add --scorer`` read this."""
    _SCORERS[name] = fn


def scorer_names() -> tuple[str, ...]:
    return tuple(_SCORERS)


def scorer_function(name: str) -> Callable[[Sequence[str]], Any]:
    """The registered scorer ``name``, loaded."""
    fn = _SCORERS.get(name)
    if fn is None:
        raise GnomonError(f"unknown scorer {name!r}: choose {', '.join(_SCORERS)}")
    if isinstance(fn, str):
        module, _, attr = fn.partition(":")
        fn = _SCORERS[name] = getattr(importlib.import_module(module), attr)
    return fn


def score_texts(name: str, texts: Sequence[str]) -> np.ndarray:
    """Scorer ``name`` on ``texts`` as float64 (n,)."""
    return np.asarray(scorer_function(name)(texts), dtype=np.float64)


register_scorer("vader", "pipeline.evaluate:vader_compound")


@dataclass(frozen=True)
class Readout:
    words: tuple[tuple[str, ...], tuple[str, ...]] | None
    scorer: str | None
    source: str
    """``shipped`` or the declaration file."""


def _file(concept: str, home: Any) -> Path:
    return gnomon_home(home) / "concepts" / f"{concept}.readout.json"


def _read(path: Path, concept: str) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError) as e:
        raise GnomonError(f"the readout of concept {concept!r} ({path}) is unreadable: {e}") from e
    return doc if isinstance(doc, dict) else {}


def metadata(concept: str, home: Any = None) -> dict[str, Any]:
    """A registered concept's dataset metadata (``<home>/concepts/<name>.contrast.json``:
    its labels, and optionally readout words and a scorer); empty when it has none."""
    return _read(gnomon_home(home) / "concepts" / f"{concept}.contrast.json", concept)


def readout(concept: str, home: Any = None) -> Readout | None:
    """The concept's declared readout, or None when it has none: the shipped table, else
    ``<name>.readout.json``, else the words/scorer in its dataset metadata."""
    if concept in CONCEPT_WORDS or concept in CONCEPT_SCORERS:
        return Readout(CONCEPT_WORDS.get(concept), CONCEPT_SCORERS.get(concept), "shipped")
    for path in (_file(concept, home), gnomon_home(home) / "concepts" / f"{concept}.contrast.json"):
        doc = _read(path, concept)
        pos, neg = tuple(doc.get("positive_words") or ()), tuple(doc.get("negative_words") or ())
        words, scorer = ((pos, neg) if pos and neg else None), doc.get("scorer")
        if words is not None or scorer:
            return Readout(words, scorer, str(path))
    return None


def concept_scorer(concept: str, home: Any = None) -> str | None:
    """The scorer of generated text for ``concept`` (shipped or declared; None: it is
    measured by its words' log-odds, or not at all)."""
    r = readout(concept, home)
    return r.scorer if r is not None else None


def not_measured(concept: str) -> str:
    return (f"control not measured: concept {concept!r} declares no behavioural readout; declare one with "
            f"`gnomon concepts add FILE --name {concept} --words-positive w1,w2 --words-negative w3,w4` "
            f"(or --scorer {'|'.join(scorer_names())})")


def declare_readout(concept: str, home: Any, positive_words: tuple[str, ...] = (),
                    negative_words: tuple[str, ...] = (), scorer: str | None = None) -> Path:
    """Write the concept's readout (words in both classes, or a scorer; atomically)."""
    if bool(positive_words) != bool(negative_words):
        raise GnomonError("give words for both labels (--words-positive and --words-negative), or neither")
    if scorer is not None and scorer not in scorer_names():
        raise GnomonError(f"unknown scorer {scorer!r}: choose {', '.join(scorer_names())}")
    if not positive_words and scorer is None:
        raise GnomonError("a readout needs words for both labels or a scorer")
    bad = [w for w in (*positive_words, *negative_words) if not w.strip()]
    if bad:
        raise GnomonError("readout words must not be empty")
    return write_text(_file(concept, home), json.dumps({
        "positive_words": list(positive_words), "negative_words": list(negative_words), "scorer": scorer}) + "\n")
