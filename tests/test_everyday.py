"""Everyday commands: store ls/gc, plot (figures + HTML, rendered by headless Chromium when
installed), ui (the command it builds, and a real start on loopback stopped by pid)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from jobs.cli import main
from pipeline.store import ActivationStore, activation_table

PNG = b"\x89PNG\r\n\x1a\n"


def _shards(home: Path) -> ActivationStore:
    import numpy as np

    store = ActivationStore(home)
    for layer in (1, 2, 3):
        t = activation_table(["a", "b", "c"], "last", np.zeros(3, dtype=np.int64), np.ones((3, 8), np.float32))
        store.write_shard("tiny:llama", "main", "toy", layer, 0, t, fingerprint="f", positions=["last"])
    return store


def test_store_ls_counts_and_gc_removes_only_orphans(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = _shards(home)
    assert main(["store", "ls", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    (row,) = doc["datasets"]
    assert (row["model"], row["dataset"], row["layers"], row["rows"]) == ("tiny:llama", "toy", [1, 2, 3], 9)
    assert row["bytes"] == sum(m["bytes"] for m in store.manifest()) and doc["orphans"] == []
    # an orphan (shard without manifest), a stale manifest (its shard deleted), a temp file
    orphan = store.shard_path("tiny:llama", "main", "toy", 4, 0)
    orphan.parent.mkdir(parents=True)
    orphan.write_bytes(b"x" * 100)
    store.shard_path("tiny:llama", "main", "toy", 3, 0).unlink()
    tmp = store.shard_path("tiny:llama", "main", "toy", 1, 0).parent / ".part-00001.parquet.abc.tmp"
    tmp.write_bytes(b"y")
    assert main(["store", "ls"]) == 0
    assert "3 orphaned or temporary file(s)" in capsys.readouterr().out
    assert main(["store", "gc"]) == 0  # all younger than the default --min-age: nothing touched
    assert orphan.exists() and tmp.exists() and "left alone" in capsys.readouterr().out
    assert main(["store", "gc", "--min-age", "0", "--dry-run"]) == 0
    assert orphan.exists() and "would delete 3 file(s)" in capsys.readouterr().out
    assert main(["store", "gc", "--min-age", "0"]) == 0
    assert not orphan.exists() and not tmp.exists()
    assert not store.manifest_path("tiny:llama", "main", "toy", 3, 0).exists()
    kept = store.manifest()
    assert [m["layer"] for m in kept] == [1, 2] and all((home / m["path"]).is_file() for m in kept)


def _sweep(home: Path) -> None:
    layers = list(range(7))
    curve = {"layer": layers, "val_auroc": [0.5, 0.8, 0.95, 1.0, 0.97, 0.9, 0.85],
             "val_dprime": [0.1, 1.5, 3.0, 4.0, 3.5, 2.5, 2.0], "test_auroc": [0.5, 0.8, 0.9, 0.99, 0.95, 0.9, 0.8],
             "test_accuracy": [0.5, 0.7, 0.85, 0.95, 0.9, 0.85, 0.8]}
    doc = {f"{m}/{p}": {"best_layer": 3, "select_metric": "val_auroc", "eligible": True, "curve": curve}
           for m in ("mean_diff", "lda") for p in ("last", "mean")}
    (home / "sweeps" / "mood").mkdir(parents=True)
    (home / "sweeps" / "mood" / "tiny_llama-main.json").write_text(json.dumps(doc))


def test_plot_writes_figures_and_html(home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _sweep(home)
    out = tmp_path / "report"
    assert main(["plot", "mood", "--out", str(out)]) == 0
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == ["tiny_llama-main-last.png", "tiny_llama-main-mean.png"]
    assert all((out / p).read_bytes()[:8] == PNG for p in pngs)
    page = (out / "index.html").read_text()
    for p in pngs:
        assert f'src="{p}"' in page
    assert "<td>mean_diff</td><td>last</td><td>3</td><td>1.000</td><td>4.000</td>" in page
    assert main(["plot", "nothing"]) == 2
    assert "no layer sweep" in capsys.readouterr().err


def test_curve_png_has_separate_axes_and_marks_the_layer(tmp_path: Path) -> None:
    """The catalog's curve.png: AUROC, accuracy and d' each on their own labelled axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pipeline.plots import curve_figure

    made = []
    real_subplots = plt.subplots

    def spy(*a, **k):  # keep the figure to inspect its axes
        fig, axes = real_subplots(*a, **k)
        made.append(fig)
        return fig, axes

    plt.subplots = spy
    try:
        curve_figure({"layer": [0, 1, 2], "val_auroc": [0.5, 0.9, 0.8], "val_accuracy": [0.5, 0.8, 0.7],
                      "val_dprime": [0.0, 3.0, 2.0], "test_auroc": [0.5, 0.85, 0.8]},
                     "toy on tiny: mean_diff, position last", 1, tmp_path / "c.png")
    finally:
        plt.subplots = real_subplots
    (fig,) = made
    labels = [ax.get_ylabel() for ax in fig.axes]
    assert labels[0] == "AUROC" and labels[1] == "accuracy" and labels[2].startswith("d′")
    for ax in fig.axes:
        assert any(list(line.get_xdata()) == [1, 1] for line in ax.get_lines())  # the selected layer
    assert "position last" in fig._suptitle.get_text()
    assert (tmp_path / "c.png").read_bytes()[:8] == PNG


CHROMIUM = next((p for p in ("/usr/bin/chromium", "/usr/bin/chromium-browser", shutil.which("chromium") or "")
                 if p and os.path.exists(p)), None)


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium installed (/usr/bin/chromium)")
def test_html_report_renders_in_headless_chromium(home: Path, tmp_path: Path) -> None:
    _sweep(home)
    out = tmp_path / "report"
    assert main(["plot", "mood", "--out", str(out)]) == 0
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--allow-file-access-from-files",
           "--virtual-time-budget=5000", "--dump-dom", (out / "index.html").as_uri()]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "images 2/2" in res.stdout  # the page's onload check: every figure decoded
    shot = tmp_path / "shot.png"
    subprocess.run([*cmd[:-2], f"--screenshot={shot}", "--window-size=1000,1400", (out / "index.html").as_uri()],
                   capture_output=True, timeout=120, check=False)
    assert shot.read_bytes()[:8] == PNG


def test_ui_builds_the_mlflow_command(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ui", "--print-command", "--port", "5123"]) == 0
    cmd = capsys.readouterr().out.split()
    assert cmd[1:4] == ["-m", "mlflow", "ui"]
    assert cmd[cmd.index("--backend-store-uri") + 1] == f"sqlite:///{home / 'mlflow.db'}"
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1" and cmd[cmd.index("--port") + 1] == "5123"
    assert main(["ui", "--print-command", "--tracking-uri", "http://example:5000"]) == 2


@pytest.mark.integration
def test_ui_starts_and_answers_on_loopback(catalog_home: Path, tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    env = {**os.environ, "GNOMON_HOME": str(catalog_home), "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    log = tmp_path / "ui.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "jobs.cli", "ui", "--port", str(port)], stdout=fh,
                                stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while True:
            assert proc.poll() is None, log.read_text()[-2000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    assert r.status == 200
                    break
            except OSError:
                assert time.monotonic() < deadline, log.read_text()[-2000:]
                time.sleep(0.5)
    finally:
        os.killpg(os.getpgid(proc.pid), signal.SIGTERM)  # our own process group, by pid
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(os.getpgid(proc.pid), signal.SIGKILL)
            proc.wait(timeout=20)


def test_evaluate_refuses_a_missing_model_before_catalog_or_ray(home: Path, capsys: pytest.CaptureFixture[str],
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import jobs.runtime.ray_runtime

    def no_ray(*_a: object, **_k: object) -> None:
        raise AssertionError("Ray was started before the model check")

    # another test of the session may have started Ray already: catch any use of it instead
    monkeypatch.setattr(jobs.runtime.ray_runtime, "ensure_ray", no_ray)
    # the reference does not exist either: the model check must come first, so that is never read
    assert main(["evaluate", "nothing/1", "--models", "/no/such/model.gguf", "--executor", "ray"]) == 2
    assert "/no/such/model.gguf does not exist" in capsys.readouterr().err


def test_run_checks_neutral_prompts_before_any_stage(home: Path, tmp_path: Path) -> None:
    from jobs.runtime.dag import run_job
    from jobs.runtime.spec import load_job
    from pipeline.types import GnomonError
    from tests.conftest import write_dataset

    data = write_dataset(tmp_path / "toy.jsonl", n_pairs=4)
    spec = tmp_path / "job.toml"
    spec.write_text(f'[job]\nname = "j"\nmodels = ["tiny:llama"]\nexecutor = "local"\n[fit]\n'
                    f'concepts = ["{data}"]\nmethods = ["mean_diff"]\npositions = ["last"]\nlayers = [1]\n'
                    '[[evaluate]]\nconcept = "toy"\nstrengths = [0]\n')
    with pytest.raises(GnomonError, match="toy_neutral.txt"):
        run_job(load_job(spec), home=home, show_progress=False, log=lambda _m: None)
    assert not (home / "activations").exists() and not (home / "jobs").exists()  # nothing ran
