"""The fleet's edited versions: the base with a concept's direction orthogonalized out.

Needs a fitted direction for the base version. The catalog's best direction of the
concept fitted on the base (same fingerprint) is used when there is one; otherwise a
``mean_diff`` direction at two thirds of the depth (``last`` position) is fitted with the
local executor and registered first, so ``gnomon fleet build`` needs nothing else.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from jobs.runtime.engine import make_executor
from jobs.stages.fit_job import FitSpec, run_fit
from pipeline.models.loading import load_model

# lazy: numpy, pyarrow, torch (heavy; imported where used)

__all__ = ["build_edited"]


def build_edited(base_id: str, concept: str, version_id: str, home: Path | None = None,
                 log: Callable[[str], None] = print) -> Any:
    from catalog import Catalog
    from pipeline.fleet.edited import register_orthogonalized
    from pipeline.fleet.registry import LINEAGE_FILE, read_lineage, version_dir

    if (version_dir(version_id, home) / LINEAGE_FILE).is_file():
        return read_lineage(version_id, home)   # built before (its recipe names the direction used)
    base = read_lineage(base_id, home)
    cat = Catalog(home=home)
    recs = [r for r in cat.search(concept=concept, model=base_id) if r.fingerprint == base.fingerprint]
    if not recs:
        layer = max(1, (base.num_layers or 3) * 2 // 3)
        log(f"  no {concept} direction for {base_id} in the catalog: fitting mean_diff at layer {layer}")
        run_fit(FitSpec(model=base_id, dataset=concept, layers=(layer,), positions=("last",),
                        methods=("mean_diff",)), executor=make_executor("local"), home=home,
                catalog=cat, log=log)
        recs = [r for r in cat.search(concept=concept, model=base_id) if r.fingerprint == base.fingerprint]
    best = [r for r in recs if "best" in r.aliases or any(a.startswith("best") for a in r.aliases)] or recs
    rec = max(best, key=lambda r: r.metrics.get("val_auroc", float("-inf")))
    direction = cat.load(rec.ref)
    lm = load_model(base_id, home=home)
    log(f"  orthogonalizing {base_id} against {rec.ref} (layer {rec.layer}, {rec.method})")
    return register_orthogonalized(lm, direction, version_id, ref=rec.ref, direction_sha256=rec.sha256,
                                   home=home)
