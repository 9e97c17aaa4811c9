"""Importer for EntityQuestions (Sciavolino et al., 2021), read from a folder outside the repo.

The dataset is not bundled: point kgfact at a copy with ``--entityquestions PATH``. Its layout is
``{train,dev,test}/<PID>.<split>.json`` (each a JSON list of ``{"question": str, "answers":
[str, ...]}``) plus ``relation_query_templates.json`` mapping a property id to the question
template, with ``[X]`` standing for the subject label.

EntityQuestions has no Wikidata ids, so entities are identified by label: ``"eq:" + label``. The
subject label is recovered by matching each question against the dataset's own template for its
relation; questions that do not fit the template are skipped and counted in the report. The first
answer is the gold answer and the object entity; the remaining answers become its aliases. Some
of those are genuinely other objects (a second child, a second author) rather than other names,
but EntityQuestions accepts any of them, so kgfact does too.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from kgfact.errors import KgfactError
from kgfact.qa import QA_COLUMNS
from kgfact.relations import SPLITS, get_relations
from kgfact.wikidata import PID_RE

__all__ = ["ENTITY_PREFIX", "EQ_SPLITS", "EntityQuestionsImport", "available_relations",
           "load_entityquestions"]

ENTITY_PREFIX = "eq:"
EQ_SPLITS = ("train", "dev", "test")
TEMPLATES = "relation_query_templates.json"
_WHERE = ("point --entityquestions PATH at the EntityQuestions dataset (Sciavolino et al. 2021), "
          "the folder holding relation_query_templates.json and train/, dev/, test/")


@dataclass(frozen=True)
class EntityQuestionsImport:
    """EntityQuestions as kgfact tables."""

    qa: pd.DataFrame = field(metadata={"help": "One row per parsed question (kgfact QA columns)."})
    triples: pd.DataFrame = field(metadata={"help": "Distinct (subject, relation, object) edges."})
    entities: pd.DataFrame = field(metadata={"help": "id, label, aliases, sitelinks, population."})
    report: dict[str, Any] = field(
        metadata={"help": "Counts: loaded relations, rows/unparsed per file, missing files."}
    )


def _read_json(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except json.JSONDecodeError as exc:
        raise KgfactError(f"{path} is not valid JSON: {exc.msg} at line {exc.lineno}") from None
    except UnicodeDecodeError as exc:
        raise KgfactError(f"{path} is not UTF-8 text: {exc.reason}") from None
    except OSError as exc:
        raise KgfactError(f"cannot read {path}: {exc.strerror}") from None


def _template_patterns(root: Path, pids: Iterable[str]) -> dict[str, re.Pattern[str]]:
    """Anchored regexes capturing the subject label of each relation's questions."""
    path = root / TEMPLATES
    if not path.is_file():
        raise KgfactError(f"{path} is missing: {_WHERE}")
    templates = _read_json(path)
    if not isinstance(templates, dict):
        raise KgfactError(f"{path} is malformed: expected a JSON object mapping property ids to "
                          f"question templates, got {type(templates).__name__}")
    patterns = {}
    for pid in pids:
        template = templates.get(pid)
        if template is None:
            raise KgfactError(f"{path} has no question template for {pid}")
        if not isinstance(template, str) or template.count("[X]") != 1:
            raise KgfactError(f"{path} is malformed: the template for {pid} must be a string "
                              f"with exactly one [X], got {template!r}")
        before, after = template.split("[X]")
        patterns[pid] = re.compile(re.escape(before) + "(.+)" + re.escape(after), re.DOTALL)
    return patterns


def _read_items(path: Path) -> list[dict[str, Any]]:
    """The question list of one file, with every item's shape checked."""
    items = _read_json(path)
    if not isinstance(items, list):
        raise KgfactError(f"{path} is malformed: expected a JSON list of questions, "
                          f"got {type(items).__name__}")
    for i, item in enumerate(items):
        if not isinstance(item, dict) or "question" not in item or "answers" not in item:
            raise KgfactError(f"{path} item {i} is malformed: expected an object with "
                              f"'question' and 'answers'")
        answers = item["answers"]
        if not isinstance(item["question"], str):
            raise KgfactError(f"{path} item {i} is malformed: 'question' must be a string")
        if (not isinstance(answers, list) or not answers
                or not all(isinstance(a, str) and a.strip() for a in answers)):
            raise KgfactError(f"{path} item {i} is malformed: 'answers' must be a non-empty "
                              f"list of non-empty strings")
    return items


def _check_root(root: str | Path) -> Path:
    root = Path(root).expanduser()
    if not root.is_dir():
        raise KgfactError(f"EntityQuestions folder {root} not found: {_WHERE}")
    return root


def available_relations(root: str | Path, splits: Sequence[str] = EQ_SPLITS) -> list[str]:
    """Property ids with a question file on disk for at least one of ``splits``.

    Parameters
    ----------
    root : str or Path
        The EntityQuestions folder.
    splits : sequence of str, default ("train", "dev", "test")
        Splits whose files count.

    Returns
    -------
    list of str
        Property ids in numeric order, e.g. ``["P17", "P19", ...]``.
    """
    root = _check_root(root)
    pids = {path.name.split(".")[0] for split in splits
            for path in (root / split).glob(f"P*.{split}.json")}
    return sorted((p for p in pids if PID_RE.fullmatch(p)), key=lambda p: int(p[1:]))


def _relations_to_load(root: Path, relations: Sequence[str] | None, splits: Sequence[str],
                       split_name: str) -> tuple[list[str], list[str]]:
    """The relations to import and, when defaulting, the split's relations absent on disk."""
    split = SPLITS.get(split_name)
    if relations is None:
        wanted = list(dict.fromkeys(split.in_distribution + split.out_of_distribution))
        get_relations(wanted)
        # Default: whatever part of the split is on disk; a relation with no file is reported.
        on_disk = set(available_relations(root, splits))
        present = [p for p in wanted if p in on_disk]
        absent = [p for p in wanted if p not in on_disk]
        if not present:
            raise KgfactError(f"no EntityQuestions files for the {split_name!r} relations in "
                              f"{root}: {_WHERE}")
        return present, absent
    if isinstance(relations, str):
        relations = [relations]
    wanted = list(dict.fromkeys(relations))
    get_relations(wanted)
    # An explicit request must be satisfied in full rather than silently loading less.
    missing = {p: [name for name in (f"{s}/{p}.{s}.json" for s in splits)
                   if not (root / name).is_file()] for p in wanted}
    absent = [p for p, names in missing.items() if names]
    if absent:
        files = ", ".join(name for p in absent for name in missing[p])
        raise KgfactError(f"EntityQuestions relation(s) {', '.join(absent)} not found in {root} "
                          f"(missing {files})")
    return wanted, []


def load_entityquestions(
    root: str | Path,
    relations: Sequence[str] | None = None,
    splits: Sequence[str] = EQ_SPLITS,
    split_name: str = "slick",
) -> EntityQuestionsImport:
    """Read EntityQuestions into kgfact's QA, triple and entity tables.

    Parameters
    ----------
    root : str or Path
        The dataset folder (holding ``relation_query_templates.json``, ``train/``, ``dev/``,
        ``test/``).
    relations : sequence of str, optional
        Property ids to import (a single id may be given as a string); every requested file
        must exist. ``None`` imports every relation of the ``split_name`` relation
        split that exists on disk; absent ones are listed in ``report["missing_relations"]``.
    splits : sequence of str, default ("train", "dev", "test")
        EntityQuestions splits to read.
    split_name : str, default "slick"
        Registered relation split deciding the ``distribution`` column: ``"id"`` for its
        in-distribution relations, ``"ood"`` otherwise.

    Returns
    -------
    EntityQuestionsImport
        ``qa`` (columns ``qid, relation, subject, subject_label, object, answer, aliases,
        question, popularity, split, distribution``), ``triples`` (``subject, relation,
        object``), ``entities`` (``id, label, aliases, sitelinks, population``) and ``report``.

    Raises
    ------
    KgfactError
        If the folder, the template file or an explicitly requested relation's file is missing,
        a file is malformed, or a relation, split or relation split is unknown.
    """
    root = _check_root(root)
    splits = list(dict.fromkeys([splits] if isinstance(splits, str) else splits))
    unknown = [s for s in splits if s not in EQ_SPLITS]
    if unknown or not splits:
        got = f"unknown split(s) {', '.join(map(repr, unknown))}" if unknown else "no split"
        raise KgfactError(f"EntityQuestions: {got}; choose from {', '.join(EQ_SPLITS)}")
    pids, absent = _relations_to_load(root, relations, splits, split_name)
    patterns = _template_patterns(root, pids)
    in_distribution = set(SPLITS.get(split_name).in_distribution)

    rows: list[tuple[Any, ...]] = []
    files: dict[str, dict[str, int]] = {}
    unparsed = dict.fromkeys(pids, 0)
    missing: list[str] = []
    # Entity id -> its aliases; the label is the id without its prefix.
    entity_aliases: dict[str, list[str]] = {}
    for pid in pids:
        distribution = "id" if pid in in_distribution else "ood"
        match = patterns[pid].fullmatch
        for split in splits:
            name = f"{split}/{pid}.{split}.json"
            path = root / name
            if not path.is_file():
                missing.append(name)
                continue
            items = _read_items(path)
            before = len(rows)
            for i, item in enumerate(items):
                found = match(item["question"])
                if found is None:
                    continue
                label = found.group(1)
                answer, *others = item["answers"]
                # Most questions have a single answer: skip the dedup work for them.
                aliases = [a for a in dict.fromkeys(others) if a != answer] if others else []
                subject, obj = ENTITY_PREFIX + label, ENTITY_PREFIX + answer
                rows.append((f"{pid}/{split}/{i}", pid, subject, label, obj, answer, aliases,
                             item["question"], np.nan, split, distribution))
                entity_aliases.setdefault(subject, [])
                known = entity_aliases.setdefault(obj, [])
                known.extend(a for a in aliases if a not in known)
            parsed = len(rows) - before
            files[f"{pid}/{split}"] = {"questions": len(items), "rows": parsed,
                                       "unparsed": len(items) - parsed}
            unparsed[pid] += len(items) - parsed

    qa = pd.DataFrame(rows, columns=QA_COLUMNS).astype({"popularity": "float64"})
    triples = qa[["subject", "relation", "object"]].drop_duplicates(ignore_index=True)
    report = {
        "root": str(root),
        "relations": pids,
        "splits": splits,
        "rows": len(qa),
        "files": files,
        "unparsed": unparsed,
        "missing_files": missing,
        "missing_relations": absent,
    }
    entities = pd.DataFrame({
        "id": list(entity_aliases),
        "label": [e[len(ENTITY_PREFIX):] for e in entity_aliases],
        "aliases": list(entity_aliases.values()),
        "sitelinks": pd.array([pd.NA] * len(entity_aliases), dtype="Int64"),
        "population": pd.array([pd.NA] * len(entity_aliases), dtype="Int64"),
    })
    return EntityQuestionsImport(qa=qa, triples=triples, entities=entities, report=report)
