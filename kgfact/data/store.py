"""The embedded SPARQL endpoint: a real Oxigraph server on loopback with a persistent directory.

``kgfact store start`` runs ``oxigraph serve`` (from the PyPI package ``oxigraph``) as a
background process and records it in ``server.json`` inside the store directory; on first start
it bulk-loads the offline default dataset (:mod:`kgfact.data.offline`) so that every ``.rq`` query
works with no network. The database itself lives in ``<store>/db``.

- **Which process is ours.** ``server.json`` keeps the server's process id, command line and
  start time (Linux ``/proc``); ``status`` and ``stop`` act on that process only while it is
  alive (a zombie counts as stopped), started at the recorded time, and runs ``oxigraph serve``
  on *this* store's database and address. A recycled process id, or a ``server.json`` copied
  from another store, never gets a signal. Without ``/proc`` only liveness is checked.
- **Loads finish or are known not to have.** ``data.json`` records every load: it is marked
  incomplete before ``oxigraph load`` runs and complete, with a new random *data version*, only
  after it exits cleanly. A first load of the default dataset that was interrupted is redone from
  an empty database on the next start; an interrupted load of the user's files is refused until
  it is loaded again. The data version is part of the SPARQL response cache's key
  (:class:`kgfact.data.sparql.EndpointConfig`), so a build after ``kgfact store load`` never
  reads answers cached from the old data.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

from kgfact.config import check_fields
from kgfact.errors import KgfactError
from kgfact.paths import kgfact_home
from kgfact.rundir import atomic_write_text

DEFAULT_PORT = 7878
DEFAULT_DATASET = "kgfact:offline-default"  # how data.json names the offline default dataset
RDF_SUFFIXES = {".nt": "application/n-triples", ".ttl": "text/turtle", ".nq": "application/n-quads",
                ".trig": "application/trig", ".rdf": "application/rdf+xml", ".owl": "application/rdf+xml"}


def oxigraph_binary() -> str:
    """Path of the ``oxigraph`` executable installed with the Python environment."""
    here = Path(sys.executable).parent / "oxigraph"
    if here.exists():
        return str(here)
    found = shutil.which("oxigraph")
    if not found:
        raise KgfactError("the 'oxigraph' server is not installed: pip install oxigraph")
    return found


@dataclass(frozen=True)
class StoreConfig:
    """Where the embedded store keeps its data and where it listens."""

    location: Path = field(default_factory=lambda: kgfact_home() / "store",
                           metadata={"help": "Store directory (database in <location>/db)."})
    host: str = field(default="127.0.0.1", metadata={"help": "Loopback address to bind."})
    port: int = field(default=DEFAULT_PORT, metadata={"min": 0, "max": 65535,
        "help": "TCP port; 0 picks a free one."})

    def __post_init__(self) -> None:
        check_fields(self)


class OxigraphStore:
    """Start, stop, load and inspect the embedded Oxigraph server.

    Parameters
    ----------
    config : StoreConfig, optional
        Location and address; defaults to ``$KGFACT_HOME/store`` on ``127.0.0.1:7878``.
    """

    def __init__(self, config: StoreConfig | None = None) -> None:
        self.config = config or StoreConfig()
        # absolute, so the server's command line names the same database from any directory
        self.location = Path(self.config.location).resolve()
        self.db = self.location / "db"
        self.state_file = self.location / "server.json"
        self.data_file = self.location / "data.json"

    # -- state ----------------------------------------------------------------------------------
    def _read_json(self, path: Path, keys: dict[str, Callable[[object], bool]]) -> dict | None:
        """``path``'s record, None if there is none; a damaged one (unreadable, or a value
        failing its key's check) is a one-line error."""
        try:
            record = json.loads(path.read_text("utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise KgfactError(f"{path} is damaged ({exc.__class__.__name__}); delete it "
                              "(and stop any oxigraph serving this store by hand)") from None
        if not isinstance(record, dict) or not all(ok(record.get(k)) for k, ok in keys.items()):
            raise KgfactError(f"{path} is damaged (not the record kgfact writes); delete it "
                              "(and stop any oxigraph serving this store by hand)")
        return record

    def status(self) -> dict | None:
        """``{"pid", "host", "port", "url", ...}`` of the running server, or ``None``."""
        state = self._read_json(self.state_file, _SERVER_RECORD)
        if state is None:
            return None
        if not self._is_ours(state):
            self.state_file.unlink(missing_ok=True)  # a stale record from a crashed server
            return None
        return state

    def data(self) -> dict | None:
        """The last load's record: ``{"version", "complete", "files"}``, or None if none."""
        return self._read_json(self.data_file, _DATA_RECORD)

    @property
    def data_version(self) -> str:
        """Changes with every completed load (part of the SPARQL cache key)."""
        data = self.data()
        if data is None or not data["complete"]:
            raise KgfactError(f"the store at {self.location} holds no completely loaded data: "
                              "load it with 'kgfact store load FILE' or 'kgfact store start'")
        return data["version"]

    @property
    def query_url(self) -> str:
        """SPARQL query endpoint of the running server."""
        state = self.status()
        if state is None:
            raise KgfactError(f"the kgfact store at {self.location} is not running: "
                              "start it with 'kgfact store start'")
        return state["url"]

    def is_empty(self) -> bool:
        return not self.db.exists() or not any(self.db.iterdir())

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self, *, load_default: bool = True, timeout: float = 60.0) -> dict:
        """Start the server (a no-op if it already runs) and return its state.

        On a store that holds no data yet, the offline default dataset is bulk-loaded first
        unless ``load_default`` is false.
        """
        running = self.status()
        if running is not None:
            return running
        self.location.mkdir(parents=True, exist_ok=True)
        port = self.config.port or _free_port(self.config.host)
        if not _port_free(self.config.host, port):  # before a load that can take minutes
            raise KgfactError(f"port {port} on {self.config.host} is in use; "
                              "choose another with --port")
        data = self.data()
        if data is not None and not data["complete"]:
            if data["files"] != [DEFAULT_DATASET]:
                raise KgfactError(f"loading {', '.join(data['files'])} into {self.location} did "
                                  "not finish: load the files again with 'kgfact store load', "
                                  "or delete the store directory")
            shutil.rmtree(self.db, ignore_errors=True)  # ours to redo from scratch
        if data is None and not self.is_empty():  # a store older than data.json
            self._record_load([str(self.db)], complete=True)
        elif load_default and (self.is_empty() or not data["complete"]):
            from kgfact.data.offline import default_dataset_file
            self._bulk_load([default_dataset_file()], [DEFAULT_DATASET])
        log = open(self.location / "server.log", "ab")
        proc = subprocess.Popen(
            [oxigraph_binary(), *self._serve_args(self.config.host, port)],
            stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        url = f"http://{self.config.host}:{port}/query"
        state = {"pid": proc.pid, "host": self.config.host, "port": port, "url": url,
                 "location": str(self.location), "cmdline": proc.args,
                 "started": _start_time(proc.pid)}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                tail = (self.location / "server.log").read_text("utf-8", "replace")[-500:]
                raise KgfactError(f"oxigraph exited with code {proc.returncode}: {tail.strip()}")
            if _answers(url):
                atomic_write_text(self.state_file, json.dumps(state) + "\n")
                return state
            time.sleep(0.1)
        proc.kill()
        raise KgfactError(f"oxigraph did not answer on {url} within {timeout:.0f} s")

    def stop(self, timeout: float = 30.0) -> bool:
        """Stop the server; ``False`` if it was not running."""
        state = self.status()  # None unless the recorded process is still our server
        if state is None:
            return False
        with suppress(ProcessLookupError):
            os.kill(state["pid"], signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while _alive(state["pid"]) and time.monotonic() < deadline:
                time.sleep(0.05)
            if self._is_ours(state):
                os.kill(state["pid"], signal.SIGKILL)
        self.state_file.unlink(missing_ok=True)
        return True

    def _serve_args(self, host: str, port: int) -> list[str]:
        """The arguments after the program of this store's ``oxigraph serve`` on host:port."""
        return ["serve", "--location", str(self.db), "--bind", f"{host}:{port}"]

    def _is_ours(self, state: dict) -> bool:
        """Whether ``state["pid"]`` is still the server ``state`` records: alive, not a zombie,
        started at the recorded time, running ``oxigraph serve`` on this store's database and
        recorded address. Without ``/proc`` only liveness is checked."""
        pid = state["pid"]
        alive = _alive(pid)
        if not alive or not _HAS_PROC:  # without /proc, liveness is all there is to check
            return alive
        try:  # arguments are bytes in any encoding: decode them as the OS does paths
            cmdline = [os.fsdecode(a) for a in
                       Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:-1]]
        except OSError:
            return False
        args = self._serve_args(state["host"], state["port"])
        program = cmdline[-len(args) - 1] if len(cmdline) > len(args) else ""
        # a launcher may stand before the program; a record older than start times has none
        return (cmdline[-len(args):] == args and Path(program).stem == "oxigraph"
                and state.get("started") in (None, _start_time(pid)))

    # -- data -----------------------------------------------------------------------------------
    def load(self, files: Sequence[str | os.PathLike[str]]) -> None:
        """Bulk-load RDF files (N-Triples, Turtle, ...).

        The bulk loader needs the database to itself, so a running server is stopped for the load
        and started again on the same port afterwards.
        """
        paths = [Path(f) for f in files]
        for path in paths:
            if not path.is_file():
                raise KgfactError(f"{path} does not exist or is not a file")
            if path.suffix.lower() not in RDF_SUFFIXES:
                raise KgfactError(f"{path}: unknown RDF format {path.suffix!r}; "
                                  f"use one of {', '.join(sorted(RDF_SUFFIXES))}")
        running = self.status()
        if running is not None:
            self.stop()
        try:
            self._bulk_load(paths, [str(p.resolve()) for p in paths])
        finally:
            if running is not None:
                OxigraphStore(StoreConfig(self.location, running["host"], running["port"])).start(
                    load_default=False)

    def _bulk_load(self, paths: Sequence[Path], names: list[str]) -> None:
        """Load ``paths`` (recorded as ``names``) with ``oxigraph load``: marked incomplete
        before, complete with a new data version only once it exited cleanly."""
        self._record_load(names, complete=False)
        self.db.mkdir(parents=True, exist_ok=True)
        cmd = [oxigraph_binary(), "load", "--location", str(self.db),
               "--file", *map(str, paths)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            msg = (done.stderr or done.stdout).strip().splitlines()
            raise KgfactError(f"loading {', '.join(map(str, paths))} failed: "
                              f"{msg[-1] if msg else 'oxigraph load exit ' + str(done.returncode)}")
        self._record_load(names, complete=True)

    def _record_load(self, names: list[str], complete: bool) -> None:
        atomic_write_text(self.data_file, json.dumps(
            {"version": secrets.token_hex(8), "complete": complete, "files": names}) + "\n")

    def count_triples(self) -> int:
        """Number of triples in the default graph of the running server."""
        query = "SELECT (COUNT(*) AS ?n) WHERE { ?s ?p ?o }"
        url = self.query_url
        req = urllib.request.Request(url + "?" + urllib.parse.urlencode({"query": query}),
                                     headers={"Accept": "application/sparql-results+json"})
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                data = json.load(resp)
            return int(data["results"]["bindings"][0]["n"]["value"])
        except (OSError, ValueError, KeyError, IndexError) as exc:  # URLError is an OSError
            raise KgfactError(f"the store at {url} does not answer ({exc}); restart it with "
                              "'kgfact store stop' and 'kgfact store start'") from None


def _natural(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


# What kgfact writes to server.json and data.json, key by key; anything else is damage. A
# process id of 0 or -1 would make waitpid and kill act on whole process groups.
_SERVER_RECORD: dict[str, Callable[[object], bool]] = {
    "pid": lambda v: _natural(v) and v > 0, "port": lambda v: _natural(v) and 0 < v < 65536,
    "host": lambda v: isinstance(v, str), "url": lambda v: isinstance(v, str),
    "started": lambda v: v is None or _natural(v)}
_DATA_RECORD: dict[str, Callable[[object], bool]] = {
    "version": lambda v: isinstance(v, str), "complete": lambda v: isinstance(v, bool),
    "files": lambda v: isinstance(v, list) and all(isinstance(f, str) for f in v)}


_HAS_PROC = Path("/proc/self/stat").exists()


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs. Another parent's zombie does not; a child of this process runs
    until it is reaped here (its threads may still be exiting, holding the port), so a server
    this process started and stopped leaves no zombie behind."""
    if not _HAS_PROC:
        if _reap(pid):
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
        return True
    stat = _proc_stat(pid)
    if stat is None:
        return False
    return stat[0] not in ("Z", "X") or _reap(pid) is False


def _reap(pid: int) -> bool | None:
    """Reap ``pid`` if it is a dead child of this process: True if reaped, False if a child
    not (yet) reapable, None if not a child of this process."""
    try:
        return os.waitpid(pid, os.WNOHANG)[0] == pid
    except ChildProcessError:
        return None


def _start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (Linux), None where unknown."""
    stat = _proc_stat(pid)
    return int(stat[19]) if stat else None


def _proc_stat(pid: int) -> list[str] | None:
    """Fields of ``/proc/<pid>/stat`` after the command name (state first), or None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2:].split()


def _answers(url: str) -> bool:
    probe = url + "?" + urllib.parse.urlencode({"query": "ASK {}"})
    try:
        with urllib.request.urlopen(probe, timeout=2) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        return sock.connect_ex((host, port)) != 0


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]
