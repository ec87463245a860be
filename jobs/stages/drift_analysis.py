"""From the per-version drift tasks' readings to the report ``gnomon drift`` prints.

The maths lives in ``pipeline.fleet_compare`` (:mod:`~pipeline.fleet_compare.drift_stats`,
:mod:`~pipeline.fleet_compare.screening`, :mod:`~pipeline.fleet_compare.regurgitation`);
this module only lines the readings up: which checkpoint belongs to which series group and
seed, which corpus each was trained on, and which prompts copy that corpus.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from pipeline.concepts.behaviour import concept_scorer, score_texts

# lazy: pyarrow (heavy; imported where used)

__all__ = ["Member", "analyse", "behaviour_checks", "screening"]

Member = tuple[str, str, int, int, str]
"""(version, series group, seed, step, the series it was trained in)."""


def behaviour_checks(base: dict[str, Any], members: Sequence[Member], res: Sequence[dict[str, Any]],
                     train: dict[str, list[str]]) -> list[dict[str, Any]]:
    """Per checkpoint: the fraction of continuations copying >= 20 characters of its own
    training corpus (and the base's fraction against the same corpus: what copying by
    chance looks like), the paired behaviour shift on the prompts where neither copies, and
    the paired shift of continuation length and of the EOS rate (a fine-tune on texts
    without EOS teaches a model to run on; this measures it as its own effect)."""
    from pipeline.fleet_compare.drift_stats import paired_shift
    from pipeline.fleet_compare.regurgitation import MIN_CHARS, copied, fragments

    frags = {s: fragments(texts, MIN_CHARS) for s, texts in train.items()}
    out = []
    for i, ((vid, group, seed, step, series), r) in enumerate(zip(members, res)):
        row: dict[str, Any] = {"version": vid, "series": group, "seed": seed, "step": step,
                               "eos_rate": float(np.mean(r["ended_eos"])), "eos_rate_base": float(np.mean(base["ended_eos"])),
                               "eos_shift": paired_shift(np.asarray(base["ended_eos"], float),
                                                         np.asarray(r["ended_eos"], float), seed=i),
                               "length_shift": paired_shift(np.asarray(base["n_tokens"], float),
                                                            np.asarray(r["n_tokens"], float), seed=i)}
        if series in frags:
            ck = copied(r["texts"], (), MIN_CHARS, frags[series])
            bc = copied(base["texts"], (), MIN_CHARS, frags[series])
            clean = [j for j, (a, b) in enumerate(zip(ck, bc)) if not a and not b]
            row |= {"copied_fraction": float(np.mean(ck)), "copied_fraction_base": float(np.mean(bc)),
                    "n_clean_prompts": len(clean)}
            if len(clean) >= 2:
                row["behaviour_shift_clean"] = paired_shift(np.asarray(base["scores"])[clean],
                                                            np.asarray(r["scores"])[clean], seed=i)
        out.append(row)
    return out


def screening(base: dict[str, Any], screen: dict[str, tuple[str, ...]], sign: float,
              concept: Any, n_boot: int = 1000, home: Any = None) -> dict[str, Any]:
    """Per position, the projection screen's AUROC beside the lexicon and bag-of-words
    baselines on the same samples, each with a CI (see :mod:`pipeline.fleet_compare.screening`).
    ``concept``: its :class:`~pipeline.concepts.record.Concept` (the scorer is the lexicon), or a name."""
    from pipeline.fleet_compare.screening import screening_table

    name = concept_scorer(concept, home) if isinstance(concept, str) else concept.scorer
    lex = None
    if name:
        lex = (score_texts(name, screen["skewed"]), score_texts(name, screen["control"]))
    out: dict[str, Any] = {}
    for pos in ("last", "mean"):
        sk = np.asarray(base["corpus.skewed"][pos]) - base["projection"]
        ct = np.asarray(base["corpus.control"][pos]) - base["projection"]
        table = screening_table((sk, ct), screen["skewed"], screen["control"], sign, lex, name or "lexicon", n_boot)
        out[pos] = {**table["projection"], "baselines": {k: v for k, v in table.items() if k != "projection"},
                    "mean_projection_difference_skewed": float(sk.mean()),
                    "mean_projection_difference_control": float(ct.mean())}
    return out


def series_curves(by_step: dict[str, dict[str, dict[str, Any]]]) -> dict[str, dict[str, list[float]]]:
    """Per series group: steps, and the mean and SD across seeds of both shifts."""
    out: dict[str, dict[str, list[float]]] = {}
    for s, cells in by_step.items():
        steps = sorted(cells, key=int)
        c = out.setdefault(s, {"step": [int(x) for x in steps]})
        for m in ("activation_shift", "behaviour_shift"):
            c[m] = [cells[x][m]["mean"] for x in steps]
            c[f"{m}_sd"] = [cells[x][m]["sd"] for x in steps]
            c[f"{m}_min"] = [cells[x][m]["min"] for x in steps]
            c[f"{m}_max"] = [cells[x][m]["max"] for x in steps]
        c["n_seeds"] = [cells[x]["n_seeds"] for x in steps]
    return out


def analyse(base: dict[str, Any], members: Sequence[Member], res: Sequence[dict[str, Any]], skewed: str,
            control: str, n_boot: int = 1000) -> dict[str, Any]:
    """The ``drift`` block of the report: pooled r as before, and the statistics next to it."""
    from pipeline.fleet_compare.drift_stats import CheckpointScores, drift_statistics

    cks = [CheckpointScores(vid, group, seed, step, np.asarray(r["scores"]), np.asarray(r["projections"]))
           for (vid, group, seed, step, _), r in zip(members, res)]
    st = drift_statistics(np.asarray(base["scores"]), np.asarray(base["projections"]), cks, skewed, control, n_boot)
    points = [{"version": c["version"], "series": c["series"], "seed": c["seed"], "step": c["step"],
               "projection": r["projection"], "behaviour": r["behaviour"],
               "activation_shift": c["activation_shift"]["shift"], "behaviour_shift": c["behaviour_shift"]["shift"]}
              for c, r in zip(st["checkpoints"], res)]  # type: ignore[call-overload]
    return {"pearson_r": st["pooled_r"]["value"], "n_points": len(points),  # type: ignore[index]
            "series": series_curves(st["by_step"]), "points": points, "statistics": st}  # type: ignore[arg-type]
