"""Turn triples into closed-book QA data: questions, gold answers, splits and filters.

A QA table has one row per question with the columns of :data:`QA_COLUMNS`. Filters, each
counted in the build report:

- **multiple answers**: a subject with more than one object for the relation is dropped (SliCK
  needs one gold entity per question);
- **ambiguous question**: two subjects with the same label make the same question text; if their
  answers differ the question has more than one correct answer and every copy is dropped, if they
  agree one copy is kept;
- **leakage** (train only): with the default ``"test_subjects"`` rule a train question is dropped
  when its subject or its object is the subject of an in-distribution test question, so
  fine-tuning never states a fact about an entity that a test question asks about.
  ``"test_entities"`` is the strictest reading: a train question is dropped when its subject or
  object appears anywhere in any test question, in or out of distribution, as subject or answer.
  On graphs where one small set of entities (countries) answers one relation and is asked about by
  another, it removes nearly all training data (on the offline default it leaves no P17 train
  question at all), which is why it is not the default.

Splits are drawn per relation with a seeded shuffle: in-distribution relations get
train/dev/test, out-of-distribution relations only dev (few-shot exemplars) and test.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd

from kgfact.answers import normalize
from kgfact.config import check_fields
from kgfact.errors import KgfactError
from kgfact.graph import popularity
from kgfact.relations import RELATIONS, TWO_HOPS, get_relations

QA_COLUMNS = ["qid", "relation", "subject", "subject_label", "object", "answer", "aliases",
              "question", "popularity", "split", "distribution"]
TWO_HOP_COLUMNS = [*QA_COLUMNS, "path", "path_entities"]
LeakageRule = Literal["test_subjects", "test_entities", "none"]


@dataclass(frozen=True)
class QAConfig:
    """How questions are made, filtered and split."""

    in_distribution: tuple[str, ...] | None = field(default=None, metadata={"nonempty": True,
        "help": "Relations with train/dev/test splits (used for fine-tuning); None = the "
                "build's relation split."})
    out_of_distribution: tuple[str, ...] | None = field(default=None, metadata={
        "help": "Test-only relations (dev/test splits; dev gives few-shot exemplars); None = "
                "the build's relation split when in_distribution is None too, else none."})
    train_fraction: float = field(default=0.8, metadata={"min": 0, "max": 1,
        "help": "Share of an in-distribution relation's questions in train."})
    dev_fraction: float = field(default=0.1, metadata={"min": 0, "max": 1,
        "help": "Share of each relation's questions in dev; the rest is test."})
    max_questions_per_relation: int | None = field(default=None, metadata={"min": 1,
        "help": "Sample at most this many questions per relation (before splitting)."})
    leakage_filter: LeakageRule = field(default="test_subjects", metadata={
        "help": "Which train questions to drop for sharing entities with test (see module doc)."})
    two_hop: bool = field(default=True, metadata={
        "help": "Also build two-hop questions with their KG path (for chain-of-thought)."})
    seed: int = field(default=0, metadata={"min": 0, "help": "Seed for sampling and splits."})

    def __post_init__(self) -> None:
        check_fields(self)
        get_relations([*(self.in_distribution or ()), *(self.out_of_distribution or ())])
        both = set(self.in_distribution or ()) & set(self.out_of_distribution or ())
        if both:
            raise KgfactError(f"relations cannot be both in and out of distribution: "
                              f"{', '.join(sorted(both))}")
        if self.train_fraction + self.dev_fraction > 1:
            raise KgfactError("train_fraction and dev_fraction must sum to <= 1")

    @property
    def relations(self) -> tuple[str, ...]:
        return (*(self.in_distribution or ()), *(self.out_of_distribution or ()))


def _rng(seed: int, *names: str) -> np.random.Generator:
    # One stream per relation: adding a relation never reshuffles the others.
    digest = hashlib.sha256("/".join([str(seed), *names]).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def shuffled(group: pd.DataFrame, seed: int, *names: str) -> pd.DataFrame:
    """``group`` in a seeded random order that depends only on its rows and ``names``."""
    group = group.sort_values("qid")
    return group.iloc[_rng(seed, *names).permutation(len(group))]


def sample_per_group(qa: pd.DataFrame, by: list[str], cap: int, seed: int) -> pd.DataFrame:
    """At most ``cap`` seeded-random rows of each group of ``qa`` (grouped by columns ``by``)."""
    parts = [shuffled(group, seed, *map(str, key)).head(cap)
             for key, group in qa.groupby(by, sort=True)]
    return pd.concat(parts, ignore_index=True) if parts else qa


def _single_valued(triples: pd.DataFrame, pid: str, report: dict) -> pd.DataFrame:
    """Triples of ``pid`` whose subject has exactly one object."""
    rel = triples[triples["relation"] == pid].drop_duplicates()
    counts = rel.groupby("subject")["object"].transform("size")
    report["multiple_answers"][pid] = int(rel.loc[counts > 1, "subject"].nunique())
    return rel[counts == 1]


def _questions(name: str, subjects: pd.Series, objects: pd.Series, ask, entities: pd.DataFrame
               ) -> tuple[pd.DataFrame, pd.Series]:
    """Question rows for (subject, object) pairs with both labels known, and the mask of those.

    ``name`` is the relation (or two-hop path) and prefixes every qid; ``ask`` turns a subject
    label into the question text.
    """
    ent = entities.set_index("id")
    s_label, o_label = subjects.map(ent["label"]), objects.map(ent["label"])
    ok = s_label.notna() & o_label.notna()
    frame = pd.DataFrame({
        "qid": name + "/" + subjects[ok],
        "relation": name,
        "subject": subjects[ok],
        "subject_label": s_label[ok],
        "object": objects[ok],
        "answer": o_label[ok],
        "aliases": objects[ok].map(ent["aliases"]).map(list),
        "question": [ask(label) for label in s_label[ok]],
        "popularity": subjects[ok].map(popularity(entities).set_axis(entities["id"]))
                                  .astype("float64"),
    })
    return frame, ok


def candidate_questions(triples: pd.DataFrame, entities: pd.DataFrame, relations: tuple[str, ...],
                        report: dict) -> pd.DataFrame:
    """One question per single-valued (subject, relation), without splits."""
    rows = []
    for pid in relations:
        edges = _single_valued(triples, pid, report)
        frame, ok = _questions(pid, edges["subject"], edges["object"], RELATIONS.get(pid).ask,
                               entities)
        report["missing_label"][pid] = int((~ok).sum())
        rows.append(frame)
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=QA_COLUMNS[:-2])


def drop_ambiguous(qa: pd.DataFrame, report: dict) -> pd.DataFrame:
    """Drop question texts with conflicting answers; keep one copy of agreeing duplicates."""
    key = qa["question"].map(normalize)
    answer = qa["answer"].map(normalize)
    n_answers = answer.groupby([qa["relation"], key]).transform("nunique")
    conflicting = n_answers > 1
    report["ambiguous_question"] = _per_relation(qa.loc[conflicting, "relation"])
    kept = qa[~conflicting]
    dup = kept.assign(_k=key[~conflicting]).duplicated(["relation", "_k"])
    report["duplicate_question"] = _per_relation(kept.loc[dup, "relation"])
    return kept[~dup].reset_index(drop=True)


def _per_relation(relations: pd.Series) -> dict[str, int]:
    return {k: int(v) for k, v in sorted(relations.value_counts().items())}


def assign_splits(qa: pd.DataFrame, config: QAConfig, report: dict, group: str = "relation"
                  ) -> pd.DataFrame:
    """Sample and split each relation (or two-hop path) with its own seeded stream."""
    parts = []
    for name, rel in qa.groupby(group, sort=True):
        rel = shuffled(rel, config.seed, str(name)).head(config.max_questions_per_relation)
        rel = rel.copy()
        first = str(name).split("/")[0]
        in_dist = first in config.in_distribution
        n = len(rel)
        n_train = int(round(n * config.train_fraction)) if in_dist else 0
        n_dev = int(round(n * config.dev_fraction))
        rel["split"] = ["train"] * n_train + ["dev"] * n_dev + ["test"] * (n - n_train - n_dev)
        rel["distribution"] = "id" if in_dist else "ood"
        parts.append(rel)
    out = pd.concat(parts, ignore_index=True) if parts else qa.assign(split=[], distribution=[])
    report["sampled_out"] = int(len(qa) - len(out))
    return out


def drop_leakage(qa: pd.DataFrame, rule: LeakageRule, report: dict) -> pd.DataFrame:
    """Drop train questions sharing entities with test questions (see module docstring)."""
    if rule == "none":
        report["leakage"] = {}
        return qa
    test = qa[qa["split"] == "test"]
    if rule == "test_entities":
        banned = set(test["subject"]) | set(test["object"])
    else:
        banned = set(test.loc[test["distribution"] == "id", "subject"])
    train = qa["split"] == "train"
    leaks = train & (qa["subject"].isin(banned) | qa["object"].isin(banned))
    report["leakage"] = _per_relation(qa.loc[leaks, "relation"])
    return qa[~leaks].reset_index(drop=True)


def build_qa(triples: pd.DataFrame, entities: pd.DataFrame, config: QAConfig
             ) -> tuple[pd.DataFrame, dict]:
    """Questions from a graph: candidates → ambiguity filter → sample/split → leakage filter.

    Returns
    -------
    qa : DataFrame
        Columns :data:`QA_COLUMNS`, sorted by split, relation and qid.
    report : dict
        How many questions each filter removed, per relation.
    """
    report: dict = {"multiple_answers": {}, "missing_label": {}}
    present = set(triples["relation"])
    missing = [p for p in config.relations if p not in present]
    if missing:
        raise KgfactError(f"the graph has no triples for {', '.join(missing)}; "
                          f"it has {', '.join(sorted(present)) or 'none'}")
    qa = drop_ambiguous(candidate_questions(triples, entities, config.relations, report), report)
    qa = drop_leakage(assign_splits(qa, config, report), config.leakage_filter, report)
    return finish(qa, QA_COLUMNS), report


def finish(qa: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Columns in contract order, rows in a stable order, counts per split recorded."""
    order = {"train": 0, "dev": 1, "test": 2}
    qa = qa.assign(_o=qa["split"].map(order)).sort_values(["_o", "relation", "qid"])
    return qa[columns].reset_index(drop=True)


def build_two_hop(triples: pd.DataFrame, entities: pd.DataFrame, config: QAConfig
                  ) -> tuple[pd.DataFrame, dict]:
    """Two-hop questions along every registered path whose relations are in the graph.

    Each row keeps its KG path: ``path`` (the two property ids) and ``path_entities``
    (subject, intermediate entity, answer), the chain a CoT prompt spells out.
    """
    report: dict = {"multiple_answers": {}, "paths": {}}
    present = set(triples["relation"])
    rows = []
    for name in TWO_HOPS:
        hop = TWO_HOPS.get(name)
        first, second = hop.path
        if first not in present or second not in present:
            continue
        a = _single_valued(triples, first, report)
        b = _single_valued(triples, second, report)
        joined = a.merge(b, left_on="object", right_on="subject", suffixes=("", "_2"))
        joined = joined[joined["object_2"] != joined["subject"]]
        frame, ok = _questions(name, joined["subject"], joined["object_2"], hop.ask, entities)
        joined = joined[ok]
        report["paths"][name] = len(frame)
        frame["path"] = [list(hop.path)] * len(frame)
        frame["path_entities"] = [list(t) for t in zip(joined["subject"], joined["object"],
                                                       joined["object_2"])]
        rows.append(frame)
    if not rows:
        return pd.DataFrame(columns=TWO_HOP_COLUMNS), report
    qa = drop_ambiguous(pd.concat(rows, ignore_index=True), report)
    return finish(assign_splits(qa, config, report), TWO_HOP_COLUMNS), report
