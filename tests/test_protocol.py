"""The intervention protocol: per-row ops reproduce the context-manager interventions token for
token, rows of one batch carry different ops, ops compose, and a conditional rule fires on the
prompts its threshold separates (and steers exactly those rows)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.direction import Direction, Provenance
from pipeline.models import load_model
from pipeline.steer import (
    Add,
    ablate,
    add,
    apply,
    clamp,
    encode_prompts,
    generate,
    generate_rows,
    greedy,
    interpolate,
    mix,
    steering,
)
from pipeline.steer.conditional import Conditional, fit_threshold, when
from pipeline.types import GnomonError

PROMPTS = ["the cat sat on the mat", "hi", "a much longer prompt than the others"]
N = 8


@pytest.fixture(scope="module")
def lm():
    return load_model("tiny:llama")


def make_dir(lm, layer=2, seed=0, vector=None, extras=None, position="last"):
    g = torch.Generator().manual_seed(seed)
    v = vector if vector is not None else torch.randn(lm.hidden_size, generator=g)
    prov = Provenance.minimal(lm.hidden_size, layer=layer, model_id=lm.model_id, fingerprint=lm.fingerprint,
                              concept=f"c{seed}", position=position)
    return Direction(vector=v, provenance=prov, pos_mean=1.5, neg_mean=-0.5, spread=0.7, resid_norm=4.0,
                     extras=extras or {})


def _leace_dir(lm):
    g = torch.Generator().manual_seed(7)
    d = make_dir(lm, seed=3)
    v = torch.randn(lm.hidden_size, generator=g)
    extras = {"leace_u": d.unit * 2.0, "leace_v": v / (v @ d.unit * 2.0), "leace_mean": torch.randn(lm.hidden_size, generator=g)}
    return make_dir(lm, seed=3, extras=extras)


@pytest.mark.parametrize("build", [
    lambda lm: add(lm, make_dir(lm), 3.0),
    lambda lm: add(lm, make_dir(lm, layer=1), 2.0, positions="generated"),
    lambda lm: ablate(lm, make_dir(lm)),
    lambda lm: ablate(lm, _leace_dir(lm)),
    lambda lm: clamp(lm, make_dir(lm), 4.0, positions="prompt"),
    lambda lm: interpolate(lm, make_dir(lm), 3.0),
    lambda lm: mix(lm, [(make_dir(lm, 1, seed=1), 2.0), (make_dir(lm, 3, seed=2), -1.5)]),
], ids=["add", "add-generated", "ablate", "leace", "clamp-prompt", "interpolate", "mix"])
def test_ops_generate_exactly_what_the_interventions_generate(lm, build):
    iv = build(lm)
    plain = generate(lm, PROMPTS, N)
    want = generate(lm, PROMPTS, N, interventions=[iv])
    assert want != plain                                   # the intervention changes something
    got, _ = generate_rows(lm, PROMPTS, [iv.ops] * len(PROMPTS), N)
    assert got == want


def test_rows_of_one_batch_carry_different_ops(lm):
    a, b = add(lm, make_dir(lm, seed=1), 3.0), ablate(lm, make_dir(lm, layer=3, seed=2))
    rows = [a.ops, [], b.ops]
    got, _ = generate_rows(lm, PROMPTS, rows, N)
    assert got[0] == generate(lm, PROMPTS, N, interventions=[a])[0]
    assert got[1] == generate(lm, PROMPTS, N)[1]
    assert got[2] == generate(lm, PROMPTS, N, interventions=[b])[2]
    assert len(set(got)) == 3


def test_ops_compose_in_order_and_hooks_are_removed(lm):
    a, b = add(lm, make_dir(lm, seed=1), 3.0), clamp(lm, make_dir(lm, seed=2), 1.0)
    with apply(a, b):
        want = generate(lm, PROMPTS, N)
    got, _ = generate_rows(lm, PROMPTS, [a.ops + b.ops] * 3, N)
    assert got == want
    for layer in range(lm.num_layers + 1):
        assert not lm.adapter.layer_module(lm.model, layer)._forward_hooks
    assert not lm.model.base_model._forward_pre_hooks


def test_a_raising_forward_leaves_no_hook(lm):
    enc = encode_prompts(lm, PROMPTS)
    with pytest.raises(GnomonError, match="set up for 2 rows"), \
            steering(lm, [[Add(2, torch.ones(lm.hidden_size))]] * 2):
        greedy(lm, enc, 2)
    assert not lm.adapter.layer_module(lm.model, 2)._forward_hooks


def test_fit_threshold_picks_the_separating_cut_and_its_direction():
    t = fit_threshold([2.0, 3.0, 4.0], [-1.0, 0.0, 0.5])
    assert (t.comparison, t.f1, t.precision, t.recall) == (">", 1.0, 1.0, 1.0)
    assert 0.5 < t.threshold < 2.0
    low = fit_threshold([-3.0, -2.0], [1.0, 2.0, 5.0])       # positives read lower: the rule flips
    assert low.comparison == "<" and low.f1 == 1.0 and -2.0 < low.threshold < 1.0
    mixed = fit_threshold([1.0, 2.0, 0.0], [0.5, -1.0, -2.0])
    assert 0 < mixed.f1 < 1.0
    assert list(mixed.fires([1.0, 2.0, 0.0]).astype(int)).count(1) == round(mixed.recall * 3)
    with pytest.raises(GnomonError, match="both classes"):
        fit_threshold([], [1.0])


def _condition(lm, layer, position="last"):
    """A condition direction separating prompts that end in ' yes' from ones ending in ' no!'."""
    from pipeline.collect import collect

    rng = np.random.default_rng(0)
    letters = list("abcdefghij")
    pos = ["".join(rng.choice(letters, 6)) + " yes" for _ in range(12)]
    neg = ["".join(rng.choice(letters, 6)) + " no!" for _ in range(12)]
    rows = collect(lm, [str(i) for i in range(24)], pos + neg, layers=[layer], positions=[position])[layer]
    got, _p, _t, acts = rows.arrays()
    x = acts[np.argsort([int(i) for i in got])].astype(np.float64)
    d = make_dir(lm, layer=layer, vector=torch.as_tensor(x[:12].mean(0) - x[12:].mean(0), dtype=torch.float32),
                 position=position)
    from pipeline.monitor import score_texts

    sp, sn = score_texts(lm, d, pos, position), score_texts(lm, d, neg, position)
    return d, fit_threshold(sp, sn), pos, neg


@pytest.mark.parametrize("position", ["last", "mean"])
def test_conditional_fires_on_positive_prompts_and_steers_exactly_those(lm, position):
    d, thr, pos, neg = _condition(lm, 1, position)
    assert thr.f1 == 1.0
    behaviour = add(lm, make_dir(lm, layer=2, seed=5), 3.0)
    rule = when(lm, d, thr, [behaviour])
    assert (rule.layer, rule.threshold, rule.comparison, rule.position) == (d.layer, thr.threshold, thr.comparison,
                                                                             position)
    prompts = [pos[0], neg[0], pos[1], neg[1]]
    got, state = generate_rows(lm, prompts, [[rule]] * 4, N)
    assert rule.fired(state) == [True, False, True, False]
    steered = generate(lm, prompts, N, interventions=[behaviour])
    plain = generate(lm, prompts, N)
    assert got == [steered[0], plain[1], steered[2], plain[3]]
    assert steered[0] != plain[0]


def test_a_condition_read_after_the_behaviour_layer_is_decided_before_the_prompt_pass(lm):
    d, thr, pos, neg = _condition(lm, 3)
    behaviour = add(lm, make_dir(lm, layer=1, seed=5), 3.0)
    rule = Conditional(d.layer, d.unit, thr.threshold, thr.comparison, behaviour.ops)
    prompts = [pos[2], neg[2], neg[3], pos[3]]
    got, state = generate_rows(lm, prompts, [[rule]] * 4, N)
    assert rule.fired(state) == [True, False, False, True]
    steered, plain = generate(lm, prompts, N, interventions=[behaviour]), generate(lm, prompts, N)
    assert got == [steered[0], plain[1], plain[2], steered[3]]
    # without the decision pass the behaviour could only start at the first generated token
    late = generate(lm, prompts, N, interventions=[add(lm, make_dir(lm, layer=1, seed=5), 3.0, positions="generated")])
    enc = encode_prompts(lm, prompts)
    with steering(lm, [[rule]] * 4) as bare:
        gen = greedy(lm, enc, N)
    from pipeline.steer import continuation_texts

    assert rule.fired(bare) == [True, False, False, True]
    assert continuation_texts(lm, gen) == [late[0], plain[1], plain[2], late[3]]


def test_conditional_refuses_bad_rules(lm):
    d = make_dir(lm)
    with pytest.raises(GnomonError, match="comparison"):
        Conditional(d.layer, d.unit, 0.0, ">=", [])  # type: ignore[arg-type]
    with pytest.raises(GnomonError, match="finite"):
        Conditional(d.layer, d.unit, float("nan"), ">", [])
