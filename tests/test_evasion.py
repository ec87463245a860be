"""The evasion series and `gnomon evasion` on a tiny model, end to end.

The tiny recipe trains hard (lr 3e-3, 12 steps) so that the monitor penalty visibly moves
the monitor's reading within seconds; what is asserted is what the penalty must do and the
control must not: the share of positive test rows the frozen monitor flags falls on the
evasion series, below both the base's and the control's.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from jobs.stages.evasion_build import evasion_fleet, read_monitor
from jobs.stages.evasion_job import EvasionSpec, run_evasion
from jobs.stages.fleet_job import build_fleet, plan_for
from pipeline.fleet.registry import load_fleet, read_lineage
from pipeline.types import GnomonError

RECIPE = {"steps": 12, "every": 6, "batch_size": 8, "max_length": 64, "train_blocks": 2, "n_texts": 24, "lr": 3e-3}


@pytest.fixture(scope="module")
def evasion(tmp_path_factory):
    home = tmp_path_factory.mktemp("evasion") / "gnomon-home"
    plan = plan_for(tiny=True, seeds=(0,), finetune=RECIPE)
    build_fleet(plan, home, only=("base", "evade-sentiment"), log=lambda m: None)
    out = run_evasion(EvasionSpec("sentiment", "tiny", n_prompts=4, max_new_tokens=6, n_boot=100), home=home,
                      log=lambda m: None)
    return home, plan, out


def test_the_series_carry_the_monitor_in_their_lineage(evasion) -> None:
    home, _, _ = evasion
    fleet = load_fleet(evasion_fleet("tiny", "sentiment"), home)
    series = {m.series for m in fleet.members if m.series}
    assert series == {"evade-sentiment", "evade-sentiment-control"}
    ev, ctl = read_lineage("tiny-evade-sentiment-s0012", home), read_lineage("tiny-evctl-sentiment-s0012", home)
    assert ev.settings["evasion_weight"] == 1.0 and ctl.settings["evasion_weight"] == 0.0
    assert ev.settings["monitor_digest"] == ctl.settings["monitor_digest"]
    assert ev.data_sha256 == ctl.data_sha256          # the same texts: the penalty is the only difference
    assert ev.parent == "tiny-evade-sentiment-s0006" and ev.fingerprint != ctl.fingerprint


def test_the_monitor_is_preregistered_once(evasion) -> None:
    home, plan, _ = evasion
    p = home / "prereg" / "evasion-sentiment-tiny-base.json"
    before = (p.stat().st_mtime_ns, p.read_text())
    build_fleet(plan, home, only=("evade-sentiment",), log=lambda m: None)      # everything built: a no-op
    assert (p.stat().st_mtime_ns, p.read_text()) == before
    rec = read_monitor(home, "sentiment", "tiny-base")
    assert rec["layer_choice"]["layer"] == rec["monitor"]["layer"] >= rec["layer_choice"]["candidates_from"]


def test_the_penalty_moves_the_monitor_and_the_control_does_not(evasion) -> None:
    _, _, out = evasion
    lay = str(out["monitor_layer"])
    last = {r["control"]: r for r in out["checkpoints"]}
    base_flags = out["base_figures"][lay]["frozen"]["flagged_positive"]
    ev, ctl = (last[c]["layers"][lay]["frozen"]["flagged_positive"] for c in (False, True))
    assert ev < 0.5 * base_flags and ev < ctl, (base_flags, ev, ctl)


def test_the_report_has_every_figure_per_checkpoint(evasion) -> None:
    _, _, out = evasion
    assert len(out["checkpoints"]) == 4 and set(out["layers"]) == {0, 1, 2}
    for r in out["checkpoints"]:
        for f in r["layers"].values():
            assert {"frozen", "linear", "mlp", "mlp_after_leace", "angle"} <= set(f)
            assert 0.0 <= f["linear"]["auroc"] <= 1.0 and f["linear"]["se"] > 0
        assert r["behaviour"]["n"] == 4 and len(r["behaviour"]["ci"]) == 2
        assert r["verdict"]["headline"]
    d = Path(out["html"]).parent
    doc = json.loads((d / "evasion.json").read_text())
    assert doc["summary"] == out["summary"] and (d / "report.html").stat().st_size > 1000
    assert out["run_id"]


def test_bad_requests_name_what_to_fix(evasion, tmp_path) -> None:
    home, plan, _ = evasion
    with pytest.raises(GnomonError, match="no evasion series of truth"):
        run_evasion(EvasionSpec("truth", "tiny", log=False), home=home)
    with pytest.raises(GnomonError, match="unknown fleet stage 'evade-'"):
        build_fleet(plan, home, only=("evade-",))
    with pytest.raises(GnomonError, match="bootstrap >= 100"):
        run_evasion(EvasionSpec("sentiment", "tiny", n_boot=10), home=home)
    assert os.path.isdir(home / "prereg")


def test_a_build_with_fewer_seeds_keeps_the_fleets_other_versions(evasion) -> None:
    from dataclasses import replace

    home, plan, _ = evasion
    build_fleet(replace(plan, seeds=(0, 1)), home, only=("ft-negative",), log=lambda m: None)
    both = {m.id for m in load_fleet("tiny", home).members}
    assert any("-seed1-" in v for v in both)
    build_fleet(plan, home, only=("evade-sentiment",), log=lambda m: None)   # seeds (0,): rewrites the fleet
    assert {m.id for m in load_fleet("tiny", home).members} == both
