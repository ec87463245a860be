"""Shared CLI argument helpers: method parameters from the command line and from specs."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobs.cli.commands.args import parse_choices, parse_layers, parse_params
from jobs.runtime.spec import load_job
from pipeline.methods import method_names
from pipeline.types import GnomonError

METHODS = method_names()


def test_params_parse_to_typed_values_per_method() -> None:
    got = parse_params(["ccs.epochs=500", "logistic.l2=1e-3", "ccs.name=x"])
    assert got == {"ccs": {"epochs": 500, "name": "x"}, "logistic": {"l2": 0.001}}
    with pytest.raises(GnomonError, match="unknown method 'svm'"):
        parse_params(["svm.c=1"])
    with pytest.raises(GnomonError, match="METHOD.KEY=VALUE"):
        parse_params(["ccs=500"])


def test_choices_and_layers() -> None:
    assert parse_choices("all", METHODS, "method") == METHODS
    assert parse_choices("lda, pca", METHODS, "method") == ("lda", "pca")
    with pytest.raises(GnomonError, match="unknown method svm"):
        parse_choices("svm", METHODS, "method")
    assert parse_layers("0,2-4") == (0, 2, 3, 4) and parse_layers("all") is None


def test_spec_fit_params_reach_the_fit_stage(tmp_path: Path) -> None:
    p = tmp_path / "j.toml"
    p.write_text('[job]\nname="j"\nmodels=["m"]\n[fit]\nmethods=["ccs"]\n[fit.params.ccs]\nepochs=500\n')
    assert load_job(p).fit.params == {"ccs": {"epochs": 500}}
    p.write_text('[job]\nname="j"\nmodels=["m"]\n[fit.params.svm]\nc=1\n')
    with pytest.raises(GnomonError, match="unknown method 'svm'"):
        load_job(p)


def test_fit_cli_passes_params_to_the_method(home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A misspelt option reaches the method's check before anything is collected."""
    from jobs.cli import main
    from tests.conftest import write_dataset

    data = write_dataset(tmp_path / "toy.jsonl", n_pairs=20)
    rc = main(["fit", "--model", "tiny:llama:2x16", "--dataset", str(data), "--methods", "logistic",
               "--layers", "1", "--positions", "last", "--register", "none", "--executor", "local",
               "--param", "logistic.no_such_option=3", "--json"])
    assert rc == 2 and "logistic does not take parameter(s) no_such_option" in capsys.readouterr().err
    assert not (home / "activations").exists()


SHARED_FLAGS = {"--layers", "--positions", "--methods", "--param", "--executor", "--ray-address", "--workers",
                "--tracking-uri", "--home", "--json"}
OWN_MEANING = {("jobs/cli/commands/steer.py", "--positions")}
"""A shared flag a command defines itself because it means something else there (steer's
``--positions``: which token positions an intervention edits, all/prompt/generated)."""


def test_shared_options_are_defined_once_in_the_table() -> None:
    """Every ``--json``, ``--tracking-uri``, ``--layers``... comes from ``OPTIONS`` via
    ``add_options`` (issue 24: ``--tracking-uri`` was inline in 13 modules with 8 wordings)."""
    import ast

    from jobs.cli.commands.args import OPTIONS

    root = Path(__file__).resolve().parents[1]
    inline = []
    for path in sorted((root / "jobs").rglob("*.py")):
        rel = str(path.relative_to(root))
        if rel == "jobs/cli/commands/args.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "add_argument":
                flags = {a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)}
                inline += [(rel, f) for f in flags & SHARED_FLAGS if (rel, f) not in OWN_MEANING]
    assert inline == []
    assert {OPTIONS[name]()["flags"][0] for name in OPTIONS} == SHARED_FLAGS   # the table holds them all


def test_layers_parse_the_same_on_the_command_line_and_in_a_spec(tmp_path: Path) -> None:
    spec = tmp_path / "j.toml"
    for text, want in (('"2-4"', (2, 3, 4)), ('"0,2-3"', (0, 2, 3)), ("[1, 5]", (1, 5)), ('"all"', None)):
        spec.write_text(f'[job]\nname="j"\nmodels=["m"]\n[fit]\nlayers={text}\n')
        assert load_job(spec).fit.layers == want
        if text.startswith('"'):
            assert parse_layers(text.strip('"')) == want
    spec.write_text('[job]\nname="j"\nmodels=["m"]\n[fit]\nlayers="4-2"\n')
    with pytest.raises(GnomonError, match="runs backwards"):
        load_job(spec)


def test_a_job_specs_fit_defaults_are_gnomon_fits(tmp_path: Path) -> None:
    """One default per fit setting: a ``[fit]`` table that says nothing fits what ``gnomon
    fit`` with no flags fits (they once differed: ``last`` vs ``last,mean``)."""
    from dataclasses import fields

    from jobs.cli.commands.args import OPTIONS, parse_positions
    from jobs.stages.fit_job import FitSpec
    from jobs.runtime.spec import FitSection

    p = tmp_path / "j.toml"
    p.write_text('[job]\nname = "j"\nmodels = ["tiny:llama"]\n[fit]\nconcepts = ["sentiment"]\n')
    section, spec = load_job(p).fit, FitSpec(model="m", dataset="d")
    shared = {f.name for f in fields(FitSection)} & {f.name for f in fields(FitSpec)}
    assert shared >= {"methods", "positions", "layers", "select_metric", "register", "params"}
    for name in shared:
        assert getattr(section, name) == getattr(spec, name), name
    assert section.positions == ("last", "mean")
    assert parse_positions(OPTIONS["positions"]()["default"]) == spec.positions   # --positions' default


@pytest.mark.parametrize("stage", ["evaluate", "report"])
def test_evaluate_and_report_defaults_are_decided_once(stage: str, tmp_path: Path) -> None:
    """A job spec's ``[[evaluate]]`` / ``[[report]]`` table that says nothing, the stage's
    request with no arguments and the command with no flags all mean the same settings."""
    import argparse
    from dataclasses import fields

    from jobs.cli.commands import evaluate as evaluate_cmd
    from jobs.cli.commands import report as report_cmd
    from jobs.runtime.spec import EvaluateSection, ReportSection
    from jobs.stages.evaluate_job import EvalSpec
    from jobs.stages.report_job import ReportSpec

    table = {"evaluate": '[[evaluate]]\nconcept = "sentiment"\n', "report": '[[report]]\nconcepts = ["sentiment"]\n'}
    p = tmp_path / "j.toml"
    p.write_text('[job]\nname = "j"\nmodels = ["tiny:llama"]\n' + table[stage])
    job = load_job(p)
    section, spec, cls, cmd, argv = (
        (job.evaluate[0], EvalSpec(ref="r"), EvaluateSection, evaluate_cmd, ["r"]) if stage == "evaluate" else
        (job.report[0], ReportSpec(concepts=("sentiment",)), ReportSection, report_cmd, ["sentiment"]))
    shared = {f.name for f in fields(cls)} & {f.name for f in fields(type(spec))}
    assert shared >= {"strengths", "n_prompts", "max_new_tokens"}
    for name in shared - {"concepts", "ref"}:   # what the request names, not a default
        assert getattr(section, name) == getattr(spec, name), name
    parser = argparse.ArgumentParser()
    cmd.add_parser(parser)
    args = parser.parse_args(argv)
    assert tuple(float(x) for x in args.strengths.split(",")) == spec.strengths
    assert (args.prompts, args.max_new_tokens) == (spec.n_prompts, spec.max_new_tokens)
