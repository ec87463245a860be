"""Fitting methods: contrast sets in, :class:`~pipeline.direction.Direction` out.

One module per method, all with the call shape ``fit_<name>(pos, neg, *, paired, **params)
-> FitResult`` on float64 arrays and all orienting the result so the positive class
projects higher. :func:`fit_direction` is the one entry point: it validates the inputs,
fits, attaches the scale statistics (on the training rows) and the metrics of each
evaluation split, and records method, parameters and split sizes in the provenance.

>>> d = fit_direction("mean_diff", pos, neg, base=Provenance.minimal(hidden_size=64),
...                   eval_sets={"val": (val_pos, val_neg)})      # doctest: +SKIP
>>> d.metrics["val_auroc"], d.pos_mean > d.neg_mean               # doctest: +SKIP
(0.98, True)

Methods that must run across shards keep mergeable statistics instead:
:class:`MeanDiffFitter` and :class:`LeaceFitter` (``update`` / ``merge``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np
import torch

from pipeline import metrics as M
from pipeline.direction import Direction, Provenance
from pipeline.fit._common import FitResult, as_f64
from pipeline.fit._params import Param, check_params
from pipeline.fit.leace import LeaceEraser, LeaceFitter
from pipeline.fit.mean_diff import MeanDiffFitter
from pipeline.methods import method as _method
from pipeline.methods import method_names
from pipeline.types import GnomonError

__all__ = ["FIT_METHODS", "FIT_PARAMS", "FitResult", "Param", "check_method_params", "Indistinguishable", "LeaceEraser", "LeaceFitter", "MeanDiffFitter",
           "fit_direction"]


class Indistinguishable(GnomonError):
    """The two classes cannot be told apart at all (identical activations, or a method's
    direction is exactly zero): the one refusal whose meaning is "chance"."""

Array = np.ndarray | torch.Tensor

class _Registered(Mapping[str, Any]):
    """A live read-only view of the method registry (``pipeline.methods``): a method
    registered later is in it too."""

    def __init__(self, get: Callable[[str], Any]) -> None:
        self._get = get

    def __getitem__(self, name: str) -> Any:
        if name not in method_names():
            raise KeyError(name)
        return self._get(name)

    def __iter__(self) -> Iterator[str]:
        return iter(method_names())

    def __len__(self) -> int:
        return len(method_names())


FIT_METHODS: Mapping[str, Callable[..., FitResult]] = _Registered(lambda m: _method(m).function())
"""Each registered method's ``fit_<name>`` function."""
FIT_PARAMS: Mapping[str, tuple[Param, ...]] = _Registered(lambda m: _method(m).declared())
"""Each method's declared parameters (``PARAMS`` beside it): names, types and ranges."""


def check_method_params(name: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` for method ``name`` checked against its declaration (unknown name, wrong
    type, out of range: one GnomonError naming ``METHOD.NAME``), as the method takes them."""
    return check_params(name, _method(name).declared(), params)


def fit_direction(method: str, pos: Array, neg: Array, *, base: Provenance, paired: bool = False,
                  eval_sets: Mapping[str, tuple[Array, Array]] | None = None,
                  resid_norm: float | None = None, **params: Any) -> Direction:
    """Fit ``method`` on training rows ``pos`` (n+, d) and ``neg`` (n-, d).

    ``paired``: row i of ``pos`` and ``neg`` are a contrast pair. ``eval_sets`` maps a split
    name to its (pos, neg) rows; each gets ``{split}_accuracy`` (thresholded at the training
    midpoint), ``{split}_auroc`` and ``{split}_dprime``; ``train_*`` metrics are always
    added. ``resid_norm`` defaults to the mean L2 norm of the training rows. ``params`` go
    to the method and, with its defaults, into ``provenance.params``.
    """
    fn = _method(method).function()
    params = check_method_params(method, params)
    p, n = _class_rows(pos, neg, base, "train")
    _check_distinguishable(p, n)
    fitted = fn(p, n, paired=paired, **params)
    vec = np.asarray(fitted.vector, dtype=np.float64)
    norm = float(np.linalg.norm(vec))
    if not np.isfinite(vec).all():
        raise GnomonError(f"{method} produced a non-finite direction")
    if norm == 0.0:
        raise Indistinguishable(f"{method} produced a zero direction: the classes have identical statistics")
    unit = vec / norm
    sp, sn = p @ unit, n @ unit
    if sp.mean() < sn.mean():  # every method orients itself; this guards the contract
        vec, unit, sp, sn = -vec, -unit, -sp, -sn
    pos_mean, neg_mean = float(sp.mean()), float(sn.mean())
    threshold = 0.5 * (pos_mean + neg_mean)

    metrics = M.split_metrics("train", sp, sn, threshold)
    sizes = {"train": p.shape[0] + n.shape[0]}
    for split, (ep, en) in (eval_sets or {}).items():
        if split == "train":
            raise GnomonError("eval_sets must not contain 'train': training metrics are always computed")
        ap, an = _class_rows(ep, en, base, split)
        metrics.update(M.split_metrics(split, ap @ unit, an @ unit, threshold))
        sizes[split] = ap.shape[0] + an.shape[0]

    spread = M.pooled_std(sp, sn)
    if spread > 0 and math.isfinite(spread):  # the monitor's default (Gaussian) calibration, checked per split
        slope = (pos_mean - neg_mean) / spread**2
        metrics["train_ece"] = M.ece(sp, sn, slope, -slope * threshold)
        for split, (ep, en) in (eval_sets or {}).items():
            ap, an = _class_rows(ep, en, base, split)
            metrics[f"{split}_ece"] = M.ece(ap @ unit, an @ unit, slope, -slope * threshold)
    _check_above_chance(method, metrics)
    if resid_norm is None:
        resid_norm = float(np.linalg.norm(np.concatenate([p, n]), axis=1).mean())
    prov = dataclasses.replace(base, method=method, params={"paired": paired, **fitted.params},
                               split_sizes=sizes)
    return Direction(vector=torch.as_tensor(vec, dtype=torch.float32), provenance=prov,
                     pos_mean=pos_mean, neg_mean=neg_mean, spread=spread,
                     resid_norm=float(resid_norm), metrics=metrics, extras=dict(fitted.extras))


MIN_ROWS = 2
"""Training rows each class needs: with one, any direction through the two points
separates them perfectly, and nothing about the concept is learnt."""


def _check_distinguishable(p: np.ndarray, n: np.ndarray) -> None:
    """Refuse classes with too few rows or with the same set of activations (the same
    texts under both labels): every method would return noise, PCA and CCS a confident one."""
    if min(p.shape[0], n.shape[0]) < MIN_ROWS:
        raise GnomonError(f"the training split has {p.shape[0]} positive and {n.shape[0]} negative rows; "
                          f"each class needs at least {MIN_ROWS}")
    up, un = np.unique(p, axis=0), np.unique(n, axis=0)
    if up.shape == un.shape and np.array_equal(up, un):
        if up.shape[0] == 1:   # one vector for every row: e.g. the embedding of a shared last token
            raise Indistinguishable("every row of both classes is the same vector (at layer 0 with position "
                                    "'last' this happens when every text ends in the same token, such as '.'): "
                                    "nothing to separate here; read a later layer or position 'mean'")
        raise Indistinguishable("the two classes have identical activations (the same texts under both labels?): "
                                "they are indistinguishable, so no direction can separate them")


def _check_above_chance(method: str, metrics: Mapping[str, float]) -> None:
    """Refuse a direction no better than chance on the validation rows (AUROC <= 0.5, or
    NaN: all projections tied), so a meaningless direction never reaches the catalog."""
    auroc = metrics.get("val_auroc")
    if auroc is not None and not auroc > 0.5:
        raise GnomonError(f"{method}: the direction is at chance on the validation split "
                          f"(AUROC {auroc:.3f}): the classes are not linearly separable here")


def _class_rows(pos: Array, neg: Array, base: Provenance, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Both classes as float64 (n, d), refusing empty classes and width mismatches."""
    p, n = as_f64(pos, f"{split} positive"), as_f64(neg, f"{split} negative")
    for rows, role, label in ((p, "positive", base.positive), (n, "negative", base.negative)):
        if rows.shape[0] == 0:
            name = f" {label!r}" if label else ""
            raise GnomonError(f"the {role} class{name} is empty in the {split} split: "
                              "a contrast needs rows of both classes")
    if p.shape[1] != n.shape[1]:
        raise GnomonError(f"{split}: positive rows have width {p.shape[1]} but negative rows {n.shape[1]}")
    if p.shape[1] != base.hidden_size:
        raise GnomonError(f"{split}: activations have width {p.shape[1]} but the provenance says "
                          f"hidden_size={base.hidden_size}")
    return p, n
