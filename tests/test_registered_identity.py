"""A registered version's identity is its lineage's: a driver knows it without a load, and a
load agrees with it whatever precision the device loads the weights in."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fleet_tiny import add_version
from pipeline.models import clear_model_cache, load_model, model_identity
from pipeline.models.tiny import tiny_model


@pytest.fixture()
def home(tmp_path: Path) -> Path:
    model, tok = tiny_model("tiny:llama:2x32", seed=3)
    add_version(tmp_path, "v-base", model, tok, "base")
    clear_model_cache()
    return tmp_path


def _lineage(home: Path) -> dict:
    return json.loads((home / "models" / "v-base" / "lineage.json").read_text())


def test_a_registered_version_is_known_before_any_load(home: Path) -> None:
    lin = _lineage(home)
    assert not (home / "models" / "v-base" / "gnomon-fingerprint.json").exists()   # never loaded
    ident = model_identity("v-base", home)
    assert ident is not None
    assert (ident.fingerprint, ident.num_layers, ident.hidden_size) == (lin["fingerprint"], 2, 32)
    assert load_model("v-base", home).fingerprint == ident.fingerprint


def test_the_lineage_wins_over_a_fingerprint_hashed_in_another_precision(home: Path) -> None:
    """A node that loads in bfloat16 (CUDA's "auto") hashes other bytes than the float32 that
    was registered; its recorded fingerprint must not split the version in two."""
    lin = _lineage(home)
    stale = home / "models" / "v-base" / "gnomon-fingerprint.json"
    stale.write_text(json.dumps({"fingerprint": "f" * 32, "num_layers": 2, "hidden_size": 32}))
    assert model_identity("v-base", home).fingerprint == lin["fingerprint"]
    assert load_model("v-base", home).fingerprint == lin["fingerprint"]
    assert json.loads(stale.read_text())["fingerprint"] == lin["fingerprint"]   # rewritten


def test_a_quantized_version_keeps_its_recorded_fingerprint(tmp_path: Path) -> None:
    model, tok = tiny_model("tiny:llama:2x32", seed=4)
    add_version(tmp_path, "v-q", model, tok, "numeric", settings={"quantize": "int8"})
    assert model_identity("v-q", tmp_path) is None   # not from the lineage: the builder records its own
