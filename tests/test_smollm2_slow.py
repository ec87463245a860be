"""The bundled SmolLM2-135M-Instruct, end to end (slow: minutes on 2 CPU cores).

- The converted-weights cache (safetensors written by ``load_model`` on first use) gives
  the same logits as transformers loading the GGUF file itself.
- Collected block outputs match Hugging Face's ``output_hidden_states`` (batched and
  left-padded vs one prompt at a time), and layer 30 plus the final norm is HF's last
  hidden state (Llama-style models apply the norm to that entry only).
- Issue 3's must-show: every shipped concept is linearly separable. A difference-of-means
  direction, fitted on ``train`` with the layer picked on ``val``, classifies ``test`` with
  accuracy >= 0.8 (the check and its table live in ``bench/separability.py``).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from pipeline.concepts import CONCEPTS

pytestmark = pytest.mark.slow

PROMPTS = [
    "The capital of France is",
    "I thought the concert was lovely, and",
    "Ma sœur a acheté un livre hier.",
    "<|im_start|>user\nHow do I bake bread?<|im_end|>\n<|im_start|>assistant\n",
    "2 + 2 =",
]


@pytest.fixture(scope="module")
def smollm2_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh gnomon home; the first ``load_model`` in it converts the GGUF (~15 s)."""
    return tmp_path_factory.mktemp("smollm2-home")


@pytest.fixture(scope="module")
def smollm2(smollm2_home: Path) -> Any:
    from pipeline.models import load_model

    return load_model("smollm2", home=smollm2_home)


def _bench(name: str) -> Any:
    path = Path(__file__).resolve().parents[1] / "bench" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(mod)
    return mod


def test_cached_weights_give_the_gguf_logits(smollm2: Any) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pipeline.models import bundled_gguf

    assert smollm2.extra["source"] == "bundled" and smollm2.num_layers == 30
    gguf = bundled_gguf()
    ref = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32).eval()
    ref_tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    with torch.no_grad():
        for prompt in PROMPTS:
            ids = smollm2.tokenizer(prompt, return_tensors="pt")["input_ids"]
            assert ids.tolist() == ref_tok(prompt, return_tensors="pt")["input_ids"].tolist(), prompt
            got = smollm2.model(input_ids=ids).logits                     # (1, T, V)
            want = ref(input_ids=ids).logits                              # (1, T, V)
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-4)
            assert (got[0, -1].argmax() == want[0, -1].argmax()).item()


def test_collected_layers_match_hf_hidden_states(smollm2: Any) -> None:
    """Batched, left-padded, early-stopped collection == HF's unbatched hidden states;
    layer 30 needs the final norm to match HF's last entry."""
    from pipeline.collect import collect

    layers = [0, 1, 15, 29, 30]
    ids = [f"p{i}" for i in range(len(PROMPTS))]
    rows = collect(smollm2, ids, PROMPTS, layers=layers, positions=["last"], batch_size=8)
    model, tok = smollm2.model, smollm2.tokenizer
    with torch.no_grad():
        for layer in layers:
            ex, _, _, acts = rows[layer].arrays()
            by_id = dict(zip(ex, torch.from_numpy(acts)))
            for pid, prompt in zip(ids, PROMPTS):
                enc = tok(prompt, return_tensors="pt")
                hs = model(**enc, output_hidden_states=True).hidden_states
                assert len(hs) == 31
                got = by_id[pid]                                          # (D,)
                if layer == 30:
                    # HF's last entry is after model.norm; gnomon reads the block output.
                    assert not torch.allclose(got, hs[30][0, -1], atol=1e-2)
                    got = model.model.norm(got[None])[0]
                torch.testing.assert_close(got, hs[layer][0, -1], rtol=1e-4, atol=2e-3)


@pytest.fixture(scope="module")
def separability(smollm2: Any, smollm2_home: Path) -> tuple[Any, list[Any]]:
    """Collect all shipped concepts (every layer, last+mean) and score every layer once."""
    sep = _bench("separability")
    concepts = list(CONCEPTS)
    sep.collect_concepts(smollm2_home, concepts, "local")
    scores = sep.score_layers(smollm2_home, concepts, smollm2.fingerprint)
    print("\n" + sep.table(scores, concepts))
    return sep, scores


# truth is the hardest shipped concept for a 135M model (measured 2026-11-25): test accuracy
# 0.81 (AUROC 0.87) at the val-best layer 16/last, close to the 0.8 bar; the data favours
# geography, where one linear direction exists at this size (pipeline/concepts/truth.py).


@pytest.mark.parametrize("concept", CONCEPTS)
def test_shipped_concept_is_linearly_separable(separability: tuple[Any, list[Any]], concept: str) -> None:
    """Difference of means on train, layer (and position) picked on val, >= 0.8 on test."""
    sep, scores = separability
    assert len(scores) == len(CONCEPTS) * 31 * 2
    best = sep.best_by_val(scores, concept)
    assert best.n_test >= 60, best
    # test rows played no part in choosing the layer, so this is an unbiased estimate
    assert best.test_accuracy >= 0.8, (f"{concept}: val-best layer {best.layer}/{best.position} "
                                       f"test accuracy {best.test_accuracy:.3f}")
