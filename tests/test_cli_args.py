"""Shared CLI argument helpers: method parameters from the command line and from specs."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobs.commands.args import parse_choices, parse_layers, parse_params
from jobs.spec import load_job
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
