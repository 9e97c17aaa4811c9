"""EntityQuestions importer: the real shared dataset (read in place) and invented malformed files.

The dataset never enters the repository: real-data tests read it from the shared folder beside
the project, and every expected value is taken from the data at test time.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from kgfact.data.entityquestions import (
    EQ_SPLITS,
    QA_COLUMNS,
    EntityQuestionsImport,
    available_relations,
    load_entityquestions,
)
from kgfact.errors import KgfactError
from kgfact.relations import SPLITS

EQ_ROOT = Path(__file__).parents[1].parent / "shared/data/entityquestions"
SLICK = SPLITS.get("slick")


@pytest.fixture(scope="module")
def shared_eq_root() -> Path:
    """The shared EntityQuestions folder; missing data fails under CI and skips elsewhere."""
    if not (EQ_ROOT / "relation_query_templates.json").is_file():
        reason = (f"EntityQuestions (Sciavolino et al. 2021) not found at {EQ_ROOT}; "
                  f"real-data tests need it there")
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return EQ_ROOT


@pytest.fixture(scope="module")
def eq_all(shared_eq_root: Path) -> EntityQuestionsImport:
    return load_entityquestions(shared_eq_root)


def _on_disk(root: Path) -> list[str]:
    return sorted({p.name.split(".")[0] for p in (root / "train").glob("P*.train.json")})


def test_available_relations(shared_eq_root: Path) -> None:
    found = available_relations(shared_eq_root)
    assert sorted(found) == _on_disk(shared_eq_root)
    assert found == sorted(found, key=lambda p: int(p[1:]))


def _error(excinfo: pytest.ExceptionInfo[KgfactError]) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


# --- real data --------------------------------------------------------------------------------


def test_default_loads_slick_relations_on_disk(shared_eq_root: Path,
                                               eq_all: EntityQuestionsImport) -> None:
    slick = list(SLICK.in_distribution + SLICK.out_of_distribution)
    on_disk = _on_disk(shared_eq_root)
    assert eq_all.report["relations"] == [p for p in slick if p in on_disk]
    assert eq_all.report["missing_relations"] == [p for p in slick if p not in on_disk]
    assert eq_all.report["missing_files"] == []
    assert set(eq_all.qa["relation"]) == set(eq_all.report["relations"])
    assert set(eq_all.qa["split"]) == set(EQ_SPLITS)


def test_row_counts_match_files(shared_eq_root: Path, eq_all: EntityQuestionsImport) -> None:
    counts = eq_all.qa.groupby(["relation", "split"]).size()
    for pid in eq_all.report["relations"]:
        for split in EQ_SPLITS:
            items = json.loads((shared_eq_root / split / f"{pid}.{split}.json").read_text("utf-8"))
            stats = eq_all.report["files"][f"{pid}/{split}"]
            assert stats["questions"] == len(items)
            assert stats["rows"] == len(items) - stats["unparsed"]
            assert counts.get((pid, split), 0) == stats["rows"]
    assert eq_all.report["rows"] == len(eq_all.qa)
    assert sum(eq_all.report["unparsed"].values()) == sum(
        f["unparsed"] for f in eq_all.report["files"].values())


def test_qa_table_contract(eq_all: EntityQuestionsImport) -> None:
    qa = eq_all.qa
    assert list(qa.columns) == QA_COLUMNS
    assert qa["qid"].is_unique
    assert (qa["qid"] == qa["relation"] + "/" + qa["split"] + "/"
            + qa["qid"].str.rsplit("/", n=1).str[1]).all()
    assert (qa["subject"] == "eq:" + qa["subject_label"]).all()
    assert (qa["object"] == "eq:" + qa["answer"]).all()
    assert qa["popularity"].dtype == "float64" and qa["popularity"].isna().all()
    assert all(isinstance(a, list) and row_answer not in a and len(set(a)) == len(a)
               for a, row_answer in zip(qa["aliases"], qa["answer"]))
    expected = qa["relation"].map(lambda p: "id" if p in SLICK.in_distribution else "ood")
    assert (qa["distribution"] == expected).all()
    assert {"id", "ood"} == set(qa["distribution"])


@pytest.mark.parametrize("pid", ["P17", "P40", "P50"])
def test_subject_parsed_exactly(shared_eq_root: Path, eq_all: EntityQuestionsImport,
                                pid: str) -> None:
    templates = json.loads((shared_eq_root / "relation_query_templates.json").read_text("utf-8"))
    template = templates[pid]
    before, after = template.split("[X]")
    items = json.loads((shared_eq_root / "dev" / f"{pid}.dev.json").read_text("utf-8"))
    # Prefer a question with several answers, so aliases are checked too.
    index = next((i for i, it in enumerate(items) if len(set(it["answers"])) > 1), 0)
    item = items[index]
    question = item["question"]
    assert question.startswith(before) and question.endswith(after)
    subject = question[len(before):len(question) - len(after)]

    row = eq_all.qa.set_index("qid").loc[f"{pid}/dev/{index}"]
    assert row["subject_label"] == subject
    assert row["subject"] == "eq:" + subject
    assert row["question"] == question
    assert row["answer"] == item["answers"][0]
    assert row["aliases"] == [a for a in dict.fromkeys(item["answers"][1:])
                              if a != item["answers"][0]]
    entity = eq_all.entities.set_index("id").loc["eq:" + item["answers"][0]]
    assert set(row["aliases"]) <= set(entity["aliases"])


def test_triples_and_entities(eq_all: EntityQuestionsImport) -> None:
    triples, entities, qa = eq_all.triples, eq_all.entities, eq_all.qa
    assert list(triples.columns) == ["subject", "relation", "object"]
    assert not triples.duplicated().any()
    pairs = set(zip(qa["subject"], qa["relation"], qa["object"]))
    assert set(zip(triples["subject"], triples["relation"], triples["object"])) == pairs
    assert list(entities.columns) == ["id", "label", "aliases", "sitelinks", "population"]
    assert entities["id"].is_unique
    assert set(entities["id"]) == set(qa["subject"]) | set(qa["object"])
    assert (entities["id"] == "eq:" + entities["label"]).all()
    for column in ("sitelinks", "population"):
        assert entities[column].dtype == "Int64" and entities[column].isna().all()


def test_subset_of_relations_and_splits(shared_eq_root: Path,
                                        eq_all: EntityQuestionsImport) -> None:
    pid = eq_all.report["relations"][0]
    subset = load_entityquestions(shared_eq_root, [pid], splits=["dev"])
    expected = eq_all.qa[(eq_all.qa["relation"] == pid) & (eq_all.qa["split"] == "dev")]
    assert subset.qa["qid"].tolist() == expected["qid"].tolist()
    assert subset.report["missing_relations"] == []


def test_requested_relation_missing_on_disk(shared_eq_root: Path) -> None:
    absent = [p for p in ("P175", "P112") if p not in _on_disk(shared_eq_root)]
    if not absent:
        pytest.skip("the shared copy has P175 and P112")
    with pytest.raises(KgfactError) as excinfo:
        load_entityquestions(shared_eq_root, ["P17", *absent])
    message = _error(excinfo)
    assert all(p in message for p in absent) and str(shared_eq_root) in message
    assert re.search(r"\bP17\b", message) is None  # only the absent relations are named


def test_unknown_relation_uses_registry_error(shared_eq_root: Path) -> None:
    with pytest.raises(KgfactError, match="unknown relation"):
        load_entityquestions(shared_eq_root, ["P999999"])
    with pytest.raises(KgfactError, match="not a Wikidata property id"):
        load_entityquestions(shared_eq_root, ["country"])


# --- invented files ---------------------------------------------------------------------------

# Invented templates and questions (not EntityQuestions text) in the dataset's layout.
TEMPLATES = {"P17": "In which nation does [X] lie?", "P50": "Whose pen produced [X]?",
             "P17_similar": "Which nation holds [X]?"}


def _dataset(root: Path, files: dict[tuple[str, str], Any],
             templates: Any = TEMPLATES) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "relation_query_templates.json").write_text(json.dumps(templates), "utf-8")
    for (pid, split), content in files.items():
        (root / split).mkdir(exist_ok=True)
        text = content if isinstance(content, str) else json.dumps(content)
        (root / split / f"{pid}.{split}.json").write_text(text, "utf-8")
    return root


def _q(subject: str, *answers: str) -> dict[str, Any]:
    return {"question": f"In which nation does {subject} lie?", "answers": list(answers)}


def _full(tmp_path: Path) -> Path:
    return _dataset(tmp_path / "eq", {
        ("P17", "train"): [_q("Zorbland Harbour", "Velmaria", "Velmaria Republic", "Velmaria"),
                           {"question": "Where might Quux be?", "answers": ["Nowhere"]},
                           _q("Velmaria", "Ostrovia"),
                           _q("Glint Tower", "Velmaria", "Old Velmaria")],
        ("P17", "dev"): [_q("Brindle Bay", "Ostrovia")],
        ("P17", "test"): [_q("Kettle Point", "Ostrovia", "Ostrovia")],
        ("P50", "train"): [{"question": "Whose pen produced The Lantern's Map?",
                            "answers": ["Ida Ferren"]}],
    })


def test_invented_dataset_tables(tmp_path: Path) -> None:
    result = load_entityquestions(_full(tmp_path), ["P17", "P50"], splits=["train"])
    qa = result.qa.set_index("qid")
    assert list(qa.index) == ["P17/train/0", "P17/train/2", "P17/train/3", "P50/train/0"]
    first = qa.loc["P17/train/0"]
    assert (first["subject"], first["subject_label"]) == ("eq:Zorbland Harbour", "Zorbland Harbour")
    assert (first["object"], first["answer"]) == ("eq:Velmaria", "Velmaria")
    assert first["aliases"] == ["Velmaria Republic"]
    assert qa.loc["P50/train/0", "subject_label"] == "The Lantern's Map"
    assert qa["distribution"].to_dict() == {"P17/train/0": "id", "P17/train/2": "id",
                                            "P17/train/3": "id", "P50/train/0": "ood"}
    assert result.report["unparsed"] == {"P17": 1, "P50": 0}
    assert result.report["files"]["P17/train"] == {"questions": 4, "rows": 3, "unparsed": 1}

    entities = result.entities.set_index("id")
    # Velmaria is both a subject and an object; its aliases gather every question's other answers.
    assert entities.loc["eq:Velmaria", "aliases"] == ["Velmaria Republic", "Old Velmaria"]
    assert entities.loc["eq:Velmaria", "label"] == "Velmaria"
    assert entities.loc["eq:Zorbland Harbour", "aliases"] == []
    assert len(result.triples) == 4


def test_aliases_deduplicated_and_exclude_answer(tmp_path: Path) -> None:
    root = _dataset(tmp_path / "eq", {("P17", "dev"): [_q("Mossgate", "A", "B", "A", "B", "C")]})
    qa = load_entityquestions(root, ["P17"], splits=["dev"]).qa
    assert qa.loc[0, "answer"] == "A" and qa.loc[0, "aliases"] == ["B", "C"]


def test_other_relation_split_sets_distribution(tmp_path: Path) -> None:
    qa = load_entityquestions(_full(tmp_path), ["P17", "P50"], ["train"], "geonames").qa
    assert qa.groupby("relation")["distribution"].first().to_dict() == {"P17": "id", "P50": "ood"}
    with pytest.raises(KgfactError, match="unknown relation split 'nope'"):
        load_entityquestions(_full(tmp_path), ["P17"], split_name="nope")


def test_default_reports_missing_files_and_relations(tmp_path: Path) -> None:
    root = _full(tmp_path)
    result = load_entityquestions(root)
    assert result.report["relations"] == ["P17", "P50"]
    assert result.report["missing_files"] == ["dev/P50.dev.json", "test/P50.test.json"]
    slick = SLICK.in_distribution + SLICK.out_of_distribution
    assert result.report["missing_relations"] == [p for p in slick if p not in ("P17", "P50")]


def test_explicit_relation_with_missing_file(tmp_path: Path) -> None:
    root = _full(tmp_path)
    with pytest.raises(KgfactError) as excinfo:
        load_entityquestions(root, ["P17", "P50"])
    message = _error(excinfo)
    assert "P50" in message and str(root) in message and "dev/P50.dev.json" in message


def test_no_files_for_default_relations(tmp_path: Path) -> None:
    with pytest.raises(KgfactError, match="no EntityQuestions files"):
        load_entityquestions(_dataset(tmp_path / "eq", {}))


@pytest.mark.parametrize("target", ["absent", "file"])
def test_missing_folder(tmp_path: Path, target: str) -> None:
    root = tmp_path / "eq"
    if target == "file":
        root.write_text("not a folder")
    with pytest.raises(KgfactError) as excinfo:
        load_entityquestions(root)
    message = _error(excinfo)
    assert str(root) in message and "--entityquestions PATH" in message
    assert "Sciavolino et al. 2021" in message


@pytest.mark.parametrize("splits", [["validation"], [], "dev-set"])
def test_unknown_split(tmp_path: Path, splits: Any) -> None:
    with pytest.raises(KgfactError, match="choose from train, dev, test"):
        load_entityquestions(_full(tmp_path), ["P17"], splits=splits)


def test_available_relations_invented(tmp_path: Path) -> None:
    root = _full(tmp_path)
    (root / "dev" / "P9.dev.json").write_text("[]")
    (root / "dev" / "notes.dev.json").write_text("[]")
    assert available_relations(root) == ["P9", "P17", "P50"]
    assert available_relations(root, ["test"]) == ["P17"]
    with pytest.raises(KgfactError, match="--entityquestions PATH"):
        available_relations(tmp_path / "nowhere")


def test_single_relation_and_split_as_strings(tmp_path: Path) -> None:
    qa = load_entityquestions(_full(tmp_path), "P17", splits="dev").qa
    assert qa["qid"].tolist() == ["P17/dev/0"]


@pytest.mark.parametrize(
    ("templates", "expected"),
    [
        (None, "relation_query_templates.json is missing"),
        ("{broken", "is not valid JSON"),
        (["In which nation does [X] lie?"], "expected a JSON object"),
        ({"P50": "Whose pen produced [X]?"}, "has no question template for P17"),
        ({"P17": "In which nation does it lie?"}, "exactly one [X]"),
        ({"P17": "Is [X] in [X]?"}, "exactly one [X]"),
        ({"P17": 17}, "exactly one [X]"),
    ],
)
def test_bad_templates(tmp_path: Path, templates: Any, expected: str) -> None:
    root = _dataset(tmp_path / "eq", {("P17", "dev"): [_q("Mossgate", "Ostrovia")]})
    path = root / "relation_query_templates.json"
    if templates is None:
        path.unlink()
    else:
        path.write_text(templates if isinstance(templates, str) else json.dumps(templates))
    with pytest.raises(KgfactError) as excinfo:
        load_entityquestions(root, ["P17"], splits=["dev"])
    message = _error(excinfo)
    assert str(path) in message and expected in message


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ('[{"question": "In which nation does Mossgate lie?",', "is not valid JSON"),
        ({"question": "In which nation does Mossgate lie?"}, "expected a JSON list"),
        ([_q("Mossgate", "Ostrovia"), "Mossgate"], "item 1 is malformed"),
        ([_q("Mossgate", "Ostrovia"), {"answers": ["Ostrovia"]}], "item 1 is malformed"),
        ([{"question": "In which nation does Mossgate lie?"}], "item 0 is malformed"),
        ([{"question": 7, "answers": ["Ostrovia"]}], "'question' must be a string"),
        ([_q("Mossgate", "Ostrovia"), _q("Fernwick")], "item 1 is malformed: 'answers'"),
        ([{"question": "In which nation does Mossgate lie?", "answers": "Ostrovia"}],
         "item 0 is malformed: 'answers'"),
        ([{"question": "In which nation does Mossgate lie?", "answers": ["Ostrovia", 3]}],
         "item 0 is malformed: 'answers'"),
        ([_q("Mossgate", " ")], "item 0 is malformed: 'answers'"),
    ],
)
def test_malformed_question_file(tmp_path: Path, content: Any, expected: str) -> None:
    root = _dataset(tmp_path / "eq", {("P17", "dev"): content})
    with pytest.raises(KgfactError) as excinfo:
        load_entityquestions(root, ["P17"], splits=["dev"])
    message = _error(excinfo)
    assert str(root / "dev" / "P17.dev.json") in message and expected in message


def test_non_utf8_file(tmp_path: Path) -> None:
    root = _dataset(tmp_path / "eq", {("P17", "dev"): []})
    (root / "dev" / "P17.dev.json").write_bytes(b'[{"question": "\xff"}]')
    with pytest.raises(KgfactError, match="is not UTF-8 text"):
        load_entityquestions(root, ["P17"], splits=["dev"])


def test_empty_file_gives_empty_typed_tables(tmp_path: Path) -> None:
    result = load_entityquestions(_dataset(tmp_path / "eq", {("P17", "dev"): []}), ["P17"],
                                  splits=["dev"])
    assert list(result.qa.columns) == QA_COLUMNS and result.qa.empty
    assert result.qa["popularity"].dtype == "float64"
    assert result.entities.empty and isinstance(result.entities, pd.DataFrame)
