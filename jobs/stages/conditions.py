"""Conditions (CAST rules) as the catalog stores them: a direction version whose tags hold the
threshold ``gnomon condition fit`` chose on validation prompts, with its F1 and provenance.
Shared by ``condition``, ``steer --when`` and ``serve``."""

from __future__ import annotations

import argparse
import datetime
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from jobs.stages.refs import check_refs
from pipeline.types import GnomonError

# lazy: numpy, pyarrow, torch (heavy; imported where used)

PREFIX = "condition."
"""Tag prefix on the condition direction's version."""


def threshold_tags(thr: Any, *, dataset: str, dataset_hash: str, split: str, position: str,
                   model: str, fingerprint: str) -> dict[str, str]:
    """The tags that register a fitted :class:`pipeline.steer.conditional.Threshold`."""
    from pipeline.direction import code_version

    return {PREFIX + k: str(v) for k, v in {
        "threshold": repr(float(thr.threshold)), "comparison": thr.comparison, "f1": repr(float(thr.f1)),
        "precision": repr(float(thr.precision)), "recall": repr(float(thr.recall)),
        "n_pos": thr.n_pos, "n_neg": thr.n_neg, "split": split, "position": position,
        "dataset": dataset, "dataset_hash": dataset_hash, "model": model, "fingerprint": fingerprint,
        "code_version": code_version(),
        "fitted_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }.items()}


def rule_of(record: Any, direction: Any, then: Sequence[Any], name: str = "") -> Any:
    """The :class:`~pipeline.steer.conditional.Conditional` a catalog record's tags describe,
    applying ``then`` (ops) when it fires; refused with the command to run when it has none."""
    from pipeline.steer.conditional import Conditional

    tags: Mapping[str, str] = getattr(record, "tags", {}) or {}
    if PREFIX + "threshold" not in tags:
        raise GnomonError(f"{record.ref} has no fitted condition: run `gnomon condition fit {record.ref}` first")
    fp = tags.get(PREFIX + "fingerprint", "")
    if fp and direction.provenance.fingerprint and fp != direction.provenance.fingerprint:
        raise GnomonError(f"{record.ref}'s condition was fitted on another model (fingerprint {fp}); fit it again")
    position = tags.get(PREFIX + "position", "last")
    return Conditional(direction.layer, direction.unit, float(tags[PREFIX + "threshold"]),
                       tags[PREFIX + "comparison"], list(then),  # type: ignore[arg-type]
                       position=position if position in ("last", "mean") else "last",  # type: ignore[arg-type]
                       name=name or record.ref)


def describe_rule(record: Any) -> str:
    t = record.tags
    return (f"{record.ref} fires when its reading {t.get(PREFIX + 'comparison')} "
            f"{float(t.get(PREFIX + 'threshold', 'nan')):.4g} (validation F1 {float(t.get(PREFIX + 'f1', 'nan')):.3f})")


# ---- used by `gnomon steer --when` ------------------------------------------------------
def resolve_condition(ref: str, tracking_uri: str | None, model: str | None) -> tuple[Any, Any]:
    """The catalog record and direction of a ``--when`` condition (refused without a fitted rule)."""
    (rec,) = check_refs([ref], tracking_uri, model) or [None]
    if rec is None:
        raise GnomonError(f"--when {ref}: a condition is a catalog REF with a fitted threshold, not a file")
    if PREFIX + "threshold" not in (rec.tags or {}):
        raise GnomonError(f"--when {ref}: {rec.ref} has no fitted condition; run `gnomon condition fit {rec.ref}` first")
    rule = describe_rule(rec)[len(rec.ref) + 1:]   # "fires when its reading > t (validation F1 f)"
    print(f"--when {ref} -> {rec.ref} (model {rec.model}, layer {rec.layer}, {rec.method} on {rec.position}): {rule}",
          file=sys.stderr, flush=True)
    from catalog import Catalog

    return rec, Catalog(tracking_uri=tracking_uri).load_record(rec)


def conditional_generate(lm: Any, when: tuple[Any, Any], interventions: list[Any],
                         args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    """The prompt continued with ``interventions`` applied only if the condition fires."""
    from pipeline.steer import check_direction, flatten, generate_rows

    rec, d = when
    check_direction(lm, d, args.force)
    rule = rule_of(rec, d, flatten(interventions))
    (text,), state = generate_rows(lm, [args.prompt], [[rule]], args.max_new_tokens, chat=args.chat)
    fired, reading = rule.fired(state), rule.readings(state)
    t = rec.tags
    return text, {"ref": rec.ref, "fired": bool(fired and fired[0]), "reading": reading[0] if reading else None,
                  "threshold": float(t[PREFIX + "threshold"]), "comparison": t[PREFIX + "comparison"],
                  "f1": float(t.get(PREFIX + "f1", "nan")), "layer": d.layer}
