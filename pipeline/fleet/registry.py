"""Model versions with lineage, and named fleets of them.

A *version* is a Hugging Face directory registered under ``<home>/models/<id>/`` (config,
safetensors, tokenizer) with a ``lineage.json`` saying where it came from: its parent
version and that parent's fingerprint, how it was made (``kind`` and ``settings``), the
training step and the sha256 of the data it was trained on. Registered versions load like
any other model (``load_model("<id>")``), so every stage works on them unchanged.

A *fleet* is a named, ordered list of versions kept in ``<home>/fleets/<name>.json``;
``gnomon evaluate/compare/report --fleet NAME`` run over it.

>>> lin = read_lineage("ft-neg-s0040")            # doctest: +SKIP
>>> [v.id for v in lineage_chain("ft-neg-s0040")] # doctest: +SKIP
['ft-neg-s0040', 'smollm2-base']
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from pipeline.atomic import move_into_place, write_json
from pipeline.home import gnomon_home, pull_shared, push_shared
from pipeline.store import check_name
from pipeline.types import GnomonError
from pipeline.version_cache import fetch_all, fetch_version, is_registered, remote_lineage, upload_version

__all__ = [
    "LINEAGE_FILE",
    "Fleet",
    "FleetMember",
    "Kind",
    "Lineage",
    "check_fleet_name",
    "fleet_path",
    "lineage_chain",
    "lineage_tags",
    "list_fleets",
    "list_versions",
    "load_fleet",
    "read_lineage",
    "register_version",
    "scan_versions",
    "save_fleet",
    "version_dir",
]

Kind = Literal["base", "finetune", "scratch", "numeric", "edited", "import"]
KINDS: tuple[str, ...] = ("base", "finetune", "scratch", "numeric", "edited", "import")
LINEAGE_FILE = "lineage.json"


@dataclass(frozen=True)
class Lineage:
    """Where a model version came from (``lineage.json`` in its directory)."""

    id: str
    """Registered model id: the directory name under ``<home>/models/``."""
    kind: str
    """One of ``KINDS``: how the version was made."""
    fingerprint: str
    """``fingerprint_model`` of this version's weights (config + parameters)."""
    parent: str | None = None
    """Parent version id (``None`` for a root: an imported or from-scratch initial model)."""
    parent_fingerprint: str | None = None
    series: str | None = None
    """The series this version belongs to (``ft-negative``, ``ft-control``, ``scratch``...)."""
    step: int | None = None
    """Optimizer steps taken from the parent (training series), else ``None``."""
    data_sha256: str | None = None
    """sha256 of the training corpus (fine-tune and from-scratch versions)."""
    settings: dict[str, Any] = field(default_factory=dict)
    """How it was made: learning rate, trained blocks, dtype, quantization, edited direction..."""
    family: str | None = None
    """``config.model_type``."""
    hidden_size: int | None = None
    num_layers: int | None = None
    created: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, doc: Any, where: str, folder: str | None = None) -> Lineage:
        """A lineage from its JSON, checked against :data:`LINEAGE_SCHEMA`; ``folder``: the
        directory name it was read from, which its ``id`` must equal. Every problem is one
        GnomonError naming the file and the field."""
        if not isinstance(doc, dict):
            raise GnomonError(f"{where}: lineage must be a JSON object")
        missing = [k for k in ("id", "kind", "fingerprint") if k not in doc]
        if missing:
            raise GnomonError(f"{where}: lineage lacks {', '.join(missing)}")
        for name, (types, nullable, what) in LINEAGE_SCHEMA.items():
            value = doc.get(name)
            if value is None and (nullable or name not in doc):
                continue
            if isinstance(value, bool) and bool not in types or not isinstance(value, types):
                raise GnomonError(f"{where}: lineage field {name!r} must be {what}, got {value!r}")
            if isinstance(value, int) and not isinstance(value, bool) and value < 0:
                raise GnomonError(f"{where}: lineage field {name!r} must be {what}, got {value!r}")
        if not doc["fingerprint"] or not doc["id"]:
            raise GnomonError(f"{where}: lineage fields 'id' and 'fingerprint' must not be empty")
        if doc["kind"] not in KINDS:
            raise GnomonError(f"{where}: unknown lineage kind {doc['kind']!r}; one of {', '.join(KINDS)}")
        if folder is not None and doc["id"] != folder:
            raise GnomonError(f"{where}: lineage field 'id' is {doc['id']!r} but the version's folder is "
                              f"{folder!r}; a moved or copied version must be registered again")
        known = {f.name for f in fields(cls)}
        kw = {k: v for k, v in doc.items() if k in known}
        kw["settings"] = kw.get("settings") or {}
        kw["created"] = kw.get("created") or ""
        return cls(**kw)


LINEAGE_SCHEMA: dict[str, tuple[tuple[type, ...], bool, str]] = {
    "id": ((str,), False, "a string"),
    "kind": ((str,), False, "a string"),
    "fingerprint": ((str,), False, "a string"),
    "parent": ((str,), True, "a version id or null"),
    "parent_fingerprint": ((str,), True, "a string or null"),
    "series": ((str,), True, "a string or null"),
    "step": ((int,), True, "a whole number >= 0 or null"),
    "data_sha256": ((str,), True, "a string or null"),
    "settings": ((dict,), True, "a JSON object"),
    "family": ((str,), True, "a string or null"),
    "hidden_size": ((int,), True, "a whole number or null"),
    "num_layers": ((int,), True, "a whole number or null"),
    "created": ((str,), True, "a string"),
}
"""``lineage.json``: field -> (JSON types, may be null, what to write). Booleans are not
numbers here, and numbers are never negative. Unknown fields are ignored (newer files)."""


def version_dir(version_id: str, home: str | Path | None = None) -> Path:
    """``<home>/models/<id>``; the id must be a plain name (it cannot leave the home)."""
    return gnomon_home(home) / "models" / check_name(version_id, "model version id")


def read_lineage(version_id: str, home: str | Path | None = None) -> Lineage:
    d = version_dir(version_id, home)
    fetch_version(version_id, home)   # a home on object storage: this node's copy (pipeline.version_cache)
    f = d / LINEAGE_FILE
    if not f.is_file():
        raise GnomonError(f"model version {version_id!r} has no {LINEAGE_FILE} under {d}: "
                          "build it with `gnomon fleet build` or register it with `gnomon models add`")
    try:
        doc = json.loads(f.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise GnomonError(f"{f}: not valid JSON ({e})") from None
    return Lineage.from_json(doc, str(f), folder=d.name)


def register_version(staged: Path, lineage: Lineage, home: str | Path | None = None,
                     replace: bool = False) -> Path:
    """Move a fully written model directory ``staged`` to ``<home>/models/<id>`` atomically.

    The parent, when named, must already be registered (lineage never points at nothing).
    ``staged`` must sit on the same filesystem as the home (build it under
    ``<home>/models/.staging/``) so the final step is one ``rename``.
    """
    dst = version_dir(lineage.id, home)
    if lineage.parent is not None and not is_registered(lineage.parent, home):
        raise GnomonError(f"parent version {lineage.parent!r} of {lineage.id!r} is not registered; "
                          "build or register the parent first")
    if not (staged / "config.json").is_file():
        raise GnomonError(f"{staged} is not a Hugging Face model directory (no config.json)")
    doc = lineage.to_json()
    doc["created"] = doc["created"] or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    (staged / LINEAGE_FILE).write_text(json.dumps(doc, indent=2, sort_keys=True))
    if (dst.exists() or remote_lineage(lineage.id, home) is not None) and not replace:
        raise GnomonError(f"model version {lineage.id!r} already exists at {dst}")
    return upload_version(move_into_place(staged, dst), lineage.id, home)   # object storage: lineage last


def scan_versions(home: str | Path | None = None) -> tuple[list[Lineage], list[str]]:
    """Every registered version with a valid lineage file, sorted by id, and one line per
    lineage file that is not valid (skipped: one corrupt file must not hide the others)."""
    fetch_all(home)   # a home on object storage: every version, on this node
    root = gnomon_home(home) / "models"
    if not root.is_dir():
        return [], []
    out, problems = [], []
    for d in sorted(root.iterdir()):
        if d.name.startswith(".") or not (d / LINEAGE_FILE).is_file():
            continue
        try:
            out.append(read_lineage(d.name, home))
        except GnomonError as e:
            problems.append(str(e))
    return out, problems


def list_versions(home: str | Path | None = None) -> list[Lineage]:
    """Every registered version with a valid lineage file, sorted by id (invalid ones are
    left out; :func:`scan_versions` says which and why)."""
    return scan_versions(home)[0]


def lineage_chain(version_id: str, home: str | Path | None = None) -> list[Lineage]:
    """The version and its ancestors, nearest first; a missing parent is an error."""
    chain: list[Lineage] = []
    seen: set[str] = set()
    cur: str | None = version_id
    while cur is not None:
        if cur in seen:
            raise GnomonError(f"lineage of {version_id!r} has a cycle at {cur!r}")
        seen.add(cur)
        if chain and not (version_dir(cur, home) / LINEAGE_FILE).is_file():
            raise GnomonError(f"version {chain[-1].id!r} names parent {cur!r}, which is not registered")
        lin = read_lineage(cur, home)
        chain.append(lin)
        cur = lin.parent
    return chain


@dataclass(frozen=True)
class FleetMember:
    id: str
    series: str | None = None
    step: int | None = None
    kind: str | None = None


@dataclass(frozen=True)
class Fleet:
    """A named, ordered list of registered model versions."""

    name: str
    members: tuple[FleetMember, ...]
    description: str = ""

    @property
    def ids(self) -> list[str]:
        return [m.id for m in self.members]

    def series(self, name: str) -> list[FleetMember]:
        """Members of one series, by step."""
        return sorted((m for m in self.members if m.series == name), key=lambda m: m.step or 0)


def fleet_path(name: str, home: str | Path | None = None) -> Path:
    return gnomon_home(home) / "fleets" / f"{check_name(name, 'fleet name')}.json"


def save_fleet(fleet: Fleet, home: str | Path | None = None) -> Path:
    """Write ``<home>/fleets/<name>.json`` (temp + rename); every member must be registered."""
    for m in fleet.members:
        if not (version_dir(m.id, home) / LINEAGE_FILE).is_file():
            raise GnomonError(f"fleet {fleet.name!r}: member {m.id!r} is not a registered model version")
    doc = {"name": fleet.name, "description": fleet.description, "versions": [asdict(m) for m in fleet.members]}
    return push_shared(write_json(fleet_path(fleet.name, home), doc, indent=2), home)   # object storage: shared


def load_fleet(name: str, home: str | Path | None = None) -> Fleet:
    pull_shared("fleets", home)   # a home on object storage: the fleets any node saved
    path = fleet_path(name, home)
    if not path.is_file():
        known = ", ".join(list_fleets(home)) or "none yet"
        raise GnomonError(f"unknown fleet {name!r} (known: {known}); build one with `gnomon fleet build`")
    try:
        doc = json.loads(path.read_text())
        members = tuple(FleetMember(**{k: v for k, v in m.items() if k in ("id", "series", "step", "kind")})
                        for m in doc["versions"])
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
        raise GnomonError(f"{path}: not a fleet file ({e})") from None
    return Fleet(name=str(doc.get("name", name)), members=members, description=str(doc.get("description", "")))


def list_fleets(home: str | Path | None = None) -> list[str]:
    root = pull_shared("fleets", home)
    return sorted(p.stem for p in root.glob("*.json")) if root.is_dir() else []


def check_fleet_name(name: str) -> str:
    """A fleet name is a plain file name under ``<home>/fleets`` (no ``/``, ``..``, absolute path)."""
    return check_name(name, "fleet name")


def lineage_tags(model_id: str, fingerprint: str, home: str | Path | None = None) -> dict[str, str]:
    """Catalog tags that let a direction's model be followed to its parent.

    Empty unless ``model_id`` is a registered version whose fingerprint is ``fingerprint``
    (a direction fitted on other weights under the same name must not claim this lineage).
    """
    try:
        d = version_dir(model_id, home)
    except GnomonError:   # a path, tiny:..., smollm2: not a registered version
        return {}
    if not (d / LINEAGE_FILE).is_file():
        return {}
    lin = read_lineage(model_id, home)
    if lin.fingerprint != fingerprint:
        return {}
    tags = {"lineage.kind": lin.kind, "lineage.parent": lin.parent or "",
            "lineage.parent_fingerprint": lin.parent_fingerprint or "",
            "lineage.step": "" if lin.step is None else str(lin.step), "lineage.series": lin.series or ""}
    return {k: v for k, v in tags.items() if v}
