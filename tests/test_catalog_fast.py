"""The MLflow-free reader of the local SQLite catalog gives the same answers as MLflow, and
the everyday catalog edits (delete a version, delete an alias)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pipeline.direction import Direction, Provenance
from pipeline.types import GnomonError


def _direction(seed: int, layer: int, method: str, auroc: float, concept: str = "mood",
               model: str = "tiny:llama") -> Direction:
    prov = Provenance.minimal(hidden_size=8, layer=layer, method=method, position="last", concept=concept,
                              model_id=model, revision="main", positive="pos", negative="neg")
    return Direction(torch.randn(8, generator=torch.Generator().manual_seed(seed)), prov, pos_mean=1.0,
                     neg_mean=-1.0, spread=0.5, resid_norm=3.0,
                     metrics={"val_auroc": auroc, "val_dprime": 4 * auroc, "test_auroc": auroc - 0.05})


@pytest.fixture
def filled(catalog_home: Path) -> object:
    from catalog import Catalog

    cat = Catalog(home=catalog_home)
    for i, (layer, method, auroc) in enumerate([(2, "mean_diff", 0.99), (3, "lda", 1.0), (1, "ccs", 0.97)]):
        cat.register(_direction(i, layer, method, auroc), extra_tags={"num_layers": "4", "val_rows": "60"})
    cat.register(_direction(9, 2, "mean_diff", 0.9, concept="other", model="tiny:gpt2"))
    cat.set_alias("mood/1", "canary")
    return cat


def test_fast_reader_agrees_with_mlflow(filled: object, catalog_home: Path) -> None:
    from catalog.fast import SQLiteReader

    cat = filled
    fast = SQLiteReader.for_uri(cat.tracking_uri)  # type: ignore[attr-defined]
    assert fast is not None
    assert fast.search() == cat.search()  # type: ignore[attr-defined]
    assert fast.search(concept="mood", method="lda") == cat.search(concept="mood", method="lda")  # type: ignore[attr-defined]
    assert fast.search(min_metrics={"val_auroc": 0.98}) == cat.search(min_metrics={"val_auroc": 0.98})  # type: ignore[attr-defined]
    for ref in ("mood@best", "mood@canary", "mood/3", "mood", "other@best-monitor"):
        assert fast.resolve(ref) == cat.resolve(ref)  # type: ignore[attr-defined]
    for bad in ("mood@nope", "mood/9", "nothing"):
        with pytest.raises(GnomonError) as a:
            fast.resolve(bad)
        with pytest.raises(GnomonError) as b:
            cat.resolve(bad)  # type: ignore[attr-defined]
        assert str(a.value) == str(b.value)


def test_fast_reader_declines_what_it_does_not_know(tmp_path: Path) -> None:
    import sqlite3

    from catalog.fast import SQLiteReader

    assert SQLiteReader.for_uri("http://localhost:5000") is None
    assert SQLiteReader.for_uri(f"sqlite:///{tmp_path / 'missing.db'}") is None
    sqlite3.connect(tmp_path / "other.db").execute("CREATE TABLE model_versions (name TEXT)").connection.commit()
    assert SQLiteReader.for_uri(f"sqlite:///{tmp_path / 'other.db'}") is None


def test_catalog_ls_and_show_import_neither_mlflow_nor_torch(filled: object, catalog_home: Path) -> None:
    code = ("import sys; from jobs.cli import main; "
            f"rc = main(['--home', {str(catalog_home)!r}, 'catalog', 'ls', '--json']); "
            f"rc += main(['--home', {str(catalog_home)!r}, 'catalog', 'show', 'mood@best']); "
            "heavy = [m for m in ('mlflow', 'torch', 'ray') if m in sys.modules]; "
            "print('HEAVY', heavy); sys.exit(rc)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.returncode == 0, out.stderr
    assert "HEAVY []" in out.stdout
    listed = json.loads(out.stdout[: out.stdout.index("]\n") + 1])
    assert {r["ref"] for r in listed} == {"mood/1", "mood/2", "mood/3", "other/1"}


def test_rm_deletes_a_version_and_its_aliases(filled: object, catalog_home: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """Deleting the version ``best`` points at removes its aliases and does not re-point
    them: choosing ``best`` takes the fit's held-out scores and search correction (issue 20)."""
    from jobs.cli import main
    from pipeline.types import GnomonError

    cat = filled
    best = cat.resolve("mood@best")  # type: ignore[attr-defined]
    assert main(["--home", str(catalog_home), "catalog", "rm", "mood@best", "--yes"]) == 0  # an alias: only the alias
    assert not any(a.startswith("best--") for a in cat.resolve(best.ref).aliases)  # type: ignore[attr-defined]
    assert len(cat.versions("mood")) == 3  # type: ignore[attr-defined]
    assert main(["--home", str(catalog_home), "catalog", "rm", best.ref, "--yes"]) == 0
    left = cat.versions("mood")  # type: ignore[attr-defined]
    assert best.ref not in {r.ref for r in left} and len(left) == 2
    with pytest.raises(GnomonError, match="not set for any model"):
        cat.resolve("mood@best-monitor")  # type: ignore[attr-defined]
    assert main(["--home", str(catalog_home), "catalog", "rm", "mood", "--yes"]) == 2
    assert "concept/N" in capsys.readouterr().err
