"""Tiny random models for tests and examples, built offline from a config.

``tiny:<family>`` (one of :data:`TINY_FAMILIES`), optionally ``tiny:llama:4x32`` for 4
blocks of width 32. Each is built from the family's real transformers config class with
random seeded weights, so two loads of the same spec have the same fingerprint. Mixture-of-
experts families get 4 experts, 2 per token (DeepSeek: its first block dense, one shared
expert). ``starcoder2`` has no entry in the adapter table: it is served by the verified
generic adapter. The tokenizer is character-level (no download).
"""

from __future__ import annotations

import string
from typing import Any

from pipeline.types import GnomonError

# lazy: numpy, tokenizers, torch, transformers (heavy; imported where used)

SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]
CHAT_TEMPLATE = (
    "{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}</s>{% endfor %}"
    "{% if add_generation_prompt %}<s>assistant: {% endif %}"
)


def tiny_tokenizer() -> Any:
    """A character-level fast tokenizer with BOS, EOS, PAD and a chat template."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    chars = sorted(set(string.printable) - set("\x0b\x0c\r"))
    vocab = {tok: i for i, tok in enumerate(SPECIALS + chars)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", vocab["<s>"])])
    tok.decoder = decoders.Fuse()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
        unk_token="<unk>", padding_side="left")
    fast.chat_template = CHAT_TEMPLATE
    return fast


def parse_tiny(model_id: str) -> tuple[str, int, int]:
    parts = model_id.split(":")
    family = parts[1] if len(parts) > 1 and parts[1] else "llama"
    layers, hidden = 4, 32
    if len(parts) > 2:
        try:
            layers, hidden = (int(x) for x in parts[2].split("x"))
        except ValueError as e:
            raise GnomonError(f"bad tiny model spec {model_id!r}: use tiny:<family>:<layers>x<hidden>") from e
    if not (1 <= layers <= 64 and 8 <= hidden <= 4096 and hidden % 8 == 0):
        raise GnomonError(f"bad tiny model spec {model_id!r}: layers must be 1..64 and hidden a multiple "
                          "of 8 in 8..4096")
    return family, layers, hidden


TINY_FAMILIES = ("llama", "gpt2", "gpt_neox", "bert", "gemma", "gemma2", "gemma3", "olmo2", "phi3", "mixtral",
                 "qwen2_moe", "qwen3_moe", "olmoe", "deepseek_v3", "gptj", "falcon", "starcoder2")
"""What ``tiny:<family>`` can build (the keys of the table in :func:`tiny_model`)."""


_PLAIN_NORMS = ("llama", "gpt2", "gpt_neox", "bert")
"""Families whose tiny models keep their norms' initial gains (kept as they were, so their
fingerprints do not change)."""


def _randomise_norm_gains(model: Any) -> None:
    """Trained models' norm gains are far from their initial 1 (0 for Gemma's ``1 + w``); a
    tiny model with unit gains would let a test pass that ignores them (the sandwich-norm
    writers of :mod:`pipeline.models.writers`)."""
    import torch

    with torch.no_grad():
        for module in model.modules():
            w = getattr(module, "weight", None)
            if "Norm" in type(module).__name__ and isinstance(w, torch.Tensor) and w.dim() == 1:
                w.add_(0.5 * torch.randn_like(w))


def tiny_model(model_id: str, seed: int = 0) -> tuple[Any, Any]:
    """Build ``(model, tokenizer)`` for a ``tiny:...`` id with seeded random weights."""
    import torch
    import transformers as tf

    family, layers, hidden = parse_tiny(model_id)
    tok = tiny_tokenizer()
    v = len(tok)
    common = dict(vocab_size=v, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                  eos_token_id=tok.eos_token_id)
    heads = max(1, hidden // 8)
    kv = max(1, heads // 2) if heads % 2 == 0 else heads
    attn = dict(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                max_position_embeddings=512, **common)
    dec = dict(attn, intermediate_size=2 * hidden, num_key_value_heads=kv)
    moe = dict(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=hidden)
    gemma = dict(dec, head_dim=hidden // heads, query_pre_attn_scalar=hidden // heads)
    configs: dict[str, Any] = {
        "llama": lambda: tf.LlamaForCausalLM(tf.LlamaConfig(**dec)),
        "gpt2": lambda: tf.GPT2LMHeadModel(tf.GPT2Config(
            n_embd=hidden, n_layer=layers, n_head=heads, n_positions=512, **common)),
        "gpt_neox": lambda: tf.GPTNeoXForCausalLM(tf.GPTNeoXConfig(intermediate_size=2 * hidden, **attn)),
        "bert": lambda: tf.BertModel(tf.BertConfig(intermediate_size=2 * hidden, **attn)),
        "gemma": lambda: tf.GemmaForCausalLM(tf.GemmaConfig(**dict(dec, head_dim=hidden // heads))),
        "gemma2": lambda: tf.Gemma2ForCausalLM(tf.Gemma2Config(**gemma)),
        "gemma3": lambda: tf.Gemma3ForCausalLM(tf.Gemma3TextConfig(**gemma)),
        "olmo2": lambda: tf.Olmo2ForCausalLM(tf.Olmo2Config(**dec)),
        "phi3": lambda: tf.Phi3ForCausalLM(tf.Phi3Config(**dec)),
        "mixtral": lambda: tf.MixtralForCausalLM(tf.MixtralConfig(
            num_local_experts=4, num_experts_per_tok=2, **dec)),
        "qwen2_moe": lambda: tf.Qwen2MoeForCausalLM(tf.Qwen2MoeConfig(
            shared_expert_intermediate_size=2 * hidden, **moe, **dec)),
        "qwen3_moe": lambda: tf.Qwen3MoeForCausalLM(tf.Qwen3MoeConfig(**moe, **dec)),
        "olmoe": lambda: tf.OlmoeForCausalLM(tf.OlmoeConfig(num_experts=4, num_experts_per_tok=2, **dec)),
        "deepseek_v3": lambda: tf.DeepseekV3ForCausalLM(tf.DeepseekV3Config(**dict(
            dec, n_routed_experts=4, num_experts_per_tok=2, n_shared_experts=1, moe_intermediate_size=hidden,
            n_group=1, topk_group=1, first_k_dense_replace=1, kv_lora_rank=16, q_lora_rank=16,
            qk_rope_head_dim=4, qk_nope_head_dim=4, v_head_dim=8, num_key_value_heads=heads))),
        "gptj": lambda: tf.GPTJForCausalLM(tf.GPTJConfig(
            n_embd=hidden, n_layer=layers, n_head=heads, n_positions=512, rotary_dim=hidden // heads, **common)),
        "falcon": lambda: tf.FalconForCausalLM(tf.FalconConfig(**attn)),
        "starcoder2": lambda: tf.Starcoder2ForCausalLM(tf.Starcoder2Config(**dec)),
    }
    if family not in configs:
        raise GnomonError(f"unknown tiny model family {family!r}: choose from {', '.join(configs)}")
    torch.manual_seed(seed)
    model = configs[family]()
    if family not in _PLAIN_NORMS:
        _randomise_norm_gains(model)
    model.eval()
    return model, tok
