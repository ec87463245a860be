"""Layer adapters: where each architecture family keeps its residual stream.

One adapter per family, keyed by ``config.model_type`` (the TransformerLens habit): no
guessing from module names. Paths are relative to ``model.base_model`` (Hugging Face's
``base_model_prefix`` resolution), so heads (``...ForCausalLM``, ``...ForSequenceClassification``)
and bare bodies share one adapter.

Layer numbering follows ``hidden_states``: layer 0 is the output of ``embedding`` (the
module whose output equals ``hidden_states[0]``), layer L >= 1 the output of block L-1.
"""

from __future__ import annotations

from dataclasses import dataclass
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
        """
        out: list[tuple[int, str, Any]] = []
        for path in self.embedding_writers:
            out.append((0, path, self._get(model, path)))
        for i, block in enumerate(self.get_blocks(model)):
            for path in self.block_writers:
                mod = block
                for part in path.split("."):
                    mod = getattr(mod, part)
                out.append((i + 1, f"{self.blocks}.{i}.{path}", mod))
        return out


_LLAMA_LIKE = dict(blocks="layers", embedding="embed_tokens", final_norm="norm",
                   embedding_writers=("embed_tokens",),
                   block_writers=("self_attn.o_proj", "mlp.down_proj"))

ADAPTERS: dict[str, LayerAdapter] = {
    **{t: LayerAdapter(family="llama", **_LLAMA_LIKE)  # type: ignore[arg-type]
       for t in ("llama", "mistral", "qwen2", "qwen3", "olmo", "olmo2", "smollm3")},
    "gpt2": LayerAdapter(family="gpt2", blocks="h", embedding="drop", final_norm="ln_f",
                         embedding_writers=("wte", "wpe"),
                         block_writers=("attn.c_proj", "mlp.c_proj"), conv1d_writers=True),
    "gpt_neox": LayerAdapter(family="gpt_neox", blocks="layers", embedding="emb_dropout",
                             final_norm="final_layer_norm", embedding_writers=("embed_in",),
                             block_writers=("attention.dense", "mlp.dense_4h_to_h")),
    "bert": LayerAdapter(family="bert", blocks="encoder.layer", embedding="embeddings",
                         final_norm=None, embedding_writers=(), block_writers=(), pre_norm=False),
}


def adapter_for(model: Any) -> LayerAdapter:
    """The adapter for ``model``'s architecture, or a clear error naming the supported ones."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type not in ADAPTERS:
        raise GnomonError(
            f"unsupported architecture {model_type!r}: gnomon has layer adapters for "
            f"{', '.join(sorted(ADAPTERS))}; add one in pipeline/models/adapters.py")
    return ADAPTERS[model_type]
