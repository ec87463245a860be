"""``gnomon export-gguf REF... FILE``: write directions as a llama.cpp control vector and
print the llama.cpp arguments that apply it (``--control-vector-scaled FILE SCALE
--control-vector-layer-range START END``, blocks counted from 0); a FILE ending in
``.safetensors`` gets the same vectors as plain safetensors. gnomon layer L is written as
llama.cpp's ``direction.{L-1}`` (block L-1's output)."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from jobs.cli.commands.args import add_options
from jobs.cli.commands.steer import describe
from jobs.stages.refs import resolve_directions
from pipeline.models.loading import bundled_gguf
from pipeline.types import GnomonError

# lazy: numpy, torch (heavy; imported where used)

def add_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("refs", nargs="+", metavar="REF", help="direction(s): catalog ref or .safetensors file")
    p.add_argument("file", metavar="FILE", help="output .gguf (or .safetensors)")
    p.add_argument("--strength", type=float, default=1.0, help="multiples of --unit baked into the vectors (default: 1.0)")
    p.add_argument("--unit", choices=("separation", "resid_norm", "raw"), default="separation",
                   help="what one unit of --strength means (default: separation)")
    p.add_argument("--model-hint", help="controlvector.model_hint (default: the direction's model id)")
    add_options(p, "tracking_uri")
    p.add_argument("--model", help="the model a bare CONCEPT@best resolves against (default: the only one that has it)")
    p.add_argument("--force", action="store_true", help="replace FILE if it exists (default: refuse)")


def run(args: argparse.Namespace) -> int:
    if not args.file.endswith((".gguf", ".safetensors")):
        raise GnomonError(f"{args.file}: the output must end in .gguf or .safetensors")
    target = Path(args.file).expanduser()
    if target.exists() and not args.force:  # checked before any REF is resolved
        what = "a directory" if target.is_dir() else "a file"
        raise GnomonError(f"{target} exists ({what}); choose another FILE, or pass --force to replace it")
    if target.is_dir():
        raise GnomonError(f"{target} is a directory; give a .gguf or .safetensors file name")
    directions = resolve_directions(args.refs, args.tracking_uri, args.model)
    from pipeline import gguf_io  # torch: after every check

    if args.file.endswith(".safetensors"):
        path = gguf_io.write_safetensors(directions, args.file, strength=args.strength, unit=args.unit)
        names = ", ".join(f"{describe(d)} -> layer.{d.layer}" for d in directions)
    elif args.file.endswith(".gguf"):
        path = gguf_io.write_control_vector(directions, args.file, strength=args.strength, unit=args.unit,
                                            model_hint=args.model_hint)
        names = ", ".join(f"{describe(d)} -> direction.{gguf_io.gguf_index(d.layer)}" for d in directions)
    else:
        raise GnomonError(f"{args.file}: the output must end in .gguf or .safetensors")
    print(f"wrote {path} ({args.strength:g} x {args.unit}): {names}")
    if args.file.endswith(".gguf"):
        cli_args, notes = gguf_io.llama_cpp_args(path, directions, args.strength, args.unit,
                                                 _model_file(directions[0].provenance.model_id))
        print("llama.cpp: llama-cli " + " ".join(shlex.quote(a) for a in cli_args))
        for line in notes:
            print(f"  {line}")
    return 0


def _model_file(model_id: str) -> str | None:
    """The GGUF a direction's model runs from in llama.cpp, when gnomon knows it (the
    bundled SmolLM2, a .gguf path); otherwise the printed line says MODEL.gguf."""
    if model_id.endswith(".gguf"):
        return model_id
    if model_id == "smollm2":
        try:
            return str(bundled_gguf())
        except Exception:  # noqa: BLE001 - a hint only: the placeholder says what to pass
            return None
    return None
