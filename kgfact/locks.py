"""Advisory locks between kgfact processes: one writer per run directory, one manager per store.

A :class:`FileLock` is an exclusive ``flock`` on a small file that also names its holder (process
id, command line, since when), so a process that finds the lock taken says who holds it. The
kernel drops the lock when its holder exits, however it exits (``kill -9`` included): a lock is
never left behind by a crash, and nothing has to clean it up.

Locks are re-entrant within a process (a stage called by ``kgfact run`` takes the run's lock its
caller already holds), counted per path; readers take no lock.
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType

from kgfact.errors import KgfactError

_POLL = 0.1  # seconds between tries while waiting for a lock
_GRACE = 1.0  # seconds a lock held by no living named process is tried again before refusing
_held: dict[Path, list] = {}  # path -> [file object, depth] of the locks this process holds
_guard = threading.Lock()


@dataclass(frozen=True)
class Holder:
    """Who holds a lock, as the holder wrote it."""

    pid: int = field(metadata={"help": "Process id of the holder."})
    command: str = field(metadata={"help": "Its command line."})
    since: str = field(metadata={"help": "When it took the lock (UTC, ISO 8601)."})

    def __str__(self) -> str:
        return f"process {self.pid} ({self.command}) since {self.since}"


class FileLock:
    """An exclusive advisory lock on ``path`` (created if missing), held by one process.

    Parameters
    ----------
    path : Path
        The lock file.
    what : str
        What it protects, for messages ("run directory runs/x").

    Examples
    --------
    >>> with FileLock(path, "run directory runs/x").hold(wait=0):  # doctest: +SKIP
    ...     pass
    """

    def __init__(self, path: str | os.PathLike[str], what: str) -> None:
        self.path = Path(path).absolute()
        self.what = what

    def held_here(self) -> bool:
        """Whether this process holds the lock."""
        return self.path in _held

    def holder(self) -> Holder | None:
        """The process holding the lock, or None if it is free (a reader's question: it takes
        nothing)."""
        if self.held_here():
            return _read_holder(self.path) or Holder(os.getpid(), _command(), "?")
        try:
            fh = open(self.path)  # read-only: a reader never creates the lock file
        except OSError:
            return None  # no lock file, no holder
        with fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return _read_holder(self.path) or Holder(0, "another process", "?")
            fcntl.flock(fh, fcntl.LOCK_UN)
        return None

    def acquire(self, wait: float | None = 0.0) -> None:
        """Take the lock, waiting up to ``wait`` seconds (None: as long as it takes).

        Raises
        ------
        KgfactError
            If another process still holds it after ``wait``: names the holder.
        """
        with _guard:
            if self.path in _held:
                _held[self.path][1] += 1
                return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fh = open(self.path, "a+")
        except OSError as exc:
            raise KgfactError(f"cannot lock {self.what} ({self.path}): "
                              f"{exc.strerror or exc}") from None
        deadline = None if wait is None else time.monotonic() + wait
        told = False
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = _read_holder(self.path)
                now = time.monotonic()
                # a reader asking holder() takes the lock for an instant, and a holder may
                # have just died: refuse only a living holder, or after a grace period
                if deadline is not None and now >= deadline and (
                        holder is not None and holder.pid > 0 and _alive(holder.pid)
                        or now >= deadline + _GRACE):
                    fh.close()
                    waited = f" after waiting {wait:g} s" if wait else ""
                    raise KgfactError(
                        f"{self.what} is in use by {holder or 'another process'}{waited}; "
                        "wait for it to finish, or pass --wait SECONDS") from None
                if not told and wait != 0:
                    print(f"kgfact: waiting for {self.what}, in use by "
                          f"{holder or 'another process'}", file=sys.stderr)
                    told = True
                time.sleep(_POLL)
        fh.seek(0)
        fh.truncate()
        fh.write(json.dumps({"pid": os.getpid(), "command": _command(),
                             "since": datetime.now(timezone.utc).isoformat(timespec="seconds")}))
        fh.flush()
        with _guard:
            _held[self.path] = [fh, 1]

    def release(self) -> None:
        """Give the lock back (the outermost release of a re-entrant hold frees it)."""
        with _guard:
            entry = _held.get(self.path)
            if entry is None:
                return
            entry[1] -= 1
            if entry[1] > 0:
                return
            del _held[self.path]
        fh = entry[0]
        fh.truncate(0)  # no holder named once it is free
        fcntl.flock(fh, fcntl.LOCK_UN)
        fh.close()

    def hold(self, wait: float | None = 0.0) -> _Hold:
        """A context manager holding the lock for its body."""
        return _Hold(self, wait)


class _Hold:
    def __init__(self, lock: FileLock, wait: float | None) -> None:
        self.lock, self.wait = lock, wait

    def __enter__(self) -> FileLock:
        self.lock.acquire(self.wait)
        return self.lock

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.lock.release()


def _command() -> str:
    """This process's command line, shortened for a message."""
    text = " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv else "python"
    return text if len(text) <= 120 else text[:117] + "..."


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        pass
    return True


def _read_holder(path: Path) -> Holder | None:
    try:
        record = json.loads(path.read_text("utf-8"))
        return Holder(int(record["pid"]), str(record["command"]), str(record["since"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None  # empty (just taken or just freed) or not ours
