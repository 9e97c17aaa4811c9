"""Run directories: one writer at a time, resume that checks what it trusts, robust manifests."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kgfact.cli import main
from kgfact.data.fetch import Checkpoints as FetchCheckpoints
from kgfact.data.fetch import FetchConfig, GraphFetcher
from kgfact.data.sparql import EndpointConfig, SparqlClient
from kgfact.errors import KgfactError
from kgfact.rundir import Checkpoints, RunDir
from tests.conftest import kgfact_command

BUILD = ["build", "--relations", "P36", "--ood", "P30", "--quiet"]


def one_error(err: str) -> str:
    """The one ``kgfact: error:`` line of ``err`` (and nothing resembling a traceback)."""
    assert "Traceback" not in err and err.count("\n") == 1, err
    assert err.startswith("kgfact: error: "), err
    return err


@pytest.fixture(scope="module")
def built(mini_store, tmp_path_factory) -> Path:
    """A complete build from the mini store (copy it before changing it)."""
    run = tmp_path_factory.mktemp("built") / "run"
    assert main([*BUILD, "--endpoint", mini_store.query_url, "--run", str(run)]) == 0
    return run


def copy_of(run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run, tmp_path / "copy", ignore=shutil.ignore_patterns(".lock")))


class Holder:
    """Another process holding a run's lock (as a long stage would) until closed."""

    def __init__(self, run: Path) -> None:
        code = ("import sys, time; from kgfact.rundir import RunDir\n"
                "with RunDir(sys.argv[1]).writing():\n"
                "    print('held', flush=True); time.sleep(120)\n")
        self.proc = subprocess.Popen([sys.executable, "-c", code, str(run)],
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout.readline() == "held\n"

    def __enter__(self) -> subprocess.Popen:
        return self.proc

    def __exit__(self, *exc) -> None:
        self.proc.kill()
        self.proc.wait()
        self.proc.stdout.close()


# -- checkpoints ---------------------------------------------------------------------------------
@pytest.mark.parametrize("damage", [b"", b"PAR1 not a parquet file"])
def test_an_unreadable_stage_checkpoint_is_dropped_and_redone(tmp_path, damage, capsys):
    pieces = Checkpoints(RunDir(tmp_path / "run"), "slick", {"chunk": 1})
    piece = pd.DataFrame({"qid": ["q1", "q2"], "category": ["Known", "Unknown"]})
    pieces.save("part-000000", piece)
    path = pieces.path / "part-000000.parquet"
    path.write_bytes(damage)  # what a crash before the data reached the disk can leave
    assert pieces.load("part-000000") is None
    assert not path.exists()
    assert f"discarded unreadable checkpoint {path}" in capsys.readouterr().err
    pieces.save("part-000000", piece)
    pd.testing.assert_frame_equal(pieces.load("part-000000"), piece)


def test_an_unreadable_fetch_checkpoint_is_fetched_again(mini_store, tmp_path):
    client = SparqlClient(EndpointConfig(url=mini_store.query_url, cache_dir=None))
    config = FetchConfig(relations=("P36",), page_size=4)
    reference = GraphFetcher(client, config, tmp_path / "clean", progress=False).run()
    folder = tmp_path / "damaged"
    GraphFetcher(client, config, folder, progress=False).run()
    units = sorted(folder.glob("*.parquet"))
    units[0].write_bytes(b"")
    units[-1].write_bytes(b"garbage")
    assert FetchCheckpoints(folder).get(units[0].stem) is None and not units[0].exists()
    again = GraphFetcher(client, config, folder, progress=False).run()
    pd.testing.assert_frame_equal(again.triples, reference.triples)
    pd.testing.assert_frame_equal(again.entities, reference.entities)
    assert units[0].exists() and units[-1].exists()  # fetched and saved again


# -- table records ---------------------------------------------------------------------------------
def test_tables_are_recorded_and_checked(built, tmp_path):
    run = RunDir(copy_of(built, tmp_path))
    records = run.manifest()["stages"]["build"]["tables"]
    assert set(records) == {"triples", "entities", "qa", "qa_two_hop"}
    qa = run.read_table("qa")
    assert records["qa"]["rows"] == len(qa) and records["qa"]["bytes"] == \
        run.table_path("qa").stat().st_size
    assert run.verified("build") and not run.verified("slick")
    qa.drop(columns="split").to_parquet(run.table_path("qa"))
    with pytest.raises(KgfactError, match="qa.parquet is damaged or was changed since stage "
                                          "'build' wrote it"):
        run.verified("build")
    run.table_path("qa").unlink()
    assert not run.verified("build")  # missing: the stage runs again
    # a stage recorded before tables were: that they can be read is all there is to check
    qa.to_parquet(run.table_path("qa"))
    manifest = run.manifest()
    del manifest["stages"]["build"]["tables"]
    run.manifest_path.write_text(json.dumps(manifest))
    assert run.verified("build")
    run.table_path("qa").write_bytes(b"")
    with pytest.raises(KgfactError, match="qa.parquet cannot be read"):
        run.verified("build")


def test_a_table_write_that_fails_names_the_table_and_fails_the_stage(mini_store, tmp_path,
                                                                        monkeypatch, capsys):
    """fsync is where a full disk shows: data is written to the page cache, then refused."""
    fsync = os.fsync

    def full_for_qa(fd: int) -> None:
        if Path(os.readlink(f"/proc/self/fd/{fd}")).name.startswith(".qa.parquet."):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        fsync(fd)

    monkeypatch.setattr(os, "fsync", full_for_qa)
    run = tmp_path / "run"
    assert main([*BUILD, "--endpoint", mini_store.query_url, "--run", str(run)]) == 2
    assert one_error(capsys.readouterr().err) == (
        f"kgfact: error: cannot write {run / 'qa.parquet'}: No space left on device\n")
    assert RunDir(run).stage_status("build") == "failed"
    assert not list(run.glob(".*.tmp"))


def test_a_full_disk_reports_the_table_not_the_manifest(mini_store, tmp_path, monkeypatch,
                                                         capsys):
    """From qa.parquet on every write fails: the stage cannot be marked failed, and the error
    is still the table's; the stage then shows as interrupted."""
    replace, full = os.replace, []

    def filling(src, dst) -> None:
        if Path(dst).name == "qa.parquet":
            full.append(dst)
        if full:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        replace(src, dst)

    monkeypatch.setattr(os, "replace", filling)
    run = tmp_path / "run"
    assert main([*BUILD, "--endpoint", mini_store.query_url, "--run", str(run)]) == 2
    assert one_error(capsys.readouterr().err) == (
        f"kgfact: error: cannot write {run / 'qa.parquet'}: No space left on device\n")
    monkeypatch.setattr(os, "replace", replace)
    assert RunDir(run).stage_status("build") == "running"
    assert main(["info", str(run)]) == 0
    assert "build     interrupted" in capsys.readouterr().err


# -- one writer ------------------------------------------------------------------------------------
def test_a_second_writer_is_refused_naming_the_first(built, tmp_path, capsys):
    run = copy_of(built, tmp_path)
    with Holder(run) as holder:
        assert main(["ftsets", str(run)]) == 2
        err = one_error(capsys.readouterr().err)
        assert f"run directory {run} is in use by process {holder.pid} (" in err
        assert err.endswith("; wait for it to finish, or pass --wait SECONDS\n")
        assert main(["report", str(run), "--wait", "0.3"]) == 2
        err = capsys.readouterr().err.splitlines()
        assert err[0].startswith(f"kgfact: waiting for run directory {run}, in use by process "
                                 f"{holder.pid}")
        assert err[1].startswith(f"kgfact: error: run directory {run} is in use by process "
                                 f"{holder.pid}") and "after waiting 0.3 s" in err[1]
        # readers need no lock
        assert main(["info", str(run)]) == 0
        assert len(RunDir(run).read_table("qa")) > 0
    assert not (run / "report.html").exists()


@pytest.mark.parametrize("argv", [["build", "--wait", "-1"], ["run", "c.toml", "--wait", "nan"],
                                  ["slick", "RUN", "--wait", "soon"]])
def test_wait_must_be_seconds(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    assert "--wait: must be a number of seconds >= 0" in one_error(capsys.readouterr().err)


def test_a_running_stage_nobody_holds_is_interrupted(built, tmp_path, capsys):
    run = copy_of(built, tmp_path)
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["stages"]["slick"] = {"status": "running", "config": {}}
    (run / "manifest.json").write_text(json.dumps(manifest))
    assert main(["info", str(run)]) == 0
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("build     complete, ") and lines[1].startswith(
        "slick     interrupted (no process is writing to the run: run the stage again to "
        "resume it); tables: -")
    with Holder(run):
        assert RunDir(run).states() == {"build": "complete", "slick": "running"}


# -- manifests -------------------------------------------------------------------------------------
def build_entry(**values):
    """An edit of a manifest's text setting fields of its build stage."""
    def edit(text: str) -> str:
        manifest = json.loads(text)
        for key, value in values.items():
            manifest["stages"]["build"][key] = value
        return json.dumps(manifest)
    return edit


@pytest.mark.parametrize("edit, message", [
    # json can neither write nor read it: spliced into the text as the build config's neighbour
    (lambda text: text.replace('"config": {', '"config": ' + "[" * 50_000 + "]" * 50_000
                               + ', "was": {', 1), "is nested too deeply"),
    (build_entry(seconds="x"), "stages.build.seconds must be a number, got string 'x'"),
    (build_entry(report=7), "stages.build.report must be an object, got integer 7"),
    (build_entry(status=None), "stages.build.status must be a string, got null"),
    (build_entry(seconds=True), "stages.build.seconds must be a number, got boolean true"),
    (build_entry(tables={"qa": {"bytes": "9"}}),
     "stages.build.tables.qa must be an object with integers bytes and rows and a string "
     "sha256"),
])
def test_damaged_manifests_are_one_line_errors(built, tmp_path, capsys, edit, message):
    run = copy_of(built, tmp_path)
    manifest = run / "manifest.json"
    manifest.write_text(edit(manifest.read_text()))
    for argv in (["info", str(run)], [*BUILD, "--endpoint", "http://127.0.0.1:9/query",
                                      "--run", str(run)]):
        assert main(argv) == 2
        err = one_error(capsys.readouterr().err)
        assert f"{manifest}" in err and message in err, err


ENTRY_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                  max_size=3), max_leaves=8)


@settings(deadline=None, max_examples=60,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(stage=st.sampled_from(["build", "slick"]),
       fields=st.dictionaries(st.sampled_from(["status", "seconds", "config", "report",
                                               "pipeline", "tables", "started", "seed"]),
                              ENTRY_VALUES | st.just("complete"), max_size=4))
def test_any_stage_entry_is_shown_or_one_line_error(built, capsys, stage, fields):
    """Whatever the types of a stage entry's fields, ``kgfact info`` shows it or says in one
    line what is wrong, and the resume check answers or refuses in one line."""
    with tempfile.TemporaryDirectory(prefix="kgfact-fuzz-") as tmp:
        run = copy_of(built, Path(tmp))
        manifest = json.loads((run / "manifest.json").read_text())
        manifest["stages"].setdefault(stage, {}).update(fields)
        (run / "manifest.json").write_text(json.dumps(manifest))
        code = main(["info", str(run)])
        err = capsys.readouterr().err
        if code != 0:
            one_error(err)
        try:
            assert RunDir(run).verified(stage) in (True, False)
        except KgfactError as exc:
            assert "\n" not in str(exc)


def test_a_stage_entry_its_config_and_status_as_recorded(built, tmp_path):
    run = RunDir(copy_of(built, tmp_path))
    recorded = json.loads(run.manifest_path.read_text())["stages"]["build"]
    assert run.stage_entry("build") == recorded and run.stage_status("build") == "complete"
    assert run.stage_config("build") == recorded["config"]
    qa = run.stage_config("build")["qa"]  # as BUILD gave it
    assert (qa["in_distribution"], qa["out_of_distribution"]) == (["P36"], ["P30"])
    assert (run.stage_entry("slick"), run.stage_config("slick"), run.stage_status("slick")) == (
        {}, None, None)  # never ran
    with run.stage("slick", None):  # a stage that records no config
        pass
    assert run.stage_config("slick") is None and run.stage_status("slick") == "complete"


def test_a_directory_without_a_manifest_is_no_run_to_every_reader(built, tmp_path, capsys):
    from kgfact.report import write_report
    from kgfact.theory import TheoryConfig, run_theory

    run = RunDir(built)
    assert run.require_manifest() is run
    nope = tmp_path / "nope"
    message = (f"{nope} is not a kgfact run (no manifest.json): make one with "
               f"'kgfact build --run {nope}' or 'kgfact run CONFIG --run {nope}'")
    for read in (lambda: RunDir(nope).require_manifest(), lambda: write_report(nope),
                 lambda: run_theory(nope, TheoryConfig())):
        with pytest.raises(KgfactError) as err:
            read()
        assert str(err.value) == message
    for argv in (["slick", str(nope)], ["report", str(nope)], ["theory", str(nope)]):
        assert main(argv) == 2
        assert one_error(capsys.readouterr().err) == f"kgfact: error: {message}\n"
    assert not nope.exists()  # checking made nothing


def test_a_run_directory_name_that_is_not_utf8_is_one_line_error(mini_store, tmp_path, capsys):
    weird = os.fsencode(tmp_path) + b"/r\xff"
    done = subprocess.run([os.fsencode(a) for a in kgfact_command(
        *BUILD, "--endpoint", mini_store.query_url)] + [b"--run", weird], capture_output=True,
        text=True, timeout=120)
    assert done.returncode == 2
    assert one_error(done.stderr) == (
        f"kgfact: error: run directory {tmp_path}/r\\xff: its name is not valid UTF-8; "
        "rename it (kgfact writes run paths into manifests, tables and reports)\n")
    assert main(["info", os.fsdecode(weird)]) == 2
    assert "is not valid UTF-8" in one_error(capsys.readouterr().err)
