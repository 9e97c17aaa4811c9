"""What a run will cost on this machine: measured rates, and the dry run's table.

The stages that generate or train record how fast they went, when they run, in
``$KGFACT_HOME/rates.json``: generations per second for SliCK and evaluation, training examples
per second for fine-tuning (the per-epoch checks included), one record per stage, model, device,
dtype and backend, the latest measurement replacing the one before (:func:`record_rate`, through
a :class:`Meter`). ``--dry-run`` (:mod:`kgfact.dryrun`) turns the work each stage will do into
time with those rates; without a record it uses :data:`DEFAULT_RATES` and says so.

This module imports no stage: the stages import it to record, the dry run to estimate.
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from kgfact.errors import KgfactError
from kgfact.locks import FileLock
from kgfact.paths import kgfact_home
from kgfact.rundir import atomic_write_text

RATES = "rates.json"
UNITS = {"slick": "generations", "evaluate": "generations", "finetune": "training examples"}
# used when this machine has no record: Gemma 3 270M in fp32 on two cores of an AVX2 CPU
# without AMX, measured by the benchmarks: SliCK's full protocol 56 gen/s
# (benchmarks/slick_lazy.py; samples share decoding, so they are cheap), evaluation 1.5 gen/s
# (benchmarks/evaluate_throughput.py, one engine: prompts of their own, long CoT answers) and
# LoRA 4 examples/s (benchmarks/lora_throughput.py, one adapter; per-epoch checks not included)
DEFAULT_RATES = {"slick": 56.0, "evaluate": 1.5, "finetune": 4.0}


def rates_path() -> Path:
    """``$KGFACT_HOME/rates.json``."""
    return kgfact_home() / RATES


def machine(model: Any, backend: str = "kgfact") -> dict[str, str]:
    """What a rate is recorded under: the model's name, the device and dtype it runs in
    (``"auto"`` resolved as loading it would, :func:`kgfact.models.pick_device_dtype`, which
    imports torch but loads nothing), and the backend. A device this machine lacks keeps the
    configured names (no rate is recorded under them)."""
    from kgfact.models import pick_device_dtype

    try:
        device, dtype = pick_device_dtype(model.device, model.dtype)
        device, dtype = device.type, str(dtype).removeprefix("torch.")
    except KgfactError:
        device, dtype = model.device, model.dtype
    return {"model": model.name, "device": device, "dtype": dtype, "backend": backend}


def _records(path: Path) -> list[dict]:
    """The records of ``path``; a missing file has none, and an unreadable one (it is only a
    cache of measurements) is ignored, saying so."""
    try:
        data = json.loads(path.read_text("utf-8"))
        records = data["rates"]
        if all(isinstance(r, dict) and isinstance(r.get("per_second"), (int, float))
               for r in records):
            return records
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
        pass
    print(f"kgfact: ignored {path}: not a rates file kgfact wrote", file=sys.stderr)
    return []


def record_rate(stage: str, model: Any, units: int, seconds: float,
                backend: str = "kgfact") -> None:
    """Record that ``stage`` did ``units`` of work (:data:`UNITS`) in ``seconds`` with
    ``model`` (a ModelConfig) on ``backend``, replacing the record of the same key.

    Written atomically under a lock, so stages in parallel keep each other's records. No work
    records nothing, and a cache that cannot be written is said on stderr, not raised: the
    stage's own work is done.
    """
    if units <= 0 or seconds <= 0:
        return
    path = rates_path()
    key = {"stage": stage, **machine(model, backend)}
    record = {**key, "unit": UNITS[stage], "per_second": round(units / seconds, 4),
              "units": int(units), "seconds": round(seconds, 3),
              "recorded": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    try:
        with FileLock(path.with_name(f".{RATES}.lock"), "the rates file").hold(wait=30):
            kept = [r for r in _records(path) if {k: r.get(k) for k in key} != key]
            atomic_write_text(path, json.dumps({"rates": [*kept, record]}, indent=1) + "\n")
    except KgfactError as exc:
        print(f"kgfact: the measured rate was not recorded: {exc}", file=sys.stderr)


class Meter:
    """Times a stage's work from its creation and records its rate (:func:`record_rate`):
    ``add`` the units done in this call (not those resumed from checkpoints), then
    ``record``."""

    def __init__(self, stage: str, model: Any, backend: Any = "kgfact") -> None:
        # a backend instance (tests, notebooks) is recorded by its class
        self.stage, self.model = stage, model
        self.backend = backend if isinstance(backend, str) else type(backend).__name__
        self.units, self.started = 0, time.perf_counter()

    def add(self, units: int) -> None:
        self.units += units

    def record(self) -> None:
        record_rate(self.stage, self.model, self.units, time.perf_counter() - self.started,
                    self.backend)


@dataclass(frozen=True)
class Rate:
    """A rate to estimate with."""

    per_second: float = field(metadata={"help": "Units per second."})
    source: str = field(metadata={"help": "'measured <date>' or 'default'."})


def rate_for(stage: str, key: dict[str, str]) -> Rate | None:
    """The rate recorded for ``stage`` under ``key`` (:func:`machine`), else the default; None
    for a stage that neither generates nor trains."""
    if stage not in DEFAULT_RATES:
        return None
    want = {"stage": stage, **key}
    for r in _records(rates_path()):
        if {k: r.get(k) for k in want} == want and r["per_second"] > 0:
            return Rate(float(r["per_second"]), f"measured {str(r.get('recorded', ''))[:10]}")
    return Rate(DEFAULT_RATES[stage], "default")


@dataclass(frozen=True)
class Work:
    """The work one stage will do, as the dry run shows it."""

    stage: str = field(metadata={"help": "The stage."})
    what: str = field(metadata={"help": "What it does, counted."})
    units: int | None = field(default=None, metadata={
        "help": "Generations or training examples (UNITS); None: no model work, or unknown."})
    at_most: bool = field(default=False, metadata={"help": "units is an upper bound."})
    estimated: bool = field(default=False, metadata={
        "help": "Counted from the config (its caps), the run having no data for it yet."})
    complete: bool = field(default=False, metadata={
        "help": "Already complete in the run directory: skipped, not in the total."})
    rate: Rate | None = field(default=None, metadata={"help": "The rate of its units."})

    @property
    def seconds(self) -> float | None:
        if self.units is None or self.rate is None:
            return None
        return self.units / self.rate.per_second


def duration(seconds: float) -> str:
    """``"45 s"``, ``"12.5 min"``, ``"3.2 h"``."""
    if seconds < 60:
        return f"{math.ceil(seconds)} s"
    return f"{seconds / 60:.1f} min" if seconds < 3600 else f"{seconds / 3600:.1f} h"


def unit(stage: str) -> str:
    """The unit of ``stage``'s rate, short: ``generations`` or ``examples``."""
    return UNITS[stage].split()[-1]


def table(works: list[Work]) -> str:
    """The dry run's table, one row per stage, the estimated total (of stages not complete) at
    the bottom."""
    rows = [("stage", "state", "work", "units", "rate", "time")]
    for w in works:
        bound = "≤ " if w.at_most else ""
        units = ("-" if w.stage not in UNITS else "?" if w.units is None
                 else f"{bound}{w.units:,} {unit(w.stage)}")
        rate = "-" if w.rate is None else f"{w.rate.per_second:g}/s ({w.rate.source})"
        spent = ("skipped" if w.complete else "-" if w.stage not in UNITS
                 else "?" if w.seconds is None else bound + duration(w.seconds))
        rows.append((w.stage, "complete" if w.complete else "to do",
                     w.what + (" *" if w.estimated else ""), units, rate, spent))
    todo = [w for w in works if not w.complete and w.stage in UNITS]
    known = [w.seconds for w in todo if w.seconds is not None]
    total = (duration(sum(known)) if known else "0 s") if len(known) == len(todo) else (
        f"{duration(sum(known))} + the unknown" if known else "unknown")
    bound = "≤ " if any(w.at_most for w in todo) else ""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(n) for c, n in zip(r, widths)).rstrip() for r in rows]
    skipped = sum(w.complete for w in works)
    lines.append(f"total: {bound}{total} of generation and training on this machine "
                 f"({skipped} of {len(works)} steps already complete; model loading and the "
                 "steps without a rate are not in it)")
    if any(w.estimated for w in works):
        lines.append("* estimated from the config: the run has no data for it yet; ≤ is a cap")
    return "\n".join(lines)
