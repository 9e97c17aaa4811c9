"""The ``kgfact`` command line.

User mistakes (bad input, unreachable endpoint, missing runs) end with a one-line
``kgfact: error: ...`` and exit status 2; only bugs show a traceback.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from contextlib import nullcontext, suppress
from pathlib import Path
from typing import NoReturn

from kgfact.config import SEP, add_config_flags, config_from_args
from kgfact.errors import KgfactError

DEFAULT_RUNS = Path("runs")
DESCRIPTION = ("Measure and explain how fine-tuning data changes what a language model gets "
               "right: build questions from a knowledge graph, label what the model knows "
               "(SliCK), fine-tune it with LoRA, measure the factuality gap and test the theory.")


class _Parser(argparse.ArgumentParser):
    """argparse with kgfact's error form: one ``kgfact: error: ...`` line, exit status 2."""

    def error(self, message: str) -> NoReturn:
        from kgfact.config import SHOW_CHARS, clip

        # argparse quotes the offending value whole: a 200,000-character flag stays one short line
        message = re.sub(f"'([^']{{{SHOW_CHARS + 1},}})'", lambda m: f"'{clip(m[1])}'", message)
        self.exit(2, f"kgfact: error: {message} (see '{self.prog} --help')\n")


def _store(args: argparse.Namespace):
    from kgfact.data.store import OxigraphStore, StoreConfig

    kw = {}
    if args.location:
        kw["location"] = Path(args.location)
    if args.port is not None:
        kw["port"] = args.port
    return OxigraphStore(StoreConfig(**kw))


def cmd_store(args: argparse.Namespace) -> int:
    store = _store(args)
    if args.action == "start":
        with store.lock.hold(wait=None):  # so that no other process starts it in between
            fresh = store.status() is None
            if fresh and store.is_empty() and not args.empty:
                print("kgfact: first start: building and loading the offline default dataset "
                      "(GeoNames facts, under a minute)", file=sys.stderr)
            state = store.start(load_default=not args.empty)
        if not fresh and args.port not in (None, 0, state["port"]):
            print(f"kgfact: the store at {store.location} already runs on port "
                  f"{state['port']}: --port {args.port} ignored (stop it to move it)",
                  file=sys.stderr)
        print(f"{'started' if fresh else 'already running'}: {state['url']} "
              f"(pid {state['pid']}, data in {store.location})")
    elif args.action == "stop":
        print("stopped" if store.stop() else "not running")
    elif args.action == "status":
        state = store.status()
        if state is not None:
            try:
                triples = store.count_triples()
            except KgfactError:
                if store.status() is not None:  # running, yet not answering
                    raise
                state = None  # it died since the first look
        if state is None:
            print(f"not running (data in {store.location})")
            return 3
        print(f"running: {state['url']} (pid {state['pid']}, {triples} triples, "
              f"data in {store.location})")
    elif args.action == "load":
        store.load(args.files)
        print(f"loaded {len(args.files)} file(s) into {store.location}")
    return 0


# -- flags generated from the config dataclasses -------------------------------------------------
# short names of the model's and the backend's flags, beside the generated ones, in every command
# that takes them (a stage's own are its entry's, kgfact.stages)
SHARED_ALIASES = {
    "model": {"name": "--model", "device": "--device", "dtype": "--dtype"},
    "backend": {"name": "--backend", "max_batch": "--batch", "chunk_size": "--chunk",
                "address": "--address", "workers": "--workers"},
}


def _existing_run(path: str):
    from kgfact.rundir import RunDir

    return RunDir(path).require_manifest()


def cmd_stage(args: argparse.Namespace) -> int:
    """Run one stage (:mod:`kgfact.stages`) with the flags given and print its summary."""
    from kgfact.data.store import StoreConfig, configured
    from kgfact.models import ModelConfig
    from kgfact.registry import load_target
    from kgfact.rundir import RunDir
    from kgfact.sampling import BackendConfig
    from kgfact.stages import STAGES, StageCall

    stage = STAGES.get(args.command)
    config = config_from_args(stage.config_class(), args, stage.name) if stage.config else None
    call = StageCall(
        model=config_from_args(ModelConfig, args, "model") if stage.uses_model else None,
        backend=config_from_args(BackendConfig, args, "backend") if stage.uses_backend
        else None, progress=not getattr(args, "quiet", False),
        force=getattr(args, "force", False))
    store = config_from_args(StoreConfig, args, "store") if stage.uses_store else None
    keywords = {a.keyword: getattr(args, a.keyword) for a in stage.arguments
                if hasattr(args, a.keyword)}  # the flags given: the runner's defaults otherwise
    if stage.run_name:  # the stage that makes the run: --run, default named from the config
        run = RunDir(args.run or DEFAULT_RUNS / load_target(stage.run_name[0])(config))
    else:
        run = _existing_run(args.run)
    if args.dry_run:  # the work and its time here; nothing is loaded, trained or written
        from kgfact.dryrun import plan_stage, show

        print(show(f"kgfact {stage.name}", run, plan_stage(run, stage.name, config, call.model,
                                                           call.backend, call.force),
                   call.model, call.backend))
        return 0
    if stage.run_name:
        run.create()
    with configured(store) if store else nullcontext():
        result = stage.run(run, config, wait=args.wait, **keywords, **call.options(stage))
    if stage.summary:
        load_target(stage.summary)(run, result)
    return 0


# -- what each stage's command prints when it is done: its entry's summary (kgfact.stages) ------
def _tables_of(run, stage: str) -> str:
    """The tables ``stage`` wrote to ``run`` (by the stage registry)."""
    from kgfact.stages import STAGES

    entry = STAGES.get(stage)
    return ", ".join(t for t in entry.writes + entry.optional if run.has_table(t))


def show_build(run, report: dict) -> None:
    questions = report.get("questions", {})
    total = sum(sum(s.values()) for s in questions.values())
    verb = "already built" if report.get("skipped") else "built"
    print(f"{verb} {run.path}: {total} questions over {len(questions)} relations "
          f"(tables: {_tables_of(run, 'build')}; report: kgfact info {run.path})")


def show_ftsets(run, table) -> None:
    print(table.to_string(index=False))


def show_slick(run, table) -> None:
    from kgfact.contract import CATEGORIES

    mix = table["category"].value_counts().reindex(list(CATEGORIES), fill_value=0)
    print(f"SliCK: {len(table)} questions in {run.path}/slick.parquet: "
          + ", ".join(f"{c} {n}" for c, n in mix.items()))


def show_finetune(run, dynamics) -> None:
    for (name, seed), d in dynamics.groupby(["set", "seed"], sort=False):
        es = d[d["early_stop"]].iloc[0]
        last = d.iloc[-1]
        print(f"{name} seed {seed}: {int(last['epoch'])} epochs, train fit "
              f"{last['train_fit']:.2f}; early stop at epoch {int(es['epoch'])} "
              f"(dev {es['dev_accuracy']:.3f}); adapters in {run.path}/adapters/{name}/"
              f"seed-{seed}/")


def show_evaluate(run, accuracy) -> None:
    summary = accuracy[(accuracy["relation"] == "all") & (accuracy["category"] == "all")]
    print(summary.pivot_table(index=["model"], columns=["distribution", "mode", "strategy"],
                              values="accuracy").round(3).to_string())
    if run.has_table("gap"):
        gap = run.read_table("gap")
        print("\nfactuality gap acc(ft-known) - acc(ft-unknown), 95% bootstrap CI:")
        for row in gap.itertuples():
            print(f"  {row.mode:9} {row.strategy:14} {row.distribution:7} {row.checkpoint:11} "
                  f"{row.gap:+.3f} [{row.ci_low:+.3f}, {row.ci_high:+.3f}] (n={row.n}, "
                  f"{row.finding})")
    print(f"tables in {run.path}: {_tables_of(run, 'evaluate')}")


def show_theory(run, tables) -> None:
    config = run.manifest()["stages"]["theory"]["config"]
    stats = tables["theory_stats"]
    headline = stats[(stats["augmentation"] == config["augmentation"])
                     & (stats["family"] == "all") & (stats["mode"] == "all")]
    print(f"theory: {len(tables['theory_metrics'])} (prompt, query) units, "
          f"{len(tables['cot_steps'])} CoT steps checked; predicted vs measured gaps "
          f"(A = {config['augmentation']}, buckets by checkpoint, mode and strategy):")
    for row in headline.itertuples():
        value = (f"{row.value:+.3f} [{row.ci_low:+.3f}, {row.ci_high:+.3f}]"
                 if row.value == row.value else row.note)  # NaN: say why
        print(f"  {row.statistic:20} {value} ({row.n_buckets} buckets)")
    if "theory_heldout" in tables:  # prediction 1: the pooled held-out sets at CONVERGENCE
        held = tables["theory_heldout"]
        pooled = held[(held["checkpoint"] == "convergence") & (held["set"] == "pooled")]
        if pooled.empty:
            result = "not measured: no CONVERGENCE row"
        elif (r := pooled.iloc[0])["outcome"] == "not measured":
            result = f"not measured: {r['note']}"
        else:
            sets = ", ".join(held.loc[(held["checkpoint"] == "convergence")
                                      & (held["set"] != "pooled"), "set"])
            result = (f"{r['difference']:+.3f} [{r['ci_low']:+.3f}, {r['ci_high']:+.3f}] over "
                      f"{sets}: {r['outcome']} (within ±{r['margin']:g})")
        print(f"prediction 1, zero-shot ID accuracy minus c + α·u(D) on the sets held out of "
              f"the fit at CONVERGENCE: {result}")
    print(f"tables in {run.path}: {', '.join(tables)}")


def show_report(run, paths) -> None:
    if run.has_table("findings"):
        table = run.read_table("findings")
        print(table[["claim", "estimate", "ci_low", "ci_high", "verdict"]].to_string(
            index=False, float_format=lambda v: f"{v:+.3f}"))
    print("wrote " + ", ".join(str(p) for p in paths))


def cmd_run(args: argparse.Namespace) -> int:
    """``kgfact run``: :func:`kgfact.api.run` with the ``--set`` overrides, then the
    ``--store-*`` flags (which win)."""
    from kgfact.api import run
    from kgfact.pipeline import parse_override

    overrides = dict(map(parse_override, args.overrides))
    overrides.update({f"store.{dest.partition(SEP)[2]}": value
                      for dest, value in vars(args).items() if dest.startswith(f"store{SEP}")})
    if args.dry_run:  # the work and its time here; nothing is loaded, trained or written
        from kgfact.dryrun import dry_run

        print(dry_run(args.config, args.run, overrides))
        return 0
    done = run(args.config, args.run, overrides, progress=not args.quiet, wait=args.wait)
    entry = done.manifest["stages"]["run"]
    print(f"finished {done.path} in {entry['seconds']:.0f} s ({len(entry['skipped'])} of "
          f"{len(entry['timings'])} steps were already complete); report: "
          f"{done.path}/report.html (and report.md)")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    """The manifest as JSON, then each stage's status and tables (stderr keeps stdout JSON)."""
    from kgfact.stages import STAGES

    run = _existing_run(args.run)
    manifest = run.manifest()
    states = run.states()
    print(json.dumps(manifest, indent=2, sort_keys=True))
    for name in STAGES:
        stage, entry = STAGES.get(name), manifest["stages"].get(name, {})
        have = [t for t in stage.writes + stage.optional if run.has_table(t)]
        seconds = f", {entry['seconds']:.0f} s" if "seconds" in entry else ""
        state = states.get(name) or "not run"
        if state == "interrupted":
            state += " (no process is writing to the run: run the stage again to resume it)"
        print(f"{name:9} {state}{seconds}; tables: {', '.join(have) or '-'}", file=sys.stderr)
    return 0


def cmd_relations(args: argparse.Namespace) -> int:
    from kgfact.relations import RELATIONS

    for pid in RELATIONS:
        rel = RELATIONS.get(pid)
        print(f"{rel.pid:6} {rel.label:50} {rel.question}")
    return 0


def cmd_presets(args: argparse.Namespace) -> int:
    from kgfact.pipeline import describe_preset, presets

    found = presets()
    width = max(map(len, found), default=0)
    for name, path in found.items():
        print(f"{name:{width}}  {describe_preset(path)}")
    return 0


def _seconds(text: str) -> float:
    """A ``--wait`` value: a finite number of seconds, at least 0."""
    with suppress(ValueError):
        if 0 <= (value := float(text)) < float("inf"):
            return value
    raise argparse.ArgumentTypeError(f"must be a number of seconds >= 0, got {text!r}")


def _add_wait(p: argparse.ArgumentParser) -> None:
    p.add_argument("--wait", type=_seconds, default=0.0, metavar="SECONDS",
                   help="if another process is writing to the run directory, wait up to "
                        "SECONDS for it to finish (default: refuse at once, naming it)")


def _add_dry_run(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dry-run", action="store_true",
                   help="print the work each stage would do (questions, generations, trainings) "
                        "and its estimated time on this machine from the rates kgfact measured "
                        "here; loads no model and writes nothing")


def parser() -> argparse.ArgumentParser:
    """The command line: a sub-command per stage of :data:`kgfact.stages.STAGES` (its flags
    generated from the stage's config, the model's and the backend's) plus ``store``, ``run``,
    ``info``, ``relations`` and ``presets``."""
    from kgfact import __version__
    from kgfact.data.store import StoreConfig
    from kgfact.models import ModelConfig
    from kgfact.sampling import BackendConfig
    from kgfact.stages import STAGES

    p = _Parser(prog="kgfact", description=DESCRIPTION, epilog="'kgfact COMMAND --help' lists a "
                "command's flags; 'kgfact run quickstart' runs the main job.")
    p.add_argument("--version", action="version", version=f"kgfact {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("store", help="run the embedded Oxigraph SPARQL endpoint")
    where = _Parser(add_help=False)
    where.add_argument("--location", help="store directory (default $KGFACT_HOME/store)")
    where.add_argument("--port", type=int, help="port on 127.0.0.1 (default 7878)")
    actions = s.add_subparsers(dest="action", required=True)
    start = actions.add_parser("start", parents=[where], help="start the server (first start "
                               "loads the offline default dataset)")
    start.add_argument("--empty", action="store_true", help="start without the default dataset")
    actions.add_parser("stop", parents=[where], help="stop the server")
    actions.add_parser("status", parents=[where], help="is it running, and how many triples")
    load = actions.add_parser("load", parents=[where], help="bulk-load RDF files")
    load.add_argument("files", nargs="+", help="RDF files (.nt, .ttl, ...); a name starting "
                      "with - goes after --")
    s.set_defaults(func=cmd_store)

    for name in STAGES:
        stage = STAGES.get(name)
        c = sub.add_parser(name, help=stage.help)
        if stage.run_name:
            c.add_argument("--run", help=f"run directory (default {DEFAULT_RUNS}/"
                                         f"<{stage.run_name[1]}>)")
        else:
            c.add_argument("run", help="run directory (made by 'kgfact build')")
        for argument in stage.arguments:
            c.add_argument(argument.flag, dest=argument.keyword, action="store_const",
                           const=argument.value, default=argparse.SUPPRESS, help=argument.help)
        if stage.uses_store:
            add_config_flags(c, StoreConfig, "store", flag_prefix="store.")
        if stage.config:
            add_config_flags(c, stage.config_class(), name, aliases=stage.aliases)
        if stage.uses_model:
            add_config_flags(c, ModelConfig, "model", flag_prefix="model.",
                             aliases=SHARED_ALIASES["model"])
        if stage.uses_backend:
            add_config_flags(c, BackendConfig, "backend", flag_prefix="backend.",
                             aliases=SHARED_ALIASES["backend"])
        if stage.honours_force:
            c.add_argument("--force", action="store_true", help="redo a complete stage")
        if stage.shows_progress:
            c.add_argument("--quiet", action="store_true", help="no progress bars")
        _add_wait(c)
        _add_dry_run(c)
        c.set_defaults(func=cmd_stage)

    u = sub.add_parser("run", help="run a whole study from a TOML config (resumable)")
    u.add_argument("config", help="a preset's name ('kgfact presets' lists them) or a TOML "
                   "config file")
    u.add_argument("--run", help="run directory (default runs/<config name>)")
    u.add_argument("--set", action="append", default=[], dest="overrides", metavar="KEY=VALUE",
                   help="set a config key, by its dotted path, to a TOML value (a bare word is "
                   "a string): --set slick.sampling.n_samples=2 --set backend.name=ray; "
                   "repeatable, later ones win")
    add_config_flags(u, StoreConfig, "store", flag_prefix="store.")
    u.add_argument("--quiet", action="store_true", help="no progress bars")
    _add_wait(u)
    _add_dry_run(u)
    u.set_defaults(func=cmd_run)

    i = sub.add_parser("info", help="print a run's manifest (config, versions, reports)")
    i.add_argument("run")
    i.set_defaults(func=cmd_info)

    r = sub.add_parser("relations", help="list the relation registry")
    r.set_defaults(func=cmd_relations)

    c = sub.add_parser("presets", help="list the preset configs 'kgfact run NAME' runs")
    c.set_defaults(func=cmd_presets)
    return p

def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except KgfactError as exc:
        print(f"kgfact: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("kgfact: interrupted; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
