"""Job specs and the end-to-end DAG on tiny models: parse errors, stages, resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from jobs.runtime.dag import run_job
from jobs.runtime.spec import EXAMPLES, load_job
from pipeline.types import GnomonError

SPEC = """
[job]
name = "tiny-fleet"
models = ["tiny:llama", "tiny:gpt2"]
executor = "local"

[fit]
concepts = ["{dataset}"]
methods = ["mean_diff", "lda"]
positions = ["last"]
layers = [1, 2]

[[evaluate]]
concept = "toy"
method = "mean_diff"
strengths = [-2, 0, 2]
n_prompts = 2
max_new_tokens = 4
probe = false
"""


def test_shipped_demo_spec_parses() -> None:
    spec = load_job(EXAMPLES / "demo.toml")
    assert spec.models == ("smollm2",) and len(spec.fit.concepts) == 7 and spec.fit.layers is None
    assert spec.evaluate and spec.evaluate[0].concept == "sentiment"


@pytest.mark.parametrize("text,message", [
    ("[job]\nname='x'\n", "needs name and models"),
    ("[job]\nname='x'\nmodels=['m']\n[fit]\nmethods=['svm']\n", "unknown method 'svm'"),
    ("[job]\nname='x'\nmodels=['m']\n[fit]\ncolour='red'\n", "unknown key(s) colour"),
    ("[job]\nname='../escape'\nmodels=['m']\n", "job name"),
    ("[jobs]\nname='x'\n", "unknown table(s) jobs"),
    ("[job\n", "invalid TOML"),
])
def test_bad_specs_name_the_problem(tmp_path: Path, text: str, message: str) -> None:
    p = tmp_path / "bad.toml"
    p.write_text(text)
    with pytest.raises(GnomonError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_job(p)


def test_dag_runs_every_stage_then_resumes(catalog_home: Path, tmp_path: Path) -> None:
    from tests.conftest import write_dataset

    from catalog import Catalog

    data = write_dataset(tmp_path / "toy.jsonl", n_pairs=40)
    p = tmp_path / "fleet.toml"
    p.write_text(SPEC.format(dataset=data))
    # the neutral prompts of a user dataset live beside it in the home
    (catalog_home / "concepts").mkdir(exist_ok=True)
    (catalog_home / "concepts" / "toy_neutral.txt").write_text("the day\na film\n")
    logs: list[str] = []
    out = run_job(load_job(p), home=catalog_home, show_progress=False, log=logs.append)
    assert [k.split("/")[0] for k in out] == ["fit", "fit", "evaluate"]
    assert sum(line.startswith("[run ]") for line in logs) == 3
    assert sum(line.startswith("[done]") and " in " in line for line in logs) == 4  # 3 stages + the job
    recs = Catalog(home=catalog_home).search(concept="toy")
    assert {r.model for r in recs} == {"tiny:llama", "tiny:gpt2"} and len(recs) == 4
    ev = next(v for k, v in out.items() if k.startswith("evaluate/"))
    assert [c["model"] for c in ev["checkpoints"]] == ["tiny:llama", "tiny:gpt2"]
    assert json.loads(Path(ev["path"]).read_text())["concept"] == "toy"
    logs.clear()
    again = run_job(load_job(p), home=catalog_home, show_progress=False, log=logs.append)
    assert sum(line.startswith("[skip]") for line in logs) == 3 and again.keys() == out.keys()
    assert not any(line.startswith("[run ]") for line in logs)
    assert len(Catalog(home=catalog_home).search(concept="toy")) == 4  # nothing registered twice
