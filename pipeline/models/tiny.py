"""Tiny random models for tests and examples, built offline from a config.

``tiny:<family>`` (``llama``, ``gpt2``, ``gpt_neox``, ``bert``), optionally
``tiny:llama:4x32`` for 4 blocks of width 32. Weights are seeded, so two loads of the
same spec have the same fingerprint. The tokenizer is character-level (no download).
"""

from __future__ import annotations

import string
from typing import Any

from pipeline.types import GnomonError

SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]
CHAT_TEMPLATE = (
    "{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}</s>{% endfor %}"
    "{% if add_generation_prompt %}<s>assistant: {% endif %}"
)


def tiny_tokenizer() -> Any:
    """A character-level fast tokenizer with BOS, EOS, PAD and a chat template."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, processors, decoders
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
    configs: dict[str, Any] = {
        "llama": lambda: tf.LlamaForCausalLM(tf.LlamaConfig(
            hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
            num_attention_heads=heads, num_key_value_heads=max(1, heads // 2) if heads % 2 == 0 else heads,
            max_position_embeddings=512, **common)),
        "gpt2": lambda: tf.GPT2LMHeadModel(tf.GPT2Config(
            n_embd=hidden, n_layer=layers, n_head=heads, n_positions=512, **common)),
        "gpt_neox": lambda: tf.GPTNeoXForCausalLM(tf.GPTNeoXConfig(
            hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
            intermediate_size=2 * hidden, max_position_embeddings=512, **common)),
        "bert": lambda: tf.BertModel(tf.BertConfig(
            hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
            intermediate_size=2 * hidden, max_position_embeddings=512, **common)),
    }
    if family not in configs:
        raise GnomonError(f"unknown tiny model family {family!r}: choose from {', '.join(configs)}")
    torch.manual_seed(seed)
    model = configs[family]()
    model.eval()
    return model, tok
