"""``gnomon store ls|gc|repair``: what the activation store holds, checking it, repairing it,
and removing what nothing uses.

``ls`` groups the shard manifests by model, revision and dataset: layers, rows, bytes,
dtype, and how many files on disk no manifest accounts for; ``ls --verify`` also checks
every shard against its manifest's checksum and lists the ones readers leave out (exit 1
when there are any). ``repair`` collects those shards again (``jobs.stages.store_repair``), or
says which ``gnomon collect`` command will. ``gc`` deletes the orphans:
shards no manifest points at (a job stopped between the rename of a shard and the write of
its manifest), manifests whose shard is gone or has another size, and temporary files left by
a crash. A running collection writes a shard a moment before its manifest, so only files
older than ``--min-age`` seconds are touched (default one hour), and none written since the
oldest running collection started (:mod:`jobs.stages.collect_lock`); ``--dry-run`` only lists.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from jobs.cli.commands.args import add_options
from jobs.stages.collect_lock import running_since
from jobs.stages.store_repair import repair_store
from pipeline.home import gnomon_home
from pipeline.types import GnomonError

# lazy: numpy, pyarrow (heavy; imported where used)


def add_parser(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="store_command", metavar="ACTION", required=True)
    ls = sub.add_parser("ls", help="datasets, layers, rows and bytes per model")
    add_options(ls, json="print JSON instead of a table")
    ls.add_argument("--verify", action="store_true",
                    help="check every shard against its manifest's sha256 (reads every file); exit 1 if any fails")
    repair = sub.add_parser("repair", help="collect again the shards that fail their manifest checks")
    add_options(repair, json="print what was repaired as JSON")
    gc = sub.add_parser("gc", help="delete orphaned shards, stale manifests and temporary files")
    gc.add_argument("--dry-run", action="store_true", help="list what would be deleted, delete nothing")
    gc.add_argument("--min-age", type=float, default=3600.0, metavar="SECONDS",
                    help="only touch files older than this, so a running job is safe (default: 3600)")
    add_options(gc, json="print what was deleted as JSON")


def _layers(layers: list[int]) -> str:
    """``[1, 2, 3, 7]`` -> ``1-3,7``."""
    out, start = [], None
    for i, x in enumerate(layers):
        if start is None:
            start = x
        if i + 1 == len(layers) or layers[i + 1] != x + 1:
            out.append(str(start) if start == x else f"{start}-{x}")
            start = None
    return ",".join(out)


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


@dataclass(frozen=True)
class _Object:
    """A file of a store on object storage, with the few Path methods ``gc`` uses."""

    storage: Any
    rel: str

    def exists(self) -> bool:
        return bool(self.storage.exists(self.rel))

    def stat(self) -> Any:
        info = self.storage.info(self.rel)
        return SimpleNamespace(st_mtime=info.mtime_ns / 1e9, st_size=info.size)

    def unlink(self, missing_ok: bool = False) -> None:
        self.storage.delete(self.rel)

    def relative_to(self, root: Any) -> str:
        return self.rel

    def __str__(self) -> str:
        return str(self.storage.uri_of(self.rel))


def _orphans(store: Any, referenced: set) -> tuple[list, list]:
    """Shard files no manifest points at, and temporary files (none on object storage:
    an object is published in one request)."""
    if store.storage.local is None:
        found = store.storage.glob("activations/model=*/revision=*/dataset=*/layer=*/*.parquet")
        return [_Object(store.storage, f) for f in found if f not in referenced], []
    acts = store.root / "activations"
    orphans = [p for p in acts.rglob("*.parquet") if p.resolve() not in referenced] if acts.is_dir() else []
    temps = [p for kind in ("activations", "manifests") if (store.root / kind).is_dir()
             for p in (store.root / kind).rglob(".*.tmp")]
    return orphans, temps


def scan(root: Path) -> dict[str, Any]:
    """Manifests grouped by (model, revision, dataset), and the files no manifest explains."""
    from pipeline.store import ActivationStore

    store = ActivationStore(root)
    manifests = store.manifest()
    groups: dict[tuple[str, str, str], dict[str, Any]] = {}
    referenced: set = set()
    stale = []
    local = store.storage.local is not None
    for m in manifests:
        path = store.root / m["path"] if local else m["path"]
        if (not path.is_file() or path.stat().st_size != m.get("bytes")) if local \
                else store.storage.size(path) != m.get("bytes"):
            stale.append(_manifest_file(store, m))
            continue
        referenced.add(path.resolve() if local else path)
        g = groups.setdefault((m["model_slug"], m["revision"], m["dataset"]),
                              {"model": m["model"], "revision": m["revision"], "dataset": m["dataset"],
                               "layers": set(), "rows": 0, "bytes": 0, "files": 0, "dtype": set(),
                               "hidden_size": m.get("hidden_size")})
        g["layers"].add(m["layer"])
        g["rows"] += m["rows"]
        g["bytes"] += m["bytes"]
        g["files"] += 1
        g["dtype"].add(m.get("dtype", "?"))
    orphans, temps = _orphans(store, referenced)
    rows = []
    for g in groups.values():
        layers = sorted(g["layers"])
        rows.append({**g, "layers": layers, "layer_text": _layers(layers), "dtype": ",".join(sorted(g["dtype"])),
                     "rows_per_layer": g["rows"] // max(len(layers), 1)})
    rows.sort(key=lambda r: (r["model"], r["revision"], r["dataset"]))
    return {"root": str(store.root), "datasets": rows, "orphans": orphans, "stale_manifests": stale,
            "temporary": temps}


def _manifest_file(store: Any, m: dict[str, Any]) -> Any:
    if store.storage.local is None:
        return _Object(store.storage, str(store.manifest_file(m))[len(store.storage.uri) + 1:])
    return Path(store.manifest_file(m))


def _verify(root: Path) -> list[dict[str, str]]:
    from pipeline.store import ActivationStore

    return [{"path": m["path"], "model": m["model"], "dataset": m["dataset"], "layer": m["layer"], "why": why}
            for m, why in ActivationStore(root).verify()]


def _repair(root: Path, as_json: bool) -> int:
    done = repair_store(root, log=(lambda _: None) if as_json else print)
    failed = [r for r in done if not r.repaired]
    if as_json:
        print(json.dumps([{"path": r.path, "why": r.why, "repaired": r.repaired, "note": r.note} for r in done],
                         indent=1))
        return 1 if failed else 0
    if not done:
        print("nothing to repair: every shard matches its manifest")
        return 0
    for r in failed:
        print(f"cannot repair {r.path} ({r.why}): {r.note}", file=sys.stderr)
    print(f"repaired {len(done) - len(failed)} of {len(done)} shard(s)")
    return 1 if failed else 0


def run(args: argparse.Namespace) -> int:
    if args.store_command == "gc" and not args.min_age >= 0:
        raise GnomonError(f"--min-age must be a number of seconds >= 0, got {args.min_age:g}")
    root = gnomon_home()
    if args.store_command == "repair":
        return _repair(root, args.json)
    found = scan(root)
    if args.store_command == "ls":
        return _ls(found, args.json, _verify(root) if args.verify else None)

    now = time.time()
    since = running_since(root)  # a running collection's shards and temporary files are not orphans
    old = [p for p in (*found["orphans"], *found["stale_manifests"], *found["temporary"])
           if p.exists() and now - p.stat().st_mtime >= args.min_age
           and (since is None or p.stat().st_mtime < since)]
    freed = sum(p.stat().st_size for p in old)
    if not args.dry_run:
        for p in old:
            p.unlink(missing_ok=True)
    if args.json:
        print(json.dumps({"deleted" if not args.dry_run else "would_delete": [str(p) for p in old],
                          "bytes": freed}, indent=1))
        return 0
    verb = "would delete" if args.dry_run else "deleted"
    for p in old:
        print(f"{verb} {p.relative_to(root)}")
    young = len(found["orphans"]) + len(found["stale_manifests"]) + len(found["temporary"]) - len(old)
    why = f"newer than --min-age {args.min_age:g} s" + (" or written by a running collection" if since else "")
    print(f"{verb} {len(old)} file(s), {_size(freed)}" + (f"; {young} {why} left alone" if young else ""))
    return 0


def _ls(found: dict[str, Any], as_json: bool, bad: list[dict[str, str]] | None = None) -> int:
    rows = found["datasets"]
    failed = 1 if bad else 0
    if as_json:
        print(json.dumps({"root": found["root"], "datasets": rows,
                          "orphans": [str(p) for p in found["orphans"]],
                          "stale_manifests": [str(p) for p in found["stale_manifests"]],
                          "temporary": [str(p) for p in found["temporary"]],
                          **({"bad_shards": bad} if bad is not None else {})}, indent=1))
        return failed
    print(f"store {found['root']}")
    if not rows:
        print("no activations stored yet (gnomon collect ...)")
    else:
        header = ["MODEL", "REVISION", "DATASET", "LAYERS", "ROWS/LAYER", "FILES", "DTYPE", "WIDTH", "SIZE"]
        table = [[r["model"], r["revision"], r["dataset"], r["layer_text"], str(r["rows_per_layer"]),
                  str(r["files"]), r["dtype"], str(r["hidden_size"]), _size(r["bytes"])] for r in rows]
        widths = [max(len(h), *(len(t[i]) for t in table)) for i, h in enumerate(header)]
        for line in [header, *table]:
            print("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip())
        by_model: dict[str, int] = {}
        for r in rows:
            by_model[r["model"]] = by_model.get(r["model"], 0) + r["bytes"]
        print("total: " + ", ".join(f"{m} {_size(b)}" for m, b in sorted(by_model.items())))
        print("ROWS/LAYER: one row per example and position (last, mean, ...); layout and readers: docs/store.md")
    n = len(found["orphans"]) + len(found["stale_manifests"]) + len(found["temporary"])
    if n:
        print(f"{n} orphaned or temporary file(s): `gnomon store gc` removes them")
    if bad is not None:
        for b in bad:
            print(f"BAD {b['why']}")
        print(f"{len(bad)} shard(s) fail verification; readers leave them out: `gnomon store repair` collects "
              "them again" if bad else "verified: every shard matches its manifest's checksum")
    return failed
