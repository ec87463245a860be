"""Continuous batching: rows that join a running generation at later steps, and rows that
leave early, generate exactly what they generate alone, with their own ops, conditions and
monitor readings."""

from __future__ import annotations

import pytest
import torch

from pipeline.direction import Direction, Provenance
from pipeline.monitor import gaussian_calibration, monitor
from pipeline.serve import Row, Watch
from pipeline.serve.continuous import run_continuous
from pipeline.steer import ablate, add, generate
from pipeline.steer.conditional import Conditional


PROMPTS = ["the cat sat on the mat", "hi", "a much longer prompt than the others", "ok then"]


def make_dir(lm, layer=2, seed=0, position="last"):
    g = torch.Generator().manual_seed(seed)
    prov = Provenance.minimal(lm.hidden_size, layer=layer, model_id=lm.model_id, fingerprint=lm.fingerprint,
                              concept=f"c{seed}", position=position)
    return Direction(vector=torch.randn(lm.hidden_size, generator=g), provenance=prov, pos_mean=1.5,
                     neg_mean=-0.5, spread=0.7, resid_norm=4.0)


def test_rows_joining_and_leaving_generate_what_they_generate_alone(tiny_lm):
    lm = tiny_lm
    a, b = add(lm, make_dir(lm, seed=1), 3.0), ablate(lm, make_dir(lm, layer=3, seed=2))
    late = add(lm, make_dir(lm, layer=1, seed=4), 3.0)
    cond = make_dir(lm, layer=3, seed=3)
    watch = make_dir(lm, layer=2, seed=5, position="mean")
    w = Watch("w", watch.layer, watch.unit, "mean", gaussian_calibration(watch))
    specs = [  # (prompt, budget, ops, joins at step)
        (PROMPTS[0], 9, a.ops, 0),
        (PROMPTS[1], 3, [], 0),
        (PROMPTS[2], 6, b.ops, 2),
        (PROMPTS[3], 7, [Conditional(3, cond.unit, -1e9, ">", late.ops, name="c")], 4),
        (PROMPTS[1], 5, [Conditional(3, cond.unit, 1e9, ">", late.ops, name="c")], 4),
    ]
    events: list[list[dict]] = [[] for _ in specs]
    rows = [Row(lm.tokenizer(p)["input_ids"], n, ops=o, monitors=[w], emit=events[i].append)
            for i, (p, n, o, _s) in enumerate(specs)]
    step = [0]

    def take(free: int) -> list[Row]:
        joining = [rows[i] for i, s in enumerate(specs) if s[3] == step[0]]
        step[0] += 1
        assert len(joining) <= free
        return joining

    run_continuous(lm, take, max_rows=4)
    ivs = [[a], [], [b], [late], []]
    for i, (p, n, _o, _s) in enumerate(specs):
        want = generate(lm, [p], n, interventions=ivs[i])[0]
        assert lm.tokenizer.decode(rows[i].tokens, skip_special_tokens=True) == want, i
        assert len(rows[i].tokens) <= n and events[i][-1]["done"]
        (trace,) = monitor(lm, [watch], [p], n, interventions=ivs[i])
        assert trace.token_ids == rows[i].tokens
        got = [e["readings"]["w"] for e in events[i] if "token_id" in e]
        assert got == pytest.approx(trace.scores[next(iter(trace.scores))], abs=1e-5)
    assert events[3][-1]["conditions"] == {"c": True} and events[4][-1]["conditions"] == {"c": False}
