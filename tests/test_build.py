"""``kgfact build`` end to end: real store, real proxy, real kills; and its one-line errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from kgfact.cli import main
from kgfact.rundir import RunDir
from tests.faultproxy import Fault, FaultProxy

TABLES = ("triples", "entities", "qa", "qa_two_hop")
MINI = ["--relations", "P17,P36,P1376", "--ood", "P30"]


def kgfact(*args: str, env: dict | None = None, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kgfact.cli", *args], capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, **kw)


def tables(run: Path) -> dict[str, pd.DataFrame]:
    return {name: RunDir(run).read_table(name) for name in TABLES}


def assert_same_tables(a: Path, b: Path) -> None:
    ta, tb = tables(a), tables(b)
    for name in TABLES:
        pd.testing.assert_frame_equal(ta[name], tb[name], obj=name)


def test_build_from_endpoint_writes_run(mini_store, tmp_path):
    run = tmp_path / "run"
    assert main(["build", "--endpoint", mini_store.query_url, "--run", str(run), "--quiet",
                 *MINI]) == 0
    t = tables(run)
    assert len(t["triples"]) == 70 and len(t["entities"]) == 64
    # the default leakage rule drops train questions about entities asked about in ID test
    counts = t["qa"]["relation"].value_counts().to_dict()
    assert counts["P30"] == 3 and counts["P17"] <= 56 and set(counts) == {"P17", "P36", "P1376",
                                                                         "P30"}
    stage = RunDir(run).manifest()["stages"]["build"]
    assert stage["status"] == "complete" and stage["config"]["endpoint"] == mini_store.query_url
    assert stage["report"]["qa"]["ambiguous_question"] == {"P17": 2}
    assert stage["versions"]["pandas"] == pd.__version__
    assert not (run / "checkpoints").exists() or not any((run / "checkpoints").rglob("*.parquet"))
    # a second build with the same config is skipped; a different one needs --force
    assert main(["build", "--endpoint", mini_store.query_url, "--run", str(run), "--quiet",
                 *MINI]) == 0
    assert main(["build", "--endpoint", mini_store.query_url, "--run", str(run), "--quiet",
                 "--relations", "P17"]) == 2


def kill_midway(argv: list[str], until) -> None:
    """Run ``kgfact ARGV`` and SIGKILL it once ``until()`` is true."""
    proc = subprocess.Popen([sys.executable, "-m", "kgfact.cli", *argv],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not until() and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def test_the_default_split_on_a_kgfact_store_suggests_geonames(mini_store, tmp_path, capsys):
    # no relations named: the slick split's, most of which the store lacks
    assert main(["build", "--endpoint", mini_store.query_url, "--run", str(tmp_path / "r"),
                 "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("kgfact: error: the graph has no triples for ") and "\n" not in err
    assert err.endswith(f"; {mini_store.query_url} is a kgfact store, whose offline data hold "
                        "the GeoNames relations: add --split geonames (or name --relations)")


def test_a_build_resumed_on_another_endpoint_starts_afresh(mini_store, miniworld_nt, tmp_path):
    """Checkpoints of one source are never mixed into a build from another."""
    from kgfact.data.store import OxigraphStore, StoreConfig

    other_nt = tmp_path / "other.nt"
    # another world: a country renamed, and town 59 no longer in two countries
    moved = ("entity/Q1059> <http://www.wikidata.org/prop/direct/P17> "
             "<http://www.wikidata.org/entity/Q100>")
    lines = miniworld_nt.read_text().replace('"Atlantis"', '"Atlantica"').splitlines(True)
    other_nt.write_text("".join(line for line in lines if moved not in line))
    other = OxigraphStore(StoreConfig(location=tmp_path / "other-store", port=0))
    other.load([other_nt])
    other.start(load_default=False)
    try:
        args = ["build", "--page-size", "4", "--no-cache", "--quiet", *MINI]
        clean = tmp_path / "clean"
        assert main([*args, "--endpoint", other.query_url, "--run", str(clean)]) == 0
        run = tmp_path / "switched"
        with FaultProxy(mini_store.query_url.rsplit("/", 1)[0],
                        [Fault.every(1, "slow", delay=0.15)]) as proxy:
            # every triple fetched, labels not yet
            kill_midway(args + ["--endpoint", proxy.url + "/query", "--run", str(run)],
                        lambda: any((run / "checkpoints").glob("build-*/labels-*.parquet")))
        assert main([*args, "--endpoint", other.query_url, "--run", str(run)]) == 0
    finally:
        other.stop()
    assert "Atlantica" in set(tables(run)["entities"]["label"])
    assert (tables(run)["triples"]["subject"] == "Q1059").sum() == 1
    assert_same_tables(run, clean)


def test_build_killed_midway_resumes_with_identical_tables(mini_store, tmp_path):
    upstream = mini_store.query_url.rsplit("/", 1)[0]
    args = ["build", "--page-size", "4", "--no-cache", "--quiet", *MINI]
    reference = tmp_path / "reference"
    with FaultProxy(upstream) as proxy:
        done = kgfact(*args, "--endpoint", proxy.url + "/query", "--run", str(reference))
        assert done.returncode == 0, done.stderr
        total_requests = len(proxy.requests)

    run = tmp_path / "killed"
    # one proxy for both runs: checkpoints belong to the endpoint's URL
    with FaultProxy(upstream, [Fault.every(1, "slow", delay=0.15)]) as proxy:
        kill_midway(args + ["--endpoint", proxy.url + "/query", "--run", str(run)],
                    lambda: len(proxy.requests) >= total_requests // 2)
        assert RunDir(run).stage_status("build") == "running"  # really killed mid-build
        assert any((run / "checkpoints").glob("build-*/*.parquet"))
        proxy.set_faults([])
        before = len(proxy.requests)
        done = kgfact(*args, "--endpoint", proxy.url + "/query", "--run", str(run))
        assert done.returncode == 0, done.stderr
        resumed_requests = len(proxy.requests) - before
    assert 0 < resumed_requests < total_requests  # finished units were not fetched again
    assert_same_tables(run, reference)
    assert not tables(run)["triples"].duplicated().any()


def test_build_through_faults_gives_identical_tables(mini_store, tmp_path):
    upstream = mini_store.query_url.rsplit("/", 1)[0]
    clean, faulty = tmp_path / "clean", tmp_path / "faulty"
    common = ["--page-size", "5", "--no-cache", "--quiet", "--timeout", "1", *MINI]
    assert main(["build", "--endpoint", mini_store.query_url, "--run", str(clean), *common]) == 0
    # faults early (relation partitions) and late (label batches); a passthrough after each
    # lets every fault hit a different query instead of compounding one query's backoff
    faults = [Fault("429", retry_after=1), None, Fault("slow", delay=2.5), None, Fault("drop"),
              None, Fault("500"), None, Fault("truncate"), *[None] * 20, Fault("drop"), None,
              Fault("503", retry_after=0)]
    with FaultProxy(upstream, faults) as proxy:
        assert main(["build", "--endpoint", proxy.url + "/query", "--run", str(faulty),
                     *common]) == 0
        assert sum(r.fault is not None for r in proxy.requests) == 7
        assert len(proxy.requests) > 30
    assert_same_tables(faulty, clean)


@pytest.mark.parametrize("argv, message", [
    (["build", "--relations", "P17,P99999", "--endpoint", "http://127.0.0.1:9/query"],
     "unknown relation(s) P99999"),
    (["build", "--relations", "P17", "--endpoint", "http://127.0.0.1:9/query"],
     "cannot reach http://127.0.0.1:9/query"),
    (["build", "--relations", "country", "--endpoint", "http://127.0.0.1:9/query"],
     "'country' is not a Wikidata property id"),
    (["info", "/nonexistent/run"], "is not a kgfact run"),
    (["store", "load", "/nonexistent/file.nt"], "does not exist"),
])
def test_user_mistakes_are_one_line_errors(argv, message, tmp_path, capsys):
    extra = ["--run", str(tmp_path / "r"), "--quiet"] if argv[0] == "build" else []
    assert main([*argv, *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("kgfact: error: ") and message in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_empty_result_is_one_line_error(mini_store, tmp_path, capsys):
    assert main(["build", "--endpoint", mini_store.query_url, "--relations", "P50", "--quiet",
                 "--run", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "returned no triples for P50" in err and err.count("\n") == 1


def test_malformed_entityquestions_is_one_line_error(tmp_path):
    root = tmp_path / "eq"
    for split in ("train", "dev", "test"):
        (root / split).mkdir(parents=True)
        (root / split / f"P17.{split}.json").write_text(
            '[{"question": "Where is Foo?", "answers": ["Bar"]}]')
    (root / "relation_query_templates.json").write_text('{"P17": "Where is [X]?"}')
    (root / "train" / "P17.train.json").write_text('[{"question": "Where is Foo?"')
    done = kgfact("build", "--entityquestions", str(root), "--relations", "P17",
                  "--run", str(tmp_path / "r"))
    assert done.returncode == 2
    assert done.stderr.startswith("kgfact: error: ") and "P17.train.json" in done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr


def test_entityquestions_build(eq_root, tmp_path):
    run = tmp_path / "eq"
    assert main(["build", "--entityquestions", str(eq_root), "--run", str(run),
                 "--max-questions", "50", "--quiet"]) == 0
    qa = RunDir(run).read_table("qa")
    assert set(qa.loc[qa["relation"] == "P50", "distribution"]) == {"ood"}
    assert set(qa.loc[qa["relation"] == "P17", "distribution"]) == {"id"}
    assert qa.groupby(["relation", "split"]).size().max() <= 50
    assert "P175" not in set(qa["relation"])  # not in the local copy: left out, not an error


def test_a_build_naming_the_store_by_url_asks_again_after_a_load(miniworld_nt, tmp_path,
                                                                 monkeypatch, capsys):
    """``--endpoint`` naming the embedded store's URL: its data version still keys the SPARQL
    cache, so a build after ``kgfact store load`` sees the new facts, not cached answers; and a
    run built before the load is not passed off as built."""
    from kgfact.data.store import OxigraphStore, StoreConfig

    monkeypatch.setenv("KGFACT_HOME", str(tmp_path / "home"))  # its own embedded store
    store = OxigraphStore(StoreConfig(port=0))
    store.load([miniworld_nt])
    store.start(load_default=False)
    extra = tmp_path / "extra.nt"
    extra.write_text("<http://www.wikidata.org/entity/Q1999> "
                     "<http://www.wikidata.org/prop/direct/P17> "
                     "<http://www.wikidata.org/entity/Q200> .\n")
    try:
        args = ["build", "--endpoint", store.query_url, "--quiet", *MINI]
        assert main([*args, "--run", str(tmp_path / "before")]) == 0
        first = store.data_version
        assert main(["store", "load", str(extra), "--location", str(store.location)]) == 0
        assert main([*args, "--run", str(tmp_path / "after")]) == 0  # same URL after the load
    finally:
        store.stop()
    source = RunDir(tmp_path / "before").manifest()["stages"]["build"]["report"]["source"]
    assert source == {"url": args[2], "data_version": first, "store": str(store.location)}
    capsys.readouterr()
    assert main([*args, "--run", str(tmp_path / "before")]) == 2
    assert capsys.readouterr().err == (f"kgfact: error: {tmp_path / 'before'} was built before "
                                       "the embedded store was loaded again; use --force to "
                                       "rebuild it or choose another --run\n")
    before, after = (tables(tmp_path / run)["triples"] for run in ("before", "after"))
    assert len(after) == len(before) + 1
    assert after.query("subject == 'Q1999'")[["relation", "object"]].values.tolist() == [
        ["P17", "Q200"]]


# -- one writer per run directory, and resume that checks the tables ---------------------------
def lock_holder(run: Path) -> int | None:
    """The process id the run's lock file names (read without taking the lock)."""
    try:
        return json.loads((run / ".lock").read_text())["pid"]
    except (OSError, ValueError, KeyError):
        return None


def test_concurrent_builds_on_one_run_never_mix(mini_store, tmp_path):
    """A build with other relations started while one runs is refused at once, naming the
    first; with --wait (and --force) it runs after it. The manifest always matches the tables."""
    upstream = mini_store.query_url.rsplit("/", 1)[0]
    common = ["build", "--page-size", "4", "--no-cache", "--quiet", "--ood", "P30"]
    run = tmp_path / "run"
    with FaultProxy(upstream, [Fault.every(1, "slow", delay=0.5)]) as proxy:
        args = [*common, "--endpoint", proxy.url + "/query", "--run", str(run)]
        first = subprocess.Popen([sys.executable, "-m", "kgfact.cli", *args, "--relations",
                                  "P36"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True)
        deadline = time.monotonic() + 60
        while lock_holder(run) != first.pid:
            assert first.poll() is None and time.monotonic() < deadline, first.stderr.read()
            time.sleep(0.02)
        first.send_signal(signal.SIGSTOP)  # mid-build, for as long as the test needs
        try:
            second = kgfact(*args, "--relations", "P1376", timeout=120)
            assert second.returncode == 2 and second.stderr.count("\n") == 1
            assert second.stderr.startswith(f"kgfact: error: run directory {run} is in use by "
                                            f"process {first.pid} (")
            waiting = subprocess.Popen(
                [sys.executable, "-m", "kgfact.cli", *args, "--relations", "P1376", "--force",
                 "--wait", "120"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            assert waiting.stderr.readline().startswith(
                f"kgfact: waiting for run directory {run}, in use by process {first.pid} (")
        finally:
            first.send_signal(signal.SIGCONT)
        out, err = first.communicate(timeout=120)
        assert first.returncode == 0, err
        out, err = waiting.communicate(timeout=120)
    assert waiting.returncode == 0, err
    assert out.startswith(f"built {run}: ")
    stage = RunDir(run).manifest()["stages"]["build"]
    assert stage["config"]["qa"]["in_distribution"] == ["P1376"]
    assert set(tables(run)["qa"]["relation"]) == {"P1376", "P30"}
    assert RunDir(run).verified("build")
    assert not (run / "checkpoints").exists() or not any((run / "checkpoints").rglob("*"))


@pytest.mark.parametrize("damage", ["garbage", "no split column"])
def test_a_damaged_table_of_a_complete_build_is_not_already_built(mini_store, tmp_path, damage,
                                                                 capsys):
    run = tmp_path / "run"
    args = ["build", "--endpoint", mini_store.query_url, "--run", str(run), "--quiet", *MINI]
    assert main(args) == 0
    qa = run / "qa.parquet"
    if damage == "garbage":
        qa.write_bytes(b"PAR1 not a parquet file")
    else:
        pd.read_parquet(qa).drop(columns="split").to_parquet(qa)
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"kgfact: error: {qa} is damaged or was changed since stage 'build' "
                          "wrote it (") and err.count("\n") == 1
    assert err.endswith("); delete it to run the stage again\n")
    qa.unlink()
    assert main(args) == 0
    assert capsys.readouterr().out.startswith(f"built {run}: ")
    assert {"split", "question"} <= set(RunDir(run).read_table("qa").columns)
