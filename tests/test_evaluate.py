"""Evaluation metrics on a tiny model: sweeps, erasure probe, monitor AUROC, side effects."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from pipeline.direction import Provenance
from pipeline.evaluate import ablation_probe, monitor_auroc, next_token_kl, spearman, steering_sweep, vader_compound
from pipeline.fit import fit_direction
from pipeline.steer import add, generate


def test_spearman_and_vader() -> None:
    assert spearman([1, 2, 3, 4], [10, 20, 25, 100]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert np.isnan(spearman([1, 2, 3], [5, 5, 5]))
    s = vader_compound(["I love this wonderful day", "This is awful and I hate it", "The table is brown"])
    assert s[0] > 0.5 and s[1] < -0.5 and abs(s[2]) < 0.1


def _texts(n: int, word: str) -> list[str]:
    stems = ["the day", "a film", "my cat", "that song", "the food", "our trip", "this book", "his car"]
    return [f"{stems[i % len(stems)]} {i} was {word}" for i in range(n)]


def _direction(lm: Any, method: str, layer: int = 2) -> Any:
    from pipeline.evaluate import _acts

    pos, neg = _acts(lm, _texts(40, "good"), layer, "mean"), _acts(lm, _texts(40, "bad"), layer, "mean")
    base = Provenance(model_id=lm.model_id, revision="main", fingerprint=lm.fingerprint,
                      hidden_size=lm.hidden_size, layer=layer, position="mean", concept="toy",
                      positive="good", negative="bad")
    return fit_direction(method, pos, neg, base=base)


def test_sweep_zero_strength_is_unsteered_and_scores_follow_the_scorer(tiny_lm: Any) -> None:
    d = _direction(tiny_lm, "mean_diff")
    prompts = ["the day", "my cat"]
    scorer = lambda texts: np.array([float(len(t)) for t in texts])  # noqa: E731
    sweep = steering_sweep(tiny_lm, d, prompts, [2.0, 0.0, -2.0], scorer=scorer, max_new_tokens=6)
    assert sweep.strengths == [-2.0, 0.0, 2.0]
    assert sweep.texts[1] == generate(tiny_lm, prompts, max_new_tokens=6)
    assert sweep.mean_scores == [float(np.mean([len(t) for t in ts])) for ts in sweep.texts]
    steered = generate(tiny_lm, prompts, max_new_tokens=6, interventions=[add(tiny_lm, d, 2.0)])
    assert sweep.texts[2] == steered


def test_leace_ablation_leaves_a_fresh_probe_at_chance(tiny_lm: Any) -> None:
    torch.manual_seed(0)
    d = _direction(tiny_lm, "leace")
    train = (_texts(40, "good"), _texts(40, "bad"))
    test = ([t.replace("was", "is") for t in _texts(24, "good")], [t.replace("was", "is") for t in _texts(24, "bad")])
    out = ablation_probe(tiny_lm, d, train, test)
    assert out["probe_accuracy_before"] >= 0.9
    assert out["probe_accuracy_after"] <= 0.6


def test_monitor_auroc_separates_classes_and_kl_is_zero_without_intervention(tiny_lm: Any) -> None:
    d = _direction(tiny_lm, "mean_diff")
    res = monitor_auroc(tiny_lm, d, _texts(16, "good"), _texts(16, "bad"))
    assert res["auroc"] > 0.9 and res["pos_mean_score"] > res["neg_mean_score"]
    prompts = ["the day", "a film was"]
    assert next_token_kl(tiny_lm, prompts, []) == pytest.approx(0.0, abs=1e-6)
    assert next_token_kl(tiny_lm, prompts, [add(tiny_lm, d, 4.0)]) > 1e-4
