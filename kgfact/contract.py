"""The run's contract: what one stage of a run leaves and another reads, named once.

The stages (:mod:`kgfact.build`, :mod:`~kgfact.slick`, :mod:`~kgfact.ftsets`,
:mod:`~kgfact.finetune`, :mod:`~kgfact.evaluate`, :mod:`kgfact.theory.stage`,
:mod:`~kgfact.findings`, :mod:`~kgfact.report`) are peers: none imports another (the report
alone reads the findings), an import-linter contract in ``pyproject.toml`` holds them to it.
What they share is here: SliCK's categories and the protocol a run was labelled under, the
fine-tuning sets' names and tables, where adapters live and which trainings finished, and the
memorised-answer rule. Reading a stage's manifest entry (its recorded config and status) is
:class:`~kgfact.rundir.RunDir`'s; which tables each stage reads and writes is
:data:`kgfact.stages.STAGES`'.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from kgfact.answers import normalize
from kgfact.config import check_name
from kgfact.errors import KgfactError
from kgfact.rundir import RunDir

# -- SliCK ---------------------------------------------------------------------------------------
CATEGORIES = ("HighlyKnown", "MaybeKnown", "WeaklyKnown", "Unknown")


def recorded_protocol(spec: dict[str, Any]) -> str:
    """The protocol, ``"full"`` or ``"lazy"``, of a SliCK stage's recorded config ``spec``
    (``"full"`` for one recorded before the protocol could be chosen)."""
    return (spec.get("slick") or {}).get("protocol", "full")


def protocol_of(run: RunDir) -> str:
    """The protocol of ``run``'s SliCK table, ``"full"`` or ``"lazy"`` (``"full"`` when it was
    labelled before the protocol could be chosen, or not yet)."""
    return recorded_protocol(run.stage_config("slick") or {})


# -- fine-tuning sets ------------------------------------------------------------------------------
def mixture_name(share: float) -> str:
    """The fine-tuning set with Unknown share ``share``: ``ft-known`` for 0, ``ft-unknown`` for
    1, else ``mix-<percent>``.

    >>> [mixture_name(x) for x in (0.0, 0.25, 1.0)]
    ['ft-known', 'mix-25', 'ft-unknown']
    """
    return {0.0: "ft-known", 1.0: "ft-unknown"}.get(share, f"mix-{round(100 * share)}")


def read_set(run: RunDir, name: str) -> pd.DataFrame:
    """Fine-tuning set ``name`` of ``run`` (one-line error naming the sets there are)."""
    check_name(name, "fine-tuning set")
    if not run.has_table(f"ftsets/{name}"):
        have = run.read_table("ftsets")["set"].tolist() if run.has_table("ftsets") else []
        raise KgfactError(f"{run.path} has no fine-tuning set {name!r}"
                          + (f" (it has {', '.join(have)})" if have else
                             ": run 'kgfact ftsets' first"))
    return run.read_table(f"ftsets/{name}")


# -- adapters ------------------------------------------------------------------------------------
CHECKPOINTS = ("early_stop", "convergence")


def seed_home(run: RunDir, set_name: str, seed: int) -> Path:
    """Where everything trained on ``set_name`` under training ``seed`` lives."""
    check_name(set_name, "fine-tuning set")
    return run.path / "adapters" / set_name / f"seed-{int(seed)}"


def adapter_dir(run: RunDir, set_name: str, checkpoint: str, seed: int = 0) -> Path:
    """Where the adapter of ``set_name`` at ``checkpoint`` (early_stop / convergence) trained
    under ``seed`` lives."""
    return seed_home(run, set_name, seed) / checkpoint


def trained_sets(run: RunDir) -> list[tuple[str, int]]:
    """(set, seed) pairs of ``run`` whose training finished (both checkpoints saved)."""
    home = run.path / "adapters"
    found = home.glob("*/seed-*/convergence") if home.is_dir() else []
    return sorted((p.parent.parent.name, int(p.parent.name.removeprefix("seed-")))
                  for p in found)


# -- answers -------------------------------------------------------------------------------------
def memorised(answers: list[str | None], trained: list[str]) -> np.ndarray:
    """Whether each answer is one of the model's own fine-tuning answers ``trained`` (after
    answer normalisation): a model that collapsed onto its training set answers new questions
    with old answers. Its mean is the *memorised-answer rate*.

    >>> memorised(["Paris", "the Lima", "Quito", ""], ["Lima", "Paris"]).tolist()
    [True, True, False, False]
    """
    known = {normalize(a) for a in trained}
    return np.array([isinstance(a, str) and normalize(a) in known for a in answers], dtype=bool)
