"""Interventions on tiny random models: the edited residual stream has exactly the promised
component, edits compose, hooks never leak, and misuse is refused."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pipeline.collect import collect
from pipeline.direction import Direction, Provenance
from pipeline.hooks import record_layers, run_until
from pipeline.models import load_model
from pipeline.steer import (
    ablate,
    add,
    apply,
    clamp,
    encode_prompts,
    generate,
    greedy,
    interpolate,
    mix,
)
from pipeline.types import GnomonError

PROMPTS = ["the cat sat on the mat", "hi", "a much longer prompt than the others"]


@pytest.fixture(scope="module")
def lm():
    return load_model("tiny:llama")


def make_dir(lm, layer=2, seed=0, vector=None, **kw):
    g = torch.Generator().manual_seed(seed)
    v = vector if vector is not None else torch.randn(lm.hidden_size, generator=g)
    prov = Provenance.minimal(lm.hidden_size, layer=layer, model_id=lm.model_id,
                              fingerprint=kw.pop("fingerprint", lm.fingerprint), concept=f"c{seed}")
    stats = dict(pos_mean=1.5, neg_mean=-0.5, spread=0.7, resid_norm=4.0)
    stats.update(kw)
    return Direction(vector=v, provenance=prov, **stats)


def stream(lm, layers, prompts=PROMPTS):
    """Residual stream at ``layers`` as recorded by hooks registered after any active edit."""
    enc = encode_prompts(lm, prompts)
    with record_layers(lm.model, lm.adapter, layers, stop_after=False) as rec:
        run_until(lm.model, **enc)
    return dict(rec), enc["attention_mask"].bool()


def logits(lm, prompts=PROMPTS):
    enc = encode_prompts(lm, prompts)
    with torch.inference_mode():
        return lm.model(**enc).logits


def test_ablate_zeroes_the_component(lm):
    d = make_dir(lm)
    before, _ = stream(lm, [2, 3])
    assert (before[2] @ d.unit).abs().max() > 1e-2  # there is something to remove
    with ablate(lm, d):
        after, _ = stream(lm, [2, 3])
    torch.testing.assert_close(after[2] @ d.unit, torch.zeros_like(after[2][..., 0]), atol=1e-5, rtol=0)
    # Only the component along u changed at the edited layer.
    rest = lambda h: h - (h @ d.unit).unsqueeze(-1) * d.unit
    torch.testing.assert_close(rest(after[2]), rest(before[2]), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(after[3], before[3])  # and later layers see the edit


def test_clamp_sets_exact_value_and_interpolate_hits_class_means(lm):
    d = make_dir(lm)
    with clamp(lm, d, 3.25):
        h, _ = stream(lm, [2])
    torch.testing.assert_close(h[2] @ d.unit, torch.full(h[2].shape[:2], 3.25), atol=1e-5, rtol=0)
    for t, want in ((0.0, d.neg_mean), (1.0, d.pos_mean), (0.5, d.midpoint), (2.0, 2 * d.pos_mean - d.neg_mean)):
        with interpolate(lm, d, t):
            h, _ = stream(lm, [2])
        torch.testing.assert_close(h[2] @ d.unit, torch.full(h[2].shape[:2], want), atol=1e-5, rtol=0)


@pytest.mark.parametrize("unit,scale", [("separation", 2.0), ("resid_norm", 4.0), ("raw", None)])
def test_add_moves_by_strength_in_stated_units(lm, unit, scale):
    d = make_dir(lm)
    scale = float(d.vector.norm()) if scale is None else scale
    before, _ = stream(lm, [2])
    with add(lm, d, -1.5, unit=unit):
        after, _ = stream(lm, [2])
    torch.testing.assert_close(after[2] - before[2], (-1.5 * scale * d.unit).expand_as(before[2]),
                               atol=1e-5, rtol=1e-5)


def test_mix_equals_nested_adds(lm):
    q, _ = torch.linalg.qr(torch.randn(lm.hidden_size, 2, generator=torch.Generator().manual_seed(3)))
    a = make_dir(lm, layer=1, seed=1, vector=q[:, 0])
    b = make_dir(lm, layer=3, seed=2, vector=q[:, 1])
    c = make_dir(lm, layer=3, seed=4)
    with add(lm, a, 0.7), add(lm, b, -1.2), add(lm, c, 0.4):
        nested = logits(lm)
    with mix(lm, [(a, 0.7), (b, -1.2), (c, 0.4)]) as iv:
        mixed = logits(lm)
    assert iv.layers == [1, 3]  # one hook per layer
    torch.testing.assert_close(mixed, nested, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(mixed, logits(lm), atol=1e-3)
    # Orthogonal clamps at one layer commute: nesting order does not matter.
    a2 = make_dir(lm, layer=2, seed=1, vector=q[:, 0])
    b2 = make_dir(lm, layer=2, seed=2, vector=q[:, 1])
    with clamp(lm, a2, 1.0), clamp(lm, b2, -2.0):
        ab = logits(lm)
    with apply([clamp(lm, b2, -2.0), clamp(lm, a2, 1.0)]):
        ba = logits(lm)
    torch.testing.assert_close(ab, ba, atol=1e-5, rtol=1e-5)


def _no_hooks(lm):
    mods = [lm.adapter.layer_module(lm.model, layer) for layer in range(lm.num_layers + 1)]
    return all(not m._forward_hooks for m in mods) and not lm.model.base_model._forward_pre_hooks


def test_hooks_removed_even_when_block_raises(lm):
    d = make_dir(lm)
    with pytest.raises(RuntimeError, match="boom"):
        with add(lm, d, 1.0), ablate(lm, d), clamp(lm, d, 0.0, positions="generated"):
            assert not _no_hooks(lm)
            raise RuntimeError("boom")
    assert _no_hooks(lm)
    with pytest.raises(RuntimeError, match="boom"):
        generate(lm, ["hi"], 2, interventions=[add(lm, d, 1.0), _Exploding(lm, d)])
    assert _no_hooks(lm)


class _Exploding:
    """An intervention whose entry fails after another one was entered."""

    def __init__(self, lm, d):
        self.lm = lm

    def __enter__(self):
        raise RuntimeError("boom")

    def __exit__(self, *exc):
        return None


def test_same_intervention_reentered(lm):
    d = make_dir(lm)
    iv = add(lm, d, 1.0)
    base = logits(lm)
    with iv:
        once = logits(lm)
        with iv:
            twice = logits(lm)
        torch.testing.assert_close(logits(lm), once)
    assert _no_hooks(lm)
    assert not torch.allclose(once, twice) and not torch.allclose(once, base)


def test_refuses_mismatched_directions(lm):
    wide = Direction(vector=torch.ones(lm.hidden_size + 1),
                     provenance=Provenance.minimal(lm.hidden_size + 1, layer=1, fingerprint=lm.fingerprint))
    with pytest.raises(GnomonError, match="hidden size"):
        add(lm, wide, 1.0, unit="raw", force=True)
    other = make_dir(lm, fingerprint="0" * 32)
    for op in (lambda **k: add(lm, other, 1.0, **k), lambda **k: ablate(lm, other, **k),
               lambda **k: clamp(lm, other, 0.0, **k), lambda **k: mix(lm, [(other, 1.0)], **k)):
        with pytest.raises(GnomonError, match="force"):
            op()
        op(force=True)  # allowed when forced
    with pytest.raises(GnomonError, match="out of range"):
        add(lm, make_dir(lm, layer=lm.num_layers + 1), 1.0)
    with pytest.raises(GnomonError, match="separation"):
        add(lm, make_dir(lm, pos_mean=float("nan")), 1.0, unit="separation")


def test_positions_prompt_and_generated(lm):
    d = make_dir(lm)
    enc = encode_prompts(lm, PROMPTS)
    seen: list[torch.Tensor] = []

    def hook(_m, _a, out):
        seen.append(((out[0] if isinstance(out, tuple) else out) @ d.unit).detach())

    def run(positions):
        seen.clear()
        with clamp(lm, d, 5.0, positions=positions):
            h = lm.adapter.layer_module(lm.model, 2).register_forward_hook(hook)
            try:
                greedy(lm, enc, 4, feed_last=True)
            finally:
                h.remove()
        return list(seen)

    prompt_only = run("prompt")
    assert torch.allclose(prompt_only[0], torch.tensor(5.0), atol=1e-5)
    assert all(not torch.allclose(s, torch.tensor(5.0), atol=1e-3) for s in prompt_only[1:])
    gen_only = run("generated")
    assert not torch.allclose(gen_only[0], torch.tensor(5.0), atol=1e-3)
    assert len(gen_only) == 5 and all(torch.allclose(s, torch.tensor(5.0), atol=1e-5) for s in gen_only[1:])
    # HF generate goes through the same pre-hook: the decode steps are recognised there too.
    seen.clear()
    with clamp(lm, d, 5.0, positions="generated"):
        h = lm.adapter.layer_module(lm.model, 2).register_forward_hook(hook)
        try:
            lm.model.generate(**enc, max_new_tokens=3, do_sample=False,
                              pad_token_id=lm.tokenizer.pad_token_id)
        finally:
            h.remove()
    assert not torch.allclose(seen[0], torch.tensor(5.0), atol=1e-3)
    assert all(torch.allclose(s, torch.tensor(5.0), atol=1e-5) for s in seen[1:])


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_generate_matches_hf_and_is_batch_invariant(family):
    lm = load_model(f"tiny:{family}")
    enc = encode_prompts(lm, PROMPTS)
    ours = greedy(lm, enc, 6)
    ref = lm.model.generate(**enc, max_new_tokens=6, do_sample=False, pad_token_id=lm.tokenizer.pad_token_id)
    assert torch.equal(ours.new_ids, ref[:, enc["input_ids"].shape[1]:])
    d = make_dir(lm, layer=1)
    steered = generate(lm, PROMPTS, 6, interventions=[add(lm, d, 3.0)])
    alone = [generate(lm, [p], 6, interventions=[add(lm, d, 3.0)])[0] for p in PROMPTS]
    assert steered == alone
    assert steered != generate(lm, PROMPTS, 6)


def test_leace_ablation_equalises_class_means(lm):
    from pipeline.fit import fit_direction

    rng = np.random.default_rng(0)
    letters = list("abcdefghij")
    pos = ["".join(rng.choice(letters, 6)) + " yes" for _ in range(40)]
    neg = ["".join(rng.choice(letters, 6)) + " no!" for _ in range(40)]
    texts, ids = pos + neg, [str(i) for i in range(80)]

    def acts():
        rows = collect(lm, ids, texts, layers=[2], positions=["last"])[2]
        got, _p, _t, a = rows.arrays()
        return a[np.argsort([int(i) for i in got])].astype(np.float64)

    x = acts()
    base = Provenance(model_id=lm.model_id, revision="main", fingerprint=lm.fingerprint,
                      hidden_size=lm.hidden_size, layer=2, concept="toy")
    d = fit_direction("leace", x[:40], x[40:], base=base)
    assert {"leace_u", "leace_v", "leace_mean"} <= set(d.extras)
    gap = lambda a: np.abs(a[:40].mean(0) - a[40:].mean(0)).max()
    assert gap(x) > 1e-2
    with ablate(lm, d):
        erased = acts()
    assert gap(erased) < 1e-4 * max(1.0, np.abs(x).max())
    # The oblique eraser, not an orthogonal projection: every row now reads the same value on
    # the functional v (v . u = 1), while its component along the unit vector is not zero.
    v, mean = (d.extras[k].double().numpy() for k in ("leace_v", "leace_mean"))
    assert np.allclose(erased @ v, mean @ v, atol=1e-4 * max(1.0, float(np.abs(x @ v).max())))
    assert np.abs(erased @ d.unit.double().numpy()).max() > 1e-3
    with ablate(lm, Direction(vector=d.vector, provenance=d.provenance)):
        plain = acts()  # without extras: the orthogonal projection
    assert np.allclose(plain @ d.unit.double().numpy(), 0, atol=1e-4)


def test_cli_steer_json_and_side_by_side(tmp_path, capsys, lm):
    from jobs.cli import main

    d = make_dir(lm)
    path = d.save(tmp_path / "toy.safetensors")
    assert main(["steer", str(path), str(path), "--strength", "2,1", "--unit", "separation",
                 "--max-new-tokens", "5", "--json", "hello there"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["model"]["fingerprint"] == lm.fingerprint and out["prompt"] == "hello there"
    assert out["unsteered"] == generate(lm, ["hello there"], 5)[0]
    assert out["steered"] == generate(lm, ["hello there"], 5, interventions=[add(lm, d, 3.0)])[0]
    assert out["settings"]["strength"] == [2.0, 1.0]
    assert main(["steer", str(path), "--op", "clamp", "--strength", "1.5", "--max-new-tokens", "3", "hi"]) == 0
    text = capsys.readouterr().out
    assert "unsteered" in text and "clamp(c0@L2, 1.5)" in text
    other = make_dir(lm, fingerprint="1" * 32).save(tmp_path / "other.safetensors")
    assert main(["steer", str(other), "hi"]) == 2
    assert "--force" in capsys.readouterr().err


def test_cli_steer_says_when_the_strength_is_past_the_fluency_bound(tmp_path, capsys, lm):
    from jobs.cli import main

    path = make_dir(lm).save(tmp_path / "toy.safetensors")
    args = ["steer", str(path), "--max-new-tokens", "2", "--fluency-kl", "0.009", "--json", "hi"]
    assert main([*args, "--strength", "40"]) == 0
    f = json.loads(capsys.readouterr().out)["fluency"]
    assert f["past_bound"] and f["kl_at_strength"] > 0.009 and f["bound"] < 40 and f["unit"] == "resid_norm"
    assert main(args) == 0  # no --strength: half the measured bound, inside it
    f = json.loads(capsys.readouterr().out)["fluency"]
    assert f["auto"] and not f["past_bound"] and f["strength"] <= f["bound"]
    assert main([*args[:-2], "--strength", "40", "hi"]) == 0
    assert "past the fluency bound" in capsys.readouterr().out
