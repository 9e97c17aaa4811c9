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
from contextlib import contextmanager
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


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so readers see the old or the new file, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def write_parquet(df: pd.DataFrame, path: Path) -> None:
    """Write ``df`` to ``path`` atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    df.to_parquet(tmp, index=False)
    os.replace(tmp, path)


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


class RunDir:
    """A run directory and its manifest.

    Parameters
    ----------
    path : str or Path
        The directory; created on first write.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    # -- manifest -------------------------------------------------------------------------------
    @property
    def manifest_path(self) -> Path:
        return self.path / MANIFEST

    def manifest(self) -> dict[str, Any]:
        """The manifest as a dict (a fresh one if the run has none yet)."""
        if not self.manifest_path.exists():
            return {"created": _now(), "stages": {}}
        try:
            return json.loads(self.manifest_path.read_text("utf-8"))
        except json.JSONDecodeError as exc:
            raise KgfactError(f"{self.manifest_path} is not valid JSON ({exc}); "
                              "fix or delete it") from None

    def _write_manifest(self, manifest: dict[str, Any]) -> None:
        text = json.dumps(manifest, indent=2, sort_keys=True, default=_jsonable)
        atomic_write_text(self.manifest_path, text + "\n")

    @contextmanager
    def stage(self, name: str, config: Any, seed: int | None = None) -> Iterator[dict[str, Any]]:
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

    def read_table(self, name: str) -> pd.DataFrame:
        """Read table ``name``; a missing table is a one-line error naming the stage to run."""
        path = self.table_path(name)
        if not path.exists():
            raise KgfactError(f"{path} does not exist: run the stage that writes {name!r} first "
                              f"(e.g. 'kgfact build --run {self.path}')")
        try:
            return pd.read_parquet(path)
        except Exception as exc:  # pyarrow raises several types for damaged files
            raise KgfactError(f"{path} cannot be read ({exc.__class__.__name__}: {exc}); "
                              "delete it and re-run its stage") from None

    def has_table(self, name: str) -> bool:
        return self.table_path(name).exists()


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
