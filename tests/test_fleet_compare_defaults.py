"""`gnomon compare --fleet` defaults (issue 22): the position an encoder can be read at, and
one figure file per group even when two groups share a width."""

from __future__ import annotations

from pathlib import Path

from jobs.runtime.engine import LocalExecutor
from jobs.stages.fleet_compare_job import FleetCompareSpec, run_fleet_compare
from tests.fleet_tiny import build_tiny_fleet, register_small_sentiment


def test_two_groups_of_one_width_keep_their_figures(tmp_path: Path) -> None:
    from jobs.stages.fleet_report import compare_figures

    def group(vs: list[str], c: float) -> dict:
        return {"width": 32, "best_layer": 2, "versions": vs, "layers": [1, 2], "min_cosine": [c, c],
                "mean_val_accuracy": [0.7, 0.8], "cosine": {2: [[1.0, c], [c, 1.0]]},
                "transfer": {2: {"accuracy": [[1.0, 0.9], [0.9, 1.0]]}}}

    out = {"concept": "senti", "groups": [group(["a", "b"], 0.5), group(["c", "d"], 0.9)], "emergence": {},
           "cross_width": [], "fleet": "f"}
    files = compare_figures(out, tmp_path)
    pngs = [f for f in files if f.suffix == ".png"]
    assert len(pngs) == 6 and len(set(pngs)) == 6 and all(f.is_file() for f in pngs)
    assert Path(files[-1]).read_text().count("<img") == 6


def test_an_encoder_in_the_fleet_is_read_at_the_mean(home: Path) -> None:
    build_tiny_fleet(home, bert=True)
    register_small_sentiment(home, 12)
    logs: list[str] = []
    out = run_fleet_compare(FleetCompareSpec("senti", "tiny", log=False, figures=False), LocalExecutor(), home,
                            log=logs.append)
    assert out["position"] == "mean" and any("t-bert is an encoder" in m for m in logs)
    from pipeline.fleet.registry import Fleet, FleetMember, save_fleet

    save_fleet(Fleet("decoders", (FleetMember("t-base", kind="base"), FleetMember("t-copy", kind="numeric"))), home)
    out = run_fleet_compare(FleetCompareSpec("senti", "decoders", log=False, figures=False), LocalExecutor(), home,
                            log=logs.append)
    assert out["position"] == "last"
