"""Cross-version maths: cosine matrix, CKA invariances, transfer's diagonal, drift r."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.fleet_compare import (
    LayerData,
    cka_matrix,
    correspondence,
    cosine_matrix,
    drift_points,
    drift_summary,
    linear_cka,
    mean_diff,
    pearson,
    score,
    screening_auroc,
    transfer_matrix,
)
from pipeline.types import GnomonError


def _data(rng: np.random.Generator, n: int = 160, d: int = 8, shift: float = 3.0,
          axis: np.ndarray | None = None) -> LayerData:
    axis = np.eye(d)[0] if axis is None else axis
    y = np.arange(n) % 2 == 0
    x = rng.normal(size=(n, d)) + np.where(y[:, None], shift / 2, -shift / 2) * axis
    split = np.array(["train"] * 4 + ["val", "val", "test", "test"])[np.arange(n) % 8]
    return LayerData(ids=[f"e{i:03d}" for i in range(n)], x=x, is_pos=y, split=split)


@settings(max_examples=25, deadline=None)
@given(st.integers(2, 6), st.integers(2, 10), st.integers(0, 10_000))
def test_cosine_matrix_is_symmetric_with_unit_diagonal(k: int, d: int, seed: int) -> None:
    v = np.random.default_rng(seed).normal(size=(k, d)) * 10 ** np.random.default_rng(seed).uniform(-3, 3)
    c = cosine_matrix(v)
    assert np.array_equal(c, c.T)
    np.testing.assert_array_equal(np.diag(c), 1.0)
    assert np.all(np.abs(c) <= 1.0)
    a, b = v[0] / np.linalg.norm(v[0]), v[1] / np.linalg.norm(v[1])
    assert c[0, 1] == pytest.approx(a @ b, abs=1e-12)


def test_cosine_matrix_refuses_zero_vector() -> None:
    with pytest.raises(GnomonError, match="zero vector"):
        cosine_matrix(np.array([[1.0, 0.0], [0.0, 0.0]]))


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 10_000), st.floats(0.1, 100.0))
def test_cka_is_one_with_itself_and_invariant_to_rotation_and_scale(seed: int, scale: float) -> None:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(40, 6)) @ rng.normal(size=(6, 6))
    q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-9)
    y = rng.normal(size=(40, 5))
    base = linear_cka(x, y)
    assert linear_cka(scale * x @ q, y) == pytest.approx(base, abs=1e-9)
    assert linear_cka(x, y @ np.linalg.qr(rng.normal(size=(5, 5)))[0] * 3.0) == pytest.approx(base, abs=1e-9)
    # Not invariant to a non-isotropic stretch (so the test can tell CKA from a constant).
    stretched = x * np.array([100.0, 1, 1, 1, 1, 1])
    assert abs(linear_cka(stretched, x) - 1.0) > 1e-3


def test_cka_of_unrelated_data_is_low_and_matrix_finds_the_copy() -> None:
    rng = np.random.default_rng(0)
    a = [rng.normal(size=(200, 8)) for _ in range(3)]
    rot = np.linalg.qr(rng.normal(size=(8, 8)))[0]
    b = [rng.normal(size=(200, 5)), a[2] @ rot + 0.1 * rng.normal(size=(200, 8)), rng.normal(size=(200, 4))]
    m = cka_matrix(a, b)
    assert m.shape == (3, 3)
    assert m[2, 1] > 0.9 and m[0, 0] < 0.2
    assert correspondence(m, [0, 1, 2], [10, 11, 12])[2] == (2, 11, pytest.approx(m[2, 1]))
    with pytest.raises(GnomonError, match="same n examples"):
        linear_cka(a[0], a[0][:10])


def test_transfer_between_identical_checkpoints_equals_self_accuracy() -> None:
    rng = np.random.default_rng(1)
    a = _data(rng)
    same = LayerData(ids=a.ids, x=a.x.copy(), is_pos=a.is_pos, split=a.split)
    other = _data(rng, axis=np.eye(8)[1])  # the concept lives on another axis
    t = transfer_matrix([a, same, other], ["a", "same", "other"])
    self_acc = score(mean_diff(a), a)["accuracy"]
    assert t.accuracy[0, 0] == self_acc and t.accuracy[0, 1] == self_acc and t.accuracy[1, 0] == self_acc
    assert self_acc > 0.75
    assert t.accuracy[0, 2] < 0.7 and t.accuracy[2, 2] > 0.75   # a's direction does not read other's axis


def test_pearson_and_planted_drift() -> None:
    rng = np.random.default_rng(2)
    act = rng.normal(size=12)
    beh = 0.5 * act + 0.1 * rng.normal(size=12)
    expected = np.corrcoef(act, beh)[0, 1]
    rows = [(f"v{i}", "skew" if i < 6 else "ctl", i % 6, 1.0 + a, 0.2 + b) for i, (a, b) in enumerate(zip(act, beh))]
    s = drift_summary(drift_points(1.0, 0.2, rows))
    assert s["pearson_r"] == pytest.approx(expected, abs=1e-12)
    assert s["series"]["skew"]["activation_shift"] == pytest.approx(list(act[:6]))
    assert pearson([1, 2, 3], [2, 2, 2]) != pearson([1, 2, 3], [2, 2, 2])  # NaN for a constant side
    with pytest.raises(GnomonError, match="at least 3"):
        drift_summary(drift_points(0, 0, rows[:2]))


def test_screening_auroc_orientation() -> None:
    skewed, control = np.array([-3.0, -2.0, -2.5]), np.array([0.0, 0.5, -0.1])
    assert screening_auroc(skewed, control, sign=-1.0) == 1.0
    assert screening_auroc(skewed, control, sign=1.0) == 0.0
