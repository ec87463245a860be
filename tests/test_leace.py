"""One LEACE eraser object (:class:`pipeline.fit.leace.LeaceEraser`) for fit, steer and the
linearity report: it is a projection (idempotent), a linear probe falls to chance after it, it
round-trips through a saved Direction, and the steering op and the report apply the same map.

(When the three forms were merged, a one-off script checked on random data that the fitted
``leace`` directions, the report's erased splits and erasure probes, and every steering path
were bit-for-bit what the old code produced.)"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.direction import Direction, Provenance
from pipeline.fit import LeaceEraser, LeaceFitter, fit_direction
from pipeline.linearity.erasure import erase_splits
from pipeline.steer import Erase, State
from pipeline.types import GnomonError

D = 24


def _data(seed: int, n: int, classes: int = 2) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    mix = rng.normal(size=(D, D)) / np.sqrt(D) + np.eye(D)                 # correlated noise
    shifts = rng.normal(size=(classes, D)) * 1.5
    return rng.normal(size=(n, D)) @ mix + shifts[y], y


@pytest.mark.parametrize("classes", [2, 3])
def test_the_eraser_is_a_projection(classes: int) -> None:
    x, y = _data(0, 400, classes)
    z = y.astype(np.float64) if classes == 2 else np.eye(classes)[y]
    eraser = LeaceEraser.fit(x, z, dtype=torch.float64)
    assert eraser.rank == classes - 1
    once = eraser(x)
    np.testing.assert_allclose(eraser(once), once, atol=1e-9 * np.abs(x).max())      # P(P(x)) = P(x)
    t = torch.as_tensor(x)
    assert isinstance(once, np.ndarray) and isinstance(eraser(t), torch.Tensor)
    np.testing.assert_array_equal(eraser(t).numpy(), once)                           # arrays and tensors alike
    zc = z.reshape(len(x), -1) - z.reshape(len(x), -1).mean(0)
    assert np.abs((once - once.mean(0)).T @ zc / len(x)).max() < 1e-9                # Cov(x', z) = 0


def test_a_linear_probe_falls_to_chance_after_erasure() -> None:
    lm = pytest.importorskip("sklearn.linear_model")
    x, y = _data(1, 4000)
    (xtr, ytr), (xte, yte) = (x[:2000], y[:2000]), (x[2000:], y[2000:])
    eraser = LeaceEraser.fit(xtr, ytr.astype(np.float64), dtype=torch.float64)
    before = lm.LogisticRegression(max_iter=2000).fit(xtr, ytr).score(xte, yte)
    after = lm.LogisticRegression(max_iter=2000).fit(eraser(xtr), ytr).score(eraser(xte), yte)
    chance = max(yte.mean(), 1 - yte.mean())
    assert before > 0.9 and after <= chance + 0.05


def test_fit_stores_the_eraser_in_the_direction_and_it_round_trips(tmp_path) -> None:
    x, y = _data(2, 300)
    d = fit_direction("leace", x[y == 1], x[y == 0], base=Provenance.minimal(D, layer=1))
    back = Direction.load(d.save(tmp_path / "leace.safetensors"))
    stored = LeaceEraser.from_extras(back.extras)
    assert stored is not None and stored.rank == 1
    fitted = LeaceFitter().update(np.concatenate([x[y == 1], x[y == 0]]),
                                  np.r_[np.ones((y == 1).sum()), np.zeros((y == 0).sum())]).eraser()
    for k, t in fitted.extras().items():
        assert torch.equal(back.extras[k], t)
    probe = torch.as_tensor(x[:50], dtype=torch.float32)
    torch.testing.assert_close(stored(probe), fitted(probe), rtol=0, atol=0)
    assert LeaceEraser.from_extras({}) is None
    x3, y3 = _data(3, 200, 3)
    with pytest.raises(GnomonError, match="rank-1"):
        LeaceEraser.fit(x3, np.eye(3)[y3]).extras()


def test_the_steering_op_and_the_report_apply_the_same_eraser() -> None:
    x, y = _data(4, 260)
    (x, y), (xo, yo) = (x[:200], y[:200]), (x[200:], y[200:])
    eraser = LeaceEraser.fit(x, y.astype(np.float64), dtype=torch.float64)
    (tr, other), rank = erase_splits((x, y), (xo, yo))
    np.testing.assert_array_equal(tr[0], eraser(x))
    np.testing.assert_array_equal(other[0], eraser(xo))
    assert rank == 1
    h = torch.as_tensor(xo, dtype=torch.float64).reshape(3, 20, D)                   # (B, T, D)
    op = Erase(2, eraser)
    torch.testing.assert_close(op(h, State(batch=3)), eraser(h), rtol=0, atol=0)
