"""The server's reference cache: an alias is resolved again after its time to live, a moved
alias reaches the running server, and one still on the same version is not downloaded again."""

from __future__ import annotations

import shutil

import pytest
import torch

from pipeline.direction import Direction, Provenance

MODEL = "tiny:llama"


def _dir(lm, seed: int) -> Direction:
    prov = Provenance(model_id=lm.model_id, revision="main", fingerprint=lm.fingerprint,
                      hidden_size=lm.hidden_size, layer=seed, concept="mood", positive="yes", negative="no",
                      method="mean_diff", position="last")
    vec = torch.randn(lm.hidden_size, generator=torch.Generator().manual_seed(seed))
    return Direction(vector=vec, provenance=prov, pos_mean=1.5, neg_mean=-0.5, spread=0.7, resid_norm=4.0)


def test_an_alias_is_reloaded_only_when_it_moves(tmp_path, monkeypatch, mlflow_template, tiny_models):
    pytest.importorskip("fastapi")
    from catalog import Catalog
    from jobs.serve.resolve import Resolver

    shutil.copyfile(mlflow_template, tmp_path / "mlflow.db")
    monkeypatch.setenv("GNOMON_HOME", str(tmp_path))
    lm = tiny_models(MODEL)
    cat = Catalog(home=tmp_path)
    first, second = (cat.register(_dir(lm, s), set_best=False) for s in (1, 2))
    cat.set_alias(first.ref, "prod")
    res = Resolver(lm, None, MODEL, fluency=False, alias_ttl_s=0.0)     # every call asks the catalog again
    loads: list[str] = []
    load = Catalog.load_record
    monkeypatch.setattr(Catalog, "load_record", lambda self, rec: loads.append(rec.ref) or load(self, rec))

    rec, d = res.direction("mood@prod")
    assert rec.ref == first.ref and loads == [first.ref]
    rec, again = res.direction("mood@prod")                   # same version: the loaded direction, no download
    assert again is d and loads == [first.ref]
    cat.set_alias(second.ref, "prod")
    rec, moved = res.direction("mood@prod")                   # moved: the new version is loaded
    assert rec.ref == second.ref and loads == [first.ref, second.ref]
    assert moved.layer == 2 and torch.allclose(moved.unit, _dir(lm, 2).unit, atol=1e-6)
    assert res.direction(first.ref)[1] is d                    # the version itself: already loaded
