"""The embedded SPARQL endpoint: a real Oxigraph server on loopback with a persistent directory.

``kgfact store start`` runs ``oxigraph serve`` (from the PyPI package ``oxigraph``) as a
background process and records it in ``server.json`` inside the store directory; on first start
it bulk-loads the offline default dataset (:mod:`kgfact.data.offline`) so that every ``.rq`` query
works with no network. The database itself lives in ``<store>/db``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from kgfact.config import check_fields
from kgfact.errors import KgfactError
from kgfact.paths import kgfact_home
from kgfact.rundir import atomic_write_text

DEFAULT_PORT = 7878
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
        self.location = Path(self.config.location)
        self.db = self.location / "db"
        self.state_file = self.location / "server.json"

    # -- state ----------------------------------------------------------------------------------
    def _state(self) -> dict | None:
        try:
            return json.loads(self.state_file.read_text("utf-8"))
        except (OSError, json.JSONDecodeError):
            return None

    def status(self) -> dict | None:
        """``{"pid", "host", "port", "url"}`` of the running server, or ``None``."""
        state = self._state()
        if state is None:
            return None
        if not _alive(state["pid"]):
            self.state_file.unlink(missing_ok=True)  # a stale record from a crashed server
            return None
        return state

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
        if load_default and self.is_empty():
            from kgfact.data.offline import default_dataset_file
            self._bulk_load([default_dataset_file()])
        port = self.config.port or _free_port(self.config.host)
        if not _port_free(self.config.host, port):
            raise KgfactError(f"port {port} on {self.config.host} is in use; "
                              "choose another with --port")
        log = open(self.location / "server.log", "ab")
        proc = subprocess.Popen(
            [oxigraph_binary(), "serve", "--location", str(self.db),
             "--bind", f"{self.config.host}:{port}"],
            stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        url = f"http://{self.config.host}:{port}/query"
        state = {"pid": proc.pid, "host": self.config.host, "port": port, "url": url,
                 "location": str(self.location)}
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
        state = self.status()
        if state is None:
            return False
        os.kill(state["pid"], signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _alive(state["pid"]) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _alive(state["pid"]):
            os.kill(state["pid"], signal.SIGKILL)
        self.state_file.unlink(missing_ok=True)
        return True

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
            self._bulk_load(paths)
        finally:
            if running is not None:
                OxigraphStore(StoreConfig(self.location, running["host"], running["port"])).start(
                    load_default=False)

    def _bulk_load(self, paths: Sequence[Path]) -> None:
        self.db.mkdir(parents=True, exist_ok=True)
        cmd = [oxigraph_binary(), "load", "--location", str(self.db),
               "--file", *map(str, paths)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            msg = (done.stderr or done.stdout).strip().splitlines()
            raise KgfactError(f"loading {', '.join(map(str, paths))} failed: "
                              f"{msg[-1] if msg else 'oxigraph load exit ' + str(done.returncode)}")

    def count_triples(self) -> int:
        """Number of triples in the default graph of the running server."""
        query = "SELECT (COUNT(*) AS ?n) WHERE { ?s ?p ?o }"
        req = urllib.request.Request(
            self.query_url + "?" + urllib.parse.urlencode({"query": query}),
            headers={"Accept": "application/sparql-results+json"})
        with urllib.request.urlopen(req, timeout=60) as resp:
            data = json.load(resp)
        return int(data["results"]["bindings"][0]["n"]["value"])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of this process still "exists"; reap it if so.
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:
        return True


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
