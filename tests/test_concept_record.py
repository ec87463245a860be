"""One record of what a concept is (``pipeline.concepts.record``): labels, neutral prompts,
readout words and scorer, for a shipped concept and for a user-added one that declares its
readout in its dataset metadata or in ``<name>.readout.json``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.concepts.record import concept_record
from pipeline.types import GnomonError
from tests.conftest import write_dataset


def test_a_shipped_concept_knows_itself(home: Path) -> None:
    from pipeline.concepts.behaviour import CONCEPT_WORDS
    from pipeline.datasets import load_dataset, neutral_prompts

    c = concept_record("sentiment", home)
    assert c.labels == load_dataset("sentiment").default_contrast == ("positive", "negative")
    assert c.neutral_prompts == tuple(neutral_prompts("sentiment")) and len(c.prompts(3)) == 3
    assert c.words == CONCEPT_WORDS["sentiment"] and c.scorer == "vader" and c.readout_source == "shipped"


def test_a_user_concept_declares_its_readout_in_its_dataset_metadata(home: Path, tmp_path: Path) -> None:
    from pipeline.concepts.behaviour import declare_readout
    from pipeline.datasets import register_dataset

    data = write_dataset(tmp_path / "toy.jsonl", n_pairs=10)
    labels = sorted({json.loads(line)["label"] for line in data.read_text().splitlines()})
    register_dataset(data, "mine", home, positive=labels[1], negative=labels[0])
    meta = home / "concepts" / "mine.contrast.json"
    c = concept_record("mine", home)
    assert c.labels == (labels[1], labels[0]) and c.words is None and c.scorer is None
    with pytest.raises(GnomonError, match="no neutral prompts"):
        c.prompts()
    with pytest.raises(GnomonError, match="declares no behavioural readout"):
        c.require_words()
    # words and a scorer beside the labels in the dataset's metadata
    meta.write_text(json.dumps({**json.loads(meta.read_text()), "positive_words": ["up"], "negative_words": ["down"],
                                "scorer": "vader"}))
    (home / "concepts" / "mine_neutral.txt").write_text("one\n\ntwo\n")
    c = concept_record("mine", home)
    assert c.words == (("up",), ("down",)) and c.scorer == "vader" and c.readout_source == str(meta)
    assert c.neutral_prompts == ("one", "two") and c.labels == (labels[1], labels[0])
    # registering the same data again (new contrast) keeps the declared readout
    register_dataset(data, "mine", home, positive=labels[0], negative=labels[1])
    c = concept_record("mine", home)
    assert c.labels == (labels[0], labels[1]) and c.words == (("up",), ("down",))
    # the readout file (`concepts add --words-...`) still works, and is the readout when there is one
    declare_readout("mine", home, ("hi",), ("lo",))
    c = concept_record("mine", home)
    assert c.words == (("hi",), ("lo",)) and c.scorer is None


def test_the_record_travels_to_workers(home: Path) -> None:
    import pickle

    c = concept_record("truth", home)
    assert pickle.loads(pickle.dumps(c)) == c
