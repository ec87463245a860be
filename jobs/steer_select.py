"""Choose ``concept@best-steer``: the registered direction that moves the concept most while
the text stays fluent.

The classification-best direction often steers poorly, so steering gets its own alias,
chosen by a measurement: for the best few eligible versions (by the monitor rule of
:mod:`pipeline.selection`), measure the fluency bound in mean residual norms
(:func:`pipeline.fluency.fluency_bound`) on a few neutral prompts, then the dose-response
at half that bound (:func:`pipeline.fluency.dose_response`, the concept's scorer or the
likelihood preference of its validation pairs). The largest positive effect wins. A few
forward passes per candidate: seconds on the bundled model.
"""

from __future__ import annotations

from typing import Any

from pipeline.types import GnomonError

__all__ = ["STEER_ALIAS", "select_steer"]

STEER_ALIAS = "best-steer"
MAX_CANDIDATES = 4
N_PROMPTS = 4
N_PAIRS = 8


def select_steer(catalog: Any, concept: str, model: str, dataset: Any, positive: str, negative: str,
                 home: Any, lm: Any = None, max_candidates: int = MAX_CANDIDATES,
                 log: Any = None) -> dict[str, Any]:
    """Measure the top candidates, point ``best-steer`` (and ``best-steer-<model slug>``) at
    the winner; returns what was measured (also when nothing qualified)."""
    from catalog.refs import best_alias
    from catalog.registry import record_candidate
    from jobs.evaluate_job import CONCEPT_SCORERS
    from pipeline.datasets import neutral_prompts
    from pipeline.fluency import (
        DEFAULT_FRACTION,
        DEFAULT_UNIT,
        FLUENCY_KL,
        dose_response,
        fluency_bound,
    )
    from pipeline.models import load_model
    from pipeline.selection import rank

    recs = catalog.search(concept=concept, model=model)
    ranked = [c.key for c in rank([record_candidate(r) for r in recs])][:max_candidates]
    if not ranked:
        return {"alias": None, "reason": "no eligible direction", "candidates": []}
    lm = lm or load_model(model, home=home)
    tok = lm.tokenizer
    pairs = (dataset.split_texts("val", positive, tok, N_PAIRS), dataset.split_texts("val", negative, tok, N_PAIRS))
    if not pairs[0] or not pairs[1]:
        pairs = (dataset.split_texts("train", positive, tok, N_PAIRS),
                 dataset.split_texts("train", negative, tok, N_PAIRS))
    try:
        prompts = neutral_prompts(concept, home=home)[:N_PROMPTS]
    except GnomonError:
        prompts = []
    prompts = prompts or [t[:200] for t in pairs[1][:N_PROMPTS]]
    scorer = CONCEPT_SCORERS.get(concept)
    measured = []
    for rec in ranked:
        entry: dict[str, Any] = {"ref": rec.ref, "layer": rec.layer, "method": rec.method,
                                 "position": rec.position, "unit": DEFAULT_UNIT}
        try:
            d = catalog.load(rec.ref)
        except Exception as e:  # noqa: BLE001 - a version whose artifact is gone must not sink the others
            measured.append({**entry, "error": str(e).splitlines()[0][:200]})
            continue
        fb = fluency_bound(lm, d, prompts, DEFAULT_UNIT, force=True)
        entry["fluency_bound"] = fb.bound
        if fb.bound > 0:
            dr = dose_response(lm, d, prompts, pairs, DEFAULT_FRACTION * fb.bound, DEFAULT_UNIT,
                               scorer=scorer, force=True)
            entry.update(dr.to_json())
        measured.append(entry)
        if log:
            log(f"  steer candidate {rec.ref} (L{rec.layer} {rec.method}/{rec.position}): bound "
                f"{fb.bound:g} {DEFAULT_UNIT}, effect {entry.get('effect', float('nan')):+.3f}")
    fit = [m for m in measured if m.get("effect", 0.0) > 0 and m.get("kl", 1e9) <= FLUENCY_KL]
    if not fit:
        return {"alias": None, "reason": "no candidate moved the concept within the fluency bound",
                "candidates": measured}
    top = max(fit, key=lambda m: m["effect"])
    for alias in (STEER_ALIAS, f"{STEER_ALIAS}-{best_alias(model).removeprefix('best-')}"):
        catalog.set_alias(top["ref"], alias)
    return {"alias": STEER_ALIAS, "ref": top["ref"], "scorer": top["scorer"], "candidates": measured}
