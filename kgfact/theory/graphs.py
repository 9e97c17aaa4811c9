"""The objects of the theory (docs: ``theory.md``, "Objects") as integer-coded edge sets.

Every entity and relation gets an integer; an edge ``(s, r, o)`` becomes the int64 code
``(s * R + r) * V + o``. Sets of edges (``G``, ``K_kn``, ``D``, ``E_kn``, ``E_unk``) are sorted code
arrays, so "is this edge in that set" is one :func:`numpy.searchsorted` over any number of edges,
which is what lets the metrics run over every query of a run at once.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import networkx as nx
import numpy as np
import pandas as pd
import scipy.sparse as sp

from kgfact.errors import KgfactError

TRIPLE = ["subject", "relation", "object"]
SOURCES = ("exemplar", "cot", "generated")  # where an edge of a prompt subgraph comes from


class EdgeCodec:
    """Integer codes for entities, relations and edges.

    Parameters
    ----------
    entities, relations : iterable of str
        Every id that will be encoded; ids outside them encode to ``-1``.
    """

    def __init__(self, entities: Iterable[str], relations: Iterable[str]) -> None:
        self.entities = pd.Index(sorted(set(entities)), dtype=object)
        self.relations = pd.Index(sorted(set(relations)), dtype=object)
        self.n_entities, self.n_relations = len(self.entities), max(len(self.relations), 1)
        if self.n_entities ** 2 * self.n_relations >= 2 ** 62:
            raise KgfactError(f"{self.n_entities} entities and {self.n_relations} relations do "
                              "not fit an int64 edge code")

    def entity(self, ids: Iterable[str]) -> np.ndarray:
        """Entity codes (``-1`` for ids the codec does not hold)."""
        return self.entities.get_indexer(pd.Index(list(ids), dtype=object)).astype(np.int64)

    def relation(self, ids: Iterable[str]) -> np.ndarray:
        """Relation codes (``-1`` for unknown relations)."""
        return self.relations.get_indexer(pd.Index(list(ids), dtype=object)).astype(np.int64)

    def encode(self, s: np.ndarray, r: np.ndarray, o: np.ndarray) -> np.ndarray:
        """Edge codes from entity and relation codes; ``-1`` where any part is ``-1``."""
        s, r, o = (np.asarray(a, dtype=np.int64) for a in (s, r, o))
        code = (s * self.n_relations + r) * self.n_entities + o
        return np.where((s < 0) | (r < 0) | (o < 0), -1, code)

    def encode_frame(self, df: pd.DataFrame) -> np.ndarray:
        """Edge codes of a table with ``subject``, ``relation``, ``object`` id columns."""
        return self.encode(self.entity(df["subject"]), self.relation(df["relation"]),
                           self.entity(df["object"]))

    def decode(self, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Subject, relation and object codes of edge codes."""
        codes = np.asarray(codes, dtype=np.int64)
        sr, o = np.divmod(codes, self.n_entities)
        s, r = np.divmod(sr, self.n_relations)
        return s, r, o


def lookup(keys: np.ndarray, values: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """``values`` at the positions of ``wanted`` in sorted ``keys``; 0 where absent."""
    if not len(keys):
        return np.zeros(len(wanted), dtype=values.dtype)
    at = np.minimum(np.searchsorted(keys, wanted), len(keys) - 1)
    return np.where(keys[at] == wanted, values[at], 0)


@dataclass(frozen=True)
class EdgeSet:
    """A set of edges as sorted unique codes."""

    codes: np.ndarray = field(metadata={"help": "Sorted unique int64 edge codes."})

    @classmethod
    def of(cls, codes: np.ndarray) -> EdgeSet:
        """The set of the valid (non-negative) codes among ``codes``."""
        codes = np.asarray(codes, dtype=np.int64)
        return cls(np.unique(codes[codes >= 0]))

    def contains(self, codes: np.ndarray) -> np.ndarray:
        """Boolean membership of each code (``-1`` is never a member)."""
        codes = np.asarray(codes, dtype=np.int64)
        if not len(self.codes):
            return np.zeros(codes.shape, dtype=bool)
        at = np.minimum(np.searchsorted(self.codes, codes), len(self.codes) - 1)
        return self.codes[at] == codes

    def __len__(self) -> int:
        return len(self.codes)


@dataclass(frozen=True)
class ModelKnowledge:
    """The knowledge graph ``G`` and the model-knowledge graph ``K`` over one codec.

    ``K`` is every edge with a SliCK record; ``K_kn`` those whose category is not Unknown. An edge
    without a record is not in ``K_kn`` (nothing shows the model knows it) but is not Unknown
    either: the prompt metrics count it as unlabelled, outside their knownness shares. Each
    recorded edge also carries its graded knownness: the share of its SliCK answers that are
    right (``p_correct``); an edge without a record has 0, and one whose share SliCK did not
    measure (its lazy protocol, for questions greedy answers right) is missing (NaN).
    """

    codec: EdgeCodec = field(metadata={"help": "Entity, relation and edge codes."})
    graph: EdgeSet = field(metadata={"help": "E, the edges of G."})
    recorded: EdgeSet = field(metadata={"help": "K: edges with a SliCK record."})
    known: EdgeSet = field(metadata={"help": "K_kn: recorded edges not categorised Unknown."})
    p_correct: np.ndarray = field(metadata={
        "help": "Share of right SliCK answers of each edge of K, in the order of its codes "
                "(NaN where not measured)."})

    @classmethod
    def from_tables(cls, triples: pd.DataFrame, qa: pd.DataFrame, slick: pd.DataFrame,
                    entities: pd.DataFrame | None = None,
                    extra: Iterable[pd.DataFrame] = ()) -> ModelKnowledge:
        """Build ``G`` from ``triples`` and ``K`` from SliCK results joined to their QA edges.

        Parameters
        ----------
        triples : pandas.DataFrame
            ``subject``, ``relation``, ``object``.
        qa : pandas.DataFrame
            ``qid``, ``subject``, ``relation``, ``object``: the edge each question asks about.
        slick : pandas.DataFrame
            ``qid``, ``category`` and optionally ``p_correct`` (share of right answers; without
            it an edge's graded knownness is 1 if it is in ``K_kn``, else 0).
        entities : pandas.DataFrame, optional
            ``id``: entities without edges still get a code (CoT steps may name them).
        extra : iterable of pandas.DataFrame
            Further triple tables whose ids the codec must hold (prompt edges, fine-tuning sets).
        """
        for name, df, cols in (("triples", triples, TRIPLE), ("qa", qa, ["qid", *TRIPLE]),
                               ("slick", slick, ["qid", "category"])):
            missing = [c for c in cols if c not in df.columns]
            if missing:
                raise KgfactError(f"{name} table has no {', '.join(missing)} column(s)")
        tables = [triples, qa, *extra]
        ents = pd.concat([t[c] for t in tables for c in ("subject", "object")], ignore_index=True)
        if entities is not None:
            ents = pd.concat([ents, entities["id"]], ignore_index=True)
        rels = pd.concat([t["relation"] for t in tables], ignore_index=True)
        codec = EdgeCodec(ents.dropna().unique(), rels.dropna().unique())
        graded = "p_correct" in slick.columns
        asked = qa[["qid", *TRIPLE]].merge(
            slick[["qid", "category", "p_correct"] if graded else ["qid", "category"]],
            on="qid", how="inner")
        codes = codec.encode_frame(asked)
        known = (asked["category"] != "Unknown").to_numpy()
        p = asked["p_correct"].to_numpy(dtype=float) if graded else known.astype(float)
        recorded = EdgeSet.of(codes)
        # two questions can ask about one edge: it keeps the best-known record, which is
        # unknown if a record's share was not measured (NaN as inf, so max keeps it)
        best = pd.Series(np.nan_to_num(p, nan=np.inf)).groupby(codes).max().replace(np.inf,
                                                                                   np.nan)
        return cls(codec, EdgeSet.of(codec.encode_frame(triples)), recorded,
                   EdgeSet.of(codes[known]), best.reindex(recorded.codes).to_numpy())

    @property
    def graded_measured(self) -> bool:
        """Whether every recorded edge's ``p_correct`` was measured (SliCK's full protocol)."""
        return not np.isnan(self.p_correct).any()

    def graded(self, codes: np.ndarray) -> np.ndarray:
        """Graded knownness (``p_correct``) of each edge code; 0 for an edge without a record,
        NaN for one whose share was not measured."""
        return lookup(self.recorded.codes, self.p_correct, np.asarray(codes, dtype=np.int64))

    def out_adjacency(self, edges: EdgeSet) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """CSR out-adjacency of an edge set: ``indptr`` over subjects, then objects, relations."""
        s, r, o = self.codec.decode(edges.codes)  # codes sort by subject first
        indptr = np.searchsorted(s, np.arange(self.codec.n_entities + 1))
        return indptr, o, r

    def undirected(self) -> sp.csr_matrix:
        """``G`` as a symmetric 0/1 entity adjacency matrix (relations and direction dropped)."""
        s, _, o = self.codec.decode(self.graph.codes)
        n = self.codec.n_entities
        a = sp.coo_matrix((np.ones(2 * len(s), dtype=np.int8), (np.r_[s, o], np.r_[o, s])),
                          shape=(n, n)).tocsr()
        a.data[:] = 1
        return a


@dataclass(frozen=True)
class FineTuningSet:
    """A fine-tuning set ``D`` split into ``E_kn = D ∩ K_kn`` and ``E_unk = D \\ K_kn``."""

    name: str = field(metadata={"help": "Set name, e.g. 'ft-known'."})
    edges: EdgeSet = field(metadata={"help": "D."})
    known: EdgeSet = field(metadata={"help": "E_kn = D ∩ K_kn."})
    unknown: EdgeSet = field(metadata={"help": "E_unk = D \\ K_kn."})
    entities: np.ndarray = field(metadata={"help": "Sorted codes of every entity of D."})
    relations: tuple[str, ...] = field(metadata={"help": "Relations of D, sorted."})

    @classmethod
    def from_table(cls, name: str, table: pd.DataFrame, knowledge: ModelKnowledge
                   ) -> FineTuningSet:
        """Build from an ``ftsets/<name>`` table (``subject``, ``relation``, ``object``: gold edge).

        ``E_kn`` follows the theory's definition (membership in ``K_kn``), not the table's own
        ``known`` column, so every set is judged against the same model knowledge.
        """
        missing = [c for c in TRIPLE if c not in table.columns]
        if missing:
            raise KgfactError(f"fine-tuning set {name!r} has no {', '.join(missing)} column(s)")
        codec = knowledge.codec
        d = EdgeSet.of(codec.encode_frame(table))
        in_k = knowledge.known.contains(d.codes)
        s, _, o = codec.decode(d.codes)
        return cls(name, d, EdgeSet(d.codes[in_k]), EdgeSet(d.codes[~in_k]),
                   np.unique(np.r_[s, o]), tuple(sorted(table["relation"].unique())))

    @property
    def unknown_share(self) -> float:
        """``|E_unk| / |D|``."""
        return len(self.unknown) / len(self.edges) if len(self.edges) else float("nan")


@dataclass(frozen=True)
class PromptSubgraph:
    """``G_P``: a prompt's edges, each remembering its source and the sets it belongs to.

    ``edges`` has one row per edge and source with ``source`` (exemplar, cot or generated),
    ``subject``, ``relation``, ``object`` and the flags of :func:`flag_edges` (``in_graph``,
    ``in_known``, ``in_e_kn``, ``in_e_unk``, ``hallucinated``, ...). Metrics use the given
    content (exemplar and cot edges); generated steps are kept to be checked.
    """

    prompt_id: str = field(metadata={"help": "The prompt's id."})
    edges: pd.DataFrame = field(metadata={"help": "One row per edge, with flags."})

    @classmethod
    def build(cls, prompt_id: str, edges: pd.DataFrame, knowledge: ModelKnowledge,
              ftset: FineTuningSet | None = None) -> PromptSubgraph:
        """Flag ``edges`` (``source``, ``subject``, ``relation``, ``object``) against G, K and D."""
        return cls(prompt_id, flag_edges(edges[["source", *TRIPLE]], knowledge, ftset))

    @classmethod
    def of_query(cls, flagged: pd.DataFrame, prompt_id: str, qid: str | None = None
                 ) -> PromptSubgraph:
        """The ``G_P`` one query sees among flagged prompt edges: the prompt's shared edges
        and, with an optional ``qid`` column, the edges it states for ``qid`` alone (see
        :mod:`kgfact.theory.metrics`, "Query-level edges")."""
        mine = flagged["prompt_id"] == prompt_id
        if "qid" in flagged.columns:
            mine &= flagged["qid"].isna() | (flagged["qid"] == qid)
        return cls(prompt_id, flagged[mine].reset_index(drop=True))

    @property
    def given(self) -> pd.DataFrame:
        """Distinct edges of the prompt's own content (exemplars and CoT steps): ``X ∪ C``."""
        given = self.edges[self.edges["source"] != "generated"]
        return given.drop_duplicates(TRIPLE).reset_index(drop=True)

    @property
    def exemplars(self) -> pd.DataFrame:
        """The exemplar edges ``X``, in prompt order (repeats kept: each is one exemplar)."""
        return self.edges[self.edges["source"] == "exemplar"].reset_index(drop=True)

    def to_networkx(self) -> nx.MultiDiGraph:
        """The given content as a ``MultiDiGraph`` laid out as in :mod:`kgfact.graph`."""
        g = nx.MultiDiGraph()
        g.add_edges_from((s, o, r, {}) for s, r, o in
                         self.given[TRIPLE].itertuples(index=False, name=None))
        return g


def flag_edges(edges: pd.DataFrame, knowledge: ModelKnowledge,
               ftset: FineTuningSet | None) -> pd.DataFrame:
    """``edges`` (with ``source``, ``subject``, ``relation``, ``object``) plus membership flags.

    Adds ``code`` (the int64 edge code), ``in_graph``, ``in_recorded`` (``K``: has a SliCK
    record), ``in_known`` (``K_kn``), ``p_correct`` (graded knownness, 0 without a record),
    ``in_e_kn``, ``in_e_unk``,
    ``subject_in_d`` and ``object_in_d`` (the end point is an entity of ``D``) and
    ``hallucinated``. Without a fine-tuning set every ``D`` flag is false. Other columns (such
    as ``prompt_id`` and the ``qid`` of a query-level edge) are kept.
    """
    bad = sorted(set(edges["source"]) - set(SOURCES))
    if bad:
        raise KgfactError(f"unknown prompt edge source(s) {', '.join(map(str, bad))}; "
                          f"use {', '.join(SOURCES)}")
    out = edges.reset_index(drop=True)
    codec = knowledge.codec
    s, o = codec.entity(out["subject"]), codec.entity(out["object"])
    codes = codec.encode(s, codec.relation(out["relation"]), o)
    ents = ftset.entities if ftset is not None else np.empty(0, dtype=np.int64)
    out["code"] = codes
    out["in_graph"] = knowledge.graph.contains(codes)
    out["in_recorded"] = knowledge.recorded.contains(codes)
    out["in_known"] = knowledge.known.contains(codes)
    out["p_correct"] = knowledge.graded(codes)
    out["in_e_kn"] = ftset.known.contains(codes) if ftset else np.zeros(len(out), dtype=bool)
    out["in_e_unk"] = ftset.unknown.contains(codes) if ftset else np.zeros(len(out), dtype=bool)
    out["subject_in_d"] = np.isin(s, ents) & (s >= 0)
    out["object_in_d"] = np.isin(o, ents) & (o >= 0)
    out["hallucinated"] = (out["source"] == "generated").to_numpy() & ~out["in_graph"].to_numpy()
    return out
