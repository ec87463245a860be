"""Monitors: read directions token by token while the model generates (the "lie detector").

The score of a token on a direction is read the way the direction was fitted, so that its
validation and test figures (AUROC, accuracy at the calibrated threshold) are what the
monitor achieves (Zou et al. 2023, "Representation Engineering", arXiv:2310.01405, section 5
reads honesty per token):

- a ``last``-position direction reads ``h_t @ u``, the residual stream at the direction's
  layer at token ``t``: exactly the ``last`` row collection stores for the text up to ``t``;
- a ``mean``-position direction reads the running mean of ``h @ u`` over the content tokens
  up to ``t`` (special tokens out, the first content token out once there are two:
  :data:`pipeline.collect.MEAN_RULE`): exactly the ``mean`` row of the text up to ``t``.

So the reading at the last prompt token equals :func:`score_texts` on the prompt (checked by
the tests), and that is the figure the catalog's metrics describe. Scores become
probabilities through a 1-D logistic :class:`Calibration`:

- :func:`gaussian_calibration` (default) assumes the two classes project as Gaussians with
  the Direction's class means ``pos_mean``/``neg_mean`` and a shared standard deviation
  ``spread``, with equal priors. Bayes' rule then gives exactly a logistic in the score,

      logit p(pos | s) = (mu+ - mu-) / sigma^2 * (s - (mu+ + mu-) / 2),

  so p = 0.5 at the class midpoint and rises with the score (monotone when mu+ > mu-).
- :func:`calibrate` fits the slope and intercept on held-out scores of each class (Platt
  1999 scaling, with Platt's smoothed targets so separable data keeps a finite slope).

>>> traces = monitor(lm, [honesty], ["Tell me about the moon."], 24)   # doctest: +SKIP
>>> traces[0].alerts                                                   # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from pipeline.direction import Direction
from pipeline.hooks import _hidden, hooks
from pipeline.models.loading import LoadedModel
from pipeline.steer.generate import encode_prompts, greedy
from pipeline.steer.interventions import Intervention, apply, check_direction
from pipeline.types import GnomonError

# lazy: pipeline.collect (tests patch it at the source)


@dataclass(frozen=True)
class Calibration:
    """``p = sigmoid(slope * score + intercept)``."""

    slope: float
    intercept: float
    method: str
    """``gaussian`` (from the Direction's statistics) or ``platt`` (fitted on scores)."""

    def prob(self, scores: np.ndarray | Sequence[float]) -> np.ndarray:
        z = self.slope * np.asarray(scores, dtype=np.float64) + self.intercept
        return 0.5 * (1.0 + np.tanh(0.5 * z))  # = sigmoid(z), without overflow warnings


def gaussian_calibration(direction: Direction) -> Calibration:
    """Equal-variance Gaussian class-conditional calibration (see the module docstring)."""
    mu_p, mu_n, sd = direction.pos_mean, direction.neg_mean, direction.spread
    if not all(math.isfinite(x) for x in (mu_p, mu_n, sd)) or sd <= 0:
        p = direction.provenance
        raise GnomonError(f"{p.concept or 'the direction'}@L{p.layer} has no class statistics (pos_mean, "
                          "neg_mean, spread; e.g. it was read from a control vector), so its scores cannot be "
                          "calibrated: use a fitted direction or pass calibrate(direction, pos_scores, neg_scores)")
    slope = (mu_p - mu_n) / sd**2
    return Calibration(slope=slope, intercept=-slope * 0.5 * (mu_p + mu_n), method="gaussian")


def calibrate(direction: Direction, pos_scores: Sequence[float] | np.ndarray,
              neg_scores: Sequence[float] | np.ndarray, iters: int = 100) -> Calibration:
    """Fit ``p(pos | score)`` on validation scores by Newton's method (Platt scaling).

    Targets are Platt's ``(n+ + 1) / (n+ + 2)`` and ``1 / (n- + 2)`` instead of 1 and 0, the
    maximum-a-posteriori fix that keeps the slope finite when the classes separate.
    ``direction`` only keeps the signature uniform with :func:`gaussian_calibration`; the
    fit uses the scores alone.
    """
    del direction
    sp = np.asarray(pos_scores, np.float64).ravel()
    sn = np.asarray(neg_scores, np.float64).ravel()
    if sp.size == 0 or sn.size == 0:
        raise GnomonError("calibrate needs scores of both classes")
    x = np.concatenate([sp, sn])
    t = np.concatenate([np.full(sp.size, (sp.size + 1) / (sp.size + 2)), np.full(sn.size, 1 / (sn.size + 2))])
    mu, sd = x.mean(), x.std() or 1.0
    z = (x - mu) / sd                                   # standardised: well-conditioned Newton steps
    a, b = 0.0, 0.0
    for _ in range(iters):
        p = 0.5 * (1.0 + np.tanh(0.5 * (a * z + b)))
        w = np.maximum(p * (1 - p), 1e-12)
        g = np.array([((p - t) * z).sum(), (p - t).sum()])
        hess = np.array([[(w * z * z).sum(), (w * z).sum()], [(w * z).sum(), w.sum()]])
        step = np.linalg.solve(hess + 1e-9 * np.eye(2), g)
        a, b = a - step[0], b - step[1]
        if np.abs(step).max() < 1e-10:
            break
    return Calibration(slope=a / sd, intercept=b - a * mu / sd, method="platt")


@dataclass
class MonitorTrace:
    """What the monitored directions read while one prompt was continued."""

    prompt: str
    text: str
    """The continuation (special tokens removed)."""
    tokens: list[str]
    """Each generated token decoded on its own (the EOS token included when emitted)."""
    token_ids: list[int]
    scores: dict[str, list[float]]
    """Direction name -> projection per generated token."""
    probs: dict[str, list[float]]
    """Direction name -> calibrated probability of the positive class per generated token."""
    alerts: list[dict[str, Any]]
    """One entry per (direction, token) whose probability reached the direction's threshold."""
    thresholds: dict[str, float]
    directions: dict[str, dict[str, Any]]
    """Name -> concept, layer, positive/negative labels and the calibration used."""
    prompt_tokens: list[str] = field(default_factory=list)
    prompt_scores: dict[str, list[float]] = field(default_factory=dict)
    prompt_probs: dict[str, list[float]] = field(default_factory=dict)
    reading: dict[str, float] = field(default_factory=dict)
    """Direction name -> the reading of the whole prompt (at its last token): the figure the
    direction's validation/test AUROC and accuracy measure."""
    reading_prob: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self))


def direction_names(directions: Sequence[Direction]) -> list[str]:
    """Readable unique names: ``concept@L<layer>``, suffixed when repeated."""
    names: list[str] = []
    for d in directions:
        p = d.provenance
        base = f"{p.concept or p.method or 'direction'}@L{p.layer}"
        name, k = base, 2
        while name in names:
            name, k = f"{base}#{k}", k + 1
        names.append(name)
    return names


def monitor(lm: LoadedModel, directions: Sequence[Direction], prompts: Sequence[str],
            max_new_tokens: int = 32, *, calibrations: Sequence[Calibration | None] | None = None,
            threshold: float | Mapping[str, float] = 0.5, include_prompt: bool = False,
            interventions: Sequence[Intervention] = (), force: bool = False,
            chat: bool = False) -> list[MonitorTrace]:
    """Generate greedily and score every generated token on every direction.

    Scores are recorded by forward hooks registered after ``interventions`` (so a steered run
    is read after the steering), one score per generated token: the decode loop feeds the
    last token once more so its residual stream is seen too. ``calibrations[i]`` overrides
    the Gaussian calibration of ``directions[i]``; ``threshold`` (a probability, or one per
    direction name) raises an alert for every token at or above it.
    """
    if not directions:
        raise GnomonError("monitor needs at least one direction")
    for d in directions:
        check_direction(lm, d, force)
    names = direction_names(directions)
    given: list[Calibration | None] = list(calibrations) if calibrations is not None else [None] * len(directions)
    if len(given) != len(directions):
        raise GnomonError(f"{len(given)} calibrations for {len(directions)} directions")
    cals = [c if c is not None else gaussian_calibration(d) for c, d in zip(given, directions)]
    thr = {n: float(threshold[n] if isinstance(threshold, Mapping) else threshold) for n in names}
    bad = {n: t for n, t in thr.items() if not 0.0 < t < 1.0}  # NaN fails too
    if bad:
        raise GnomonError(f"alert thresholds must be probabilities strictly between 0 and 1, got {bad}")

    by_layer: dict[int, list[int]] = {}
    for i, d in enumerate(directions):
        by_layer.setdefault(d.layer, []).append(i)
    units = {layer: torch.stack([directions[i].unit for i in idx], dim=1).to(lm.device)  # (D, k)
             for layer, idx in by_layer.items()}
    passes: dict[int, list[torch.Tensor]] = {layer: [] for layer in by_layer}

    def make(layer: int) -> Any:
        def hook(_mod: Any, _args: Any, output: Any) -> None:
            h = _hidden(output).float()                                        # (B, T, D)
            passes[layer].append((h @ units[layer]).cpu())                     # (B, T, k)
        return hook

    def register() -> list[Any]:
        return [lm.adapter.layer_module(lm.model, layer).register_forward_hook(make(layer))
                for layer in by_layer]

    enc = encode_prompts(lm, prompts, chat)
    with apply(list(interventions)), hooks(register):
        gen = greedy(lm, enc, max_new_tokens, feed_last=True)

    n_new = gen.new_ids.shape[1]
    scores = torch.zeros(len(prompts), n_new, len(directions))                   # (B, N, K)
    prompt_scores = torch.zeros(len(prompts), enc["input_ids"].shape[1], len(directions))
    for layer, idx in by_layer.items():
        prompt_scores[:, :, idx] = passes[layer][0]
        scores[:, :, idx] = torch.cat(passes[layer][1:1 + n_new], dim=1)
    pooled = [k for k, d in enumerate(directions) if d.provenance.position == "mean"]
    if pooled:
        prompt_scores, scores = _running_means(lm, gen, prompt_scores, scores, pooled)
    return [_trace(lm, gen, r, p, names, directions, cals, thr, scores[r], prompt_scores[r], include_prompt)
            for r, p in enumerate(prompts)]


def _running_means(lm: LoadedModel, gen: Any, prompt_scores: torch.Tensor, scores: torch.Tensor,
                   pooled: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Replace columns ``pooled`` of the per-token projections with their running means over
    content tokens, by the ``mean`` rule of collection (see the module doc)."""
    tp = prompt_scores.shape[1]
    ids = torch.cat([gen.prompt_ids.cpu(), gen.new_ids.cpu()], dim=1)                    # (B, T)
    real = torch.cat([gen.prompt_mask.bool().cpu(), _generated_mask(gen)], dim=1)         # (B, T)
    special = torch.isin(ids, torch.as_tensor(sorted(set(lm.tokenizer.all_special_ids)), dtype=ids.dtype))
    content = real & ~special                                                            # (B, T)
    count = content.cumsum(1)                                                            # content tokens so far
    first = content & (count == 1)                                                       # the first content token
    keep = content & ~first
    seq = torch.cat([prompt_scores, scores], dim=1)                                      # (B, T, K)
    w = keep.unsqueeze(-1).to(seq.dtype)
    kept_sum, kept_n = (seq * w).cumsum(1), w.cumsum(1)                                  # (B, T, K), (B, T, 1)
    first_val = (seq * first.unsqueeze(-1).to(seq.dtype)).sum(1, keepdim=True)           # (B, 1, K)
    # one content token so far: the mean is that token (as collection keeps a lone token)
    mean = torch.where(kept_n > 0, kept_sum / kept_n.clamp(min=1), first_val.expand_as(seq))
    out = seq.clone()
    out[:, :, list(pooled)] = mean[:, :, list(pooled)]
    return out[:, :tp], out[:, tp:]


def _generated_mask(gen: Any) -> torch.Tensor:
    """(B, N) True for generated tokens up to each row's length."""
    n = gen.new_ids.shape[1]
    lengths = torch.as_tensor(list(gen.lengths))
    return torch.arange(n)[None, :] < lengths[:, None]


def _trace(lm: LoadedModel, gen: Any, r: int, prompt: str, names: list[str], directions: Sequence[Direction],
           cals: list[Calibration], thr: dict[str, float], sc: torch.Tensor, psc: torch.Tensor,
           include_prompt: bool) -> MonitorTrace:
    tok = lm.tokenizer
    n = gen.lengths[r]
    ids = gen.new_ids[r, :n].tolist()
    eos = tok.eos_token_id
    text = tok.decode(ids[:-1] if ids and ids[-1] == eos else ids, skip_special_tokens=True)
    trace = MonitorTrace(prompt=prompt, text=text, tokens=[tok.decode([i]) for i in ids], token_ids=ids,
                         scores={}, probs={}, alerts=[], thresholds=thr, directions={})
    real = gen.prompt_mask[r].bool().cpu()
    if include_prompt:
        trace.prompt_tokens = [tok.decode([i]) for i in gen.prompt_ids[r][real].tolist()]
    for k, (name, d, cal) in enumerate(zip(names, directions, cals)):
        s = sc[:n, k].double().numpy()
        p = cal.prob(s)
        trace.scores[name], trace.probs[name] = s.tolist(), p.tolist()
        pv = d.provenance
        trace.directions[name] = {"concept": pv.concept, "layer": pv.layer, "positive": pv.positive,
                                  "negative": pv.negative, "calibration": asdict(cal)}
        for t in np.flatnonzero(p >= thr[name]):
            trace.alerts.append({"direction": name, "token_index": int(t), "token": trace.tokens[t],
                                 "score": float(s[t]), "prob": float(p[t])})
        trace.directions[name]["position"] = pv.position
        last = float(psc[-1, k])                     # left padding: the last column is the prompt's last token
        trace.reading[name], trace.reading_prob[name] = last, float(cal.prob([last])[0])
        if include_prompt:
            ps = psc[real, k].double().numpy()
            trace.prompt_scores[name], trace.prompt_probs[name] = ps.tolist(), cal.prob(ps).tolist()
    trace.alerts.sort(key=lambda a: (a["token_index"], a["direction"]))
    return trace


def score_texts(lm: LoadedModel, direction: Direction, texts: Sequence[str],
                position: Literal["last", "mean"] = "last", *, batch_size: int = 32,
                force: bool = False) -> np.ndarray:
    """(n,) projections of ``texts`` on ``direction``, read exactly as collection reads rows
    (``pipeline.collect``: left padding, explicit positions, ``mean`` skips special tokens),
    so scores on a test split are comparable with the direction's statistics (e.g. AUROC)."""
    from pipeline.collect import collect

    if position not in ("last", "mean"):
        raise GnomonError(f"unknown position {position!r}: choose last or mean")
    check_direction(lm, direction, force)
    ids = [str(i) for i in range(len(texts))]
    rows = collect(lm, ids, list(texts), layers=[direction.layer], positions=[position],
                   batch_size=batch_size)[direction.layer]
    got, _pos, _ti, acts = rows.arrays()
    order = np.argsort(np.array([int(i) for i in got]))
    unit = direction.unit.double().numpy()
    return (acts[order].astype(np.float64) @ unit)
