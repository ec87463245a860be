"""``gnomon steer``: generate with and without directions applied, side by side.

REF is a catalog reference (``sentiment@best``, ``sentiment/7``), a direction file
(``.safetensors`` written by ``Direction.save``) or a control vector (``.gguf``). The model
comes from the first direction's provenance unless ``--model`` names one.

The helpers here (``add_source_args``, ``model_for``) are shared by ``monitor``,
``orthogonalize`` and ``export-gguf``; REFs resolve through :mod:`jobs.stages.refs`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import shutil
import textwrap
from itertools import zip_longest
from typing import TYPE_CHECKING, Any

from jobs.cli.commands.args import add_options
from jobs.runtime.output import step
from jobs.stages.conditions import conditional_generate, resolve_condition
from jobs.stages.refs import resolve_directions
from pipeline.models import ModelSpec, load_model
from pipeline.models.shape import model_shape
from pipeline.types import GnomonError

# lazy: numpy, pyarrow, torch (heavy; imported where used); pipeline.models.layers (tests patch it at the source)

if TYPE_CHECKING:
    from pipeline.direction import Direction
    from pipeline.models import LoadedModel

OPS = ("add", "ablate", "clamp", "interpolate")


# ---- shared by the direction-using commands -------------------------------------------
def add_source_args(p: argparse.ArgumentParser) -> None:
    add_options(p, "tracking_uri")
    p.add_argument("--model", help="the model a bare CONCEPT@best / @best-monitor / @best-steer resolves "
                   "against, and the model to load (default: the one in the direction's provenance)")
    p.add_argument("--force", action="store_true",
                   help="apply directions fitted on a model with a different fingerprint")


def allow_prompt_after_options(p: argparse.ArgumentParser) -> None:
    """Parse ``REF REF --strength 2 "prompt"`` as written: argparse's default parse binds every
    positional in the first run of positionals (prompt = the second REF), so this subparser
    uses ``parse_known_intermixed_args``, which sets options aside first. That method calls
    ``parse_known_args`` itself, so the override steps aside while it runs."""
    def parse_known(args: Any = None, namespace: Any = None) -> Any:
        del p.parse_known_args  # type: ignore[method-assign]
        try:
            return p.parse_known_intermixed_args(args, namespace)
        finally:
            p.parse_known_args = parse_known  # type: ignore[method-assign]

    p.parse_known_args = parse_known  # type: ignore[method-assign]


def model_spec_for(directions: list[Direction], override: str | None) -> Any:
    """The :class:`~pipeline.models.ModelSpec` of ``--model`` or of the model all directions
    were fitted on, after checking each direction's layer and width against that model's
    config (read without its weights), so a mismatch is refused before a load."""
    from pipeline.models.layers import check_layers
    if override:
        spec = ModelSpec(id=override)
    else:
        sources = {(d.provenance.model_id, d.provenance.revision) for d in directions}
        if len(sources) != 1:
            raise GnomonError(f"the directions come from different models {sorted(sources)}; pick one with --model")
        model_id, revision = sources.pop()
        if not model_id:
            raise GnomonError("the direction does not record its model; name one with --model")
        spec = ModelSpec(id=model_id, revision=revision or "main")
    shape = model_shape(spec)
    if shape is not None:
        for d in directions:
            check_layers([d.layer], shape.num_layers, spec.id)
            if d.provenance.hidden_size and d.provenance.hidden_size != shape.hidden_size:
                raise GnomonError(f"{describe(d)} has width {d.provenance.hidden_size} but {spec.id} has hidden "
                                  f"size {shape.hidden_size}: it was fitted on another architecture")
    return spec


def model_for(directions: list[Direction], override: str | None) -> LoadedModel:
    """Load ``--model`` or the model all directions were fitted on (checked first, see
    :func:`model_spec_for`)."""
    return load_model(model_spec_for(directions, override))


def load_spec(spec: Any) -> LoadedModel:
    return load_model(spec)


def describe(d: Direction) -> str:
    p = d.provenance
    return f"{p.concept or p.method or 'direction'}@L{p.layer}"


# ---- steer ---------------------------------------------------------------------------
def add_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("refs", nargs="+", metavar="REF", help="direction(s): catalog ref or .safetensors/.gguf file")
    p.add_argument("prompt", help="prompt to continue")
    p.add_argument("--strength", type=_floats, default=None, metavar="S[,S...]",
                   help="add: multiples of --unit (one value, or comma-separated one per REF; default: half "
                   "the measured fluency bound); clamp: the projection value; interpolate: t (0 = negative "
                   "class mean, 1 = positive); ablate: ignored")
    p.add_argument("--op", choices=OPS, default="add", help="intervention (default: add)")
    p.add_argument("--unit", choices=("separation", "resid_norm", "raw"), default="separation",
                   help="what one unit of --strength means for add (default: separation, the class-mean "
                   "distance; resid_norm: the mean residual norm at the direction's layer)")
    p.add_argument("--positions", choices=("all", "prompt", "generated"), default="all",
                   help="token positions the intervention edits (default: all)")
    p.add_argument("--max-new-tokens", type=int, default=32, help="tokens to generate (default: 32)")
    p.add_argument("--fluency-kl", type=float, default=None, metavar="NATS",
                   help="next-token KL (nats) that bounds fluent steering (default: 1.0)")
    p.add_argument("--no-fluency-check", action="store_true",
                   help="skip measuring the fluency bound (next-token KL) before generating")
    p.add_argument("--chat", action="store_true", help="wrap the prompt in the model's chat template")
    add_options(p, json="print both continuations and the settings as JSON")
    p.add_argument("--when", metavar="CONDITION", help="conditional steering (CAST): apply the REFs only when "
                   "CONDITION (a catalog ref fitted by `gnomon condition fit`) fires on the prompt")
    add_source_args(p)
    allow_prompt_after_options(p)


def _floats(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or comma-separated numbers, got {text!r}") from None


def build_interventions(lm: Any, directions: list[Direction], args: argparse.Namespace) -> list[Any]:
    from pipeline import steer

    strengths = list(args.strength if args.strength is not None else [1.0])
    if len(strengths) not in (1, len(directions)):
        raise GnomonError(f"give one --strength or one per REF ({len(directions)}), got {len(strengths)}")
    if len(strengths) == 1:
        strengths *= len(directions)
    kw = {"positions": args.positions, "force": args.force}
    if args.op == "add":
        return [steer.mix(lm, list(zip(directions, strengths)), unit=args.unit, **kw)]
    if args.op == "ablate":
        return [steer.ablate(lm, d, **kw) for d in directions]
    if args.op == "clamp":
        return [steer.clamp(lm, d, s, **kw) for d, s in zip(directions, strengths)]
    return [steer.interpolate(lm, d, s, **kw) for d, s in zip(directions, strengths)]


def fluency_check(lm: Any, directions: list[Direction], args: argparse.Namespace) -> dict[str, Any] | None:
    """Measure the fluency bound of an ``add`` on the prompt (and the concept's neutral prompts);
    fill in ``--strength`` when it was not given (half the bound). None for other ops or one
    direction per REF of several (a mix has no single bound)."""
    from pipeline.fluency import DEFAULT_FRACTION, GRID, fluency_bound, measure_kl

    if args.op != "add" or len(directions) != 1 or args.no_fluency_check:
        if args.strength is None:
            args.strength = [1.0]
        return None
    (d,) = directions
    prompts = [args.prompt]
    try:
        from pipeline.datasets import neutral_prompts

        prompts += neutral_prompts(d.provenance.concept)[:3] if d.provenance.concept else []
    except GnomonError:
        pass
    kw = {"kl_max": args.fluency_kl} if args.fluency_kl is not None else {}
    fb = fluency_bound(lm, d, prompts, args.unit, chat=args.chat, force=args.force, extra=args.strength or (), **kw)
    auto = args.strength is None
    if auto:
        args.strength = [round(DEFAULT_FRACTION * (fb.bound or min(GRID)), 4)]
    s = args.strength[0]
    if fb.kl_at(s) is None and s != 0:
        fb.kls[abs(s)] = measure_kl(lm, d, prompts, s, args.unit, chat=args.chat, force=args.force)
    kl = fb.kl_at(s)
    return {"unit": args.unit, "bound": fb.bound, "kl_max": fb.kl_max, "strength": s, "auto": auto,
            "kl_at_strength": kl, "past_bound": kl > fb.kl_max if kl is not None else fb.past(s),
            "bound_is_lower_limit": fb.bound >= max(GRID)}


def fluency_line(f: dict[str, Any]) -> str:
    head = (f"strength {f['strength']:g} {f['unit']}" + (" (auto: half the fluency bound)" if f["auto"] else ""))
    approx = ">=" if f.get("bound_is_lower_limit") else "~"
    bound = f"fluency bound {approx}{f['bound']:g} {f['unit']} (next-token KL <= {f['kl_max']:g} nats)"
    if f["bound"] == 0:
        bound = f"no fluent strength found (KL > {f['kl_max']:g} nats already at the smallest grid step)"
    if f["past_bound"]:
        kl = f["kl_at_strength"]
        return (f"warning: {head} is past the {bound}" + (f"; KL there {kl:.2f}" if kl is not None else "")
                + ": expect broken text")
    return f"{head}; {bound}"


def run(args: argparse.Namespace) -> int:

    # plain options before any catalog read or model load
    if args.max_new_tokens < 1:
        raise GnomonError(f"--max-new-tokens must be at least 1, got {args.max_new_tokens}")
    if args.strength is not None and not all(math.isfinite(s) for s in args.strength):
        raise GnomonError(f"--strength must be finite numbers, got {','.join(map(str, args.strength))}")

    directions = resolve_directions(args.refs, args.tracking_uri, args.model)
    when = None
    if getattr(args, "when", None):
        when = resolve_condition(args.when, args.tracking_uri, args.model)

    spec = model_spec_for(directions, args.model)   # layers and width checked before the load starts
    with step(f"load {spec.id}"):
        lm = load_spec(spec)
    from pipeline.steer import generate

    measures = args.op == "add" and len(directions) == 1 and not args.no_fluency_check
    with step("fluency bound (next-token KL on a strength grid)") if measures else contextlib.nullcontext():
        fluency = fluency_check(lm, directions, args)
    ivs = build_interventions(lm, directions, args)
    with step(f"generate {args.max_new_tokens} tokens, unsteered and steered"):
        plain = generate(lm, [args.prompt], args.max_new_tokens, chat=args.chat)[0]
        if when is None:
            steered = generate(lm, [args.prompt], args.max_new_tokens, interventions=ivs, chat=args.chat)[0]
        else:
            steered, condition = conditional_generate(lm, when, ivs, args)
    settings = {"op": args.op, "strength": args.strength, "unit": args.unit, "positions": args.positions,
                "max_new_tokens": args.max_new_tokens, "chat": args.chat, "force": args.force}
    if args.json:
        print(json.dumps({
            "model": {"id": lm.model_id, "revision": lm.revision, "fingerprint": lm.fingerprint},
            "directions": [{"ref": r, "name": describe(d)} for r, d in zip(args.refs, directions)],
            "settings": settings, "fluency": fluency, "prompt": args.prompt, "unsteered": plain,
            "steered": steered, "interventions": [iv.label for iv in ivs],
            **({"condition": condition} if when else {})}, indent=2))
        return 0
    width = max(40, min(shutil.get_terminal_size((100, 20)).columns, 160))
    col = (width - 3) // 2
    print(f"model {lm.model_id} ({lm.revision}); prompt: {args.prompt!r}")
    if fluency is not None:
        print(fluency_line(fluency))
    if when is not None:
        print(f"condition {condition['ref']} {'fired' if condition['fired'] else 'did not fire'}: the prompt reads "
              f"{condition['reading']:+.4g} ({condition['comparison']} {condition['threshold']:.4g} fires)")
    left = textwrap.wrap(plain, col, replace_whitespace=True) or ["(empty)"]
    right = textwrap.wrap(steered, col, replace_whitespace=True) or ["(empty)"]
    print(f"{'unsteered':<{col}} | {'; '.join(iv.label for iv in ivs)[:col]}")
    print(f"{'-' * col}-+-{'-' * col}")
    for a, b in zip_longest(left, right, fillvalue=""):
        print(f"{a:<{col}} | {b}")
    return 0
