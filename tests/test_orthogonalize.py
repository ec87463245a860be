"""Weight orthogonalization equals run-time ablation of every writer, never mutates the
source model, and round-trips through a Hugging Face directory."""

from __future__ import annotations

import json

import pytest
import torch

from pipeline.direction import Direction, Provenance
from pipeline.models import load_model
from pipeline.orthogonalize import LOGIT_ATOL, orthogonalize, save_orthogonalized
from pipeline.steer import ablate, ablate_writers, encode_prompts
from pipeline.types import GnomonError

PROMPTS = ["hello world", "hi", "orthogonal weights"]


def direction_for(lm, layer=2, seed=0):
    v = torch.randn(lm.hidden_size, generator=torch.Generator().manual_seed(seed))
    prov = Provenance.minimal(lm.hidden_size, layer=layer, model_id=lm.model_id,
                              fingerprint=lm.fingerprint, concept="toy", method="mean_diff")
    return Direction(vector=v, provenance=prov)


def logits(model, enc):
    with torch.inference_mode():
        return model(**enc).logits


@pytest.mark.parametrize("family", ["llama", "gpt2", "gpt_neox"])
def test_orthogonalized_equals_runtime_ablation(family):
    lm = load_model(f"tiny:{family}")
    d = direction_for(lm)
    enc = encode_prompts(lm, PROMPTS)
    state = {k: v.clone() for k, v in lm.model.state_dict().items()}
    base = logits(lm.model, enc)
    new = orthogonalize(lm, d)
    orth = logits(new.model, enc)
    with ablate_writers(lm, d):
        runtime = logits(lm.model, enc)
    torch.testing.assert_close(orth, runtime, atol=LOGIT_ATOL, rtol=0)
    assert (orth - base).abs().max() > 100 * LOGIT_ATOL  # the edit matters
    # The source model is untouched and the copy has its own identity.
    assert all(torch.equal(v, lm.model.state_dict()[k]) for k, v in state.items())
    assert new.fingerprint != lm.fingerprint and new.model is not lm.model
    # No writer can write along u any more.
    for _layer, _name, mod in new.adapter.writers(new.model):
        w = mod.weight.detach()
        along = w @ d.unit if (isinstance(mod, torch.nn.Embedding) or new.adapter.conv1d_writers) else d.unit @ w
        assert along.abs().max() < 1e-5
    # Ablating every block output coincides for parallel-residual blocks only (see module doc).
    with ablate(lm, d, layers=range(lm.num_layers + 1)):
        blocks = logits(lm.model, enc)
    if family == "gpt_neox":
        torch.testing.assert_close(orth, blocks, atol=LOGIT_ATOL, rtol=0)


def test_tied_embeddings_are_untied_and_unembedding_kept():
    lm = load_model("tiny:gpt2")
    assert lm.model.lm_head.weight is lm.model.get_input_embeddings().weight
    new = orthogonalize(lm, direction_for(lm))
    assert new.model.lm_head.weight is not new.model.get_input_embeddings().weight
    torch.testing.assert_close(new.model.lm_head.weight, lm.model.lm_head.weight, atol=0, rtol=0)
    assert lm.model.lm_head.weight is lm.model.get_input_embeddings().weight  # source still tied
    assert new.extra["orthogonalized"]["untied_embeddings"] is True


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_save_and_reload(tmp_path, family):
    lm = load_model(f"tiny:{family}")
    d = direction_for(lm, layer=3)
    out = save_orthogonalized(lm, d, tmp_path / "orth", ref="toy@best")
    meta = json.loads((out / "gnomon.json").read_text())
    assert meta["source"]["fingerprint"] == lm.fingerprint
    assert meta["direction"] == {"ref": "toy@best", "concept": "toy", "layer": 3, "method": "mean_diff",
                                 "fingerprint": lm.fingerprint, "positive": "", "negative": ""}
    again = load_model(str(out))
    assert again.fingerprint == meta["fingerprint"] != lm.fingerprint
    enc = encode_prompts(lm, PROMPTS)
    torch.testing.assert_close(logits(again.model, enc), logits(orthogonalize(lm, d).model, enc),
                               atol=1e-6, rtol=0)
    with pytest.raises(GnomonError, match="not empty"):
        save_orthogonalized(lm, d, out)


def test_refuses_post_norm_and_foreign_directions():
    bert = load_model("tiny:bert")
    with pytest.raises(GnomonError, match="pre-norm"):
        orthogonalize(bert, direction_for(bert))
    lm = load_model("tiny:llama")
    foreign = Direction(vector=torch.ones(lm.hidden_size),
                        provenance=Provenance.minimal(lm.hidden_size, layer=1, fingerprint="f" * 32))
    with pytest.raises(GnomonError, match="force"):
        orthogonalize(lm, foreign)
    assert orthogonalize(lm, foreign, force=True).fingerprint != lm.fingerprint


def test_cli_orthogonalize(tmp_path, capsys):
    from jobs.cli import main

    lm = load_model("tiny:llama")
    path = direction_for(lm).save(tmp_path / "d.safetensors")
    assert main(["orthogonalize", str(path), "--out", str(tmp_path / "o")]) == 0
    assert "wrote" in capsys.readouterr().out
    again = load_model(str(tmp_path / "o"))
    assert again.fingerprint == json.loads((tmp_path / "o" / "gnomon.json").read_text())["fingerprint"]
    assert main(["orthogonalize", str(path), "--out", str(tmp_path / "o")]) == 2  # refuses to overwrite


def test_cli_orthogonalize_records_the_version_writes_where_asked_with_plain_modes(
        catalog_home, tmp_path, monkeypatch, capsys):
    import os
    import stat

    from catalog import Catalog
    from jobs.cli import main

    lm = load_model("tiny:llama")
    cat = Catalog(home=catalog_home)
    rec = cat.register(direction_for(lm), set_best=False)
    cat.set_alias(rec.ref, "prod")
    work = tmp_path / "elsewhere"
    work.mkdir()
    monkeypatch.chdir(work)
    assert main(["--home", str(catalog_home), "orthogonalize", "toy@prod", "--out", "edited/"]) == 0
    assert f"toy@prod = {rec.ref}" in capsys.readouterr().out
    out = work / "edited"
    meta = json.loads((out / "gnomon.json").read_text())
    assert meta["direction"]["ref"] == rec.ref  # the version, not the alias that may move
    umask = os.umask(0)
    os.umask(umask)
    for f in out.iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o666 & ~umask, f.name
