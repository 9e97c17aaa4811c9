"""The ``kgfact`` command line.

User mistakes (bad input, unreachable endpoint, missing runs) end with a one-line
``kgfact: error: ...`` and exit status 2; only bugs show a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import NoReturn

from kgfact.errors import KgfactError

DEFAULT_RUNS = Path("runs")


class _Parser(argparse.ArgumentParser):
    """argparse with kgfact's error form: one ``kgfact: error: ...`` line, exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"kgfact: error: {self.prog}: {message} (see '{self.prog} --help')\n")


def _pids(text: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in text.split(",") if p.strip())


def _backend(args: argparse.Namespace):
    """The :class:`kgfact.pipeline.BackendConfig` of the flags :func:`_backend_args` adds,
    checked as a config's ``[backend]`` table is."""
    from kgfact.pipeline import BackendConfig

    return BackendConfig(name=args.backend, address=args.address, workers=args.workers,
                         max_batch=args.batch,
                         **({"chunk_size": args.chunk} if "chunk" in args else {}))


def _backend_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--address", help="Ray cluster: auto, HOST:6379 or ray://HOST:10001 "
                   "(default: start a local Ray instance)")
    p.add_argument("--workers", type=int, help="Ray workers, one model replica each "
                   "(default: one per GPU, else one per node)")


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
        fresh = store.status() is None
        if fresh and store.is_empty() and not args.empty:
            print("kgfact: first start: building and loading the offline default dataset "
                  "(GeoNames facts, under a minute)", file=sys.stderr)
        state = store.start(load_default=not args.empty)
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


def cmd_build(args: argparse.Namespace) -> int:
    from kgfact.build import BuildConfig, build
    from kgfact.qa import QAConfig
    from kgfact.relations import SPLITS
    from kgfact.rundir import RunDir

    if args.entityquestions:
        default_split, default_run = "slick", "entityquestions"
    elif args.endpoint:
        default_split, default_run = "slick", "endpoint"
    else:
        default_split, default_run = "geonames", "geonames"
    split = SPLITS.get(args.split or default_split)
    in_dist = args.relations or split.in_distribution
    ood = args.ood if args.ood is not None else (() if args.relations else split.out_of_distribution)
    if args.entityquestions and not args.relations:
        from kgfact.data.entityquestions import available_relations

        present = set(available_relations(Path(args.entityquestions)))
        in_dist = tuple(p for p in in_dist if p in present)
        ood = tuple(p for p in ood if p in present)
    qa = QAConfig(in_distribution=tuple(in_dist), out_of_distribution=tuple(ood),
                  max_questions_per_relation=args.max_questions, seed=args.seed,
                  leakage_filter=args.leakage_filter)
    config = BuildConfig(qa=qa, endpoint=args.endpoint, entityquestions=args.entityquestions,
                         page_size=args.page_size, max_triples_per_relation=args.max_triples,
                         timeout=args.timeout)
    run = RunDir(args.run or DEFAULT_RUNS / default_run).create()
    if not args.endpoint and not args.entityquestions:
        _ensure_embedded_store()  # only once the config and the run are known to be good
    report = build(run, config, force=args.force, progress=not args.quiet,
                   cache_dir=None if args.no_cache else "default")
    questions = report.get("questions", {})
    total = sum(sum(s.values()) for s in questions.values())
    verb = "already built" if report.get("skipped") else "built"
    print(f"{verb} {run.path}: {total} questions over {len(questions)} relations "
          f"(tables: triples, entities, qa, qa_two_hop; report: kgfact info {run.path})")
    return 0


def _ensure_embedded_store() -> None:
    from kgfact.data.store import OxigraphStore

    store = OxigraphStore()
    if store.status() is None:
        print("kgfact: starting the embedded store (first start loads the offline default "
              "dataset)", file=sys.stderr)
        state = store.start()
        print(f"kgfact: embedded store running at {state['url']}", file=sys.stderr)


def cmd_slick(args: argparse.Namespace) -> int:
    from kgfact.sampling import SamplingConfig
    from kgfact.slick import CATEGORIES, SlickConfig, run_slick

    run = _existing_run(args.run)
    backend = _backend(args)
    sampling = SamplingConfig(n_samples=args.samples, temperature=args.temperature,
                              top_k=args.top_k, max_new_tokens=args.max_new_tokens,
                              seed=args.seed)
    config = SlickConfig(n_prompts=args.prompts, shots=args.shots, sampling=sampling,
                         splits=args.splits, relations=args.relations,
                         max_questions_per_relation=args.max_questions, seed=args.seed)
    table = run_slick(run, config, _model(args), backend=backend.name,
                      backend_options=backend.options(), chunk_size=backend.chunk_size,
                      max_batch=backend.max_batch, force=args.force, progress=not args.quiet)
    mix = table["category"].value_counts().reindex(list(CATEGORIES), fill_value=0)
    print(f"SliCK: {len(table)} questions in {args.run}/slick.parquet: "
          + ", ".join(f"{c} {n}" for c, n in mix.items()))
    return 0


def _existing_run(path: str):
    from kgfact.rundir import RunDir

    run = RunDir(path)
    if not run.manifest_path.exists():
        raise KgfactError(f"{path} is not a kgfact run (no manifest.json): "
                          "build it first with 'kgfact build --run RUN'")
    return run


def _model(args: argparse.Namespace):
    from kgfact.models import ModelConfig

    return ModelConfig(name=args.model, device=args.device, dtype=args.dtype)


def cmd_ftsets(args: argparse.Namespace) -> int:
    from kgfact.ftsets import FtSetsConfig, make_ftsets

    config = FtSetsConfig(size=args.size, relations=args.relations, seed=args.seed,
                          **({"unknown_shares": args.shares} if args.shares else {}))
    table = make_ftsets(_existing_run(args.run), config)
    print(table.to_string(index=False))
    return 0


def cmd_finetune(args: argparse.Namespace) -> int:
    from kgfact.finetune import FinetuneConfig, LoraSettings, finetune

    lora = LoraSettings(r=args.lora_r, alpha=args.lora_alpha, target_modules=(
        args.target_modules if args.target_modules == "all-linear"
        else _pids(args.target_modules)))
    config = FinetuneConfig(sets=args.sets, lora=lora, learning_rate=args.lr,
                            learning_rate_grid=args.lr_grid or (), grid_set=args.grid_set,
                            batch_size=args.batch_size, max_epochs=args.epochs,
                            convergence_fit=args.convergence_fit,
                            eval_questions=args.eval_questions, seeds=args.seeds)
    dynamics = finetune(_existing_run(args.run), config, _model(args), progress=not args.quiet)
    for (name, seed), d in dynamics.groupby(["set", "seed"], sort=False):
        es = d[d["early_stop"]].iloc[0]
        last = d.iloc[-1]
        print(f"{name} seed {seed}: {int(last['epoch'])} epochs, train fit "
              f"{last['train_fit']:.2f}; early stop at epoch {int(es['epoch'])} "
              f"(dev {es['dev_accuracy']:.3f}); adapters in {args.run}/adapters/{name}/"
              f"seed-{seed}/")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from kgfact.evaluate import EvalConfig, evaluate

    config = EvalConfig(sets=args.sets, modes=args.modes, strategies=args.strategies,
                        shots=args.shots, n_prompts=args.prompts, base=not args.no_base,
                        max_questions_per_relation=args.max_questions, seed=args.seed)
    run = _existing_run(args.run)
    backend = _backend(args)
    accuracy = evaluate(run, config, _model(args), backend=backend.name,
                        backend_options=backend.options(), max_batch=backend.max_batch,
                        progress=not args.quiet)
    summary = accuracy[(accuracy["relation"] == "all") & (accuracy["category"] == "all")]
    print(summary.pivot_table(index=["model"], columns=["distribution", "mode", "strategy"],
                              values="accuracy").round(3).to_string())
    if run.has_table("gap"):
        gap = run.read_table("gap")
        print("\nfactuality gap acc(ft-known) - acc(ft-unknown), 95% bootstrap CI:")
        for row in gap.itertuples():
            print(f"  {row.mode:9} {row.strategy:14} {row.distribution:3} {row.checkpoint:11} "
                  f"{row.gap:+.3f} [{row.ci_low:+.3f}, {row.ci_high:+.3f}] (n={row.n})")
    print(f"tables in {args.run}: predictions, accuracy, gap, regression, prompts, prompt_edges")
    return 0


def cmd_theory(args: argparse.Namespace) -> int:
    from kgfact.theory import MetricConfig, PredictionConfig, TheoryConfig, run_theory

    config = TheoryConfig(
        metrics=MetricConfig(neighbourhood_hops=args.neighbourhood_hops,
                             path_hops=args.path_hops),
        prediction=PredictionConfig(known_set=args.known_set, unknown_set=args.unknown_set,
                                    fit_sets=args.fit_sets, quantiles=args.quantiles,
                                    min_bucket=args.min_bucket, n_boot=args.n_boot,
                                    seed=args.seed),
        augmentation=args.augmentation)
    tables = run_theory(args.run, config)
    stats = tables["theory_stats"]
    headline = stats[(stats["augmentation"] == args.augmentation) & (stats["family"] == "all")
                     & (stats["mode"] == "all")]
    print(f"theory: {len(tables['theory_metrics'])} (prompt, query) units, "
          f"{len(tables['cot_steps'])} CoT steps checked; predicted vs measured gaps "
          f"(A = {args.augmentation}, buckets by checkpoint, mode and strategy):")
    for row in headline.itertuples():
        value = (f"{row.value:+.3f} [{row.ci_low:+.3f}, {row.ci_high:+.3f}]"
                 if row.value == row.value else row.note)  # NaN: say why
        print(f"  {row.statistic:20} {value} ({row.n_buckets} buckets)")
    print(f"tables in {args.run}: {', '.join(tables)}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from kgfact.pipeline import load_config, run_experiment
    from kgfact.rundir import RunDir

    config = load_config(args.config)
    run = RunDir(args.run or DEFAULT_RUNS / Path(args.config).stem).create()
    uses_store = not config.build.endpoint and not config.build.entityquestions
    if uses_store and run.stage_status("build") != "complete":
        _ensure_embedded_store()
    timings = run_experiment(run, config, progress=not args.quiet,
                             log=lambda line: print(f"kgfact run: {line}", file=sys.stderr))
    spent = sum(t for t in timings.values() if t is not None)
    skipped = sum(t is None for t in timings.values())
    print(f"finished {run.path} in {spent:.0f} s ({skipped} of {len(timings)} steps were "
          f"already complete); report: {run.path}/report.html (and report.md)")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from kgfact.report import write_report

    run = _existing_run(args.run)
    paths = write_report(run)
    if run.has_table("findings"):
        table = run.read_table("findings")
        print(table[["claim", "estimate", "ci_low", "ci_high", "verdict"]].to_string(
            index=False, float_format=lambda v: f"{v:+.3f}"))
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    run = _existing_run(args.run)
    print(json.dumps(run.manifest(), indent=2, sort_keys=True))
    return 0


def cmd_relations(args: argparse.Namespace) -> int:
    from kgfact.relations import RELATIONS

    for pid in RELATIONS:
        rel = RELATIONS.get(pid)
        print(f"{rel.pid:6} {rel.label:50} {rel.question}")
    return 0


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="gemma3-270m",
                   help="HF model id, local path, or gemma3-270m (embedded default)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--dtype", default="auto", choices=["auto", "bfloat16", "float16", "float32"])


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="kgfact", description=__doc__.splitlines()[0])
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
    load.add_argument("files", nargs="+", help="RDF files (.nt, .ttl, ...)")
    s.set_defaults(func=cmd_store)

    b = sub.add_parser("build", help="build QA data into a run directory")
    b.add_argument("--run", help="run directory (default runs/<source>)")
    src = b.add_mutually_exclusive_group()
    src.add_argument("--endpoint", help="SPARQL endpoint URL (default: the embedded store)")
    src.add_argument("--entityquestions", metavar="PATH",
                     help="import an EntityQuestions folder, e.g. ../shared/data/entityquestions")
    b.add_argument("--split", help="named relation split: slick or geonames")
    b.add_argument("--relations", type=_pids, help="in-distribution relations, e.g. P17,P36")
    b.add_argument("--ood", type=_pids, help="out-of-distribution relations, e.g. P30")
    b.add_argument("--max-questions", type=int, help="questions per relation (sampled)")
    b.add_argument("--max-triples", type=int, help="triples fetched per relation")
    b.add_argument("--page-size", type=int, default=10_000, help="rows per SPARQL page")
    b.add_argument("--timeout", type=float, default=60.0, help="SPARQL timeout in seconds")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--leakage-filter", default="test_subjects",
                   choices=["test_subjects", "test_entities", "none"])
    b.add_argument("--force", action="store_true", help="rebuild a complete run")
    b.add_argument("--no-cache", action="store_true",
                   help="do not read or write the SPARQL response cache")
    b.add_argument("--quiet", action="store_true", help="no progress bars")
    b.set_defaults(func=cmd_build)

    k = sub.add_parser("slick", help="SliCK knowledge categories for a run's questions")
    k.add_argument("run", help="run directory built by 'kgfact build'")
    _model_args(k)
    k.add_argument("--backend", default="kgfact", help="sampling backend: kgfact, vllm or ray")
    _backend_args(k)
    k.add_argument("--relations", type=_pids, help="relations to categorise (default: all)")
    k.add_argument("--splits", type=lambda s: tuple(x for x in s.split(",") if x),
                   default=("train", "dev", "test"), help="splits to categorise")
    k.add_argument("--max-questions", type=int, help="questions per relation and split")
    k.add_argument("--prompts", type=int, default=10, help="few-shot prompts per question")
    k.add_argument("--shots", type=int, default=4, help="exemplars per prompt")
    k.add_argument("--samples", type=int, default=16, help="samples per prompt")
    k.add_argument("--temperature", type=float, default=0.5)
    k.add_argument("--top-k", type=int, default=40)
    k.add_argument("--max-new-tokens", type=int, default=16)
    k.add_argument("--seed", type=int, default=0)
    k.add_argument("--batch", type=int, default=32, help="prompts prefilled together")
    k.add_argument("--chunk", type=int, default=64, help="questions per checkpoint")
    k.add_argument("--force", action="store_true", help="replace existing SliCK results")
    k.add_argument("--quiet", action="store_true", help="no progress bar")
    k.set_defaults(func=cmd_slick)

    f = sub.add_parser("ftsets", help="build the fine-tuning sets from a SliCK-labelled run")
    f.add_argument("run")
    f.add_argument("--size", type=int, help="|D|, examples per set (default: the largest possible)")
    f.add_argument("--relations", type=_pids, help="relations to train on (default: every "
                   "relation with Known and Unknown train questions)")
    f.add_argument("--shares", type=lambda s: tuple(float(x) for x in s.split(",")),
                   help="Unknown shares of the mixture grid (default 0,0.25,0.5,0.75,1)")
    f.add_argument("--seed", type=int, default=0)
    f.set_defaults(func=cmd_ftsets)

    t = sub.add_parser("finetune", help="LoRA fine-tuning on the run's fine-tuning sets")
    t.add_argument("run")
    _model_args(t)
    t.add_argument("--sets", type=_pids, default=("ft-known", "ft-unknown"),
                   help="fine-tuning sets to train (default ft-known,ft-unknown)")
    t.add_argument("--epochs", type=int, default=10, help="epoch limit")
    t.add_argument("--lr", type=float, default=1e-3, help="learning rate (constant)")
    t.add_argument("--lr-grid", type=lambda x: tuple(float(v) for v in x.split(",")),
                   help="learning rates tried on dev first, e.g. 3e-4,1e-3,3e-3: the best "
                        "trains every set")
    t.add_argument("--grid-set", default="mix-50", help="set the learning-rate grid is tried on")
    t.add_argument("--batch-size", type=int, default=16)
    t.add_argument("--lora-r", type=int, default=16)
    t.add_argument("--lora-alpha", type=int, default=32)
    t.add_argument("--target-modules", default="all-linear",
                   help="all-linear, or module names such as q_proj,v_proj")
    t.add_argument("--convergence-fit", type=float, default=1.0,
                   help="stop when the model fits this share of its training set")
    t.add_argument("--eval-questions", type=int, default=100,
                   help="dev and test questions per relation evaluated after every epoch")
    t.add_argument("--seeds", type=lambda x: tuple(int(v) for v in x.split(",")), default=(0,),
                   help="training seeds, e.g. 0,1,2: every set is trained once per seed")
    t.add_argument("--quiet", action="store_true", help="no progress bars")
    t.set_defaults(func=cmd_finetune)

    e = sub.add_parser("evaluate", help="accuracy and factuality gap under each prompt mode")
    e.add_argument("run")
    _model_args(e)
    e.add_argument("--sets", type=_pids, help="adapters' sets (default: every trained set)")
    e.add_argument("--no-base", action="store_true", help="leave the base model out")
    e.add_argument("--modes", type=_pids, default=("zero-shot", "few-shot", "cot"))
    e.add_argument("--strategies", type=_pids, default=("random",),
                   help="exemplar strategies: random, known, unknown, from-ft, disjoint, "
                        "other-relation")
    e.add_argument("--shots", type=int, default=4)
    e.add_argument("--prompts", type=int, default=3, help="fixed exemplar sets per relation")
    e.add_argument("--max-questions", type=int, default=200, help="test queries per relation")
    e.add_argument("--backend", default="kgfact", help="generation backend: kgfact, vllm or ray")
    _backend_args(e)
    e.add_argument("--batch", type=int, default=32, help="prompts prefilled together")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--quiet", action="store_true", help="no progress bar")
    e.set_defaults(func=cmd_evaluate)

    h = sub.add_parser("theory", help="prompt-subgraph metrics and the theory's predicted vs "
                                      "measured gaps")
    h.add_argument("run", help="run directory with evaluation results")
    h.add_argument("--known-set", default="ft-known", help="the FT-Known fine-tuning set")
    h.add_argument("--unknown-set", default="ft-unknown", help="the FT-Unknown fine-tuning set")
    h.add_argument("--fit-sets", type=_pids,
                   help="sets whose zero-shot accuracy fits alpha (default: ft-known, "
                        "ft-unknown and every mix-*)")
    h.add_argument("--augmentation", default="default", help="A(P) function of the metrics")
    h.add_argument("--neighbourhood-hops", type=int, default=1)
    h.add_argument("--path-hops", type=int, default=2)
    h.add_argument("--quantiles", type=int, default=4, help="A(P) quantile buckets per mode")
    h.add_argument("--min-bucket", type=int, default=20, help="units a bucket needs")
    h.add_argument("--n-boot", type=int, default=1000, help="bootstrap replicates")
    h.add_argument("--seed", type=int, default=0)
    h.set_defaults(func=cmd_theory)

    u = sub.add_parser("run", help="run a whole study from a TOML config (resumable)")
    u.add_argument("config", help="TOML config, e.g. configs/quickstart.toml")
    u.add_argument("--run", help="run directory (default runs/<config name>)")
    u.add_argument("--quiet", action="store_true", help="no progress bars")
    u.set_defaults(func=cmd_run)

    o = sub.add_parser("report", help="write a run's report (report.html, report.md)")
    o.add_argument("run")
    o.set_defaults(func=cmd_report)

    i = sub.add_parser("info", help="print a run's manifest (config, versions, reports)")
    i.add_argument("run")
    i.set_defaults(func=cmd_info)

    r = sub.add_parser("relations", help="list the relation registry")
    r.set_defaults(func=cmd_relations)
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
