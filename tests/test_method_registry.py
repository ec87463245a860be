"""Adding a fitting method is one module: it registers itself (name, function, declared
parameters, simplicity rank, help) and the CLI, spec validation, selection and the catalog
see it, with no other file edited."""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import write_dataset

PLUGIN = '''
"""Difference of class medians: a method that lives in one file."""
import numpy as np

from pipeline.fit._common import FitResult, orient
from pipeline.fit._params import Param
from pipeline.methods import MethodInfo, register_method

PARAMS = (Param("scale", "float", 1.0, "multiplies the vector", min=0.0, min_open=True),)


def fit_median_diff(pos, neg, *, paired=False, scale=1.0):
    v = (np.median(pos, axis=0) - np.median(neg, axis=0)) * scale
    return FitResult(orient(v, pos, neg), {"scale": scale})


register_method(MethodInfo("median_diff", fit=fit_median_diff, simplicity=5,
                           help="difference of class medians (plugin)", params=PARAMS))
'''


@pytest.fixture
def median_diff(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Registers ``median_diff`` by importing one new module, and unregisters it after."""
    from pipeline.methods import unregister_method

    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "gnomon_median.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path / "plugins"))
    importlib.import_module("gnomon_median")
    try:
        yield "median_diff"
    finally:
        unregister_method("median_diff")
        sys.modules.pop("gnomon_median", None)


def test_a_registered_method_is_offered_validated_and_ranked(median_diff: str, tmp_path: Path) -> None:
    from jobs.cli import build_parser
    from jobs.cli.commands.args import parse_methods, parse_params
    from jobs.runtime.spec import load_job
    from pipeline.fit import FIT_METHODS, check_method_params
    from pipeline.selection import Candidate, choose
    from pipeline.types import GnomonError

    # the CLI: --methods help and parsing, --param
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), pytest.raises(SystemExit):
        build_parser(["fit", "--help"]).parse_args(["fit", "--help"])
    assert "median_diff" in buf.getvalue() and "difference of class medians (plugin)" in buf.getvalue()
    assert "median_diff" in parse_methods("all") and parse_methods("median_diff") == ("median_diff",)
    assert parse_params(["median_diff.scale=2"]) == {"median_diff": {"scale": 2}}
    # spec validation: a job spec may name it and its parameters, which are checked
    spec = tmp_path / "j.toml"
    spec.write_text('[job]\nname="j"\nmodels=["m"]\n[fit]\nmethods=["median_diff"]\nlayers="1-2"\n'
                    '[fit.params.median_diff]\nscale=2.0\n')
    job = load_job(spec)
    assert job.fit.methods == ("median_diff",) and job.fit.layers == (1, 2)
    with pytest.raises(GnomonError, match="median_diff.scale"):
        check_method_params("median_diff", {"scale": -1.0})
    assert "median_diff" in FIT_METHODS
    # selection: its rank (5) is simpler than mean_diff's, so it wins a tie
    tie = {"val_auroc": 1.0, "val_dprime": 9.0}
    picked = choose([Candidate("a", layer=4, num_layers=8, method="mean_diff", metrics=tie),
                     Candidate("b", layer=4, num_layers=8, method="median_diff", metrics=tie)])
    assert picked.method == "median_diff"


def test_a_registered_method_fits_and_reaches_the_catalog(median_diff: str, catalog_home: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    from catalog import Catalog
    from jobs.cli import main

    data = write_dataset(tmp_path / "toy.jsonl", n_pairs=20)
    rc = main(["fit", "--model", "tiny:llama:2x16", "--dataset", str(data), "--methods", "median_diff,mean_diff",
               "--layers", "1-2", "--positions", "last", "--executor", "local", "--no-steer-select",
               "--param", "median_diff.scale=2", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0
    assert {b["method"] for b in out["best"]} == {"median_diff", "mean_diff"}
    recs = Catalog(home=catalog_home).search(concept="toy", method="median_diff")
    assert len(recs) == 1 and recs[0].method == "median_diff"
    d = Catalog(home=catalog_home).load(recs[0].ref)
    assert d.provenance.method == "median_diff" and d.provenance.params["scale"] == 2
