"""Model loaders (the spec is :mod:`pipeline.models.spec`): bundled GGUF, local Hugging Face directories, tiny random models.

>>> lm = load_model("tiny:llama")          # doctest: +SKIP
>>> lm.num_layers, lm.hidden_size           # doctest: +SKIP
(4, 32)
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pipeline.atomic import build_dir, write_json
from pipeline.home import gnomon_home
from pipeline.models.adapters import ADAPTERS, LayerAdapter, check_custom_code
from pipeline.models.fingerprint import fingerprint_model
from pipeline.models.generic import adapter_for
from pipeline.models.layers import ensure_layers
from pipeline.models.quantize import quantize, quantized_device
from pipeline.models.spec import BUNDLED_FILE, BUNDLED_HF_NAME, BUNDLED_ID, ModelSpec, bundled_gguf  # noqa: F401 - re-exported
from pipeline.types import GnomonError
from pipeline.version_cache import fetch_version, lineage_identity, version_settings

# lazy: numpy, torch, transformers (heavy; imported where used); pipeline.models.tiny (tests patch it at the source)


@dataclass
class LoadedModel:
    """A model ready for collection and interventions, with its identity."""

    model: Any
    tokenizer: Any
    spec: ModelSpec
    fingerprint: str
    adapter: LayerAdapter
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def model_id(self) -> str:
        return self.spec.id

    @property
    def revision(self) -> str:
        return self.spec.revision

    @property
    def device(self) -> Any:
        return next(self.model.parameters()).device

    @property
    def num_layers(self) -> int:
        """Number of blocks; valid layers are 0..num_layers."""
        return self.adapter.num_layers(self.model)

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def max_positions(self) -> int | None:
        """Longest sequence the model has positions for (None: no fixed limit known).
        Absolute-position models (GPT-2) index out of range past it."""
        cfg = self.model.config
        for name in ("max_position_embeddings", "n_positions"):
            value = getattr(cfg, name, None)
            if isinstance(value, int) and value > 0:
                return value
        return None

    def check_layers(self, layers: Sequence[int] | None) -> list[int]:
        """Validate requested layers (``None`` = all) against this model (a :class:`Layers`
        already checked against a model of this depth is trusted)."""
        return list(ensure_layers(layers, self.num_layers, self.model_id))


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _torch_dtype(name: str, device: str) -> Any:
    import torch

    if name == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    try:
        return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[name]
    except KeyError:
        raise GnomonError(f"unknown dtype {name!r}: use auto, float32, float16 or bfloat16") from None


def _load_dir(path: Path, spec: ModelSpec, device: str) -> tuple[Any, Any]:
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer

    if not (path / "config.json").is_file():
        raise GnomonError(f"{path} is not a Hugging Face model directory (no config.json)")
    check_custom_code(path, spec.trust_remote_code)
    try:
        cfg = AutoConfig.from_pretrained(path, trust_remote_code=spec.trust_remote_code)
    except ValueError as e:
        if "trust_remote_code" not in str(e) and "custom code" not in str(e):
            raise
        raise GnomonError(f"{path} needs custom model code to load, which gnomon runs only when asked "
                          "(gnomon collect --trust-remote-code)") from None
    archs = getattr(cfg, "architectures", None) or []
    causal = any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in archs) or (
        not archs and cfg.model_type not in ("bert",))
    auto = AutoModelForCausalLM if causal else AutoModel
    model = auto.from_pretrained(path, dtype=_torch_dtype(spec.dtype, device),
                                 trust_remote_code=spec.trust_remote_code, local_files_only=True)
    tok = AutoTokenizer.from_pretrained(path, trust_remote_code=spec.trust_remote_code, local_files_only=True)
    return model, tok


def _gguf_cache_dir(gguf: Path, home: Path) -> Path:
    st = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}|{st.st_size}|{int(st.st_mtime)}".encode()).hexdigest()[:16]
    return home / "models" / "gguf-cache" / f"{gguf.stem}-{key}"


def _load_gguf(gguf: Path, spec: ModelSpec, device: str, home: Path) -> tuple[Any, Any, Path]:
    """Dequantize once (~15 s) and cache as safetensors; later loads read the cache (~1 s)."""
    if not gguf.is_file():
        raise GnomonError(f"no GGUF file at {gguf}")
    cache = _gguf_cache_dir(gguf, home)
    if not (cache / "config.json").is_file():
        from transformers import AutoModelForCausalLM, AutoTokenizer

        try:
            tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
            model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
        except (ValueError, KeyError, OSError, TypeError, IndexError, EOFError) as e:
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise GnomonError(f"{gguf} is not a GGUF model transformers can load ({first[:200]})") from None
        # The weights are already dequantized to float32; drop the GGUF quantizer marker so
        # save_pretrained writes plain safetensors.
        model.hf_quantizer = None  # type: ignore[assignment]
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        def save(tmp: Path) -> None:
            model.save_pretrained(tmp, safe_serialization=True)
            tok.save_pretrained(tmp)
        build_dir(cache, save)
    model, tok = _load_dir(cache, spec, device)
    return model, tok, cache


def load_model(spec: ModelSpec | str, home: str | Path | None = None) -> LoadedModel:
    """Load a model and tokenizer, pick the device, and compute the fingerprint."""
    home_p = gnomon_home(home)
    spec = (ModelSpec(id=spec) if isinstance(spec, str) else spec).resolved(home_p)   # once: below trusts it
    source = spec.source
    device = spec.device or default_device()
    registered = None
    extra: dict[str, Any] = {"source": source}
    if source == "tiny":
        from pipeline.models.tiny import tiny_model

        model, tok = tiny_model(spec.id, seed=spec.seed)
        model = model.to(_torch_dtype(spec.dtype, device))
    elif source in ("bundled", "gguf"):
        gguf = bundled_gguf() if source == "bundled" else Path(spec.id).expanduser()
        model, tok, cache = _load_gguf(gguf, spec, device, home_p)
        extra["gguf"] = str(gguf)
        extra["cache_dir"] = str(cache)
        extra["hf_name"] = BUNDLED_HF_NAME if source == "bundled" else gguf.stem
    elif source == "registered":
        vdir = fetch_version(spec.id, home_p) or home_p / "models" / spec.id   # once per node on object storage
        settings = version_settings(vdir)
        registered = _registered_identity(spec, home_p)   # before a version's own dtype replaces "auto"
        if spec.dtype == "auto" and settings.get("dtype") in ("float16", "bfloat16"):
            spec = replace(spec, dtype=str(settings["dtype"]))   # run a numeric version in its dtype
        if settings.get("quantize"):
            device = quantized_device(str(settings["quantize"]), device)
        model, tok = _load_dir(vdir, spec, device)
        if settings.get("quantize"):
            quantize(model, str(settings["quantize"]))
            extra["quantize"] = settings["quantize"]
    else:
        model, tok = _load_dir(Path(spec.id).expanduser(), spec, device)
    model.to(device)
    model.eval()
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    known = registered[0] if registered else _known_fingerprint(model, spec, home_p)
    adapter = adapter_for(model, home_p, known)
    ident = _cached_identity(model, adapter, identity_file(spec, home_p), extra.get("quantize"), known)
    return LoadedModel(model=model, tokenizer=tok, spec=spec, fingerprint=ident.fingerprint,
                       adapter=adapter, extra=extra)


def _known_fingerprint(model: Any, spec: ModelSpec, home: Path) -> str | None:
    """For a model only the probing adapter serves, its fingerprint (recorded at an earlier
    load, else hashed now, once): the probe's cache is keyed by it. ``None`` for listed
    families, whose fingerprint :func:`_cached_identity` finds as before."""
    if getattr(model.config, "model_type", None) in ADAPTERS or getattr(model.config, "is_encoder_decoder", False):
        return None
    ident = model_identity(spec, home)
    return ident.fingerprint if ident is not None else fingerprint_model(model)


@dataclass(frozen=True)
class ModelIdentity:
    """What the store and the catalog need to know about a model without loading it."""

    fingerprint: str
    num_layers: int
    hidden_size: int


def identity_file(spec: ModelSpec, home: Path) -> Path | None:
    """Where a model's identity is kept beside (or, for a user's directory, for) its weights:
    the converted-GGUF cache, the registered model's folder, or ``<home>/models/identities/``
    keyed by the directory's path and its files' sizes and modification times. ``None`` for
    ``tiny:`` models (built in memory)."""
    source = spec.resolved_source(home)
    if source == "tiny":
        return None
    if source in ("bundled", "gguf"):
        gguf = bundled_gguf() if source == "bundled" else Path(spec.id).expanduser()
        return _gguf_cache_dir(gguf, home) / "gnomon-fingerprint.json" if gguf.is_file() else None
    if source == "registered":
        return home / "models" / spec.id / "gnomon-fingerprint.json"
    path = Path(spec.id).expanduser().resolve()
    h = hashlib.sha256(str(path).encode())
    for name, size, mtime in file_stats(path):
        h.update(f"{name}|{size}|{mtime}\n".encode())
    return home / "models" / "identities" / f"{h.hexdigest()[:24]}.json"


def file_stats(folder: Path, skip: frozenset[str] = frozenset()) -> tuple[tuple[str, int, int], ...]:
    """(name, size, mtime_ns) of ``folder``'s files in name order, without ``skip``: what
    tells weights rewritten in place from the ones loaded before, without reading them."""
    out = []
    for f in sorted(folder.iterdir()):
        if f.is_file() and f.name not in skip:
            st = f.stat()
            out.append((f.name, st.st_size, st.st_mtime_ns))
    return tuple(out)


def model_identity(spec: ModelSpec | str, home: str | Path | None = None) -> ModelIdentity | None:
    """The identity recorded at an earlier load or in a registered version's lineage (no torch
    import, no weight read), else ``None``: a job finds what is stored without a load."""
    spec = ModelSpec(id=spec) if isinstance(spec, str) else spec
    registered = _registered_identity(spec, home)
    if registered is not None:
        return ModelIdentity(*registered)
    try:
        f = identity_file(spec, gnomon_home(home))
        doc = json.loads(f.read_text()) if f is not None and f.is_file() else None
    except (OSError, ValueError, GnomonError):
        return None
    if not doc or not all(k in doc for k in ("fingerprint", "num_layers", "hidden_size")):
        return None
    return ModelIdentity(str(doc["fingerprint"]), int(doc["num_layers"]), int(doc["hidden_size"]))


def _registered_identity(spec: ModelSpec, home: Any) -> tuple[str, int, int] | None:
    """A registered version run as registered (dtype ``auto``, unquantized) is what its lineage
    fingerprints, in any precision a device loads it: every node and the driver agree."""
    if spec.dtype != "auto" or spec.source not in (None, "registered") or spec.id == BUNDLED_ID \
            or spec.id.startswith("tiny") or Path(spec.id).expanduser().exists():
        return None
    return lineage_identity(spec.id, home)


def _cached_identity(model: Any, adapter: LayerAdapter, path: Path | None,
                     quantize: str | None = None, known: str | None = None) -> ModelIdentity:
    """Fingerprints of weights on disk are stored beside them (hashing 135M floats costs
    ~1 s), with the layer count and width, so later runs can check the store without a load."""
    n_layers, width = adapter.num_layers(model), int(model.config.hidden_size)
    if path is None:
        return ModelIdentity(known or fingerprint_model(model), n_layers, width)
    doc = None
    if path.is_file():
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError):
            doc = None
    if not (doc and "fingerprint" in doc) and quantize:
        # a quantized model's packed weights cannot be hashed like float ones: the builder
        # records quantized_fingerprint(float fingerprint, method) beside the weights
        raise GnomonError(f"{path.parent} runs quantized ({quantize}) but has no recorded fingerprint; "
                          "rebuild it with `gnomon fleet build`")
    fp = known or (str(doc["fingerprint"]) if doc and "fingerprint" in doc else fingerprint_model(model))
    ident = ModelIdentity(fp, n_layers, width)
    if doc != {"fingerprint": fp, "num_layers": n_layers, "hidden_size": width}:
        write_json(path, {"fingerprint": fp, "num_layers": n_layers, "hidden_size": width})
    return ident
