"""``best`` and ``best-monitor`` after a fit: chosen on validation, kept only if they hold up
against the search (:mod:`pipeline.confirm`), set per model (:func:`catalog.refs.scoped_alias`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from catalog.refs import scoped_alias
from pipeline.selection import Candidate, choose

# lazy: numpy (heavy; imported where used)

__all__ = ["alias_targets", "candidate", "select_best"]


def candidate(d: Any, num_layers: int | None) -> Any:
    """A fitted direction as :mod:`pipeline.selection` sees it (validation rows split evenly)."""
    n = int(d.provenance.split_sizes.get("val", 0)) // 2 or None
    return Candidate(key=d, layer=d.layer, num_layers=num_layers, method=d.provenance.method,
                     metrics=dict(d.metrics), n_pos=n, n_neg=n)


def alias_targets(catalog: Any, concept: str, model: str) -> dict[str, Any]:
    """``{alias: {ref, layer, method, position}}`` for ``model``'s per-model aliases (absent: not set)."""
    wanted = {scoped_alias(a, model): a for a in ("best", "best-monitor", "best-steer")}
    out: dict[str, Any] = {}
    for rec in catalog.versions(concept):
        for alias in rec.aliases:
            if alias in wanted:
                out[wanted[alias]] = {"ref": rec.ref, "layer": rec.layer, "method": rec.method,
                                      "position": rec.position, "model": rec.model}
    return dict(sorted(out.items()))


def select_best(spec: Any, concept: str, directions: Sequence[Any], groups: Sequence[Any],
                sweeps: dict[tuple[str, str], dict[str, Any]], records: dict[tuple[str, str, int], Any],
                catalog: Any, num_layers: int, model: str | None = None) -> dict[str, Any]:
    """Point ``best`` and ``best-monitor`` of ``model`` (default ``spec.model``) at the fit's choice, only if it
    holds up against the search (:mod:`pipeline.confirm`); otherwise remove them and say why.

    The choice is made on validation among the registered directions by
    :mod:`pipeline.selection`; the null takes its maximum over every candidate the search
    looked at (each method x position x layer >= 1), and the choice is confirmed on test.
    ``best-monitor`` is the same version: ``gnomon monitor`` reads each direction at its own
    position (the last token, or the running mean of the tokens so far), which is what the
    validation and test figures measure."""
    from pipeline.confirm import confirm_selection

    scores = {(g.position, g.layer, m): sc for g in groups for m, sc in g.scores.items()}
    keyed = [((d.provenance.method, d.provenance.position, d.layer), d) for d in directions if d.layer >= 1]
    cands = [(k, scores[(k[1], k[2], k[0])]) for k, _ in keyed if (k[1], k[2], k[0]) in scores]
    registered = [candidate(s["best"], num_layers) for s in sweeps.values()
                  if (s["best"].provenance.method, s["best"].provenance.position, s["best"].layer) in records]
    top = choose(registered, spec.select_metric)
    key = None if top is None else (top.key.provenance.method, top.key.provenance.position, top.key.layer)
    conf = confirm_selection(cands, key)
    rec = records.get(key) if key is not None else None
    version = rec.version if (conf.reliable and rec is not None) else None
    for alias in ("best", "best-monitor"):
        catalog.point(concept, model or spec.model, alias, version, conf.tags())
    return {"reliable": version is not None, "reason": conf.reason, "ref": rec.ref if rec is not None else None,
            **{k: v for k, v in conf.tags().items()}}
