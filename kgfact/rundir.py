"""A run is a directory: a manifest plus Parquet tables, read and written by every stage.

Tables are written atomically (temporary file, then rename), so a crash never leaves a half
written table behind; the manifest records config, package versions, git hash, seeds and the
status and timing of every stage, so any stage can be resumed or re-run alone.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, is_dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd

from kgfact.errors import KgfactError

MANIFEST = "manifest.json"
_PACKAGES = ("kgfact", "pandas", "pyarrow", "networkx", "rdflib", "SPARQLWrapper", "pyoxigraph",
             "oxigraph", "torch", "transformers", "peft")


@contextmanager
def _atomic(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; renamed onto ``path`` when the body ends.

    A place that cannot be written (a file where a folder should be, no permission, a full
    disk) is a one-line :class:`KgfactError` naming it.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        os.replace(tmp, path)
    except OSError as exc:
        with suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise KgfactError(f"cannot write {path}: {exc.strerror or exc}") from None


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so readers see the old or the new file, never half of one."""
    with _atomic(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())


def write_parquet(df: pd.DataFrame, path: Path) -> None:
    """Write ``df`` to ``path`` atomically."""
    with _atomic(path) as tmp:
        df.to_parquet(tmp, index=False)


def _git_hash() -> str | None:
    root = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def _versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return found


def _jsonable(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return asdict(value)
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def config_json(*parts: Any, **named: Any) -> Any:
    """A config (dataclass, dict, tuple...) in the JSON form the manifest stores, so a stored
    and a fresh config compare equal: ``config_json(cfg)`` or ``config_json(slick=cfg,
    model=model)`` for a dict of several."""
    value = parts[0] if parts and not named else named
    return json.loads(json.dumps(value, default=_jsonable))


class Checkpoints:
    """Finished pieces of a stage's work, kept until the stage completes.

    A stage that works through chunks (SliCK's question chunks, evaluation's model/mode jobs)
    saves each piece as it finishes; a killed stage resumes with the saved ones. The folder is
    keyed by a digest of the stage's config, so pieces of another configuration are never mixed
    in.
    """

    def __init__(self, run: RunDir, stage: str, spec: Any) -> None:
        import hashlib

        digest = hashlib.sha256(json.dumps(config_json(spec), sort_keys=True).encode())
        self.path = run.path / "checkpoints" / f"{stage}-{digest.hexdigest()[:12]}"

    def _file(self, key: str) -> Path:
        return self.path / f"{key.replace('/', '_')}.parquet"

    def load(self, key: str) -> pd.DataFrame | None:
        """The saved piece ``key``, or None if it has not finished."""
        path = self._file(key)
        return pd.read_parquet(path) if path.exists() else None

    def save(self, key: str, piece: pd.DataFrame) -> None:
        write_parquet(piece, self._file(key))

    def clear(self) -> None:
        """Drop every piece (the stage's tables now hold them)."""
        import shutil

        shutil.rmtree(self.path, ignore_errors=True)


class RunDir:
    """A run directory and its manifest.

    Parameters
    ----------
    path : str or Path
        The directory; created on first write.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        if self.path.exists() and not self.path.is_dir():
            raise KgfactError(f"{self.path} is a file, not a run directory")

    @classmethod
    def of(cls, run: RunDir | str | os.PathLike[str]) -> RunDir:
        """``run`` as a :class:`RunDir` (a path is wrapped, a RunDir returned as it is)."""
        return run if isinstance(run, RunDir) else cls(run)

    def create(self) -> RunDir:
        """Make the directory now (a one-line error if it cannot be), so a command finds out
        before it starts long work."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise KgfactError(f"cannot create run directory {self.path}: "
                              f"{exc.strerror or exc}") from None
        return self

    # -- manifest -------------------------------------------------------------------------------
    @property
    def manifest_path(self) -> Path:
        return self.path / MANIFEST

    def manifest(self) -> dict[str, Any]:
        """The manifest as a dict (a fresh one if the run has none yet)."""
        if not self.manifest_path.exists():
            return {"created": _now(), "stages": {}}
        try:
            manifest = json.loads(self.manifest_path.read_text("utf-8"))
        except OSError as exc:
            raise KgfactError(f"cannot read {self.manifest_path}: {exc.strerror}") from None
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise KgfactError(f"{self.manifest_path} is not valid JSON ({exc}); "
                              "fix or delete it") from None
        stages = manifest.get("stages", {}) if isinstance(manifest, dict) else None
        if not isinstance(stages, dict) or not all(isinstance(s, dict) for s in stages.values()):
            raise KgfactError(f"{self.manifest_path} is not a kgfact manifest (a JSON object "
                              "whose 'stages' maps names to objects); fix or delete it")
        return manifest

    def _write_manifest(self, manifest: dict[str, Any]) -> None:
        text = json.dumps(manifest, indent=2, sort_keys=True, default=_jsonable)
        atomic_write_text(self.manifest_path, text + "\n")

    @contextmanager
    def stage(self, name: str, config: Any, seed: int | list[int] | None = None
              ) -> Iterator[dict[str, Any]]:
        """Record a stage: config, seed, versions, git hash, timing and outcome.

        The body receives a dict it may fill with results to keep in the manifest (counts,
        output names); the stage is marked ``complete`` only if the body returns normally.
        """
        manifest = self.manifest()
        info: dict[str, Any] = {}
        started = time.time()
        manifest.setdefault("stages", {})[name] = {
            "status": "running", "started": _now(), "config": config, "seed": seed,
            "versions": _versions(), "git": _git_hash(), "argv": sys.argv,
        }
        self._write_manifest(manifest)
        try:
            yield info
        except BaseException:
            manifest = self.manifest()
            manifest["stages"][name]["status"] = "failed"
            self._write_manifest(manifest)
            raise
        manifest = self.manifest()
        manifest["stages"][name].update(
            status="complete", finished=_now(), seconds=round(time.time() - started, 3), **info)
        self._write_manifest(manifest)

    def annotate(self, name: str, **values: Any) -> None:
        """Add ``values`` to stage ``name``'s manifest entry (the pipeline records there the
        chained config the stage ran under)."""
        manifest = self.manifest()
        manifest["stages"].setdefault(name, {}).update(values)
        self._write_manifest(manifest)

    def stage_status(self, name: str) -> str | None:
        """``'complete'``, ``'running'``, ``'failed'`` or ``None`` if the stage never ran."""
        return self.manifest().get("stages", {}).get(name, {}).get("status")

    # -- tables ---------------------------------------------------------------------------------
    def table_path(self, name: str) -> Path:
        return self.path / f"{name}.parquet"

    def write_table(self, name: str, df: pd.DataFrame) -> Path:
        """Write table ``name`` atomically and return its path."""
        path = self.table_path(name)
        write_parquet(df, path)
        return path

    def read_table(self, name: str, check_columns: bool = False) -> pd.DataFrame:
        """Read table ``name``; a missing table is a one-line error naming the stage to run.

        ``check_columns`` also requires the columns :data:`kgfact.stages.COLUMNS` lists for it.
        """
        path = self.table_path(name)
        if not path.exists():
            from kgfact.stages import writer_of

            stage = writer_of(name)
            hint = (f"run 'kgfact {stage.name}' first, the stage that writes it" if stage
                    else "no stage writes it")
            raise KgfactError(f"{path} does not exist: {hint}")
        try:
            table = pd.read_parquet(path)
        except Exception as exc:  # pyarrow raises several types for damaged files
            raise KgfactError(f"{path} cannot be read ({exc.__class__.__name__}: {exc}); "
                              "delete it and re-run its stage") from None
        if check_columns:
            from kgfact.stages import COLUMNS

            missing = [c for c in COLUMNS.get(name, ()) if c not in table.columns]
            if missing:
                raise KgfactError(f"{path} has no {', '.join(missing)} column(s)")
        return table

    def has_table(self, name: str) -> bool:
        return self.table_path(name).exists()


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
