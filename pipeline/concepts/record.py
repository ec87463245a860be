"""One record of what a concept is: its labels, neutral prompts, readout words and scorer.

Every stage that steers or scores a concept (evaluate, report, best-steer, drift) reads
this record, built once per request by :func:`concept_record`, instead of asking the
dataset, the neutral-prompt file and the readout declaration separately.

Where each fact comes from:

- labels ``(positive, negative)``: the shipped metadata (:data:`pipeline.concepts.CONCEPTS`),
  else the dataset's default contrast (``<name>.contrast.json``, or its labels; the
  dataset is taken from the caller when it has loaded it);
- neutral prompts: ``data/<name>_neutral.txt`` or ``<home>/concepts/<name>_neutral.txt``;
- words and scorer: :func:`pipeline.concepts.behaviour.readout` (shipped table,
  ``<name>.readout.json``, or the same keys in the dataset's metadata, ``<name>.contrast.json``).

>>> c = concept_record("sentiment")                 # doctest: +SKIP
>>> c.labels, c.scorer, c.words[0][:2], len(c.neutral_prompts)
(('positive', 'negative'), 'vader', ('good', 'great'), 32)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipeline.concepts import CONCEPTS
from pipeline.types import GnomonError

# lazy: numpy, pyarrow (heavy; imported where used)

__all__ = ["Concept", "concept_record"]


@dataclass(frozen=True)
class Concept:
    """A concept as the stages that use it see it (picklable: it travels to workers)."""

    name: str
    labels: tuple[str, str]
    """(positive, negative): the label that should project higher, and the other."""
    neutral_prompts: tuple[str, ...]
    """Prompts that commit to neither label; empty when the concept has none (see :meth:`prompts`)."""
    words: tuple[tuple[str, ...], tuple[str, ...]] | None
    """Readout words (rise with the positive / negative label), or None."""
    scorer: str | None
    """Registered scorer of generated text (``vader``), or None."""
    readout_source: str | None = None
    """``shipped``, or the file that declared the words/scorer; None without a readout."""
    missing_prompts: str = ""
    """Why there are no neutral prompts (the error :meth:`prompts` raises)."""

    def prompts(self, n: int | None = None) -> list[str]:
        """The first ``n`` neutral prompts; refuses, saying how to add them, when there are none."""
        if not self.neutral_prompts:
            raise GnomonError(self.missing_prompts or f"no neutral prompts for concept {self.name!r}")
        return list(self.neutral_prompts[:n] if n is not None else self.neutral_prompts)

    def require_words(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """The readout words; refuses with how to declare them (never the label names)."""
        if self.words is None:
            from pipeline.concepts.behaviour import not_measured

            raise GnomonError(not_measured(self.name))
        return self.words


def concept_record(name: str, home: Any = None, *, dataset: Any = None, labels: bool = True) -> Concept:
    """Everything a stage needs to know about concept ``name``, read once. ``dataset``: the
    concept's loaded dataset when the caller has it (its default contrast gives the labels);
    ``labels=False``: a caller that has them elsewhere (a direction's provenance) reads no
    dataset, and the record's labels are empty."""
    from pipeline.concepts.behaviour import readout
    from pipeline.datasets import neutral_prompts

    try:
        prompts, missing = tuple(neutral_prompts(name, home=home)), ""
    except GnomonError as e:
        prompts, missing = (), str(e)
    r = readout(name, home)
    return Concept(name=name, labels=_labels(name, home, dataset) if labels else ("", ""), neutral_prompts=prompts,
                   words=r.words if r is not None else None, scorer=r.scorer if r is not None else None,
                   readout_source=r.source if r is not None else None, missing_prompts=missing)


def _labels(name: str, home: Any, dataset: Any) -> tuple[str, str]:
    """The dataset's default contrast (declared at registration, else the shipped metadata's,
    else its first two labels); a shipped concept's comes from its metadata, no load."""
    if dataset is None and name in CONCEPTS:
        return CONCEPTS[name].positive, CONCEPTS[name].negative
    if dataset is None:
        from pipeline.datasets import load_dataset

        dataset = load_dataset(name, home=home)
    pos, neg = dataset.default_contrast
    return str(pos), str(neg)
