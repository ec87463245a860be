"""The per-version task of ``gnomon drift`` and the corpora it reads.

One task per version (one model load): the projection of each neutral prompt's activation
on the base direction, the behavioural score of each prompt's greedy continuation (VADER
for sentiment; the next-token log-odds of the concept words otherwise), every continuation
with its length and whether it ended in EOS (so copying and early stopping can be measured
per prompt), and, on the base only, the projections of the fine-tuning samples used for
screening. Everything is kept per prompt: the statistics pair each checkpoint with the base
prompt by prompt (:mod:`pipeline.fleet_compare.drift_stats`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.concepts.behaviour import score_texts
from pipeline.concepts.record import Concept, concept_record
from pipeline.models import load_model
from pipeline.types import GnomonError

# lazy: pyarrow, torch (heavy; imported where used)

__all__ = ["DriftTask", "drift_checkpoint", "lineage_corpus", "read_corpus"]

_CORPUS_KEYS = ("corpus_path", "corpus", "data_path", "data", "dataset_path")


@dataclass(frozen=True)
class DriftTask:
    model: Any
    """A version id, or its :class:`~pipeline.models.ModelSpec` resolved by the drift job."""
    home: str
    concept: Any
    """The :class:`~pipeline.concepts.record.Concept` the drift job read once (its scorer,
    words), or a concept name, read here."""
    layer: int
    unit: tuple[float, ...]
    prompts: tuple[str, ...]
    max_new_tokens: int
    chat: bool
    corpus: dict[str, tuple[str, ...]] = field(default_factory=dict)


def _logodds(lm: Any, prompts: tuple[str, ...], concept: Any, chat: bool) -> np.ndarray:
    """Per-prompt next-token log-odds of the concept's positive vs negative words."""
    import torch

    from pipeline.dose import word_ids, word_log_odds
    from pipeline.steer import encode_prompts

    words = concept.require_words()
    pos_ids, neg_ids = word_ids(lm, words[0]), word_ids(lm, words[1])
    with torch.inference_mode():
        logp = torch.log_softmax(lm.model(**encode_prompts(lm, prompts, chat)).logits[:, -1].float(), -1)  # (B, V)
    return word_log_odds(logp, pos_ids, neg_ids).numpy().astype(np.float64)


def drift_checkpoint(task: DriftTask) -> dict[str, Any]:
    """Per-prompt projections, scores and continuations on one version (and corpus projections)."""
    import torch

    from pipeline.evaluate import _acts
    from pipeline.steer.generate import continuation_texts, encode_prompts, greedy

    lm = load_model(task.model, home=task.home)
    name = getattr(task.model, "id", task.model)
    u = np.asarray(task.unit, np.float64)
    if lm.hidden_size != u.size:
        raise GnomonError(f"{name} has hidden size {lm.hidden_size}, the base direction {u.size}")
    torch.manual_seed(0)
    proj = np.asarray(_acts(lm, task.prompts, task.layer, "last") @ u, np.float64)
    gen = greedy(lm, encode_prompts(lm, task.prompts, task.chat), task.max_new_tokens)
    texts = continuation_texts(lm, gen)
    eos = lm.tokenizer.eos_token_id
    ended = [bool(n and int(gen.new_ids[r, n - 1]) == eos) for r, n in enumerate(gen.lengths)]
    known = task.concept if isinstance(task.concept, Concept) else concept_record(task.concept, task.home)
    scores = (score_texts(known.scorer, texts) if known.scorer   # shipped or declared (concepts add --scorer)
              else _logodds(lm, task.prompts, known, task.chat))
    out: dict[str, Any] = {"model": name, "projections": proj.tolist(), "scores": scores.tolist(),
                           "projection": float(proj.mean()), "behaviour": float(scores.mean()),
                           "behaviour_se": float(scores.std(ddof=1) / np.sqrt(scores.size)) if scores.size > 1 else None,
                           "texts": texts, "n_tokens": [int(n) for n in gen.lengths], "ended_eos": ended}
    for name, samples in task.corpus.items():
        out[f"corpus.{name}"] = {pos: (_acts(lm, samples, task.layer, pos) @ u).tolist() for pos in ("last", "mean")}
    return out


def read_corpus(path: str, n: int | None = None) -> list[str]:
    """Texts of a fine-tuning corpus (the first ``n``, or all): JSONL/Parquet with a ``text``
    column, or one text a line."""
    p = Path(path)
    if not p.is_file():
        raise GnomonError(f"corpus file {p} does not exist")
    if p.suffix == ".parquet":
        import pyarrow.parquet as pq

        t = pq.read_table(p)
        if "text" not in t.column_names:
            raise GnomonError(f"{p} has no text column")
        texts = [str(x) for x in t.column("text").to_pylist() if x]
    elif p.suffix == ".jsonl":
        texts = []
        for i, line in enumerate(p.read_text(encoding="utf-8").splitlines()):
            if line.strip():
                row = json.loads(line)
                if not isinstance(row, dict) or not isinstance(row.get("text"), str):
                    raise GnomonError(f"{p}:{i + 1}: each row needs a text string")
                texts.append(row["text"])
    else:
        texts = [ln.strip() for ln in p.read_text(encoding="utf-8").splitlines() if ln.strip()]
    if not texts:
        raise GnomonError(f"corpus {p} holds no text")
    return texts if n is None else texts[:n]


def lineage_corpus(series_first: str, home: Path) -> str | None:
    """The corpus a series was trained on, from its first checkpoint's lineage."""
    from pipeline.fleet.registry import read_lineage

    lin = read_lineage(series_first, home)
    # The fleet builders keep each series' corpus as <home>/corpora/<series>-<sha12>.jsonl.
    if lin.series and lin.data_sha256:
        kept = home / "corpora" / f"{lin.series}-{lin.data_sha256[:12]}.jsonl"
        if kept.is_file():
            return str(kept)
    settings = lin.settings
    for k in _CORPUS_KEYS:
        v = settings.get(k)
        if isinstance(v, str) and v:
            p = Path(v) if Path(v).is_absolute() else home / v
            if p.is_file():
                return str(p)
    return None
