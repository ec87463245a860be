"""Fine-tuning series: a short causal-LM fine-tune of a registered model, checkpointed.

Method: a *full* fine-tune of the last ``train_blocks`` blocks (everything else frozen:
embeddings, tied LM head, final norm, earlier blocks), AdamW with linear warm-up, batches
drawn deterministically per step (:mod:`pipeline.fleet.train`). Freezing the lower blocks
keeps a step cheap on CPU (no graph is built below the first trained block) and leaves the
residual stream below it, where concept directions are read, moved only through what the
trained blocks write.

Checkpoint ``k`` is registered as ``<prefix>-s<step:04d>`` (kind ``finetune``) whose
parent is the previous checkpoint (the first one's parent is the base), with the
*cumulative* step, the corpus hash as ``data_sha256`` and the recipe in ``settings``.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from pipeline.fleet.corpora import Corpus, save_corpus
from pipeline.fleet.registry import Lineage, read_lineage, version_dir
from pipeline.fleet.versions import is_built, save_version
from pipeline.home import gnomon_home
from pipeline.models.loading import ModelSpec, load_model
from pipeline.types import GnomonError

# lazy: torch (heavy; imported where used)

__all__ = ["FinetuneConfig", "finetune_series", "seed_suffix", "series_ids"]


@dataclass(frozen=True)
class FinetuneConfig:
    steps: int = 30
    """Total optimizer steps of the series."""
    every: int = 5
    """A checkpoint every ``every`` steps (``steps / every`` checkpoints)."""
    lr: float = 5e-5
    """Chosen *after* seeing drift results (not pre-registered): with 1e-4 the negative
    series' VADER shift saturated by step 20 (-0.97, then -0.90, -0.83: not monotone); with
    5e-5 it fell at every checkpoint to -0.66 at step 30. Every configuration tried is in
    the README's drift section."""
    batch_size: int = 8
    max_length: int = 48
    train_blocks: int = 16
    """The last ``train_blocks`` blocks are trained; the rest is frozen. 16 of SmolLM2's 30
    puts the first trained block (14) below the sentiment direction's val-best layer (17);
    with only the last 4 trained every layer up to 26 stays exactly the base model's. Chosen
    *after* seeing drift results (pooled r 0.97 at layer 17 with 16 blocks; 0.52 at layer 28
    and -0.43 at layer 30 with 4), so it is not pre-registered. A series of 30 steps takes
    ~100 s on 2 idle cores."""
    warmup: int = 5
    n_texts: int = 320
    """Size of the shipped corpora (user corpora keep their own size)."""
    seed: int = 0
    """Batch order, and which openings the shipped and self-sampled corpora draw."""
    loss_on: Literal["all", "continuation"] = "continuation"
    """``continuation``: the openings shared by both corpora carry no loss, so the control
    series trains only on the base model's own sampled tokens (the null) and the skewed one
    only on what follows an opening. ``all`` was the recipe before issue 22."""
    append_eos: bool = False
    """End every text with EOS. Off: the corpora's texts are cut, not ended, and SmolLM2
    fine-tuned on ``.<eos>`` texts stopped after one sentence; drift measures length and EOS
    rate per checkpoint either way."""

    def checkpoints(self) -> list[int]:
        if self.every < 1 or self.steps < self.every:
            raise GnomonError(f"fine-tune needs 1 <= every <= steps, got every={self.every}, steps={self.steps}")
        return list(range(self.every, self.steps + 1, self.every))


def seed_suffix(seed: int) -> str:
    """``""`` for seed 0 (the ids fleets had before seeds), ``-seed<k>`` otherwise."""
    return "" if seed == 0 else f"-seed{seed}"


def series_ids(prefix: str, cfg: FinetuneConfig) -> list[str]:
    return [f"{prefix}-s{s:04d}" for s in cfg.checkpoints()]


def _settings(cfg: FinetuneConfig, corpus: Corpus) -> dict[str, object]:
    # Only what shapes the weights: the length of the series and the checkpoint spacing do
    # not (constant LR after warm-up), so a series can be extended by a rerun.
    s = {k: v for k, v in asdict(cfg).items() if k not in ("n_texts", "steps", "every")}
    s.update(method="full fine-tune of the last blocks", corpus=corpus.source, corpus_texts=len(corpus.texts))
    if cfg.loss_on == "continuation" and corpus.prefix_chars is None:
        s["loss_on"] = "all"    # a user corpus names no openings: every token is trained on
    return s


def _built(parent: Lineage, ids: list[str], steps: list[int], series: str, data_sha256: str,
           settings: dict[str, object], home: str | Path | None) -> list[Lineage]:
    """The series' checkpoints already built with this recipe, up to the first gap."""
    done: list[Lineage] = []
    prev = parent
    for vid, step in zip(ids, steps):
        recipe = Lineage(id=vid, kind="finetune", fingerprint="", parent=prev.id,
                         parent_fingerprint=prev.fingerprint, series=series, step=step,
                         data_sha256=data_sha256, settings=settings)
        got = is_built(recipe, home)
        if got is None:
            break
        done.append(got)
        prev = got
    return done


def finetune_series(parent: str, corpus: Corpus, prefix: str, series: str, cfg: FinetuneConfig,
                    home: str | Path | None = None,
                    log: Callable[[str], None] = print, penalty: Any = None,
                    extra_settings: dict[str, object] | None = None) -> list[Lineage]:
    """Build (or finish) the series; returns the lineage of every checkpoint, in order.

    ``penalty(lm)``, when given, is called once with the loaded model and returns a context
    manager that yields the per-step penalty (:mod:`pipeline.fleet.evade`); what it
    optimises must be in ``extra_settings``, which join the recipe in every lineage."""
    import torch

    from pipeline.fleet.train import (
        OPTIMIZER_FILE,
        TrainConfig,
        load_optimizer_state,
        train_until,
    )

    steps = cfg.checkpoints()
    ids = series_ids(prefix, cfg)
    settings = {**_settings(cfg, corpus), **(extra_settings or {})}
    plin = read_lineage(parent, home)   # missing parent -> one clear line
    done = _built(plin, ids, steps, series, corpus.sha256, settings, home)
    prev = done[-1] if done else plin
    if len(done) == len(ids):
        log(f"  {series}: all {len(ids)} checkpoints already built")
        return done
    save_corpus(corpus, gnomon_home(home) / "corpora" / f"{series}-{corpus.sha256[:12]}.jsonl")
    start = (done[-1].step or 0) if done else 0
    lm = load_model(ModelSpec(id=prev.id, dtype="float32"), home=home)
    model, tok = lm.model, lm.tokenizer
    blocks = lm.adapter.get_blocks(model)
    if not 1 <= cfg.train_blocks <= len(blocks):
        raise GnomonError(f"train_blocks must be 1..{len(blocks)} for {parent}, got {cfg.train_blocks}")
    for p in model.parameters():
        p.requires_grad_(False)
    first = len(blocks) - cfg.train_blocks
    named = [(f"block{first + i}.{n}", p) for i, b in enumerate(blocks[first:]) for n, p in b.named_parameters()]
    for _, p in named:
        p.requires_grad_(True)
    opt = torch.optim.AdamW([p for _, p in named], lr=cfg.lr)
    if done and not load_optimizer_state(named, opt, version_dir(prev.id, home) / OPTIMIZER_FILE):
        log(f"  {series}: {prev.id} has no optimizer state; resuming with fresh AdamW moments")
    loss_on = settings["loss_on"]
    log(f"  {series}: training {cfg.train_blocks} blocks of {parent} from step {start} on "
        f"{len(corpus.texts)} texts ({corpus.source}), loss on {loss_on} tokens")
    tcfg = TrainConfig(lr=cfg.lr, batch_size=cfg.batch_size, max_length=cfg.max_length, seed=cfg.seed,
                       warmup=cfg.warmup, append_eos=cfg.append_eos,
                       loss_on="continuation" if loss_on == "continuation" else "all")
    by_step = dict(zip(steps, ids))
    with penalty(lm) if penalty is not None else nullcontext() as extra:
        for step, trained, opt_bytes in train_until(model, tok, list(corpus.texts), named, tcfg, start, steps,
                                                    opt=opt, log=log, prefix_chars=corpus.prefix_chars,
                                                    penalty=extra):
            recipe = Lineage(id=by_step[step], kind="finetune", fingerprint="", parent=prev.id,
                             parent_fingerprint=prev.fingerprint, series=series, step=step,
                             data_sha256=corpus.sha256, settings=settings)
            prev = save_version(trained, tok, recipe, home, extra_files={OPTIMIZER_FILE: opt_bytes})
            done.append(prev)
    return done
