"""References that mean what they say (issue 20): per-model aliases, a monitor judged where it
reads, selection corrected for the search. Each test failed on the code before the issue.

Tiny models only: a fit on ``tiny:llama`` takes seconds.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from jobs.runtime.engine import LocalExecutor
from jobs.stages.fit_job import FitSpec, run_fit
from pipeline.types import GnomonError
from tests.conftest import write_dataset


def _fit(home: Path, model: str, dataset: Path, **kw: Any) -> dict[str, Any]:
    from catalog import Catalog

    spec = FitSpec(model=model, dataset=str(dataset), positive=kw.pop("positive", "pos"),
                   negative=kw.pop("negative", "neg"), select_steer=kw.pop("select_steer", False), **kw)
    return run_fit(spec, LocalExecutor(), home, catalog=Catalog(home=home))


def test_another_models_fit_does_not_move_best(catalog_home: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """The tiny-fleet hijack: a fit on a second (narrower) model moved ``toy@best`` and
    ``@best-monitor`` to that model's direction, so commands about the first model read,
    evaluated or edited the second one. Now ``best`` belongs to a model; a bare reference is
    refused while two models have one; ``--model`` picks one; a width mismatch is refused
    before any model loads; and each command says what a reference resolved to."""
    from catalog import Catalog
    from jobs.cli import main as cli

    toy = write_dataset(tmp_path / "toy.jsonl", n_pairs=60)
    first = _fit(catalog_home, "tiny:llama", toy, methods=("mean_diff", "lda"), layers=(1, 2, 3))
    assert first["selection"]["reliable"], first["selection"]["reason"]
    cat = Catalog(home=catalog_home)
    mine = cat.resolve("toy@best")                       # one model has it: the bare alias works
    assert mine.model == "tiny:llama"
    second = _fit(catalog_home, "tiny:llama:2x16", toy, methods=("mean_diff",), layers=(1, 2))
    assert second["selection"]["reliable"], second["selection"]["reason"]
    assert cat.resolve("toy@best", model="tiny:llama").ref == mine.ref       # not moved
    assert cat.resolve("toy@best-monitor", model="tiny:llama").ref == mine.ref
    assert cat.resolve("toy@best", model="tiny:llama:2x16").model == "tiny:llama:2x16"
    with pytest.raises(GnomonError, match="ambiguous.*tiny:llama: .*tiny:llama:2x16: "):
        cat.resolve("toy@best")
    capsys.readouterr()
    # the CLI refuses the ambiguous reference, resolves a scoped one and says to what
    assert cli(["--home", str(catalog_home), "monitor", "toy@best-monitor", "good day"]) == 2
    assert "ambiguous" in capsys.readouterr().err
    assert cli(["--home", str(catalog_home), "monitor", "toy@best-monitor", "--model", "tiny:llama",
                "--max-new-tokens", "2", "good day"]) == 0
    assert f"toy@best-monitor -> {mine.ref} (model tiny:llama," in capsys.readouterr().err
    # a direction of width 32 on a width-16 model: refused before the model is loaded
    from pipeline.models import loading

    calls: list[Any] = []
    real = loading.load_model
    loading.load_model = lambda *a, **k: calls.append(a) or real(*a, **k)  # type: ignore[assignment]
    try:
        assert cli(["--home", str(catalog_home), "evaluate", mine.ref, "--models", "tiny:llama:2x16",
                    "--executor", "local"]) == 2
    finally:
        loading.load_model = real  # type: ignore[assignment]
    assert "hidden size 32, but tiny:llama:2x16 has 16" in capsys.readouterr().err and not calls


def _pooled_only_model(path: Path) -> str:
    """A tiny Llama whose attention writes nothing (o_proj = 0): each position's residual
    depends on its own token alone, so the last token ('.', the same in every text) carries
    nothing about the rest, and only a pooled reading can see the concept."""
    import torch

    from pipeline.models.tiny import tiny_model

    model, tok = tiny_model("tiny:llama")
    with torch.no_grad():
        for block in model.model.layers:
            block.self_attn.o_proj.weight.zero_()
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


def _pooled_dataset(path: Path, n: int = 80, seed: int = 0) -> Path:
    """Texts that differ only in their middle characters (class a: 'a'-heavy, class b: 'b'-heavy),
    all ending in ' .'."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        filler = "".join(rng.choice("cdefghij ") for _ in range(rng.randint(6, 14)))
        for lab, ch in (("pos", "a"), ("neg", "b")):
            middle = "".join(rng.choice(ch * 3 + "klmno") for _ in range(8))
            rows.append({"id": f"{lab}-{i}", "text": f"{filler} {middle} {filler[::-1]} .", "label": lab,
                         "pair": f"p{i}"})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_best_monitor_reads_where_it_was_judged(catalog_home: Path, tmp_path: Path) -> None:
    """A concept readable only when pooled: the fit's best direction is a ``mean`` one (val
    AUROC ~1). The monitor used to read it per token, so its reading of a whole prompt was
    the last token's, identical for every text: AUROC 0.5 and one class for everything, while
    the catalog reported 1.0. Now the monitor's prompt reading of a ``mean`` direction is the
    running mean (collection's rule), and its AUROC and calibrated accuracy on test are what
    the catalog reports."""
    from catalog import Catalog
    from pipeline import metrics as M
    from pipeline.datasets import load_dataset
    from pipeline.models import load_model
    from pipeline.monitor import gaussian_calibration, monitor, score_texts

    model = _pooled_only_model(tmp_path / "pooled-model")
    data = _pooled_dataset(tmp_path / "pooled.jsonl")
    out = _fit(catalog_home, model, data, methods=("mean_diff", "lda"), layers=(1, 2), positions=("last", "mean"))
    last_best = [b for b in out["best"] if b["position"] == "last"]
    assert all(b["val_auroc"] < 0.7 for b in last_best)               # nothing to read at the last token
    assert out["selection"]["reliable"], out["selection"]["reason"]
    cat = Catalog(home=catalog_home)
    rec = cat.resolve("pooled@best-monitor")
    assert rec.position == "mean" and rec.metrics["test_auroc"] > 0.95 and "test_ece" in rec.metrics
    d = cat.load_record(rec)
    lm = load_model(model)
    ds = load_dataset(str(data))
    pos, neg = ds.split_texts("test", "pos"), ds.split_texts("test", "neg")
    traces = monitor(lm, [d], pos + neg, max_new_tokens=2, force=True)
    reads = np.array([next(iter(t.reading.values())) for t in traces])
    # the monitor's prompt reading is collection's mean row of the prompt
    np.testing.assert_allclose(reads, score_texts(lm, d, pos + neg, "mean"), rtol=1e-4, atol=1e-4)
    rp, rn = reads[:len(pos)], reads[len(pos):]
    cal = gaussian_calibration(d)
    assert M.auroc(rp, rn) == pytest.approx(rec.metrics["test_auroc"], abs=1e-6)
    assert M.accuracy(rp, rn, -cal.intercept / cal.slope) == pytest.approx(rec.metrics["test_accuracy"], abs=1e-6)
    assert M.accuracy(rp, rn, -cal.intercept / cal.slope) > 0.9
    # the old per-token reading at the last prompt token: the same for every text
    old = score_texts(lm, d, pos + neg, "last")
    assert np.ptp(old) < 1e-4 * max(1.0, float(np.abs(old).max()))
    assert M.auroc(old[:len(pos)], old[len(pos):]) == pytest.approx(0.5, abs=0.01)


def _random_label_dataset(path: Path, n_pairs: int = 60, seed: int = 3) -> Path:
    """Texts of the toy dataset with labels drawn at random: nothing to find."""
    write_dataset(path, n_pairs=n_pairs)
    rng = random.Random(seed)
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    for i, r in enumerate(rows):
        lab = rng.choice(["pos", "neg"])
        r.update(label=lab, text=r["text"].replace(" is pos ", " is ").replace(" is neg ", " is "), id=f"r{i}")
        r.pop("pair")
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_no_alias_for_a_concept_with_random_labels(catalog_home: Path, tmp_path: Path) -> None:
    """A null concept: labels drawn at random. The search over 6 methods x 2 positions x 4
    layers finds a best validation AUROC that the old rule (one candidate's confidence
    bound) took for a real direction and aliased; the permutation null over the same
    candidates says it is what shuffled labels give, and no alias is set."""
    from catalog import Catalog
    from catalog.registry import record_candidate
    from pipeline.selection import choose

    data = _random_label_dataset(tmp_path / "noise.jsonl")
    out = _fit(catalog_home, "tiny:llama", data, layers=(1, 2, 3, 4))
    sel = out["selection"]
    assert not sel["reliable"] and ("not reliable" in sel["reason"] or "not confirmed" in sel["reason"])
    assert int(sel["selection.search_size"]) == 6 * 2 * 4 - len(out["failed_groups"])
    cat = Catalog(home=catalog_home)
    recs = cat.versions("noise")
    assert recs and not any(r.aliases for r in recs)
    with pytest.raises(GnomonError, match="not set for any model"):
        cat.resolve("noise@best")
    # what the old rule would have done with the same registered versions
    old = choose([record_candidate(r) for r in recs], "val_auroc")
    assert old is not None, "the old rule would have set best on this null concept"


def test_user_concept_readout_and_label_order(home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``concepts ls`` printed a registered concept's positive label second (it ignored the
    declared contrast); a concept without a readout was scored on its label names by
    ``evaluate`` but refused by the report. Now a readout is declared at ``concepts add`` or
    both say it was not measured; label names are never used as words."""
    from jobs.cli import main as cli
    from pipeline.dose import concept_words

    data = write_dataset(tmp_path / "mine.jsonl", n_pairs=10, labels=("yes", "no"))
    assert cli(["concepts", "add", str(data), "--name", "mine", "--positive", "yes", "--negative", "no"]) == 0
    assert "no behavioural readout declared" in capsys.readouterr().out
    assert cli(["concepts", "ls"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("mine "))
    assert line.index("yes") < line.index("no,") if "no," in line else line.index("yes") < line.index(" no")
    with pytest.raises(GnomonError, match="declares no behavioural readout"):
        concept_words("mine", home)
    assert cli(["concepts", "add", str(data), "--name", "mine", "--positive", "yes", "--negative", "no",
                "--words-positive", "yes,sure", "--words-negative", "no,never"]) == 0
    assert concept_words("mine", home) == (("yes", "sure"), ("no", "never"))
    assert cli(["concepts", "add", str(data), "--name", "mine", "--words-positive", "yes"]) == 2
    assert "both labels" in capsys.readouterr().err


def test_registered_names_are_namespaced_and_old_ones_renamed(catalog_home: Path) -> None:
    """gnomon's registered models are ``gnomon.<concept>``: a colleague's model named
    ``sentiment`` on the same tracking server is never given a gnomon version (it was: the
    concept name was the registered name), and a catalog from before is renamed on open."""
    import torch
    from mlflow import MlflowClient

    from catalog import Catalog
    from pipeline.direction import Direction, Provenance

    uri = f"sqlite:///{catalog_home / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.create_registered_model("sentiment")                              # someone else's model
    client.create_registered_model("mood", tags={"gnomon_kind": "concept"})  # gnomon's, named the old way
    cat = Catalog(home=catalog_home)
    prov = Provenance.minimal(hidden_size=8, layer=1, method="mean_diff", position="last", concept="sentiment",
                              model_id="tiny:llama", revision="main", positive="pos", negative="neg")
    rec = cat.register(Direction(torch.ones(8), prov, pos_mean=1.0, neg_mean=-1.0, spread=0.5, resid_norm=2.0))
    assert rec.ref == "sentiment/1"
    assert client.search_model_versions("name = 'sentiment'") == []          # theirs untouched
    assert [int(v.version) for v in client.search_model_versions("name = 'gnomon.sentiment'")] == [1]
    names = {m.name for m in client.search_registered_models()}
    assert {"sentiment", "gnomon.sentiment", "gnomon.mood"} <= names and "mood" not in names
    assert set(cat.concepts()) == {"sentiment", "mood"}


def test_one_shared_vector_is_named_for_what_it_is() -> None:
    """Layer 0 at position ``last`` when every text ends in '.': each row is the same vector.
    It was reported as "the same texts under both labels?", which sent users to check their
    data; it now says what happened and what to read instead."""
    from pipeline.direction import Provenance
    from pipeline.fit import fit_direction

    row = np.ones((6, 4))
    prov = Provenance.minimal(hidden_size=4, layer=0, method="mean_diff", position="last")
    with pytest.raises(GnomonError, match="every row of both classes is the same vector.*position 'mean'"):
        fit_direction("mean_diff", row, row.copy(), base=prov)


def test_steer_selection_can_be_deferred_and_run_later(catalog_home: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """``fit --no-steer-select`` measures no steering (it used to run on every fit, silently,
    for most of its time); ``catalog select-steer`` runs it later, prints a line per candidate
    on stderr, and logs its evidence as an MLflow run of the concept's experiment."""
    from mlflow import MlflowClient

    from jobs.cli import main as cli

    toy = write_dataset(tmp_path / "toy.jsonl", n_pairs=60)
    assert cli(["--home", str(catalog_home), "fit", "--model", "tiny:llama", "--dataset", str(toy),
                "--positive", "pos", "--negative", "neg", "--layers", "1-2", "--methods", "mean_diff,lda",
                "--executor", "local", "--no-steer-select"]) == 0
    out = capsys.readouterr()
    assert "deferred (--no-steer-select)" in out.out and "best-steer candidate" not in out.err
    assert "toy@best-monitor ->" in out.out
    assert cli(["--home", str(catalog_home), "catalog", "select-steer", "toy", "--model", "tiny:llama"]) == 2
    assert "unknown concept 'toy'" in capsys.readouterr().err     # fitted from a file: say which
    assert cli(["--home", str(catalog_home), "catalog", "select-steer", "toy", "--model", "tiny:llama",
                "--dataset", str(toy)]) == 0
    out = capsys.readouterr()
    assert out.err.count("best-steer candidate") >= 2
    assert "toy@best-steer ->" in out.out or "no best-steer for tiny:llama" in out.out
    uri = f"sqlite:///{catalog_home / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    exp = client.get_experiment_by_name("gnomon/toy")
    runs = client.search_runs([exp.experiment_id], "tags.gnomon_kind = 'evidence'")
    assert [r.info.run_name for r in runs] == ["select-steer"]
    metrics = client.get_metric_history(runs[0].info.run_id, "fluency_bound")
    assert len(metrics) >= 2                                    # one point per candidate measured
    evidence = json.loads(Path(client.download_artifacts(runs[0].info.run_id,
                                                         "evidence/select-steer.json")).read_text())
    measured = [c for c in evidence["candidates"] if "plus" in c]
    assert {c["ref"] for c in evidence["candidates"]} and all("plus_ci" in c for c in measured)
    assert len(client.get_metric_history(runs[0].info.run_id, "plus_ci_low")) == len(measured)
    if evidence["ref"]:                                         # the winner's version names its evidence
        version = evidence["ref"].rsplit("/", 1)[1]
        tags = client.get_model_version("gnomon.toy", version).tags
        assert tags["steer.evidence_run"] == runs[0].info.run_id and tags["steer.fluency_bound"]
