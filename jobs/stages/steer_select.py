"""Choose ``concept@best-steer`` for one model: the registered direction that moves the concept
toward its positive label, at both signs, by a measured margin, while the text stays fluent.

The classification-best direction often steers poorly, so steering gets its own alias,
chosen by a measurement: for the best few eligible versions of the model (by the monitor
rule of :mod:`pipeline.selection`), measure the fluency bound in class-mean separations
(:func:`pipeline.fluency.fluency_bound`) on neutral prompts, then the score at ``-s``, ``0``
and ``+s`` with ``s`` half that bound (:func:`pipeline.fluency.signed_effects`): the
next-token log-odds of the concept's readout words after each neutral prompt (the report's
``log-odds``; one forward pass per candidate), or, for a concept that declares no words, the
likelihood preference of its validation texts. Greedy continuations scored by VADER were
the earlier measure for sentiment: 8 prompts x 12 tokens gave intervals of +-0.2 around
effects of 0.1, and cost 3x the fit itself on the bundled model (``bench/RESULTS.md``,
references). A candidate qualifies only when ``+s`` raises the score and ``-s`` lowers it, each
paired bootstrap 95% interval over items clear of zero, with the KL at ``s`` inside the
bound; the largest ``-s -> +s`` change among those wins. When none qualifies the alias is
removed, and the evidence (bounds, effects, intervals per candidate) is logged as an MLflow
run either way (experiment ``gnomon/<concept>``, run ``select-steer``: params, one metric
series per measured quantity with step = candidate rank, ``evidence/select-steer.json``); the
winning version's ``steer.evidence_run`` tag names that run and ``steer.fluency_bound`` holds
its bound.
"""

from __future__ import annotations

import time
from typing import Any

from pipeline.concepts.record import concept_record
from pipeline.models import load_model
from pipeline.selection import rank
from pipeline.types import GnomonError

# lazy: numpy, pyarrow, torch (heavy; imported where used)

__all__ = ["STEER_ALIAS", "select_steer", "select_steer_for_concept"]

STEER_ALIAS = "best-steer"
MAX_CANDIDATES = 4
N_PROMPTS = 16
"""Neutral prompts: the fluency bound's and the readout log-odds' items (intervals resample them)."""
N_FLUENCY = 4
"""Prompts the fluency bound's search is measured on (1-5 forward passes of these, two rows
each); the candidate's KL at the chosen strength is then checked on all :data:`N_PROMPTS`."""
N_PAIRS = 8
"""Validation texts per class for the likelihood preference."""


def select_steer(catalog: Any, concept: str, model: str, dataset: Any, positive: str, negative: str,
                 home: Any, lm: Any = None, max_candidates: int = MAX_CANDIDATES,
                 log: Any = None) -> dict[str, Any]:
    """Measure the top candidates, point ``model``'s ``best-steer`` at the qualifying one with
    the largest effect (or remove it); returns what was measured (also when nothing qualified)."""
    from catalog.registry import record_candidate
    t0 = time.perf_counter()
    recs = catalog.search(concept=concept, model=model)
    ranked = [c.key for c in rank([record_candidate(r) for r in recs])][:max_candidates]
    if not ranked:
        catalog.point(concept, model, STEER_ALIAS, None)
        return {"alias": None, "reason": "no eligible direction", "candidates": []}
    lm = lm or load_model(model, home=home)
    tok = lm.tokenizer
    pairs = (dataset.split_texts("val", positive, tok, N_PAIRS), dataset.split_texts("val", negative, tok, N_PAIRS))
    if not pairs[0] or not pairs[1]:
        pairs = (dataset.split_texts("train", positive, tok, N_PAIRS),
                 dataset.split_texts("train", negative, tok, N_PAIRS))
    known = concept_record(concept, home, dataset=dataset)
    prompts = list(known.neutral_prompts[:N_PROMPTS]) or [t[:200] for t in pairs[1][:N_PROMPTS]]
    words = known.words   # None: no readout words, the likelihood preference of the validation texts
    scorer = "log-odds" if words is not None else None
    from pipeline.evaluate import next_token_logp

    base = next_token_logp(lm, prompts)   # unsteered, once for every candidate (bound and effects)
    measured = [_measure(catalog, lm, rec, prompts, pairs, words, base,
                         log and (lambda line, i=i: log(f"  best-steer candidate {i}/{len(ranked)} {line}")))
                for i, rec in enumerate(ranked, 1)]
    fit = [m for m in measured if m.get("qualifies")]
    top = max(fit, key=lambda m: m["effect"]) if fit else None
    result: dict[str, Any] = {"alias": STEER_ALIAS if top else None, "ref": top["ref"] if top else None,
                              "scorer": scorer or "likelihood_preference", "candidates": measured,
                              "seconds": round(time.perf_counter() - t0, 2)}
    if top is None:
        result["reason"] = ("no candidate moved the concept toward its positive label at both signs with "
                            "95% intervals clear of zero, within the fluency bound")
    return {**result, "evidence_run": _point(catalog, concept, model, result, top)}


def _measure(catalog: Any, lm: Any, rec: Any, prompts: list[str], pairs: Any, words: Any, base: Any,
             log: Any) -> dict[str, Any]:
    """One candidate: its fluency bound, then the signed effects at a fraction of it."""
    from pipeline.fluency import DEFAULT_FRACTION, DEFAULT_UNIT, FLUENCY_KL, fluency_bound
    from pipeline.signed_effects import signed_effects

    entry: dict[str, Any] = {"ref": rec.ref, "layer": rec.layer, "method": rec.method,
                             "position": rec.position, "unit": DEFAULT_UNIT}
    t1 = time.perf_counter()
    try:
        d = catalog.load_record(rec)
    except Exception as e:  # noqa: BLE001 - a version whose artifact is gone must not sink the others
        return {**entry, "error": str(e).splitlines()[0][:200]}
    fb = fluency_bound(lm, d, prompts[:N_FLUENCY], DEFAULT_UNIT, force=True, base=base[:N_FLUENCY], top_first=True)
    entry["fluency_bound"] = fb.bound
    if fb.bound > 0:
        eff = signed_effects(lm, d, prompts, pairs, DEFAULT_FRACTION * fb.bound, DEFAULT_UNIT,
                             force=True, words=words, base=base)
        entry.update(eff.to_json())
        why = eff.why_not() or (f"KL {eff.kl:.2f} at s is past the fluency bound" if eff.kl > FLUENCY_KL else None)
    else:
        why = "no strength on the grid keeps the text fluent"
    entry["qualifies"], entry["why_not"] = why is None, why
    entry["seconds"] = round(time.perf_counter() - t1, 2)
    if log:
        verdict = "qualifies" if why is None else f"no: {why}"
        log(f"{rec.ref} (L{rec.layer} {rec.method}/{rec.position}): "
            f"bound {fb.bound:g} {DEFAULT_UNIT}, +s {entry.get('plus', float('nan')):+.3f}, "
            f"-s {entry.get('minus', float('nan')):+.3f} ({entry['seconds']:.1f} s): {verdict}")
    return entry


def _point(catalog: Any, concept: str, model: str, result: dict[str, Any], top: dict[str, Any] | None) -> Any:
    """Log the evidence run first, so the winning version can name it (params, per-candidate
    metrics with step = rank, the whole measurement as evidence/select-steer.json), then point
    ``best-steer`` at the winner (or remove it); returns the evidence run's id."""
    run_id = catalog.log_evidence(concept, "select-steer", {"model": model, **result})
    tags = {} if top is None else {
        "steer.evidence_run": run_id, "steer.fluency_bound": f"{top['fluency_bound']:.4g} {top['unit']}",
        "steer.effect": f"{top['effect']:.4g}", "steer.plus": f"{top['plus']:.4g}",
        "steer.plus_ci": f"{top['plus_ci'][0]:.4g}..{top['plus_ci'][1]:.4g}", "steer.minus": f"{top['minus']:.4g}",
        "steer.minus_ci": f"{top['minus_ci'][0]:.4g}..{top['minus_ci'][1]:.4g}",
        "steer.strength": f"{top['strength']:.4g} {top['unit']}", "steer.scorer": top["scorer"],
        "steer.items": str(top["items"])}
    version = int(top["ref"].rsplit("/", 1)[1]) if top else None
    catalog.point(concept, model, STEER_ALIAS, version, tags)
    return run_id


def select_steer_for_concept(catalog: Any, concept: str, model: str, home: Any, log: Any = None,
                             dataset: str | None = None) -> dict[str, Any]:
    """``gnomon catalog select-steer``: the deferred selection, for a concept fitted earlier
    (``dataset``: its file, when it was fitted from one)."""
    from pipeline.datasets import load_dataset

    if not catalog.search(concept=concept, model=model):
        models = sorted({r.model for r in catalog.versions(concept)})
        raise GnomonError(f"{concept} has no version fitted on {model!r}"
                          + (f" (models: {', '.join(models)})" if models else "; run `gnomon fit` first"))
    ds = load_dataset(dataset or concept, home=home)
    if ds.name != concept:
        raise GnomonError(f"--dataset {dataset} holds concept {ds.name!r}, not {concept!r}")
    positive, negative = ds.default_contrast
    return select_steer(catalog, concept, model, ds, positive, negative, home, log=log)
