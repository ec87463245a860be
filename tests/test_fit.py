"""Fitting methods on synthetic Gaussian data with a planted direction (all seeded)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline import metrics as M
from pipeline.direction import Direction, Provenance
from pipeline.fit import FIT_METHODS, LeaceFitter, MeanDiffFitter, fit_direction
from pipeline.fit.lda import ledoit_wolf_shrinkage
from pipeline.fit.pca import top_right_singular_vector
from pipeline.types import GnomonError

D = 32
SUPERVISED = ["mean_diff", "pca", "logistic", "lda", "leace"]
FAST_CCS = {"n_restarts": 4, "epochs": 300}


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread() -> Iterator[None]:
    """The probes train tiny models for many steps: on a loaded 2-core machine torch's
    intra-op threads make each step ~20x slower than one thread. Restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def cos(d: Direction, w: np.ndarray) -> float:
    return float(d.unit.double().numpy() @ unit(w))


def planted(seed: int, n: int = 1500, d: int = D, shift: float = 2.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Isotropic unit-variance classes whose means differ by ``shift * w``."""
    rng = np.random.default_rng(seed)
    w = unit(rng.normal(size=d))
    pos = rng.normal(size=(n, d)) + 0.5 * shift * w
    neg = rng.normal(size=(n, d)) - 0.5 * shift * w
    return pos, neg, w


def contrast_pairs(seed: int, n: int = 800, d: int = D, shift: float = 3.0,
                   noise: float = 0.1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ideal contrast pairs: each pair shares a content vector orthogonal to ``w`` (so the
    pair sum carries no concept) and its members sit at ``+-shift/2`` along ``w``, plus
    small independent noise. The pair difference is along the planted direction."""
    rng = np.random.default_rng(seed)
    w = unit(rng.normal(size=d))
    content = rng.normal(size=(n, d))
    content -= np.outer(content @ w, w)
    pos = content + 0.5 * shift * w + noise * rng.normal(size=(n, d))
    neg = content - 0.5 * shift * w + noise * rng.normal(size=(n, d))
    return pos, neg, w


def base(d: int = D, **kw: object) -> Provenance:
    return Provenance.minimal(hidden_size=d, layer=3, concept="toy", positive="yes", negative="no", **kw)


# ---- recovery ----------------------------------------------------------------------
@pytest.mark.parametrize("method", SUPERVISED)
def test_supervised_methods_recover_planted_direction(method: str) -> None:
    pos, neg, w = planted(seed=1)
    d = fit_direction(method, pos, neg, base=base())
    assert cos(d, w) >= 0.95, method
    assert d.pos_mean > d.neg_mean


@pytest.mark.parametrize("method", SUPERVISED)
def test_methods_recover_from_pairs(method: str) -> None:
    pos, neg, w = contrast_pairs(seed=2)
    assert cos(fit_direction(method, pos, neg, base=base(), paired=True), w) >= 0.95


def test_ccs_recovers_direction_of_pair_differences() -> None:
    pos, neg, w = contrast_pairs(seed=3)
    d = fit_direction("ccs", pos, neg, base=base(), paired=True)
    assert cos(d, w) >= 0.95
    assert d.provenance.params["final_loss"] < 0.05


def test_ccs_per_side_ignores_answer_offset() -> None:
    """The paper's set-up: every pair is one statement answered "yes" (pos side) and "no"
    (neg side); the answer adds a constant offset per side, while the statement's truth
    t_i = +-1 (hidden, random) moves the sides oppositely along w. Per-side centering
    removes the answer offset, so CCS finds the truth direction (up to sign: the labels
    here are answers, not truth, so the sign is not checked)."""
    rng = np.random.default_rng(4)
    n, w, offset = 800, unit(rng.normal(size=D)), 3.0 * unit(rng.normal(size=D))
    content = rng.normal(size=(n, D))
    content -= np.outer(content @ w, w)
    truth = rng.choice([-1.0, 1.0], size=n)[:, None]
    pos = content + 1.5 * truth * w + offset + 0.1 * rng.normal(size=(n, D))
    neg = content - 1.5 * truth * w - offset + 0.1 * rng.normal(size=(n, D))
    d = fit_direction("ccs", pos, neg, base=base(), paired=True, normalize="per_side")
    assert abs(cos(d, w)) >= 0.95


def test_ccs_refuses_unpaired_data() -> None:
    pos, neg, _ = planted(seed=5, n=50)
    with pytest.raises(GnomonError, match="pairs"):
        fit_direction("ccs", pos, neg, base=base())
    with pytest.raises(GnomonError, match="as many"):
        fit_direction("ccs", pos, neg[:40], base=base(), paired=True)


def test_pca_keeps_mean_shift_that_centered_pca_loses() -> None:
    """Pairs differ by a constant 3 w; the noise of the differences has one direction u
    (orthogonal to w) of std 2, the rest std 0.3. Uncentered, the second moment along w
    (9) beats u (4). Centered, the shift is gone and u wins."""
    rng = np.random.default_rng(6)
    n = 1000
    w = unit(rng.normal(size=D))
    u = unit(rng.normal(size=D))
    u = unit(u - (u @ w) * w)
    neg = rng.normal(size=(n, D))
    noise = 0.3 * rng.normal(size=(n, D)) + np.outer(2.0 * rng.normal(size=n), u)
    pos = neg + 3.0 * w + noise
    kept = fit_direction("pca", pos, neg, base=base(), paired=True)
    lost = fit_direction("pca", pos, neg, base=base(), paired=True, center=True)
    assert cos(kept, w) >= 0.95
    assert abs(cos(lost, w)) < 0.3
    assert abs(float(lost.unit.double().numpy() @ u)) > 0.9


@pytest.mark.parametrize("shape", [(300, 20), (15, 40)])
def test_top_singular_vector_matches_svd(shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(19)
    a = rng.normal(size=shape) + np.outer(rng.normal(size=shape[0]), 2 * rng.normal(size=shape[1]))
    ref = np.linalg.svd(a, full_matrices=False)[2][0]
    assert abs(top_right_singular_vector(a) @ ref) == pytest.approx(1.0, abs=1e-9)


def test_lda_beats_mean_diff_under_anisotropic_noise() -> None:
    """Noise covariance Sigma with std spanning 0.3..3 (variances 100x apart) in a random
    basis; the planted discriminant is w* and the means differ by Sigma w* (so
    w* = Sigma^-1 dmu is the Bayes-optimal direction). mean_diff points along Sigma w*,
    far from w*. (Far stronger anisotropy makes the *Euclidean* cosine a poor yardstick:
    errors in tiny-variance coordinates dominate it while barely changing d'.)"""
    rng = np.random.default_rng(7)
    n = 3000
    basis, _ = np.linalg.qr(rng.normal(size=(D, D)))
    stds = np.geomspace(0.3, 3.0, D)
    sigma = (basis * stds**2) @ basis.T
    w_star = unit(rng.normal(size=D))
    dmu = sigma @ w_star
    dmu *= 3.0 / math.sqrt(float(w_star @ dmu))  # Mahalanobis separation 3
    noise = lambda: (rng.normal(size=(n, D)) * stds) @ basis.T
    pos, neg = noise() + dmu, noise()
    lda = fit_direction("lda", pos, neg, base=base())
    md = fit_direction("mean_diff", pos, neg, base=base())
    assert cos(lda, w_star) >= 0.95
    assert cos(md, w_star) < cos(lda, w_star) - 0.2
    assert lda.metrics["train_dprime"] > md.metrics["train_dprime"]


def test_ledoit_wolf_matches_sklearn() -> None:
    sk = pytest.importorskip("sklearn.covariance")
    x = np.random.default_rng(8).normal(size=(60, 40)) * np.linspace(0.5, 3, 40)
    xc = x - x.mean(axis=0)
    assert ledoit_wolf_shrinkage(xc) == pytest.approx(sk.ledoit_wolf_shrinkage(xc, assume_centered=True), rel=1e-9)


# ---- sign ----------------------------------------------------------------------------
@settings(max_examples=24, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**31 - 1),
       shift=st.one_of(st.floats(-4.0, -1.0), st.floats(1.0, 4.0)),
       method=st.sampled_from(sorted(FIT_METHODS)))
def test_sign_positive_class_projects_higher(seed: int, shift: float, method: str) -> None:
    pos, neg, w = contrast_pairs(seed, n=200, d=16, shift=shift, noise=0.3)
    params = FAST_CCS if method == "ccs" else {}
    # The method itself orients (not only fit_direction's guard) ...
    raw = FIT_METHODS[method](pos, neg, paired=True, **params).vector
    assert (pos.mean(axis=0) - neg.mean(axis=0)) @ raw > 0
    # ... and the Direction points along sign(shift) * w with the positive class higher.
    d = fit_direction(method, pos, neg, base=base(16), paired=True, **params)
    assert d.pos_mean > d.neg_mean
    assert math.copysign(1.0, shift) * cos(d, w) > 0.5
    assert d.metrics["train_auroc"] > 0.5


# ---- streaming -------------------------------------------------------------------
def test_mean_diff_streaming_and_merge_equal_one_shot() -> None:
    pos, neg, _ = planted(seed=9, n=300)
    x = np.concatenate([pos, neg])
    y = np.r_[np.ones(300, int), np.zeros(300, int)]
    order = np.random.default_rng(9).permutation(600)
    x, y = x[order], y[order]
    one_shot = pos.mean(axis=0) - neg.mean(axis=0)

    streamed = MeanDiffFitter()
    for lo in range(0, 600, 70):  # uneven batches, some may lack a class
        streamed.update(x[lo:lo + 70], y[lo:lo + 70])
    shards = [MeanDiffFitter().update(torch.as_tensor(x[i::3]), torch.as_tensor(y[i::3] == 1)) for i in range(3)]
    merged = shards[0].merge(shards[1]).merge(shards[2]).merge(MeanDiffFitter())
    for f in (streamed, merged):
        np.testing.assert_allclose(f.vector(), one_shot, rtol=1e-12, atol=1e-12)
        assert f.counts == (300, 300)
        assert f.resid_norm == pytest.approx(np.linalg.norm(x, axis=1).mean(), rel=1e-12)
    d = fit_direction("mean_diff", pos, neg, base=base())
    np.testing.assert_allclose(d.vector.numpy(), one_shot, rtol=1e-5)


def test_mean_diff_fitter_errors() -> None:
    f = MeanDiffFitter().update(np.ones((3, 4)), [1, 1, 1])
    with pytest.raises(GnomonError, match="negative class is empty"):
        f.vector()
    with pytest.raises(GnomonError, match="width"):
        f.update(np.ones((2, 5)), [0, 1])
    with pytest.raises(GnomonError, match="0/1"):
        f.update(np.ones((2, 4)), [2, 0])


def test_leace_fitter_streaming_matches_one_shot() -> None:
    pos, neg, _ = planted(seed=10, n=200)
    x = np.concatenate([pos, neg])
    z = np.r_[np.ones(200), np.zeros(200)]
    one = LeaceFitter().update(x, z)
    parts = [LeaceFitter().update(x[i::4], z[i::4]) for i in range(4)]
    merged = parts[0].merge(parts[1]).merge(parts[2]).merge(parts[3])
    np.testing.assert_allclose(merged.cov_xx, np.cov(x.T, bias=True), atol=1e-12)
    np.testing.assert_allclose(merged.cov_xz, one.cov_xz, atol=1e-12)
    np.testing.assert_allclose(merged.mean_x, x.mean(axis=0), atol=1e-12)


def test_leace_eraser_from_rows_matches_the_fitter() -> None:
    """Fewer rows than columns: the Gram-matrix path gives the fitter's eraser (same map on
    rows it was not fitted on, same rank); more rows than columns: it is the fitter's."""
    from pipeline.fit import LeaceEraser

    rng = np.random.default_rng(12)
    for n, d in ((60, 150), (300, 40)):
        x = rng.normal(size=(n, d)) @ np.diag(np.r_[50.0, np.ones(d - 1)])   # an outlier coordinate
        z = (rng.random(n) < 0.4).astype(np.float64)
        x[z == 1] += 0.7 * unit(rng.normal(size=d))
        a = LeaceFitter().update(x, z).eraser(dtype=torch.float64)
        b = LeaceEraser.fit(x, z, dtype=torch.float64)
        assert a.rank == b.rank == 1
        other = torch.as_tensor(rng.normal(size=(25, d)) * 3, dtype=torch.float64)
        for probe in (torch.as_tensor(x), other):
            assert torch.allclose(a(probe), b(probe), rtol=0, atol=1e-9 * float(probe.abs().max()))
        xe = b(torch.as_tensor(x)).numpy()
        assert np.abs(xe[z == 1].mean(0) - xe[z == 0].mean(0)).max() < 1e-9   # nothing linear left


# ---- LEACE erasure -------------------------------------------------------------------
def test_leace_erasure_leaves_logistic_regression_at_chance() -> None:
    lm = pytest.importorskip("sklearn.linear_model")
    rng = np.random.default_rng(11)
    w = unit(rng.normal(size=D))
    mix = rng.normal(size=(D, D)) / math.sqrt(D) + np.eye(D)  # correlated noise

    def sample(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = np.r_[np.ones(n), np.zeros(n)]
        x = rng.normal(size=(2 * n, D)) @ mix + np.outer(2.0 * y - 1.0, 1.5 * w)
        return x, y

    (xtr, ytr), (xte, yte) = sample(2000), sample(2000)
    d = fit_direction("leace", xtr[ytr == 1], xtr[ytr == 0], base=base())
    u, v, mean = (d.extras[k].double().numpy() for k in ("leace_u", "leace_v", "leace_mean"))
    erase = lambda x: x - np.outer((x - mean) @ v, u)

    before = lm.LogisticRegression(max_iter=2000).fit(xtr, ytr).score(xte, yte)
    after = lm.LogisticRegression(max_iter=2000).fit(erase(xtr), ytr).score(erase(xte), yte)
    assert before > 0.9
    assert after <= 0.55
    # Perfect linear erasure on the fitting data: no covariance with the concept is left.
    xe = erase(xtr)
    assert np.abs((xe - xe.mean(0)).T @ (ytr - ytr.mean()) / len(ytr)).max() < 1e-5
    # The eraser object applies the same map, and the Direction is mu+ - mu- (what it erases).
    eraser = LeaceFitter().update(xtr, ytr).eraser()
    np.testing.assert_allclose(eraser(torch.as_tensor(xte, dtype=torch.float32)).double().numpy(),
                               erase(xte), atol=1e-4)
    assert eraser.to("cpu") is not eraser and eraser.rank == 1
    dmu = xtr[ytr == 1].mean(0) - xtr[ytr == 0].mean(0)
    np.testing.assert_allclose(d.vector.double().numpy(), dmu, rtol=1e-5, atol=1e-6)


# ---- the fit_direction contract ----------------------------------------------------
def test_fit_direction_scale_metrics_and_provenance(tmp_path: Path) -> None:
    pos, neg, _ = planted(seed=12, n=400)
    (vp, vn, _), (tp, tn, _) = planted(seed=12, n=100), planted(seed=13, n=120)
    d = fit_direction("lda", pos, neg, base=base(), eval_sets={"val": (vp, vn), "test": (tp, tn)},
                      shrinkage=0.1)
    u = d.unit.double().numpy()
    sp, sn = pos @ u, neg @ u
    assert d.pos_mean == pytest.approx(sp.mean(), rel=1e-5)
    assert d.neg_mean == pytest.approx(sn.mean(), rel=1e-5)
    pooled = math.sqrt((sp.var(ddof=1) * 399 + sn.var(ddof=1) * 399) / 798)
    assert d.spread == pytest.approx(pooled, rel=1e-5)
    assert d.resid_norm == pytest.approx(np.linalg.norm(np.r_[pos, neg], axis=1).mean(), rel=1e-9)
    assert set(d.metrics) == {f"{s}_{m}" for s in ("train", "val", "test")
                              for m in ("accuracy", "auroc", "dprime", "ece")}
    mid = 0.5 * (d.pos_mean + d.neg_mean)
    # ECE of the Gaussian calibration the monitor uses, recomputed by hand on test
    slope = (d.pos_mean - d.neg_mean) / d.spread**2
    t = np.r_[tp @ u, tn @ u]
    y = np.r_[np.ones(len(tp)), np.zeros(len(tn))]
    prob = 1 / (1 + np.exp(-slope * (t - mid)))
    bins = np.minimum((prob * 10).astype(int), 9)
    ece = sum((bins == b).sum() * abs(prob[bins == b].mean() - y[bins == b].mean()) for b in range(10) if (bins == b).any())
    assert d.metrics["test_ece"] == pytest.approx(ece / len(t), abs=1e-6)
    assert d.metrics["test_accuracy"] == pytest.approx(((tp @ u > mid).sum() + (tn @ u < mid).sum()) / 240, abs=1e-3)
    assert d.metrics["val_auroc"] > 0.8
    prov = d.provenance
    assert (prov.method, prov.layer, prov.concept) == ("lda", 3, "toy")
    assert prov.params["shrinkage"] == 0.1 and prov.params["paired"] is False
    assert dict(prov.split_sizes) == {"train": 800, "val": 200, "test": 240}
    assert fit_direction("mean_diff", pos, neg, base=base(), resid_norm=7.5).resid_norm == 7.5


@pytest.mark.parametrize("method", ["mean_diff", "logistic"])
def test_fit_direction_accepts_float16(method: str) -> None:
    pos, neg, _ = planted(seed=14, n=500)
    half = fit_direction(method, torch.as_tensor(pos, dtype=torch.float16),
                         np.asarray(neg, dtype=np.float16), base=base())
    full = fit_direction(method, pos, neg, base=base())
    assert half.cosine(full) > 0.999


def test_fit_direction_errors() -> None:
    pos, neg, _ = planted(seed=15, n=20)
    with pytest.raises(GnomonError, match="mean_diff, pca, logistic, lda, ccs, leace"):
        fit_direction("svm", pos, neg, base=base())
    with pytest.raises(GnomonError, match="negative class 'no' is empty"):
        fit_direction("mean_diff", pos, neg[:0], base=base())
    with pytest.raises(GnomonError, match="positive class 'yes' is empty in the val split"):
        fit_direction("mean_diff", pos, neg, base=base(), eval_sets={"val": (pos[:0], neg)})
    with pytest.raises(GnomonError, match="width"):
        fit_direction("mean_diff", pos, neg[:, :-1], base=base())
    with pytest.raises(GnomonError, match="hidden_size"):
        fit_direction("mean_diff", pos, neg, base=base(D + 1))
    with pytest.raises(GnomonError, match="width"):
        fit_direction("mean_diff", pos, neg, base=base(), eval_sets={"val": (pos[:, :8], neg[:, :8])})
    with pytest.raises(GnomonError, match="does not take parameter"):
        fit_direction("mean_diff", pos, neg, base=base(), shrinkage=0.5)
    with pytest.raises(GnomonError, match="NaN"):
        fit_direction("mean_diff", np.full_like(pos, np.nan), neg, base=base())
    with pytest.raises(GnomonError, match="as many"):
        fit_direction("pca", pos, neg[:10], base=base(), paired=True)


def test_leace_direction_round_trips_with_extras(tmp_path: Path) -> None:
    pos, neg, _ = planted(seed=16, n=100)
    d = fit_direction("leace", pos, neg, base=base())
    back = Direction.load(d.save(tmp_path / "leace.safetensors"))
    assert back == d and set(back.extras) == {"leace_u", "leace_v", "leace_mean"}


# ---- metrics -----------------------------------------------------------------------
def test_auroc_extremes_and_ties() -> None:
    rng = np.random.default_rng(17)
    a = rng.normal(size=50)
    assert M.auroc(a + 100, a) == 1.0
    assert M.auroc(a, a + 100) == 0.0
    assert M.auroc(a, a) == 0.5
    assert M.auroc(np.zeros(5), np.zeros(7)) == 0.5
    assert M.auroc(np.array([1.0, 2.0]), np.array([1.0])) == 0.75  # one win, one tie


def test_auroc_matches_sklearn() -> None:
    skm = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(18)
    p, n = np.round(rng.normal(0.5, 1, 300), 1), np.round(rng.normal(0, 1, 200), 1)  # many ties
    ref = skm.roc_auc_score(np.r_[np.ones(300), np.zeros(200)], np.r_[p, n])
    assert M.auroc(p, n) == pytest.approx(ref, abs=1e-12)


def test_accuracy_and_dprime() -> None:
    p, n = np.array([1.0, 2.0, 3.0, 0.0]), np.array([-1.0, 0.0, 0.5])
    assert M.accuracy(p, n, threshold=0.0) == pytest.approx((3 + 1 + 0.5 + 0.5) / 7)
    assert M.dprime(p, n) == pytest.approx((1.5 - (-1 / 6)) / math.sqrt((np.var(p, ddof=1) + np.var(n, ddof=1)) / 2))
    assert M.dprime(np.ones(3), np.zeros(3)) == math.inf
    with pytest.raises(GnomonError, match="positive class has no rows"):
        M.auroc(np.array([]), n)


def test_ccs_closed_form_gradient_equals_autograd() -> None:
    """CCS trains with its gradient written out; it must be autograd's gradient of the loss."""
    import torch

    from pipeline.fit.ccs import _ccs_grad, ccs_loss

    g = torch.Generator().manual_seed(0)
    n, d, r = 40, 24, 5
    x = torch.randn(2 * n, d, generator=g)
    theta = (torch.randn(d, r, generator=g) / 5).requires_grad_(True)
    bias = (torch.randn(r, generator=g) * 0.3).requires_grad_(True)
    p = torch.sigmoid(x @ theta + bias)
    ccs_loss(p[:n], p[n:]).sum().backward()
    gt, gb = _ccs_grad(x, x.T.contiguous(), theta.detach(), bias.detach(), n)
    assert theta.grad is not None and bias.grad is not None
    assert float(theta.grad.abs().max()) > 1e-3
    torch.testing.assert_close(gt, theta.grad, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(gb, bias.grad, rtol=1e-5, atol=1e-7)
