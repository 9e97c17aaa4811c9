"""The pipeline's stages: the one list of what runs, in which order, and which tables each
reads and writes.

The pipeline (``kgfact run``), the command line, the report's step table, ``kgfact info`` and
:class:`~kgfact.rundir.RunDir`'s "run the stage that writes X" messages all read
:data:`STAGES`; nothing else lists stages or tables. An entry says all the pipeline and the
command line need to know of its stage: its config (a run config's table and ``ExperimentConfig``
field of the same name, its command's flags and their aliases), the options its runner takes, the
extra flags of its command, how its result is summarised, what a complete run of it leaves. So a
stage registered here, by kgfact or by a user, is a step of ``kgfact run`` and a command. Configs,
runners and summaries are named lazily (``"module:attribute"``, as rdflib's plugins), so
importing this module imports no stage.

Every runner has the signature ``runner(run, config, *, progress, model, backend, force)``, each
keyword only for a stage whose entry says it takes it (:meth:`StageCall.options`), so the
pipeline and the command line call any stage alike, through :meth:`Stage.run`, which holds the
run directory's lock while the stage works.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kgfact.registry import Registry, load_target


@dataclass(frozen=True)
class Argument:
    """A flag of a stage's command beyond its config's: given, it sets one keyword argument of
    the runner to ``value`` (``--no-cache``: ``cache=False``)."""

    flag: str = field(metadata={"help": "The flag, such as '--no-cache'."})
    keyword: str = field(metadata={"help": "The runner's keyword argument it sets."})
    value: Any = field(metadata={"help": "The value it sets that argument to."})
    help: str = field(metadata={"help": "Its line in the command's --help."})


@dataclass(frozen=True)
class Stage:
    """One pipeline stage."""

    name: str = field(metadata={"help": "Name: the command, the manifest entry, the TOML table."})
    help: str = field(metadata={
        "help": "One line for ``kgfact --help``, and the help of its table in a run config."})
    config: str | None = field(metadata={
        "help": "'module:Class' of its config dataclass (None: it takes no settings)."})
    runner: str = field(metadata={"help": "'module:function' that runs it (module docstring)."})
    reads: tuple[str, ...] = field(metadata={"help": "Tables it needs."})
    writes: tuple[str, ...] = field(metadata={
        "help": "Tables a complete run of it leaves readable."})
    optional: tuple[str, ...] = field(default=(), metadata={
        "help": "Tables it writes when the run allows (e.g. the gap needs both FT sets)."})
    uses_model: bool = field(default=False, metadata={"help": "Whether it runs the model."})
    uses_backend: bool = field(default=False, metadata={
        "help": "Whether it generates through a sampling backend."})
    uses_store: bool = field(default=False, metadata={
        "help": "Whether it may start and query the embedded store (its command takes the "
                "--store-* flags)."})
    honours_force: bool = field(default=False, metadata={
        "help": "Whether it redoes a complete stage when forced: its command takes --force and "
                "its runner a force keyword."})
    shows_progress: bool = field(default=True, metadata={
        "help": "Whether it shows progress bars: its command takes --quiet and its runner a "
                "progress keyword."})
    required: bool = field(default=False, metadata={
        "help": "Whether a run config must have its table (the build's: a run has data)."})
    run_name: tuple[str, str] | None = field(default=None, metadata={
        "help": "For the stage that makes a run directory: 'module:function' naming it from "
                "the config, and what that name is, for --help; its command then takes --run "
                "DIR (default runs/<name>) instead of an existing run. None: it works on one."})
    arguments: tuple[Argument, ...] = field(default=(), metadata={
        "help": "Its command's flags beyond its config's, each a runner keyword."})
    aliases: dict[str, str] = field(default_factory=dict, metadata={
        "help": "Short flags of its command beside the generated ones, by config field path "
                "({'qa.in_distribution': '--relations'})."})
    summary: str | None = field(default=None, metadata={
        "help": "'module:function' printing what its command did, from the run and the "
                "runner's result (None: nothing)."})
    files: tuple[str, ...] = field(default=(), metadata={
        "help": "Files besides its tables that a complete run of it leaves in the run "
                "directory (the report's pages)."})
    plan: str | None = field(default=None, metadata={
        "help": "'module:function' counting its work for --dry-run from a kgfact.dryrun.Plan "
                "(None: the dry run shows it with no estimate)."})

    def config_class(self) -> type | None:
        return load_target(self.config) if self.config else None

    def run(self, run: Any, config: Any, *, wait: float | None = 0.0, **options: Any) -> Any:
        """Run the stage on ``run`` (a :class:`~kgfact.rundir.RunDir`) with ``config`` (options
        as in the module docstring), holding the run's lock throughout, so its checks ("already
        complete", "another configuration") and its writes see no other writer.

        ``wait``: seconds to wait for another process writing to the run (None: as long as it
        takes); if it still writes then, a one-line error names it.
        """
        with run.writing(wait):
            return load_target(self.runner)(run, config, **options)


STAGES: Registry[Stage] = Registry("stage")
for _stage in (
    Stage("build", "build QA data into a run directory", "kgfact.build:BuildConfig",
          "kgfact.build:run_stage", (), ("triples", "entities", "qa", "qa_two_hop"),
          uses_store=True, honours_force=True, required=True,
          run_name=("kgfact.build:source_name", "source"),
          arguments=(Argument("--no-cache", "cache", False,
                              "do not read or write the SPARQL response cache"),),
          aliases={"qa.in_distribution": "--relations", "qa.out_of_distribution": "--ood",
                   "qa.max_questions_per_relation": "--max-questions", "qa.seed": "--seed",
                   "qa.leakage_filter": "--leakage-filter",
                   "max_triples_per_relation": "--max-triples"},
          summary="kgfact.cli:show_build", plan="kgfact.dryrun:plan_build"),
    Stage("slick", "SliCK knowledge categories for a run's questions",
          "kgfact.slick:SlickConfig", "kgfact.slick:run_stage", ("qa",),
          ("slick", "slick_exemplars", "guess_baselines"), uses_model=True, uses_backend=True,
          honours_force=True,
          aliases={"n_prompts": "--prompts", "max_questions_per_relation": "--max-questions",
                   "sampling.n_samples": "--samples", "sampling.temperature": "--temperature",
                   "sampling.top_k": "--top-k", "sampling.max_new_tokens": "--max-new-tokens"},
          summary="kgfact.cli:show_slick", plan="kgfact.dryrun:plan_slick"),
    Stage("ftsets", "build the fine-tuning sets from a SliCK-labelled run",
          "kgfact.ftsets:FtSetsConfig", "kgfact.ftsets:run_stage", ("qa", "slick"),
          ("ftsets",), aliases={"unknown_shares": "--shares"}, summary="kgfact.cli:show_ftsets",
          plan="kgfact.dryrun:plan_ftsets"),
    Stage("finetune", "LoRA fine-tuning on the run's fine-tuning sets",
          "kgfact.finetune:FinetuneConfig", "kgfact.finetune:run_stage", ("qa", "ftsets"),
          ("dynamics",), optional=("lr_grid",), uses_model=True, uses_backend=True,
          aliases={"max_epochs": "--epochs", "learning_rate": "--lr",
                   "learning_rate_grid": "--lr-grid", "lora.target_modules": "--target-modules"},
          summary="kgfact.cli:show_finetune", plan="kgfact.dryrun:plan_finetune"),
    Stage("evaluate", "accuracy and factuality gap under each prompt mode",
          "kgfact.evaluate:EvalConfig", "kgfact.evaluate:run_stage",
          ("qa", "triples", "entities", "slick", "ftsets", "dynamics"),
          ("predictions", "prompts", "prompt_edges", "accuracy"),
          optional=("gap", "regression", "regression_other"), uses_model=True,
          uses_backend=True, summary="kgfact.cli:show_evaluate",
          aliases={"n_prompts": "--prompts", "max_questions_per_relation": "--max-questions"},
          plan="kgfact.dryrun:plan_evaluate"),
    Stage("theory", "prompt-subgraph metrics and the theory's predicted vs measured gaps",
          "kgfact.theory:TheoryConfig", "kgfact.theory.stage:run_stage",
          ("triples", "entities", "qa", "slick", "ftsets", "predictions", "prompts",
           "prompt_edges"),
          ("theory_metrics", "theory_predictions", "theory_stats", "cot_steps"),
          optional=("theory_fit", "theory_ood", "theory_controls", "theory_primary",
                    "theory_prompt_edges", "theory_heldout"),
          aliases={"prediction.known_set": "--known-set",
                   "prediction.unknown_set": "--unknown-set", "prediction.fit_sets": "--fit-sets",
                   "prediction.quantiles": "--quantiles", "prediction.min_bucket": "--min-bucket",
                   "prediction.n_boot": "--n-boot", "prediction.seed": "--seed",
                   "metrics.neighbourhood_hops": "--neighbourhood-hops",
                   "metrics.path_hops": "--path-hops"},
          summary="kgfact.cli:show_theory", plan="kgfact.dryrun:plan_theory"),
    Stage("report", "write a run's findings table and report (report.html, report.md)", None,
          "kgfact.report:run_stage", ("predictions",), (), optional=("findings",),
          shows_progress=False, summary="kgfact.cli:show_report",
          files=("report.html", "report.md"), plan="kgfact.dryrun:plan_report"),
):
    STAGES.register(_stage.name, _stage)


# the columns a reader may rely on, for tables read by a stage other than their writer
COLUMNS = {
    "prompts": ("prompt_id", "set", "mode", "strategy", "relation", "prompt"),
    "prompt_edges": ("prompt_id", "source", "subject", "relation", "object"),
    "predictions": ("model", "set", "checkpoint", "mode", "strategy", "prompt_id", "qid",
                    "relation", "distribution", "category", "cot_steps", "correct"),
    "ftsets": ("set", "unknown_share"),
}


def writer_of(table: str) -> Stage | None:
    """The stage that writes ``table`` (``ftsets/<set>`` belongs to ``ftsets``), or None."""
    head = table.split("/", 1)[0]
    for name in STAGES:
        stage = STAGES.get(name)
        if head in stage.writes + stage.optional:
            return stage
    return None


@dataclass(frozen=True)
class StageCall:
    """What a runner gets besides the run and its config."""

    model: Any = field(default=None, metadata={"help": "ModelConfig (stages that run it)."})
    backend: Any = field(default=None, metadata={
        "help": "BackendConfig (stages that generate through a backend)."})
    progress: bool = field(default=True, metadata={
        "help": "Show progress bars (stages that show them)."})
    force: bool = field(default=False, metadata={
        "help": "Redo a complete stage (stages that honour it)."})

    def options(self, stage: Stage) -> dict[str, Any]:
        """The keyword arguments ``stage``'s runner takes."""
        out: dict[str, Any] = {}
        if stage.shows_progress:
            out["progress"] = self.progress
        if stage.honours_force:
            out["force"] = self.force
        if stage.uses_model:
            out["model"] = self.model
        if stage.uses_backend:
            out["backend"] = self.backend
        return out


