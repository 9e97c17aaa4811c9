"""The analysis notebooks run headless on a finished run, on a run made one command per stage,
on a partial run and on a path that is no run: they never rot, and never end in a traceback."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from kgfact.cli import main
from kgfact.rundir import RunDir

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
IDS = {"ids": lambda p: p.stem}

# what each notebook prints on the partial run (build complete, slick interrupted): one line
# per cell that cannot draw, naming the command that writes the table it lacks
PARTIAL = {
    "knowledge_categories": {"no slick table: 'kgfact slick {run}' writes it (slick: interrupted)"},
    "factuality_gap": {
        "no dynamics table: 'kgfact finetune {run}' writes it (finetune: not run)",
        "no regression table: 'kgfact evaluate {run}' writes it (evaluate: not run)",
        "no gap table: 'kgfact evaluate {run}' writes it (evaluate: not run)",
        "no accuracy table: 'kgfact evaluate {run}' writes it (evaluate: not run)"},
    "prompt_subgraphs": {
        "no theory_metrics table: 'kgfact theory {run}' writes it (theory: not run)",
        "no theory_predictions table: 'kgfact theory {run}' writes it (theory: not run)",
        "no theory_stats table: 'kgfact theory {run}' writes it (theory: not run)",
        "no cot_steps table: 'kgfact theory {run}' writes it (theory: not run)"},
}
ALL_STAGES = ("build", "slick", "ftsets", "finetune", "evaluate", "theory", "report")


def execute(path: Path, run: Path, monkeypatch) -> list:
    """Execute notebook ``path`` on run directory ``run``; its code cells' outputs, cell by
    cell. A cell that raises fails the test (nbclient's CellExecutionError shows it)."""
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("KGFACT_RUN", str(run))  # the kernel inherits the environment
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    return [c.outputs for c in nb.cells if c.cell_type == "code"]


def printed(cells: list) -> set[str]:
    """The lines the notebook printed (its messages)."""
    return {line for outputs in cells for o in outputs
            if o.output_type == "stream" and o.name == "stdout"
            for line in o.text.splitlines() if line}


def figures(cells: list) -> int:
    return sum("image/png" in o.get("data", {}) for outputs in cells for o in outputs)


def stage_states(cells: list) -> dict[str, str]:
    """The state of each stage as the status table (second code cell) shows it."""
    (shown,) = [o.data["text/plain"] for o in cells[1] if "data" in o]
    return dict(re.findall(r"^\d+\s+(\w+)\s+(\w+(?: run)?)\s+\S+$", shown, re.M))


def test_the_three_notebooks_exist_without_outputs():
    import nbformat

    assert {p.stem for p in NOTEBOOKS} == set(PARTIAL)
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), path


@pytest.fixture(scope="module")
def partial_run(mini_store, tmp_path_factory) -> Path:
    """``kgfact build`` complete, then a ``kgfact slick`` that was killed (recorded as running,
    with no process holding the run)."""
    run = tmp_path_factory.mktemp("partial") / "run"
    assert main(["build", "--endpoint", mini_store.query_url, "--run", str(run), "--quiet",
                 "--relations", "P17,P36,P1376", "--ood", "P30"]) == 0
    RunDir(run).annotate("slick", status="running")
    return run


@pytest.mark.parametrize("path", NOTEBOOKS, **IDS)
def test_a_partial_run_names_the_command_each_missing_table_needs(path, partial_run,
                                                                  monkeypatch):
    cells = execute(path, partial_run, monkeypatch)
    assert printed(cells) == {line.format(run=partial_run) for line in PARTIAL[path.stem]}
    assert stage_states(cells) == {"build": "complete", "slick": "interrupted",
                                   **{s: "not run" for s in ALL_STAGES[2:]}}
    if path.stem == "prompt_subgraphs":  # the build's tables are there: its cells still draw
        kg = [o for o in cells[2] if "data" in o]
        summary = kg[0].data["text/plain"].splitlines()[1].split()
        assert len(kg) == 2 and summary[1:4] == ["64", "70", "4"]  # entities, edges, relations


@pytest.mark.parametrize("path", NOTEBOOKS, **IDS)
def test_a_path_that_is_no_run_is_one_line(path, tmp_path, monkeypatch):
    cells = execute(path, tmp_path / "nope", monkeypatch)
    assert printed(cells) == {
        f"{tmp_path / 'nope'} is no kgfact run (no manifest.json): set KGFACT_RUN to a run "
        f"directory, or make one with 'kgfact run CONFIG --run {tmp_path / 'nope'}'"}
    assert figures(cells) == 0 and not (tmp_path / "nope").exists()


@pytest.fixture(scope="module")
def stage_by_stage_run(smoke_run, tmp_path_factory) -> Path:
    """The smoke run's tables under the manifest one command per stage leaves: no ``run``
    entry, no pipeline record in the stages' entries (running each stage's command again on
    the smoke config would take as long as the smoke run)."""
    run = tmp_path_factory.mktemp("stage-by-stage") / "run"
    shutil.copytree(smoke_run, run, ignore=shutil.ignore_patterns("adapters", "checkpoints"))
    manifest = json.loads((run / "manifest.json").read_text())
    del manifest["stages"]["run"]
    for entry in manifest["stages"].values():
        entry.pop("pipeline", None)
    (run / "manifest.json").write_text(json.dumps(manifest))
    return run


@pytest.mark.slow
@pytest.mark.parametrize("made_by", ["kgfact run", "one command per stage"])
@pytest.mark.parametrize("path", NOTEBOOKS, **IDS)
def test_notebook_draws_everything_on_a_finished_run(path, made_by, request, monkeypatch):
    run = request.getfixturevalue("smoke_run" if made_by == "kgfact run"
                                  else "stage_by_stage_run")
    cells = execute(path, run, monkeypatch)
    # evaluate writes no regression when the run has too few points to fit it
    unfitted = path.stem == "factuality_gap" and not RunDir(run).has_table("regression")
    assert printed(cells) == ({f"no regression table: 'kgfact evaluate {run}' writes it "
                               "(evaluate: complete)"} if unfitted else set())
    assert stage_states(cells) == dict.fromkeys(ALL_STAGES, "complete")
    assert figures(cells) == {"knowledge_categories": 2, "factuality_gap": 3,
                              "prompt_subgraphs": 2}[path.stem]
