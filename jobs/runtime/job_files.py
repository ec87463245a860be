"""The files a submitted job carries besides its spec: the concept files it names.

A Ray Job's driver runs in the job's unpacked working folder on the head, which need not see
the submitter's disk (``jobs.runtime.cluster``): every concept file the spec names travels in that
folder, and the shipped spec points at the copies.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipeline.types import GnomonError

__all__ = ["dataset_files", "ship_datasets"]


def dataset_files(job: Any, spec_dir: Path) -> dict[str, Path]:
    """``{name in the spec: file here}`` for every concept file the spec names: they travel
    with the job (its driver runs in the unpacked working folder, on a node that may not see
    this disk)."""
    names = {*job.fit.concepts, *(e.concept for e in job.evaluate), *(c for r in job.report for c in r.concepts)}
    out = {}
    for name in sorted(names):
        path = Path(name).expanduser()
        src = path if path.is_absolute() else spec_dir / path
        if src.is_file():
            out[name] = src
    return out


def ship_datasets(spec_text: str, files: Mapping[str, Path], workdir: Path) -> str:
    """Copy ``files`` under ``workdir/data/`` and point the spec's strings at the copies
    (``data/<i>/<file name>``: the file's stem is the concept's name, so it is kept, and two
    files of one name in different folders stay apart)."""
    for i, (name, src) in enumerate(sorted(files.items())):
        rel = f"data/{i}/{src.name}"
        (workdir / "data" / str(i)).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, workdir / rel)
        sidecar = src.with_suffix(".contrast.json")   # its contrast pairs (pipeline.datasets)
        if sidecar.is_file():
            shutil.copyfile(sidecar, (workdir / rel).with_suffix(".contrast.json"))
        quoted = [q for q in (json.dumps(name), f"'{name}'") if q in spec_text]
        if not quoted:
            raise GnomonError(f"concept file {name}: cannot point the shipped spec at its copy (write the path "
                              "without escapes, in double or single quotes)")
        for q in quoted:
            spec_text = spec_text.replace(q, json.dumps(rel))
    return spec_text
