"""The causal-LM training loop shared by fine-tuning and from-scratch series.

A series is a list of checkpoint steps. Training is deterministic in the step: batch
``s`` is drawn from a generator seeded with ``(seed, s)``, so a series that stopped after
checkpoint ``k`` resumes from that checkpoint's weights and AdamW state
(``optimizer.safetensors`` beside the weights) and takes the same batches it would have.

>>> for step, model, opt_bytes in train_until(model, tok, texts, params, cfg, 0, [10, 20]):  # doctest: +SKIP
...     save(step, model, opt_bytes)
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from pipeline.types import GnomonError

# lazy: safetensors (heavy; imported where used)

__all__ = ["OPTIMIZER_FILE", "TrainConfig", "load_optimizer_state", "optimizer_state_bytes", "train_until"]

OPTIMIZER_FILE = "optimizer.safetensors"


@dataclass(frozen=True)
class TrainConfig:
    lr: float
    batch_size: int
    max_length: int
    seed: int = 0
    warmup: int = 0
    """Linear warm-up steps from 0 to ``lr``; constant afterwards."""
    weight_decay: float = 0.0
    append_eos: bool = False
    """End every text with EOS. Off for fine-tuning: a model fine-tuned on short texts
    ending in ``.<eos>`` learns to stop after the first sentence of any prompt, and its
    continuations (what the behavioural score reads) come out empty."""
    loss_on: Literal["all", "continuation"] = "all"
    """``continuation``: tokens inside each text's opening (``prefix_chars``) carry no loss,
    so a fine-tune learns what follows an opening, not the openings themselves."""


def batch_indices(n: int, batch_size: int, seed: int, step: int) -> np.ndarray:
    """Rows of batch ``step`` (1-based): a fixed function of ``(seed, step)``."""
    rng = np.random.default_rng([seed, step])
    return rng.choice(n, size=min(batch_size, n), replace=False)


def lm_batch(tok: Any, texts: Sequence[str], max_length: int, device: Any,
             append_eos: bool = False, prefix_chars: Sequence[int] | None = None) -> dict[str, torch.Tensor]:
    """Right-padded inputs with labels ``-100`` on padding (the loss skips it) and, with
    ``prefix_chars``, on every token that ends inside its text's first ``prefix_chars[i]``
    characters (character offsets from a fast tokenizer; a slow one counts the tokens of
    the opening alone)."""
    eos = (tok.eos_token or "") if append_eos else ""
    fast = bool(getattr(tok, "is_fast", False))
    enc = tok([t + eos for t in texts], return_tensors="pt", padding=True, truncation=True,
              max_length=max_length, padding_side="right", return_offsets_mapping=prefix_chars is not None and fast)
    labels = enc["input_ids"].clone()                                   # (B, T)
    labels[enc["attention_mask"] == 0] = -100
    if prefix_chars is not None:
        if fast:
            ends = enc.pop("offset_mapping")[..., 1]                        # (B, T) char end of each token
            labels[ends <= torch.tensor(list(prefix_chars))[:, None]] = -100
        else:
            for i, (t, k) in enumerate(zip(texts, prefix_chars)):
                labels[i, : len(tok(t[:k])["input_ids"])] = -100
    return {"input_ids": enc["input_ids"].to(device), "attention_mask": enc["attention_mask"].to(device),
            "labels": labels.to(device)}


def optimizer_state_bytes(named: list[tuple[str, torch.nn.Parameter]], opt: torch.optim.Optimizer) -> bytes:
    """AdamW moments and step counts keyed by parameter name, as safetensors bytes."""
    from safetensors.torch import save

    out: dict[str, torch.Tensor] = {}
    for name, p in named:
        st = opt.state.get(p)
        if not st:
            continue
        for k, v in st.items():
            t = v if isinstance(v, torch.Tensor) else torch.tensor(float(v))
            out[f"{name}::{k}"] = t.detach().to("cpu").contiguous()
    return save(out)


def load_optimizer_state(named: list[tuple[str, torch.nn.Parameter]], opt: torch.optim.Optimizer,
                         path: Path) -> bool:
    """Restore what :func:`optimizer_state_bytes` wrote; ``False`` if there is no file."""
    from safetensors.torch import load_file

    if not path.is_file():
        return False
    saved = load_file(str(path))
    for name, p in named:
        # AdamW keeps ``step`` on the CPU unless capturable; the moments live with the parameter.
        st = {k.split("::", 1)[1]: (v if k.endswith("::step") else v.to(p.device))
              for k, v in saved.items() if k.split("::", 1)[0] == name}
        if st:
            opt.state[p] = st
    return True


def train_until(model: Any, tok: Any, texts: Sequence[str], named: list[tuple[str, torch.nn.Parameter]],
                cfg: TrainConfig, start_step: int, checkpoints: Sequence[int],
                opt: torch.optim.Optimizer | None = None,
                log: Any = None, prefix_chars: Sequence[int] | None = None,
                penalty: Any = None) -> Iterator[tuple[int, Any, bytes]]:
    """Train ``named`` parameters from ``start_step``; yield ``(step, model, optimizer bytes)``
    at every checkpoint step after ``start_step`` (the model is in eval mode while yielded).
    ``prefix_chars`` (one per text) is used when ``cfg.loss_on == "continuation"``.
    ``penalty(batch)``, when given, is added to each step's LM loss after the forward pass
    (it may read what hooks recorded during that pass: :mod:`pipeline.fleet.evade`)."""
    if cfg.loss_on == "continuation" and prefix_chars is None:
        raise GnomonError("loss_on='continuation' needs each text's opening length (prefix_chars)")
    params = [p for _, p in named]
    opt = opt or torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    device = next(model.parameters()).device
    todo = sorted(s for s in checkpoints if s > start_step)
    step = start_step
    for target in todo:
        model.train()
        while step < target:
            step += 1
            for g in opt.param_groups:
                g["lr"] = cfg.lr * min(1.0, step / cfg.warmup) if cfg.warmup else cfg.lr
            rows = batch_indices(len(texts), cfg.batch_size, cfg.seed, step)
            pre = [prefix_chars[i] for i in rows] if cfg.loss_on == "continuation" and prefix_chars else None
            batch = lm_batch(tok, [texts[i] for i in rows], cfg.max_length, device, cfg.append_eos, pre)
            loss = model(**batch).loss
            extra = penalty(batch) if penalty is not None else None
            if extra is not None:
                loss = loss + extra
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            if log is not None and (step % 10 == 0 or step == target):
                log(f"    step {step}: loss {loss.item():.3f}"
                    + (f" (penalty {extra.item():.3f})" if extra is not None else ""))
        model.eval()
        yield step, model, optimizer_state_bytes(named, opt)
