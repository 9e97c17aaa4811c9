"""The pipeline's stages: the one list of what runs, in which order, and which tables each
reads and writes.

The pipeline (``kgfact run``), the command line, the report's step table, ``kgfact info`` and
:class:`~kgfact.rundir.RunDir`'s "run the stage that writes X" messages all read
:data:`STAGES`; nothing else lists stages or tables. Configs and runners are named lazily
(``"module:attribute"``, as rdflib's plugins), so importing this module imports no stage.

Every runner has the signature ``runner(run, config, *, model, backend, progress, force)``
(:class:`StageCall` carries those), so the pipeline and the command line call any stage alike,
through :meth:`Stage.run`, which holds the run directory's lock while the stage works.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kgfact.registry import Registry, load_target


@dataclass(frozen=True)
class Stage:
    """One pipeline stage."""

    name: str = field(metadata={"help": "Name: the command, the manifest entry, the TOML table."})
    help: str = field(metadata={"help": "One line for ``kgfact --help``."})
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
          "kgfact.build:run_stage", (), ("triples", "entities", "qa", "qa_two_hop")),
    Stage("slick", "SliCK knowledge categories for a run's questions",
          "kgfact.slick:SlickConfig", "kgfact.slick:run_stage", ("qa",),
          ("slick", "slick_exemplars", "guess_baselines"), uses_model=True, uses_backend=True),
    Stage("ftsets", "build the fine-tuning sets from a SliCK-labelled run",
          "kgfact.ftsets:FtSetsConfig", "kgfact.ftsets:run_stage", ("qa", "slick"),
          ("ftsets",)),
    Stage("finetune", "LoRA fine-tuning on the run's fine-tuning sets",
          "kgfact.finetune:FinetuneConfig", "kgfact.finetune:run_stage", ("qa", "ftsets"),
          ("dynamics",), optional=("lr_grid",), uses_model=True, uses_backend=True),
    Stage("evaluate", "accuracy and factuality gap under each prompt mode",
          "kgfact.evaluate:EvalConfig", "kgfact.evaluate:run_stage",
          ("qa", "triples", "entities", "slick", "ftsets", "dynamics"),
          ("predictions", "prompts", "prompt_edges", "accuracy"),
          optional=("gap", "regression", "regression_other"), uses_model=True,
          uses_backend=True),
    Stage("theory", "prompt-subgraph metrics and the theory's predicted vs measured gaps",
          "kgfact.theory:TheoryConfig", "kgfact.theory.stage:run_stage",
          ("triples", "entities", "qa", "slick", "ftsets", "predictions", "prompts",
           "prompt_edges"),
          ("theory_metrics", "theory_predictions", "theory_stats", "cot_steps"),
          optional=("theory_fit", "theory_ood", "theory_controls", "theory_primary",
                    "theory_prompt_edges")),
    Stage("report", "write a run's findings table and report (report.html, report.md)", None,
          "kgfact.report:run_stage", ("predictions",), (), optional=("findings",)),
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
    progress: bool = field(default=True, metadata={"help": "Show progress bars."})
    force: bool = field(default=False, metadata={"help": "Redo a complete stage."})

    def options(self, stage: Stage) -> dict[str, Any]:
        """The keyword arguments ``stage``'s runner takes."""
        out: dict[str, Any] = {"progress": self.progress, "force": self.force}
        if stage.uses_model:
            out["model"] = self.model
        if stage.uses_backend:
            out["backend"] = self.backend
        return out


