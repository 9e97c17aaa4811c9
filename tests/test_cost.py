"""``--dry-run`` and the measured rates: the work each stage of the smoke preset will do, counted
exactly from a fresh run (estimated from the config) and from a built one, the time from a
rates file, and the command itself, which loads no model and writes nothing."""

from __future__ import annotations

import json
import os
import re
import subprocess

import pandas as pd
import pytest

from kgfact.build import resolved
from kgfact.cli import main
from kgfact.cost import Rate, Work, machine, rate_for, rates_path, record_rate, table
from kgfact.dryrun import plan_run, plan_stage
from kgfact.models import ModelConfig
from kgfact.pipeline import load_config, step_specs
from kgfact.qa import QAConfig, build_qa, build_two_hop
from kgfact.rundir import RunDir, config_json
from kgfact.sampling import SamplingConfig
from kgfact.slick import SlickConfig, run_slick
from kgfact.stages import STAGES
from tests import miniworld
from tests.conftest import SMOKE_CONFIG, kgfact_command

N = 100  # countries of the built world, each with a capital and a continent


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A fresh KGFACT_HOME: no rates recorded."""
    monkeypatch.setenv("KGFACT_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def _world() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Triples and entities with the smoke preset's relations: P36, P1376 and P30 of N
    countries (enough dev questions for SliCK's exemplars)."""
    countries = [f"Q{1000 + i}" for i in range(N)]
    capitals = [f"Q{5000 + i}" for i in range(N)]
    triples = [(c, "P36", k) for c, k in zip(countries, capitals)]
    triples += [(k, "P1376", c) for c, k in zip(countries, capitals)]
    triples += [(c, "P30", "Q9") for c in countries]
    entities = [(c, f"Country {i}") for i, c in enumerate(countries)]
    entities += [(k, f"City {i}") for i, k in enumerate(capitals)] + [("Q9", "Mythica")]
    ent = pd.DataFrame(entities, columns=["id", "label"]).assign(
        aliases=[[] for _ in entities], sitelinks=pd.array([None] * len(entities), "Int64"),
        population=pd.array([None] * len(entities), "Int64"))
    return pd.DataFrame(triples, columns=["subject", "relation", "object"]), ent


@pytest.fixture
def smoke(request, tmp_path):
    """A run of the smoke preset: ``"fresh"`` (no run directory yet), or ``"built"``, its build
    step complete as ``kgfact run`` records it (the build's tables from an invented world,
    without a store)."""
    run = RunDir(tmp_path / request.param)
    if request.param == "fresh":
        return run
    config = load_config(SMOKE_CONFIG)
    qa_config = resolved(config.build).qa
    triples, entities = _world()
    qa, _ = build_qa(triples, entities, qa_config)
    with run.stage("build", config_json(config.build)) as info:
        for name, table in (("triples", triples), ("entities", entities), ("qa", qa),
                            ("qa_two_hop", build_two_hop(triples, entities, qa_config)[0])):
            run.write_table(name, table)
        info["report"] = {"questions": {r: g.groupby("split").size().to_dict()
                                        for r, g in qa.groupby("relation")}}
    run.annotate("build", pipeline=step_specs(config)["build"])
    return run


def _rows(works: list[Work]) -> dict[str, tuple[str, ...]]:
    """The dry run's table as printed: each stage's state, work, units, rate and time."""
    lines = table(works).splitlines()[1:len(works) + 1]
    return {cells[0]: tuple(cells[1:]) for cells in (re.split(r" {2,}", r) for r in lines)}


# the rows alike in every case below, and those of the fresh run and the built one
NO_MODEL = {"ftsets": ("to do", "3 %Unknown mixtures of 8 examples and the other sets (no model)",
                       "-", "-", "-"),
            "report": ("to do", "findings, report.html and report.md (no model)", "-", "-", "-")}
# SliCK: P36 and P1376 train and test, P30 test only (no train split out of distribution), at
# most 40 each: 200 questions x 2 prompts x (1 + 2 samples), lazy so at most; fine-tuning:
# ft-known and ft-unknown x 1 seed x at most 2 epochs x |D| = 8; evaluation: base + 2 sets x 2
# checkpoints = 5 models x at most 6 test queries of each of 3 relations x (zero-shot 1 +
# few-shot 1 + CoT 1) prompts; no rate recorded here: the documented defaults, said so
FRESH = {
    "build": ("to do", "3 relations from geonames (ID P36, P1376; OOD P30), questions not "
              "capped *", "-", "-", "-"),
    "slick": ("to do", "≤ 200 questions × 2 prompts × (1 + 2 samples), lazy *",
              "≤ 1,200 generations", "56/s (default)", "≤ 22 s"),
    "finetune": ("to do", "2 trainings (2 sets × 1 seeds) × ≤ 2 epochs × 8 examples *",
                 "≤ 32 examples", "4/s (default)", "≤ 8 s"),
    "evaluate": ("to do", "5 models × ≤ 18 queries × 3 prompts (3 modes) *",
                 "≤ 270 generations", "1.5/s (default)", "≤ 3.0 min"),
    "theory": ("to do", "≤ 54 (prompt, query) units (no model) *", "-", "-", "-")}
# the world's splits: P36 and P1376 73 train, 10 dev, 10 test; P30 10 dev, 90 test. SliCK takes
# min(40, n) of each train and test split: 40 + 10 + 40 + 10 + 40 = 140 questions; evaluation
# min(6, test) of each relation: 18 queries, exactly
BUILT = {
    "build": ("complete", "3 relations from geonames (ID P36, P1376; OOD P30), 286 questions",
              "-", "-", "skipped"),
    "slick": ("to do", "140 questions × 2 prompts × (1 + 2 samples), lazy", "≤ 840 generations",
              "56/s (default)", "≤ 15 s"),
    "finetune": FRESH["finetune"],
    "evaluate": ("to do", "5 models × 18 queries × 3 prompts (3 modes)", "270 generations",
                 "1.5/s (default)", "3.0 min"),
    "theory": ("to do", "54 (prompt, query) units (no model)", "-", "-", "-")}
# 2 prompts of each strategy: random (every model), from-ft (adapters only: the base model has
# no set), neighbourhood (per query: at most), path-hint (CoT only: at most, queries with a
# hint). Base model: zero-shot 1 + few-shot 2 + 2 + CoT 2 + 2 + 2 = 11 prompts; each of the 4
# adapters 1 + (2 + 2 + 2) + (2 + 2 + 2 + 2) = 15: 18 x (11 + 4 x 15) = 1,278 generations, in
# 852 s. The theory's distinct prompts count from-ft's of both sets: 1 + (2 + 4 + 2) +
# (2 + 4 + 2 + 2) = 19 per query, 18 x 19 = 342 (prompt, query) units
STRATEGIES = {"evaluate.strategies": ["random", "from-ft", "neighbourhood", "path-hint"],
              "evaluate.n_prompts": 2}
BY_STRATEGY = {
    **BUILT,
    "evaluate": ("to do", "5 models × 18 queries × ≤ 11-15 prompts (3 modes)",
                 "≤ 1,278 generations", "1.5/s (default)", "≤ 14.2 min"),
    "theory": ("to do", "≤ 342 (prompt, query) units (no model)", "-", "-", "-")}


@pytest.mark.parametrize("smoke, overrides, rows", [
    ("fresh", {}, FRESH), ("built", {}, BUILT), ("built", STRATEGIES, BY_STRATEGY)],
    indirect=["smoke"], ids=["fresh", "built", "strategies"])
def test_the_smoke_dry_run_counts_each_stage(smoke, overrides, rows, home):
    """Estimated from the config on a fresh run, counted from the run's tables once built."""
    existed = smoke.path.exists()
    works = plan_run(smoke, load_config(SMOKE_CONFIG, overrides))
    assert list(_rows(works)) == list(STAGES)
    assert _rows(works) == {**NO_MODEL, **rows}
    assert smoke.path.exists() == existed  # the dry run writes nothing


@pytest.mark.parametrize("smoke", ["built"], indirect=True)
def test_a_stage_command_counts_with_its_flags(smoke, home, capsys):
    run = smoke
    assert main(["slick", str(run.path), "--dry-run", "--relations", "P36,P1376", "--splits",
                 "train,test", "--prompts", "2", "--samples", "3", "--max-questions", "40",
                 "--protocol", "full"]) == 0
    out = capsys.readouterr().out
    # (40 + 10) x 2 relations x 2 prompts x (1 + 3 samples), the full protocol: exactly
    assert ("slick  to do  100 questions × 2 prompts × (1 + 3 samples), full  800 generations"
            in out)
    assert out.splitlines()[-1] == ("total: 15 s of generation and training on this machine (0 "
                                    "of 1 steps already complete; model loading and the steps "
                                    "without a rate are not in it)")
    assert not run.has_table("slick")
    # the same build again is skipped; forced, it is done again
    build = load_config(SMOKE_CONFIG).build
    assert plan_stage(run, "build", build, None, None)[0].complete
    assert not plan_stage(run, "build", build, None, None, force=True)[0].complete


def test_time_comes_from_the_rates_measured_here(home):
    model = load_config(SMOKE_CONFIG).model
    key = machine(model)
    rates_path().parent.mkdir(parents=True)
    rates_path().write_text(json.dumps({"rates": [
        {"stage": "slick", **key, "per_second": 12.5, "recorded": "2025-01-02T03:04:05+00:00"},
        {"stage": "evaluate", **key, "per_second": 9, "recorded": "2025-02-03T00:00:00+00:00"},
        {"stage": "finetune", **key, "per_second": 4, "recorded": "2025-03-04T00:00:00+00:00"},
        {"stage": "finetune", **key, "model": "other", "per_second": 1000}]}))
    works = plan_run(home / "run", load_config(SMOKE_CONFIG))
    assert [(w.stage, w.rate, w.seconds) for w in works if w.rate] == [
        ("slick", Rate(12.5, "measured 2025-01-02"), 1200 / 12.5),
        ("finetune", Rate(4.0, "measured 2025-03-04"), 32 / 4),
        ("evaluate", Rate(9.0, "measured 2025-02-03"), 30.0)]
    lines = table(works).splitlines()
    assert lines[2].endswith("≤ 1,200 generations  12.5/s (measured 2025-01-02)  ≤ 1.6 min")
    # 96 + 8 + 30 = 134 s
    assert lines[-2].startswith("total: ≤ 2.2 min of generation and training")


def test_record_rate_replaces_its_key_and_keeps_the_others(home, capsys):
    model = ModelConfig()
    rates_path().parent.mkdir(parents=True)
    rates_path().write_text("{not json")
    record_rate("slick", model, 300, 10.0)
    assert "not a rates file kgfact wrote" in capsys.readouterr().err
    record_rate("evaluate", model, 90, 3.0, backend="vllm")
    record_rate("slick", model, 200, 4.0)
    record_rate("finetune", model, 0, 4.0)  # no work: nothing recorded
    records = json.loads(rates_path().read_text())["rates"]
    assert [(r["stage"], r["backend"], r["units"], r["seconds"], r["per_second"], r["unit"])
            for r in records] == [("evaluate", "vllm", 90, 3.0, 30.0, "generations"),
                                  ("slick", "kgfact", 200, 4.0, 50.0, "generations")]
    assert rate_for("slick", machine(model)).per_second == 50.0
    assert rate_for("evaluate", machine(model)) == Rate(1.5, "default")  # vllm's is not ours
    assert rate_for("theory", machine(model)) is None


def test_slick_records_the_rate_of_what_it_generated(tmp_path, home, tiny_model_dir):
    qa, _ = build_qa(*miniworld.tables(), QAConfig(in_distribution=("P17",)))
    run = RunDir(tmp_path / "run")
    with run.stage("build", {"source": "miniworld"}):
        run.write_table("qa", qa)
    model = ModelConfig(name=str(tiny_model_dir))
    config = SlickConfig(n_prompts=2, relations=("P17",), splits=("test",),
                         sampling=SamplingConfig(n_samples=2, max_new_tokens=4))
    run_slick(run, config, model, progress=False)
    report = run.manifest()["stages"]["slick"]["report"]
    [record] = json.loads(rates_path().read_text())["rates"]
    assert {k: record[k] for k in ("stage", "model", "backend", "unit", "units")} == {
        "stage": "slick", "model": str(tiny_model_dir), "backend": "kgfact",
        "unit": "generations", "units": report["generations"]}
    assert report["generations"] == report["questions"] * 2 * 3
    assert record["per_second"] == pytest.approx(record["units"] / record["seconds"], rel=0.02)


def test_kgfact_run_dry_run_loads_no_model_and_writes_nothing(tmp_path):
    home, run = tmp_path / "home", tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if k != "KGFACT_MODELS"}
    done = subprocess.run(kgfact_command("run", "smoke", "--dry-run", "--run", str(run)),
                          capture_output=True, text=True, timeout=300,
                          env={**env, "KGFACT_HOME": str(home), "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith(f"kgfact run --dry-run: {run} (no run there yet); model "
                               "gemma3-270m on ")
    assert lines[1].split() == ["stage", "state", "work", "units", "rate", "time"]
    assert [line.split()[0] for line in lines[2:9]] == [
        "build", "slick", "ftsets", "finetune", "evaluate", "theory", "report"]
    assert lines[9] == ("total: ≤ 3.5 min of generation and training on this machine (0 of 7 "
                        "steps already complete; model loading and the steps without a rate are "
                        "not in it)")
    # 21.4 + 8 + 180 s at the default rates
    assert lines[10].startswith("* estimated from the config")
    assert not run.exists() and not home.exists()  # no model converted, no run, no cache
