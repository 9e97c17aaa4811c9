"""A run is a directory: a manifest plus Parquet tables, read and written by every stage.

Tables are written atomically and durably (temporary file, fsync, rename, fsync of the folder),
so neither a crash nor a power cut leaves a half-written table behind; the manifest records
config, package versions, git hash, seeds and the status and timing of every stage, and the
size and SHA-256 of every table a stage wrote, so any stage can be resumed or re-run alone and a
resume trusts only tables that are as they were written.

One process writes to a run at a time: every writer holds the run's lock (``<run>/.lock``, a
:class:`~kgfact.locks.FileLock`) for as long as it works, checks included; readers take none.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, is_dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import IO, Any

import pandas as pd

from kgfact.errors import KgfactError
from kgfact.locks import FileLock

MANIFEST = "manifest.json"
LOCK = ".lock"
_PACKAGES = ("kgfact", "pandas", "pyarrow", "networkx", "rdflib", "pyoxigraph",
             "oxigraph", "torch", "transformers", "peft")


@contextmanager
def _atomic(path: Path, mode: str = "wb", **kw: Any) -> Iterator[IO]:
    """A file beside ``path`` to write to; when the body ends it is flushed to the disk and
    renamed onto ``path`` (and the rename made durable), so readers see the old or the new
    file, never half of one, even after a power cut.

    A place that cannot be written (a file where a folder should be, no permission, a full
    disk) is a one-line :class:`KgfactError` naming ``path``; the temporary file is removed.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, mode, **kw) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())  # a full disk often refuses only here
        os.replace(tmp, path)
        folder = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)  # the rename itself
        finally:
            os.close(folder)
    except BaseException as exc:
        with suppress(OSError):
            tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise KgfactError(f"cannot write {path}: {exc.strerror or exc}") from None
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically and durably (:func:`_atomic`)."""
    with _atomic(path, "w", encoding="utf-8") as fh:
        fh.write(text)


def write_parquet(df: pd.DataFrame, path: Path) -> None:
    """Write ``df`` to ``path`` atomically and durably (:func:`_atomic`)."""
    with _atomic(path) as fh:
        df.to_parquet(fh, index=False)


def read_parquet(path: Path) -> pd.DataFrame:
    """Read the Parquet file at ``path`` (through an open file: pyarrow takes no path that is
    not valid UTF-8)."""
    with open(path, "rb") as fh:
        return pd.read_parquet(fh)


def load_piece(path: Path) -> pd.DataFrame | None:
    """The checkpointed piece of work at ``path``, or None if there is none to use.

    An unreadable piece (zero bytes or damaged: what a crash before its data reached the disk
    leaves) is deleted, saying so on stderr, so the work is done again.
    """
    try:
        return read_parquet(path)
    except FileNotFoundError:
        return None
    except Exception:  # pyarrow raises several types for damaged files
        print(f"kgfact: discarded unreadable checkpoint {path}; redoing its work",
              file=sys.stderr)
        with suppress(OSError):
            path.unlink()
        return None


def _fingerprint(path: Path) -> dict[str, Any]:
    """Size and SHA-256 of the file at ``path``: what a table's record keeps."""
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
            size += len(block)
    return {"bytes": size, "sha256": digest.hexdigest()}


def _git_hash(package: Path = Path(__file__).resolve().parent) -> str | None:
    """The commit of kgfact's own checkout that ``package`` (the imported kgfact) is, or None.

    Only when ``package`` is the ``kgfact`` folder at the root of a git work tree whose
    ``pyproject.toml`` names the project kgfact: kgfact installed inside another project's
    repository (a virtualenv in it) would otherwise record that project's commit. The manifest
    records the installed version either way (:func:`_versions`).
    """
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(package), *args], capture_output=True,
                              text=True, timeout=10, check=True).stdout.strip()

    try:
        root = Path(git("rev-parse", "--show-toplevel")).resolve()
        project = tomllib.loads((root / "pyproject.toml").read_text("utf-8")).get("project")
        if root / "kgfact" != package or not (isinstance(project, dict)
                                               and project.get("name") == "kgfact"):
            return None
        return git("rev-parse", "HEAD") or None
    except (OSError, subprocess.SubprocessError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return None


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
        digest = hashlib.sha256(json.dumps(config_json(spec), sort_keys=True).encode())
        self.path = run.path / "checkpoints" / f"{stage}-{digest.hexdigest()[:12]}"

    def _file(self, key: str) -> Path:
        return self.path / f"{key.replace('/', '_')}.parquet"

    def load(self, key: str) -> pd.DataFrame | None:
        """The saved piece ``key``, or None if it has not finished (or cannot be read: it is
        deleted and done again, :func:`load_piece`)."""
        return load_piece(self._file(key))

    def save(self, key: str, piece: pd.DataFrame) -> None:
        write_parquet(piece, self._file(key))

    def clear(self) -> None:
        """Drop every piece (the stage's tables now hold them)."""
        import shutil

        shutil.rmtree(self.path, ignore_errors=True)


# the tables each stage this process is recording has written so far (innermost stage last), per
# run directory: where write_table records them, whichever RunDir object of the run writes
_recording: dict[Path, list[dict[str, Any]]] = {}

# the fields of a manifest's stage entries kgfact relies on: the JSON types they may have
_ENTRY_FIELDS = {"status": ((str,), "a string"), "seconds": ((int, float), "a number"),
                 "config": ((dict, type(None)), "an object or null"),
                 "report": ((dict,), "an object"), "pipeline": ((dict,), "an object"),
                 "tables": ((dict,), "an object")}
_TABLE_NAME = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?", re.ASCII)


class RunDir:
    """A run directory and its manifest.

    Parameters
    ----------
    path : str or Path
        The directory; created on first write. Its path must be valid UTF-8 (it is written
        into manifests, tables and reports).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        try:
            str(self.path).encode("utf-8")
        except UnicodeEncodeError:  # bytes the file system gave back as surrogates
            shown = os.fsencode(self.path).decode("utf-8", "backslashreplace")
            raise KgfactError(f"run directory {shown}: its name is not valid UTF-8; rename it "
                              "(kgfact writes run paths into manifests, tables and reports)"
                              ) from None
        if self.path.exists() and not self.path.is_dir():
            raise KgfactError(f"{self.path} is a file, not a run directory")
        self._key = self.path.absolute()

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

    # -- one writer -----------------------------------------------------------------------------
    @property
    def lock(self) -> FileLock:
        """The run's lock, held by whoever writes to it (:meth:`writing`)."""
        return FileLock(self.path / LOCK, f"run directory {self.path}")

    @contextmanager
    def writing(self, wait: float | None = 0.0) -> Iterator[RunDir]:
        """Hold the run's lock for the body: one writer per run directory.

        Every stage holds it from its first check to its last write
        (:meth:`kgfact.stages.Stage.run`; :meth:`stage` takes it too, for code that calls a
        stage's function directly), ``kgfact run`` for the whole study. Re-entrant within a
        process.

        Parameters
        ----------
        wait : float or None
            Seconds to wait for another writer to finish (None: as long as it takes).

        Raises
        ------
        KgfactError
            If another process still holds the run after ``wait``: names it (process id,
            command line, since when).
        """
        with self.lock.hold(wait):
            yield self

    # -- manifest -------------------------------------------------------------------------------
    @property
    def manifest_path(self) -> Path:
        return self.path / MANIFEST

    def manifest(self) -> dict[str, Any]:
        """The manifest as a dict (a fresh one if the run has none yet).

        Raises
        ------
        KgfactError
            One line, if it cannot be read, is not JSON, is nested too deeply, or is not a
            kgfact manifest: an object whose ``stages`` maps names to objects, in which the
            fields kgfact relies on have their types (``status`` a string, ``seconds`` a
            number, ``report`` an object, each table record sizes and a digest...).
        """
        if not self.manifest_path.exists():
            return {"created": _now(), "stages": {}}
        try:
            manifest = json.loads(self.manifest_path.read_text("utf-8"))
        except OSError as exc:
            raise KgfactError(f"cannot read {self.manifest_path}: {exc.strerror}") from None
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise KgfactError(f"{self.manifest_path} is not valid JSON ({exc}); "
                              "fix or delete it") from None
        except RecursionError:
            raise KgfactError(f"{self.manifest_path} is nested too deeply to be a kgfact "
                              "manifest; fix or delete it") from None
        problem = _manifest_problem(manifest)
        if problem:
            raise KgfactError(f"{self.manifest_path} is not a kgfact manifest ({problem}); "
                              "fix or delete it")
        manifest.setdefault("stages", {})
        return manifest

    def _write_manifest(self, manifest: dict[str, Any]) -> None:
        text = json.dumps(manifest, indent=2, sort_keys=True, default=_jsonable)
        atomic_write_text(self.manifest_path, text + "\n")

    @contextmanager
    def stage(self, name: str, config: Any, seed: int | list[int] | None = None
              ) -> Iterator[dict[str, Any]]:
        """Record a stage: config, seed, versions, git hash, timing, outcome and tables.

        The body receives a dict it may fill with results to keep in the manifest (counts,
        output names); the stage is marked ``complete`` only if the body returns normally,
        with a record of every table it wrote (:meth:`write_table`). Holds the run's lock
        (:meth:`writing`). A failed stage is marked ``failed`` if the manifest can still be
        written; the error that ended it is the one raised either way.
        """
        with self.writing():
            manifest = self.manifest()
            info: dict[str, Any] = {}
            started = time.time()
            manifest["stages"][name] = {
                "status": "running", "started": _now(), "config": config, "seed": seed,
                "versions": _versions(), "git": _git_hash(), "argv": sys.argv,
            }
            self._write_manifest(manifest)
            tables: dict[str, Any] = {}
            recording = _recording.setdefault(self._key, [])
            recording.append(tables)
            try:
                yield info
            except BaseException:
                with suppress(KgfactError):  # e.g. a full disk: its error is the one to show
                    manifest = self.manifest()
                    manifest["stages"].setdefault(name, {})["status"] = "failed"
                    self._write_manifest(manifest)
                raise
            finally:
                recording.pop()
            manifest = self.manifest()
            manifest["stages"].setdefault(name, {}).update({
                "status": "complete", "finished": _now(),
                "seconds": round(time.time() - started, 3), "tables": tables, **info})
            self._write_manifest(manifest)

    def annotate(self, name: str, **values: Any) -> None:
        """Add ``values`` to stage ``name``'s manifest entry (the pipeline records there the
        chained config the stage ran under)."""
        manifest = self.manifest()
        manifest["stages"].setdefault(name, {}).update(values)
        self._write_manifest(manifest)

    def require_manifest(self) -> RunDir:
        """This run, which must already be one (have a manifest): what every command and
        reader that does not make a run checks first.

        Raises
        ------
        KgfactError
            One line, if the directory has no ``manifest.json``, saying how to make a run.
        """
        if not self.manifest_path.exists():
            raise KgfactError(f"{self.path} is not a kgfact run (no {MANIFEST}): make one with "
                              f"'kgfact build --run {self.path}' or "
                              f"'kgfact run CONFIG --run {self.path}'")
        return self

    def stage_entry(self, name: str) -> dict[str, Any]:
        """Stage ``name``'s manifest entry (``status``, ``config``, ``seconds``, ``tables``,
        ``report``... with the types :meth:`manifest` checks); empty if it never ran."""
        return self.manifest()["stages"].get(name, {})

    def stage_config(self, name: str) -> dict[str, Any] | None:
        """The config stage ``name`` recorded when it last started (its JSON form,
        :func:`config_json`), or None if it never ran or recorded none."""
        return self.stage_entry(name).get("config")

    def stage_status(self, name: str) -> str | None:
        """``'complete'``, ``'running'``, ``'failed'`` or ``None`` if the stage never ran, as
        recorded (:meth:`states` tells a running stage from an interrupted one)."""
        return self.stage_entry(name).get("status")

    def states(self) -> dict[str, str | None]:
        """The recorded status of each stage in the manifest, except that a stage recorded as
        ``running`` while no process holds the run's lock is ``interrupted`` (killed, or its
        machine stopped): running it again resumes it."""
        states = {name: entry.get("status") for name, entry in self.manifest()["stages"].items()}
        if "running" in states.values() and self.lock.holder() is None:
            states = {name: "interrupted" if state == "running" else state
                      for name, state in states.items()}
        return states

    def verified(self, name: str) -> bool:
        """Whether stage ``name`` is complete with its tables as it wrote them: every table it
        recorded (:meth:`write_table`) is there with the recorded size and SHA-256, and they
        include the tables :data:`kgfact.stages.STAGES` says a complete run of it leaves.

        False (run the stage again) when it is not complete or a table is missing. A stage
        recorded before kgfact kept table records passes if its tables can be read.

        Raises
        ------
        KgfactError
            When a table is there but not as recorded (damaged, or changed since): kgfact does
            not overwrite it unasked; the message names it and says to delete it.
        """
        from kgfact.stages import STAGES

        entry = self.stage_entry(name)
        if entry.get("status") != "complete":
            return False
        required = STAGES.get(name).writes
        records = entry.get("tables")
        if records is None:
            for table in required:
                if not self.has_table(table):
                    return False
                self.read_table(table)
            return True
        if not set(required) <= set(records):
            return False
        for table, record in records.items():
            path = self.table_path(table)
            if not path.exists():
                return False
            found = _fingerprint(path)
            if found["bytes"] != record["bytes"]:
                why = f"{found['bytes']} bytes, {record['bytes']} recorded"
            elif found["sha256"] != record["sha256"]:
                why = "its SHA-256 is not the recorded one"
            else:
                continue
            raise KgfactError(f"{path} is damaged or was changed since stage {name!r} wrote it "
                              f"({why}); delete it to run the stage again")
        return True

    # -- tables ---------------------------------------------------------------------------------
    def table_path(self, name: str) -> Path:
        return self.path / f"{name}.parquet"

    def write_table(self, name: str, df: pd.DataFrame) -> Path:
        """Write table ``name`` atomically and durably and return its path; inside a stage
        (:meth:`stage`) its size, SHA-256 and rows are recorded for :meth:`verified`."""
        path = self.table_path(name)
        write_parquet(df, path)
        if recording := _recording.get(self._key):
            recording[-1][name] = {**_fingerprint(path), "rows": len(df)}
        return path

    def read_table(self, name: str, check_columns: bool = False) -> pd.DataFrame:
        """Read table ``name``; a missing table is a one-line error naming the stage to run.

        ``check_columns`` also requires the columns :data:`kgfact.stages.COLUMNS` lists for it.
        """
        path = self.table_path(name)
        if not path.exists():
            from kgfact.stages import STAGES, writer_of

            stage = writer_of(name)
            if stage is None:
                raise KgfactError(f"{path} does not exist: no stage writes it")
            # a stage that lacks a table it reads cannot write this one yet: name the first
            # stage up the pipeline that can run (each step goes up one stage at least)
            upstream, needs = stage, None
            for _ in STAGES:
                lacking = next((t for t in upstream.reads if not self.has_table(t)), None)
                if lacking is None:
                    break
                needs, upstream = needs or lacking, writer_of(lacking)
            hint = (f"run 'kgfact {stage.name}' first, the stage that writes it" if not needs
                    else f"'kgfact {stage.name}' writes it from {needs}, which this run lacks "
                    f"too: run 'kgfact {upstream.name}' first"
                    + ("" if upstream is writer_of(needs) else ", then the stages after it"))
            raise KgfactError(f"{path} does not exist: {hint}")
        try:
            table = read_parquet(path)
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


def _manifest_problem(manifest: Any) -> str | None:
    """What makes ``manifest`` (parsed JSON) no kgfact manifest, or None."""
    stages = manifest.get("stages", {}) if isinstance(manifest, dict) else None
    if not isinstance(stages, dict) or not all(isinstance(s, dict) for s in stages.values()):
        return "a JSON object whose 'stages' maps names to objects"
    for name, entry in stages.items():
        for key, (kinds, what) in _ENTRY_FIELDS.items():
            if key in entry and type(entry[key]) not in kinds:
                return f"stages.{name}.{key} must be {what}, got {_shown(entry[key])}"
        for table, record in (entry.get("tables") or {}).items():
            if not _TABLE_NAME.fullmatch(table):
                return f"stages.{name}.tables names {table!r}, which is no table name"
            if not (isinstance(record, dict) and type(record.get("bytes")) is int
                    and type(record.get("rows")) is int
                    and isinstance(record.get("sha256"), str)):
                return (f"stages.{name}.tables.{table} must be an object with integers bytes "
                        "and rows and a string sha256")
    return None


def _shown(value: Any) -> str:
    """A parsed JSON value as an error message names it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {json.dumps(value)}"
    if isinstance(value, (list, dict)):
        return "an array" if isinstance(value, list) else "an object"
    kind = {str: "string", int: "integer", float: "number"}[type(value)]
    return f"{kind} {value!r}"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
