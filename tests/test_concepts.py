"""Shipped concepts (content, reproducibility) and the ``gnomon concepts`` CLI."""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from jobs.cli import main
from pipeline.concepts import CONCEPTS
from pipeline.concepts.generate import main as generate_main
from pipeline.datasets import (
    list_concepts,
    load_dataset,
    neutral_prompts,
    validate_contrast,
)
from pipeline.types import GnomonError

NAMES = list(CONCEPTS)


@pytest.mark.parametrize("name", NAMES)
def test_shipped_concept_is_valid_and_paired(name: str) -> None:
    ds = load_dataset(name)
    info = CONCEPTS[name]
    assert ds.default_contrast == (info.positive, info.negative)
    validate_contrast(ds, *ds.default_contrast)
    assert set(ds.labels) == {info.positive, info.negative}
    assert ds.pairs_count >= 200
    rows = ds.table.to_pylist()
    assert all(r["pair"] is not None for r in rows)  # every row belongs to a complete pair
    assert ds.label_counts()[info.positive] == ds.label_counts()[info.negative] == ds.pairs_count
    assert all(ds.split_counts()[s] > 0 for s in ("train", "val", "test"))
    texts = ds.texts()
    assert len(set(texts)) == len(texts)
    assert max(len(t.split()) for t in texts) < 25


# language (translations) and formality (rephrasings) change most words by design.
@pytest.mark.parametrize("name", [n for n in NAMES if n not in ("language", "formality")])
def test_pairs_share_a_template(name: str) -> None:
    """The two sides of a pair share most words: the contrast is the concept, not the topic."""
    by_pair: dict[str, list[str]] = defaultdict(list)
    for r in load_dataset(name).table.to_pylist():
        by_pair[r["pair"]].append(r["text"])
    overlaps = []
    for a, b in by_pair.values():
        wa, wb = set(re.findall(r"\w+", a.lower())), set(re.findall(r"\w+", b.lower()))
        overlaps.append(len(wa & wb) / len(wa | wb))
    assert sum(overlaps) / len(overlaps) > 0.3


def test_splits_hold_out_whole_groups() -> None:
    """honesty: the same scenario never appears in two splits (no content leakage)."""
    from pipeline.concepts.honesty import SCENARIOS

    split_of: dict[str, set[str]] = defaultdict(set)
    for r in load_dataset("honesty").table.to_pylist():
        for truth, lie in SCENARIOS:
            if r["text"].endswith((f" {truth}.", f" {lie}.")):
                split_of[truth].add(r["split"])
    assert len(split_of) >= 30
    assert all(len(s) == 1 for s in split_of.values())


def test_truth_statements_are_true_and_false() -> None:
    """Recompute every templated fact (sums, capitals, cities) against its label; the
    hand-written facts must come from the FACTS table with the right completion."""
    from pipeline.concepts.truth import CAPITALS, CITIES, FACTS

    capital = dict(CAPITALS)
    country_of = {city: country for country, city in CAPITALS} | dict(CITIES)
    facts = {t.format(yes): True for t, yes, _ in FACTS} | {t.format(no): False for t, _, no in FACTS}
    patterns = [
        (r"^(\d) \+ (\d) = (\d+)\.$", lambda a, b, c: int(a) + int(b) == int(c)),
        (r"^The capital (?:city )?of (.+) is (.+)\.$", lambda country, city: capital[country] == city),
        (r"^The city of (.+) is (?:located )?in (.+)\.$", lambda city, country: country_of[city] == country),
    ]
    families: Counter[str] = Counter()
    for r in load_dataset("truth").table.to_pylist():
        text, truth = r["text"], r["label"] == "true"
        for pattern, holds in patterns:
            m = re.match(pattern, text)
            if m:
                assert holds(*m.groups()) == truth, text
                families[pattern] += 1
                break
        else:
            assert facts[text] == truth, text
            families["facts"] += 1
    assert len(families) == 4 and min(families.values()) >= 20, families


def test_language_pairs_are_english_and_french() -> None:
    french_words = {"le", "la", "un", "une", "est", "sur", "je", "nous", "il", "elle", "dans", "vois"}
    for r in load_dataset("language").table.to_pylist():
        words = set(re.findall(r"[a-zà-ÿ]+", r["text"].lower()))
        assert bool(words & french_words) == (r["label"] == "french"), r["text"]


@pytest.mark.parametrize("name", NAMES)
def test_neutral_prompts(name: str) -> None:
    prompts = neutral_prompts(name)
    assert len(prompts) >= 30 and len(set(prompts)) == len(prompts)
    assert not set(prompts) & set(load_dataset(name).texts())


def test_neutral_prompts_unknown() -> None:
    with pytest.raises(GnomonError, match="no neutral prompts for concept 'nope'"):
        neutral_prompts("nope")


def test_generator_reproduces_committed_files(tmp_path: Path) -> None:
    assert generate_main(["--check"]) == 0
    assert generate_main(["--out", str(tmp_path)]) == 0
    assert generate_main(["--check", "--out", str(tmp_path)]) == 0
    target = tmp_path / "data" / "tense.jsonl"
    target.write_text(target.read_text().replace("walked", "walks", 1))
    assert generate_main(["--check", "--out", str(tmp_path)]) == 1


# --- CLI ------------------------------------------------------------------------------

def test_cli_ls(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--home", str(tmp_path), "concepts", "ls"]) == 0
    out = capsys.readouterr().out
    for name in NAMES:
        assert re.search(rf"^{name}\s", out, re.MULTILINE)
    assert main(["--home", str(tmp_path), "concepts", "ls", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == NAMES
    honesty = rows[NAMES.index("honesty")]
    assert honesty["default_contrast"] == ["deceptive", "honest"] and honesty["pairs"] >= 200
    assert sum(honesty["splits"].values()) == honesty["rows"]


def test_cli_show(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--home", str(tmp_path), "concepts", "show", "truth", "--json", "--head", "3"]) == 0
    shown = json.loads(capsys.readouterr().out)
    ds = load_dataset("truth")
    assert shown["content_hash"] == ds.content_hash
    assert [r["id"] for r in shown["head"]] == ds.ids[:3]
    assert main(["--home", str(tmp_path), "concepts", "show", "truth", "--head", "2"]) == 0
    out = capsys.readouterr().out
    assert ds.content_hash in out and ds.ids[1] in out and ds.ids[2] not in out
    assert main(["--home", str(tmp_path), "concepts", "show", "nope"]) == 2
    assert "unknown concept 'nope'" in capsys.readouterr().err


def test_cli_add(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "colours.jsonl"
    rows = [{"id": f"{k}-{lab}", "text": f"the {lab} {thing}", "label": lab, "pair": str(k)}
            for k, thing in enumerate(["car", "sky", "door", "hat"]) for lab in ("red", "blue")]
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    home = tmp_path / "home"
    assert main(["--home", str(home), "concepts", "add", str(src), "--name", "colours"]) == 0
    assert "registered colours: 8 rows" in capsys.readouterr().out
    assert main(["--home", str(home), "concepts", "ls", "--json"]) == 0
    listed = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert listed["colours"]["pairs"] == 4 and listed["colours"]["labels"] == ["blue", "red"]
    assert "colours" in [c.name for c in list_concepts(home)]
    # which label is positive is said, and can be chosen; the choice is kept with the dataset
    assert main(["--home", str(home), "concepts", "add", str(src), "--name", "colours2"]) == 0
    assert "positive label: 'blue'" in capsys.readouterr().out
    neutral = tmp_path / "n.txt"
    neutral.write_text("The car is\n\nA hat\n")
    assert main(["--home", str(home), "concepts", "add", str(src), "--name", "colours2", "--positive", "red",
                 "--neutral", str(neutral)]) == 0
    out = capsys.readouterr().out
    assert "positive label: 'red'" in out and "negative: 'blue'" in out and "neutral prompts: 2" in out
    from pipeline.datasets import load_dataset, neutral_prompts

    assert load_dataset("colours2", home=home).default_contrast == ("red", "blue")
    assert neutral_prompts("colours2", home=home) == ["The car is", "A hat"]
    assert main(["--home", str(home), "concepts", "add", str(src), "--name", "c3", "--positive", "green"]) == 2
    assert "green" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"id": "a", "text": "x", "label": "y", "split": "nope"}) + "\n")
    assert main(["--home", str(home), "concepts", "add", str(bad), "--name", "bad"]) == 2
    assert "invalid split 'nope'" in capsys.readouterr().err
