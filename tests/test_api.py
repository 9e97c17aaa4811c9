"""The Python API: ``kgfact.run``, ``kgfact.open_run`` and ``Run``, on small runs (the ftworld
tables, and a build from the mini world on a real store)."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import kgfact
from kgfact.data.store import OxigraphStore, StoreConfig
from kgfact.errors import KgfactError
from kgfact.qa import QAConfig, build_qa
from kgfact.rundir import RunDir
from tests import ftworld

STEPS = ["build", "slick", "ftsets", "finetune", "evaluate", "theory", "report"]
SETS = ["filtered", "ft-known", "ft-unknown", "highly-known", "idk-relabel", "maybe-known",
        "natural", "unknown", "weakly-known"]  # what make_ftsets writes, in name order
FT_TABLES = ["triples", "entities", "qa", "slick", "ftsets", *(f"ftsets/{s}" for s in SETS)]


@pytest.fixture
def ft_run(tmp_path) -> Path:
    """build, SliCK (categories by rule) and the fine-tuning sets complete."""
    return ftworld.make_ft_run(tmp_path / "run").path


def test_the_api_is_exported_and_import_kgfact_stays_light():
    from kgfact import api

    assert (kgfact.run, kgfact.open_run, kgfact.Run) == (api.run, api.open_run, api.Run)
    assert {"run", "open_run", "Run"} <= set(kgfact.__all__)
    with pytest.raises(AttributeError, match="module 'kgfact' has no attribute 'nope'"):
        kgfact.nope  # noqa: B018
    loaded = subprocess.run([sys.executable, "-c", "import sys, kgfact; "
                             "print(sorted({'pandas', 'kgfact.api'} & set(sys.modules)))"],
                            capture_output=True, text=True, check=True, timeout=60)
    assert loaded.stdout == "[]\n"


def test_a_run_reads_its_status_tables_and_manifest(ft_run):
    run = kgfact.open_run(ft_run)
    assert run.path == ft_run and repr(run) == f"Run({str(ft_run)!r})"
    assert run.status() == {"build": "complete", "slick": "complete", "ftsets": "complete",
                            **{s: "not run" for s in STEPS[3:]}}
    assert run.manifest["stages"]["slick"]["config"] == {"rule": "town_category"}
    assert run.tables() == FT_TABLES
    qa, _ = build_qa(*ftworld.tables(), QAConfig(in_distribution=("P17", "P131")))
    pd.testing.assert_frame_equal(run.table("qa"), qa)
    assert len(run.table("ftsets/ft-known")) == 6
    assert set(run.table("ftsets")["set"]) == set(SETS)
    # a stage recorded as running that no process runs: interrupted
    RunDir(ft_run).annotate("finetune", status="running")
    assert run.status()["finetune"] == "interrupted"


def test_a_missing_table_names_its_command_and_the_tables_there(ft_run):
    run = kgfact.open_run(ft_run)
    have = f"{ft_run} has tables {', '.join(FT_TABLES)}"
    with pytest.raises(KgfactError) as err:
        run.table("dynamics")
    assert str(err.value) == (f"{ft_run / 'dynamics.parquet'} does not exist: run 'kgfact "
                              f"finetune' first, the stage that writes it; {have}")
    with pytest.raises(KgfactError) as err:
        run.findings()
    assert str(err.value) == (f"{ft_run / 'findings.parquet'} does not exist: 'kgfact report' "
                              "writes it from predictions, which this run lacks too: run "
                              f"'kgfact finetune' first, then the stages after it; {have}")
    for name in ("nope", "ftsets/../../qa", "../qa", 3):
        with pytest.raises(KgfactError) as err:
            run.table(name)
        assert str(err.value) == f"no kgfact stage writes a table {name!r}; {have}"


def test_findings_and_a_damaged_table(ft_run):
    findings = pd.DataFrame({"claim": ["gap above 0"], "estimate": [0.25], "ci_low": [0.1],
                             "ci_high": [0.4], "verdict": ["supported"]})
    writer = RunDir(ft_run)
    with writer.stage("report", None):
        writer.write_table("findings", findings)
    run = kgfact.open_run(ft_run)
    pd.testing.assert_frame_equal(run.findings(), findings)
    assert run.status()["report"] == "complete" and run.tables()[-1] == "findings"
    (ft_run / "slick.parquet").write_bytes(b"PAR1 cut")
    with pytest.raises(KgfactError, match=r"slick.parquet cannot be read \(.*\); delete it and "
                                          r"re-run its stage$"):
        run.table("slick")


def test_a_path_that_is_no_run_is_one_line(tmp_path):
    with pytest.raises(KgfactError) as err:
        kgfact.open_run(tmp_path / "nope")
    # the message every command and reader gives (RunDir.require_manifest)
    assert str(err.value) == (f"{tmp_path / 'nope'} is not a kgfact run (no manifest.json): "
                              f"make one with 'kgfact build --run {tmp_path / 'nope'}' or "
                              f"'kgfact run CONFIG --run {tmp_path / 'nope'}'")
    assert not (tmp_path / "nope").exists()
    (tmp_path / "file").write_text("x")
    with pytest.raises(KgfactError, match=f"^{tmp_path / 'file'} is a file, not a run "
                                          "directory$"):
        kgfact.open_run(tmp_path / "file")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "manifest.json").write_text("{")
    with pytest.raises(KgfactError, match=r"manifest.json is not valid JSON \(.*\); fix or "
                                          "delete it$"):
        kgfact.open_run(tmp_path / "bad")


def test_run_refuses_a_bad_config_before_making_the_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(KgfactError, match="^no config file or preset 'nope'; the presets are "):
        kgfact.run("nope")
    with pytest.raises(KgfactError, match="smoke.toml: unknown key slick.n_promts"):
        kgfact.run("smoke", overrides={"slick.n_promts": 2})
    assert not (tmp_path / "runs").exists()


def test_run_builds_with_the_store_and_overrides_it_is_given(tmp_path, monkeypatch,
                                                             miniworld_nt):
    """kgfact.run into the default run directory, runs/<config name>, with the store on another
    location and port; the model cannot load, so the run stops after the build, resumable."""
    location = tmp_path / "store"
    OxigraphStore(StoreConfig(location=location)).load([miniworld_nt])
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    (tmp_path / "mini.toml").write_text('[build.qa]\nin_distribution = ["P17", "P36", "P1376"]'
                                        '\nout_of_distribution = ["P30"]\n')
    monkeypatch.chdir(tmp_path)
    lines: list[str] = []
    try:
        with pytest.raises(KgfactError, match="^cannot load model 'no-model': "):
            kgfact.run("mini.toml", overrides={"store.location": str(location),
                                               "store.port": port, "model.name": "no-model"},
                       progress=False, log=lines.append)
        assert OxigraphStore(StoreConfig(location=location)).status()["port"] == port
    finally:
        OxigraphStore(StoreConfig(location=location)).stop()
    assert lines == [f"build: done in {lines[0].split()[3]} s"]
    run = kgfact.open_run(tmp_path / "runs" / "mini")
    assert run.status() == {"build": "complete", "slick": "failed",
                            **{s: "not run" for s in STEPS[2:]}, "run": "failed"}
    assert run.tables() == ["triples", "entities", "qa", "qa_two_hop"]
    assert run.manifest["stages"]["build"]["report"]["source"]["url"] == \
        f"http://127.0.0.1:{port}/query"
    assert sorted(run.table("qa")["relation"].unique()) == ["P1376", "P17", "P30", "P36"]
