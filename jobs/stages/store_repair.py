"""Collecting again the shards that fail their manifest checks (``gnomon store repair``).

A shard whose bytes no longer match its manifest (bit rot, a bad copy, a truncated file)
is left out by every reader; ``repair`` recomputes exactly it: the same model (its
recorded id, and only if the weights still have the recorded fingerprint), the same
example set (the manifest's ids, texts from the store's own ``examples``), layer,
positions and storage dtype, through the same per-shard function collection runs
(``jobs.stages.shards.run_shard``: temp file, fsync, rename, then the manifest). When that is
impossible (the model is gone or has other weights, the manifest predates recorded ids)
it says which ``gnomon collect`` command collects the rows again.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jobs.stages.collect_job import CollectSpec, _content_digest
from jobs.stages.shards import ShardTask, load_for_spec, run_shard
from pipeline.types import GnomonError

# lazy: numpy, pyarrow (heavy; imported where used)

__all__ = ["Repair", "collect_command", "repair_store"]


@dataclass(frozen=True)
class Repair:
    """What happened to one bad shard."""

    path: str
    """The shard, relative to the store root."""
    why: str
    """Why it failed verification."""
    repaired: bool
    note: str = ""
    """When not repaired: why not, and the command to run."""


def collect_command(store: Any, m: dict[str, Any]) -> str:
    """The ``gnomon collect`` command that collects the rows of manifest ``m`` again, from
    the examples the store holds (the same texts the shard was computed from)."""
    args = ["gnomon", "collect", "--model", str(m["model"]), "--dataset", str(store.examples_path(m["dataset"])),
            "--name", str(m["dataset"]), "--revision", str(m["revision"]), "--layers", str(m["layer"]),
            "--positions", ",".join(m.get("positions") or ["last"]), "--dtype", str(m.get("dtype", "float16"))]
    return shlex.join(args)


def repair_store(home: Path, log: Callable[[str], Any] = print) -> list[Repair]:
    """Verify every shard against its manifest and collect the bad ones again (see the
    module doc). Returns one :class:`Repair` per bad shard."""
    from pipeline.store import ActivationStore

    store = ActivationStore(home)
    out = []
    for m, why in store.verify():
        if not isinstance(m.get("model"), str) or not isinstance(m.get("positions"), list):
            out.append(Repair(str(m.get("path")), why, False, "its manifest is malformed: delete it with "
                              "`gnomon store gc` and collect the dataset again"))
            continue
        try:
            _repair_one(store, m, home)
        except GnomonError as e:
            out.append(Repair(m["path"], why, False, f"{e}; run: {collect_command(store, m)}"))
        else:
            out.append(Repair(m["path"], why, True))
            log(f"repaired {m['path']}")
    return out


def _repair_one(store: Any, m: dict[str, Any], home: Path) -> None:
    ids = m.get("ids")
    if not isinstance(ids, list) or not ids:
        raise GnomonError("its manifest does not record its example ids")
    if store.key(m["model"]) != m["model_slug"]:
        raise GnomonError(f"model {m['model']!r} now names another model in this directory")
    spec = CollectSpec.of(m["model"], m["dataset"], revision=m["revision"], layers=(int(m["layer"]),),
                       positions=tuple(m["positions"]), dtype=str(m.get("dtype", "float16")))
    examples = {r["id"]: r for r in store.read_examples(m["dataset"]).to_pylist()}
    missing = [i for i in ids if i not in examples]
    if missing:
        raise GnomonError(f"the stored examples of {m['dataset']} no longer hold {missing[0]!r}")
    texts = tuple(examples[i]["text"] for i in ids)
    messages = tuple(examples[i]["messages"] for i in ids)
    try:
        lm = load_for_spec(spec, home)
    except (GnomonError, OSError, ValueError) as e:
        raise GnomonError(f"cannot load model {m['model']} ({str(e).splitlines()[0] if str(e) else e})") from e
    if lm.fingerprint != m["fingerprint"]:
        raise GnomonError(f"model {m['model']} now has other weights (fingerprint {lm.fingerprint}, the shard "
                          f"was collected from {m['fingerprint']})")
    task = ShardTask(int(m["shard"]), tuple(ids), texts, messages, content=_content_digest(ids, texts, messages))
    res = run_shard(lm, spec, m["dataset"], task, home)
    if not res.written_layers:
        raise GnomonError("the collection found nothing to redo")
