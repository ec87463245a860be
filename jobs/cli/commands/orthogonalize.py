"""``gnomon orthogonalize REF --out DIR``: write a copy of the model whose weights cannot
write along the direction (Arditi et al. 2024); ``load_model(DIR)`` / ``--model DIR`` loads it."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from jobs.cli.commands.steer import add_source_args, describe, model_for
from jobs.stages.refs import check_refs, resolve_directions, say_resolved
from pipeline.types import GnomonError

# lazy: numpy, pyarrow, torch (heavy; imported where used)


def add_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("ref", metavar="REF", help="direction: catalog ref or .safetensors file")
    p.add_argument("--out", help="directory to write (a Hugging Face model directory with lineage.json)")
    p.add_argument("--as-version", metavar="ID", help="register the edited model under <home>/models/ID "
                   "(kind edited, parent = the source model's registered version); `--model ID` loads it")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    add_source_args(p)


def run(args: argparse.Namespace) -> int:

    # every input before any work (issue 21: a non-empty --out was refused after a 68 s load)
    if not args.out and not args.as_version:
        raise GnomonError("give --out DIR, --as-version ID, or both")
    if args.out:
        out_dir = Path(args.out).expanduser()
        if out_dir.exists() and not out_dir.is_dir():
            raise GnomonError(f"--out {out_dir} is a file; give a directory")
        if out_dir.is_dir() and any(out_dir.iterdir()) and not args.overwrite:
            raise GnomonError(f"--out {out_dir} exists and is not empty; choose another --out, or pass "
                              "--overwrite to replace it")
    if args.as_version:
        from pipeline.fleet.registry import version_dir

        version_dir(args.as_version)   # a bad id fails before the model is loaded
    ref = args.ref
    recs = check_refs([ref], args.tracking_uri, args.model)
    if recs:   # record the version the alias points at now, not the alias (it may move later)
        ref = recs[0].ref

        say_resolved(args.ref, recs[0])
    directions = resolve_directions([ref], args.tracking_uri, say=False)
    if len(directions) != 1:
        raise GnomonError(f"{args.ref} holds {len(directions)} directions; orthogonalize takes one")
    (d,) = directions
    lm = model_for(directions, args.model)
    from pipeline.orthogonalize import save_orthogonalized

    if args.out:
        from pipeline.fleet.edited import edited_recipe

        out_dir = Path(args.out).expanduser().resolve()
        recipe = edited_recipe(args.as_version or out_dir.name, lm, d, ref, None)
        out = save_orthogonalized(lm, d, out_dir, ref=ref, force=args.force, overwrite=args.overwrite)
        meta = json.loads((out / "gnomon.json").read_text())
        doc = {**recipe.to_json(), "fingerprint": meta["fingerprint"]}
        (out / "lineage.json").write_text(json.dumps(doc, indent=2, sort_keys=True))
        print(f"wrote {out}: {lm.model_id} without {describe(d)}"
              + (f" ({args.ref} = {ref})" if ref != args.ref else "") + f" (source fingerprint {lm.fingerprint})")
    if args.as_version:
        from pipeline.fleet.edited import register_orthogonalized

        lin = register_orthogonalized(lm, d, args.as_version, ref=ref, force=args.force)
        print(f"registered {lin.id}: {lm.model_id} without {describe(d)}; parent {lin.parent or '-'}, "
              f"fingerprint {lin.fingerprint}")
    return 0
