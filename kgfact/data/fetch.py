"""Fetch a Wikidata-shaped graph from a SPARQL endpoint, resumably.

Three kinds of work unit, each one bounded query: the triples of one property for one subject-id
suffix partition (``queries/triples.rq``), one hop of neighbourhood expansion for a batch of
entities (``queries/neighbourhood.rq``), and labels/aliases/popularity for a batch of entities
(``queries/labels.rq``). Each finished unit is checkpointed as a small Parquet file, so a build
killed at any point resumes where it stopped and never fetches or stores a unit twice.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from kgfact.data.sparql import SparqlClient, render_query
from kgfact.config import check_fields
from kgfact.errors import KgfactError
from kgfact.relations import get_relations
from kgfact.rundir import load_piece, write_parquet
from kgfact.wikidata import QID_RE, WD, WDT

TRIPLE_COLUMNS = ["subject", "relation", "object"]
ENTITY_COLUMNS = ["id", "label", "aliases", "sitelinks", "population"]


@dataclass(frozen=True)
class FetchConfig:
    """What to fetch from the endpoint and in what page sizes."""

    relations: tuple[str, ...] = field(metadata={"help": "Property ids to fetch."})
    page_size: int = field(default=10_000, metadata={"min": 1,
        "help": "Rows per query; a partition that fills a page is split ten ways."})
    max_triples_per_relation: int | None = field(default=None, metadata={"min": 1,
        "help": "Stop a relation after this many triples (whole partitions, then cut)."})
    expand_hops: int = field(default=1, metadata={"min": 0,
        "help": "Hops of neighbourhood expansion from objects along the fetched relations."})
    batch_size: int = field(default=200, metadata={"min": 1,
        "help": "Entities per labels/neighbourhood query."})
    max_suffix_digits: int = field(default=7, metadata={"min": 1,
        "help": "Deepest subject-id suffix partition before giving up on a relation."})

    def __post_init__(self) -> None:
        check_fields(self)


@dataclass(frozen=True)
class FetchResult:
    """Triples, entities and a report of what the fetch did."""

    triples: pd.DataFrame
    entities: pd.DataFrame
    report: dict


class Checkpoints:
    """Finished work units as Parquet files in one folder; written atomically, read as the run's
    other checkpoints are (:func:`kgfact.rundir.load_piece`: an unreadable unit is fetched
    again)."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    def _path(self, key: str) -> Path:
        return self.folder / f"{key}.parquet"

    def get(self, key: str) -> pd.DataFrame | None:
        return load_piece(self._path(key))

    def put(self, key: str, df: pd.DataFrame) -> pd.DataFrame:
        write_parquet(df, self._path(key))
        return df

    def cached(self, key: str, compute: Callable[[], pd.DataFrame]) -> pd.DataFrame:
        """The checkpointed table for ``key``, computing and storing it on first use."""
        found = self.get(key)
        return found if found is not None else self.put(key, compute())


def _qid(iri: str) -> str | None:
    if iri.startswith(WD):
        qid = iri[len(WD):]
        return qid if QID_RE.fullmatch(qid) else None
    return None


def _digest(ids: list[str]) -> str:
    return hashlib.sha256(" ".join(ids).encode()).hexdigest()[:16]


def _batches(ids: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(ids), size):
        yield ids[start:start + size]


class GraphFetcher:
    """Fetch triples and entity labels for a set of relations.

    Parameters
    ----------
    client : SparqlClient
        The endpoint client (retries, cache, one request in flight).
    config : FetchConfig
        Relations and paging.
    checkpoint_dir : Path
        Folder for finished work units; reuse it to resume.
    progress : bool
        Show progress bars on stderr.
    """

    def __init__(self, client: SparqlClient, config: FetchConfig, checkpoint_dir: Path,
                 progress: bool = True) -> None:
        get_relations(list(config.relations))  # unknown ids fail before any request
        self.client, self.config = client, config
        self.checkpoints = Checkpoints(checkpoint_dir)
        self.progress = progress
        self.report: dict = {"non_item_values_skipped": 0, "neighbourhood_truncated": 0,
                             "partitions": 0, "partitions_split": 0}

    def _bar(self, **kw) -> tqdm:
        return tqdm(disable=not self.progress, file=sys.stderr, dynamic_ncols=True, **kw)

    # -- triples of one relation, partitioned by subject-id suffix ------------------------------
    def _partition(self, pid: str, suffix: str) -> pd.DataFrame | None:
        """Rows of one partition, or ``None`` if the page came back full (split it)."""
        key = f"triples-{pid}-s{suffix}"
        if (self.checkpoints.folder / f"{key}.split").exists():
            return None
        found = self.checkpoints.get(key)
        if found is not None:
            return found
        limit = self.config.page_size + 1  # one extra row tells a full page from an exact fit
        rows = self.client.select(render_query("triples", pid=pid, suffix=suffix, limit=limit))
        if len(rows) > self.config.page_size:
            self.checkpoints.folder.mkdir(parents=True, exist_ok=True)
            (self.checkpoints.folder / f"{key}.split").touch()
            return None
        return self.checkpoints.put(key, self._triples_frame(
            [(r["s"], pid, r["o"]) for r in rows]))

    def _triples_frame(self, rows: list[tuple[str, str, str]]) -> pd.DataFrame:
        out = []
        for s, p, o in rows:
            sq, oq = _qid(s), _qid(o)
            if sq is None or oq is None:
                self.report["non_item_values_skipped"] += 1
                continue
            out.append((sq, p, oq))
        return pd.DataFrame(out, columns=TRIPLE_COLUMNS, dtype="str")

    def fetch_relation(self, pid: str, bar: tqdm) -> pd.DataFrame:
        """All (or ``max_triples_per_relation``) triples of ``pid``, depth-first by suffix."""
        cap = self.config.max_triples_per_relation
        parts, total, stack = [], 0, [""]
        while stack and (cap is None or total < cap):
            suffix = stack.pop()
            part = self._partition(pid, suffix)
            self.report["partitions"] += 1
            if part is None:
                if len(suffix) >= self.config.max_suffix_digits:
                    raise KgfactError(
                        f"{pid}: partition by subject suffix {suffix!r} still exceeds "
                        f"{self.config.page_size} rows; raise --page-size")
                self.report["partitions_split"] += 1
                stack.extend(f"{d}{suffix}" for d in "9876543210")  # pops in order 0..9
                continue
            parts.append(part)
            total += len(part)
            bar.update(len(part))
        df = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=TRIPLE_COLUMNS)
        df = df.drop_duplicates().sort_values(TRIPLE_COLUMNS).reset_index(drop=True)
        return df.head(cap) if cap is not None else df

    # -- neighbourhood expansion ----------------------------------------------------------------
    def _neighbours(self, batch: list[str]) -> pd.DataFrame:
        def compute() -> pd.DataFrame:
            limit = self.config.page_size + 1
            rows = self.client.select(render_query(
                "neighbourhood", entities=batch, properties=list(self.config.relations),
                limit=limit))
            if len(rows) > self.config.page_size:
                if len(batch) == 1:  # one entity with more edges than a page: keep a page
                    self.report["neighbourhood_truncated"] += 1
                    rows = rows[:self.config.page_size]
                else:
                    half = len(batch) // 2
                    return pd.concat([self._neighbours(batch[:half]),
                                      self._neighbours(batch[half:])], ignore_index=True)
            return self._triples_frame([(r["s"], r["p"][len(WDT):], r["o"]) for r in rows])
        return self.checkpoints.cached(f"neighbourhood-{_digest(batch)}", compute)

    def expand(self, triples: pd.DataFrame) -> pd.DataFrame:
        """Add ``expand_hops`` hops of outgoing edges from the objects, along the relations."""
        expanded: set[str] = set(triples["subject"])
        frontier = sorted(set(triples["object"]) - expanded)
        parts = [triples]
        for hop in range(self.config.expand_hops):
            if not frontier:
                break
            found = []
            batches = list(_batches(frontier, self.config.batch_size))
            for batch in self._bar(iterable=batches, desc=f"neighbourhood hop {hop + 1}",
                                   unit="batch"):
                found.append(self._neighbours(batch))
            expanded.update(frontier)
            new = pd.concat(found, ignore_index=True)
            parts.append(new)
            frontier = sorted(set(new["object"]) - expanded)
        return (pd.concat(parts, ignore_index=True).drop_duplicates()
                .sort_values(TRIPLE_COLUMNS).reset_index(drop=True))

    # -- labels -----------------------------------------------------------------------------------
    def _labels(self, batch: list[str]) -> pd.DataFrame:
        def compute() -> pd.DataFrame:
            rows = self.client.select(render_query("labels", entities=batch))
            return fold_label_rows(rows, batch)
        return self.checkpoints.cached(f"labels-{_digest(batch)}", compute)

    def entities(self, ids: list[str]) -> pd.DataFrame:
        """Labels, aliases and popularity of ``ids``."""
        batches = list(_batches(sorted(ids), self.config.batch_size))
        parts = [self._labels(b) for b in self._bar(iterable=batches, desc="labels",
                                                     unit="batch")]
        if not parts:
            return pd.DataFrame(columns=ENTITY_COLUMNS)
        out = pd.concat(parts, ignore_index=True).sort_values("id").reset_index(drop=True)
        out["aliases"] = out["aliases"].map(list)  # Parquet gives arrays back; keep one type
        return out

    # -- everything -------------------------------------------------------------------------------
    def run(self) -> FetchResult:
        """Fetch triples of every relation, expand, then fetch entity labels."""
        per_relation, empty = [], []
        with self._bar(desc="triples", unit="triple") as bar:
            for pid in self.config.relations:
                bar.set_postfix_str(pid)
                df = self.fetch_relation(pid, bar)
                (per_relation.append(df) if len(df) else empty.append(pid))
        if not per_relation:
            raise KgfactError(f"{self.client.config.url} returned no triples for "
                              f"{', '.join(self.config.relations)}: is the store loaded, and do "
                              "these relations exist there?")
        triples = self.expand(pd.concat(per_relation, ignore_index=True))
        entities = self.entities(sorted(set(triples["subject"]) | set(triples["object"])))
        counts = triples["relation"].value_counts().to_dict()
        self.report.update(empty_relations=empty, triples=len(triples), entities=len(entities),
                           triples_per_relation={k: int(v) for k, v in sorted(counts.items())},
                           requests=self.client.stats.requests,
                           cache_hits=self.client.stats.cache_hits,
                           retries=self.client.stats.retries)
        return FetchResult(triples, entities, self.report)


def fold_label_rows(rows: list[dict[str, str]], ids: list[str]) -> pd.DataFrame:
    """One row per entity from labels.rq solutions (label × alias × value combinations)."""
    acc: dict[str, dict] = {q: {"id": q, "label": None, "aliases": set(), "sitelinks": None,
                                "population": None} for q in ids}
    for row in rows:
        qid = _qid(row.get("e", ""))
        if qid not in acc:
            continue
        ent = acc[qid]
        if row.get("label") and ent["label"] is None:
            ent["label"] = row["label"]
        if row.get("alias"):
            ent["aliases"].add(row["alias"])
        for key in ("sitelinks", "population"):
            value = _number(row.get(key))
            if value is not None and (ent[key] is None or value > ent[key]):
                ent[key] = value
    out = pd.DataFrame([{**e, "aliases": sorted(e["aliases"] - {e["label"]})}
                        for e in acc.values()], columns=ENTITY_COLUMNS)
    for key in ("sitelinks", "population"):
        out[key] = pd.array(out[key].tolist(), dtype="Int64")
    return out


def _number(text: str | None) -> int | None:
    if not text:
        return None
    try:
        return int(float(text))
    except ValueError:
        return None
