"""The embedded Oxigraph store: lifecycle, loading, status, errors."""

from __future__ import annotations

import socket

import pytest

from kgfact.data.store import OxigraphStore, StoreConfig
from kgfact.errors import KgfactError
from tests import miniworld


def test_start_status_stop_and_persistence(tmp_path, miniworld_nt):
    store = OxigraphStore(StoreConfig(location=tmp_path / "s", port=0))
    assert store.status() is None and store.is_empty()
    store.load([miniworld_nt])
    state = store.start(load_default=False)
    try:
        assert store.start() == state  # a second start is a no-op
        assert state["url"].startswith("http://127.0.0.1:")
        n = store.count_triples()
        triples, entities = miniworld.tables()
        labels = entities["label"].notna().sum()
        aliases = entities["aliases"].map(len).sum()
        population = entities["population"].notna().sum()
        assert n == len(triples) + labels + aliases + population
    finally:
        assert store.stop() is True
    assert store.status() is None and store.stop() is False
    with pytest.raises(KgfactError, match="not running"):
        store.query_url
    store.start(load_default=False)  # data persisted on disk
    try:
        assert store.count_triples() == n
    finally:
        store.stop()


def test_load_while_running_restarts_on_same_port(tmp_path, miniworld_nt):
    store = OxigraphStore(StoreConfig(location=tmp_path / "s", port=0))
    before = store.start(load_default=False)
    try:
        assert store.count_triples() == 0
        store.load([miniworld_nt])
        after = store.status()
        assert after["port"] == before["port"] and after["pid"] != before["pid"]
        assert store.count_triples() > 0
    finally:
        store.stop()


def test_stale_state_file_is_ignored(tmp_path):
    store = OxigraphStore(StoreConfig(location=tmp_path / "s", port=0))
    store.location.mkdir(parents=True)
    store.state_file.write_text('{"pid": 999999, "host": "127.0.0.1", "port": 1, "url": "x"}')
    assert store.status() is None and not store.state_file.exists()


def test_port_in_use_is_a_clear_error(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        store = OxigraphStore(StoreConfig(location=tmp_path / "s", port=port))
        with pytest.raises(KgfactError, match=f"port {port} .* is in use"):
            store.start(load_default=False)


def test_bad_files_are_clear_errors(tmp_path):
    store = OxigraphStore(StoreConfig(location=tmp_path / "s", port=0))
    with pytest.raises(KgfactError, match="does not exist"):
        store.load([tmp_path / "missing.nt"])
    odd = tmp_path / "data.csv"
    odd.write_text("a,b\n")
    with pytest.raises(KgfactError, match="unknown RDF format"):
        store.load([odd])
    broken = tmp_path / "broken.nt"
    broken.write_text("<http://x/a> <http://x/b> .\n")
    with pytest.raises(KgfactError, match="loading .*broken.nt failed"):
        store.load([broken])


def _recorded(pid: int, cmdline: list[str]) -> str:
    """A server.json naming process ``pid`` with its real start time."""
    import json

    from kgfact.data.store import _start_time

    return json.dumps({"pid": pid, "host": "127.0.0.1", "port": 1, "url": "http://x/query",
                       "cmdline": cmdline, "started": _start_time(pid)})


def test_a_recycled_pid_is_never_signalled(tmp_path):
    """The recorded pid now belongs to another program: not ours, so left alone."""
    import subprocess

    other = subprocess.Popen(["sleep", "30"])
    try:
        store = OxigraphStore(StoreConfig(location=tmp_path / "s", port=0))
        store.location.mkdir(parents=True)
        store.state_file.write_text(_recorded(other.pid, ["oxigraph", "serve", "--location",
                                                          str(store.db)]))
        assert store.status() is None and store.stop() is False
        assert other.poll() is None  # still running, never signalled
    finally:
        other.kill()
        other.wait()


def test_a_zombie_server_counts_as_stopped(tmp_path):
    """A dead server not yet reaped by its parent (not this process) is a zombie: stopped."""
    import subprocess
    import sys
    import time
    from pathlib import Path

    parent = subprocess.Popen([sys.executable, "-c", "import subprocess, time; "
                               "p = subprocess.Popen(['sleep', '0']); print(p.pid, flush=True); "
                               "time.sleep(30)"], stdout=subprocess.PIPE, text=True)
    try:
        pid = int(parent.stdout.readline())
        deadline = time.monotonic() + 10
        while " Z " not in Path(f"/proc/{pid}/stat").read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        store = OxigraphStore(StoreConfig(location=tmp_path / "s", port=0))
        store.location.mkdir(parents=True)
        store.state_file.write_text(_recorded(pid, ["sleep", "0"]))
        assert store.status() is None and store.stop() is False
    finally:
        parent.kill()
        parent.wait()


def test_an_interrupted_load_is_refused_not_served_empty(tmp_path):
    """SIGKILL a ``kgfact store load`` (and its ``oxigraph load``) mid-way: the store is not
    taken as loaded; starting it says what to do."""
    import os
    import signal
    import subprocess
    import time

    from tests.conftest import kgfact_command

    big = tmp_path / "big.nt"
    with open(big, "w") as fh:
        for i in range(1_500_000):
            fh.write(f"<http://x/s{i}> <http://x/p> \"value {i}\" .\n")
    location = tmp_path / "s"
    proc = subprocess.Popen(kgfact_command("store", "load", "--location", str(location),
                                           str(big)), start_new_session=True)
    store = OxigraphStore(StoreConfig(location=location, port=0))
    deadline = time.monotonic() + 60
    # kill once oxigraph has begun writing the database
    while not (store.db.is_dir() and any(store.db.iterdir())) and time.monotonic() < deadline:
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert store.data()["complete"] is False
    with pytest.raises(KgfactError, match="big.nt into .* did not finish"):
        store.start(load_default=False)
    with pytest.raises(KgfactError, match="holds no completely loaded data"):
        store.data_version


def test_an_interrupted_default_load_is_redone_from_scratch(tmp_path, miniworld_nt,
                                                            monkeypatch):
    import json

    from kgfact.data import offline
    from kgfact.data.store import DEFAULT_DATASET

    monkeypatch.setattr(offline, "default_dataset_file", lambda: miniworld_nt)
    store = OxigraphStore(StoreConfig(location=tmp_path / "s", port=0))
    store.load([miniworld_nt])
    store.start(load_default=False)
    n = store.count_triples()
    store.stop()
    # as a first load of the default dataset leaves it when killed: data, marked incomplete
    store.data_file.write_text(json.dumps({"version": "x", "complete": False,
                                           "files": [DEFAULT_DATASET]}))
    store.start()
    try:
        assert store.count_triples() == n  # reloaded once, not twice
        assert store.data()["complete"] and store.data_version != "x"
    finally:
        store.stop()


def test_each_load_changes_the_data_version_and_so_the_cache_key(tmp_path, miniworld_nt):
    from kgfact.data.sparql import EndpointConfig, SparqlClient

    store = OxigraphStore(StoreConfig(location=tmp_path / "s", port=0))
    store.load([miniworld_nt])
    store.start(load_default=False)
    try:
        query = "SELECT (COUNT(*) AS ?n) WHERE { ?s ?p ?o }"

        def count() -> tuple[int, int]:
            client = SparqlClient(EndpointConfig(url=store.query_url, cache_dir=tmp_path / "c",
                                                 data_version=store.data_version))
            return int(client.select(query)[0]["n"]), client.stats.cache_hits
        before, _ = count()
        assert count() == (before, 1)  # cached
        extra = tmp_path / "extra.nt"
        extra.write_text("<http://x/a> <http://x/b> <http://x/c> .\n")
        store.load([extra])
        assert count() == (before + 1, 0)  # asked again after the load
    finally:
        store.stop()


def test_port_is_checked_before_the_first_load(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        store = OxigraphStore(StoreConfig(location=tmp_path / "s",
                                          port=busy.getsockname()[1]))
        with pytest.raises(KgfactError, match="is in use"):
            store.start()  # would load the default dataset first
        assert store.is_empty() and store.data() is None


def test_store_cli_order_status_after_kill_and_damaged_records(tmp_path, miniworld_nt, capsys):
    import os
    import signal
    import time

    from kgfact.cli import main

    where = ["--location", str(tmp_path / "s")]
    assert main(["store", "load", *where, str(miniworld_nt)]) == 0  # options first
    assert main(["store", "load", str(miniworld_nt), *where]) == 0  # or last
    assert main(["store", "start", "--empty", "--port", "0", *where]) == 0
    store = OxigraphStore(StoreConfig(location=tmp_path / "s"))
    os.kill(store.status()["pid"], signal.SIGKILL)
    time.sleep(0.2)
    capsys.readouterr()
    assert main(["store", "status", *where]) == 3  # not running: no traceback
    assert "not running" in capsys.readouterr().out
    store.state_file.write_text("{not json")
    assert main(["store", "status", *where]) == 2
    err = capsys.readouterr().err
    assert err.startswith("kgfact: error: ") and "server.json is damaged" in err


def test_a_copied_server_record_never_stops_another_store(tmp_path, monkeypatch):
    """A store directory copied while its server runs: the copy's server.json names the
    original's server, which belongs to another database and is left alone."""
    import shutil

    monkeypatch.chdir(tmp_path)
    original = OxigraphStore(StoreConfig(location="a", port=0))  # relative, as on a command line
    state = original.start(load_default=False)
    try:
        copy = OxigraphStore(StoreConfig(location=tmp_path / "b"))
        copy.location.mkdir()
        shutil.copy(original.state_file, copy.state_file)
        assert copy.status() is None and copy.stop() is False
        monkeypatch.chdir(copy.location)  # the original, named from elsewhere, is still running
        assert OxigraphStore(StoreConfig(location=tmp_path / "a")).status() == state
    finally:
        assert original.stop() is True


def test_a_server_recorded_before_start_times_is_still_found(tmp_path):
    """A server.json without command line and start time (written before kgfact recorded
    them): the server is found by its command line, and stopped, not orphaned."""
    import json
    import os
    import signal
    from pathlib import Path

    store = OxigraphStore(StoreConfig(location=tmp_path / "s", port=0))
    state = store.start(load_default=False)
    try:
        old = {key: state[key] for key in ("pid", "host", "port", "url", "location")}
        store.state_file.write_text(json.dumps(old))
        assert store.status() == old
        assert store.stop() is True
        assert store.status() is None and not Path(f"/proc/{state['pid']}").exists()
    finally:
        if store._is_ours(state):  # only when the test failed: never orphan the server
            os.kill(state["pid"], signal.SIGKILL)


def test_a_process_with_undecodable_arguments_is_not_ours(tmp_path, capsys):
    """A recycled pid whose command line is not UTF-8: 'not running', not a traceback."""
    import subprocess
    import sys

    from kgfact.cli import main

    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", b"\xff"])
    try:
        store = OxigraphStore(StoreConfig(location=tmp_path / "s"))
        store.location.mkdir()
        store.state_file.write_text(_recorded(other.pid, ["oxigraph", "serve"]))
        assert main(["store", "status", "--location", str(store.location)]) == 3
        assert capsys.readouterr().out.startswith("not running")
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()


@pytest.mark.parametrize("pid", [0, -1, True])
def test_a_process_id_naming_a_group_is_damage(tmp_path, pid):
    """0 and -1 make waitpid and kill act on process groups (-1: every process one may
    signal); true is 1, init. None of them is a server kgfact started."""
    import json

    store = OxigraphStore(StoreConfig(location=tmp_path / "s"))
    store.location.mkdir()
    store.state_file.write_text(json.dumps({"pid": pid, "host": "127.0.0.1", "port": 1,
                                            "url": "http://127.0.0.1:1/query"}))
    with pytest.raises(KgfactError, match="server.json is damaged"):
        store.status()


def test_start_time_and_a_server_dying_while_asked(tmp_path, capsys):
    """A process with our server's command line but another start time is not ours. The server
    dies between ``status`` finding it and counting its triples (as when it is killed right
    then): the answer is 'not running', not an error."""
    import json
    import subprocess
    import sys

    from kgfact.cli import main
    from kgfact.data.store import _free_port

    store = OxigraphStore(StoreConfig(location=tmp_path / "s"))
    store.location.mkdir()
    # our server's command line, but it exits on the first connection without answering
    fake = tmp_path / "bin" / "oxigraph"
    fake.parent.mkdir()
    # (os._exit: the kernel closes the connection as the process ends, not Python before)
    fake.write_text("import os, socket, sys\n"
                    "host, port = sys.argv[-1].rsplit(':', 1)\n"
                    "server = socket.create_server((host, int(port)))\n"
                    "print('listening', flush=True)\n"
                    "connection = server.accept()\n"
                    "os._exit(0)\n")
    port = _free_port("127.0.0.1")
    args = ["serve", "--location", str(store.db), "--bind", f"127.0.0.1:{port}"]
    server = subprocess.Popen([sys.executable, str(fake), *args], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert server.stdout.readline() == "listening\n"
        record = json.loads(_recorded(server.pid, [str(fake), *args]))
        record.update(port=port, url=f"http://127.0.0.1:{port}/query")
        store.state_file.write_text(json.dumps({**record, "started": record["started"] + 1}))
        assert store.status() is None  # the command line alone is not enough
        store.state_file.write_text(json.dumps(record))
        assert store.status() is not None  # ours, by command line and start time
        assert main(["store", "status", "--location", str(store.location)]) == 3
        assert capsys.readouterr().out.startswith("not running")
    finally:
        server.kill()
        server.wait()
