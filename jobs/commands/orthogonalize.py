"""``gnomon orthogonalize REF --out DIR``: write a copy of the model whose weights cannot
write along the direction (Arditi et al. 2024); ``load_model(DIR)`` / ``--model DIR`` loads it."""

from __future__ import annotations

import argparse
from pathlib import Path

from jobs.commands.steer import add_source_args, describe, model_for, resolve_directions


def add_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("ref", metavar="REF", help="direction: catalog ref or .safetensors file")
    p.add_argument("--out", required=True, help="directory to write (a Hugging Face model directory)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    add_source_args(p)


def run(args: argparse.Namespace) -> int:
    from pipeline.orthogonalize import save_orthogonalized
    from pipeline.types import GnomonError

    ref = args.ref
    if not Path(ref).expanduser().exists() and not ref.endswith((".safetensors", ".gguf")):
        # record the version the alias points at now, not the alias (it may move later)
        from catalog import Catalog

        ref = Catalog(tracking_uri=args.tracking_uri).resolve(ref).ref
    directions = resolve_directions([ref], args.tracking_uri)
    if len(directions) != 1:
        raise GnomonError(f"{args.ref} holds {len(directions)} directions; orthogonalize takes one")
    (d,) = directions
    lm = model_for(directions, args.model)
    out = save_orthogonalized(lm, d, Path(args.out).expanduser().resolve(), ref=ref, force=args.force,
                              overwrite=args.overwrite)
    print(f"wrote {out}: {lm.model_id} without {describe(d)}"
          + (f" ({args.ref} = {ref})" if ref != args.ref else "") + f" (source fingerprint {lm.fingerprint})")
    return 0
