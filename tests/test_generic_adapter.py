"""The verified generic adapter (probe once per fingerprint, cached), refusals in one line,
and ``gnomon collect --model tiny:<family>`` for every family."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from jobs.cli import main
from pipeline.models import adapter_for, load_model
from pipeline.models.tiny import TINY_FAMILIES, tiny_tokenizer
from pipeline.store import ActivationStore
from pipeline.types import GnomonError


def test_generic_adapter_is_found_verified_and_cached(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.models import generic

    lm = load_model("tiny:starcoder2:2x32", home=home)
    a = lm.adapter
    assert (a.family, a.blocks, a.embedding, a.final_norm, a.verified) == (
        "generic:starcoder2", "layers", "embed_tokens", "norm", True)
    cached = home / "models" / "adapters" / f"{lm.fingerprint}.json"
    assert json.loads(cached.read_text())["adapter"]["blocks"] == "layers"
    # a second load neither probes nor hashes again: the disk cache answers
    generic._CACHE.clear()

    def no_probe(*_a: Any) -> None:
        raise AssertionError("probed twice")

    monkeypatch.setattr(generic, "_probe", no_probe)
    assert adapter_for(lm.model, home, lm.fingerprint) == a
    with pytest.raises(GnomonError, match="probing hidden states.*ablate"):
        from pipeline.orthogonalize import orthogonalize
        from tests.test_families import direction_for

        orthogonalize(lm, direction_for(lm, 1))


def test_generic_adapter_refuses_when_a_layer_does_not_match(home: Path) -> None:
    """A model whose reported hidden states are not its blocks' outputs (two swapped) is
    refused with its type named, not given the nearest guess."""
    from pipeline.models.tiny import tiny_model

    model, _tok = tiny_model("tiny:llama:3x32")
    model.config.model_type = "scrambled"
    forward = model.forward

    def swapped(*args: Any, **kwargs: Any) -> Any:
        out = forward(*args, **kwargs)
        if out.hidden_states is not None:
            hs = list(out.hidden_states)
            hs[1], hs[2] = hs[2], hs[1]
            out.hidden_states = tuple(hs)
        return out

    model.forward = swapped  # type: ignore[method-assign]
    with pytest.raises(GnomonError) as e:
        adapter_for(model, home)
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith("unsupported architecture 'scrambled'") and "matches 0 of 2 inner layers" in msg


def test_encoder_decoder_is_refused_in_one_line(home: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str], small_dataset: Path) -> None:
    import transformers as tf

    tok = tiny_tokenizer()
    t5 = tf.T5ForConditionalGeneration(tf.T5Config(
        vocab_size=len(tok), d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
        pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, decoder_start_token_id=tok.pad_token_id))
    with pytest.raises(GnomonError, match="unsupported architecture 't5': it is an encoder-decoder"):
        adapter_for(t5)
    folder = tmp_path / "t5"
    t5.save_pretrained(folder)
    tok.save_pretrained(folder)
    capsys.readouterr()   # save_pretrained's progress bars
    rc = main(["--home", str(home), "collect", "--model", str(folder), "--dataset", str(small_dataset),
               "--executor", "local", "--json"])
    err = [line for line in capsys.readouterr().err.strip().splitlines()
           if not line.startswith("Loading weights")]         # transformers' progress bar
    assert rc == 2
    assert len(err) == 1 and "encoder-decoder" in err[0] and "'t5'" in err[0]


@pytest.mark.parametrize("family", [f for f in TINY_FAMILIES if f != "llama"])
def test_collect_cli_for_every_family(family: str, home: Path, small_dataset: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    model = f"tiny:{family}:2x32"
    rc = main(["--home", str(home), "collect", "--model", model, "--dataset", str(small_dataset),
               "--executor", "local", "--json"])
    assert rc == 0, capsys.readouterr().err
    lm = load_model(model, home=home)
    rows = [json.loads(line) for line in small_dataset.read_text().splitlines()]
    store = ActivationStore(home)
    for layer in range(lm.num_layers + 1):
        ids, acts = store.read_layer(model, "main", "toy", layer, "last")
        assert sorted(ids) == sorted(r["id"] for r in rows) and acts.shape == (len(rows), 32)
    # the stored row is the model's own hidden state (first example, layer 1, last token)
    ids, acts = store.read_layer(model, "main", "toy", 1, "last")
    first = dict(zip(ids, acts))[rows[0]["id"]]
    enc = lm.tokenizer(rows[0]["text"], return_tensors="pt")
    with torch.inference_mode():
        hs = lm.model(**enc, output_hidden_states=True).hidden_states
    torch.testing.assert_close(torch.from_numpy(first).float(), hs[1][0, -1], atol=2e-3, rtol=1e-2)
