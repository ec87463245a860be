"""The server's decode loop: a row generates what ``generate``/``steer`` generate with the same
ops, reads what ``monitor`` reads, and rows of one batch keep their own ops and budgets."""

from __future__ import annotations

import pytest
import torch

from pipeline.direction import Direction, Provenance
from pipeline.monitor import gaussian_calibration, monitor
from pipeline.serve import Row, Watch, run_batch
from pipeline.steer import ablate, add, generate
from pipeline.steer import generate_rows

PROMPTS = ["the cat sat on the mat", "hi", "a much longer prompt than the others"]


def make_dir(lm, layer=2, seed=0, position="last"):
    g = torch.Generator().manual_seed(seed)
    prov = Provenance.minimal(lm.hidden_size, layer=layer, model_id=lm.model_id, fingerprint=lm.fingerprint,
                              concept=f"c{seed}", position=position)
    return Direction(vector=torch.randn(lm.hidden_size, generator=g), provenance=prov, pos_mean=1.5,
                     neg_mean=-0.5, spread=0.7, resid_norm=4.0)


def _ids(lm, text):
    return lm.tokenizer(text)["input_ids"]


def _run(lm, rows):
    events = [[] for _ in rows]
    for r, row in enumerate(rows):
        row.emit = events[r].append
    run_batch(lm, rows)
    return events


def test_a_lone_row_generates_what_steer_generates_and_reads_what_monitor_reads(tiny_lm):
    lm = tiny_lm
    steer_dir = make_dir(lm, seed=1)
    watched = [make_dir(lm, layer=1, seed=2), make_dir(lm, layer=3, seed=3, position="mean")]
    iv = add(lm, steer_dir, 3.0)
    for prompt in PROMPTS:
        row = Row(_ids(lm, prompt), 8, ops=iv.ops,
                  monitors=[Watch(f"w{k}", d.layer, d.unit, d.provenance.position, gaussian_calibration(d))
                            for k, d in enumerate(watched)])
        (events,) = _run(lm, [row])
        assert lm.tokenizer.decode(row.tokens, skip_special_tokens=True) == \
            generate(lm, [prompt], 8, interventions=[iv])[0]
        assert "prompt_readings" in events[0] and events[-1]["done"] and len(events) == len(row.tokens) + 2
        (trace,) = monitor(lm, watched, [prompt], 8, interventions=[iv])
        assert trace.token_ids == row.tokens
        for k, name in enumerate(trace.scores):
            got = [e["readings"][f"w{k}"] for e in events[1:-1]]
            assert got == pytest.approx(trace.scores[name], abs=1e-5)
            assert [e["probs"][f"w{k}"] for e in events[1:-1]] == pytest.approx(trace.probs[name], abs=1e-5)
            assert events[0]["prompt_readings"][f"w{k}"] == pytest.approx(trace.reading[name], abs=1e-5)
            assert events[0]["prompt_probs"][f"w{k}"] == pytest.approx(trace.reading_prob[name], abs=1e-5)


def test_rows_of_a_batch_keep_their_ops_and_budgets(tiny_lm):
    lm = tiny_lm
    a, b = add(lm, make_dir(lm, seed=4), 3.0), ablate(lm, make_dir(lm, layer=3, seed=5))
    ops = [a.ops, [], b.ops]
    want, _ = generate_rows(lm, PROMPTS, ops, 8)
    rows = [Row(_ids(lm, p), 8, ops=o) for p, o in zip(PROMPTS, ops)]
    _run(lm, rows)
    got = [lm.tokenizer.decode(r.tokens, skip_special_tokens=True) for r in rows]
    assert got == want and len(set(got)) == 3
    short = [Row(_ids(lm, p), n, ops=o) for p, o, n in zip(PROMPTS, ops, (2, 8, 5))]
    _run(lm, short)
    assert [len(r.tokens) for r in short] == [2, 8, 5]
    assert short[0].tokens == rows[0].tokens[:2]
    assert generate(lm, PROMPTS, 8)[1] == got[1]


def test_a_late_condition_is_decided_before_the_prompt_pass(tiny_lm):
    from pipeline.steer.conditional import Conditional

    lm = tiny_lm
    cond = make_dir(lm, layer=3, seed=6)
    behaviour = add(lm, make_dir(lm, layer=1, seed=7), 3.0)
    fires = Conditional(3, cond.unit, -1e9, ">", behaviour.ops, name="always")
    never = Conditional(3, cond.unit, 1e9, ">", behaviour.ops, name="never")
    rows = [Row(_ids(lm, PROMPTS[0]), 6, ops=[fires]), Row(_ids(lm, PROMPTS[0]), 6, ops=[never])]
    events = _run(lm, rows)
    assert events[0][-1]["conditions"] == {"always": True} and events[1][-1]["conditions"] == {"never": False}
    got = [lm.tokenizer.decode(r.tokens, skip_special_tokens=True) for r in rows]
    assert got == [generate(lm, PROMPTS[:1], 6, interventions=[behaviour])[0], generate(lm, PROMPTS[:1], 6)[0]]
    assert got[0] != got[1]
