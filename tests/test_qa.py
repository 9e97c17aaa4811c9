"""Question building, filters and splits, with exact values on the mini world."""

from __future__ import annotations

import pandas as pd
import pytest

from kgfact.errors import KgfactError
from kgfact.qa import QA_COLUMNS, QAConfig, build_qa, build_two_hop, drop_leakage
from tests import miniworld

CONFIG = QAConfig(in_distribution=("P17", "P36", "P1376"), out_of_distribution=("P30",),
                  leakage_filter="none")


@pytest.fixture(scope="module")
def built():
    return build_qa(*miniworld.tables(), CONFIG)


def test_filters_count_exactly(built):
    qa, report = built
    assert report["multiple_answers"] == {"P17": 1, "P36": 0, "P1376": 0, "P30": 0}
    assert report["missing_label"] == {"P17": 1, "P36": 0, "P1376": 0, "P30": 0}
    assert report["ambiguous_question"] == {"P17": 2}   # the two "Twin Town"s disagree
    assert report["duplicate_question"] == {}
    assert qa["relation"].value_counts().to_dict() == {"P17": 56, "P36": 3, "P1376": 3, "P30": 3}
    assert not qa["subject"].isin(["Q1059", "Q1030", "Q1010", "Q1012"]).any()


def test_split_sizes_and_distribution(built):
    qa, _ = built
    sizes = qa.groupby(["relation", "split"]).size().to_dict()
    assert sizes == {("P17", "train"): 45, ("P17", "dev"): 6, ("P17", "test"): 5,
                     ("P36", "train"): 2, ("P36", "test"): 1,
                     ("P1376", "train"): 2, ("P1376", "test"): 1, ("P30", "test"): 3}
    assert set(qa.loc[qa["relation"] == "P30", "distribution"]) == {"ood"}
    assert set(qa.loc[qa["relation"] != "P30", "distribution"]) == {"id"}
    assert list(qa.columns) == QA_COLUMNS and qa["qid"].is_unique


def test_question_text_answers_and_popularity(built):
    qa, _ = built
    row = qa.set_index("qid").loc["P36/Q100"]
    assert row["question"] == "What is the capital city of Atlantis?"
    assert row["answer"] == "Town 0" and row["object"] == "Q1000"
    assert row["popularity"] == 1_000_000.0
    inj = qa.set_index("qid").loc["P17/Q1020"]  # town 20: 20 % 3 == 2 -> Hyperborea
    assert inj["question"] == f"Which country is {miniworld.INJECTION} in?"
    assert inj["answer"] == "Hyperborea" and list(inj["aliases"]) == ["Republic of Hyperborea"]


def test_same_seed_same_splits_other_seed_differs():
    a, _ = build_qa(*miniworld.tables(), CONFIG)
    b, _ = build_qa(*miniworld.tables(), CONFIG)
    c, _ = build_qa(*miniworld.tables(), QAConfig(**{**CONFIG.__dict__, "seed": 1}))
    assert a.equals(b)
    assert not a["split"].equals(c.set_index("qid").loc[a["qid"], "split"].reset_index(drop=True))


def _split_table(rows):
    return pd.DataFrame(rows, columns=["qid", "relation", "subject", "object", "split",
                                       "distribution"])


def test_leakage_rules_exact():
    qa = _split_table([
        ("a", "P17", "T1", "C1", "train", "id"),   # object C1 is asked about in ID test
        ("b", "P17", "T2", "C2", "train", "id"),   # C2 only appears as an answer in test
        ("c", "P17", "T3", "C3", "train", "id"),   # T3/C3 only in OOD test
        ("d", "P17", "T4", "C4", "train", "id"),   # untouched by every rule
        ("e", "P36", "C1", "T9", "test", "id"),
        ("f", "P17", "T8", "C2", "test", "id"),
        ("g", "P30", "C3", "K1", "test", "ood"),
    ])
    for rule, dropped in {"none": [], "test_subjects": ["a"],
                          "test_entities": ["a", "b", "c"]}.items():
        report = {}
        kept = drop_leakage(qa, rule, report)
        assert sorted(set(qa["qid"]) - set(kept["qid"])) == dropped, rule
        assert sum(report["leakage"].values()) == len(dropped)


def test_two_hop_paths():
    qa, report = build_two_hop(*miniworld.tables(), CONFIG)
    assert report["paths"] == {"P17/P36": 55, "P17/P30": 58, "P1376/P30": 3}
    row = qa.set_index("qid").loc["P17/P36/Q1004"]  # town 4 -> Lemuria -> town 1
    assert row["question"] == "What is the capital city of the country that Town 4 is in?"
    assert list(row["path"]) == ["P17", "P36"]
    assert list(row["path_entities"]) == ["Q1004", "Q200", "Q1001"] and row["answer"] == "Town 1"
    # a capital's own two-hop question would answer with itself: not asked
    assert "P17/P36/Q1001" not in set(qa["qid"])


def test_config_errors():
    with pytest.raises(KgfactError, match="both in and out"):
        QAConfig(in_distribution=("P17",), out_of_distribution=("P17",))
    with pytest.raises(KgfactError, match="unknown relation"):
        QAConfig(in_distribution=("P17", "P4242"))
    with pytest.raises(KgfactError, match="no triples for P50"):
        build_qa(*miniworld.tables(), QAConfig(in_distribution=("P50",)))
