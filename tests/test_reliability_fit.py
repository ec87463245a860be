"""Issue 11, fitting: meaningless directions are refused, never registered or aliased."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from catalog import Catalog
from pipeline.direction import Direction, Provenance
from pipeline.fit import FIT_METHODS, fit_direction
from pipeline.fit.ccs import fit_ccs
from pipeline.types import GnomonError

D = 16


def _base() -> Provenance:
    return Provenance.minimal(hidden_size=D, layer=1, concept="toy", positive="a", negative="b")


@pytest.mark.parametrize("method", sorted(FIT_METHODS))
def test_identical_classes_are_refused(method: str) -> None:
    x = np.random.default_rng(0).standard_normal((12, D))
    with pytest.raises(GnomonError, match="indistinguishable"):
        fit_direction(method, x, x.copy(), base=_base(), paired=True)


@pytest.mark.parametrize("method", sorted(FIT_METHODS))
def test_one_row_per_class_is_refused(method: str) -> None:
    rng = np.random.default_rng(1)
    with pytest.raises(GnomonError, match="at least 2"):
        fit_direction(method, rng.standard_normal((1, D)), rng.standard_normal((1, D)), base=_base(), paired=True)


@pytest.mark.parametrize("method", ["pca", "ccs", "mean_diff", "logistic"])
def test_direction_at_chance_on_validation_is_refused(method: str) -> None:
    rng = np.random.default_rng(2)
    tp, tn = rng.standard_normal((20, D)), rng.standard_normal((20, D))
    vp = rng.standard_normal((30, D))
    kw = {"epochs": 20} if method == "ccs" else {}
    with pytest.raises(GnomonError, match="at chance"):
        # validation classes are the same rows: every direction ties them (AUROC 0.5)
        fit_direction(method, tp, tn, base=_base(), paired=True, eval_sets={"val": (vp, vp.copy())}, **kw)


def test_ccs_refuses_constant_input() -> None:
    x = np.ones((8, D))
    with pytest.raises(GnomonError, match="nothing to fit"):
        fit_ccs(x, x + 0.0, paired=True, epochs=5)


def test_below_chance_direction_never_gets_an_alias(catalog_home: Path) -> None:
    cat = Catalog(home=catalog_home, retries=1)
    prov = Provenance(model_id="m", revision="main", fingerprint="f" * 16, hidden_size=D, layer=1,
                      concept="toy", positive="a", negative="b", method="pca", dataset="toy",
                      dataset_hash="h" * 16, split_sizes={"train": 140, "val": 30, "test": 30})
    bad = Direction(vector=torch.ones(D), provenance=prov, pos_mean=1.0, neg_mean=0.0,
                    metrics={"val_auroc": 0.45})
    rec = cat.register(bad)
    assert "best" not in cat.resolve(rec.ref).aliases
    # another fit (a different method): the same provenance would be the same catalog entry
    good = Direction(vector=torch.arange(1.0, D + 1), provenance=dataclasses.replace(prov, method="mean_diff"),
                     pos_mean=1.0, neg_mean=0.0,
                     metrics={"val_auroc": 0.95})
    rec2 = cat.register(good)
    assert cat.resolve("toy@best").version == rec2.version


def test_ablation_probe_does_not_turn_errors_into_chance(tiny_lm: object) -> None:
    from pipeline.evaluate import ablation_probe

    prov = Provenance.minimal(hidden_size=32, layer=1, concept="toy", positive="a", negative="b")
    d = Direction(vector=torch.ones(32), provenance=prov, pos_mean=1.0, neg_mean=-1.0, spread=0.5, resid_norm=3.0)
    test = (["good day", "fine film", "great sun"], ["bad day", "awful film", "cold rain"])
    with pytest.raises(GnomonError, match="at least 2"):  # too few rows: an error, not "probe at chance"
        ablation_probe(tiny_lm, d, (["nice"], ["nasty"]), test, force=True)


@pytest.mark.parametrize("method, min_cos", [("lda", 0.95), ("logistic", 0.9)])
def test_anisotropic_planted_direction_separates_probes_from_mean_diff(method: str, min_cos: float) -> None:
    """Class means differ along 3 e0 + e1, but e0 carries huge shared noise: the Bayes-optimal
    direction is Sigma^-1 (mu+ - mu-) ~ e1. LDA and logistic find it; mean_diff cannot; a
    probe mapping its weight back with w*sd instead of w/sd would point at e0."""
    rng = np.random.default_rng(0)
    n, d = 400, D
    sd = np.ones(d)
    sd[0] = 30.0
    shift = np.zeros(d)
    shift[:2] = (3.0, 1.0)
    pos = rng.standard_normal((n, d)) * sd + shift
    neg = rng.standard_normal((n, d)) * sd - shift
    e1 = np.eye(d)[1]

    def cos(m: str) -> float:
        v = fit_direction(m, pos, neg, base=_base()).unit.double().numpy()
        return float(v @ e1)

    assert cos(method) > min_cos
    assert cos("mean_diff") < 0.6 < min_cos
