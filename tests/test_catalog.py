"""The direction catalog against a real MLflow SQLite store.

A fresh SQLite database costs seconds of migrations, so one migrated database is built
per module and copied into each test's home.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from catalog import Catalog, best_alias, parse_ref
from catalog.refs import slug
from jobs.cli import main as cli_main
from pipeline.direction import Direction, Provenance
from pipeline.types import GnomonError

HIDDEN = 16


def make_direction(seed: int, *, concept: str = "sentiment", model: str = "smollm2",
                   layer: int = 6, method: str = "mean_diff", position: str = "last",
                   val_auroc: float = 0.8, extras: bool = False) -> Direction:
    g = torch.Generator().manual_seed(seed)
    prov = Provenance(
        model_id=model, revision="main", fingerprint=hashlib.sha1(model.encode()).hexdigest()[:16],
        hidden_size=HIDDEN, layer=layer, position=position, concept=concept,
        positive="positive", negative="negative", method=method,
        params={"C": 0.5} if method == "logistic" else {}, dataset="sst2-mini",
        dataset_hash="9f2c1e7a5b3d4c6e", split_sizes={"train": 140, "val": 30, "test": 30})
    ex = {"leace_u": torch.randn(2, HIDDEN, generator=g)} if extras else {}  # (k, d)
    return Direction(vector=torch.randn(HIDDEN, generator=g), provenance=prov,
                     pos_mean=1.3 + seed, neg_mean=-0.7, spread=0.4, resid_norm=12.5,
                     metrics={"val_auroc": val_auroc, "val_accuracy": val_auroc - 0.04,
                              "test_accuracy": val_auroc - 0.06, "test_dprime": 2.0 * val_auroc},
                     extras=ex)


@pytest.fixture(scope="module")
def migrated_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("template")
    Catalog(home=home).concepts()  # runs MLflow's migrations once
    return home / "mlflow.db"


@pytest.fixture
def home(tmp_path: Path, migrated_db: Path) -> Path:
    h = tmp_path / "home"
    h.mkdir()
    shutil.copyfile(migrated_db, h / "mlflow.db")
    return h


@pytest.fixture
def cat(home: Path) -> Catalog:
    return Catalog(home=home)


# Two models, several layers and methods; smollm2's best by val_auroc is layer 9.
FLEET = [
    {"seed": 1, "model": "smollm2", "layer": 3, "method": "mean_diff", "val_auroc": 0.71},
    {"seed": 2, "model": "smollm2", "layer": 9, "method": "logistic", "val_auroc": 0.93},
    {"seed": 3, "model": "smollm2", "layer": 6, "method": "pca", "val_auroc": 0.88},
    {"seed": 4, "model": "HuggingFaceTB/SmolLM2-360M", "layer": 6, "method": "mean_diff", "val_auroc": 0.81},
    {"seed": 5, "model": "HuggingFaceTB/SmolLM2-360M", "layer": 12, "method": "logistic", "val_auroc": 0.77},
]


@pytest.fixture
def fleet(cat: Catalog) -> list[Direction]:
    dirs = [make_direction(**kw) for kw in FLEET]  # type: ignore[arg-type]
    for d in dirs:
        cat.register(d, curve={"layer": [0, 3, 6, 9], "val_auroc": [0.5, 0.7, 0.8, 0.9]}, set_best=True)
    return dirs


def test_search_by_tags_and_metric_thresholds(cat: Catalog, fleet: list[Direction]) -> None:
    assert [r.version for r in cat.versions("sentiment")] == [1, 2, 3, 4, 5]
    by_model = cat.search(model="smollm2")
    assert {r.layer for r in by_model} == {3, 6, 9}
    assert [r.ref for r in cat.search(layer=6, method="mean_diff")] == ["sentiment/4"]
    strong = cat.search(min_metrics={"val_auroc": 0.8, "test_accuracy": 0.8})
    expected = {i + 1 for i, kw in enumerate(FLEET)
                if kw["val_auroc"] >= 0.8 and kw["val_auroc"] - 0.06 >= 0.8}
    assert {r.version for r in strong} == expected
    assert cat.search(min_metrics={"no_such_metric": 0.0}) == []
    rec = cat.resolve("sentiment/3")
    assert (rec.layer, rec.method, rec.model, rec.position) == (6, "pca", "smollm2", "last")
    assert math.isclose(rec.metrics["test_dprime"], 2 * 0.88)


def test_best_aliases_follow_val_metric(cat: Catalog, fleet: list[Direction]) -> None:
    """``best`` belongs to one model (issue 20: it used to follow the model registered most
    recently, so another model's fit moved everyone's ``sentiment@best``)."""
    for model in ("smollm2", "HuggingFaceTB/SmolLM2-360M"):
        mine = [r for r in cat.versions("sentiment") if r.model == model]
        top = max(mine, key=lambda r: r.metrics["val_auroc"])
        assert cat.resolve(f"sentiment@{best_alias(model)}").version == top.version
        assert cat.resolve("sentiment@best", model=model).version == top.version
        assert cat.resolve("sentiment@best-monitor", model=model).version == top.version
    with pytest.raises(GnomonError, match="ambiguous.*smollm2: sentiment/2.*SmolLM2-360M: sentiment/4"):
        cat.resolve("sentiment@best")                 # two models have one: refused, both listed
    assert cat.resolve("sentiment").version == 5  # bare concept: latest version
    assert cat.resolve("sentiment", model="smollm2").version == 3
    # A better smollm2 direction moves smollm2's aliases only.
    new = cat.register(make_direction(9, layer=12, val_auroc=0.97), set_best=True)
    assert set(new.aliases) == {best_alias("smollm2"), "best-monitor--smollm2"}
    assert cat.resolve("sentiment@best", model="HuggingFaceTB/SmolLM2-360M").version == 4
    assert cat.resolve("sentiment@best", model="smollm2").version == new.version


def test_load_and_export_return_equal_direction(cat: Catalog, tmp_path: Path) -> None:
    d = make_direction(7, method="leace", extras=True)
    rec = cat.register(d)
    loaded = cat.load(rec.ref)
    assert loaded == d
    assert torch.equal(loaded.extras["leace_u"], d.extras["leace_u"])
    assert loaded.provenance.split_sizes == {"train": 140, "val": 30, "test": 30}
    out = cat.export("sentiment@best", tmp_path / "out" / "s.safetensors")
    assert Direction.load(out) == d
    with pytest.raises(GnomonError, match=r"\.safetensors"):
        cat.export(rec.ref, tmp_path / "s.pt")
    # A file swapped in the artifact store behind the catalog's back is refused.
    stored = Path(rec.source.removeprefix("file://")) / next(
        p.name for p in Path(rec.source.removeprefix("file://")).glob("*.safetensors"))
    make_direction(8).save(stored)
    with pytest.raises(GnomonError, match="sha256"):
        cat.load(rec.ref)


def test_models_uri_downloads_a_loadable_direction(cat: Catalog, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """What a user who knows MLflow types: ``models:/gnomon.<concept>@<alias>`` (registered names
    are namespaced, ``best`` is stored per model as ``best--<model slug>``) downloads the
    version's folder, and the direction in it loads equal to what was registered."""
    import mlflow

    d = make_direction(21)
    rec = cat.register(d, set_best=True)
    assert rec.source.endswith("/direction")            # a folder, not a single file
    monkeypatch.setenv("MLFLOW_TRACKING_URI", cat.tracking_uri)   # what a user sets; restored after the test
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", cat.tracking_uri)
    got = Path(mlflow.artifacts.download_artifacts(f"models:/gnomon.sentiment@{best_alias('smollm2')}",
                                                   dst_path=str(tmp_path / "dl")))
    files = sorted(p.name for p in got.iterdir())
    assert len(files) == 2 and "direction.json" in files, files
    assert Direction.load(next(got.glob("*.safetensors"))) == d
    meta = json.loads((got / "direction.json").read_text())
    assert meta["provenance"]["layer"] == 6 and meta["file"].endswith(".safetensors")
    capsys.readouterr()
    assert cli_main(["--home", str(cat.home), "catalog", "show", rec.ref]) == 0     # the URI a user copies
    assert f"models:/gnomon.sentiment@{best_alias('smollm2')}" in capsys.readouterr().out
    by_version = Path(mlflow.artifacts.download_artifacts(f"models:/gnomon.sentiment/{rec.version}",
                                                          dst_path=str(tmp_path / "v")))
    assert Direction.load(next(by_version.glob("*.safetensors"))) == d


def test_versions_whose_source_is_a_file_still_load(cat: Catalog) -> None:
    """Versions registered before the source became a folder point at the file itself."""
    from mlflow import MlflowClient

    d = make_direction(22)
    rec = cat.register(d)
    client = MlflowClient(cat.tracking_uri, registry_uri=cat.tracking_uri)
    name = next(p.name for p in Path(rec.source.removeprefix("file://")).glob("*.safetensors"))
    old = client.create_model_version("gnomon.sentiment", source=f"{rec.source}/{name}", run_id=rec.run_id,
                                      tags=client.get_model_version("gnomon.sentiment", str(rec.version)).tags)
    assert cat.load(f"sentiment/{old.version}") == d


def test_register_keeps_file_and_is_idempotent(cat: Catalog, home: Path) -> None:
    d = make_direction(11)
    a = cat.register(d)
    b = cat.register(d)
    assert a.version == b.version and len(cat.versions("sentiment")) == 1
    saved = list((home / "directions" / "sentiment").glob("*.safetensors"))
    assert [p.name for p in saved] == [f"{d.provenance.fingerprint[:12]}-L6-last-mean_diff-9f2c1e7a.safetensors"]
    # Same provenance, different vector: a second file, the first is not overwritten.
    other = make_direction(12)
    cat.register(other)
    files = sorted((home / "directions" / "sentiment").glob("*.safetensors"))
    assert len(files) == 2 and {Direction.load(f) == d for f in files} == {True, False}


def test_curve_logged_as_artifacts_and_metric_history(cat: Catalog) -> None:
    from mlflow import MlflowClient

    curve = {"layer": [0, 2, 4], "val_auroc": [0.5, 0.75, 0.9]}
    rec = cat.register(make_direction(3), curve=curve)
    client = MlflowClient(cat.tracking_uri)
    hist = client.get_metric_history(rec.run_id, "curve.val_auroc")
    assert sorted((m.step, m.value) for m in hist) == [(0, 0.5), (2, 0.75), (4, 0.9)]
    d = Path(client.download_artifacts(rec.run_id, "curve"))
    assert json.loads((d / "curve.json").read_text()) == {k: [float(x) for x in v] for k, v in curve.items()}
    assert (d / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # ... and as an MLflow image (key per_layer_curve): what the UI's run page charts
    images = [a.path for a in client.list_artifacts(rec.run_id, "images")]
    assert any("per_layer_curve" in p and p.endswith(".png") for p in images), images
    run = client.get_run(rec.run_id)
    assert run.data.params["layer"] == "6" and run.data.params["split_sizes.val"] == "30"
    runs_before = len(client.search_runs([run.info.experiment_id]))
    with pytest.raises(GnomonError, match="lengths"):
        cat.register(make_direction(4), curve={"layer": [0, 1], "val_auroc": [0.5]})
    assert len(client.search_runs([run.info.experiment_id])) == runs_before  # refused up front


def test_set_alias_and_tag(cat: Catalog, fleet: list[Direction]) -> None:
    rec = cat.set_alias("sentiment/2", "production")
    assert "production" in rec.aliases
    assert cat.resolve("sentiment@production").version == 2
    cat.set_alias("sentiment/3", "production")  # an alias moves
    assert cat.resolve("sentiment@production").version == 3
    assert "production" not in cat.resolve("sentiment/2").aliases
    for bad in ("latest", "v3", "has space", ""):
        with pytest.raises(GnomonError, match="alias"):
            cat.set_alias("sentiment/1", bad)
    cat.tag("sentiment/1", "reviewed_by", "alice")
    assert cat.resolve("sentiment/1").tags["reviewed_by"] == "alice"
    with pytest.raises(GnomonError, match="set by the catalog"):
        cat.tag("sentiment/1", "layer", "4")


def test_to_arrow_is_queryable_with_duckdb(cat: Catalog, fleet: list[Direction]) -> None:
    import duckdb

    cat.register(make_direction(20, concept="truthfulness", layer=9, val_auroc=0.96))
    tbl = cat.to_arrow()
    assert tbl.num_rows == len(FLEET) + 1
    con = duckdb.connect()
    con.register("directions", tbl)
    top = con.execute("SELECT ref FROM directions WHERE concept = 'sentiment' AND model = 'smollm2' "
                      "ORDER BY val_auroc DESC LIMIT 1").fetchone()
    assert top == ("sentiment/2",)
    with_best = con.execute("SELECT ref FROM directions WHERE list_contains(aliases, 'best--smollm2') "
                            "ORDER BY ref").fetchall()
    assert with_best == [("sentiment/2",), ("truthfulness/1",)]   # per-model aliases carry the model slug
    per_layer = dict(con.execute("SELECT layer, count(*) FROM directions GROUP BY layer").fetchall())
    assert per_layer == {3: 1, 6: 2, 9: 2, 12: 1}


def test_unknown_references_name_what_exists(cat: Catalog, fleet: list[Direction]) -> None:
    with pytest.raises(GnomonError, match=r"versions 1, 2, 3, 4, 5 and aliases best, best-"):
        cat.resolve("sentiment/42")
    with pytest.raises(GnomonError, match="does not exist"):
        cat.resolve("sentiment@staging")
    with pytest.raises(GnomonError, match="known concepts: sentiment"):
        cat.load("honesty@best")
    with pytest.raises(GnomonError, match="positive integer"):
        cat.resolve("sentiment/x")
    with pytest.raises(GnomonError, match="concept name"):
        cat.register(make_direction(1, concept="bad/name"))


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = int(s.getsockname()[1])
    s.close()
    return port


def test_unreachable_server_keeps_file_and_register_pending_retries(home: Path) -> None:
    d = make_direction(5, layer=4)
    dead = Catalog(tracking_uri=f"http://127.0.0.1:{_closed_port()}", home=home, retries=2,
                   backoff_s=0.1)
    with pytest.raises(GnomonError, match="did not answer after 2 tries") as err:
        dead.register(d)
    msg = str(err.value)
    assert "register-pending" in msg and "\n" not in msg
    path = Path(msg.split("the direction is saved at ")[1].split(";")[0])
    assert Direction.load(path) == d
    with pytest.raises(GnomonError, match="did not answer"):
        dead.search()

    working = Catalog(home=home)
    with pytest.raises(GnomonError, match="did not answer"):
        working.register_pending()  # the marker names the dead server
    [rec] = working.register_pending(redirect=True)
    assert (rec.layer, rec.model) == (4, "smollm2")
    assert working.load(rec.ref) == d
    assert working.register_pending() == []  # the marker is gone


def test_register_pending_reports_what_it_cannot_register(home: Path) -> None:
    dead = Catalog(tracking_uri=f"http://127.0.0.1:{_closed_port()}", home=home, retries=1)
    saved = []
    for d in (make_direction(1, layer=2), make_direction(2, layer=3)):
        with pytest.raises(GnomonError, match="did not answer") as err:
            dead.register(d)
        saved.append(Path(str(err.value).split("saved at ")[1].split(";")[0]))
    saved[0].unlink()
    working = Catalog(home=home)
    with pytest.raises(GnomonError, match=r"registered 1; 1 failed .*no longer exists"):
        working.register_pending(redirect=True)
    assert [r.layer for r in working.versions("sentiment")] == [3]
    with pytest.raises(GnomonError, match="1 failed"):  # the marker stays until dealt with
        working.register_pending()


def test_a_marker_completed_by_another_process_meanwhile_is_not_an_error(home: Path) -> None:
    """Another job registers its direction and removes its marker between this process's
    listing of the markers and its read of that one (seen on Ray: a fit stage retrying
    pending registrations while another stage's registration completed)."""
    from catalog import artifacts

    pending = artifacts._pending_dir(home)
    pending.mkdir(parents=True, exist_ok=True)
    (pending / "gone.json").symlink_to(pending / "registered-and-removed.json")   # listed, then missing
    assert artifacts.read_pending(home) == []
    assert Catalog(home=home).register_pending() == []


def test_cli_ls_and_show_json(home: Path, cat: Catalog, fleet: list[Direction],
                              capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert cli_main(["--home", str(home), "catalog", "ls", "--json", "--model", "smollm2"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["layer"] for r in rows} == {3, 6, 9}
    assert all({"method", "model", "revision", "position", "aliases"} <= r.keys() for r in rows)
    assert cli_main(["--home", str(home), "catalog", "show", "sentiment@best", "--model", "smollm2", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert (shown["layer"], shown["method"], shown["model"]) == (9, "logistic", "smollm2")
    assert math.isclose(shown["metrics"]["test_accuracy"], 0.93 - 0.06)
    assert cli_main(["--home", str(home), "catalog", "ls", "--layer", "6"]) == 0
    table = capsys.readouterr().out
    assert "sentiment/3" in table and "sentiment/4" in table and "sentiment/1" not in table
    assert cli_main(["--home", str(home), "catalog", "alias", "sentiment/1", "canary"]) == 0
    assert cat.resolve("sentiment@canary").version == 1
    out = tmp_path / "x.safetensors"
    assert cli_main(["--home", str(home), "catalog", "export", str(out), "sentiment@canary"]) == 0
    assert Direction.load(out) == fleet[0]
    capsys.readouterr()
    assert cli_main(["--home", str(home), "catalog", "show", "sentiment/77"]) == 2
    assert "sentiment/77 does not exist" in capsys.readouterr().err


def test_refs_and_slugs() -> None:
    assert parse_ref("sentiment@best--smollm2").alias == "best--smollm2"
    assert parse_ref(" sentiment/12 ").version == 12
    assert str(parse_ref("sentiment")) == "sentiment"
    # Distinct model ids never share a slug, and every slug is a valid alias.
    ids = ["HuggingFaceTB/SmolLM2", "huggingfacetb-smollm2", "HuggingFaceTB_SmolLM2", "smollm2"]
    assert len({slug(i) for i in ids}) == len(ids)
    assert all(parse_ref(f"c@{best_alias(i)}").alias for i in ids)


def test_import_catalog_does_not_import_mlflow() -> None:
    code = "import sys, catalog; assert 'mlflow' not in sys.modules, 'mlflow imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
