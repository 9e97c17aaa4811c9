"""The embedded SPARQL endpoint: a real Oxigraph server on loopback with a persistent directory.

``kgfact store start`` runs ``oxigraph serve`` (from the PyPI package ``oxigraph``) as a
background process and records it in ``server.json`` inside the store directory; on first start
it bulk-loads the offline default dataset (:mod:`kgfact.data.offline`) so that every ``.rq`` query
works with no network. The database itself lives in ``<store>/db``.

- **One manager per store.** ``start``, ``load`` and ``stop`` hold the store's lock
  (``<store>/store.lock``, :class:`kgfact.locks.FileLock`) throughout, so two of them never run
  ``oxigraph`` on one database at once: a second ``start`` waits for the first and returns the
  server it started. Readers (``status``, ``data``) take no lock and change nothing.
- **Which process is ours.** ``server.json`` keeps the server's process id, command line and
  start time (Linux ``/proc``); ``status`` and ``stop`` act on that process only while it is
  alive (a zombie counts as stopped), started at the recorded time, and runs ``oxigraph serve``
  on *this* store's database and address. A recycled process id, or a ``server.json`` copied
  from another store, never gets a signal. A server no record names (its ``start`` was killed
  between launching and recording it) is found by its command line, ``oxigraph serve --location
  <this store's db>``, and the next ``start`` adopts it. Without ``/proc`` only liveness is
  checked, and such a server is not found.
- **A store is known by its URL.** Before launching a server, ``start`` registers its location
  under its port in ``$KGFACT_HOME/stores/<port>.json``; :func:`store_serving` maps any
  loopback URL on that port to the store, and so to its data version (the registry entry is
  trusted only while that store's server runs there).
- **Loads finish or are known not to have.** ``data.json`` records every load: it is marked
  incomplete before ``oxigraph load`` runs and complete, with a new random *data version*, only
  after it exits cleanly. A first load of the default dataset that was interrupted is redone from
  an empty database on the next start; an interrupted or failed load of the user's files is
  refused until it is loaded again. The data version is part of the SPARQL response cache's key
  (:class:`kgfact.data.sparql.EndpointConfig`) and of the build's checkpoint key, so a build
  after ``kgfact store load`` never reads answers or units fetched from the old data.
- **Failures in one line.** oxigraph's own cause (its ``Error:`` line, without the backtrace)
  ends the error message, which names the log holding its full output (``<store>/server.log``,
  ``<store>/oxigraph-load.log``).
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
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
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from contextvars import ContextVar
from dataclasses import dataclass, field
from itertools import takewhile
from pathlib import Path

from kgfact.config import check_fields
from kgfact.errors import KgfactError
from kgfact.locks import FileLock
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


# the store an OxigraphStore() without a config means: the embedded store of the build running
_CONFIGURED: ContextVar[StoreConfig | None] = ContextVar("kgfact_store", default=None)


@contextmanager
def configured(config: StoreConfig) -> Iterator[StoreConfig]:
    """Make ``config`` the embedded store for the body: what ``OxigraphStore()`` (no config)
    starts and queries, so a build (``kgfact build --store-port``, a config's ``[store]``) uses
    a store at another location or port."""
    token = _CONFIGURED.set(config)
    try:
        yield config
    finally:
        _CONFIGURED.reset(token)


class OxigraphStore:
    """Start, stop, load and inspect the embedded Oxigraph server.

    Parameters
    ----------
    config : StoreConfig, optional
        Location and address; defaults to the store :func:`configured` names, else
        ``$KGFACT_HOME/store`` on ``127.0.0.1:7878``.
    """

    def __init__(self, config: StoreConfig | None = None) -> None:
        self.config = config or _CONFIGURED.get() or StoreConfig()
        # absolute, so the server's command line names the same database from any directory
        self.location = Path(self.config.location).resolve()
        self.db = self.location / "db"
        self.state_file = self.location / "server.json"
        self.data_file = self.location / "data.json"
        self.server_log = self.location / "server.log"
        self.load_log = self.location / "oxigraph-load.log"
        # held by start, load and stop: one of them at a time runs oxigraph on this database
        self.lock = FileLock(self.location / "store.lock", f"the store at {self.location}")

    # -- state ----------------------------------------------------------------------------------
    def status(self) -> dict | None:
        """``{"pid", "host", "port", "url", ...}`` of the running server, or ``None``.

        The recorded server if it is still ours, else a server on this store's database that no
        record names (found by its command line). A reader: takes no lock, changes nothing.
        """
        state = _read_json(self.state_file, _SERVER_RECORD)
        if state is not None and self._is_ours(state):
            return state
        return self._unrecorded()

    def data(self) -> dict | None:
        """The last load's record: ``{"version", "complete", "files"}``, or None if none."""
        return _read_json(self.data_file, _DATA_RECORD)

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
        """Start the server and return its state; a running server's state if there is one
        (whatever port it listens on), after waiting for a ``start``, ``load`` or ``stop`` of
        this store in another process to finish.

        On a store that holds no data yet, the offline default dataset is bulk-loaded first
        unless ``load_default`` is false.
        """
        with self.lock.hold(wait=None):
            running = self.status()
            if running is not None:
                if running != _read_json(self.state_file, _SERVER_RECORD):
                    # found by its command line: adopt the server of a start killed midway
                    self._await(running, lambda: self._is_ours(running), self._log_size(),
                                timeout)
                    self._record(running)
                return running
            self.location.mkdir(parents=True, exist_ok=True)
            port = self.config.port or _free_port(self.config.host)
            if not _port_free(self.config.host, port):  # before a load that can take minutes
                raise KgfactError(f"port {port} on {self.config.host} is in use; choose another "
                                  "with --port (kgfact store start) or --store-port (kgfact "
                                  "build, kgfact run; [store] port in a config)")
            data = self.data()
            if data is not None and not data["complete"]:
                if data["files"] != [DEFAULT_DATASET]:
                    raise KgfactError(f"loading {', '.join(data['files'])} into {self.location} "
                                      "did not finish: load the files again with 'kgfact store "
                                      "load', or delete the store directory")
                shutil.rmtree(self.db, ignore_errors=True)  # ours to redo from scratch
            if data is None and not self.is_empty():  # a store older than data.json
                self._record_load([str(self.db)], complete=True)
            elif load_default and (self.is_empty() or not data["complete"]):
                from kgfact.data.offline import default_dataset_file
                self._bulk_load([Path(default_dataset_file()).resolve()], [DEFAULT_DATASET])
            return self._launch(self.config.host, port, timeout)

    def _launch(self, host: str, port: int, timeout: float) -> dict:
        """Run ``oxigraph serve`` on host:port and record it once it answers; registered under
        its port before it runs, so that no kill of this process leaves an unknown server."""
        _register(self.location, port)
        log_from = self._log_size()
        with open(self.server_log, "ab") as log:
            proc = subprocess.Popen(
                [oxigraph_binary(), *self._serve_args(host, port)], stdout=log, stderr=log,
                stdin=subprocess.DEVNULL, start_new_session=True)
        state = {"pid": proc.pid, "host": host, "port": port,
                 "url": f"http://{host}:{port}/query", "location": str(self.location),
                 "cmdline": proc.args, "started": _start_time(proc.pid)}
        try:
            self._await(state, lambda: proc.poll() is None, log_from, timeout)
        except BaseException:  # not answering, failed, or interrupted: leave no server behind
            proc.kill()
            proc.wait()
            _unregister(self.location, port)
            raise
        self._record(state)
        return state

    def _await(self, state: dict, running: Callable[[], bool], log_from: int,
               timeout: float) -> None:
        """Wait until the server ``state`` names answers while ``running()``; a one-line error
        with oxigraph's cause (from its output in the server log after ``log_from`` bytes) if it
        exits first, or after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if _answers(state["url"]):
                return
            if not running():
                with open(self.server_log, "rb") as log:
                    log.seek(log_from)
                    cause = _cause(log.read().decode("utf-8", "replace")) or "it exited"
                raise KgfactError(f"oxigraph could not serve {self.location} on {state['host']}:"
                                  f"{state['port']}: {cause} (full output in {self.server_log})")
            time.sleep(0.1)
        raise KgfactError(f"oxigraph did not answer on {state['url']} within {timeout:.0f} s "
                          f"(full output in {self.server_log})")

    def _log_size(self) -> int:
        """Bytes in the server log, which every server of this store appends to."""
        return self.server_log.stat().st_size if self.server_log.exists() else 0

    def _record(self, state: dict) -> None:
        atomic_write_text(self.state_file, json.dumps(state) + "\n")
        _register(self.location, state["port"])

    def stop(self, timeout: float = 30.0) -> bool:
        """Stop the server; ``False`` if it was not running."""
        if not self.location.is_dir():
            return False  # never started (and taking the lock would create the directory)
        with self.lock.hold(wait=None):
            recorded = _read_json(self.state_file, _SERVER_RECORD)
            state = self.status()  # None unless the process is still our server
            # until it is gone: a load after a stop needs the database's lock
            for sig in (signal.SIGTERM, signal.SIGKILL) if state is not None else ():
                with suppress(ProcessLookupError):
                    os.kill(state["pid"], sig)
                deadline = time.monotonic() + timeout
                while _alive(state["pid"]) and time.monotonic() < deadline:
                    time.sleep(0.05)
                if not self._is_ours(state):
                    break
            for gone in (recorded, state):
                if gone is not None:
                    _unregister(self.location, gone["port"])
            self.state_file.unlink(missing_ok=True)
            return state is not None

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
        cmdline = _cmdline(pid)
        args = self._serve_args(state["host"], state["port"])
        if cmdline is None or len(cmdline) <= len(args):
            return False
        # a launcher may stand before the program; a record older than start times has none
        return (cmdline[-len(args):] == args and Path(cmdline[-len(args) - 1]).stem == "oxigraph"
                and state.get("started") in (None, _start_time(pid)))

    def _unrecorded(self) -> dict | None:
        """The ``oxigraph serve`` on this store's database that no record names (its ``start``
        was killed between launching and recording it), found in ``/proc``; None if none."""
        if not _HAS_PROC:
            return None
        for entry in Path("/proc").iterdir():
            cmdline = _cmdline(int(entry.name)) if entry.name.isdigit() else None
            if not cmdline or str(self.db) not in cmdline:
                continue
            host, _, port = cmdline[-1].rpartition(":")
            if not (port.isdigit() and 0 < int(port) < 65536):
                continue
            pid = int(entry.name)
            state = {"pid": pid, "host": host, "port": int(port),
                     "url": f"http://{host}:{port}/query", "location": str(self.location),
                     "cmdline": cmdline, "started": _start_time(pid)}
            if self._is_ours(state):
                return state
        return None

    # -- data -----------------------------------------------------------------------------------
    def load(self, files: Sequence[str | os.PathLike[str]]) -> None:
        """Bulk-load RDF files (N-Triples, Turtle, ...).

        The bulk loader needs the database to itself, so a running server is stopped for the load
        and started again on the same port after it succeeded; the store's lock is held
        throughout. After a failed load the store stays stopped and marked unfinished.
        """
        # absolute: oxigraph reads a name such as '-x.nt' as a file, never as a flag
        paths = [Path(f).resolve() for f in files]
        for path in paths:
            if not path.is_file():
                raise KgfactError(f"{path} does not exist or is not a file")
            if path.suffix.lower() not in RDF_SUFFIXES:
                raise KgfactError(f"{path}: unknown RDF format {path.suffix!r}; "
                                  f"use one of {', '.join(sorted(RDF_SUFFIXES))}")
        with self.lock.hold(wait=None):
            running = self.status()
            if running is not None:
                self.stop()
            self._bulk_load(paths, [str(p) for p in paths])
            if running is not None:
                OxigraphStore(StoreConfig(self.location, running["host"], running["port"])).start(
                    load_default=False)

    def _bulk_load(self, paths: Sequence[Path], names: list[str]) -> None:
        """Load ``paths`` (absolute; recorded as ``names``) with ``oxigraph load``: marked
        incomplete before, complete with a new data version only once it exited cleanly."""
        self._record_load(names, complete=False)
        self.db.mkdir(parents=True, exist_ok=True)
        with open(self.load_log, "wb") as log:
            done = subprocess.run([oxigraph_binary(), "load", "--location", str(self.db),
                                   "--file", *map(str, paths)],
                                  stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        if done.returncode != 0:
            cause = (_cause(self.load_log.read_text("utf-8", "replace"))
                     or f"oxigraph load exited with status {done.returncode}")
            raise KgfactError(f"loading {', '.join(map(str, paths))} failed: {cause} (full "
                              f"output in {self.load_log}); fix it and load the files again")
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


# -- which store answers a URL ----------------------------------------------------------------
def store_serving(url: str) -> OxigraphStore | None:
    """The running kgfact store ``url`` reaches, or None for any other endpoint.

    ``url`` must be ``http`` on a loopback host (``127.0.0.0/8``, ``::1``, or a name such as
    ``localhost`` resolving only to those) whose port a store started under this
    ``$KGFACT_HOME`` listens on, at one of the host's addresses; any location, any path.
    """
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port or 80
    except ValueError:  # a port that is not a number
        return None
    if parts.scheme != "http" or not parts.hostname:
        return None
    addresses = _loopback_addresses(parts.hostname, port)
    entry = _read_json(_registered(port), _STORE_ENTRY) if addresses else None
    if entry is None:
        return None
    store = OxigraphStore(StoreConfig(location=Path(entry["location"])))
    state = store.status()  # the registry is trusted only while that store's server runs there
    if (state is None or state["port"] != port
            or not addresses & _loopback_addresses(state["host"], port)):
        return None
    return store


def _registered(port: int) -> Path:
    """The file naming the location of the store that listens on ``port``."""
    return kgfact_home() / "stores" / f"{port}.json"


def _register(location: Path, port: int) -> None:
    atomic_write_text(_registered(port), json.dumps(
        {"location": str(location), "port": port}) + "\n")


def _unregister(location: Path, port: int) -> None:
    """Remove ``port``'s registry entry if it names ``location`` (not if another store has
    taken the port since)."""
    with suppress(KgfactError):  # a damaged entry of another store is not ours to judge
        entry = _read_json(_registered(port), _STORE_ENTRY)
        if entry is not None and entry["location"] == str(location):
            _registered(port).unlink(missing_ok=True)


def _loopback_addresses(host: str, port: int) -> set[str]:
    """The addresses ``host`` resolves to if all of them are loopback ones, else none."""
    try:
        found = {info[4][0] for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)}
        loopback = all(ipaddress.ip_address(address.split("%")[0]).is_loopback
                       for address in found)
    except (OSError, UnicodeError, ValueError):  # unresolvable (socket.gaierror is an OSError)
        return set()
    return found if loopback else set()


# -- oxigraph's output ------------------------------------------------------------------------
def _cause(output: str) -> str | None:
    """What went wrong, in one line, from oxigraph's output: its first error line (``Error:
    ...``, a file's ``Error while loading ...``, an argument parser's ``error: ...``) with the
    innermost of the causes listed under it, never the backtrace; None if it names no error."""
    lines = [line.strip() for line in output.splitlines()]
    first = next((i for i, line in enumerate(lines) if line.lower().startswith("error")), None)
    if first is None:
        return None
    cause = re.sub(r"^error:\s*", "", lines[first], flags=re.IGNORECASE)
    after = lines[first + 1:]
    if "Caused by:" in after:  # anyhow's chain of causes ("0: ...", "1: ..."), innermost last
        chain = list(takewhile(bool, after[after.index("Caused by:") + 1:]))
        if chain:
            cause += ": " + re.sub(r"^\d+:\s*", "", chain[-1])
    if "lock file" in cause.lower():  # RocksDB's words for a database open elsewhere
        cause += " (another process has the database open)"
    return cause


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
_STORE_ENTRY: dict[str, Callable[[object], bool]] = {
    "location": lambda v: isinstance(v, str), "port": _SERVER_RECORD["port"]}


def _read_json(path: Path, keys: dict[str, Callable[[object], bool]]) -> dict | None:
    """``path``'s record, None if there is none; a damaged one (unreadable, or a value failing
    its key's check) is a one-line error."""
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


def _cmdline(pid: int) -> list[str] | None:
    """The process's arguments (Linux), None if it is gone or has none to show (a zombie)."""
    try:  # arguments are bytes in any encoding: decode them as the OS does paths
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return [os.fsdecode(a) for a in raw.split(b"\0")[:-1]] or None


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
