"""Layer adapters: where each architecture family keeps its residual stream.

One adapter per family, keyed by ``config.model_type`` (the TransformerLens habit): no
guessing from module names. Paths are relative to ``model.base_model`` (Hugging Face's
``base_model_prefix`` resolution), so heads (``...ForCausalLM``, ``...ForSequenceClassification``)
and bare bodies share one adapter.

Layer numbering follows ``hidden_states``: layer 0 is the output of ``embedding`` (the
module whose output equals ``hidden_states[0]``), layer L >= 1 the output of block L-1.

Residual writers (what weight orthogonalization edits) per family:

- pre-norm Llama-like blocks (Llama, Mistral, Qwen2/3, OLMo/OLMo2, SmolLM3, Gemma 1, Phi-3): the
  token embedding, ``self_attn.o_proj`` and ``mlp.down_proj``. Phi-3's fused ``qkv_proj`` and
  ``gate_up_proj`` read the stream, they do not write it.
- mixture-of-experts (Mixtral, Qwen2-MoE, Qwen3-MoE, OLMoE, DeepSeek V2/V3): ``mlp.experts``, a module holding
  every expert's down projection as one ``(experts, d, inter)`` parameter; the routed sum of
  expert outputs is linear in those outputs, so removing ``u`` from each expert removes it from
  the sum. Qwen2-MoE's shared expert (``mlp.shared_expert.down_proj``, scaled by a sigmoid gate)
  and DeepSeek's (``mlp.shared_experts.down_proj``) write too. Dense layers of a sparse model
  (Qwen's ``mlp_only_layers``, DeepSeek's first ``first_k_dense_replace``) have ``mlp.down_proj``.
- Gemma 2 / Gemma 3 (sandwich norms): what is added to the stream is the output of
  ``post_attention_layernorm`` and ``post_feedforward_layernorm``, an RMSNorm
  ``y = g * x / rms(x)`` of the o_proj / down_proj output ``x``. No weight edit of the norm can
  make ``y`` orthogonal to ``u`` for every ``x`` (that needs ``g * u = 0``), but since ``rms(x)``
  is a scalar, ``u . y = (g * u) . x / rms(x)``: removing the direction ``g * u`` from o_proj /
  down_proj removes ``u`` from what the block writes. :attr:`LayerAdapter.writer_norms` names
  the norm after each such writer (see :mod:`pipeline.models.writers`).
- parallel-residual blocks (GPT-J, Falcon, GPT-NeoX): the attention output projection and the
  MLP output projection, both added to the block input.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from pipeline.types import GnomonError


@dataclass(frozen=True)
class LayerAdapter:
    """Where a family keeps its blocks, embedding output, final norm and residual writers."""

    family: str
    blocks: str
    """Dotted path (from the base model) of the ``ModuleList`` of blocks."""
    embedding: str
    """Module whose output is ``hidden_states[0]``."""
    final_norm: str | None
    """Final norm applied after the last block (``None``: post-LN families such as BERT)."""
    embedding_writers: tuple[str, ...]
    """Embedding tables that write into the residual stream (rows are d-vectors)."""
    block_writers: tuple[str, ...]
    """Per-block modules whose outputs are added to the residual stream."""
    conv1d_writers: bool = False
    """GPT-2 style ``Conv1D`` layers store the weight as (in, out) instead of (out, in)."""
    pre_norm: bool = True
    """Residual stream is a plain sum of writer outputs (pre-LN); weight orthogonalization
    is exact only then."""
    writer_norms: tuple[tuple[str, str], ...] = ()
    """(block writer path, path of the RMSNorm applied to its output before the residual add):
    Gemma 2/3's sandwich norms. The writer's weight edit then removes ``gain * u``, not ``u``."""
    verified: bool = False
    """Found by probing (:mod:`pipeline.models.generic`), not from this table."""

    # ---- resolution ---------------------------------------------------------------
    def _get(self, model: Any, path: str) -> Any:
        mod = model.base_model
        for part in path.split("."):
            mod = getattr(mod, part)
        return mod

    def get_blocks(self, model: Any) -> Sequence[Any]:
        return self._get(model, self.blocks)  # type: ignore[no-any-return]

    def get_embedding(self, model: Any) -> Any:
        return self._get(model, self.embedding)

    def get_final_norm(self, model: Any) -> Any | None:
        return None if self.final_norm is None else self._get(model, self.final_norm)

    def num_layers(self, model: Any) -> int:
        """Number of residual-stream layers excluding the embedding (= number of blocks)."""
        return len(self.get_blocks(model))

    def layer_module(self, model: Any, layer: int) -> Any:
        """The module whose output is the residual stream at ``layer``."""
        n = self.num_layers(model)
        if not 0 <= layer <= n:
            raise GnomonError(f"layer {layer} is out of range: this model has layers 0..{n} "
                              f"(0 = embeddings, {n} = last block)")
        return self.get_embedding(model) if layer == 0 else self.get_blocks(model)[layer - 1]

    def writers(self, model: Any) -> list[tuple[int, str, Any]]:
        """Every module that writes to the residual stream as (layer it writes into, name, module).

        Embedding writers write into layer 0; block ``i``'s writers into layer ``i+1``.
        ``a|b`` in :attr:`block_writers` lists explicit alternatives (a sparse MoE block or a
        dense MLP in the same model); a block with none of them is an error, never skipped,
        except that a trailing empty alternative (``a|``) marks a writer only some blocks have
        (Qwen2-MoE's shared expert, absent from its dense ``mlp_only_layers``).
        """
        out: list[tuple[int, str, Any]] = []
        for path in self.embedding_writers:
            out.append((0, path, self._get(model, path)))
        for i, block in enumerate(self.get_blocks(model)):
            for alternatives in self.block_writers:
                path, mod = _first_present(block, alternatives)
                if mod is None and alternatives.endswith("|"):
                    continue
                if mod is None:
                    raise GnomonError(f"block {i} of this {self.family} model has none of {alternatives.split('|')}: "
                                      "its residual writers are unknown, so it cannot be edited")
                out.append((i + 1, f"{self.blocks}.{i}.{path}", mod))
        return out

    def writer_norm(self, model: Any, name: str) -> Any | None:
        """The norm applied to writer ``name``'s output before the residual add (sandwich norms)."""
        head = f"{self.blocks}."
        for writer, norm in self.writer_norms:
            if name.startswith(head) and name.endswith(f".{writer}"):
                index = name[len(head):].split(".", 1)[0]
                return self._get(model, f"{self.blocks}.{index}.{norm}")
        return None


def _first_present(block: Any, alternatives: str) -> tuple[str, Any | None]:
    for path in filter(None, alternatives.split("|")):
        mod = block
        for part in path.split("."):
            mod = getattr(mod, part, None)
            if mod is None:
                break
        if mod is not None:
            return path, mod
    return alternatives, None


_LLAMA_LIKE = dict(blocks="layers", embedding="embed_tokens", final_norm="norm",
                   embedding_writers=("embed_tokens",),
                   block_writers=("self_attn.o_proj", "mlp.down_proj"))

_SANDWICH = dict(_LLAMA_LIKE, writer_norms=(("self_attn.o_proj", "post_attention_layernorm"),
                                             ("mlp.down_proj", "post_feedforward_layernorm")))
_MOE = dict(_LLAMA_LIKE, block_writers=("self_attn.o_proj", "mlp.experts|mlp.down_proj"))

ADAPTERS: dict[str, LayerAdapter] = {
    **{t: LayerAdapter(family="llama", **_LLAMA_LIKE)  # type: ignore[arg-type]
       for t in ("llama", "mistral", "qwen2", "qwen3", "olmo", "smollm3")},
    "gemma": LayerAdapter(family="gemma", **_LLAMA_LIKE),  # type: ignore[arg-type]
    "phi3": LayerAdapter(family="phi3", **_LLAMA_LIKE),  # type: ignore[arg-type]
    # OLMo 2/3 have the post-norms of Gemma 2/3 without the pre-norms
    **{t: LayerAdapter(family=t, **_SANDWICH)  # type: ignore[arg-type]
       for t in ("gemma2", "gemma3_text", "olmo2", "olmo3")},
    **{t: LayerAdapter(family=t, **_MOE) for t in ("mixtral", "qwen3_moe", "olmoe")},  # type: ignore[arg-type]
    "qwen2_moe": LayerAdapter(family="qwen2_moe", **dict(  # type: ignore[arg-type]
        _MOE, block_writers=("self_attn.o_proj", "mlp.experts|mlp.down_proj", "mlp.shared_expert.down_proj|"))),
    # DeepSeek V2/V3: routed experts plus shared ones; the first ``first_k_dense_replace`` blocks are dense
    **{t: LayerAdapter(family=t, **dict(  # type: ignore[arg-type]
        _MOE, block_writers=("self_attn.o_proj", "mlp.experts|mlp.down_proj", "mlp.shared_experts.down_proj|")))
       for t in ("deepseek_v2", "deepseek_v3")},
    "gptj": LayerAdapter(family="gptj", blocks="h", embedding="drop", final_norm="ln_f",
                         embedding_writers=("wte",), block_writers=("attn.out_proj", "mlp.fc_out")),
    "falcon": LayerAdapter(family="falcon", blocks="h", embedding="word_embeddings", final_norm="ln_f",
                           embedding_writers=("word_embeddings",),
                           block_writers=("self_attention.dense", "mlp.dense_4h_to_h")),
    "gpt2": LayerAdapter(family="gpt2", blocks="h", embedding="drop", final_norm="ln_f",
                         embedding_writers=("wte", "wpe"),
                         block_writers=("attn.c_proj", "mlp.c_proj"), conv1d_writers=True),
    "gpt_neox": LayerAdapter(family="gpt_neox", blocks="layers", embedding="emb_dropout",
                             final_norm="final_layer_norm", embedding_writers=("embed_in",),
                             block_writers=("attention.dense", "mlp.dense_4h_to_h")),
    "bert": LayerAdapter(family="bert", blocks="encoder.layer", embedding="embeddings",
                         final_norm=None, embedding_writers=(), block_writers=(), pre_norm=False),
}


def check_custom_code(folder: Path, trust_remote_code: bool) -> None:
    """Refuse a folder whose architecture exists only as code inside it (``auto_map`` in its
    config for a model type gnomon has no adapter for) unless code may run."""
    try:
        doc = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        doc = None   # the loader says what is wrong with it
    doc = doc if isinstance(doc, dict) else None
    if trust_remote_code or doc is None or not doc.get("auto_map") or doc.get("model_type") in ADAPTERS:
        return
    raise GnomonError(f"{folder} holds custom model code (config.json auto_map, model_type "
                      f"{doc.get('model_type')!r}), which gnomon runs only when asked (gnomon collect "
                      "--trust-remote-code); it has layer adapters for " + ", ".join(sorted(ADAPTERS)))
