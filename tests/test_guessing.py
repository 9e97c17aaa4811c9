"""Knownness vs guessing on a small hand-made run: exact flags, defaults and baselines."""

from __future__ import annotations

import pandas as pd
import pytest

from kgfact.guessing import default_answers, flag_guesses, guess_mix, in_question, prior_baselines
from tests.test_entityquestions import shared_eq_root  # noqa: F401 (a fixture)


def _qa() -> pd.DataFrame:
    rows = [  # qid, relation, subject_label, answer, aliases, split
        ("a1", "P495", "Star Wars", "United States of America", ["USA"], "train"),
        ("a2", "P495", "Amélie", "France", [], "train"),
        ("a3", "P495", "Jaws", "United States of America", ["USA"], "train"),
        ("a4", "P495", "Seven Samurai", "Japan", [], "test"),
        ("a5", "P495", "Rocky", "United States of America", ["USA"], "test"),
        ("b1", "P36", "Mexico", "Mexico City", [], "train"),
        ("b2", "P36", "Japan", "Tokyo", [], "train"),
        ("b3", "P36", "Peru", "Lima", [], "test"),
        ("b4", "P36", "Kuwait", "Kuwait City", [], "test"),
    ]
    frame = pd.DataFrame(rows, columns=["qid", "relation", "subject_label", "answer", "aliases",
                                        "split"])
    return frame.assign(question="Q?")


def _slick() -> pd.DataFrame:
    greedy = {  # two prompts per question
        "a1": ["United States of America", "USA"], "a2": ["United States of America", "France"],
        "a3": ["United States of America", "United States of America"],
        "a4": ["Japan", "United States of America"], "a5": ["usa", "United States of America"],
        "b1": ["Mexico City", "Mexico City"], "b2": ["Tokyo", "Tokyo"],
        "b3": ["Tokyo", "Lima"], "b4": ["Kuwait City", ""],
    }
    category = {"a1": "HighlyKnown", "a2": "MaybeKnown", "a3": "HighlyKnown",
                "a4": "MaybeKnown", "a5": "HighlyKnown", "b1": "HighlyKnown",
                "b2": "HighlyKnown", "b3": "MaybeKnown", "b4": "MaybeKnown"}
    qa = _qa()
    return pd.DataFrame({"qid": qa["qid"], "relation": qa["relation"], "split": qa["split"],
                         "category": qa["qid"].map(category),
                         "greedy_answers": qa["qid"].map(greedy)})


@pytest.mark.parametrize("subject, answer, aliases, expected", [
    ("Mexico", "Mexico City", [], True),
    ("Ford Motor Company", "Henry Ford", [], True),
    ("United Kingdom", "United States of America", ["USA"], False),  # "united" is generic
    ("Quebec City", "Canada", [], False),                             # "city" is generic
    ("Kuwait", "Kuwait City", [], True),
    ("Jaws", "Steven Spielberg", ["Spielberg"], False),
    ("Le Mans", "France", ["Mans"], True),                            # through an alias
    ("XY", "XY", [], False),                                          # under three letters
])
def test_in_question(subject, answer, aliases, expected):
    assert in_question(subject, answer, aliases) is expected


def test_default_answers_fold_spellings_and_count_shares():
    table = default_answers(_slick()).set_index("relation")
    # P495: 6 of 10 greedy answers normalise to "united states of america" ("USA" and "usa" do
    # not: aliases belong to facts, not to answers)
    assert table.loc["P495", "default_answer"] == "United States of America"
    assert table.loc["P495", "default_share"] == pytest.approx(6 / 10)
    assert table.loc["P495", "n_answers"] == 10
    # P36: the empty answer is not an answer; Tokyo 3 and Mexico City 2 of 7
    assert table.loc["P36", "default_answer"] == "Tokyo"
    assert table.loc["P36", "default_share"] == pytest.approx(3 / 7)
    assert table.loc["P36", "n_answers"] == 7


def test_flag_guesses_kinds():
    flagged = flag_guesses(_slick(), _qa()).set_index("qid")
    assert flagged["guess_kind"].fillna("-").to_dict() == {
        "a1": "default-answer", "a2": "-", "a3": "default-answer", "a4": "-",
        "a5": "default-answer", "b1": "in-question", "b2": "default-answer", "b3": "-",
        "b4": "in-question"}
    assert flagged["guess"].sum() == 6


def test_guess_mix_counts_known_guesses():
    mix = guess_mix(flag_guesses(_slick(), _qa())).set_index(["relation", "category"])
    assert mix.loc[("P495", "HighlyKnown")].to_dict() == {
        "n": 3, "guesses": 3, "default-answer": 3, "in-question": 0}
    assert mix.loc[("all", "MaybeKnown")].to_dict() == {
        "n": 4, "guesses": 1, "default-answer": 0, "in-question": 1}


def test_prior_baselines():
    table = prior_baselines(_qa(), _slick()).set_index("relation")
    # P495 test: Japan, USA -> always "United States of America" is right once in two
    assert table.loc["P495", "majority_answer"] == "United States of America"
    assert table.loc["P495", "majority_accuracy"] == 0.5
    assert table.loc["P495", "default_accuracy"] == 0.5
    # P36 train answers tie (one each): the alphabetically first; neither is a test answer
    assert table.loc["P36", "majority_answer"] == "Mexico City"
    assert table.loc["P36", "majority_accuracy"] == 0.0
    assert table.loc["P36", "default_answer"] == "Tokyo"
    assert table.loc["P36", "default_accuracy"] == 0.0
    assert table["n"].to_dict() == {"P36": 2, "P495": 2}


@pytest.mark.slow
def test_entityquestions_p495_knowledge_is_mostly_the_default_answer(tmp_path, shared_eq_root):
    """Gemma 3 270M on EntityQuestions' country of origin (P495): what SliCK calls known is
    mostly "United States of America", the model's default answer, which is also the most
    frequent train answer; the guess flags say so (a reduced SliCK protocol, 60 questions)."""
    from kgfact.cli import main
    from kgfact.rundir import RunDir

    path = tmp_path / "eq"
    assert main(["build", "--entityquestions", str(shared_eq_root), "--run", str(path),
                 "--relations", "P495,P36", "--ood", "P50", "--max-questions", "80",
                 "--quiet"]) == 0
    assert main(["slick", str(path), "--relations", "P495", "--splits", "train",
                 "--max-questions", "60", "--prompts", "2", "--samples", "2", "--quiet"]) == 0
    run = RunDir(path)
    slick = run.read_table("slick")
    default = default_answers(slick).set_index("relation").loc["P495"]
    assert default["default_answer"] == "United States of America"
    assert default["default_share"] > 0.5
    known = slick[(slick["relation"] == "P495") & (slick["category"] != "Unknown")]
    assert len(known) >= 20
    assert (known["guess_kind"] == "default-answer").mean() > 0.5
    baselines = run.read_table("guess_baselines").set_index("relation").loc["P495"]
    assert baselines["majority_answer"] == "United States of America"
    assert baselines["default_accuracy"] > 0.5  # always "USA" is right on most test questions
