"""Knownness vs guessing on a small hand-made run: exact flags, defaults and baselines."""

from __future__ import annotations

from collections import Counter

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kgfact.answers import normalize
from kgfact.guessing import (default_answers, flag_guesses, in_question, own_defaults,
                             prior_baselines)
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


def test_default_answers_say_whether_the_top_answer_is_a_real_default():
    table = default_answers(_slick()).set_index("relation")
    # P495: 6 of 10 against "usa" 2 of 10 (3x, and at least a quarter); P36: Tokyo 3 of 7
    # against Mexico City 2 of 7 (not twice)
    assert table["runner_up_share"].to_dict() == pytest.approx({"P36": 2 / 7, "P495": 2 / 10})
    assert table["real_default"].to_dict() == {"P36": False, "P495": True}


def test_flag_guesses_kinds():
    flagged = flag_guesses(_slick(), _qa()).set_index("qid")
    # each question's default comes from the other questions' answers: b2's own two "Tokyo"
    # made Tokyo P36's default and flagged b2 as a guess of it; without them Mexico City leads
    # (2 of 5, twice the runner-up), which is not b2's answer. For b3 Mexico City and Tokyo tie
    # (no default); for b4 Tokyo 3 of 6 is not twice Mexico City's 2.
    assert flagged["guess_kind"].fillna("-").to_dict() == {
        "a1": "default-answer", "a2": "-", "a3": "default-answer", "a4": "-",
        "a5": "default-answer", "b1": "in-question", "b2": "-", "b3": "-",
        "b4": "in-question"}
    assert flagged["guess"].sum() == 5


def test_a_fact_is_never_the_default_answer_of_its_own_answers():
    answers = {  # relation: {qid: (gold, greedy answers)}
        # R: Paris is the top answer only through k1's own ten: no default for k1, and Paris
        # (10 of 20, twice Lima's 5) is k2's and k3's default, which is not their answer
        "R": {"k1": ("Paris", ["Paris"] * 10), "k2": ("Rome", ["Rome"] * 4 + ["Lima"] * 3
                                                      + ["Oslo"] * 3),
              "k3": ("Lima", ["Lima"] * 5 + ["Oslo"] * 5)},
        # S: the other questions answer Berlin too: a real default, and u1, u3 guess it
        "S": {"u1": ("Berlin", ["Berlin"] * 10), "u2": ("Vienna", ["Berlin"] * 8 + ["Vienna"] * 2),
              "u3": ("Berlin", ["Berlin"] * 7 + ["Madrid"] * 3)},
        # T: for t1, Kappa leads the others' answers 4 to 1 but is only 4 of 20 (under a quarter)
        "T": {"t1": ("Kappa", ["Kappa"] * 10),
              "t2": ("Omega", ["Kappa"] * 4 + [f"Town{i}" for i in range(6)]),
              "t3": ("Sigma", [f"City{i}" for i in range(10)])},
    }
    rows = [(qid, relation, gold, greedy) for relation, facts in answers.items()
            for qid, (gold, greedy) in facts.items()]
    slick = pd.DataFrame([(q, r, g) for q, r, _, g in rows],
                         columns=["qid", "relation", "greedy_answers"])
    qa = pd.DataFrame([(q, r, f"Subject {q}", a, []) for q, r, a, _ in rows],
                      columns=["qid", "relation", "subject_label", "answer", "aliases"])
    flagged = flag_guesses(slick, qa).set_index("qid")
    assert flagged["guess_kind"].fillna("-").to_dict() == {
        "k1": "-", "k2": "-", "k3": "-", "u1": "default-answer", "u2": "-",
        "u3": "default-answer", "t1": "-", "t2": "-", "t3": "-"}
    table = default_answers(slick).set_index("relation")
    assert table["default_answer"].to_dict() == {"R": "Paris", "S": "Berlin", "T": "Kappa"}
    assert table["default_share"].to_dict() == pytest.approx({"R": 1 / 3, "S": 25 / 30,
                                                             "T": 14 / 30})
    assert table["real_default"].to_dict() == {"R": False, "S": True, "T": True}


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


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["R", "S"]),
                          st.lists(st.sampled_from(["Paris", "paris", "Rome", "Lima", "Oslo", "",
                                                    "Bern"]), max_size=6)),
                min_size=1, max_size=12))
def test_own_defaults_equal_a_recount_without_each_question(records):
    slick = pd.DataFrame(records, columns=["relation", "greedy_answers"])
    got = own_defaults(slick)
    for i, (relation, _) in enumerate(records):
        others = [normalize(a) for j, (r, greedy) in enumerate(records)
                  if r == relation and j != i for a in greedy if normalize(a)]
        counts = Counter(others)
        ranked = sorted(counts, key=lambda k: (-counts[k], k))
        top = counts[ranked[0]] if ranked else 0
        second = counts[ranked[1]] if len(ranked) > 1 else 0
        real = bool(others) and top >= 0.25 * len(others) and top >= 2 * second
        assert (normalize(got[i]) if got[i] is not None else None) == (
            ranked[0] if real else None), (i, records)
