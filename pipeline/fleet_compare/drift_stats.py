"""Drift statistics a reader can check: paired shifts, partial correlations, baselines.

A drift reading pools checkpoints of a skewed and a control fine-tune series. Its pooled
Pearson r (activation shift vs behaviour shift) is mostly "which series, how many steps":
two clusters along a line correlate whatever the projection adds. So next to it we report

- per checkpoint, the shift of the behaviour score and of the projection as **paired**
  differences over the same prompts (greedy decoding of one prompt by the base and by a
  checkpoint is a pair; many continuations are identical), with a bootstrap CI over prompts
  and a sign-flip permutation p-value (the control series is judged by this test);
- across checkpoints, the pooled r, the r within each series, and the **partial** r of
  behaviour with activation shift given ``step``, ``series`` and ``step x series`` (what the
  projection predicts beyond the training schedule), each with a bootstrap CI that
  resamples prompts (and seeds within a series, when a series has several);
- the baselines: how well step, series and step x series alone correlate with either shift,
  and the R^2 of behaviour on those covariates with and without the projection.

Pure numpy; no scipy (percentile bootstrap, Monte Carlo sign-flip test).

>>> paired_shift(np.array([0.1, 0.5, -0.2]), np.array([0.1, 0.5, -0.2]))["shift"]
0.0
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pipeline.types import GnomonError

__all__ = ["CheckpointScores", "COVARIATES", "drift_statistics", "paired_shift", "partial_r", "seed_spread"]

LEVEL = 0.95
COVARIATES = ("step", "series", "step x series")
"""The training schedule a projection has to beat: cumulative step, a skewed-series
indicator, and their product (the 'dummy predictor' of issue 22)."""


@dataclass(frozen=True)
class CheckpointScores:
    """Per-prompt readings of one fine-tuned checkpoint (prompts in the base's order)."""

    version: str
    series: str
    """The series group (skewed or control), the same for every seed."""
    seed: int
    step: int
    behaviour: np.ndarray
    """(P,) behavioural score of each prompt's continuation."""
    projection: np.ndarray
    """(P,) projection of each prompt's activation on the base unit vector."""


def _ci(x: np.ndarray, level: float = LEVEL) -> list[float]:
    x = x[np.isfinite(x)]
    if x.size < 10:
        return [float("nan"), float("nan")]
    a = (1 - level) / 2
    return [float(np.quantile(x, a)), float(np.quantile(x, 1 - a))]


def _r(a: np.ndarray, b: np.ndarray) -> float:
    if a.size < 3 or a.std() < 1e-12 or b.std() < 1e-12:
        return float("nan")
    a, b = a - a.mean(), b - b.mean()
    return float((a @ b) / np.sqrt((a @ a) * (b @ b)))


def _residual(y: np.ndarray, covariates: np.ndarray) -> np.ndarray:
    x = np.column_stack([np.ones(y.size), covariates])                       # (n, 1 + k)
    beta, *_ = np.linalg.lstsq(x, y, rcond=None)
    return y - x @ beta


def partial_r(y: np.ndarray, x: np.ndarray, covariates: np.ndarray) -> float:
    """Pearson r of ``y`` and ``x`` after regressing both on ``covariates`` (n, k) with an
    intercept; NaN when either residual is constant or fewer than k + 3 points remain."""
    y, x = np.asarray(y, np.float64), np.asarray(x, np.float64)
    c = np.asarray(covariates, np.float64).reshape(y.size, -1)
    if y.size < c.shape[1] + 3:
        return float("nan")
    return _r(_residual(y, c), _residual(x, c))


def _r2(y: np.ndarray, x: np.ndarray) -> float:
    tot = float(((y - y.mean()) ** 2).sum())
    return float("nan") if tot < 1e-24 else 1.0 - float((_residual(y, x) ** 2).sum()) / tot


def _sign_flip_p(d: np.ndarray, rng: np.random.Generator, n_perm: int = 20000) -> float:
    """Two-sided p of mean(d) = 0 under the exchangeability of each pair's sign."""
    if not np.any(d):
        return 1.0
    signs = rng.choice(np.array([-1.0, 1.0]), size=(n_perm, d.size))
    hits = int((np.abs(signs @ d) >= abs(d.sum()) - 1e-12).sum())
    return (hits + 1) / (n_perm + 1)


def paired_shift(base: np.ndarray, ckpt: np.ndarray, n_boot: int = 2000, seed: int = 0) -> dict[str, float | int | list[float]]:
    """Mean of ``ckpt - base`` over prompts with its paired bootstrap CI, paired and unpaired
    standard errors and z, and the sign-flip p-value. The unpaired SE (base and checkpoint
    SEs in quadrature) is what earlier reports used; it ignores that the two score the same
    prompts, so it overstates the noise of a checkpoint that repeats the base."""
    b, c = np.asarray(base, np.float64).reshape(-1), np.asarray(ckpt, np.float64).reshape(-1)
    if b.shape != c.shape or b.size < 2:
        raise GnomonError(f"a paired shift needs the same >= 2 prompts on both sides; got {b.size} and {c.size}")
    d, n = c - b, b.size
    rng = np.random.default_rng(seed)
    boot = d[rng.integers(0, n, size=(n_boot, n))].mean(1)
    se_p = float(d.std(ddof=1) / np.sqrt(n))
    se_u = float(np.hypot(b.std(ddof=1), c.std(ddof=1)) / np.sqrt(n))
    m = float(d.mean())

    def z(se: float) -> float:
        return m / se if se > 0 else (0.0 if m == 0 else float(np.copysign(np.inf, m)))

    return {"shift": m, "ci": _ci(boot), "se_paired": se_p, "se_unpaired": se_u, "z_paired": z(se_p),
            "z_unpaired": z(se_u), "p_paired": _sign_flip_p(d, rng), "n": n, "n_unchanged": int((d == 0).sum())}


def _design(cks: Sequence[CheckpointScores], skewed: str) -> tuple[np.ndarray, np.ndarray]:
    step = np.array([c.step for c in cks], np.float64)
    skew = np.array([c.series == skewed for c in cks], np.float64)
    return step, skew


def _stats(act: np.ndarray, beh: np.ndarray, step: np.ndarray, skew: np.ndarray) -> dict[str, float]:
    cov = np.column_stack([step, skew, step * skew])                          # (n, 3)
    out = {"pooled_r": _r(act, beh), "partial_r": partial_r(beh, act, cov),
           "within_r.skewed": _r(act[skew == 1], beh[skew == 1]), "within_r.control": _r(act[skew == 0], beh[skew == 0]),
           "r2_covariates": _r2(beh, cov), "r2_covariates_projection": _r2(beh, np.column_stack([cov, act]))}
    out["r2_gain"] = out["r2_covariates_projection"] - out["r2_covariates"]
    for name, col in zip(COVARIATES, cov.T):
        out[f"baseline.{name}.behaviour"] = _r(col, beh)
        out[f"baseline.{name}.activation"] = _r(col, act)
    return out


def drift_statistics(base_behaviour: np.ndarray, base_projection: np.ndarray, cks: Sequence[CheckpointScores],
                     skewed: str, control: str, n_boot: int = 1000, seed: int = 0,
                     alpha: float = 0.05) -> dict[str, object]:
    """Everything item 1 of issue 22 asks for, as JSON-ready values (see the module doc).

    The bootstrap draws prompts with replacement (the same draw for the base and every
    checkpoint, so each shift stays paired) and, where a series has several seeds, whole
    seeds with replacement within each series: its CIs cover prompt sampling and, with
    seeds, training randomness; with one seed they say nothing about the latter.
    """
    if len(cks) < 3:
        raise GnomonError(f"drift needs at least 3 fine-tuned checkpoints to correlate; got {len(cks)}")
    bb, bp = np.asarray(base_behaviour, np.float64), np.asarray(base_projection, np.float64)
    beh = np.stack([np.asarray(c.behaviour, np.float64) for c in cks])        # (C, P)
    proj = np.stack([np.asarray(c.projection, np.float64) for c in cks])      # (C, P)
    if beh.shape[1] != bb.size or proj.shape[1] != bp.size:
        raise GnomonError("every checkpoint must be scored on the base model's prompts")
    step, skew = _design(cks, skewed)
    point = _stats(proj.mean(1) - bp.mean(), beh.mean(1) - bb.mean(), step, skew)
    seeds = {s: sorted({c.seed for c in cks if c.series == s}) for s in (skewed, control)}
    ci = _bootstrap_ci(cks, seeds, (bp, proj), (bb, beh), step, skew, n_boot, np.random.default_rng(seed), point)
    p = bb.size

    def est(k: str) -> dict[str, object]:
        return {"value": point[k], "ci": ci[k]}

    per = []
    for i, c in enumerate(cks):
        per.append({"version": c.version, "series": c.series, "seed": c.seed, "step": c.step,
                    "behaviour_shift": paired_shift(bb, beh[i], seed=seed + i),
                    "activation_shift": paired_shift(bp, proj[i], seed=seed + i)})
    ctl = [x for x in per if x["series"] == control]
    k = max(len(ctl), 1)
    moved = [x["version"] for x in ctl if x["behaviour_shift"]["p_paired"] < alpha / k]  # type: ignore[index,operator]
    return {
        "n_checkpoints": len(cks), "n_prompts": p, "seeds": seeds,
        "bootstrap": {"replicates": n_boot, "level": LEVEL,
                      "over": "prompts and seeds" if any(len(v) > 1 for v in seeds.values()) else "prompts (one seed)"},
        "pooled_r": est("pooled_r"),
        "within_series_r": {skewed: est("within_r.skewed"), control: est("within_r.control")},
        "partial_r": {**est("partial_r"), "given": list(COVARIATES)},
        "baselines": {name: {"r_behaviour": est(f"baseline.{name}.behaviour"),
                             "r_activation": est(f"baseline.{name}.activation")} for name in COVARIATES},
        "r2": {"covariates": est("r2_covariates"), "covariates_and_projection": est("r2_covariates_projection"),
               "gain_from_projection": est("r2_gain")},
        "checkpoints": per,
        "control_test": {"test": "paired sign-flip permutation over prompts, Bonferroni over the control checkpoints",
                         "alpha": alpha, "checkpoints": len(ctl), "moved": moved, "null_holds": not moved,
                         "max_abs_z_paired": max((abs(x["behaviour_shift"]["z_paired"]) for x in ctl),  # type: ignore[index,arg-type]
                                                 default=0.0)},
        "by_step": seed_spread(per),
    }


def _bootstrap_ci(cks: Sequence[CheckpointScores], seeds: dict[str, list[int]], projections: tuple[np.ndarray, np.ndarray],
                  behaviours: tuple[np.ndarray, np.ndarray], step: np.ndarray, skew: np.ndarray, n_boot: int,
                  rng: np.random.Generator, keys: Sequence[str]) -> dict[str, object]:
    """The CI of every statistic of :func:`_stats`: prompts drawn with replacement (one draw
    for the base (P,) and every checkpoint (C, P), so shifts stay paired) and, where a series
    has several seeds, whole seeds with replacement within each series."""
    (bp, proj), (bb, beh) = projections, behaviours
    rows = {(s, sd): [i for i, c in enumerate(cks) if c.series == s and c.seed == sd] for s in seeds for sd in seeds[s]}
    reps: dict[str, list[float]] = {k: [] for k in keys}
    p = bb.size
    for _ in range(n_boot):
        pi = rng.integers(0, p, size=p)
        keep = [i for s, sds in seeds.items() for sd in (rng.choice(sds, size=len(sds)) if len(sds) > 1 else sds)
                for i in rows[(s, int(sd))]]
        a = proj[keep][:, pi].mean(1) - bp[pi].mean()
        b = beh[keep][:, pi].mean(1) - bb[pi].mean()
        for k, v in _stats(a, b, step[keep], skew[keep]).items():
            reps[k].append(v)
    return {k: _ci(np.asarray(v)) for k, v in reps.items()}


def seed_spread(per: Sequence[dict[str, object]]) -> dict[str, dict[str, dict[str, object]]]:
    """Per series and step: mean, SD, min and max of both shifts across seeds."""
    out: dict[str, dict[str, dict[str, object]]] = {}
    groups: dict[tuple[str, int], list[dict[str, object]]] = {}
    for x in per:
        groups.setdefault((str(x["series"]), int(x["step"])), []).append(x)  # type: ignore[call-overload]
    for (s, st), xs in sorted(groups.items()):
        cell: dict[str, object] = {"n_seeds": len(xs)}
        for m in ("behaviour_shift", "activation_shift"):
            v = np.array([x[m]["shift"] for x in xs], np.float64)  # type: ignore[index]
            cell[m] = {"mean": float(v.mean()), "sd": float(v.std(ddof=1)) if v.size > 1 else float("nan"),
                       "min": float(v.min()), "max": float(v.max())}
        out.setdefault(s, {})[str(st)] = cell
    return out
