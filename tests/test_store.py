"""The embedded Oxigraph store: lifecycle, loading, status, errors."""

from __future__ import annotations

import socket

import pytest

from kgfact.data.store import OxigraphStore, StoreConfig
from kgfact.errors import KgfactError
from tests import miniworld


def miniworld_size() -> int:
    """Number of RDF triples of the mini world: its facts, labels, aliases and populations."""
    triples, entities = miniworld.tables()
    return int(len(triples) + entities["label"].notna().sum()
               + entities["aliases"].map(len).sum() + entities["population"].notna().sum())


def test_start_status_stop_and_persistence(tmp_path, miniworld_nt):
    store = OxigraphStore(StoreConfig(location=tmp_path / "s", port=0))
    assert store.status() is None and store.is_empty()
    store.load([miniworld_nt])
    state = store.start(load_default=False)
    try:
        assert store.start() == state  # a second start is a no-op
        assert state["url"].startswith("http://127.0.0.1:")
        n = store.count_triples()
        assert n == miniworld_size()
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
    assert store.status() is None and store.state_file.exists()  # a reader changes nothing
    assert store.stop() is False and not store.state_file.exists()


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
    """A record naming our server's command line but another start time does not name our
    server (the server is found by its command line instead). The server dies between
    ``status`` finding it and counting its triples (as when it is killed right then): the
    answer is 'not running', not an error."""
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
        later = {**record, "started": record["started"] + 1}
        assert not store._is_ours(later)  # the command line alone is not enough
        store.state_file.write_text(json.dumps(later))
        assert store.status()["started"] == record["started"]  # found by its command line
        store.state_file.write_text(json.dumps(record))
        assert store.status() is not None  # ours, by command line and start time
        assert main(["store", "status", "--location", str(store.location)]) == 3
        assert capsys.readouterr().out.startswith("not running")
    finally:
        server.kill()
        server.wait()


# -- one manager per store, stores known by their URL, failures in one line -------------------
def servers_on(db) -> list[int]:
    """Process ids of the ``oxigraph serve`` processes on database ``db``, from /proc (read
    here, not through the code under test)."""
    import os
    from pathlib import Path

    found = []
    for entry in Path("/proc").iterdir():
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0") if entry.name.isdigit() else []
        except OSError:
            continue
        if b"serve" in args and os.fsencode(str(db)) in args:
            found.append(int(entry.name))
    return found


@pytest.mark.parametrize("trial", range(3))
def test_concurrent_starts_and_a_load_never_corrupt_and_leave_one_server(tmp_path,
                                                                         miniworld_nt, trial):
    """Two ``kgfact store start`` on other ports and a ``kgfact store load``, all at once on one
    location (three trials, as their order varies): each ends well, with one server holding the
    loaded data, which a third start on yet another port reuses (saying so)."""
    import subprocess

    from kgfact.data.store import _free_port
    from tests.conftest import kgfact_command

    location = tmp_path / "s"
    ports = set()
    while len(ports) < 3:
        ports.add(_free_port("127.0.0.1"))
    a, b, c = sorted(ports)
    where = ["--location", str(location)]
    procs = [subprocess.Popen(kgfact_command("store", *argv, *where),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for argv in (["start", "--empty", "--port", str(a)],
                          ["start", "--empty", "--port", str(b)],
                          ["load", str(miniworld_nt)])]
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, (trial, out, err)
    store = OxigraphStore(StoreConfig(location=location))
    try:
        state = store.status()
        assert state["port"] in (a, b) and servers_on(store.db) == [state["pid"]]
        third = subprocess.run(kgfact_command("store", "start", "--port", str(c), *where),
                               capture_output=True, text=True, timeout=120)
        assert third.returncode == 0, third.stderr
        assert third.stdout == (f"already running: {state['url']} (pid {state['pid']}, "
                                f"data in {store.location})\n")
        assert third.stderr == (f"kgfact: the store at {store.location} already runs on port "
                                f"{state['port']}: --port {c} ignored (stop it to move "
                                "it)\n")
        assert store.status() == state and servers_on(store.db) == [state["pid"]]
        assert store.data()["complete"] and store.count_triples() == miniworld_size()
    finally:
        store.stop()
    assert servers_on(store.db) == []


def test_a_kgfact_store_at_any_location_is_known_by_a_loopback_url(tmp_path, miniworld_nt):
    from kgfact.data.store import _free_port, _registered, store_serving

    store = OxigraphStore(StoreConfig(location=tmp_path / "anywhere", port=0))
    store.load([miniworld_nt])
    port = store.start(load_default=False)["port"]
    try:
        for url in (f"http://localhost:{port}/query", f"http://127.0.0.1:{port}/query",
                    f"http://LocalHost:{port}/"):
            assert store_serving(url).location == store.location
        other = _free_port("127.0.0.1")
        for url in (f"http://localhost:{other}/query",  # no store there
                    f"http://[::1]:{port}/query",  # loopback, but not where the store listens
                    f"http://192.0.2.1:{port}/query",  # not loopback
                    f"http://name.invalid:{port}/query",  # does not resolve
                    "http://localhost/query"):  # port 80
            assert store_serving(url) is None
    finally:
        store.stop()
    assert store_serving(f"http://localhost:{port}/query") is None  # stopped
    assert not _registered(port).exists()


MINI = ["--relations", "P17,P36,P1376", "--ood", "P30"]
NEW_FACT = ("<http://www.wikidata.org/entity/Q1999> <http://www.wikidata.org/prop/direct/P17> "
            "<http://www.wikidata.org/entity/Q200> .\n")


@pytest.fixture
def elsewhere(tmp_path, miniworld_nt, monkeypatch):
    """A kgfact store (mini world) outside ``$KGFACT_HOME/store``, its ``localhost`` query URL
    and a file of one new fact."""
    monkeypatch.setenv("KGFACT_HOME", str(tmp_path / "home"))  # its own registry of stores
    store = OxigraphStore(StoreConfig(location=tmp_path / "elsewhere", port=0))
    store.load([miniworld_nt])
    port = store.start(load_default=False)["port"]
    extra = tmp_path / "extra.nt"
    extra.write_text(NEW_FACT)
    yield store, f"http://localhost:{port}/query", extra
    store.stop()


def triples_of(run):
    from kgfact.rundir import RunDir

    return RunDir(run).read_table("triples")


def test_a_build_from_a_store_named_by_localhost_sees_a_load_and_refuses_after_it(
        elsewhere, tmp_path, capsys):
    from kgfact.cli import main
    from kgfact.rundir import RunDir

    store, url, extra = elsewhere
    args = ["build", "--endpoint", url, "--quiet", *MINI]
    assert main([*args, "--run", str(tmp_path / "before")]) == 0
    first = store.data_version
    assert main(["store", "load", str(extra), "--location", str(store.location)]) == 0
    assert main([*args, "--run", str(tmp_path / "after")]) == 0  # the same URL, cache on
    source = RunDir(tmp_path / "before").manifest()["stages"]["build"]["report"]["source"]
    assert source == {"url": url, "data_version": first, "store": str(store.location)}
    before, after = triples_of(tmp_path / "before"), triples_of(tmp_path / "after")
    assert len(after) == len(before) + 1
    assert after.query("subject == 'Q1999'")[["relation", "object"]].values.tolist() == [
        ["P17", "Q200"]]
    capsys.readouterr()
    assert main([*args, "--run", str(tmp_path / "before")]) == 2
    assert capsys.readouterr().err == (f"kgfact: error: {tmp_path / 'before'} was built before "
                                       "the embedded store was loaded again; use --force to "
                                       "rebuild it or choose another --run\n")


@pytest.mark.parametrize("flags", [[], ["--no-cache"]], ids=["cache", "no-cache"])
def test_a_build_interrupted_before_a_load_does_not_resume_from_its_checkpoints(
        elsewhere, tmp_path, monkeypatch, flags):
    """Interrupted once every relation's triples are checkpointed; resumed after a load of
    one new fact: the new fact is in, as in a fresh build."""
    from kgfact.cli import main
    from kgfact.data.fetch import GraphFetcher

    store, url, extra = elsewhere
    args = ["build", "--endpoint", url, "--quiet", *MINI, *flags]
    run = tmp_path / "run"

    def interrupted(self, ids):
        raise KeyboardInterrupt  # as Ctrl-C once the triples are fetched

    with monkeypatch.context() as patch:
        patch.setattr(GraphFetcher, "entities", interrupted)
        assert main([*args, "--run", str(run)]) == 130
    assert any((run / "checkpoints").glob("build-*/*.parquet"))
    assert main(["store", "load", str(extra), "--location", str(store.location)]) == 0
    assert main([*args, "--run", str(run)]) == 0
    assert main([*args, "--no-cache", "--run", str(tmp_path / "fresh")]) == 0
    resumed, fresh = triples_of(run), triples_of(tmp_path / "fresh")
    assert (resumed["subject"] == "Q1999").sum() == 1
    assert resumed.equals(fresh)


def test_a_start_killed_before_recording_its_server_leaves_no_orphan(tmp_path):
    """SIGKILL ``kgfact store start`` once its ``oxigraph serve`` runs, before it recorded
    it: status, start and stop still find that server by its database."""
    import os
    import signal
    import subprocess
    import time

    from kgfact.data.store import _free_port, store_serving
    from tests.conftest import kgfact_command

    store = OxigraphStore(StoreConfig(location=tmp_path / "s", port=_free_port("127.0.0.1")))
    proc = subprocess.Popen(kgfact_command("store", "start", "--empty", "--location",
                                           str(store.location), "--port",
                                           str(store.config.port)))
    deadline = time.monotonic() + 60
    while not servers_on(store.db) and time.monotonic() < deadline:
        time.sleep(0.001)
    proc.kill()
    proc.wait()
    [pid] = servers_on(store.db)
    try:
        assert not store.state_file.exists()  # really killed before it recorded its server
        assert store.status()["pid"] == pid
        url = f"http://localhost:{store.config.port}/query"
        assert store_serving(url).location == store.location  # registered before its launch
        state = store.start(load_default=False)
        assert state["pid"] == pid and store.state_file.exists()
        assert store.count_triples() == 0
        assert store.stop() is True
        assert servers_on(store.db) == [] and store.status() is None
    finally:
        if servers_on(store.db):  # only when the test failed: never orphan the server
            os.kill(pid, signal.SIGKILL)


@pytest.fixture
def foreign_server(tmp_path):
    """An ``oxigraph serve`` on ``<tmp>/s/db`` that kgfact did not start (short options, as
    by hand): it holds the database's lock."""
    import subprocess
    import time

    from kgfact.data.store import _answers, _free_port, oxigraph_binary

    db = tmp_path.resolve() / "s" / "db"
    db.mkdir(parents=True)
    address = f"127.0.0.1:{_free_port('127.0.0.1')}"
    proc = subprocess.Popen([oxigraph_binary(), "serve", "-l", str(db), "-b", address],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while not _answers(f"http://{address}/query") and time.monotonic() < deadline:
        time.sleep(0.05)
    yield db.parent
    proc.kill()
    proc.wait()


def test_failures_are_one_line_with_oxigraph_s_cause_and_its_log(tmp_path, foreign_server,
                                                                  capsys):
    """A load and a start failing on a database another process holds, and a file that does
    not parse: each one line naming oxigraph's own cause and the log with its full output."""
    import re

    from kgfact.cli import main

    location = foreign_server
    good = tmp_path.resolve() / "good.nt"
    good.write_text(NEW_FACT)
    where = ["--location", str(location)]
    assert main(["store", "load", str(good), *where]) == 2
    log = location / "oxigraph-load.log"
    lock = (rf"IO error: While lock file: {re.escape(str(location / 'db' / 'LOCK'))}: "
            r"Resource temporarily unavailable \(another process has the database open\)")
    assert re.fullmatch(rf"kgfact: error: loading {re.escape(str(good))} failed: {lock} "
                        rf"\(full output in {re.escape(str(log))}\); fix it and load the "
                        r"files again\n", capsys.readouterr().err)
    assert "Stack backtrace" in log.read_text()
    assert main(["store", "start", "--port", "0", *where]) == 2  # says what is unfinished
    assert capsys.readouterr().err == (f"kgfact: error: loading {good} into {location} did not "
                                       "finish: load the files again with 'kgfact store load', "
                                       "or delete the store directory\n")
    (location / "data.json").unlink()
    assert main(["store", "start", "--empty", "--port", "0", *where]) == 2
    assert re.fullmatch(rf"kgfact: error: oxigraph could not serve {re.escape(str(location))} "
                        rf"on 127\.0\.0\.1:\d+: {lock} \(full output in "
                        rf"{re.escape(str(location / 'server.log'))}\)\n",
                        capsys.readouterr().err)


def test_a_file_that_does_not_parse_is_named_with_its_line(tmp_path, capsys):
    import re

    from kgfact.cli import main

    broken = tmp_path.resolve() / "broken.nt"
    broken.write_text("<http://x/a> <http://x/b> .\n")
    location = tmp_path.resolve() / "s"
    assert main(["store", "load", str(broken), "--location", str(location)]) == 2
    log = location / "oxigraph-load.log"
    assert re.fullmatch(rf"kgfact: error: loading {re.escape(str(broken))} failed: Error while "
                        rf"loading file {re.escape(str(broken))}: Parser error at line 1 column "
                        r"27: [^\n]+ \(full output in "
                        rf"{re.escape(str(log))}\); fix it and load the files again\n",
                        capsys.readouterr().err)


def test_a_file_named_like_a_flag_is_loaded(tmp_path, monkeypatch):
    from kgfact.cli import main

    tmp_path = tmp_path.resolve()
    monkeypatch.chdir(tmp_path)
    (tmp_path / "-x.nt").write_text(NEW_FACT)
    location = tmp_path / "s"
    assert main(["store", "load", "--location", str(location), "--", "-x.nt"]) == 0
    store = OxigraphStore(StoreConfig(location=location, port=0))
    assert store.data()["complete"] and store.data()["files"] == [str(tmp_path / "-x.nt")]
    store.start(load_default=False)
    try:
        assert store.count_triples() == 1
    finally:
        store.stop()
