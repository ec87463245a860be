"""The evasion analysis against cases whose answer is known by construction.

Each case builds a base and a checkpoint as per-layer activation splits by hand (d = 16,
three layers, the monitor at layer 2) and asks :func:`pipeline.evasion.verdict`: the
concept kept in place, its readings shifted along the monitor's direction, a rotation that
keeps a linear readout, an XOR encoding that only an MLP reads, a move to another layer,
an erasure, and a behaviour loss beside a rotation.
"""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.evasion.figures import checkpoint_figures, monitor_from_base
from pipeline.evasion.verdict import verdict

D = 16
SIZES = {"train": 80, "val": 40, "test": 80}


def _split(rng: np.random.Generator, n: int, kind: str, axis: int, sep: float, offset: float) -> tuple[np.ndarray, np.ndarray]:
    pos = rng.normal(size=(n, D))
    neg = rng.normal(size=(n, D))
    if kind == "linear":
        pos[:, axis] += sep / 2 + offset
        neg[:, axis] += -sep / 2 + offset
    elif kind == "xor":   # positives in quadrants 1 and 3 of (axis, axis+1), negatives in 2 and 4: equal means
        s = rng.choice([-1.0, 1.0], size=n)
        pos[:, axis] += 2.5 * s
        pos[:, axis + 1] += 2.5 * s
        s = rng.choice([-1.0, 1.0], size=n)
        neg[:, axis] += 2.5 * s
        neg[:, axis + 1] -= 2.5 * s
    return pos, neg


def _layers(seed: int, spec: dict[int, tuple[str, int, float, float]]) -> dict[int, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """``spec[layer] = (kind, axis, separation, offset)``: kind ``linear``, ``xor`` or ``none``."""
    rng = np.random.default_rng(seed)
    return {layer: {name: _split(rng, n, *spec[layer]) for name, n in SIZES.items()} for layer in sorted(spec)}


BASE = {1: ("none", 0, 0.0, 0.0), 2: ("linear", 0, 4.0, 0.0), 3: ("none", 0, 0.0, 0.0)}


@pytest.fixture(scope="module")
def base_state():
    layers = _layers(0, BASE)
    originals = {k: sp["train"][0].mean(0) - sp["train"][1].mean(0) for k, sp in layers.items()}
    monitor = monitor_from_base(2, layers[2])
    return originals, monitor, checkpoint_figures(layers, originals, monitor, n_boot=200)


def _judge(base_state, spec, behaviour=None):
    originals, monitor, base = base_state
    figs = checkpoint_figures(_layers(1, spec), originals, monitor, n_boot=200)
    return verdict(base, figs, 2, behaviour), figs


def test_the_monitor_reads_the_base(base_state) -> None:
    _, monitor, base = base_state
    assert base[2]["frozen"]["auroc"] > 0.97 and base[2]["linear"]["auroc"] > 0.97
    assert base[2]["frozen"]["flagged_positive"] > 0.9 and base[2]["frozen"]["flagged_negative"] < 0.1
    assert base[1]["linear"]["auroc"] < 0.75 and base[3]["linear"]["auroc"] < 0.75
    assert abs(monitor.threshold) < 0.6    # the classes sit at +-2 along the direction


def test_unchanged_is_not_evaded(base_state) -> None:
    v, figs = _judge(base_state, BASE)
    assert v["headline"] == "not evaded" and v["holds"] == []
    assert figs[2]["angle"] < 15


def test_a_shift_along_the_direction_evades_only_the_threshold(base_state) -> None:
    v, figs = _judge(base_state, {**BASE, 2: ("linear", 0, 4.0, -4.0)})
    assert v["headline"] == "shifted", v
    assert figs[2]["frozen"]["auroc"] > 0.97 and figs[2]["frozen"]["flagged_positive"] < 0.2


def test_a_rotation_keeps_a_linear_readout(base_state) -> None:
    v, figs = _judge(base_state, {**BASE, 2: ("linear", 5, 4.0, 0.0)})
    assert v["headline"] == "rotated", v
    assert figs[2]["frozen"]["auroc"] < 0.65 and figs[2]["linear"]["auroc"] > 0.95
    assert figs[2]["angle"] > 70


def test_an_xor_code_only_an_mlp_reads(base_state) -> None:
    v, figs = _judge(base_state, {**BASE, 2: ("xor", 3, 0.0, 0.0)})
    assert v["headline"] == "nonlinear", v
    assert figs[2]["linear"]["auroc"] < 0.7 < 0.9 < figs[2]["mlp"]["auroc"]
    # LEACE removes the linear information; the XOR code survives it
    assert figs[2]["mlp_after_leace"]["auroc"] > 0.85


def test_a_move_to_another_layer(base_state) -> None:
    v, _ = _judge(base_state, {1: ("none", 0, 0.0, 0.0), 2: ("none", 0, 0.0, 0.0), 3: ("linear", 7, 4.0, 0.0)})
    assert v["headline"] == "moved" and v["why"]["gained_layers"] == [3], v
    assert "evaded" in v["holds"]


def test_an_erasure(base_state) -> None:
    v, _ = _judge(base_state, {k: ("none", 0, 0.0, 0.0) for k in BASE})
    assert v["headline"] == "erased", v


def test_behaviour_loss_is_reported_beside_the_rotation(base_state) -> None:
    v, _ = _judge(base_state, {**BASE, 2: ("linear", 5, 4.0, 0.0)}, {"shift": -0.4, "ci": [-0.6, -0.2]})
    assert v["headline"] == "rotated" and "behaviour lost" in v["holds"]
    kept, _ = _judge(base_state, {**BASE, 2: ("linear", 5, 4.0, 0.0)}, {"shift": -0.1, "ci": [-0.3, 0.1]})
    assert "behaviour lost" not in kept["holds"]


def test_a_one_class_split_is_refused(base_state) -> None:
    from pipeline.types import GnomonError

    originals, monitor, _ = base_state
    layers = _layers(2, BASE)
    layers[2]["val"] = (layers[2]["val"][0], layers[2]["val"][1][:0])
    with pytest.raises(GnomonError, match="val split needs rows of both classes"):
        checkpoint_figures(layers, originals, monitor)
