"""The verified generic adapter: find a decoder's residual stream by checking, not guessing.

For a model whose ``model_type`` is not in :data:`pipeline.models.adapters.ADAPTERS`, one probe
forward pass (a few token ids, ``output_hidden_states=True``) records every module's input and
output. The adapter is accepted only if

- some ``nn.ModuleList`` with one entry per block has outputs equal (to float tolerance) to
  ``hidden_states[1:]`` at every layer, the last either directly or through a module (the final
  norm) whose input is the last block's output and whose output is ``hidden_states[-1]``;
- some module's output equals ``hidden_states[0]`` (the embedding output, layer 0; the last
  such module to run is taken, e.g. an embedding dropout after the table).

Otherwise the model is refused with its type and the reason. Reading, steering and monitoring
then work exactly as for a listed family (the contract tests run on ``tiny:starcoder2``, which
only this adapter serves). Weight orthogonalization does not: matching hidden states says where
the stream is, not which weights write into it, so the adapter lists no writers and
``orthogonalize`` refuses it.

The probe runs once per model fingerprint: results are kept in memory and in
``<home>/models/adapters/<fingerprint>.json``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from pipeline.atomic import write_json
from pipeline.home import gnomon_home
from pipeline.models.adapters import ADAPTERS, LayerAdapter
from pipeline.models.fingerprint import fingerprint_model
from pipeline.types import GnomonError

# lazy: torch (heavy; imported where used)

PROBE_VERSION = 1
"""Bump when the probe changes, so cached results from an older probe are not trusted."""
PROBE_IDS = [1, 5, 9, 2, 7, 3, 8, 4, 6, 10, 11, 12]
_CACHE: dict[str, LayerAdapter] = {}


def _close(a: Any, b: Any) -> bool:
    import torch

    if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)) or a.shape != b.shape:
        return False
    a, b = a.float(), b.float()
    return bool(torch.allclose(a, b, atol=1e-5 * (1.0 + float(b.abs().max())), rtol=1e-4))


def _first_tensor(x: Any) -> Any:
    return x[0] if isinstance(x, (tuple, list)) and x else x


def _record(model: Any) -> tuple[Any, dict[str, Any], dict[str, Any], dict[str, int]]:
    """One probe forward: hidden_states, and each base-model module's input, output and run order."""
    import torch

    from pipeline.hooks import hooks

    base = model.base_model
    inputs: dict[str, Any] = {}
    outputs: dict[str, Any] = {}
    order: dict[str, int] = {}

    def make(name: str) -> Any:
        def hook(_m: Any, args: Any, out: Any) -> None:
            inputs[name] = _first_tensor(args)
            outputs[name] = _first_tensor(out)
            order[name] = len(order)
        return hook

    vocab = int(getattr(model.config.get_text_config(), "vocab_size", 0) or 13)
    ids = torch.tensor([[i % vocab for i in PROBE_IDS]], device=next(model.parameters()).device)
    with hooks(lambda: [m.register_forward_hook(make(n)) for n, m in base.named_modules() if n]):
        with torch.inference_mode():
            out = model(input_ids=ids, attention_mask=torch.ones_like(ids), output_hidden_states=True)
    return getattr(out, "hidden_states", None), inputs, outputs, order


def _probe(model: Any, model_type: str) -> LayerAdapter:
    import torch

    def refuse(reason: str) -> GnomonError:
        return GnomonError(f"unsupported architecture {model_type!r}: no layer adapter (gnomon has "
                           f"{', '.join(sorted(ADAPTERS))}) and {reason}")

    try:
        hs, inputs, outputs, order = _record(model)
    except Exception as e:  # any failure of a foreign forward pass is a refusal, said in one line
        first = (str(e).splitlines() or [""])[0][:160]
        raise refuse(f"a probe forward pass failed ({type(e).__name__}: {first})") from None
    if not hs:
        raise refuse("its forward pass returns no output_hidden_states to verify an adapter against")
    n = len(hs) - 1
    base = model.base_model
    best = (0, "")
    for path, mod in base.named_modules():
        if not isinstance(mod, torch.nn.ModuleList) or len(mod) != n or n == 0:
            continue
        names = [f"{path}.{i}" for i in range(n)]
        matched = sum(_close(outputs.get(names[i]), hs[i + 1]) for i in range(n - 1))
        best = max(best, (matched, path))
        if matched != n - 1:
            continue
        final = _final_norm(outputs.get(names[-1]), hs[n], inputs, outputs, path)
        if final is None:
            continue
        embedding = [m for m in outputs if _close(outputs[m], hs[0]) and not m.startswith(path + ".")]
        if not embedding:
            raise refuse(f"no module's output equals hidden_states[0] (blocks found at {path!r})")
        return LayerAdapter(family=f"generic:{model_type}", blocks=path,
                            embedding=max(embedding, key=lambda m: order[m]),
                            final_norm=final or None, embedding_writers=(), block_writers=(),
                            pre_norm=False, verified=True)
    where = f"; the closest, {best[1]!r}, matches {best[0]} of {n - 1} inner layers" if best[1] else ""
    raise refuse(f"no ModuleList's outputs reproduce output_hidden_states at every layer{where}")


def _final_norm(last: Any, want: Any, inputs: dict[str, Any], outputs: dict[str, Any], blocks: str) -> str | None:
    """'' when the last block's output is ``hidden_states[-1]`` itself, the path of the module
    mapping it there (the final norm), or None when neither holds."""
    if _close(last, want):
        return ""
    for name, out in outputs.items():
        if not name.startswith(blocks + ".") and _close(out, want) and _close(inputs.get(name), last):
            return name
    return None


def _tuples(value: Any) -> Any:
    """JSON lists back to the adapter's (nested) tuples."""
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def _cache_file(home: Any, fingerprint: str) -> Path:
    return gnomon_home(home) / "models" / "adapters" / f"{fingerprint}.json"


def probe_adapter(model: Any, home: Any = None, fingerprint: str | None = None) -> LayerAdapter:
    """The verified adapter for ``model`` (see the module docstring), probing at most once per
    fingerprint (``fingerprint`` saves rehashing the weights when the caller knows it)."""
    model_type = str(getattr(model.config, "model_type", None))
    fp = fingerprint or fingerprint_model(model)
    if fp in _CACHE:
        return _CACHE[fp]
    path = _cache_file(home, fp)
    try:
        doc = json.loads(path.read_text()) if path.is_file() else None
    except (OSError, ValueError):
        doc = None
    if isinstance(doc, dict) and doc.get("probe_version") == PROBE_VERSION and doc.get("model_type") == model_type:
        keys = {f.name for f in fields(LayerAdapter)}
        adapter = LayerAdapter(**{k: _tuples(v) for k, v in doc["adapter"].items() if k in keys})
    else:
        adapter = _probe(model, model_type)
        write_json(path, {"probe_version": PROBE_VERSION, "model_type": model_type,
                          "adapter": asdict(adapter)}, indent=1)
    _CACHE[fp] = adapter
    return adapter


def encoder_decoder_error(model_type: Any) -> GnomonError:
    """The one refusal of an encoder-decoder (from its config, before a load, or its model)."""
    return GnomonError(f"unsupported architecture {model_type!r}: it is an encoder-decoder, which has two "
                       "residual streams (encoder and decoder); gnomon reads the single stream of a decoder "
                       f"or an encoder ({', '.join(sorted(ADAPTERS))}, or a verified decoder)")


def adapter_for(model: Any, home: Any = None, fingerprint: str | None = None) -> LayerAdapter:
    """The adapter for ``model``'s architecture: from the table, or, for a decoder whose
    ``model_type`` is not in it, one found and verified against ``output_hidden_states``
    (:func:`pipeline.models.generic.probe_adapter`, cached per fingerprint under ``home``).
    Encoder-decoders and models the probe cannot verify are refused with the reason."""
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    if model_type in ADAPTERS:
        return ADAPTERS[model_type]
    if getattr(config, "is_encoder_decoder", False):
        raise encoder_decoder_error(model_type)
    if not hasattr(model, "base_model") or not hasattr(config, "to_dict"):
        raise GnomonError(f"unsupported architecture {model_type!r}: not a transformers model, and gnomon has "
                          f"layer adapters for {', '.join(sorted(ADAPTERS))}")
    return probe_adapter(model, home, fingerprint)
