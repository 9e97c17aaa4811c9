"""``--dry-run``: the work ``kgfact run`` (or one stage's command) will do, and how long it will
take on this machine, without loading a model, training or querying an endpoint.

Each stage's work is counted by the planner its registry entry names (:attr:`Stage.plan
<kgfact.stages.Stage.plan>`, a function of a :class:`Plan`; a stage without one gets a row that
says it has no estimate), from the run directory's tables where the steps before it are
complete, else estimated from the config (its caps: an upper bound, marked ``≤``; no cap, no
count). Time comes from the rates the stages measured here (:mod:`kgfact.cost`). Steps the run
has already completed under the same config (:func:`kgfact.pipeline.step_done`) are shown as
complete and left out of the total; work a stage keeps when it runs again (SliCK's labelled
questions, trained adapters) is not counted.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from kgfact.api import RUNS
from kgfact.build import resolved, source_name
from kgfact.contract import read_set, trained_sets
from kgfact.cost import Rate, Work, machine, rate_for, table
from kgfact.evaluate import models_to_evaluate, queries
from kgfact.models import ModelConfig
from kgfact.pipeline import (ExperimentConfig, experiment_config, load_config, step_done,
                             step_specs)
from kgfact.prompts import PROMPT_MODES, STRATEGIES
from kgfact.registry import load_target
from kgfact.rundir import RunDir, config_json
from kgfact.sampling import BackendConfig
from kgfact.slick import select_questions
from kgfact.stages import STAGES


@dataclass
class Plan:
    """What a stage's planner counts from: the run, the config it would run, the stages whose
    tables the later stages will read as they are, and whether the stage is forced."""

    run: RunDir
    config: ExperimentConfig
    ready: set[str]
    force: bool = False

    def rate(self, stage: str, backend: str | None = None) -> Rate | None:
        """The rate of ``stage``'s units with the config's model on ``backend`` (default: the
        config's)."""
        return rate_for(stage, machine(self.config.model, backend or self.config.backend.name))


def _span(values) -> str:
    """``"8"``, or ``"6-8"`` when the values differ (``"0"`` for none)."""
    values = sorted(set(values)) or [0]
    return "-".join(f"{v:,}" for v in dict.fromkeys((values[0], values[-1])))


def _listed(items) -> str:
    return ", ".join(map(str, items)) or "none"


def plan_build(p: Plan) -> Work:
    """The build's questions; complete when its runner would keep the build as it is (the same
    config, its tables as written, not forced)."""
    build = resolved(p.config.build)
    qa = build.qa
    what = (f"{len(qa.relations)} relations from {source_name(build)} "
            f"(ID {_listed(qa.in_distribution)}; OOD {_listed(qa.out_of_distribution)})")
    entry = p.run.manifest()["stages"].get("build", {})
    kept = (entry.get("config") == config_json(p.config.build) and not p.force
            and p.run.verified("build"))
    report = entry.get("report", {})
    if ("build" in p.ready or kept) and "questions" in report:
        count = sum(sum(s.values()) for s in report["questions"].values())
        return Work("build", f"{what}, {count:,} questions", complete=kept)
    cap = qa.max_questions_per_relation
    return Work("build", what + (f", ≤ {cap:,} questions each" if cap else
                                 ", questions not capped"), estimated=True)


def _split_caps(p: Plan) -> dict[tuple[str, str], int | None]:
    """SliCK's cap per (relation, split) it will label, from the config."""
    build, slick = resolved(p.config.build), p.config.slick
    ood = set(build.qa.out_of_distribution)
    relations = slick.relations or build.qa.relations
    exemplar_cap = min((c for c in (slick.max_questions_per_relation,
                                    slick.max_exemplar_split_questions) if c is not None),
                       default=None)
    return {(r, s): exemplar_cap if s == slick.exemplar_split else
            slick.max_questions_per_relation
            for r in relations for s in slick.splits if not (r in ood and s == "train")}


def plan_slick(p: Plan) -> Work:
    """SliCK's generations."""
    cfg = p.config.slick
    if "build" in p.ready:
        chosen = select_questions(p.run.read_table("qa"), cfg)[0]
        if p.run.has_table("slick") and not p.force:  # a second call labels only new ones
            chosen = chosen[~chosen["qid"].isin(p.run.read_table("slick")["qid"])]
        count, estimated = len(chosen), False
    else:
        caps = list(_split_caps(p).values())
        count = None if None in caps else sum(caps)
        estimated = True
    n_p, n_s = cfg.n_prompts, cfg.sampling.n_samples
    shown = "?" if count is None else f"{'≤ ' if estimated else ''}{count:,}"
    # lazy: samples only for questions no greedy answer gets right, so at most these
    what = f"{shown} questions × {n_p} prompts × (1 + {n_s} samples), {cfg.protocol}"
    units = None if count is None else count * n_p * (1 + n_s)
    return Work("slick", what, units, cfg.protocol == "lazy" or estimated, estimated=estimated,
                rate=p.rate("slick"))


def plan_ftsets(p: Plan) -> Work:
    """The fine-tuning sets (no model)."""
    cfg = p.config.ftsets
    size = f"{cfg.size:,} examples" if cfg.size else "the largest equal size"
    return Work("ftsets", f"{len(cfg.unknown_shares)} %Unknown mixtures of {size} and the "
                          "other sets (no model)")


def plan_finetune(p: Plan) -> Work:
    """The training examples of every training and learning-rate trial."""
    cfg = p.config.finetune
    grid = len(cfg.learning_rate_grid)
    runs = [(name, seed) for seed in cfg.seeds for name in cfg.sets]
    if grid and (cfg.grid_set, cfg.seeds[0]) in runs:  # the chosen trial is reused
        runs.remove((cfg.grid_set, cfg.seeds[0]))
    trained = len(runs)
    runs = [r for r in runs if r not in set(trained_sets(p.run))]  # trained ones are kept
    trained -= len(runs)
    names = [cfg.grid_set] * grid + [name for name, _ in runs]
    if "ftsets" in p.ready:
        sizes = {name: len(read_set(p.run, name)) for name in set(names)}
    else:
        sizes = {name: p.config.ftsets.size for name in set(names)}
    known = None not in sizes.values()
    units = sum(cfg.max_epochs * sizes[n] for n in names) if known else None
    examples = _span(sizes.values()) if known else "?"
    trials = f" + {grid} learning-rate trials" if grid else ""
    kept = f", {trained} trained already" if trained else ""
    what = (f"{len(runs)} trainings ({len(cfg.sets)} sets × {len(cfg.seeds)} seeds{kept})"
            f"{trials} × ≤ {cfg.max_epochs} epochs × {examples} examples")
    # at most: a training stops at CONVERGENCE, when it fits its set, or at max_epochs
    # any backend but ray trains here
    return Work("finetune", what, units, True, estimated="ftsets" not in p.ready,
                rate=p.rate("finetune", "ray" if p.config.backend.name == "ray" else "kgfact"))


def _eval_shape(p: Plan) -> tuple[list[str | None], dict[str, int | None], bool]:
    """The models evaluated (their fine-tuning set; None for the base model), the queries per
    relation, and whether those are estimated."""
    cfg = p.config.evaluate
    if "finetune" in p.ready:
        models = [m.set for m in models_to_evaluate(p.run, cfg)]
    else:
        trained = trained_sets(p.run)
        planned = set(trained) | {(n, s) for n in p.config.finetune.sets
                                  for s in p.config.finetune.seeds}
        sets = cfg.sets if cfg.sets is not None else sorted({n for n, _ in planned})
        seeds = {n: {s for m, s in planned if m == n} for n in sets}
        models = ([None] if cfg.base else []) + [
            n for n in sets for _ in range(len(seeds[n]) * len(cfg.checkpoints))]
    if "build" in p.ready:
        counts = queries(p.run, cfg)["relation"].value_counts()
        return models, {r: int(n) for r, n in sorted(counts.items())}, False
    relations = resolved(p.config.build).qa.relations
    return models, {r: cfg.max_questions_per_relation for r in relations}, True


def _prompts(p: Plan, sets: int) -> tuple[int, bool]:
    """Prompts per query: the prompts every model shares and the set-dependent strategies'
    prompts of ``sets`` fine-tuning sets (one model's: 1, or 0 for the base model); and whether
    that is an upper bound (a per-query strategy prompts only the queries with enough
    candidates, a hint strategy only those with a hint)."""
    cfg = p.config.evaluate
    count, bound = 0, False
    for mode in map(PROMPT_MODES.get, cfg.modes):
        if not mode.exemplars:
            count += 1
            continue
        for strategy in map(STRATEGIES.get, cfg.strategies):
            if strategy.hint and not mode.steps:
                continue  # a hint is a step: modes without steps get no prompt of it
            n = cfg.n_prompts * (sets if strategy.set_dependent else 1)
            count += n
            bound |= n > 0 and (strategy.per_query or strategy.hint is not None)
    return count, bound


def plan_evaluate(p: Plan) -> Work:
    """Evaluation's generations: one per (model, prompt, query), at most where a strategy
    prompts only some queries."""
    models, per_relation, estimated = _eval_shape(p)
    n_q = None if None in per_relation.values() else sum(per_relation.values())
    shown = "?" if n_q is None else f"{'≤ ' if estimated else ''}{n_q:,}"
    counted = [_prompts(p, m is not None) for m in models]
    prompts, bound = [n for n, _ in counted], any(b for _, b in counted)
    what = (f"{len(models)} models × {shown} queries × {'≤ ' if bound else ''}"
            f"{_span(prompts)} prompts ({len(p.config.evaluate.modes)} modes)")
    units = None if n_q is None else n_q * sum(prompts)
    return Work("evaluate", what, units, estimated or bound, estimated=estimated,
                rate=p.rate("evaluate"))


def plan_theory(p: Plan) -> Work:
    """The theory's (prompt, query) units (no model)."""
    models, per_relation, estimated = _eval_shape(p)
    # a unit is a distinct (prompt, query): models share every prompt but those of a set
    prompts, bound = _prompts(p, len({m for m in models if m is not None}))
    n_q = None if None in per_relation.values() else sum(per_relation.values())
    units = "?" if n_q is None else f"{'≤ ' if estimated or bound else ''}{n_q * prompts:,}"
    return Work("theory", f"{units} (prompt, query) units (no model)", estimated=estimated)


def plan_report(p: Plan) -> Work:
    """The report's pages (no model)."""
    return Work("report", "findings, report.html and report.md (no model)")


def _work(plan: Plan, name: str) -> Work:
    """Stage ``name``'s work, from the planner its registry entry names."""
    stage = STAGES.get(name)
    if stage.plan is None:
        return Work(name, "no estimate for this stage")
    return load_target(stage.plan)(plan)


def plan_run(run: RunDir | str | Path, config: ExperimentConfig) -> list[Work]:
    """Each step of ``kgfact run`` with ``config`` on ``run``: its work, and whether the run
    has already completed it (:func:`kgfact.pipeline.step_done`)."""
    run = RunDir.of(run)
    specs = step_specs(config)
    done = {name for name in STAGES if step_done(run, name, specs[name])}
    plan = Plan(run, config, done)
    return [replace(_work(plan, name), complete=name in done) for name in STAGES]


def plan_stage(run: RunDir | str | Path, name: str, config: object, model: object,
               backend: object, force: bool = False) -> list[Work]:
    """The work of stage ``name``'s command on ``run`` with these settings (None: the
    defaults), reading the run's tables as they are; complete where its planner says its
    runner would keep the stage as it is (a build under the same config, unless forced)."""
    run = RunDir.of(run)
    # the other stages' tables are read as they are; a stage a run config must have gets its
    # defaults, for the config to be whole
    required = {s.name: s.config_class()() for s in map(STAGES.get, STAGES)
                if s.required and s.config}
    sections = {key: value for key, value in ((name, config), ("model", model),
                                              ("backend", backend)) if value is not None}
    plan = Plan(run, experiment_config()(**{**required, **sections}), set(STAGES) - {name},
                force)
    return [_work(plan, name)]


def dry_run(config_or_preset: str | Path, run_dir: str | Path | None = None,
            overrides: Mapping[str, Any] | Iterable[str] = ()) -> str:
    """``kgfact run CONFIG --dry-run``: the table for the config (a TOML file or a preset's
    name, with ``overrides``) on ``run_dir`` (default as :func:`kgfact.api.run`'s)."""
    config = load_config(config_or_preset, overrides)
    run = RunDir(run_dir if run_dir is not None else RUNS / Path(config_or_preset).stem)
    return show("kgfact run", run, plan_run(run, config), config.model, config.backend)


def show(command: str, run: RunDir, works: list[Work], model: ModelConfig | None = None,
         backend: BackendConfig | None = None) -> str:
    """The dry run's output: the command, the run and the model it would run (None: the
    default), then the table (:func:`kgfact.cost.table`)."""
    key = machine(model or ModelConfig(), (backend or BackendConfig()).name)
    state = "" if run.manifest_path.exists() else " (no run there yet)"
    return (f"{command} --dry-run: {run.path}{state}; model {key['model']} on {key['device']} "
            f"({key['dtype']}), backend {key['backend']}; nothing is loaded, trained or "
            f"written\n{table(works)}")
