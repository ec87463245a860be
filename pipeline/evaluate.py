"""Evaluation of directions on a live model: does steering move the concept, does erasure
remove it, does the monitor separate the classes, and what does it cost elsewhere.

- :func:`steering_sweep`: greedy continuations of neutral prompts at several strengths,
  scored by a concept scorer (VADER's compound score for sentiment; Hutto & Gilbert 2014),
  with the Spearman correlation between strength and score (monotone = 1.0).
- :func:`ablation_probe`: a fresh logistic probe trained on activations read *after* the
  direction is ablated; chance accuracy means the concept is no longer linearly readable
  (the LEACE criterion, Belrose et al. 2023).
- :func:`monitor_auroc`: AUROC of the projection on held-out texts (the lie detector).
- :func:`next_token_kl` (and :func:`next_token_logp`): mean KL(unsteered || steered) of next-token distributions on neutral
  prompts, a side-effect measure (how much else the intervention changes).
"""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import asdict, dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch

from pipeline import metrics as M
from pipeline.concepts.behaviour import scorer_function
from pipeline.direction import Direction, Provenance
from pipeline.fit import Indistinguishable, fit_direction
from pipeline.models.loading import LoadedModel
from pipeline.monitor import gaussian_calibration, monitor
from pipeline.steer import ablate, add, apply, encode_prompts, generate
from pipeline.types import GnomonError

# lazy: vaderSentiment (heavy; imported where used); pipeline.collect (tests patch it at the source)

Scorer = Callable[[Sequence[str]], np.ndarray]


def vader_compound(texts: Sequence[str]) -> np.ndarray:
    """VADER compound sentiment in [-1, 1] per text (rule-based, offline, deterministic)."""
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    sia = SentimentIntensityAnalyzer()
    return np.array([sia.polarity_scores(t)["compound"] for t in texts], dtype=np.float64)




def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman rank correlation (average ranks for ties)."""
    def ranks(values: Sequence[float]) -> np.ndarray:
        a = np.asarray(values, dtype=np.float64)
        order = np.argsort(a, kind="mergesort")
        r = np.empty(len(a))
        r[order] = np.arange(len(a))
        for v in np.unique(a):  # average ties
            r[a == v] = r[a == v].mean()
        return r

    rx, ry = ranks(x), ranks(y)
    if rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


@dataclass
class SteeringSweep:
    strengths: list[float]
    unit: str
    mean_scores: list[float]
    """Mean scorer output over prompts, per strength."""
    scores: list[list[float]]
    """Per strength, per prompt."""
    texts: list[list[str]]
    spearman: float
    """Rank correlation of strength with mean score (1.0: strictly increasing)."""
    monotone: bool
    """Mean score never decreases as strength grows."""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def steering_sweep(lm: LoadedModel, direction: Direction, prompts: Sequence[str], strengths: Sequence[float],
                   scorer: Scorer | str = "vader", unit: str = "separation", max_new_tokens: int = 24,
                   positions: str = "all", force: bool = False, chat: bool = False) -> SteeringSweep:
    """Greedy continuations at each strength (0 = unsteered), scored by ``scorer``."""
    if not prompts:
        raise GnomonError("steering_sweep needs at least one prompt")
    score = scorer_function(scorer) if isinstance(scorer, str) else scorer
    strengths = sorted(float(s) for s in strengths)
    texts, scores = [], []
    for s in strengths:
        ivs = [] if s == 0 else [add(lm, direction, s, unit, positions=positions, force=force)]  # type: ignore[arg-type]
        out = generate(lm, prompts, max_new_tokens=max_new_tokens, interventions=ivs, chat=chat)
        texts.append(out)
        scores.append(score(out).tolist())
    means = [float(np.mean(s)) for s in scores]
    return SteeringSweep(strengths=strengths, unit=unit, mean_scores=means, scores=scores, texts=texts,
                         spearman=spearman(strengths, means),
                         monotone=bool(all(b >= a for a, b in zip(means, means[1:]))))


def _acts(lm: LoadedModel, texts: Sequence[str], layer: int, position: str,
          interventions: Sequence[Any] = ()) -> np.ndarray:
    """(n, d) activations at ``layer`` in text order, read after any interventions (the
    intervention hooks are registered first, so the recording hook sees their output)."""
    from pipeline.collect import collect

    ids = [str(i) for i in range(len(texts))]
    with apply(list(interventions)):
        rows = collect(lm, ids, list(texts), layers=[layer], positions=[position])[layer]
    got, _p, _t, acts = rows.arrays()
    return acts[np.argsort(np.array([int(i) for i in got]))].astype(np.float64)


def ablation_probe(lm: LoadedModel, direction: Direction, train: tuple[Sequence[str], Sequence[str]],
                   test: tuple[Sequence[str], Sequence[str]], position: str | None = None,
                   force: bool = False) -> dict[str, float]:
    """Test accuracy of a fresh logistic probe before and after ablating ``direction``.

    ``train``/``test`` are (positive texts, negative texts). The probe is trained from
    scratch on each condition, so it can use any remaining linear trace of the concept.
    """
    pos_name = position or direction.provenance.position
    layer = direction.layer
    out = {}
    for cond, ivs in (("before", []), ("after", [ablate(lm, direction, force=force)])):
        tp, tn = (_acts(lm, t, layer, pos_name, ivs) for t in train)
        ep, en = (_acts(lm, t, layer, pos_name, ivs) for t in test)
        base = Provenance.minimal(hidden_size=lm.hidden_size, layer=layer)
        try:
            probe = fit_direction("logistic", tp, tn, base=base, eval_sets={"test": (ep, en)})
            out[f"probe_accuracy_{cond}"] = probe.metrics["test_accuracy"]
            out[f"probe_auroc_{cond}"] = probe.metrics["test_auroc"]
        except Indistinguishable:  # nothing left to fit: chance, by definition; other errors propagate
            out[f"probe_accuracy_{cond}"] = 0.5
            out[f"probe_auroc_{cond}"] = 0.5
    return out


def monitor_auroc(lm: LoadedModel, direction: Direction, pos_texts: Sequence[str], neg_texts: Sequence[str],
                  position: str | None = None, force: bool = False, batch_size: int = 32) -> dict[str, float]:
    """What ``gnomon monitor`` achieves on held-out texts: each text is monitored as a prompt
    and read at its last token (:attr:`pipeline.monitor.MonitorTrace.reading`, the direction's
    own position rule); AUROC, accuracy at the calibrated threshold (p >= 0.5) and ECE of the
    calibrated probabilities. ``position`` overrides the direction's (read as collection does)."""
    d = direction
    if position is not None and position != direction.provenance.position:
        d = dataclasses.replace(direction, provenance=dataclasses.replace(direction.provenance, position=position))
    texts = list(pos_texts) + list(neg_texts)
    reads: list[float] = []
    for i in range(0, len(texts), batch_size):
        traces = monitor(lm, [d], texts[i:i + batch_size], max_new_tokens=1, force=force)
        reads += [next(iter(t.reading.values())) for t in traces]
    s = np.asarray(reads, np.float64)
    sp, sn = s[:len(pos_texts)], s[len(pos_texts):]
    cal = gaussian_calibration(d)
    return {"auroc": M.auroc(sp, sn), "accuracy": M.accuracy(sp, sn, -cal.intercept / cal.slope),
            "ece": M.ece(sp, sn, cal.slope, cal.intercept),
            "pos_mean_score": float(sp.mean()), "neg_mean_score": float(sn.mean())}


def next_token_logp(lm: LoadedModel, prompts: Sequence[str], interventions: Sequence[Any] = (),
                    chat: bool = False) -> torch.Tensor:
    """(B, V) log-probabilities of the next token after each prompt (left padding: the last
    column), under ``interventions``. Only the last position goes through the LM head when
    the model's forward takes ``logits_to_keep`` (a 49k-word head over every prompt token
    would cost more than the blocks)."""
    enc = encode_prompts(lm, prompts, chat)
    kw = {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(lm.model.forward).parameters else {}
    with torch.inference_mode(), apply(list(interventions)):
        logits = lm.model(**enc, **kw).logits[:, -1].float()          # (B, V)
    return torch.log_softmax(logits, -1)


def next_token_kl(lm: LoadedModel, prompts: Sequence[str], interventions: Sequence[Any],
                  chat: bool = False, base: torch.Tensor | None = None) -> float:
    """Mean KL(p_unsteered || p_steered) of the next-token distribution after each prompt
    (``chat``: the prompts as the chat template renders them, as in :func:`steering_sweep`).
    ``base``: the unsteered :func:`next_token_logp` of the same prompts, when the caller
    measures several interventions on them (computed here otherwise)."""
    if base is None:
        base = next_token_logp(lm, prompts, (), chat)
    steered = next_token_logp(lm, prompts, interventions, chat)
    return float((base.exp() * (base - steered)).sum(-1).mean())
