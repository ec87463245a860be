"""``gnomon fleet build``: build every version of a fleet, stage by stage, resumably.

Stages run in an order that makes a partial fleet useful early: the base model and its
numeric versions, MiniLM, the two fine-tuning series, the from-scratch series, the edited
versions. After each stage the fleet file is rewritten with every planned version that is
registered so far, so ``gnomon evaluate --fleet`` can start before the slow stages end.
A version already registered with the same recipe is skipped; a training series resumes
from its last registered checkpoint (weights and optimizer state).

``tiny=True`` builds the same shape from a tiny random Llama (tests, smoke runs): seconds.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from jobs.runtime.engine import LocalExecutor
from jobs.stages.drift_prereg import preregister
from jobs.stages.evasion_build import build_evasion
from jobs.stages.fleet_edited import build_edited
from pipeline.fleet import corpora
from pipeline.fleet.finetune import FinetuneConfig, finetune_series, seed_suffix, series_ids
from pipeline.fleet.imports import import_base, import_minilm, import_model, minilm_zip
from pipeline.fleet.numeric import build_numeric, numeric_id
from pipeline.fleet.registry import (
    LINEAGE_FILE,
    Fleet,
    FleetMember,
    check_fleet_name,
    list_fleets,
    load_fleet,
    read_lineage,
    save_fleet,
    version_dir,
)
from pipeline.fleet.scratch import ScratchConfig, scratch_ids, train_scratch
from pipeline.fleet.selfgen import self_corpus
from pipeline.home import gnomon_home
from pipeline.types import GnomonError

__all__ = ["STAGES", "FleetPlan", "build_fleet", "plan_for"]

STAGES = ("base", "numeric", "minilm", "ft-negative", "ft-control", "scratch", "edited")


@dataclass(frozen=True)
class FleetPlan:
    """What one ``gnomon fleet build`` makes."""

    name: str = "smollm2"
    prefix: str = "smollm2"
    """Version ids are ``<prefix>-base``, ``<prefix>-bf16``, ``<prefix>-ftneg-s0010``..."""
    base_model: str = "smollm2"
    """Model the base version is imported from (``smollm2`` or ``tiny:llama:LxD``)."""
    numeric: tuple[str, ...] = ("bfloat16", "float16", "int8")
    minilm: bool = True
    finetune: dict[str, Any] = field(default_factory=dict)
    """Overrides of :class:`~pipeline.fleet.finetune.FinetuneConfig`."""
    seeds: tuple[int, ...] = (0, 1, 2)
    """Each fine-tune series is trained once per seed (batch order and corpus draws): seed 0
    keeps the plain ids (``<prefix>-ftneg-s0005``, series ``ft-negative``), seed k gets
    ``<prefix>-ftneg-seed<k>-s0005`` in series ``ft-negative-seed<k>``; drift reads the
    seeds of one series together and reports their spread."""
    scratch: dict[str, Any] = field(default_factory=dict)
    """Overrides of :class:`~pipeline.fleet.scratch.ScratchConfig`."""
    scratch_prefix: str = "scratch"
    corpus_negative: str | None = None
    """A JSONL/Parquet file with a ``text`` column instead of the shipped negative corpus."""
    corpus_control: str | None = None
    """A file for the control series; default: the base model's own sampled continuations of
    the negative corpus's openings (the exact null, :mod:`pipeline.fleet.selfgen`)."""
    prereg: tuple[str, ...] = ("sentiment",)
    """Concepts whose drift analysis is pre-registered on the base before the first fine-tune
    stage (:mod:`jobs.stages.drift_prereg`: the layer, the recipe, the seeds)."""
    edited: tuple[str, ...] = ("sentiment",)
    """Concepts whose direction is baked out of the base (``<prefix>-orth-<concept>``)."""


def plan_for(name: str = "smollm2", tiny: bool = False, **over: Any) -> FleetPlan:
    if tiny:
        base = {"name": name if name != "smollm2" else "tiny", "prefix": "tiny", "base_model": "tiny:llama:2x32",
                    "minilm": False, "finetune": {"steps": 4, "every": 2, "batch_size": 4, "max_length": 160,
                                            "train_blocks": 1, "n_texts": 24},
                    "scratch": {"hidden_size": 32, "num_layers": 2, "num_heads": 4, "num_kv_heads": 2,
                             "intermediate_size": 64, "checkpoints": (0, 2, 6), "batch_size": 4,
                             "max_length": 32, "tokenizer": "tiny", "n_generic": 40},
                    "scratch_prefix": "tiny-scratch"}
        base.update(over)
        return FleetPlan(**base)
    return FleetPlan(name=name, **over)


def _member(vid: str, home: Path | None) -> FleetMember | None:
    if not (version_dir(vid, home) / LINEAGE_FILE).is_file():
        return None
    lin = read_lineage(vid, home)
    return FleetMember(id=vid, series=lin.series, step=lin.step, kind=lin.kind)


def planned_ids(plan: FleetPlan, home: Path | None) -> list[str]:
    """Every version id the plan makes, in fleet order."""
    ft = FinetuneConfig(**plan.finetune)
    ids = [f"{plan.prefix}-base"] + [numeric_id(plan.prefix, n) for n in plan.numeric]
    ids += ["minilm"] if plan.minilm else []
    for tag in ("ftneg", "ftctl"):
        for seed in plan.seeds:
            ids += series_ids(f"{plan.prefix}-{tag}{seed_suffix(seed)}", ft)
    ids += scratch_ids(plan.scratch_prefix, ScratchConfig(**plan.scratch))
    ids += [f"{plan.prefix}-orth-{c}" for c in plan.edited]
    return ids


def write_fleet(plan: FleetPlan, home: Path | None) -> Fleet:
    """The plan's registered versions in plan order, then any other registered member the
    fleet file already had: a build with fewer seeds (``--seeds 0``) or one stage does not
    drop versions an earlier build added."""
    members = [m for m in (_member(v, home) for v in planned_ids(plan, home)) if m is not None]
    if plan.name in list_fleets(home):
        have = {m.id for m in members}
        members += [m for m in load_fleet(plan.name, home).members if m.id not in have and _member(m.id, home)]
    fleet = Fleet(name=plan.name, members=tuple(members),
                  description=f"built by `gnomon fleet build` from {plan.base_model}")
    save_fleet(fleet, home)
    return fleet


def _evade_stages(plan: FleetPlan, stages: tuple[str, ...], home: Path | None,
                  log: Callable[[str], None]) -> dict[str, float]:
    """The ``evade-<concept>`` stages, only when named (:mod:`jobs.stages.evasion_build`)."""
    walls = {}
    for stage in (s for s in stages if s.startswith("evade-")):
        t0 = time.perf_counter()
        log(f"[fleet {plan.name}] stage {stage}: start {time.strftime('%H:%M:%S')}")
        build_evasion(plan, stage[len("evade-"):], gnomon_home(home), log)
        walls[stage] = round(time.perf_counter() - t0, 1)
        log(f"[fleet {plan.name}] stage {stage}: {walls[stage]} s")
    return walls


def _check_plan(plan: FleetPlan, only: tuple[str, ...] | None) -> tuple[str, ...]:
    """The stages to run, after checking the plan: its name, seeds, stage names and (when the
    MiniLM stage runs) the wheel, before any stage runs rather than after an hour of them."""
    check_fleet_name(plan.name)
    if not plan.seeds or len(set(plan.seeds)) != len(plan.seeds) or min(plan.seeds) < 0:
        raise GnomonError(f"fine-tune seeds must be distinct non-negative integers, got {list(plan.seeds)}")
    stages = tuple(only) if only else STAGES
    bad = [s for s in stages if s not in STAGES and not (s.startswith("evade-") and len(s) > 6)]
    if bad:
        raise GnomonError(f"unknown fleet stage {bad[0]!r}: choose from {', '.join(STAGES)}, or evade-<concept>")
    if "minilm" in stages and plan.minilm:
        minilm_zip()
    return stages


def _finetune_stage(plan: FleetPlan, stage: str, ft: Any, neg: Any, ctl: Any, base_id: str, home: Path | None,
                    log: Callable[[str], None]) -> None:
    """``ft-negative`` / ``ft-control``: the pre-registration (once, normally before any
    checkpoint exists), then one fine-tune series per seed."""
    built = [v for v in planned_ids(plan, home) if ("-ftneg" in v or "-ftctl" in v) and _member(v, home)]
    for concept in plan.prereg:
        preregister(concept, base_id, ft.train_blocks, asdict(ft), plan.seeds, gnomon_home(home),
                    LocalExecutor(), log, checkpoints_before=built)
    tag = "ftneg" if stage == "ft-negative" else "ftctl"
    for seed in plan.seeds:
        cfg = replace(ft, seed=seed)
        if stage == "ft-negative":
            corpus = neg or corpora.shipped_corpus("negative", ft.n_texts, seed)
        elif ctl is None:   # the null for sampled tokens: the base's own samples (pipeline.fleet.selfgen)
            corpus = self_corpus(base_id, ft.n_texts, seed, home=home, log=log)
        else:
            corpus = ctl
        sfx = seed_suffix(seed)
        for lin in finetune_series(base_id, corpus, f"{plan.prefix}-{tag}{sfx}", f"{stage}{sfx}", cfg,
                                   home=home, log=log):
            log(f"  {lin.id}: {lin.fingerprint}")


def build_fleet(plan: FleetPlan, home: Path | None = None, only: tuple[str, ...] | None = None,
                log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the plan's stages (or ``only`` those); returns per-stage wall seconds and the fleet."""
    stages = _check_plan(plan, only)
    # Read user corpora before building anything, so a bad file fails first.
    neg = corpora.load_corpus(plan.corpus_negative) if plan.corpus_negative else None
    ctl = corpora.load_corpus(plan.corpus_control) if plan.corpus_control else None
    base_id = f"{plan.prefix}-base"
    ft = FinetuneConfig(**plan.finetune)
    walls: dict[str, float] = {}
    for stage in STAGES:
        if stage not in stages:
            continue
        t0 = time.perf_counter()
        log(f"[fleet {plan.name}] stage {stage}: start {time.strftime('%H:%M:%S')}")
        if stage == "base":
            if plan.base_model == "smollm2":
                import_base(home, base_id)
            else:
                import_model(plan.base_model, base_id, home)
        elif stage == "numeric":
            for n in plan.numeric:
                lin = build_numeric(base_id, n, home=home)
                log(f"  {lin.id}: {lin.fingerprint}")
        elif stage == "minilm" and plan.minilm:
            lin = import_minilm(home)
            log(f"  {lin.id}: {lin.fingerprint}")
        elif stage in ("ft-negative", "ft-control"):
            _finetune_stage(plan, stage, ft, neg, ctl, base_id, home, log)
        elif stage == "scratch":
            cfg = ScratchConfig(**plan.scratch)
            corpus = corpora.scratch_corpus(cfg.n_generic)
            tok_from = base_id if cfg.tokenizer == "base" else cfg.tokenizer
            for lin in train_scratch(corpus, plan.scratch_prefix, cfg, tokenizer_from=tok_from, home=home, log=log):
                log(f"  {lin.id}: {lin.fingerprint}")
        elif stage == "edited":
            for concept in plan.edited:
                lin = build_edited(base_id, concept, f"{plan.prefix}-orth-{concept}", home=home, log=log)
                log(f"  {lin.id}: {lin.fingerprint}")
        walls[stage] = round(time.perf_counter() - t0, 1)
        fleet = write_fleet(plan, home)
        log(f"[fleet {plan.name}] stage {stage}: {walls[stage]} s; fleet has {len(fleet.members)} versions")
    walls |= _evade_stages(plan, stages, home, log)
    fleet = write_fleet(plan, home)
    return {"fleet": plan.name, "stage_seconds": walls, "versions": fleet.ids}
