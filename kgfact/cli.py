"""The ``kgfact`` command line.

User mistakes (bad input, unreachable endpoint, missing runs) end with a one-line
``kgfact: error: ...`` and exit status 2; only bugs show a traceback.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import types
from collections.abc import Callable
from contextlib import suppress
from dataclasses import MISSING, fields, is_dataclass
from pathlib import Path
from typing import Any, Literal, NoReturn, Union, get_args, get_origin, get_type_hints

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
# Older short names of flags, kept beside the generated ones (--<dotted-field-path>).
ALIASES: dict[str, dict[str, tuple[str, ...]]] = {
    "build": {"qa.in_distribution": ("--relations",), "qa.out_of_distribution": ("--ood",),
              "qa.max_questions_per_relation": ("--max-questions",), "qa.seed": ("--seed",),
              "qa.leakage_filter": ("--leakage-filter",),
              "max_triples_per_relation": ("--max-triples",)},
    "slick": {"n_prompts": ("--prompts",), "max_questions_per_relation": ("--max-questions",),
              "sampling.n_samples": ("--samples",), "sampling.temperature": ("--temperature",),
              "sampling.top_k": ("--top-k",), "sampling.max_new_tokens": ("--max-new-tokens",)},
    "ftsets": {"unknown_shares": ("--shares",)},
    "finetune": {"max_epochs": ("--epochs",), "learning_rate": ("--lr",),
                 "learning_rate_grid": ("--lr-grid",),
                 "lora.target_modules": ("--target-modules",)},
    "evaluate": {"n_prompts": ("--prompts",),
                 "max_questions_per_relation": ("--max-questions",)},
    "theory": {"prediction.known_set": ("--known-set",),
               "prediction.unknown_set": ("--unknown-set",),
               "prediction.fit_sets": ("--fit-sets",), "prediction.quantiles": ("--quantiles",),
               "prediction.min_bucket": ("--min-bucket",), "prediction.n_boot": ("--n-boot",),
               "prediction.seed": ("--seed",),
               "metrics.neighbourhood_hops": ("--neighbourhood-hops",),
               "metrics.path_hops": ("--path-hops",)},
    "model": {"name": ("--model",), "device": ("--device",), "dtype": ("--dtype",)},
    "backend": {"name": ("--backend",), "max_batch": ("--batch",), "chunk_size": ("--chunk",),
                "address": ("--address",), "workers": ("--workers",)},
}
_SEP = ":"  # argparse dest of a config flag: "<section>:<dotted.field.path>"
# a tuple of strings as a field's help writes it, ('q_proj', 'v_proj'), and its items
_TUPLE = re.compile(r"\('[^']*'(?:, '[^']*')+\)")
_ITEM = re.compile(r"'([^']*)'")


def _value_type(tp: Any) -> tuple[Callable[[str], Any] | None, dict]:
    """How a flag's text becomes the value the TOML reader (:func:`from_dict`) accepts."""
    origin, args = get_origin(tp), get_args(tp)
    if origin in (Union, types.UnionType):
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:
            return _value_type(options[0])
        if str in options and any(get_origin(o) is tuple for o in options):
            return (lambda text: [x.strip() for x in text.split(",") if x.strip()]
                    if "," in text else text), {}  # "all-linear" or "q_proj,v_proj"
    if tp is bool:
        return None, {"action": argparse.BooleanOptionalAction}
    if origin is Literal:
        return str, {"choices": list(args)}
    if origin is tuple:
        item, _ = _value_type(args[0])
        return (lambda text: [item(x.strip()) for x in text.split(",") if x.strip()]), {
            "metavar": "A,B,..."}
    return tp, {}


def _flag(path: str) -> str:
    return "--" + path.replace(".", "-").replace("_", "-")


def add_config_flags(p: argparse.ArgumentParser, cls: type, section: str, prefix: str = "",
                     flag_prefix: str = "") -> None:
    """A flag per field of dataclass ``cls`` (nested dataclasses flattened with their path),
    its help and default from the field; only the flags given are set (their dest is
    ``section:path``), so defaults live in the dataclass alone."""
    hints = get_type_hints(cls)
    for f in fields(cls):
        path, tp = f"{prefix}{f.name}", hints[f.name]
        inner = [a for a in get_args(tp) if a is not type(None)] or [tp]
        if is_dataclass(inner[0]):
            add_config_flags(p, inner[0], section, f"{path}.", flag_prefix)
            continue
        convert, extra = _value_type(tp)
        default = (f.default if f.default is not MISSING else
                   f.default_factory() if f.default_factory is not MISSING else None)
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
        names = [_flag(flag_prefix + path), *ALIASES.get(section, {}).get(path, ())]
        kw = {"type": convert, "metavar": extra.pop("metavar", f.name.upper())} if convert \
            else {}
        if "choices" in extra:
            kw.pop("metavar")
        # a tuple in the field's help, written for Python, shown as the flag takes it: a,b
        text = _TUPLE.sub(lambda m: ",".join(_ITEM.findall(m[0])), f.metadata.get("help", ""))
        p.add_argument(*dict.fromkeys(names), dest=f"{section}{_SEP}{path}",
                       default=argparse.SUPPRESS, help=f"{text} "
                       f"(default: {shown})".replace("%", "%%"), **kw, **extra)


def config_from_args(cls: type, args: argparse.Namespace, section: str) -> Any:
    """Dataclass ``cls`` from the flags of ``section`` given on the command line, checked by
    the same reader as a TOML config's ``[section]``."""
    from kgfact.pipeline import from_dict

    data: dict = {}
    for dest, value in vars(args).items():
        head, _, path = dest.partition(_SEP)
        if head != section or not path:
            continue
        *parents, leaf = path.split(".")
        node = data
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return from_dict(cls, data, where=section)


def _existing_run(path: str):
    from kgfact.rundir import RunDir

    run = RunDir(path)
    if not run.manifest_path.exists():
        raise KgfactError(f"{path} is not a kgfact run (no manifest.json): "
                          "build it first with 'kgfact build --run RUN'")
    return run


def cmd_stage(args: argparse.Namespace) -> int:
    """Run one stage (:mod:`kgfact.stages`) with the flags given and print its summary."""
    from kgfact.sampling import BackendConfig
    from kgfact.models import ModelConfig
    from kgfact.rundir import RunDir
    from kgfact.stages import STAGES, StageCall

    stage = STAGES.get(args.command)
    config = config_from_args(stage.config_class(), args, stage.name) if stage.config else None
    call = StageCall(
        model=config_from_args(ModelConfig, args, "model") if stage.uses_model else None,
        backend=config_from_args(BackendConfig, args, "backend") if stage.uses_backend
        else None, progress=not getattr(args, "quiet", False),
        force=getattr(args, "force", False))
    if args.dry_run:  # the work and its time here; nothing is loaded, trained or written
        from kgfact.build import source_name
        from kgfact.dryrun import plan_stage, show

        run = (RunDir(args.run or DEFAULT_RUNS / source_name(config)) if stage.name == "build"
               else _existing_run(args.run))
        print(show(f"kgfact {stage.name}", run, plan_stage(run, stage.name, config, call.model,
                                                           call.backend, call.force),
                   call.model, call.backend))
        return 0
    if stage.name == "build":
        from kgfact.build import source_name
        from kgfact.data.store import StoreConfig, configured

        run = RunDir(args.run or DEFAULT_RUNS / source_name(config)).create()
        with configured(config_from_args(StoreConfig, args, "store")):
            result = stage.run(run, config, wait=args.wait, cache=not args.no_cache,
                               **call.options(stage))
    else:
        run = _existing_run(args.run)
        result = stage.run(run, config, wait=args.wait, **call.options(stage))
    SUMMARIES.get(stage.name, lambda *a: None)(run, result)
    return 0


def _tables_of(run, stage: str) -> str:
    """The tables ``stage`` wrote to ``run`` (by the stage registry)."""
    from kgfact.stages import STAGES

    entry = STAGES.get(stage)
    return ", ".join(t for t in entry.writes + entry.optional if run.has_table(t))


def _built(run, report: dict) -> None:
    questions = report.get("questions", {})
    total = sum(sum(s.values()) for s in questions.values())
    verb = "already built" if report.get("skipped") else "built"
    print(f"{verb} {run.path}: {total} questions over {len(questions)} relations "
          f"(tables: {_tables_of(run, 'build')}; report: kgfact info {run.path})")


def _categorised(run, table) -> None:
    from kgfact.slick import CATEGORIES

    mix = table["category"].value_counts().reindex(list(CATEGORIES), fill_value=0)
    print(f"SliCK: {len(table)} questions in {run.path}/slick.parquet: "
          + ", ".join(f"{c} {n}" for c, n in mix.items()))


def _trained(run, dynamics) -> None:
    for (name, seed), d in dynamics.groupby(["set", "seed"], sort=False):
        es = d[d["early_stop"]].iloc[0]
        last = d.iloc[-1]
        print(f"{name} seed {seed}: {int(last['epoch'])} epochs, train fit "
              f"{last['train_fit']:.2f}; early stop at epoch {int(es['epoch'])} "
              f"(dev {es['dev_accuracy']:.3f}); adapters in {run.path}/adapters/{name}/"
              f"seed-{seed}/")


def _evaluated(run, accuracy) -> None:
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


def _theorised(run, tables) -> None:
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
    print(f"tables in {run.path}: {', '.join(tables)}")


def _reported(run, paths) -> None:
    if run.has_table("findings"):
        table = run.read_table("findings")
        print(table[["claim", "estimate", "ci_low", "ci_high", "verdict"]].to_string(
            index=False, float_format=lambda v: f"{v:+.3f}"))
    print("wrote " + ", ".join(str(p) for p in paths))


SUMMARIES = {"build": _built, "slick": _categorised,
             "ftsets": lambda run, table: print(table.to_string(index=False)),
             "finetune": _trained, "evaluate": _evaluated, "theory": _theorised,
             "report": _reported}

def cmd_run(args: argparse.Namespace) -> int:
    """``kgfact run``: :func:`kgfact.api.run` with the ``--set`` overrides, then the
    ``--store-*`` flags (which win)."""
    from kgfact.api import run
    from kgfact.pipeline import parse_override

    overrides = dict(map(parse_override, args.overrides))
    overrides.update({f"store.{dest.partition(_SEP)[2]}": value
                      for dest, value in vars(args).items() if dest.startswith(f"store{_SEP}")})
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
        if name == "build":
            c.add_argument("--run", help="run directory (default runs/<source>)")
            c.add_argument("--no-cache", action="store_true",
                           help="do not read or write the SPARQL response cache")
            add_config_flags(c, StoreConfig, "store", flag_prefix="store.")
        else:
            c.add_argument("run", help="run directory (made by 'kgfact build')")
        if stage.config:
            add_config_flags(c, stage.config_class(), name)
        if stage.uses_model:
            add_config_flags(c, ModelConfig, "model", flag_prefix="model.")
        if stage.uses_backend:
            add_config_flags(c, BackendConfig, "backend", flag_prefix="backend.")
        if name in ("build", "slick"):
            c.add_argument("--force", action="store_true", help="redo a complete stage")
        if name != "report":
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
