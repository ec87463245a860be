"""Typed job specs, loaded explicitly from TOML (never executed, never read at import).

A job runs a fleet: every model (checkpoint) x every concept is collected and fitted, then
the evaluation stage checks chosen directions on every model. Example: ``jobs/examples/demo.toml``.

    [job]
    name = "demo"
    models = ["smollm2"]          # checkpoints: ids, directories, .gguf files
    executor = "auto"             # or "local", "ray" (see jobs.runtime.engine.EXECUTORS)

    [fit]
    concepts = ["sentiment", "honesty"]
    methods = ["mean_diff", "logistic"]
    positions = ["last", "mean"]  # the default, as FitSpec and --positions
    layers = "all"                # or [4, 8, 12], "2-6", "0,4,8" (as --layers)

    [[evaluate]]
    concept = "sentiment"         # evaluates <concept>@best on every model
    strengths = [-8, -4, 0, 4, 8]

    [[report]]                    # the linearity report (`gnomon report`) over every model
    concepts = ["sentiment", "honesty"]
    layers = [0, 6, 12, 18, 24, 30]
"""

from __future__ import annotations

import math
import tomllib
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from jobs.runtime.engine import executor_names
from jobs.stages.fit_job import FitSpec
from jobs.stages.stage_specs import EvalSpec, ReportSpec
from pipeline.methods import method_names
from pipeline.types import GnomonError, parse_layers

# lazy: numpy, pyarrow (heavy; imported where used)

EXAMPLES = Path(__file__).parents[1] / "examples"


@dataclass(frozen=True)
class FitSection:
    """The ``[fit]`` table: a :class:`jobs.stages.fit_job.FitSpec` per (model, concept).

    Its defaults are ``FitSpec``'s, read from it, so ``gnomon run`` and ``gnomon fit`` fit
    the same thing when neither says otherwise. Positions default to ``last`` *and*
    ``mean`` (as ``--positions``): selection picks per position, and some models read
    a concept better at the mean (sentence encoders such as ``minilm`` are pooled so);
    the price is twice the fit groups, and a spec can say ``positions = ["last"]``.
    """

    concepts: tuple[str, ...] = ("sentiment",)
    methods: tuple[str, ...] = field(default_factory=method_names)
    positions: tuple[str, ...] = FitSpec.positions
    layers: tuple[int, ...] | None = FitSpec.layers
    select_metric: str = FitSpec.select_metric
    register: str = FitSpec.register
    params: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per-method parameters: ``[fit.params.ccs]`` then ``epochs = 500`` (as ``--param ccs.epochs=500``)."""


@dataclass(frozen=True)
class EvaluateSection:
    """An ``[[evaluate]]`` stage; its defaults are :class:`jobs.stages.stage_specs.EvalSpec`'s."""

    concept: str
    ref: str | None = None
    """Default: the best (by validation) direction of ``concept`` for the first model,
    restricted to ``method`` when given."""
    method: str | None = None
    position: str | None = None
    """Restrict the choice to directions read at this position (``last``/``mean``)."""
    chat: bool = EvalSpec.chat
    """Wrap the neutral prompts in the model's chat template (instruct models)."""
    strengths: tuple[float, ...] = EvalSpec.strengths
    unit: str = EvalSpec.unit
    n_prompts: int = EvalSpec.n_prompts
    max_new_tokens: int = EvalSpec.max_new_tokens
    probe: bool = EvalSpec.probe
    monitor: bool = EvalSpec.monitor
    fleet: str | None = EvalSpec.fleet
    """Evaluate on every version of this fleet instead of the job's models (one MLflow run each)."""


@dataclass(frozen=True)
class ReportSection:
    """A ``[[report]]`` stage: :class:`jobs.stages.stage_specs.ReportSpec` over every model of the
    job, with its defaults."""

    concepts: tuple[str, ...]
    layers: tuple[int, ...] | None = ReportSpec.layers
    position: str = ReportSpec.position
    control: bool = ReportSpec.control
    compose: bool = ReportSpec.compose
    strengths: tuple[float, ...] = ReportSpec.strengths
    n_prompts: int = ReportSpec.n_prompts
    max_new_tokens: int = ReportSpec.max_new_tokens
    score: str = ReportSpec.score
    name: str | None = ReportSpec.name


@dataclass(frozen=True)
class JobSpec:
    name: str
    models: tuple[str, ...]
    revision: str = "main"
    executor: str = "auto"
    ray_address: str | None = None
    fit: FitSection = field(default_factory=FitSection)
    evaluate: tuple[EvaluateSection, ...] = ()
    report: tuple[ReportSection, ...] = ()


def _build(cls: Any, table: dict[str, Any], where: str) -> Any:
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(table) - known)
    if unknown:
        raise GnomonError(f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(known))}")
    kw = {}
    for k, v in table.items():
        if k == "layers" and (isinstance(v, str) or v is None):
            v = parse_layers(v)   # "all", "1-2", "0,4,8": as --layers takes them
        kw[k] = tuple(v) if isinstance(v, list) else v
    try:
        obj = cls(**kw)
    except TypeError as e:
        raise GnomonError(f"{where}: {e}") from e
    hints = typing.get_type_hints(cls)
    for k in kw:
        if not _matches(getattr(obj, k), hints[k]):
            raise GnomonError(f"{where}: {k} = {getattr(obj, k)!r} is not a {_type_name(hints[k])}")
    return obj


def _matches(value: Any, hint: Any) -> bool:
    """``value`` fits ``hint`` (str, int, float, bool, X | None, tuple[X, ...], a section);
    TOML gives other types than the spec needs (a string for a list, a table for a list)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, a) for a in args)
    if origin is tuple:
        return isinstance(value, tuple) and all(_matches(v, args[0]) for v in value)
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint) if isinstance(hint, type) else True


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def load_job(path: str | Path) -> JobSpec:
    """Parse and check a TOML job spec."""
    path = Path(path)
    if not path.is_file():
        raise GnomonError(f"no job spec at {path}; see {EXAMPLES / 'demo.toml'}")
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise GnomonError(f"{path}: not UTF-8 text (byte {e.start}); save it as UTF-8") from None
    except tomllib.TOMLDecodeError as e:
        raise GnomonError(f"{path}: invalid TOML ({e})") from e
    for table, kind in (("job", dict), ("fit", dict), ("evaluate", list), ("report", list)):
        if table in doc and not isinstance(doc[table], kind):
            raise GnomonError(f"{path}: {table} must be a {f'[[{table}]] array of tables' if kind is list else f'[{table}] table'}")
    for table in ("evaluate", "report"):
        if not all(isinstance(e, dict) for e in doc.get(table, [])):
            raise GnomonError(f"{path}: each [[{table}]] entry must be a table")
    unknown = sorted(set(doc) - {"job", "fit", "evaluate", "report"})
    if unknown:
        raise GnomonError(f"{path}: unknown table(s) {', '.join(unknown)}; use [job], [fit], [[evaluate]], [[report]]")
    job = dict(doc.get("job", {}))
    if "name" not in job or not job.get("models"):
        raise GnomonError(f"{path}: [job] needs name and models")
    fit = _build(FitSection, doc.get("fit", {}), f"{path} [fit]")
    bad = [m for m in (*fit.methods, *fit.params) if m not in method_names()]
    if not all(isinstance(v, dict) for v in fit.params.values()):
        raise GnomonError(f"{path} [fit.params]: use one table per method, e.g. [fit.params.ccs] epochs = 500")
    if bad:
        raise GnomonError(f"{path} [fit]: unknown method {bad[0]!r}; choose from {', '.join(method_names())}")
    evals = tuple(_build(EvaluateSection, e, f"{path} [[evaluate]]") for e in doc.get("evaluate", []))
    reports = tuple(_build(ReportSection, r, f"{path} [[report]]") for r in doc.get("report", []))
    spec = _build(JobSpec, {**job, "fit": fit, "evaluate": evals, "report": reports}, f"{path} [job]")

    if spec.executor not in executor_names():
        raise GnomonError(f"{path} [job]: executor must be {' or '.join(executor_names())}")
    from pipeline.store import check_name

    check_name(spec.name, "job name")  # it names a folder under the home
    return spec  # type: ignore[no-any-return]
