"""The linearity report's measurements on data whose answer is known: a concept planted
linearly, an XOR concept, orthogonal directions on a tiny model, linear dose-responses."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

from pipeline.direction import Direction, Provenance
from pipeline.linearity import DEFAULT
from pipeline.linearity.layers import analyse_layer
from pipeline.linearity.verdict import concept_verdict, layer_class, layer_ranges

torch.set_num_threads(1)


def _sets(x: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """train/val/test ContrastSet look-alikes from (x, y), 60/20/20."""
    n = len(y)
    cuts = {"train": slice(0, int(0.6 * n)), "val": slice(int(0.6 * n), int(0.8 * n)), "test": slice(int(0.8 * n), n)}
    return {k: SimpleNamespace(pos=x[s][y[s]], neg=x[s][~y[s]], paired=False) for k, s in cuts.items()}


def _entry(x: np.ndarray, y: np.ndarray, layer: int = 3) -> dict[str, Any]:
    entry, _ = analyse_layer(_sets(x, y), Provenance.minimal(hidden_size=x.shape[1], layer=layer))
    entry["class"] = layer_class(entry)
    return entry


def test_planted_linear_concept_is_linear_and_erasable() -> None:
    rng = np.random.default_rng(0)
    n, d = 600, 16
    y = rng.random(n) < 0.5
    u = rng.normal(size=d)
    u /= np.linalg.norm(u)
    x = rng.normal(size=(n, d)) + np.outer(np.where(y, 2.0, -2.0), u)  # classes differ only along u
    e = _entry(x, y)
    lin, mlp = e["probes"]["linear"]["test_accuracy"], e["probes"]["mlp"]["test_accuracy"]
    assert lin >= 0.9
    assert abs(mlp - lin) <= 0.05
    assert e["erasure"]["linear"]["test_accuracy"] <= 0.62
    assert e["erasure"]["mlp"]["test_accuracy"] <= 0.62     # nothing left for a non-linear reader
    assert e["erasure"]["rank"] == 1
    assert e["agreement"]["mean_cosine"] > 0.8              # every method finds u
    assert e["class"] == "linear"
    v = concept_verdict("planted", "synthetic", [e])
    assert v["word"] == "linear" and "layers 3" in v["line"]


def test_xor_concept_is_non_linear() -> None:
    rng = np.random.default_rng(1)
    n, d = 800, 8
    f = rng.choice([-1.0, 1.0], size=(n, 2))
    y = f[:, 0] * f[:, 1] > 0                                # XOR of two features: no linear signal
    x = rng.normal(scale=0.3, size=(n, d))
    x[:, :2] += 2.0 * f
    e = _entry(x, y)
    assert e["probes"]["linear"]["test_accuracy"] <= 0.65
    assert e["probes"]["mlp"]["test_accuracy"] >= 0.9
    assert e["class"] == "non-linear"
    v = concept_verdict("xor", "synthetic", [e])
    assert v["representation"] == "non-linear"
    assert v["figures"]["mlp"] >= 0.9


def test_probe_budget_is_shared_and_batched() -> None:
    from pipeline.linearity.probes import WEIGHT_DECAYS, compare_probes, split_xy

    rng = np.random.default_rng(2)
    x = rng.normal(size=(200, 6)).astype(np.float32)
    y = x[:, 0] > 0
    tr, va, te = split_xy(x[:120][y[:120]], x[:120][~y[:120]]), split_xy(x[120:160][y[120:160]], x[120:160][~y[120:160]]), \
        split_xy(x[160:][y[160:]], x[160:][~y[160:]])
    r = compare_probes(tr, va, te)
    assert {r["linear"].weight_decay, r["mlp"].weight_decay} <= set(WEIGHT_DECAYS)
    again = compare_probes(tr, va, te)
    assert again["mlp"] == r["mlp"]                          # seeded: reruns agree


def test_probes_trained_together_match_probes_trained_alone() -> None:
    """Many layers' probes train as one batched model per (kind, shape); each must come out
    as it would alone (same seeded init, per-coordinate Adam), not mixed with its neighbours."""
    from pipeline.linearity.probes import ProbeTask, split_xy, train_probes

    rng = np.random.default_rng(3)
    tasks = []
    for layer in range(4):
        width = 5 if layer < 3 else 3                       # the last one has another shape
        x = rng.normal(size=(160, width)).astype(np.float32)
        y = x[:, layer % width] + 0.3 * x[:, -1] ** 2 > 0.2 * layer
        parts = [split_xy(x[a:b][y[a:b]], x[a:b][~y[a:b]]) for a, b in ((0, 96), (96, 128), (128, 160))]
        tasks += [ProbeTask("linear", *parts), ProbeTask("mlp", *parts)]
    together = train_probes(tasks, steps=60)
    alone = [train_probes([t], steps=60)[0] for t in tasks]
    for a, b in zip(together, alone):
        assert a.kind == b.kind and a.weight_decay == b.weight_decay
        assert a.val_auroc == pytest.approx(b.val_auroc, abs=1e-3)
        assert a.test_accuracy == pytest.approx(b.test_accuracy, abs=0.02)
    assert len({round(r.val_auroc, 4) for r in together}) > 2   # the layers' probes differ


def test_joint_probe_padding_stays_zero_and_changes_no_logit() -> None:
    """The joint model pads its product to aligned sizes; training must leave every padding
    entry at exactly zero and give the logits an unpadded product gives."""
    from pipeline.linearity.probes import _aligned, _adam, _Joint

    g, n, d, k = 2, 40, 5, 3
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(g, n, d, generator=gen)
    y = (x[..., :1] * x[..., 1:2] > 0).float().expand(-1, -1, k)
    m = _Joint(("linear", "mlp"), k, d, 4, torch.Generator().manual_seed(0), g=g)
    used = k * 4 + k
    assert m.w.shape[1:] == (_aligned(d), _aligned(used)) and _aligned(d) > d and _aligned(used) > used
    xp = torch.nn.functional.pad(x, (0, _aligned(d) - d))
    opt = _adam(list(m.parameters()), 2e-2)
    for _ in range(20):
        opt.zero_grad()
        pen = m.penalty()
        loss = sum(torch.nn.functional.binary_cross_entropy_with_logits(lg, y) + 0.01 * pen[kind].sum()
                   for kind, lg in m(xp).items())
        loss.backward()
        opt.step()
    with torch.no_grad():
        assert float(m.w[:, d:].abs().max()) == 0.0 and float(m.w[:, :, used:].abs().max()) == 0.0
        assert float(m.b[:, used:].abs().max()) == 0.0
        out = m(xp)
        hh = torch.baddbmm(m.b[:, None, :used], x, m.w[:, :d, :used])        # the unpadded product
        assert torch.allclose(out["linear"], hh[..., k * 4:], atol=1e-5)
        h = torch.relu(hh[..., :k * 4]).view(g, n, k, 4)
        assert torch.allclose(out["mlp"], (h * m.w2[:, None]).sum(-1) + m.b2[:, None], atol=1e-5)
        assert not torch.equal(m.w[:, :d, :used], torch.zeros_like(m.w[:, :d, :used]))   # it did train


def test_row_space_basis_is_lossless_and_finds_the_rank() -> None:
    """The probes' inputs are coordinates in an orthonormal basis of the centred, standardized
    train rows (from the Gram matrix): inner products among train rows are kept, and a
    rank-deficient train set gives a basis of its rank, not of its row count."""
    from pipeline.fit._common import standardize
    from pipeline.linearity.probes import _row_space

    rng = np.random.default_rng(4)
    base = rng.normal(size=(30, 50)) @ np.diag(np.r_[100.0, np.ones(49)])   # one outlier coordinate
    x = np.concatenate([base, base[:10]])                                    # 40 rows, rank 30 after centring: 29
    mu, sd = standardize(x)
    z = (x - mu) / sd
    c = _row_space(x)(x)
    assert c.shape == (40, 29) == (40, np.linalg.matrix_rank(z))
    assert np.allclose(c @ c.T, z @ z.T, atol=1e-9 * np.abs(z @ z.T).max())
    other = rng.normal(size=(7, 50))                        # a held-out row's coordinates: its projection
    v = _row_space(x)(other)
    proj = ((other - mu) / sd) @ np.linalg.pinv(z) @ z
    assert np.allclose(v @ c.T, proj @ z.T, atol=1e-8 * np.abs(proj @ z.T).max())


# ---- control: dose-response and interpolation ---------------------------------------------
def test_dose_response_linear_by_construction() -> None:
    from pipeline.linearity.control import analyse_dose

    s = [-4, -3, -2, -1, 0, 1, 2, 3, 4]
    dr = analyse_dose(s, [0.3 * v + 0.1 for v in s], [0.01 * v * v for v in s])
    assert dr.fit.r2 == pytest.approx(1.0, abs=1e-9)
    assert dr.fit.slope == pytest.approx(0.3)
    assert dr.fluent == (-4.0, 4.0)
    assert dr.saturation == {"positive": None, "negative": None}


def test_dose_response_fluent_range_and_saturation() -> None:
    from pipeline.linearity.control import analyse_dose

    s = [-6, -4, -3, -2, -1, 0, 1, 2, 3, 4, 6]
    scores = [float(np.tanh(v / 2.5)) for v in s]
    kl = [0.05 * v * v for v in s]                            # over the 1.0 bound beyond |s| = 4
    dr = analyse_dose(s, scores, kl)
    assert dr.fluent == (-4.0, 4.0)
    assert dr.fit.n == 9 and dr.fit.r2 < 1.0
    assert dr.saturation["positive"] is not None and dr.saturation["positive"] >= 2
    assert dr.saturation["negative"] is not None and dr.saturation["negative"] <= -2
    with pytest.raises(Exception, match="at least 7"):
        analyse_dose(s[:5], scores[:5], kl[:5])


def _planted(lm: Any, layer: int, unit: torch.Tensor, name: str) -> Direction:
    prov = Provenance.minimal(hidden_size=lm.hidden_size, layer=layer, concept=name)
    return Direction(vector=unit * 3.0, provenance=prov, pos_mean=1.0, neg_mean=0.0, spread=0.5, resid_norm=4.0)


def test_live_dose_response_and_interpolation_on_a_monitor_are_linear(tiny_lm: Any) -> None:
    from pipeline.linearity.control import dose_response, interpolation, monitor_scorer

    u = torch.zeros(tiny_lm.hidden_size)
    u[3] = 1.0
    d = _planted(tiny_lm, 2, u, "planted")
    prompts = ["the day was", "a film about", "it is"]
    dr = dose_response(tiny_lm, d, prompts, monitor_scorer("planted"), monitors={"planted": d})
    assert dr.fit.r2 == pytest.approx(1.0, abs=1e-6)           # read where it is written: linear by construction
    assert dr.fit.slope == pytest.approx(d.separation, rel=1e-4)
    assert all(k >= 0 for k in dr.kl) and dr.kl[dr.strengths.index(0.0)] == pytest.approx(0.0, abs=1e-6)
    it = interpolation(tiny_lm, d, prompts, monitor_scorer("planted"), monitors={"planted": d})
    assert it.fit.r2 == pytest.approx(1.0, abs=1e-6)
    assert it.scores[0] == pytest.approx(d.neg_mean, abs=1e-4) and it.scores[-1] == pytest.approx(d.pos_mean, abs=1e-4)


def test_orthogonal_directions_mix_exactly_additively(tiny_lm: Any) -> None:
    from pipeline.linearity.composition import composition
    from pipeline.linearity.control import monitor_scorer

    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(tiny_lm.hidden_size, 2, generator=g))
    a, b = _planted(tiny_lm, 2, q[:, 0], "a"), _planted(tiny_lm, 2, q[:, 1], "b")
    comp = composition(tiny_lm, {"a": a, "b": b}, ["the day was", "a film about"],
                       {"monitor": {"a": monitor_scorer("a"), "b": monitor_scorer("b")}})
    assert comp.additivity["monitor"]["a"] == pytest.approx(0.0, abs=1e-4)
    assert comp.additivity["monitor"]["b"] == pytest.approx(0.0, abs=1e-4)
    x = np.array(comp.crosstalk["monitor"])
    assert np.allclose(np.diag(x), 1.0) and np.abs(x[0, 1]) < 1e-4 and np.abs(x[1, 0]) < 1e-4
    assert abs(comp.cosine[0][1]) < 1e-5
    # Not orthogonal: steering a moves b's monitor by cos(a, b) relative to its own.
    c = _planted(tiny_lm, 2, (q[:, 0] + q[:, 1]) / 2 ** 0.5, "c")
    comp2 = composition(tiny_lm, {"a": a, "c": c}, ["the day was"],
                        {"monitor": {"a": monitor_scorer("a"), "c": monitor_scorer("c")}})
    assert comp2.crosstalk["monitor"][0][1] == pytest.approx(2 ** -0.5, rel=1e-3)


# ---- verdicts -------------------------------------------------------------------------------
def _fake(layer: int, lin: float, mlp: float, erased_mlp: float) -> dict[str, Any]:
    p = {"test_accuracy": 0.0, "test_auroc": 0.5}
    e = {"layer": layer, "probes": {"linear": {**p, "test_accuracy": lin}, "mlp": {**p, "test_accuracy": mlp}},
         "erasure": {"linear": {**p, "test_accuracy": 0.5}, "mlp": {**p, "test_accuracy": erased_mlp}},
         "agreement": {"mean_cosine": 0.9}}
    e["class"] = layer_class(e)
    return e


def test_layer_classes_follow_the_named_thresholds() -> None:
    th = DEFAULT
    assert _fake(0, 0.6, 0.6, 0.5)["class"] == "absent"
    assert _fake(0, 0.6, 0.95, 0.5)["class"] == "non-linear"
    assert _fake(0, 0.95, 0.95 + th.mlp_gap / 2, 0.5 + th.chance_margin / 2)["class"] == "linear"
    assert _fake(0, 0.95, 0.95, 0.5 + 2 * th.chance_margin)["class"] == "partly-linear"
    assert _fake(0, 0.85, 0.85 + 2 * th.mlp_gap, 0.5)["class"] == "partly-linear"
    assert layer_ranges([3, 6, 9, 15], [0, 3, 6, 9, 12, 15]) == "3-9, 15"


def test_verdict_names_failed_control_and_additivity() -> None:
    layers = [_fake(i, 0.97, 0.98, 0.52) for i in (4, 6, 8)]
    control = {"fit": {"r2": 0.5, "slope": 0.1, "intercept": 0.0, "n": 9}, "effect": 0.4, "fluent_range": [-3, 3],
               "saturation": {"positive": 2.0, "negative": None}, "score": "log-odds"}
    v = concept_verdict("c", "m", layers, control, {"fit": {"r2": 0.95}}, additivity=0.5)
    assert v["word"] == "linearly readable, not controllable/additive"
    assert "layers 4-8" in v["line"] and "control R² 0.50" in v["line"] and "additive within 50%" in v["line"]
    good = {**control, "fit": {**control["fit"], "r2": 0.97}}
    assert concept_verdict("c", "m", layers, good, {"fit": {"r2": 0.95}}, additivity=0.1)["word"] == "linear"


# ---- the job and the command --------------------------------------------------------------
def test_fleet_models_reads_the_fleet_file(home: Path) -> None:
    from jobs.stages.report_job import fleet_models
    from pipeline.types import GnomonError

    (home / "fleets").mkdir()
    (home / "fleets" / "f.json").write_text(json.dumps({"versions": [{"id": "m-1"}, {"id": "m-2", "step": 2}]}))
    assert fleet_models("f", home) == ("m-1", "m-2")
    with pytest.raises(GnomonError, match="no fleet 'g'.*known fleets: f"):
        fleet_models("g", home)


def test_report_command_writes_json_plots_html_and_mlflow_run(catalog_home: Path, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    from conftest import write_dataset

    from jobs.cli import main
    from pipeline.datasets import register_dataset

    register_dataset(write_dataset(tmp_path / "toy.jsonl", n_pairs=30), "toy", home=catalog_home)
    (catalog_home / "concepts" / "toy_neutral.txt").write_text("It was\nThe day\n")
    page = tmp_path / "page.html"
    rc = main(["report", "toy", "--model", "tiny:llama", "--layers", "1,3", "--executor", "local",
               "--html", str(page)])
    assert rc == 0
    out = capsys.readouterr().out
    assert "verdict: toy on tiny:llama" in out
    doc = json.loads((catalog_home / "reports" / "toy" / "report.json").read_text())
    assert doc["format"] == "gnomon-linearity-report/1"
    r = doc["results"][0]
    assert [e["layer"] for e in r["layers"]] == [1, 3]
    assert set(r["layers"][0]) >= {"layer", "n", "probes", "erasure", "agreement", "class"}
    # toy declares no behavioural readout: said in the table, the verdict and the page (issue 20:
    # the table marked a control layer "steered/interpolated there" with nothing measured)
    assert r["control"] is None and any("control skipped" in n for n in r["notes"])
    assert "declares no behavioural readout" in r["not_measured"] and "(* control layer" not in out
    assert "not measured (no behavioural readout declared)" in r["verdict"]["line"]
    assert "not measured (no behavioural readout declared)" in page.read_text()
    from pipeline.store_keys import model_file_key

    key = model_file_key("tiny:llama", catalog_home)       # never a cleaned name two models can share
    assert (catalog_home / "reports" / "toy" / f"probes-{key}-toy.png").stat().st_size > 1000
    assert page.read_text().count("data:image/png;base64,") == 1
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{catalog_home / 'mlflow.db'}")
    exp = client.get_experiment_by_name("gnomon/toy")
    runs = client.search_runs([exp.experiment_id], "tags.gnomon_kind = 'report'")
    assert [run.info.run_id for run in runs] == [r["mlflow_run"]]
    hist = client.get_metric_history(r["mlflow_run"], "linear_acc")
    assert sorted(m.step for m in hist) == [1, 3]


def test_report_html_path_checked_first_and_may_be_the_reports_own_page(catalog_home: Path, tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    from conftest import write_dataset

    from jobs.cli import main
    from pipeline.datasets import register_dataset

    register_dataset(write_dataset(tmp_path / "toy.jsonl", n_pairs=30), "toy", home=catalog_home)
    base = ["report", "toy", "--model", "tiny:llama", "--layers", "1", "--executor", "local", "--no-control",
            "--no-compose", "--no-mlflow"]
    assert main([*base, "--html", str(tmp_path / "missing" / "page.html")]) == 2
    assert "--html" in capsys.readouterr().err and not (catalog_home / "reports").exists()   # refused before any work
    out = tmp_path / "rep"
    assert main([*base, "--out", str(out), "--html", str(out / "index.html")]) == 0   # the page it writes anyway
    assert "data:image/png;base64," in (out / "index.html").read_text()


def test_report_stage_in_job_specs(tmp_path: Path) -> None:
    from jobs.runtime.spec import load_job
    from pipeline.types import GnomonError

    p = tmp_path / "job.toml"
    p.write_text("[job]\nname='r'\nmodels=['tiny:llama']\n[[report]]\nconcepts=['sentiment','tense']\nlayers=[1,2]\n"
                 "control=false\n")
    spec = load_job(p)
    assert spec.report[0].concepts == ("sentiment", "tense") and spec.report[0].layers == (1, 2)
    assert spec.report[0].control is False and spec.report[0].compose is True
    p.write_text("[job]\nname='r'\nmodels=['m']\n[[report]]\nconcepts=['x']\ncolour='red'\n")
    with pytest.raises(GnomonError, match=r"\[\[report\]\]: unknown key\(s\) colour"):
        load_job(p)


def test_continuation_log_odds_matches_a_step_by_step_decode(tiny_lm: Any) -> None:
    from pipeline.linearity.readout import continuation_log_odds

    prompt, pos, neg, n = "the day was", [10, 11], [20], 4
    ids = tiny_lm.tokenizer([prompt], return_tensors="pt")["input_ids"]
    per = []
    with torch.inference_mode():
        for _ in range(n):                          # greedy, no cache: the reference decode
            lp = torch.log_softmax(tiny_lm.model(input_ids=ids).logits[0, -1].float(), -1)
            per.append(float(torch.logsumexp(lp[pos], 0) - torch.logsumexp(lp[neg], 0)))
            nxt = int(lp.argmax())
            if nxt == tiny_lm.tokenizer.eos_token_id:
                break
            ids = torch.cat([ids, torch.tensor([[nxt]])], 1)
    got = continuation_log_odds(tiny_lm, [prompt], [], pos, neg, max_new_tokens=n)
    assert got == pytest.approx(float(np.mean(per)), abs=1e-4)
