"""kgfact as a library: run a study and read its run directory from Python.

>>> import kgfact
>>> run = kgfact.run("smoke", overrides={"slick.sampling.n_samples": 2})  # doctest: +SKIP
>>> run.status()["report"]                                                 # doctest: +SKIP
'complete'
>>> kgfact.open_run("runs/smoke").table("accuracy")                        # doctest: +SKIP

:func:`run` is what ``kgfact run`` does (the same resumable run directory, the same one-line
errors); :func:`open_run` reads a run any command or :func:`run` made, while it is written too
(readers take no lock, :mod:`kgfact.rundir`).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from kgfact.config import show
from kgfact.errors import KgfactError
from kgfact.pipeline import load_config, run_experiment
from kgfact.rundir import _TABLE_NAME, RunDir
from kgfact.stages import STAGES, writer_of

RUNS = Path("runs")  # where a run goes when no run directory is given: runs/<config name>


def _log(line: str) -> None:
    print(f"kgfact run: {line}", file=sys.stderr)


def run(config_or_preset: str | os.PathLike[str], run_dir: str | os.PathLike[str] | None = None,
        overrides: Mapping[str, Any] | Iterable[str] | None = None, progress: bool = True, *,
        wait: float | None = 0.0, log: Callable[[str], None] = _log) -> Run:
    """Run a whole study, as ``kgfact run``: every step not already complete in ``run_dir``.

    Parameters
    ----------
    config_or_preset : str or path
        A TOML config file or a preset's name (``"smoke"``, ``"quickstart"``...).
    run_dir : str or path, optional
        The run directory; default ``runs/<config name>`` in the current directory. Running
        again into the same directory resumes it (finished steps are skipped).
    overrides : mapping or iterable of str, optional
        Config keys to set, by dotted path: ``{"slick.sampling.n_samples": 2,
        "build.qa.in_distribution": ["P36", "P17"]}``, or ``"KEY=VALUE"`` texts as ``--set``
        takes them (:func:`kgfact.pipeline.apply_overrides`).
    progress : bool
        Show progress bars.
    wait : float or None
        Seconds to wait for another process writing to ``run_dir`` (None: as long as it takes).
    log : callable
        Receives one line per step (default: printed to stderr).

    Returns
    -------
    Run
        The finished run.

    Raises
    ------
    KgfactError
        One line, on a bad config or override, a run directory in use, or a stage's error
        (the run stays resumable).
    """
    config = load_config(config_or_preset, overrides or ())
    path = RunDir(run_dir if run_dir is not None else RUNS / Path(config_or_preset).stem).create()
    run_experiment(path, config, progress=progress, wait=wait, log=log)
    return Run(path.path)


def open_run(path: str | os.PathLike[str]) -> Run:
    """The run directory at ``path``, to read (:class:`Run`).

    Raises
    ------
    KgfactError
        One line, if ``path`` is no kgfact run (no manifest) or its manifest is damaged.
    """
    return Run(path)


class Run:
    """A run directory, read: its manifest, each stage's status, its tables.

    Every call reads the directory afresh, so a run being written shows its progress.

    Parameters
    ----------
    path : str or path
        The run directory (made by ``kgfact run``, ``kgfact build`` or :func:`run`).

    Raises
    ------
    KgfactError
        One line, if ``path`` is no kgfact run or its manifest cannot be read.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._dir = RunDir(path).require_manifest()
        self._dir.manifest()  # a damaged manifest is the error now, not at the first read

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"

    @property
    def path(self) -> Path:
        """The run directory."""
        return self._dir.path

    @property
    def manifest(self) -> dict[str, Any]:
        """The manifest (``manifest.json``): each stage's config, versions, timing, tables."""
        return self._dir.manifest()

    def status(self) -> dict[str, str]:
        """Each pipeline step's status, in order (``complete``, ``running``, ``interrupted``:
        recorded as running by no live process, ``failed`` or ``not run``), then ``run``'s
        (the whole study) if ``kgfact run`` ran on it."""
        states = self._dir.states()
        steps = {name: states.get(name) or "not run" for name in STAGES}
        return {**steps, **{name: state for name, state in states.items()
                            if name not in steps and state}}

    def tables(self) -> list[str]:
        """The names of the run's tables, stage by stage in pipeline order: those the stage
        catalogue names, then those the stage recorded writing (a fine-tuning set's own table,
        ``ftsets/<set>``)."""
        entries = self.manifest["stages"]
        names = [t for name in STAGES for t in (*STAGES.get(name).writes,
                                                 *STAGES.get(name).optional,
                                                 *(entries.get(name, {}).get("tables") or {}))]
        return [t for t in dict.fromkeys(names) if self._dir.has_table(t)]

    def table(self, name: str) -> pd.DataFrame:
        """Table ``name`` (one of :meth:`tables`) as a DataFrame.

        Raises
        ------
        KgfactError
            One line: for a table the run lacks, the command that writes it and the tables the
            run has; for a damaged table, that it is.
        """
        if not (isinstance(name, str) and _TABLE_NAME.fullmatch(name) and writer_of(name)):
            raise KgfactError(f"no kgfact stage writes a table {show(name)}; {self.path} has "
                              f"{self._have()}")
        try:
            return self._dir.read_table(name)
        except KgfactError as exc:
            if self._dir.has_table(name):  # there, but damaged: its own message says so
                raise
            raise KgfactError(f"{exc}; {self.path} has {self._have()}") from None

    def findings(self) -> pd.DataFrame:
        """The ``findings`` table: each claim of the study with its estimate, 95 % interval and
        verdict (written by ``kgfact report``, the last step of ``kgfact run``)."""
        return self.table("findings")

    def _have(self) -> str:
        have = self.tables()
        return f"tables {', '.join(have)}" if have else "no tables yet"
