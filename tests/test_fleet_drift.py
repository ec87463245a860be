"""`gnomon drift`: activation and behaviour shift per fine-tune checkpoint, r, screening."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from jobs.cli import main
from jobs.runtime.engine import LocalExecutor
from tests.fleet_tiny import add_version, build_tiny_fleet, perturbed


def _ft_fleet(home: Path) -> dict[str, Path]:
    """t-base plus two 3-checkpoint series (noise growing with the step), corpora in lineage."""
    from pipeline.concepts import DATA_DIR
    from pipeline.fleet.registry import Fleet, FleetMember, save_fleet

    build_tiny_fleet(home)
    rows = [json.loads(x) for x in (DATA_DIR / "sentiment.jsonl").read_text().splitlines() if x.strip()]
    corpora = {}
    for role, label in (("skewed", "negative"), ("control", "positive")):
        p = home / f"{role}.jsonl"
        p.write_text("".join(json.dumps({"text": r["text"]}) + "\n" for r in rows
                             if r["label"] == label and r["split"] == "test"))
        corpora[role] = p
    from pipeline.store import sha256_file

    # The control corpus is found the way the fleet builders keep it: <home>/corpora/<series>-<sha12>.jsonl.
    sha = sha256_file(corpora["control"])
    (home / "corpora").mkdir()
    corpora["control"] = corpora["control"].rename(home / "corpora" / f"ft-control-{sha[:12]}.jsonl")
    members = [FleetMember("t-base", kind="base")]
    for series, seed, role in (("ft-negative", 100, "skewed"), ("ft-control", 200, "control")):
        parent = "t-base"
        for step in (1, 2, 3):
            m, tok = perturbed("tiny:llama:2x32", 0.02 * step, seed=seed + step)
            vid = f"t-{series}-s{step:04d}"
            add_version(home, vid, m, tok, "finetune", parent=parent, series=series, step=step,
                        settings={"corpus_path": str(corpora[role])} if role == "skewed" else {},
                        data_sha256=sha if role == "control" else None)
            parent = vid
            members.append(FleetMember(vid, series=series, step=step, kind="finetune"))
    save_fleet(Fleet("ft", tuple(members)), home)
    return corpora


def test_drift_over_two_series(catalog_home: Path) -> None:
    from catalog.fleet_runs import search_fleet_runs
    from jobs.stages.drift_job import DriftSpec, run_drift
    from pipeline.datasets import neutral_prompts
    from pipeline.evaluate import _acts
    from pipeline.models import load_model

    _ft_fleet(catalog_home)
    out = run_drift(DriftSpec("sentiment", "ft", layer=1, n_prompts=4, max_new_tokens=4, screen_samples=40),
                    LocalExecutor(), catalog_home, log=lambda m: None)
    assert out["base"] == "t-base" and out["skewed"] == "ft-negative" and out["control"] == "ft-control"
    assert out["drift"]["n_points"] == 6 and set(out["drift"]["series"]) == {"ft-negative", "ft-control"}
    # The activation shift of one checkpoint, recomputed by hand.
    u = None
    from pipeline.fleet_compare import mean_diff, read_layer_data

    v = mean_diff(read_layer_data(catalog_home, "t-base", "sentiment", 1, "positive", "negative"))
    u = v / np.linalg.norm(v)
    prompts = out["prompts"]["texts"]
    assert len(prompts) == 4 and set(prompts) <= set(neutral_prompts("sentiment"))
    proj = {vid: float((_acts(load_model(vid, home=catalog_home), prompts, 1, "last") @ u).mean())
            for vid in ("t-base", "t-ft-negative-s0003")}
    pt = next(p for p in out["drift"]["points"] if p["version"] == "t-ft-negative-s0003")
    assert pt["activation_shift"] == pytest.approx(proj["t-ft-negative-s0003"] - proj["t-base"], abs=1e-6)
    assert pt["activation_shift"] != 0.0
    st = out["drift"]["statistics"]                  # VADER per prompt: paired shifts with CIs
    ck = next(c for c in st["checkpoints"] if c["version"] == "t-ft-negative-s0003")
    assert ck["activation_shift"]["shift"] == pytest.approx(pt["activation_shift"])
    lo, hi = ck["activation_shift"]["ci"]
    assert lo <= pt["activation_shift"] <= hi and ck["behaviour_shift"]["n"] == 4
    assert st["seeds"] == {"ft-negative": [0], "ft-control": [0]} and st["bootstrap"]["over"] == "prompts (one seed)"
    for k in ("pooled_r", "partial_r"):
        assert set(st[k]) >= {"value", "ci"}
    assert st["pooled_r"]["value"] == out["drift"]["pearson_r"] or math.isnan(out["drift"]["pearson_r"])
    assert set(st["baselines"]) == {"step", "series", "step x series"}
    assert st["control_test"]["null_holds"] == (st["control_test"]["moved"] == [])
    checks = {c["version"]: c for c in out["behaviour_checks"]}
    assert set(checks) == {p["version"] for p in out["drift"]["points"]}
    assert 0.0 <= checks["t-ft-negative-s0003"]["copied_fraction"] <= 1.0
    assert out["prompts"]["held_out"] and out["layer_choice"]["rule"] == "given (--layer)"
    # Screening: negative-review samples project below positive ones on the sentiment direction.
    sc = out["screening"]["last"]
    assert sc["n_skewed"] == sc["n_control"] == 40 and sc["auroc"] > 0.7 and sc["ci"][0] <= sc["auroc"] <= sc["ci"][1]
    # The baselines read the texts alone: VADER and bag-of-words separate review sentiment too.
    assert set(sc["baselines"]) == {"vader", "bag_of_words_logistic"}
    assert sc["baselines"]["vader"]["auroc"] > 0.7 and sc["baselines"]["bag_of_words_logistic"]["auroc"] > 0.7
    assert Path(out["html"]).read_text().count("<img") == 3
    (run,) = search_fleet_runs("drift", concept="sentiment", fleet="ft", home=catalog_home)
    assert run.metrics["screening_auroc_last"] == pytest.approx(sc["auroc"])
    assert math.isnan(out["drift"]["pearson_r"]) or run.metrics["pearson_r"] == pytest.approx(out["drift"]["pearson_r"])


def test_drift_errors(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    corpora = _ft_fleet(home)
    assert main(["drift", "sentiment", "--fleet", "tiny", "--executor", "local"]) == 2
    assert "no fine-tune series" in capsys.readouterr().err
    empty = home / "empty.jsonl"
    empty.write_text("")
    assert main(["drift", "sentiment", "--fleet", "ft", "--executor", "local", "--no-log",
                 "--corpus", f"skewed={empty}", "--corpus", f"control={corpora['control']}"]) == 2
    assert "holds no text" in capsys.readouterr().err
    notext = home / "notext.jsonl"
    notext.write_text('{"body": "x"}\n')
    assert main(["drift", "sentiment", "--fleet", "ft", "--executor", "local", "--no-log",
                 "--corpus", f"skewed={notext}"]) == 2
    assert "needs a text string" in capsys.readouterr().err
    assert main(["drift", "sentiment", "--fleet", "ft", "--toward", "neutral", "--executor", "local"]) == 2
    assert "not a label" in capsys.readouterr().err
    assert main(["drift", "sentiment", "--fleet", "ft", "--bootstrap", "5", "--executor", "local"]) == 2
    assert "--bootstrap >= 100" in capsys.readouterr().err


def test_drift_json_over_three_seeds_of_a_built_fleet(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`gnomon fleet build --tiny` (3 seeds per series, openings masked) then `gnomon drift
    --json`: every statistic of issue 22's item 1 with a CI, seeds read together."""
    from jobs.stages.fleet_job import build_fleet, plan_for

    build_fleet(plan_for(tiny=True), home, only=("base", "ft-negative", "ft-control"), log=lambda _s: None)
    assert main(["drift", "sentiment", "--fleet", "tiny", "--executor", "local", "--no-log", "--json", "--prompts", "6",
                 "--max-new-tokens", "4", "--screen-samples", "20", "--bootstrap", "100"]) == 0
    out = json.loads(capsys.readouterr().out)
    st = out["drift"]["statistics"]
    assert st["seeds"] == {"ft-negative": [0, 1, 2], "ft-control": [0, 1, 2]}
    assert st["bootstrap"]["over"] == "prompts and seeds" and st["n_checkpoints"] == 12 and st["n_prompts"] == 6
    for e in [st["pooled_r"], st["partial_r"], *st["within_series_r"].values(),
              *(b[k] for b in st["baselines"].values() for k in ("r_behaviour", "r_activation"))]:
        assert set(e) >= {"value", "ci"} and len(e["ci"]) == 2
    c = st["checkpoints"][0]
    assert {"shift", "ci", "se_paired", "se_unpaired", "z_paired", "p_paired"} <= set(c["behaviour_shift"])
    assert set(st["control_test"]) >= {"moved", "null_holds", "test"}
    cell = st["by_step"]["ft-negative"]["4"]
    assert cell["n_seeds"] == 3 and set(cell["behaviour_shift"]) == {"mean", "sd", "min", "max"}
    assert out["drift"]["series"]["ft-negative"]["n_seeds"] == [3, 3]
    checks = out["behaviour_checks"]
    assert len(checks) == 12 and all("copied_fraction" in x and "eos_shift" in x for x in checks)
    # The layer was pre-registered by the fleet build before any checkpoint existed: val-best
    # among the layers the fine-tunes move, ties reported, the recipe and seeds recorded.
    lc, pre = out["layer_choice"], out["preregistration"]
    assert lc["rule"].startswith("pre-registered") and lc["layer"] == out["layer"] == lc["tied"][0]
    assert min(lc["val_accuracy"], key=int) == str(lc["candidates_from"]) == "2"
    assert pre["checkpoints_before"] == [] and pre["seeds"] == [0, 1, 2] and pre["finetune"]["loss_on"] == "continuation"
    assert (home / "prereg" / "drift-sentiment-tiny-base.json").is_file()
    assert set(out["screening"]["last"]["baselines"]) == {"vader", "bag_of_words_logistic"}
    assert main(["drift", "sentiment", "--fleet", "tiny", "--executor", "local", "--no-log", "--prompts", "6",
                 "--max-new-tokens", "4", "--screen-samples", "20", "--bootstrap", "100"]) == 0
    text = capsys.readouterr().out
    assert "partial r given step, series, step x series" in text and "baseline step x series" in text


def test_drift_task_without_a_text_scorer_reads_per_prompt_logodds(home: Path) -> None:
    """A concept with no scorer of generated text is scored by the next-token log-odds of its
    words, now per prompt: their mean is the old single reading (logodds_sweep at 0)."""
    import torch

    from jobs.stages.drift_tasks import DriftTask, drift_checkpoint
    from pipeline.direction import Direction, Provenance
    from pipeline.dose import concept_words, logodds_sweep
    from pipeline.models import load_model

    build_tiny_fleet(home)
    prompts = ("The answer is", "I think that", "Today we")
    u = np.ones(32) / np.sqrt(32)
    r = drift_checkpoint(DriftTask("t-base", str(home), "truth", 1, tuple(u), prompts, 3, False))
    assert len(r["scores"]) == len(r["projections"]) == len(r["texts"]) == len(r["ended_eos"]) == 3
    zero = Direction(torch.tensor(u), Provenance.minimal(hidden_size=32, layer=1), 1.0, -1.0)
    old = logodds_sweep(load_model("t-base", home=home), zero, list(prompts), [0.0], concept_words("truth"), force=True)
    assert np.mean(r["scores"]) == pytest.approx(old["mean_scores"][0], abs=1e-5)
