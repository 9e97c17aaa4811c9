"""``--dry-run``: the work ``kgfact run`` (or one stage's command) will do, and how long it will
take on this machine, without loading a model, training or querying an endpoint.

Each stage's work is counted from the run directory's tables where the steps before it are
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
from kgfact.build import BuildConfig, resolved, source_name
from kgfact.cost import Rate, Work, machine, rate_for, table
from kgfact.evaluate import models_to_evaluate, queries
from kgfact.finetune import trained_sets
from kgfact.ftsets import read_set
from kgfact.models import ModelConfig
from kgfact.pipeline import ExperimentConfig, load_config, step_done, step_specs
from kgfact.prompts import PROMPT_MODES, SET_DEPENDENT
from kgfact.rundir import RunDir, config_json
from kgfact.sampling import BackendConfig
from kgfact.slick import select_questions
from kgfact.stages import STAGES

@dataclass
class _Plan:
    run: RunDir
    config: ExperimentConfig
    ready: set[str]  # stages whose tables the later stages will read as they are
    force: bool = False

    def rate(self, stage: str) -> Rate | None:
        backend = self.config.backend.name
        if stage == "finetune":  # any backend but ray trains here
            backend = "ray" if backend == "ray" else "kgfact"
        return rate_for(stage, machine(self.config.model, backend))


def _span(values) -> str:
    """``"8"``, or ``"6-8"`` when the values differ (``"0"`` for none)."""
    values = sorted(set(values)) or [0]
    return "-".join(f"{v:,}" for v in dict.fromkeys((values[0], values[-1])))


def _listed(items) -> str:
    return ", ".join(map(str, items)) or "none"


def _build(p: _Plan) -> Work:
    build = resolved(p.config.build)
    qa = build.qa
    what = (f"{len(qa.relations)} relations from {source_name(build)} "
            f"(ID {_listed(qa.in_distribution)}; OOD {_listed(qa.out_of_distribution)})")
    report = p.run.manifest()["stages"].get("build", {}).get("report", {})
    if "build" in p.ready and "questions" in report:
        count = sum(sum(s.values()) for s in report["questions"].values())
        return Work("build", f"{what}, {count:,} questions")
    cap = qa.max_questions_per_relation
    return Work("build", what + (f", ≤ {cap:,} questions each" if cap else
                                 ", questions not capped"), estimated=True)


def _split_caps(p: _Plan) -> dict[tuple[str, str], int | None]:
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


def _slick(p: _Plan) -> Work:
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


def _ftsets(p: _Plan) -> Work:
    cfg = p.config.ftsets
    size = f"{cfg.size:,} examples" if cfg.size else "the largest equal size"
    return Work("ftsets", f"{len(cfg.unknown_shares)} %Unknown mixtures of {size} and the "
                          "other sets (no model)")


def _finetune(p: _Plan) -> Work:
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
    return Work("finetune", what, units, True, estimated="ftsets" not in p.ready,
                rate=p.rate("finetune"))


def _eval_shape(p: _Plan) -> tuple[list[str | None], dict[str, int | None], bool]:
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


def _prompts(p: _Plan, sets: int) -> int:
    """Prompts per query: the prompts every model shares and the set-dependent strategies'
    prompts of ``sets`` fine-tuning sets (one model's: 1, or 0 for the base model)."""
    cfg = p.config.evaluate
    per_mode = sum(sets if s in SET_DEPENDENT else 1 for s in cfg.strategies)
    return sum(cfg.n_prompts * per_mode if PROMPT_MODES.get(m).exemplars else 1
               for m in cfg.modes)


def _evaluate(p: _Plan) -> Work:
    models, per_relation, estimated = _eval_shape(p)
    n_q = None if None in per_relation.values() else sum(per_relation.values())
    shown = "?" if n_q is None else f"{'≤ ' if estimated else ''}{n_q:,}"
    prompts = [_prompts(p, m is not None) for m in models]
    what = (f"{len(models)} models × {shown} queries × {_span(prompts)} prompts "
            f"({len(p.config.evaluate.modes)} modes)")
    units = None if n_q is None else n_q * sum(prompts)
    return Work("evaluate", what, units, estimated, estimated=estimated,
                rate=p.rate("evaluate"))


def _theory(p: _Plan) -> Work:
    models, per_relation, estimated = _eval_shape(p)
    # a unit is a distinct (prompt, query): models share every prompt but those of a set
    prompts = _prompts(p, len({m for m in models if m is not None}))
    n_q = None if None in per_relation.values() else sum(per_relation.values())
    units = "?" if n_q is None else f"{'≤ ' if estimated else ''}{n_q * prompts:,}"
    return Work("theory", f"{units} (prompt, query) units (no model)", estimated=estimated)


def _report(p: _Plan) -> Work:
    return Work("report", "findings, report.html and report.md (no model)")


PLANNERS = {"build": _build, "slick": _slick, "ftsets": _ftsets, "finetune": _finetune,
            "evaluate": _evaluate, "theory": _theory, "report": _report}


def plan_run(run: RunDir | str | Path, config: ExperimentConfig) -> list[Work]:
    """Each step of ``kgfact run`` with ``config`` on ``run``: its work, and whether the run
    has already completed it (:func:`kgfact.pipeline.step_done`)."""
    run = RunDir.of(run)
    specs = step_specs(config)
    done = {name for name in STAGES if step_done(run, name, specs[name])}
    plan = _Plan(run, config, done)
    return [replace(PLANNERS[name](plan), complete=True) if name in done
            else PLANNERS[name](plan) for name in STAGES]


def plan_stage(run: RunDir | str | Path, name: str, config: object, model: object,
               backend: object, force: bool = False) -> list[Work]:
    """The work of stage ``name``'s command on ``run`` with these settings (None: the
    defaults), reading the run's tables as they are; a build complete under the same config is
    skipped unless forced."""
    run = RunDir.of(run)
    sections = {key: value for key, value in ((name, config), ("model", model),
                                              ("backend", backend)) if value is not None}
    plan = _Plan(run, ExperimentConfig(**{"build": BuildConfig(), **sections}),
                 set(STAGES) - {name}, force)
    complete = (name == "build" and not force and run.verified("build")
                and run.manifest()["stages"]["build"].get("config") == config_json(config))
    if complete:
        plan.ready.add("build")
    return [replace(PLANNERS[name](plan), complete=complete)]


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
