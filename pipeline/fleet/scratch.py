"""From-scratch series: a small Llama-style model trained on the project's corpus.

The model is a ``LlamaForCausalLM`` with a few blocks of width 128-256 (default 4 x 192,
6 heads, 2 KV heads, tied embeddings) and SmolLM2's tokenizer (49,152 tokens; taken from
the registered base version, so no download), trained from a seeded random
initialisation on :func:`~pipeline.fleet.corpora.scratch_corpus` (every shipped concept
dataset's texts plus neutral diary text). Checkpoints sit at log-spaced steps; the step-0
checkpoint is the random initialisation and the root of the series (no parent), and each
later checkpoint's parent is the previous one. ``tokenizer="tiny"`` uses the character
tokenizer of the tiny test models instead (tests: seconds).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pipeline.fleet.corpora import Corpus, save_corpus
from pipeline.fleet.registry import Lineage, version_dir
from pipeline.fleet.versions import is_built, save_version
from pipeline.home import gnomon_home
from pipeline.models.loading import ModelSpec, default_device, load_model
from pipeline.models.tiny import tiny_tokenizer
from pipeline.types import GnomonError

# lazy: torch, transformers (heavy; imported where used)

__all__ = ["ScratchConfig", "scratch_ids", "train_scratch"]


@dataclass(frozen=True)
class ScratchConfig:
    hidden_size: int = 192
    num_layers: int = 4
    num_heads: int = 6
    num_kv_heads: int = 2
    intermediate_size: int = 512
    checkpoints: tuple[int, ...] = (0, 10, 30, 100, 300)
    """Log-spaced checkpoint steps; 0 is the random initialisation."""
    lr: float = 2e-3
    warmup: int = 20
    batch_size: int = 8
    max_length: int = 48
    seed: int = 0
    tokenizer: str = "base"
    """``base``: the fleet's base version's tokenizer (SmolLM2's); ``tiny``: character-level."""
    n_generic: int = 2000
    """Generic (neutral diary) texts added to the concept texts."""

    def steps(self) -> list[int]:
        if self.hidden_size % self.num_heads or self.num_heads % self.num_kv_heads:
            raise GnomonError(f"scratch model: hidden_size {self.hidden_size} must be a multiple of num_heads "
                              f"{self.num_heads}, and num_heads of num_kv_heads {self.num_kv_heads}")
        s = sorted({int(x) for x in self.checkpoints})
        if not s or s[0] != 0:
            raise GnomonError("a from-scratch series starts with checkpoint 0 (the random initialisation)")
        return s


def scratch_ids(prefix: str, cfg: ScratchConfig) -> list[str]:
    return [f"{prefix}-s{s:05d}" for s in cfg.steps()]


def _tokenizer(source: str, home: str | Path | None) -> Any:
    if source == "tiny":
        return tiny_tokenizer()
    from transformers import AutoTokenizer

    d = version_dir(source, home)
    if not (d / "config.json").is_file():
        raise GnomonError(f"tokenizer source {source!r} is not a registered version; build the base first")
    return AutoTokenizer.from_pretrained(d, local_files_only=True)


def _init_model(cfg: ScratchConfig, tok: Any) -> Any:
    import torch
    import transformers as tf

    torch.manual_seed(cfg.seed)
    conf = tf.LlamaConfig(
        vocab_size=len(tok), hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_kv_heads, max_position_embeddings=max(256, cfg.max_length),
        tie_word_embeddings=True, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id)
    return tf.LlamaForCausalLM(conf)


def train_scratch(corpus: Corpus, prefix: str, cfg: ScratchConfig, tokenizer_from: str = "smollm2-base",
                  home: str | Path | None = None, series: str = "scratch",
                  log: Callable[[str], None] = print) -> list[Lineage]:
    """Build (or finish) the series; returns every checkpoint's lineage, in step order.

    Why 63 lines: resuming (the last checkpoint, its optimizer state), training to each step
    and registering each checkpoint share the model, the optimizer and the lineage so far."""
    import torch

    from pipeline.fleet.train import (
        OPTIMIZER_FILE,
        TrainConfig,
        load_optimizer_state,
        train_until,
    )

    steps = cfg.steps()
    ids = scratch_ids(prefix, cfg)
    # Checkpoint steps do not shape the weights at a step: a rerun may add checkpoints.
    settings: dict[str, Any] = {k: v for k, v in asdict(cfg).items() if k != "checkpoints"}
    settings.update(tokenizer=tokenizer_from, corpus=corpus.source, corpus_texts=len(corpus.texts),
                    architecture="LlamaForCausalLM")
    done: list[Lineage] = []
    prev: Lineage | None = None
    for vid, step in zip(ids, steps):
        recipe = Lineage(id=vid, kind="scratch", fingerprint="", parent=prev.id if prev else None,
                         parent_fingerprint=prev.fingerprint if prev else None, series=series, step=step,
                         data_sha256=corpus.sha256, settings=settings)
        got = is_built(recipe, home)
        if got is None:
            break
        done.append(got)
        prev = got
    if len(done) == len(ids):
        log(f"  {series}: all {len(ids)} checkpoints already built")
        return done
    save_corpus(corpus, gnomon_home(home) / "corpora" / f"{series}-{corpus.sha256[:12]}.jsonl")
    if prev is None:
        tok = _tokenizer(tokenizer_from, home)
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        model = _init_model(cfg, tok).to(default_device())
        recipe = Lineage(id=ids[0], kind="scratch", fingerprint="", series=series, step=0,
                         data_sha256=corpus.sha256, settings=settings)
        prev = save_version(model, tok, recipe, home)
        done.append(prev)
    else:
        lm = load_model(ModelSpec(id=prev.id, dtype="float32"), home=home)
        model, tok = lm.model, lm.tokenizer
    named = list(model.named_parameters())
    opt = torch.optim.AdamW([p for _, p in named], lr=cfg.lr, weight_decay=0.01)
    start = prev.step or 0
    if start and not load_optimizer_state(named, opt, version_dir(prev.id, home) / OPTIMIZER_FILE):
        log(f"  {series}: {prev.id} has no optimizer state; resuming with fresh AdamW moments")
    log(f"  {series}: training {cfg.num_layers}x{cfg.hidden_size} from step {start} on {len(corpus.texts)} texts")
    tcfg = TrainConfig(lr=cfg.lr, batch_size=cfg.batch_size, max_length=cfg.max_length, seed=cfg.seed,
                       warmup=cfg.warmup, weight_decay=0.01, append_eos=True)
    by_step = dict(zip(steps, ids))
    for step, trained, opt_bytes in train_until(model, tok, list(corpus.texts), named, tcfg, start, steps,
                                                opt=opt, log=log):
        recipe = Lineage(id=by_step[step], kind="scratch", fingerprint="", parent=prev.id,
                         parent_fingerprint=prev.fingerprint, series=series, step=step,
                         data_sha256=corpus.sha256, settings=settings)
        prev = save_version(trained, tok, recipe, home, extra_files={OPTIMIZER_FILE: opt_bytes})
        done.append(prev)
    return done
