"""``kgfact run``: a whole study from one TOML config, resumable stage by stage.

A config file has one section per stage (``[build]`` with ``[build.qa]``, ``[slick]``,
``[ftsets]``, ``[finetune]``, ``[evaluate]``, ``[theory]``) plus ``[model]`` and ``[backend]``;
:func:`load_config` maps it onto :class:`ExperimentConfig` with :func:`from_dict`, the one
TOML-to-dataclass converter (nested dataclasses, tuples from lists, type checks, unknown keys
named with the valid ones).

:func:`run_experiment` runs build -> SliCK -> fine-tuning sets -> LoRA -> evaluation -> theory ->
report into one run directory, the stages of :data:`kgfact.stages.STAGES` in order. Each step is
one manifest entry, the stage's own (its config, versions, git hash, timing), to which the run
adds ``pipeline``: the step's config chained with every earlier step's; the whole run is stage
``run`` (the full config, threads, per-step timings). A step is skipped when its entry is
complete under the same chained config and its tables are as it wrote them; otherwise it runs
again and the stage resumes from its own checkpoints (SliCK chunks, fine-tuning epochs,
evaluation jobs), so a killed run finishes with the same tables as an uninterrupted one.
"""

from __future__ import annotations

import difflib
import sys
import time
import tomllib
import types
from collections.abc import Callable
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from kgfact.build import BuildConfig
from kgfact.config import check_fields, clip, show
from kgfact.errors import KgfactError
from kgfact.evaluate import EvalConfig
from kgfact.finetune import FinetuneConfig
from kgfact.ftsets import FtSetsConfig
from kgfact.models import ModelConfig
from kgfact.rundir import RunDir, config_json
from kgfact.sampling import BackendConfig
from kgfact.slick import SlickConfig
from kgfact.stages import STAGES, StageCall
from kgfact.theory import TheoryConfig

STAGE = "run"


@dataclass(frozen=True)
class ExperimentConfig:
    """A whole study: one section per stage."""

    build: BuildConfig = field(metadata={"help": "Data source, relations, questions, splits."})
    slick: SlickConfig = field(default_factory=SlickConfig, metadata={
        "help": "SliCK knowledge categories."})
    ftsets: FtSetsConfig = field(default_factory=FtSetsConfig, metadata={
        "help": "Fine-tuning sets (Known/Unknown mixtures)."})
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig, metadata={
        "help": "LoRA training (EARLY_STOP and CONVERGENCE adapters)."})
    evaluate: EvalConfig = field(default_factory=EvalConfig, metadata={
        "help": "Evaluation under zero-shot, few-shot and CoT prompts."})
    theory: TheoryConfig = field(default_factory=TheoryConfig, metadata={
        "help": "Prompt-subgraph metrics and predicted vs measured gaps."})
    model: ModelConfig = field(default_factory=ModelConfig, metadata={
        "help": "The base model every stage uses."})
    backend: BackendConfig = field(default_factory=BackendConfig, metadata={
        "help": "Generation engine for SliCK and evaluation."})
    threads: int | None = field(default=None, metadata={"min": 1, "max": 1024,
        "help": "torch CPU threads; 1 keeps a shared CPU from stalling torch's thread pool."})

    def __post_init__(self) -> None:
        check_fields(self)


# -- TOML -> dataclasses -----------------------------------------------------------------------
def from_dict(cls: type, data: Any, where: str = "") -> Any:
    """Build dataclass ``cls`` from a mapping (parsed TOML), checking keys and types.

    Nested dataclasses come from tables, tuples from arrays, ``X | None`` fields are set by
    giving an ``X`` (TOML has no null: leave the key out for the default).

    Raises
    ------
    KgfactError
        Naming the offending key (``where.key``) on an unknown key (with the valid keys and a
        did-you-mean), a missing required key, a wrong type or a value the dataclass rejects.
    """
    if not isinstance(data, dict):
        raise KgfactError(f"{where or 'the config'} must be a table, got {_show(data)}")
    hints = get_type_hints(cls)
    known = {f.name: f for f in fields(cls) if f.init}
    for key in data:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise KgfactError(f"unknown key {_key(where, clip(key))}{hint}; valid keys: "
                              f"{', '.join(known)}")
    for name, f in known.items():
        if name not in data and f.default is MISSING and f.default_factory is MISSING:
            raise KgfactError(f"missing required key {_key(where, name)} "
                              f"({f.metadata.get('help', _type_name(hints[name]))})")
    values = {k: _convert(hints[k], v, _key(where, k)) for k, v in data.items()}
    try:
        return cls(**values)
    except (KgfactError, TypeError, ValueError) as exc:  # the dataclass's own checks
        raise KgfactError(f"[{where}]: {exc}" if where else str(exc)) from None


def _key(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _convert(tp: Any, value: Any, where: str) -> Any:
    origin, args = get_origin(tp), get_args(tp)
    if origin in (Union, types.UnionType):
        for option in args:
            if option is type(None):
                continue
            try:
                return _convert(option, value, where)
            except KgfactError:
                continue
        raise KgfactError(f"{where} must be {_type_name(tp)}, got {_show(value)}")
    if origin is Literal:
        if value not in args:
            raise KgfactError(f"{where} must be one of {', '.join(map(repr, args))}, "
                              f"got {_show(value)}")
        return value
    if is_dataclass(tp):
        return from_dict(tp, value, where)
    if origin is tuple:
        if not isinstance(value, list):
            raise KgfactError(f"{where} must be {_type_name(tp)}, got {_show(value)}")
        items = args[:1] * len(value) if args[1:] == (Ellipsis,) else args
        if len(items) != len(value):
            raise KgfactError(f"{where} must have {len(items)} items, got {len(value)}")
        return tuple(_convert(t, v, f"{where}[{i}]") for i, (t, v) in
                     enumerate(zip(items, value)))
    if tp is Any:
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    # bool is an int subclass: true must not pass for 1
    if isinstance(value, tp) and not (tp is int and isinstance(value, bool)):
        return value
    raise KgfactError(f"{where} must be {_type_name(tp)}, got {_show(value)}")


def _type_name(tp: Any) -> str:
    origin, args = get_origin(tp), get_args(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in args if a is not type(None))
    if origin is tuple:
        return f"an array of {_PLURAL.get(args[0], _type_name(args[0]))}"
    if origin is Literal:
        return "one of " + ", ".join(map(repr, args))
    if is_dataclass(tp):
        return "a table"
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false"}.get(
        tp, getattr(tp, "__name__", str(tp)))


_PLURAL = {str: "strings", int: "integers", float: "numbers", bool: "booleans"}


def _show(value: Any) -> str:
    kind = {bool: "boolean", int: "integer", float: "number", str: "string", list: "array",
            dict: "table"}.get(type(value), type(value).__name__)
    return f"{kind} {show(value)}" if not isinstance(value, (list, dict)) else kind


def load_config(path: str | Path) -> ExperimentConfig:
    """Read and validate a TOML experiment config; every problem is a one-line KgfactError."""
    path = Path(path)
    try:
        text = path.read_text("utf-8")
    except FileNotFoundError:
        raise KgfactError(f"config file {path} does not exist (presets are in configs/)") \
            from None
    except OSError as exc:
        raise KgfactError(f"cannot read config {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise KgfactError(f"{path} is not a text file (TOML must be UTF-8)") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise KgfactError(f"{path} is not valid TOML: {exc}") from None
    except ValueError:  # an integer of more digits than Python converts to a number
        raise KgfactError(f"{path} has an integer too long to read (over "
                          f"{sys.get_int_max_str_digits()} digits)") from None
    except RecursionError:  # tomllib reads nested arrays and inline tables recursively
        raise KgfactError(f"{path} nests arrays or tables too deep to read (a config is a few "
                          "levels deep)") from None
    try:
        return from_dict(ExperimentConfig, data)
    except KgfactError as exc:
        raise KgfactError(f"{path}: {exc}") from None


# -- running -----------------------------------------------------------------------------------
def step_specs(config: ExperimentConfig) -> dict[str, dict]:
    """What each step depends on: a step is redone when its spec changes."""
    chained, before = {}, {}
    for name in STAGES:
        stage = STAGES.get(name)
        own = {name: getattr(config, name)} if stage.config else {}
        if stage.uses_model:
            own["model"] = config.model
        if stage.uses_backend:
            own["backend"] = config.backend
        # a step is stale when anything before it changed: each spec includes its predecessors'
        before = {**before, **own}
        chained[name] = config_json(before)
    return chained


def step_done(run: RunDir, name: str, spec: dict) -> bool:
    """Whether step ``name`` finished under ``spec`` (recorded as ``pipeline`` in the stage's
    manifest entry) and left its tables as it wrote them (:meth:`RunDir.verified`).

    A complete step whose table is damaged or changed raises the table's one-line error
    (delete it and run again) rather than silently redoing work.
    """
    record = run.manifest()["stages"].get(name, {})
    if record.get("pipeline") != spec or not run.verified(name):
        return False
    if name == "report":
        from kgfact.report import REPORT_FILES

        return all((run.path / f).exists() for f in REPORT_FILES)
    return True


def run_experiment(run: RunDir | str | Path, config: ExperimentConfig, *,
                   progress: bool = False, log: Callable[[str], None] = print,
                   wait: float | None = 0.0) -> dict[str, float | None]:
    """Run every step of ``config`` into ``run``, skipping finished ones.

    Returns the seconds each step took in this call (``None`` for a skipped step); the
    manifest's ``run`` stage keeps the seconds each step took when it last ran. ``log``
    receives one line per step. The run's lock is held throughout (:meth:`RunDir.writing`);
    ``wait`` is how long to wait for another process writing to it (None: as long as it
    takes) before a one-line error names that process.
    """
    run = RunDir.of(run)
    if config.threads is not None:
        import torch

        torch.set_num_threads(config.threads)
    specs = step_specs(config)
    call = StageCall(model=config.model, backend=config.backend, progress=progress)
    timings: dict[str, float | None] = {}
    with run.writing(wait), run.stage(STAGE, config_json(config)) as info:
        for name in STAGES:
            if step_done(run, name, specs[name]):
                timings[name] = None
                log(f"{name}: complete, skipped")
                continue
            stage = STAGES.get(name)
            started = time.time()
            stage.run(run, getattr(config, name, None), **call.options(stage))
            run.annotate(name, pipeline=specs[name])
            timings[name] = round(time.time() - started, 3)
            log(f"{name}: done in {timings[name]:.0f} s")
        # what each step took when it ran, so a resumed or repeated run keeps the record
        stages = run.manifest()["stages"]
        info["timings"] = {n: stages[n].get("seconds") for n in STAGES}
        info["skipped"] = [n for n, t in timings.items() if t is None]
    return timings
