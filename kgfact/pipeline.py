"""``kgfact run``: a whole study from one TOML config, resumable stage by stage.

A config file has one section per stage with a config (``[build]`` with ``[build.qa]``,
``[slick]``, ``[ftsets]``, ``[finetune]``, ``[evaluate]``, ``[theory]``, and that of any stage
registered in :data:`kgfact.stages.STAGES`) plus ``[model]``, ``[backend]`` and ``[store]``;
:func:`load_config` sets any overrides (``kgfact run --set section.key=value``,
:func:`apply_overrides`) and maps it onto ``ExperimentConfig`` (:func:`experiment_config`, made
from the registry) with :func:`kgfact.config.from_dict`, the one TOML-to-dataclass converter
(nested dataclasses, tuples from lists, type checks, unknown keys named with the valid ones).

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

import copy
import re
import sys
import time
import tomllib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import field, fields, make_dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kgfact.config import check_fields, from_dict, show, show_toml
from kgfact.data.store import StoreConfig, configured
from kgfact.errors import KgfactError
from kgfact.findings import claim_names
from kgfact.models import ModelConfig
from kgfact.registration import Registration, check_unchanged
from kgfact.registry import load_target
from kgfact.rundir import RunDir, config_json
from kgfact.sampling import BackendConfig
from kgfact.stages import STAGES, StageCall

if TYPE_CHECKING:
    ExperimentConfig = Any  # a class made from the registry: experiment_config()

STAGE = "run"


# -- the config: one table per registered stage ------------------------------------------------
def _shared_fields() -> list[tuple[str, Any, Any]]:
    """The sections of a run config that are no stage's, after the stages' (fresh fields: a
    dataclass takes its fields over)."""
    return [
        ("model", ModelConfig, field(default_factory=ModelConfig, metadata={
            "help": "The base model every stage uses."})),
        ("backend", BackendConfig, field(default_factory=BackendConfig, metadata={
            "help": "Generation engine for SliCK and evaluation."})),
        ("store", StoreConfig, field(default_factory=StoreConfig, metadata={
            "help": "The embedded SPARQL store a build without an endpoint starts (if it is not "
                    "running) and queries: its location and port. It keeps running after the "
                    "run."})),
        ("threads", int | None, field(default=None, metadata={"min": 1, "max": 1024,
            "help": "torch CPU threads; 1 keeps a shared CPU from stalling torch's thread "
                    "pool."})),
        ("description", str, field(default="", metadata={
            "help": "One line saying what the config runs ('kgfact presets' shows the "
                    "presets')."})),
    ]


def _registering(config: Any) -> Iterator[tuple[str, Any]]:
    """The tables of run config ``config`` that register claims (``[evaluate.registration]``),
    by name."""
    for section in fields(config):
        value = getattr(config, section.name)
        if isinstance(getattr(value, "registration", None), Registration):
            yield section.name, value


def _check_experiment(self: Any) -> None:
    check_fields(self)
    for _, section in _registering(self):  # registered claims are claims of the findings
        section.registration.check_claims(claim_names())


@cache
def _experiment_class(sections: tuple[tuple[str, str, str, bool], ...]) -> type:
    stages = [(name, load_target(config),
               field(metadata={"help": help}) if required else
               field(default_factory=load_target(config), metadata={"help": help}))
              for name, config, help, required in sections]
    return make_dataclass(
        "ExperimentConfig", stages + _shared_fields(), frozen=True, kw_only=True,
        namespace={"__post_init__": _check_experiment, "__module__": __name__,
                   "__doc__": "A whole study: one section per stage."})


def experiment_config() -> type:
    """``ExperimentConfig``, the dataclass of a whole study, for the stages registered now: a
    field per stage with a config (its table of a run config, named as the stage, its help the
    stage's; required if the stage says so), then ``model``, ``backend``, ``store``, ``threads``
    and ``description``. The same registered stages give the same class."""
    return _experiment_class(tuple((stage.name, stage.config, stage.help, stage.required)
                                   for stage in map(STAGES.get, STAGES) if stage.config))


def __getattr__(name: str) -> Any:
    # ExperimentConfig follows the registry: a stage registered after this module was imported
    # has its table in it too
    if name == "ExperimentConfig":
        return experiment_config()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# -- overrides: kgfact run --set section.key=value -------------------------------------------
_KEY = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*")  # TOML's bare keys, dotted


def parse_override(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` (a ``--set``) as ``(KEY, value)``: the value read as a TOML value (``2``,
    ``"x"``, ``["P36", "P17"]``, ``true``), or as a string where the text is not one TOML
    value (``ray``, ``/data/eq``, ``google/gemma-3-270m``).

    Raises
    ------
    KgfactError
        One line, if ``text`` has no ``=`` (:func:`apply_overrides` checks the key).
    """
    key, equals, value = text.partition("=")
    if not equals:
        raise KgfactError(f"--set {show(text)} is not KEY=VALUE (such as "
                          "--set slick.sampling.n_samples=2)")
    try:
        parsed = tomllib.loads(f"v = {value}")
    except (ValueError, RecursionError):  # not TOML (TOMLDecodeError is a ValueError)
        return key.strip(), value
    # "1\n[x]" parses to more than the one value: a string, as any other non-TOML text
    return key.strip(), parsed["v"] if parsed.keys() == {"v"} else value


def _check_key(key: Any) -> None:
    if not (isinstance(key, str) and _KEY.fullmatch(key)):
        raise KgfactError(f"cannot set {show(key)}: a config key is a dotted path of names "
                          "(letters, digits, _ and -), such as slick.sampling.n_samples")


def apply_overrides(data: dict[str, Any], overrides: Mapping[str, Any] | Iterable[str]
                    ) -> dict[str, Any]:
    """``data`` (a parsed TOML config) with each dotted key of ``overrides`` set to its value,
    tables made where missing; ``data`` itself is not changed.

    Parameters
    ----------
    data : dict
        The config as :func:`tomllib.loads` returns it.
    overrides : mapping, str or iterable of str
        ``{"slick.sampling.n_samples": 2, ...}`` (values as TOML would give them: lists,
        numbers, strings, booleans; tuples too), or ``KEY=VALUE`` texts read by
        :func:`parse_override`. Later ones win.

    Raises
    ------
    KgfactError
        One line, on a malformed override or a key that would go through a value that is not a
        table; wrong keys and values are left to :func:`from_dict`, which names them as it
        does a TOML file's.
    """
    if isinstance(overrides, str):  # one KEY=VALUE, not its characters
        overrides = [overrides]
    pairs = (overrides.items() if isinstance(overrides, Mapping)
             else map(parse_override, overrides))
    data = copy.deepcopy(data)
    for key, value in pairs:
        _check_key(key)
        *parents, leaf = key.split(".")
        node = data
        for depth, name in enumerate(parents):
            node = node.setdefault(name, {})
            if not isinstance(node, dict):
                raise KgfactError(f"cannot set {key}: {'.'.join(parents[:depth + 1])} is "
                                  f"{show_toml(node)}, not a table")
        node[leaf] = value
    return data


def presets_dir() -> Path:
    """The presets' folder: ``configs/``, packaged inside ``kgfact`` in a wheel, beside it in a
    checkout (the repository's folder is the one copy; the wheel carries it)."""
    package = Path(__file__).resolve().parent
    packaged = package / "configs"
    return packaged if packaged.is_dir() else package.parent / "configs"


def presets() -> dict[str, Path]:
    """The preset configs by name (``kgfact run NAME``), in name order."""
    return {path.stem: path for path in sorted(presets_dir().glob("*.toml"))}


def find_config(config: str | Path) -> Path:
    """The file ``config`` names: a path to a file, else a preset's name (a file of that name
    wins; a folder does not).

    Raises
    ------
    KgfactError
        If it is neither, listing the presets.
    """
    path, named = Path(config), presets()
    try:
        there = path.exists()
    except OSError:  # a name the file system refuses (too long...): reading it says why
        return path
    if str(config) in named and not (there and path.is_file()):
        return named[str(config)]
    if not there:
        raise KgfactError(f"no config file or preset {show(str(config))}; the presets are "
                          f"{', '.join(named)} ('kgfact presets' says what each runs)")
    return path


# a preset's header comment states the time it took as "measured: 29.0 min"
_MEASURED = re.compile(r"^#.*\bmeasured: (\d+(?:\.\d+)? (?:s|min|h))\b", re.MULTILINE)


def describe_preset(path: Path) -> str:
    """One line for ``kgfact presets``: the config's ``description``, and the time its header
    comment states as measured, if it states one."""
    measured = _MEASURED.search(path.read_text("utf-8"))
    return load_config(path).description + (f" (measured: {measured[1]})" if measured else "")


def load_config(config: str | Path, overrides: Mapping[str, Any] | Iterable[str] = ()
                ) -> ExperimentConfig:
    """Read and validate a TOML experiment config, given as a path or a preset's name
    (:func:`find_config`), with ``overrides`` (:func:`apply_overrides`) set before it is
    checked; every problem is a one-line KgfactError."""
    path = find_config(config)
    try:
        text = path.read_text("utf-8")
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
    data = apply_overrides(data, overrides)
    try:
        return from_dict(experiment_config(), data)
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
    return (record.get("pipeline") == spec and run.verified(name)
            and all((run.path / f).exists() for f in STAGES.get(name).files))


def run_experiment(run: RunDir | str | Path, config: ExperimentConfig, *,
                   progress: bool = False, log: Callable[[str], None] = print,
                   wait: float | None = 0.0) -> dict[str, float | None]:
    """Run every step of ``config`` into ``run``, skipping finished ones.

    Returns the seconds each step took in this call (``None`` for a skipped step); the
    manifest's ``run`` stage keeps the seconds each step took when it last ran. ``log``
    receives one line per step. The run's lock is held throughout (:meth:`RunDir.writing`);
    ``wait`` is how long to wait for another process writing to it (None: as long as it
    takes) before a one-line error names that process. The build starts and queries the
    embedded store ``config.store`` names (when it has no endpoint); the store keeps running.
    """
    run = RunDir.of(run)
    if config.threads is not None:
        import torch

        torch.set_num_threads(config.threads)
    specs = step_specs(config)
    call = StageCall(model=config.model, backend=config.backend, progress=progress)
    timings: dict[str, float | None] = {}
    with run.writing(wait), run.stage(STAGE, config_json(config)) as info, \
            configured(config.store):
        for name, section in _registering(config):  # claims stay as evaluated under them
            done = run.manifest()["stages"].get(name, {})
            if done.get("status") == "complete" and "registration" in done:
                check_unchanged(done["config"][name], config_json(**{name: section})[name],
                                str(run.path))
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
