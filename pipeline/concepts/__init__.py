"""Shipped concept datasets and their metadata.

Each concept is a JSONL file in ``data/`` (regenerate with
``python -m pipeline.concepts.generate``) plus ``data/<name>_neutral.txt``: prompts that
do not commit to either label, used for steering continuations and side-effect checks.
Load them with :func:`pipeline.datasets.load_dataset`; this module holds only metadata
so importing it stays cheap.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ConceptInfo:
    """What a shipped concept contrasts."""

    positive: str
    """Label whose side of the direction scores high (e.g. ``deceptive`` for a lie detector)."""
    negative: str
    """The label it is contrasted with."""
    description: str
    """One line for ``gnomon concepts ls`` and the README."""


CONCEPTS: dict[str, ConceptInfo] = {
    "sentiment": ConceptInfo("positive", "negative",
                             "positive vs negative opinions about the same subject"),
    "truth": ConceptInfo("true", "false",
                         "true vs false factual statements: capitals, cities, one-digit sums, everyday facts"),
    "language": ConceptInfo("english", "french",
                            "the same sentence in English vs French"),
    "formality": ConceptInfo("formal", "informal",
                             "the same workplace message in formal vs casual register"),
    "tense": ConceptInfo("past", "present",
                         "the same sentence in the past vs the present tense"),
    "honesty": ConceptInfo("deceptive", "honest",
                           "a speaker knowingly lying vs openly telling the truth about the same situation"),
    "refusal": ConceptInfo("harmful", "harmless",
                           "mildly harmful vs harmless requests built from the same frame"),
}
"""Shipped concepts, in display order; labels are (positive, negative)."""

DATA_DIR = Path(__file__).resolve().parent / "data"
"""Where the shipped JSONL files and neutral prompt lists live (package data)."""

__all__ = ["CONCEPTS", "DATA_DIR", "ConceptInfo"]
