"""Issue 5's must-show on the bundled SmolLM2-135M-Instruct (slow: minutes on 2 CPU cores).

- Steering: adding the shipped ``sentiment`` difference-of-means direction (layer 1, ``mean``
  position) at -4, 0, +4 class separations moves the mean VADER compound score of greedy
  chat continuations of the neutral prompts strictly upward (Spearman = 1).
- Erasure: after the LEACE eraser (Belrose et al. 2023) a freshly trained logistic probe
  reads sentiment at no better than 0.6 test accuracy (it reads it near perfectly before).
- Monitoring: the ``honesty`` direction, layer picked on ``val``, scores deceptive statements
  above honest ones on ``test`` with AUROC >= 0.8.

The full tables (more strengths, layers, KL side effects) are ``bench/steer_effects.py``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

pytestmark = pytest.mark.slow

STEER_LAYER, STEER_POSITION = 1, "mean"


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from pipeline.models import load_model

    return load_model("smollm2", home=tmp_path_factory.mktemp("smollm2-home"))


def split_texts(lm: Any, concept: str, split: str, label: str, n: int | None = None) -> list[str]:
    from pipeline.datasets import load_dataset

    return load_dataset(concept).split_texts(split, label, lm.tokenizer, n)


def acts(lm: Any, texts: list[str], layers: list[int] | None, position: str) -> dict[int, np.ndarray]:
    """(n, d) activations per layer, in text order."""
    from pipeline.collect import collect

    rows = collect(lm, [str(i) for i in range(len(texts))], texts, layers=layers, positions=[position])
    out = {}
    for layer, r in rows.items():
        ids, _p, _t, a = r.arrays()
        out[layer] = a[np.argsort([int(i) for i in ids])].astype(np.float64)
    return out


def fit(lm: Any, method: str, concept: str, layer: int, position: str,
        data: dict[str, tuple[np.ndarray, np.ndarray]]) -> Any:
    from pipeline.direction import Provenance
    from pipeline.fit import fit_direction

    base = Provenance.minimal(hidden_size=lm.hidden_size, layer=layer, position=position, concept=concept,
                              fingerprint=lm.fingerprint)
    train = data["train"]
    return fit_direction(method, *train, base=base, eval_sets={k: v for k, v in data.items() if k != "train"})


@pytest.fixture(scope="module")
def sentiment_sets(smollm2: Any) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return {s: tuple(acts(smollm2, split_texts(smollm2, "sentiment", s, lab), [STEER_LAYER],
                          STEER_POSITION)[STEER_LAYER] for lab in ("positive", "negative"))  # type: ignore[misc]
            for s in ("train", "val")}


def test_sentiment_steering_is_monotone(smollm2: Any, sentiment_sets: Any) -> None:
    from pipeline.datasets import neutral_prompts
    from pipeline.evaluate import steering_sweep

    d = fit(smollm2, "mean_diff", "sentiment", STEER_LAYER, STEER_POSITION, sentiment_sets)
    prompts = neutral_prompts("sentiment")[:16]
    sw = steering_sweep(smollm2, d, prompts, [-4, 0, 4], unit="separation", max_new_tokens=20, chat=True)
    neg, zero, pos = sw.mean_scores
    assert neg < zero < pos, sw.mean_scores
    assert sw.spearman == pytest.approx(1.0)
    assert pos - neg > 0.3, sw.mean_scores                    # a visible effect, not a rounding tie


def test_leace_ablation_leaves_no_linear_sentiment(smollm2: Any, sentiment_sets: Any) -> None:
    from pipeline.evaluate import ablation_probe

    d = fit(smollm2, "leace", "sentiment", STEER_LAYER, STEER_POSITION, sentiment_sets)
    train = tuple(split_texts(smollm2, "sentiment", "train", lab, 120) for lab in ("positive", "negative"))
    test = tuple(split_texts(smollm2, "sentiment", "test", lab) for lab in ("positive", "negative"))
    p = ablation_probe(smollm2, d, train, test)  # type: ignore[arg-type]
    assert p["probe_accuracy_before"] >= 0.8, p               # there was something to erase
    assert p["probe_accuracy_after"] <= 0.6, p


def test_honesty_monitor_separates_deceptive_from_honest(smollm2: Any) -> None:
    from pipeline.datasets import load_dataset
    from pipeline.evaluate import monitor_auroc

    positive, negative = load_dataset("honesty").default_contrast
    assert positive == "deceptive"                            # the monitor scores deception up
    sets = {s: tuple(acts(smollm2, split_texts(smollm2, "honesty", s, lab), None, "last")
                     for lab in (positive, negative)) for s in ("train", "val")}
    layers = sorted(sets["train"][0])
    dirs = {L: fit(smollm2, "mean_diff", "honesty", L, "last",
                   {s: (sets[s][0][L], sets[s][1][L]) for s in sets}) for L in layers[1:]}
    best = max(dirs.values(), key=lambda d: (d.metrics["val_auroc"], -d.layer))  # val picks, test reports
    m = monitor_auroc(smollm2, best, split_texts(smollm2, "honesty", "test", positive),
                      split_texts(smollm2, "honesty", "test", negative))
    assert m["auroc"] >= 0.8, (best.layer, m)
    assert m["pos_mean_score"] > m["neg_mean_score"]
