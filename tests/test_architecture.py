"""Architecture rules: no import-time side effects, pipeline never imports ray/mlflow,
adapters refuse unknown architectures clearly."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_pipeline_never_imports_ray_or_mlflow() -> None:
    offenders = []
    for path in (ROOT / "pipeline").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in ("ray", "mlflow", "catalog", "jobs")]
    assert offenders == []


def test_only_catalog_imports_mlflow() -> None:
    for pkg in ("jobs",):
        for path in (ROOT / pkg).rglob("*.py"):
            assert "import mlflow" not in path.read_text(), path


@pytest.mark.parametrize("imports,banned", [
    ("import jobs.cli; jobs.cli.build_parser(['--help'])", ("ray", "mlflow", "torch", "duckdb", "transformers")),
    ("import catalog, jobs, pipeline, pipeline.store, pipeline.contrast", ("ray", "mlflow", "duckdb", "transformers")),
])
def test_imports_and_help_start_nothing_heavy(imports: str, banned: tuple[str, ...]) -> None:
    code = f"import sys\n{imports}\nprint(','.join(m for m in {banned!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == ""


def test_unknown_architecture_is_refused_clearly() -> None:
    import torch

    from pipeline.models import adapter_for
    from pipeline.types import GnomonError

    class Config:
        model_type = "mamba"

    class Model(torch.nn.Module):
        config = Config()

    with pytest.raises(GnomonError, match="unsupported architecture 'mamba'.*llama"):
        adapter_for(Model())


def test_layer_out_of_range_names_the_valid_range(tiny_lm: object) -> None:
    from pipeline.types import GnomonError

    with pytest.raises(GnomonError, match=r"valid layers are 0..4"):
        tiny_lm.check_layers([5])  # type: ignore[attr-defined]
