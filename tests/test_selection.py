"""What ``best`` means: the selection rule on synthetic saturated data, where the old rule
(highest val AUROC, ties to the newest version and earliest layer) picks layer 0 or CCS at
layer 1, and in the catalog (``best``/``best-monitor`` aliases, ``best-steer``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from pipeline.direction import Direction, Provenance
from pipeline.selection import Candidate, auroc_lcb, choose, rank, why_not
from pipeline.types import GnomonError


def cand(key: str, layer: int, method: str = "mean_diff", auroc: float = 1.0, dprime: float = 5.0,
         n: int | None = 20, version: int = 0, depth: int = 12) -> Candidate:
    return Candidate(key=key, layer=layer, num_layers=depth, method=method,
                     metrics={"val_auroc": auroc, "val_dprime": dprime}, n_pos=n, n_neg=n, version=version)


def test_saturated_scores_never_pick_layer_0_or_the_newest_early_ccs() -> None:
    cands = [cand("emb", 0, "ccs", dprime=9.0, version=9),        # embedding output: never
             cand("ccs1", 1, "ccs", dprime=5.1, version=8),       # the old rule's pick (newest, earliest)
             cand("md6", 6, "mean_diff", dprime=5.0, version=1),  # same margin, simpler, mid-depth
             cand("md2", 2, "mean_diff", dprime=5.0, version=2)]
    assert choose(cands).key == "md6"
    assert why_not(cands[0]) and "layer 0" in why_not(cands[0])
    assert [c.key for c in rank(cands)] == ["md6", "md2", "ccs1"]


def test_margin_breaks_saturated_auroc_before_simplicity() -> None:
    cands = [cand("md", 6, "mean_diff", dprime=3.0), cand("lda", 9, "lda", dprime=8.0)]
    assert choose(cands).key == "lda"  # d' 8 vs 3: a real margin, not a tie


def test_a_clearly_better_auroc_beats_margin_and_simplicity() -> None:
    cands = [cand("md", 6, "mean_diff", auroc=0.80, dprime=9.0, n=100),
             cand("ccs", 3, "ccs", auroc=0.95, dprime=2.0, n=100)]
    assert choose(cands).key == "ccs"


def test_chance_level_directions_are_never_chosen() -> None:
    at_chance = [cand("a", 4, auroc=0.56, n=10), cand("b", 6, auroc=0.5, n=50), cand("c", 0, auroc=1.0)]
    assert choose(at_chance) is None
    assert "not above chance" in why_not(at_chance[0])
    # the same AUROC on many rows is above chance
    assert choose([cand("a", 4, auroc=0.56, n=2000)]) is not None


def test_auroc_lower_bound_shrinks_with_fewer_rows() -> None:
    assert auroc_lcb(1.0, 3, 3) < auroc_lcb(1.0, 30, 30) < auroc_lcb(1.0, 300, 300) < 1.0
    assert auroc_lcb(0.8, 50, 50) < 0.8


def _layered(rng: np.random.Generator, n: int, layers: int, d: int = 16) -> dict[int, tuple[np.ndarray, ...]]:
    """Activations where every layer separates perfectly (val AUROC saturates at 1), with a
    margin that peaks at mid-depth and a huge one at layer 0 (a lexical embedding feature)."""
    out = {}
    for layer in range(layers + 1):
        gap = 30.0 if layer == 0 else 4.0 + 4.0 * (1 - abs(layer / layers - 0.5) * 2)
        mu = np.zeros(d)
        mu[0] = gap / 2
        noise = rng.normal(size=(4, n, d))
        out[layer] = (noise[0] + mu, noise[1] - mu, noise[2] + mu, noise[3] - mu)
    return out


def test_sweep_on_saturated_synthetic_activations_picks_a_mid_layer() -> None:
    from jobs.stages.fit_job import sweep_curves
    from pipeline.fit import fit_direction

    rng = np.random.default_rng(0)
    layers = 8
    dirs = []
    for layer, (tp, tn, vp, vn) in _layered(rng, 40, layers).items():
        base = Provenance.minimal(hidden_size=16, layer=layer, method="mean_diff", position="last")
        for method in ("mean_diff", "lda"):
            dirs.append(fit_direction(method, tp, tn, base=base, eval_sets={"val": (vp, vn)}))
    assert all(d.metrics["val_auroc"] == 1.0 for d in dirs if d.layer >= 2)  # saturated
    sweeps = sweep_curves(dirs, "val_auroc", num_layers=layers)
    for (method, _pos), s in sweeps.items():
        assert s["eligible"]
        assert s["best"].layer != 0
        assert abs(s["best"].layer - layers / 2) <= 1, (method, s["best"].layer)


def _register(cat: Any, layer: int, method: str, auroc: float, dprime: float, concept: str = "toyc",
              vector: torch.Tensor | None = None, set_best: bool = True) -> Any:
    prov = Provenance.minimal(hidden_size=32, layer=layer, method=method, position="last", concept=concept,
                              model_id="tiny:llama", revision="main", positive="pos", negative="neg")
    vec = vector if vector is not None else torch.randn(32, generator=torch.Generator().manual_seed(layer))
    d = Direction(vec, prov, pos_mean=1.0, neg_mean=-1.0, spread=0.5, resid_norm=4.0,
                  metrics={"val_auroc": auroc, "val_dprime": dprime, "val_accuracy": auroc})
    return cat.register(d, extra_tags={"num_layers": "4", "val_rows": "40"}, set_best=set_best)


def test_catalog_aliases_follow_the_rule(catalog_home: Path) -> None:
    from catalog import Catalog

    cat = Catalog(home=catalog_home)
    mid = _register(cat, 2, "mean_diff", 1.0, 6.0)
    _register(cat, 0, "ccs", 1.0, 12.0)   # newer, higher margin, but the embedding output
    _register(cat, 1, "ccs", 1.0, 6.1)    # newest, saturated: the old rule's pick
    for alias in ("best", "best-monitor"):
        assert cat.resolve(f"toyc@{alias}").ref == mid.ref
    # a concept whose every direction is at chance gets no best alias at all
    _register(cat, 2, "mean_diff", 0.52, 0.1, concept="noise")
    rec = cat.resolve("noise")
    assert not rec.aliases


def test_best_steer_is_not_set_for_directions_that_do_not_steer(catalog_home: Path, tiny_lm: Any,
                                                                 tmp_path: Path) -> None:
    """Issue 20: a separating direction of a random tiny model (and its negation) moves the
    likelihood preference by ~0.01 nats, not the intended way at both signs. The old rule
    ("largest positive change from -s to +s") set best-steer to whichever of the two had the
    positive change (this test's earlier form asserted exactly that); now neither qualifies,
    the alias is not set, and each candidate says why."""
    from catalog import Catalog
    from jobs.stages.steer_select import select_steer
    from pipeline.datasets import load_dataset
    from pipeline.evaluate import _acts
    from tests.conftest import write_dataset

    ds = load_dataset(write_dataset(tmp_path / "toyc.jsonl", n_pairs=40), name="toyc")
    cat = Catalog(home=catalog_home)
    pos = _acts(tiny_lm, ds.split_texts("train", "pos"), 2, "last")
    neg = _acts(tiny_lm, ds.split_texts("train", "neg"), 2, "last")
    v = torch.as_tensor(pos.mean(0) - neg.mean(0), dtype=torch.float32)
    good = _register(cat, 2, "mean_diff", 1.0, 5.0, vector=v, set_best=False)
    bad = _register(cat, 2, "lda", 1.0, 5.0, vector=-v, set_best=False)
    out = select_steer(cat, "toyc", "tiny:llama", ds, "pos", "neg", catalog_home, lm=tiny_lm)
    effects = {c["ref"]: c.get("effect") for c in out["candidates"]}
    assert set(effects) == {good.ref, bad.ref}
    assert effects[good.ref] == pytest.approx(-effects[bad.ref], rel=1e-3, abs=1e-6) and effects[good.ref] != 0
    assert out["ref"] is None and all(not c["qualifies"] and c["why_not"] for c in out["candidates"])
    with pytest.raises(GnomonError, match="not set for any model"):
        cat.resolve("toyc@best-steer")


def test_best_steer_picks_a_planted_steering_direction(catalog_home: Path, tiny_lm: Any, tmp_path: Path) -> None:
    """A direction that steers by construction: at the last block, the unembedding rows of the
    positive label's characters minus the negative's raise log p("pos") against log p("neg")
    in every validation couple. It must be chosen, with both intervals clear of zero; its
    negation moves the score the wrong way at both signs and must not qualify."""
    from catalog import Catalog
    from jobs.stages.steer_select import select_steer
    from pipeline.datasets import load_dataset
    from tests.conftest import write_dataset

    ds = load_dataset(write_dataset(tmp_path / "toyc.jsonl", n_pairs=40), name="toyc")
    cat = Catalog(home=catalog_home)
    w = tiny_lm.model.get_output_embeddings().weight.detach()               # (V, D)
    ids = [tiny_lm.tokenizer(c, add_special_tokens=False)["input_ids"][0] for c in "posneg"]
    u = w[ids[:3]].sum(0) - w[ids[3:]].sum(0)
    layer = tiny_lm.num_layers
    up = _register(cat, layer, "mean_diff", 1.0, 5.0, vector=u, set_best=False)
    down = _register(cat, layer, "lda", 1.0, 5.0, vector=-u, set_best=False)
    out = select_steer(cat, "toyc", "tiny:llama", ds, "pos", "neg", catalog_home, lm=tiny_lm)
    by = {c["ref"]: c for c in out["candidates"]}
    assert out["ref"] == up.ref and out["scorer"] == "likelihood_preference"
    assert by[up.ref]["qualifies"] and by[up.ref]["plus_ci"][0] > 0 > by[up.ref]["minus_ci"][1]
    assert not by[down.ref]["qualifies"] and by[down.ref]["plus"] < 0 < by[down.ref]["minus"]
    assert cat.resolve("toyc@best-steer").ref == up.ref
    assert cat.resolve("toyc@best-steer", model="tiny:llama").ref == up.ref
    tags = cat.resolve(up.ref).tags
    assert tags["steer.plus_ci"]                            # the evidence is on the version
    assert tags["steer.evidence_run"] == out["evidence_run"]    # ... and names its MLflow run
    assert tags["steer.fluency_bound"] == f"{by[up.ref]['fluency_bound']:.4g} separation"
    with pytest.raises(GnomonError, match="no version for model 'tiny:gpt2'"):
        cat.resolve("toyc@best-steer", model="tiny:gpt2")


def test_fluency_bound_grows_kl_and_flags_past_it(tiny_lm: Any) -> None:
    from pipeline.fluency import fluency_bound

    prov = Provenance.minimal(hidden_size=tiny_lm.hidden_size, layer=1, method="mean_diff", position="last")
    d = Direction(torch.randn(tiny_lm.hidden_size, generator=torch.Generator().manual_seed(0)), prov,
                  pos_mean=1.0, neg_mean=-1.0, spread=1.0, resid_norm=1.0)
    fb = fluency_bound(tiny_lm, d, ["hello there", "the cat sat"], "resid_norm", kl_max=0.005, extra=[50.0])
    kls = [fb.kls[s] for s in sorted(fb.kls)]
    assert kls[-1] > kls[0]  # a bigger push changes the next token more
    assert fb.past(50.0) and fb.kl_at(50.0) > 0.005 and 0 < fb.bound < 50
    assert all(fb.kls[s] <= 0.005 for s in fb.kls if s <= fb.bound)


def test_fluency_bound_bisection_finds_the_walks_bound(tiny_lm: Any) -> None:
    """Bisecting the grid gives the strength an upward walk would stop before, with fewer
    measurements (KL grows with the strength)."""
    from pipeline.evaluate import next_token_logp
    from pipeline.fluency import GRID, fluency_bound, measure_kl

    prov = Provenance.minimal(hidden_size=tiny_lm.hidden_size, layer=1, method="mean_diff", position="last")
    d = Direction(torch.randn(tiny_lm.hidden_size, generator=torch.Generator().manual_seed(0)), prov,
                  pos_mean=1.0, neg_mean=-1.0, spread=1.0, resid_norm=1.0)
    prompts = ["hello there", "the cat sat"]
    base = next_token_logp(tiny_lm, prompts)
    for kl_max in (0.0005, 0.005, 0.05):
        walk = 0.0
        for s in GRID:
            if measure_kl(tiny_lm, d, prompts, s, "resid_norm", base=base) > kl_max:
                break
            walk = s
        fb = fluency_bound(tiny_lm, d, prompts, "resid_norm", kl_max=kl_max)
        assert fb.bound == walk
        assert len(fb.kls) <= 4 < len(GRID)


def test_both_signs_in_one_batch_match_one_sign_at_a_time(tiny_lm: Any) -> None:
    """measure_kl and dose_response stack +s and -s in one batch (add_rows); each half must
    give what a separate pass with add(+s) / add(-s) gives."""
    from pipeline.evaluate import next_token_kl
    from pipeline.fluency import measure_kl
    from pipeline.steer import add, add_rows, generate

    prov = Provenance.minimal(hidden_size=tiny_lm.hidden_size, layer=1, method="mean_diff", position="last")
    d = Direction(torch.randn(tiny_lm.hidden_size, generator=torch.Generator().manual_seed(1)), prov,
                  pos_mean=1.0, neg_mean=-1.0, spread=1.0, resid_norm=1.0)
    prompts = ["hello there", "the cat sat on the", "a"]
    for s in (0.05, 0.5, 3.0):
        one = [next_token_kl(tiny_lm, prompts, [add(tiny_lm, d, sign * s, "resid_norm")]) for sign in (1, -1)]
        assert one[0] != pytest.approx(one[1], rel=1e-3)          # the two signs differ: the max means something
        assert measure_kl(tiny_lm, d, prompts, s, "resid_norm") == pytest.approx(max(one), rel=1e-4, abs=1e-7)
        both = generate(tiny_lm, prompts * 2, 6, [add_rows(tiny_lm, d, [s] * 3 + [-s] * 3, "resid_norm")])
        assert both[:3] == generate(tiny_lm, prompts, 6, [add(tiny_lm, d, s, "resid_norm")])
        assert both[3:] == generate(tiny_lm, prompts, 6, [add(tiny_lm, d, -s, "resid_norm")])
    from pipeline.fluency import dose_response, likelihood_preference

    pairs = (["a good day", "what a lovely film"], ["a bad day", "what an awful film", "grey"])
    dr = dose_response(tiny_lm, d, prompts, pairs, 2.0, "resid_norm")
    one = [likelihood_preference(tiny_lm, *pairs, [add(tiny_lm, d, sign * 2.0, "resid_norm")]) for sign in (-1, 1)]
    assert dr.score_neg == pytest.approx(one[0], rel=1e-4, abs=1e-6)
    assert dr.score_pos == pytest.approx(one[1], rel=1e-4, abs=1e-6) and one[0] != pytest.approx(one[1])
    from pipeline.types import GnomonError

    with pytest.raises(GnomonError, match="finite"):
        add_rows(tiny_lm, d, [float("nan")], "resid_norm")


def test_top_first_bound_is_the_walks_bound(tiny_lm: Any) -> None:
    """The selection's search (largest strength first) finds what the plain bisection finds."""
    from pipeline.fluency import fluency_bound

    prov = Provenance.minimal(hidden_size=tiny_lm.hidden_size, layer=1, method="mean_diff", position="last")
    d = Direction(torch.randn(tiny_lm.hidden_size, generator=torch.Generator().manual_seed(0)), prov,
                  pos_mean=1.0, neg_mean=-1.0, spread=1.0, resid_norm=1.0)
    prompts = ["hello there", "the cat sat"]
    for kl_max in (0.0005, 0.005, 0.05, 50.0):
        plain = fluency_bound(tiny_lm, d, prompts, "resid_norm", kl_max=kl_max)
        top = fluency_bound(tiny_lm, d, prompts, "resid_norm", kl_max=kl_max, top_first=True)
        assert top.bound == plain.bound
        assert len(top.kls) == 1 if kl_max == 50.0 else len(top.kls) <= 5
