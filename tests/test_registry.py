"""What a registry entry brings with nothing else to change, shown by toys defined and
registered here and run through the CLI: a stage registered in :data:`kgfact.stages.STAGES` is
a step of ``kgfact run`` and a command; a prompt mode registered in
:data:`kgfact.prompts.PROMPT_MODES` is evaluated in its own format and read by the theory."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import pandas as pd
import pytest

from kgfact.cli import main
from kgfact.config import check_fields
from kgfact.prompts import PROMPT_MODES, PromptMode
from kgfact.rundir import RunDir, config_json
from kgfact.sampling import BACKENDS, Generation
from kgfact.stages import STAGES, Stage
from tests import ftworld
from tests.test_evaluate import OracleBackend

NAME = "toy"
MARK = "toy.txt"  # a file a complete toy stage leaves beside its table


@dataclass(frozen=True)
class ToyConfig:
    """What the toy stage writes."""

    words: tuple[str, ...] = field(default=("a",), metadata={
        "help": "Words to write.", "nonempty": True})
    times: int = field(default=1, metadata={"help": "How often to write each.", "min": 1})

    def __post_init__(self) -> None:
        check_fields(self)


def run_toy(run: RunDir, config: ToyConfig, *, progress: bool = True) -> pd.DataFrame:
    """The toy runner: takes no ``force`` (its entry does not honour it)."""
    with run.stage(NAME, config_json(config)):
        table = pd.DataFrame({"word": [w for w in config.words for _ in range(config.times)]})
        run.write_table(NAME, table)
        (run.path / MARK).write_text(" ".join(table["word"]) + f" progress={progress}")
    return table


def show_toy(run: RunDir, table: pd.DataFrame) -> None:
    print(f"toy: {len(table)} words in {run.path}")


@pytest.fixture
def toy(monkeypatch):
    """The registry holding the toy stage alone (so ``kgfact run`` runs it in seconds), put
    back as it was afterwards."""
    monkeypatch.setattr(STAGES, "_items", {})  # the registry has no way to remove a stage
    return STAGES.register(NAME, Stage(
        NAME, "a toy stage defined by a test", f"{__name__}:ToyConfig", f"{__name__}:run_toy",
        (), (NAME,), aliases={"times": "--repeat"}, summary=f"{__name__}:show_toy",
        files=(MARK,)))


def test_a_registered_stage_is_a_step_of_kgfact_run(toy, tmp_path, capsys):
    config, run = tmp_path / "toy.toml", tmp_path / "run"
    config.write_text('[toy]\nwords = ["x", "y"]\ntimes = 2\n')
    assert main(["run", str(config), "--run", str(run), "--quiet"]) == 0
    assert "kgfact run: toy: done in" in capsys.readouterr().err
    assert RunDir(run).read_table(NAME)["word"].tolist() == ["x", "x", "y", "y"]
    assert (run / MARK).read_text() == "x x y y progress=False"
    entry = RunDir(run).manifest()["stages"]
    assert entry[NAME]["status"] == "complete" and entry["run"]["config"][NAME] == {
        "words": ["x", "y"], "times": 2}

    assert main(["run", str(config), "--run", str(run)]) == 0  # complete: skipped
    assert "kgfact run: toy: complete, skipped" in capsys.readouterr().err
    (run / MARK).unlink()  # what the entry says a complete toy stage leaves
    assert main(["run", str(config), "--run", str(run)]) == 0
    assert "kgfact run: toy: done in" in capsys.readouterr().err

    config.write_text("[toy]\ntimez = 2\n")  # its table is checked as any stage's
    assert main(["run", str(config), "--run", str(run)]) == 2
    assert capsys.readouterr().err == (f"kgfact: error: {config}: unknown key toy.timez (did you "
                                       "mean 'times'?); valid keys: words, times\n")


def test_a_registered_stage_is_a_command(toy, tmp_path, capsys):
    run = tmp_path / "run"
    with RunDir(run).create().stage("build", {}):  # a run: a manifest
        pass
    # its flags generated from its config, its alias, its summary; its runner takes no force
    assert main([NAME, str(run), "--words", "p,q", "--repeat", "3"]) == 0
    assert capsys.readouterr().out == f"toy: 6 words in {run}\n"
    assert RunDir(run).read_table(NAME)["word"].tolist() == ["p"] * 3 + ["q"] * 3
    assert (run / MARK).read_text().endswith("progress=True")
    with pytest.raises(SystemExit) as exit:
        main([NAME, str(run), "--force"])  # not a flag of a stage that does not honour it
    assert exit.value.code == 2
    assert "unrecognized arguments: --force" in capsys.readouterr().err
    assert main([NAME, str(run), "--times", "0"]) == 2
    assert capsys.readouterr().err == "kgfact: error: [toy]: times must be >= 1, got 0\n"


def test_a_registered_stage_without_a_planner_has_a_row_in_the_dry_run(toy, tmp_path, capsys):
    config, run = tmp_path / "toy.toml", tmp_path / "run"
    config.write_text('[toy]\nwords = ["x"]\n')
    generic = "toy    to do  no estimate for this stage  -      -     -"
    total = ("total: 0 s of generation and training on this machine (0 of 1 steps already "
             "complete; model loading and the steps without a rate are not in it)")
    assert main(["run", str(config), "--run", str(run), "--dry-run"]) == 0
    assert capsys.readouterr().out.splitlines()[1:] == [
        "stage  state  work                        units  rate  time", generic, total]
    assert not run.exists()
    with RunDir(run).create().stage("build", {}):  # its command's dry run, on a run
        pass
    assert main([NAME, str(run), "--dry-run", "--repeat", "2"]) == 0
    assert capsys.readouterr().out.splitlines()[2:] == [generic, total]
    assert not RunDir(run).has_table(NAME)


# -- a prompt mode -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Quoted(PromptMode):
    """A toy mode with a format of its own: ``Question:`` and ``Answer:``, the exemplars'
    answers in double quotes, and a generation's answer read from between its first quotes."""

    def query(self, question: str, start: str | None = None) -> str:
        return f"Question: {question}\nAnswer:" + (f" {start}" if start else "")

    def exemplar(self, question: str, answer: str, steps: str | None = None) -> str:
        return f'{self.query(question)} "{answer}"\n\n'

    def parse(self, generation: str) -> tuple[str, list[str]]:
        quoted = re.search(r'"([^"]*)"', generation)
        return (quoted.group(1) if quoted else generation.strip()), []


class QuotingOracle(OracleBackend):
    """A scripted backend recording what it is asked: FT-Known adapters know every answer, the
    other models say "I don't know"; asked in the toy format, it quotes its answer and talks
    on."""

    gold: dict[str, str] = {}
    asked: list[tuple[str, int, str, str]] = []

    def generate(self, requests, config, on_done=None):
        out = []
        for r in requests:
            QuotingOracle.asked.append((r.key, config.max_new_tokens, r.prefix, r.suffix))
            known = "ft-known" in (self.adapter or "")
            answer = self.gold[r.key.split("|")[1]] if known else "I don't know"
            quoted = r.suffix.startswith("Question: ")
            out.append(Generation(r.key, f' "{answer}", I would say.' if quoted else f" {answer}",
                                  ()))
        return out


@pytest.fixture
def quoted(monkeypatch):
    """The toy mode registered as "quoted", the oracle as a backend, and the registry of stages
    holding evaluation and theory alone; all put back as they were afterwards."""
    monkeypatch.setitem(PROMPT_MODES._items, "quoted", Quoted(exemplars=True, max_new_tokens=12))
    monkeypatch.setitem(BACKENDS._items, "quoting-oracle", QuotingOracle)
    monkeypatch.setattr(STAGES, "_items", {n: STAGES.get(n) for n in ("evaluate", "theory")})
    monkeypatch.setattr(QuotingOracle, "asked", [])


def test_a_registered_prompt_mode_is_evaluated_in_its_format_and_read_by_the_theory(
        quoted, monkeypatch, tmp_path, capsys):
    run = ftworld.make_ft_run(tmp_path / "run")
    for name in ("ft-known", "ft-unknown"):
        for checkpoint in ("early_stop", "convergence"):
            (run.path / "adapters" / name / "seed-0" / checkpoint).mkdir(parents=True)
    qa = run.read_table("qa").set_index("qid")
    QuotingOracle.gold = qa["answer"].to_dict()
    config = tmp_path / "quoted.toml"
    config.write_text('[evaluate]\nmodes = ["zero-shot", "quoted"]\nshots = 2\nn_prompts = 2\n'
                      'bootstrap = 20\n\n[backend]\nname = "quoting-oracle"\n\n'
                      '[theory.prediction]\nn_boot = 20\nmin_bucket = 1\n')
    assert main(["run", str(config), "--run", str(run.path), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "kgfact run: evaluate: done in" in err and "kgfact run: theory: done in" in err

    # its prompts in its own format: every exemplar quoted, the query asked as it asks it
    prompts = run.read_table("prompts").set_index("prompt_id")
    mine = prompts[prompts["mode"] == "quoted"]
    assert sorted(mine.index) == [f"quoted/random/-/{r}/{p}" for r in ("P131", "P17")
                                  for p in (0, 1)]
    for pid, row in mine.iterrows():
        assert row["prefix"] == "".join(
            f'Question: {qa.loc[e, "question"]}\nAnswer: "{qa.loc[e, "answer"]}"\n\n'
            for e in row["exemplars"])
    assert mine.loc["quoted/random/-/P17/0", "prefix"] == (
        'Question: Which country is Town 2 in?\nAnswer: "Hyperborea"\n\n'
        'Question: Which country is Town 56 in?\nAnswer: "Hyperborea"\n\n')
    asked = pd.DataFrame(QuotingOracle.asked, columns=["key", "budget", "prefix", "suffix"])
    asked["qid"] = asked["key"].str.split("|").str[1]
    toy = asked[asked["key"].str.startswith("quoted/")]
    assert set(toy["budget"]) == {12} and set(asked.loc[~asked.index.isin(toy.index),
                                                        "budget"]) == {16}
    assert (toy["suffix"] == [f"Question: {qa.loc[q, 'question']}\nAnswer:"
                              for q in toy["qid"]]).all()
    assert (toy["prefix"] == [prompts.loc[k.split("|")[0], "prefix"] for k in toy["key"]]).all()
    # and no steps: its prompts state their exemplars' edges only
    edges = run.read_table("prompt_edges")
    assert set(edges.loc[edges["prompt_id"].isin(mine.index), "source"]) == {"exemplar"}

    # its answers read by its parser: the quoted words, "I don't know" an abstention
    predictions = run.read_table("predictions")
    p = predictions[predictions["mode"] == "quoted"]
    known = p[p["set"] == "ft-known"]
    assert (known["generation"] == [f' "{qa.loc[q, "answer"]}", I would say.'
                                    for q in known["qid"]]).all()
    assert (known["prediction"] == [qa.loc[q, "answer"] for q in known["qid"]]).all()
    assert known["correct"].all() and not known["abstained"].any()
    others = p[p["set"] != "ft-known"]
    assert set(others["prediction"]) == {"I don't know"} and others["abstained"].all()
    assert p["cot_steps"].map(len).eq(0).all()
    assert len(p) == 5 * 12 * 2  # base + 2 sets x 2 checkpoints, 12 queries, 2 prompts

    # the theory reads the registry: a mode with exemplars and no steps is prompted, its A is
    # the direct one (rel_align · prompt_known), its statistics are its own
    metrics = run.read_table("theory_metrics")
    m = metrics[metrics["mode"] == "quoted"].drop_duplicates("prompt_id").set_index("prompt_id")
    category = run.read_table("slick").set_index("qid")["category"]
    for pid, row in m.iterrows():
        exemplars = prompts.loc[pid, "exemplars"]
        assert row["prompt_known"] == (category[exemplars] != "Unknown").mean()
        assert (row["rel_align"], row["A"]) == (1.0, row["prompt_known"])
    assert m["A"].nunique() > 1  # the exemplar sets differ in what the model knows
    assert metrics.loc[metrics["mode"] == "zero-shot", "A"].eq(0).all()
    stats = run.read_table("theory_stats")
    assert set(stats["mode"]) == {"quoted", "all", "zero-shot"}  # zero-shot: α's training row
    preds = run.read_table("theory_predictions")
    assert set(preds["mode"]) == {"quoted"}
    assert (preds["measured_gap"] == 1.0).all() and (preds["zero_shot_gap"] == 1.0).all()

    # a run evaluated under a mode no longer registered is refused in one line
    monkeypatch.delitem(PROMPT_MODES._items, "quoted")
    assert main(["theory", str(run.path)]) == 2
    assert capsys.readouterr().err.startswith("kgfact: error: unknown prompt mode 'quoted'")
