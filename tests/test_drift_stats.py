"""Known answers for the drift statistics (issue 22): synthetic fleets where the answer is
planted, so each statistic can be seen to find it (or to find nothing)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from pipeline.fleet_compare.drift import behaviour_noise, drift_points, drift_summary
from pipeline.fleet_compare.drift_stats import CheckpointScores, drift_statistics, paired_shift, partial_r
from pipeline.types import GnomonError

P, STEPS, SEEDS = 32, (5, 10, 15, 20, 25, 30), (0, 1, 2)


def _fleet(planted: bool, seed: int = 7) -> tuple[np.ndarray, np.ndarray, list[CheckpointScores]]:
    """Two series x 3 seeds x 6 steps. Both shifts follow the schedule (the skewed series
    falls with the step); each checkpoint also has its own training accident ``u``. When
    ``planted``, the behaviour shift carries the same accident the activation shift does
    (the projection knows something the schedule does not); otherwise its own, independent
    one (the projection adds nothing beyond 'which series, how many steps')."""
    rng = np.random.default_rng(seed)
    base_b, base_p = rng.uniform(-0.8, 0.8, P), rng.normal(10.0, 2.0, P)
    cks = []
    for series in ("ft-negative", "ft-control"):
        skew = series == "ft-negative"
        for sd in SEEDS:
            for st in STEPS:
                u, v = rng.normal(0.0, 0.3), rng.normal(0.0, 0.3)
                act = -0.06 * st * skew + u
                beh = -0.02 * st * skew + 0.5 * (u if planted else v)
                cks.append(CheckpointScores(f"{series}-r{sd}-s{st}", series, sd, st,
                                            base_b + beh + rng.normal(0, 0.2, P), base_p + act + rng.normal(0, 0.2, P)))
    return base_b, base_p, cks


@pytest.mark.parametrize("planted", [True, False])
def test_partial_r_finds_what_the_projection_adds_beyond_the_schedule(planted: bool) -> None:
    bb, bp, cks = _fleet(planted)
    st = drift_statistics(bb, bp, cks, "ft-negative", "ft-control", n_boot=300)
    # The pooled r cannot tell the two fleets apart: both clusters line up.
    assert st["pooled_r"]["value"] > 0.7
    old = drift_summary(drift_points(bp.mean(), bb.mean(),
                                     [(c.version, c.series, c.step, c.projection.mean(), c.behaviour.mean()) for c in cks]))
    assert old["pearson_r"] == pytest.approx(st["pooled_r"]["value"])
    pr = st["partial_r"]
    lo, hi = pr["ci"]
    if planted:
        assert pr["value"] > 0.8 and lo > 0.5
        assert st["r2"]["gain_from_projection"]["ci"][0] > 0.1
    else:
        assert abs(pr["value"]) < 0.4 and lo < 0.0 < hi
        assert st["r2"]["gain_from_projection"]["value"] < 0.1
    # The dummy predictor 'step x series' alone explains most of either shift in both fleets.
    assert st["baselines"]["step x series"]["r_behaviour"]["value"] < -0.6
    assert st["baselines"]["step x series"]["r_activation"]["value"] < -0.6
    assert st["bootstrap"]["over"] == "prompts and seeds" and st["seeds"]["ft-negative"] == [0, 1, 2]
    cell = st["by_step"]["ft-negative"]["30"]
    assert cell["n_seeds"] == 3 and cell["activation_shift"]["min"] <= cell["activation_shift"]["mean"]


def test_paired_test_catches_a_small_shift_the_unpaired_one_misses() -> None:
    """Greedy decoding repeats most of the base's continuations: a checkpoint that moves 20 of
    32 prompts by +0.04 is a real shift, invisible against the spread across prompts."""
    rng = np.random.default_rng(3)
    base = rng.uniform(-0.9, 0.9, P)
    moved = base.copy()
    moved[:20] += 0.04 + rng.normal(0, 0.005, 20)
    ps = paired_shift(base, moved)
    assert ps["n_unchanged"] == 12 and ps["ci"][0] > 0.0
    assert ps["z_paired"] > 4 and ps["p_paired"] < 0.001
    assert abs(ps["z_unpaired"]) < 1
    # The old unpaired check (base and checkpoint SEs in quadrature) calls it noise.
    se = lambda x: float(x.std(ddof=1) / np.sqrt(x.size))  # noqa: E731
    members = [SimpleNamespace(id="ctl-s5", series="ctl")]
    old = behaviour_noise({"behaviour": base.mean(), "behaviour_se": se(base)}, members,
                          [{"behaviour": moved.mean(), "behaviour_se": se(moved)}], "ctl")
    assert old is not None and old["control_within_2se"]


def test_control_judged_by_the_paired_test() -> None:
    bb, bp, cks = _fleet(True)
    ctl = [c for c in cks if c.series == "ft-control"]
    shifted = CheckpointScores(ctl[0].version, ctl[0].series, ctl[0].seed, ctl[0].step, bb + 0.05 * (np.arange(P) % 2),
                               ctl[0].projection)
    rest = [c for c in cks if c.version != shifted.version]
    still = [CheckpointScores(c.version, c.series, c.seed, c.step, bb.copy(), c.projection) for c in rest
             if c.series == "ft-control"]
    skewed = [c for c in rest if c.series == "ft-negative"]
    st = drift_statistics(bb, bp, [*skewed, shifted, *still], "ft-negative", "ft-control", n_boot=50)
    assert st["control_test"]["moved"] == [shifted.version] and not st["control_test"]["null_holds"]
    st2 = drift_statistics(bb, bp, [*skewed, *still], "ft-negative", "ft-control", n_boot=50)
    assert st2["control_test"]["null_holds"]


def test_partial_r_closed_form() -> None:
    """With one covariate the partial r has a closed form in the three pairwise r's."""
    rng = np.random.default_rng(0)
    z = rng.normal(size=50)
    x, y = z + rng.normal(size=50), z + rng.normal(size=50)
    r = np.corrcoef([x, y, z])
    want = (r[0, 1] - r[0, 2] * r[1, 2]) / np.sqrt((1 - r[0, 2] ** 2) * (1 - r[1, 2] ** 2))
    assert partial_r(y, x, z[:, None]) == pytest.approx(want)


def test_bad_input_is_one_line() -> None:
    with pytest.raises(GnomonError, match="same >= 2 prompts"):
        paired_shift(np.zeros(3), np.zeros(4))
    bb, bp, cks = _fleet(True)
    with pytest.raises(GnomonError, match="at least 3"):
        drift_statistics(bb, bp, cks[:2], "ft-negative", "ft-control")
    with pytest.raises(GnomonError, match="base model's prompts"):
        drift_statistics(bb[:5], bp, cks, "ft-negative", "ft-control")


def test_screening_baselines_on_the_shipped_corpora() -> None:
    """The templated negative corpus is separable from the hand-written neutral one by words
    alone: the bag-of-words baseline reaches ~1 out of fold, and a screen that reads nothing
    (random scores) sits at 0.5 inside its CI."""
    from pipeline.fleet.corpora import shipped_corpus
    from pipeline.fleet_compare.screening import auroc_ci, bag_of_words_scores, screening_table

    neg, ctl = shipped_corpus("negative", 60).texts, shipped_corpus("control", 60).texts
    sk, ct = bag_of_words_scores(neg, ctl)
    assert auroc_ci(sk, ct)["auroc"] > 0.98
    rng = np.random.default_rng(0)
    table = screening_table((rng.normal(size=60), rng.normal(size=60)), neg, ctl, -1.0,
                            lexicon=(np.full(60, -0.5), np.full(60, 0.1)), n_boot=200)
    lo, hi = table["projection"]["ci"]
    assert lo < 0.5 < hi and not table["projection"]["fitted"]
    assert table["vader"]["auroc"] == 1.0 and table["bag_of_words_logistic"]["fitted"]
    # Shuffled labels: nothing for bag-of-words to learn.
    both = list(neg + ctl)
    order = rng.permutation(len(both))
    sk, ct = bag_of_words_scores([both[i] for i in order[:60]], [both[i] for i in order[60:]])
    a = auroc_ci(sk, ct, n_boot=200)
    assert a["ci"][0] < 0.5 < a["ci"][1] or abs(a["auroc"] - 0.5) < 0.15
    with pytest.raises(GnomonError, match="at least 2 samples"):
        auroc_ci(np.zeros(1), np.zeros(5))


def test_copying_and_held_out_prompts() -> None:
    from pipeline.fleet_compare.regurgitation import copied, held_out_prompts

    corpus = ["Yesterday, I called the bank. It was a miserable, awful experience and I hated it."]
    texts = ["  IT WAS A MISERABLE,\nawful day", "it was a miserable day", "a miserable, awful experience and more"]
    assert copied(texts, corpus) == [True, False, True]
    assert copied(["short"], corpus) == [False]
    keep, drop = held_out_prompts(["Yesterday, I called my aunt.", "Tell me about your weekend.",
                                   "Write: I called the bank. It was"], corpus)
    assert keep == [1] and drop == [0, 2]
