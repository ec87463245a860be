"""Cross-version comparison: cosine matrix and transfer scoring."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from jobs.cli import main
from pipeline.compare import compare, transfer_accuracy
from pipeline.direction import Direction, Provenance
from pipeline.types import GnomonError


def _d(v: list[float], model: str = "m", layer: int = 1) -> Direction:
    return Direction(torch.tensor(v), Provenance.minimal(hidden_size=len(v), layer=layer, model_id=model,
                                                         concept="c", method="mean_diff"),
                     pos_mean=1.0, neg_mean=-1.0)


def test_cosine_matrix_and_errors() -> None:
    c = compare([_d([1, 0, 0]), _d([1, 1, 0], "m2"), _d([0, 0, -2], "m3")])
    assert c.cosine.shape == (3, 3)
    np.testing.assert_allclose(np.diag(c.cosine), 1.0)
    assert c.cosine[0, 1] == pytest.approx(2 ** -0.5) and c.cosine[0, 2] == pytest.approx(0.0)
    assert "m2" in c.labels[1]
    with pytest.raises(GnomonError, match="different hidden sizes"):
        compare([_d([1, 0]), _d([1, 0, 0])])
    with pytest.raises(GnomonError, match="at least two"):
        compare([_d([1, 0])])


def test_transfer_accuracy_recenters_the_threshold() -> None:
    rng = np.random.default_rng(0)
    shift = np.array([5.0, 0.0, 0.0])  # the new checkpoint moved everything along the axis
    pos = rng.normal(size=(200, 3)) + np.array([2.0, 0, 0]) + shift
    neg = rng.normal(size=(200, 3)) - np.array([2.0, 0, 0]) + shift
    out = transfer_accuracy(_d([1, 0, 0]), pos, neg)
    assert out["auroc"] > 0.99 and out["accuracy"] > 0.95


def test_cli_compare_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    _d([1, 0, 0]).save(a)
    _d([0, 1, 0], "other").save(b)
    assert main(["compare", str(a), str(b), "--json"]) == 0
    import json

    out = json.loads(capsys.readouterr().out)
    assert out["cosine"][0][1] == pytest.approx(0.0) and out["cosine"][1][1] == pytest.approx(1.0)
