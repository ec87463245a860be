"""Monitors: per-token scores line up with the tokens, equal an offline forward pass, and
calibrated probabilities follow Bayes' rule for the stated Gaussian model."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from pipeline.direction import Direction, Provenance
from pipeline.hooks import record_layers, run_until
from pipeline.models import load_model
from pipeline.monitor import calibrate, gaussian_calibration, monitor, score_texts
from pipeline.steer import clamp
from pipeline.types import GnomonError

PROMPTS = ["the weather today", "hi", "tell me a story about a cat"]


@pytest.fixture(scope="module")
def lm():
    return load_model("tiny:llama")


def make_dir(lm, layer, seed, **stats):
    v = torch.randn(lm.hidden_size, generator=torch.Generator().manual_seed(seed))
    prov = Provenance.minimal(lm.hidden_size, layer=layer, model_id=lm.model_id,
                              fingerprint=lm.fingerprint, concept=f"c{seed}")
    base = dict(pos_mean=0.4, neg_mean=-0.3, spread=0.5, resid_norm=3.0)
    base.update(stats)
    return Direction(vector=v, provenance=prov, **base)


def test_one_score_per_generated_token_matching_offline_forward(lm):
    dirs = [make_dir(lm, 2, 0), make_dir(lm, 4, 1), make_dir(lm, 2, 2)]
    traces = monitor(lm, dirs, PROMPTS, max_new_tokens=7, include_prompt=True)
    assert len(traces) == len(PROMPTS)
    for prompt, tr in zip(PROMPTS, traces):
        assert len(tr.scores) == 3 and set(tr.scores) == set(tr.probs)
        n = len(tr.token_ids)
        assert 1 <= n <= 7 and len(tr.tokens) == n
        assert all(len(s) == n and len(tr.probs[k]) == n for k, s in tr.scores.items())
        # Offline: one uncached forward over prompt + continuation, read at the same layers.
        ids = lm.tokenizer([prompt], return_tensors="pt")["input_ids"]
        t = ids.shape[1]
        full = torch.cat([ids, torch.tensor([tr.token_ids])], dim=1)
        with record_layers(lm.model, lm.adapter, [2, 4], stop_after=False) as rec:
            run_until(lm.model, input_ids=full)
        for name, d in zip(tr.scores, dirs):
            want = (rec[d.layer][0].float() @ d.unit).numpy()
            np.testing.assert_allclose(tr.scores[name], want[t:], atol=1e-4)
            np.testing.assert_allclose(tr.prompt_scores[name], want[:t], atol=1e-4)
        assert len(tr.prompt_tokens) == t


def test_gaussian_calibration_is_bayes_rule_and_monotone(lm):
    d = make_dir(lm, 2, 0, pos_mean=1.3, neg_mean=-0.2, spread=0.8)
    cal = gaussian_calibration(d)
    s = np.linspace(-4, 4, 101)
    pdf = lambda x, m: np.exp(-0.5 * ((x - m) / d.spread) ** 2)
    bayes = pdf(s, d.pos_mean) / (pdf(s, d.pos_mean) + pdf(s, d.neg_mean))
    np.testing.assert_allclose(cal.prob(s), bayes, atol=1e-12)
    assert math.isclose(float(cal.prob([d.midpoint])[0]), 0.5, abs_tol=1e-12)
    tr = monitor(lm, [d], PROMPTS[:1], max_new_tokens=8)[0]
    name = next(iter(tr.scores))
    order = np.argsort(tr.scores[name])
    assert np.all(np.diff(np.asarray(tr.probs[name])[order]) >= 0)
    with pytest.raises(GnomonError, match="calibrate"):
        gaussian_calibration(make_dir(lm, 2, 0, spread=float("nan")))


def test_platt_calibration_recovers_logistic():
    rng = np.random.default_rng(0)
    pos, neg = rng.normal(2.0, 1.0, 20000), rng.normal(0.0, 1.0, 20000)
    cal = calibrate(None, pos, neg)  # type: ignore[arg-type]
    # Equal-variance Gaussians: logit = 2 * (s - 1).
    assert abs(cal.slope - 2.0) < 0.1 and abs(cal.intercept + 2.0) < 0.1
    sep = calibrate(None, [5.0, 6.0, 7.0], [-1.0, 0.0])  # type: ignore[arg-type]
    assert math.isfinite(sep.slope) and sep.slope > 0
    assert sep.prob([6.0])[0] > 0.5 > sep.prob([-1.0])[0]


def test_thresholds_alerts_and_json(lm):
    d = make_dir(lm, 3, 5)
    # thresholds are probabilities strictly inside (0, 1): the extremes of that range
    tr_all = monitor(lm, [d], PROMPTS, 5, threshold=1e-12)
    assert all(len(t.alerts) == len(t.token_ids) for t in tr_all)
    top = max(float(np.max(p)) for t in tr_all for p in t.probs.values())
    assert top < 1.0
    assert all(not t.alerts for t in monitor(lm, [d], PROMPTS, 5, threshold=(top + 1.0) / 2))
    name = next(iter(tr_all[0].scores))
    mid = float(np.median(tr_all[0].probs[name]))
    tr = monitor(lm, [d], PROMPTS[:1], 5, threshold={name: mid})[0]
    assert [a["token_index"] for a in tr.alerts] == [i for i, p in enumerate(tr.probs[name]) if p >= mid]
    back = json.loads(tr.to_json())
    assert back["token_ids"] == tr.token_ids and back["scores"][name] == tr.scores[name]
    assert back["directions"][name]["calibration"]["method"] == "gaussian"


def test_monitor_reads_after_interventions(lm):
    d = make_dir(lm, 2, 0)
    tr = monitor(lm, [d], PROMPTS, 4, interventions=[clamp(lm, d, 2.5)])
    for t in tr:
        np.testing.assert_allclose(t.scores[next(iter(t.scores))], 2.5, atol=1e-5)


def test_score_texts_matches_single_text_scoring(lm):
    d = make_dir(lm, 2, 3)
    texts = ["short", "a considerably longer text here", "mid length", "x"]
    for position in ("last", "mean"):
        batch = score_texts(lm, d, texts, position)
        alone = np.array([score_texts(lm, d, [t], position)[0] for t in texts])
        np.testing.assert_allclose(batch, alone, atol=1e-4)
    enc = lm.tokenizer(["short"], return_tensors="pt")
    with record_layers(lm.model, lm.adapter, [2]) as rec:
        run_until(lm.model, **enc)
    assert math.isclose(score_texts(lm, d, ["short"])[0], float(rec[2][0, -1] @ d.unit), abs_tol=1e-4)


def test_cli_monitor(tmp_path, capsys, lm):
    from jobs.cli import main

    path = make_dir(lm, 2, 0).save(tmp_path / "d.safetensors")
    assert main(["monitor", str(path), "--max-new-tokens", "4", "--json", "hello"]) == 0
    tr = json.loads(capsys.readouterr().out)
    assert len(tr["token_ids"]) == len(tr["scores"]["c0@L2"]) <= 4
    assert main(["monitor", str(path), str(path), "--threshold", "1e-12", "--max-new-tokens", "3", "--color",
                 "hello"]) == 0
    text = capsys.readouterr().out
    assert "\x1b[48;5;" in text and "[c0@L2]" in text and "[c0@L2#2]" in text
