"""Weight orthogonalization: bake the removal of a direction into the weights.

Arditi et al. 2024 ("Refusal in Language Models Is Mediated by a Single Direction",
arXiv:2406.11717, section 4.1): in a pre-norm transformer the residual stream is the sum of
what its writers put there (token/position embeddings, every attention output projection,
every MLP down projection). If no writer can write along the unit vector ``u``, the stream
never has a component along ``u``, which is exactly what ablating ``u`` at the output of
every layer 0..L does at run time. So for every writer

    Linear (out=d, in):  W' = W - u (u^T W)        b' = b - u (u . b)
    Conv1D (in, out=d):  W' = W - (W u) u^T        (GPT-2 stores the transpose)
    Embedding (n, d):    E' = E - (E u) u^T        (every row loses its u component)
    Experts (E, d, in):  W'_e = W_e - u (u^T W_e)  for every expert e (MoE ``down_proj``; the
                         routed, weighted sum of expert outputs is linear in them)

and the edited model equals run-time ablation of every writer's output
(:func:`pipeline.steer.ablate_writers`) up to float rounding (``LOGIT_ATOL`` in float32).
Ablating at every block *output* (layers 0..L) gives the same final stream only for
parallel-residual blocks (GPT-NeoX); in sequential blocks (Llama, GPT-2) the MLP reads the
mid-block stream, which still carries the attention output's component, so the two differ
slightly there. Post-norm families (BERT: LayerNorm after each residual add) do not keep a
plain sum, so they are refused; so are models served by the probing generic adapter, which
verifies where the stream is but not which weights write it.

Sandwich-norm families (Gemma 2/3, OLMo 2/3) add ``norm(o_proj(...))`` to the stream; their
o_proj / down_proj lose the direction ``g * u`` (``g`` the norm's gain) instead of ``u``, which
keeps ``u`` out of the stream exactly and equals :func:`pipeline.steer.ablate_writers`, but is
not the removal of ``u`` from the norm's output (see :mod:`pipeline.models.writers`).

If the unembedding is tied to the token embedding, editing the embedding would also edit
the unembedding (and change what the model predicts, which run-time ablation does not);
the copy is untied first (``lm_head`` gets its own copy of the original matrix and
``tie_word_embeddings`` becomes False), so the saved model has both matrices.

>>> new = orthogonalize(lm, d)                              # doctest: +SKIP
>>> save_orthogonalized(lm, d, "out/refusal-ablated")       # doctest: +SKIP
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import torch

from pipeline.atomic import build_dir
from pipeline.direction import Direction
from pipeline.models.loading import LoadedModel, fingerprint_model
from pipeline.models.writers import writer_units
from pipeline.steer.interventions import check_direction
from pipeline.types import GnomonError

LOGIT_ATOL = 1e-4
"""Float32 logits of an orthogonalized tiny model match run-time ablation within this."""


def _untie(model: Any) -> bool:
    """Give the output embedding its own parameter if it shares the input embedding's."""
    out, inp = model.get_output_embeddings(), model.get_input_embeddings()
    if out is None or inp is None or out.weight is not inp.weight:
        return False
    out.weight = torch.nn.Parameter(inp.weight.detach().clone())
    model.config.tie_word_embeddings = False
    text_cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else None
    if text_cfg is not None and text_cfg is not model.config:
        text_cfg.tie_word_embeddings = False
    return True


@torch.no_grad()
def _project_experts(module: Any, u: torch.Tensor) -> None:
    """Every expert's down projection, stored as one 3-D parameter by transformers' MoE blocks
    (``(E, d, in)``, or ``(E, in, d)`` when the module says ``is_transposed``)."""
    if getattr(module, "has_post_expert_norm", False):
        raise GnomonError(f"{type(module).__name__} normalises each expert's output: its weights cannot be "
                          "orthogonalized exactly")
    w = module.down_proj
    uu = u.to(w.device, torch.float64)
    w64 = w.detach().to(torch.float64)
    if getattr(module, "is_transposed", False):
        new = w64 - torch.einsum("eid,d,k->eik", w64, uu, uu)        # (E, in, d)
    else:
        new = w64 - torch.einsum("d,k,eki->edi", uu, uu, w64)        # (E, d, in)
    w.copy_(new.to(w.dtype))
    b = getattr(module, "down_proj_bias", None)
    if isinstance(b, torch.Tensor):
        b64 = b.detach().to(torch.float64)                           # (E, d)
        b.copy_((b64 - torch.outer(b64 @ uu, uu)).to(b.dtype))


@torch.no_grad()
def _project_out(module: Any, u: torch.Tensor, conv1d: bool) -> None:
    w = getattr(module, "weight", None)
    if not isinstance(w, torch.Tensor):
        down = getattr(module, "down_proj", None)
        if not (isinstance(down, torch.Tensor) and down.dim() == 3):
            raise GnomonError(f"gnomon does not know how {type(module).__name__} stores its weights; "
                              "it cannot be orthogonalized")
        _project_experts(module, u)
        return
    uu = u.to(w.device, torch.float64)
    w64 = w.detach().to(torch.float64)
    if isinstance(module, torch.nn.Embedding):
        new = w64 - torch.outer(w64 @ uu, uu)                     # (n, d)
    elif conv1d:
        new = w64 - torch.outer(w64 @ uu, uu)                     # (in, d)
    else:
        new = w64 - torch.outer(uu, uu @ w64)                     # (d, in)
    w.copy_(new.to(w.dtype))
    b = getattr(module, "bias", None)
    if b is not None:
        b64 = b.detach().to(torch.float64)
        b.copy_((b64 - uu * (uu @ b64)).to(b.dtype))


def orthogonalize(lm: LoadedModel, direction: Direction, *, force: bool = False) -> LoadedModel:
    """A new :class:`LoadedModel` whose writers cannot write along ``direction``.

    ``lm`` is never modified (the model is deep-copied). The new model's fingerprint is
    recomputed; ``extra["orthogonalized"]`` records what was removed.
    """
    if lm.adapter.verified:
        raise GnomonError(f"weight orthogonalization needs the residual writers, and {lm.adapter.family} was found by "
                          "probing hidden states, which does not name them; use run-time ablate() instead")
    if not lm.adapter.pre_norm:
        raise GnomonError(f"weight orthogonalization needs a pre-norm model; {lm.adapter.family} "
                          "normalises after each residual add, use run-time ablate() instead")
    check_direction(lm, direction, force)
    writers = lm.adapter.writers(lm.model)
    if not writers:
        raise GnomonError(f"the {lm.adapter.family} adapter lists no residual writers")
    model = copy.deepcopy(lm.model)
    untied = _untie(model)
    for _layer, _name, module, v in writer_units(lm.adapter, model, direction.unit):
        conv1d = lm.adapter.conv1d_writers and not isinstance(module, torch.nn.Embedding)
        _project_out(module, v, conv1d)
    p = direction.provenance
    extra = dict(lm.extra)
    extra["orthogonalized"] = {"concept": p.concept, "layer": p.layer, "method": p.method,
                               "direction_fingerprint": p.fingerprint, "untied_embeddings": untied,
                               "source_fingerprint": lm.fingerprint}
    spec = dataclasses.replace(lm.spec, revision=f"{lm.revision}+orth-{p.concept or 'direction'}")
    return dataclasses.replace(lm, model=model, spec=spec, fingerprint=fingerprint_model(model), extra=extra)


def _umask_modes(folder: Path) -> None:
    """transformers writes the weights through a private temp file (mode 0600); give every
    file the mode a plain ``open()`` would (0666 minus the umask), as the user expects of
    a model directory they share or serve."""
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
    for f in folder.rglob("*"):
        f.chmod((0o777 if f.is_dir() else 0o666) & ~umask)


def save_orthogonalized(lm: LoadedModel, direction: Direction, out_dir: str | Path, *,
                        ref: str = "", force: bool = False, overwrite: bool = False) -> Path:
    """Orthogonalize and write a Hugging Face directory that ``load_model(out_dir)`` loads.

    Written: safetensors weights, config, tokenizer, and ``gnomon.json`` with the source
    model (id, revision, fingerprint), the direction (ref, concept, layer, method,
    fingerprint) and the new fingerprint. The directory appears only when complete.
    """
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise GnomonError(f"{out} exists and is not empty; choose another --out or remove it")
    new = orthogonalize(lm, direction, force=force)
    p = direction.provenance
    meta = {
        "kind": "orthogonalized",
        "method": "Arditi et al. 2024 weight orthogonalization (arXiv:2406.11717)",
        "source": {"model_id": lm.model_id, "revision": lm.revision, "fingerprint": lm.fingerprint},
        "direction": {"ref": ref, "concept": p.concept, "layer": p.layer, "method": p.method,
                      "fingerprint": p.fingerprint, "positive": p.positive, "negative": p.negative},
        "untied_embeddings": new.extra["orthogonalized"]["untied_embeddings"],
        "fingerprint": new.fingerprint,
    }

    def build(tmp: Path) -> None:
        new.model.save_pretrained(tmp, safe_serialization=True)
        lm.tokenizer.save_pretrained(tmp)
        (tmp / "gnomon.json").write_text(json.dumps(meta, indent=2) + "\n")
        _umask_modes(tmp)
    return build_dir(out, build)
