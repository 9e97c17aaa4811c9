"""Per-query metrics of prompt subgraphs and the augmentation strength ``A(P)``, vectorised.

A *unit* is one (prompt, query) pair. All units are computed at once from integer arrays:
counts per ``G_P`` (a prompt, or a prompt as one query sees it) are gathered by index, the
neighbourhood overlap is a lookup of (prompt entity, query subject) pairs in the ``h``-hop balls
of the prompt entities, and ``hop_support`` is a breadth-first search run for every unit
together on (unit, entity) pairs.

**Query-level edges.** A prompt (``prompt_id``) is shared by the queries of a relation, but it
may also state edges for one query only, e.g. a CoT path hint ``s -> m`` about that query's
subject. The ``prompt_edges`` table carries them with an optional ``qid`` column: a missing
``qid`` (NaN/None), or no such column, means the edge is stated to every query of the prompt
(exemplars and their CoT steps); a ``qid`` means it is stated only in that query's prompt. The
``G_P`` of a unit ``(prompt_id, qid)`` is the prompt's shared edges plus the edges with that
``qid``, so its metrics (knownness, overlaps, ``hop_support``) count them. Units then need a
``qid`` column. Internally each (prompt, qid) with own edges is a separate *instance* of
``G_P`` whose rows are the prompt's shared rows plus its own; every other unit uses its
prompt's shared instance.

**Knownness is over labelled edges.** ``K`` is the set of edges with a SliCK record. An edge of
``G_P`` without one (a CoT step that no question asks about, a path hint outside ``G``) is
*unlabelled*: nothing says whether the model knows it, so it counts neither as known nor as
unknown. ``prompt_known`` and ``prompt_p_correct`` are shares of ``G_P ∩ K`` (0 when ``G_P``
has no recorded edge, the empty prompt included), and ``prompt_unlabelled`` is the share of
``G_P`` without a record (0 for an empty ``G_P``).

Metrics and augmentation functions are registered by name in :data:`METRICS` and
:data:`AUGMENTATIONS`; a new one is one function and one ``register`` call.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pandas as pd
import scipy.sparse as sp

from kgfact.config import check_fields
from kgfact.errors import KgfactError
from kgfact.prompts import modes_with
from kgfact.registry import Registry
from kgfact.theory.graphs import ModelKnowledge, lookup


@dataclass(frozen=True)
class MetricConfig:
    """Radii of the graph metrics."""

    neighbourhood_hops: int = field(default=1, metadata={"min": 0,
        "help": "h of query_neighbourhood_overlap: G_P entities within h hops of s in G "
                "(edges followed either way)."})
    path_hops: int = field(default=2, metadata={"min": 1,
        "help": "h of hop_support: s must reach o within h directed hops in G_P ∪ K_kn."})
    chunk: int = field(default=250_000, metadata={"min": 1,
        "help": "Units computed together (bounds memory, not results)."})

    def __post_init__(self) -> None:
        check_fields(self)


def ragged(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Concatenated ``range(start, start + count)`` for each pair, without a Python loop."""
    counts = np.asarray(counts, dtype=np.int64)
    total = int(counts.sum())
    if total == 0:
        return np.empty(0, dtype=np.int64)
    ends = np.cumsum(counts)
    return np.arange(total, dtype=np.int64) + np.repeat(np.asarray(starts) - (ends - counts),
                                                        counts)


@dataclass(frozen=True)
class PromptTable:
    """Aggregates of the flagged prompt edges per ``G_P`` instance, indexed by instance.

    Instance ``i < len(ids)`` is prompt ``i``'s shared ``G_P``; the others are the (prompt,
    qid) pairs with query-level edges (module docstring), in the order of ``instance_keys``.
    """

    ids: pd.Index = field(metadata={"help": "Prompt ids; a prompt's position is its index."})
    modes: np.ndarray = field(metadata={"help": "Mode of each prompt."})
    query_ids: pd.Index = field(metadata={"help": "Qids that have query-level edges."})
    instance_keys: np.ndarray = field(metadata={
        "help": "Sorted prompt * len(query_ids) + qid position keys of the query instances."})
    n_exemplars: np.ndarray = field(metadata={"help": "|X| (each exemplar counted once)."})
    n_edges: np.ndarray = field(metadata={"help": "|G_P|, distinct given edges."})
    n_recorded: np.ndarray = field(metadata={"help": "|G_P ∩ K|, the labelled edges."})
    n_known: np.ndarray = field(metadata={"help": "|G_P ∩ K_kn|."})
    known_mass: np.ndarray = field(metadata={"help": "Sum of p_correct over G_P ∩ K."})
    n_e_kn: np.ndarray = field(metadata={"help": "|G_P ∩ E_kn|."})
    n_e_unk: np.ndarray = field(metadata={"help": "|G_P ∩ E_unk|."})
    entity_overlap: np.ndarray = field(metadata={"help": "|entities(G_P) ∩ entities(D)|."})
    exemplar_keys: np.ndarray = field(metadata={"help": "Sorted instance * R + relation keys."})
    exemplar_counts: np.ndarray = field(metadata={"help": "Exemplars per key."})
    entity_ptr: np.ndarray = field(metadata={"help": "CSR offsets of each instance's entities."})
    entities: np.ndarray = field(metadata={"help": "Distinct entity codes per instance (CSR)."})
    edge_keys: np.ndarray = field(metadata={"help": "Sorted instance * V + subject keys of G_P."})
    edge_objects: np.ndarray = field(metadata={"help": "Object code of each keyed edge."})

    @classmethod
    def build(cls, prompts: pd.DataFrame, edges: pd.DataFrame,
              knowledge: ModelKnowledge) -> PromptTable:
        """Aggregate flagged edges (see :func:`kgfact.theory.graphs.flag_edges`) per instance.

        Parameters
        ----------
        prompts : pandas.DataFrame
            ``prompt_id`` and ``mode``, one row per prompt (prompts without edges included).
        edges : pandas.DataFrame
            Flagged edges with ``prompt_id`` and optionally ``qid`` (query-level edges, see the
            module docstring); generated edges are ignored.
        """
        modes_with(prompts["mode"], "exemplars")  # every mode registered: a one-line error
        if prompts["prompt_id"].duplicated().any():
            raise KgfactError("prompts table repeats prompt ids")
        ids = pd.Index(prompts["prompt_id"], dtype=object)
        codec = knowledge.codec
        n_p, n_r, n_v = len(ids), codec.n_relations, codec.n_entities
        given = edges[edges["source"] != "generated"]
        p = ids.get_indexer(given["prompt_id"])
        if (p < 0).any():
            raise KgfactError("prompt_edges names prompt(s) missing from prompts: "
                              f"{', '.join(map(str, given['prompt_id'][p < 0].unique()[:5]))}")
        qid = given["qid"] if "qid" in given.columns else pd.Series(None, index=given.index,
                                                                   dtype=object)
        own = qid.notna().to_numpy()
        query_ids = pd.Index(sorted(qid[own].unique()), dtype=object)
        instance_keys, own_instance = np.unique(
            p[own] * len(query_ids) + query_ids.get_indexer(qid[own]), return_inverse=True)
        # a query instance holds its own rows and a copy of its prompt's shared rows
        shared = np.flatnonzero(~own)
        shared = shared[np.argsort(p[shared], kind="stable")]
        ptr = np.searchsorted(p[shared], np.arange(n_p + 1))
        owner = instance_keys // max(len(query_ids), 1)
        copies = ptr[owner + 1] - ptr[owner]
        rows = np.r_[shared, np.flatnonzero(own), shared[ragged(ptr[owner], copies)]]
        inst = np.r_[p[shared], n_p + own_instance,
                     np.repeat(n_p + np.arange(len(instance_keys)), copies)].astype(np.int64)
        n_i = n_p + len(instance_keys)
        given = given.iloc[rows]

        ex = (given["source"] == "exemplar").to_numpy()
        ex_keys, ex_counts = np.unique(inst[ex] * n_r + codec.relation(given["relation"][ex]),
                                       return_counts=True)
        flags = ["in_recorded", "in_known", "in_e_kn", "in_e_unk"]
        distinct = pd.DataFrame({"i": inst, "code": given["code"].to_numpy(),
                                 **{c: given[c].to_numpy() for c in flags},
                                 "p_correct": given["p_correct"].to_numpy(dtype=float)}
                                ).drop_duplicates(["i", "code"])
        sums = distinct.groupby("i")[[*flags, "p_correct"]].sum()
        # an edge's unmeasured p_correct (lazy SliCK) leaves its prompt's mass unknown, not 0
        sums["p_correct"] = sums["p_correct"].mask(
            distinct["p_correct"].isna().groupby(distinct["i"]).any())

        def per_instance(values: pd.Series, dtype: type = np.int64) -> np.ndarray:
            return values.reindex(range(n_i), fill_value=0).to_numpy(dtype=dtype)

        ents = pd.DataFrame({
            "i": np.r_[inst, inst],
            "e": np.r_[codec.entity(given["subject"]), codec.entity(given["object"])],
            "in_d": np.r_[given["subject_in_d"].to_numpy(), given["object_in_d"].to_numpy()],
        }).drop_duplicates(["i", "e"]).sort_values(["i", "e"])
        s, _, o = codec.decode(distinct["code"].to_numpy())
        edge_keys = distinct["i"].to_numpy() * n_v + s
        order = np.argsort(edge_keys, kind="stable")
        return cls(
            ids=ids, modes=prompts["mode"].to_numpy(dtype=object), query_ids=query_ids,
            instance_keys=instance_keys,
            n_exemplars=np.bincount(inst[ex], minlength=n_i),
            n_edges=per_instance(distinct.groupby("i").size()),
            n_recorded=per_instance(sums["in_recorded"]), n_known=per_instance(sums["in_known"]),
            known_mass=per_instance(sums["p_correct"], float),
            n_e_kn=per_instance(sums["in_e_kn"]),
            n_e_unk=per_instance(sums["in_e_unk"]),
            entity_overlap=per_instance(ents.groupby("i")["in_d"].sum()),
            exemplar_keys=ex_keys, exemplar_counts=ex_counts,
            entity_ptr=np.searchsorted(ents["i"].to_numpy(), np.arange(n_i + 1)),
            entities=ents["e"].to_numpy(), edge_keys=edge_keys[order], edge_objects=o[order])

    def instances(self, prompt: np.ndarray, qids: pd.Series | None) -> np.ndarray:
        """The ``G_P`` instance of each unit: its (prompt, qid) instance if that query has
        query-level edges, else its prompt's shared one.

        Raises
        ------
        KgfactError
            If the prompts have query-level edges and ``qids`` is None.
        """
        if not len(self.instance_keys):
            return prompt
        if qids is None:
            raise KgfactError("prompt_edges has query-level edges (a qid column): the units "
                              "need a qid column to find their prompt subgraph")
        q = self.query_ids.get_indexer(pd.Index(qids, dtype=object))
        key = np.where(q >= 0, prompt * len(self.query_ids) + q, -1)
        at = np.minimum(np.searchsorted(self.instance_keys, key), len(self.instance_keys) - 1)
        return np.where(self.instance_keys[at] == key, len(self.ids) + at, prompt)


class MetricEngine:
    """Computes registered metrics for many units; shares the work every chunk reuses.

    Parameters
    ----------
    knowledge : ModelKnowledge
        ``G`` and ``K_kn``.
    prompts : PromptTable
        The prompts the units refer to.
    config : MetricConfig
        Radii and chunk size.
    """

    def __init__(self, knowledge: ModelKnowledge, prompts: PromptTable,
                 config: MetricConfig = MetricConfig()) -> None:
        self.knowledge, self.prompts, self.config = knowledge, prompts, config

    @cached_property
    def known_adjacency(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """CSR out-adjacency of ``K_kn``."""
        return self.knowledge.out_adjacency(self.knowledge.known)

    @cached_property
    def balls(self) -> tuple[np.ndarray, np.ndarray]:
        """Prompt entities (sorted codes) and sorted ``row * V + entity`` keys of their h-hop balls.

        Balls are grown from the prompt entities rather than from the query subjects: a run has
        few distinct prompt entities, and "e within h hops of s" is symmetric when edges are
        followed either way.
        """
        used = np.unique(self.prompts.entities)
        used = used[used >= 0]
        n_v = self.knowledge.codec.n_entities
        reach = sp.csr_matrix((np.ones(len(used), dtype=np.int32), (np.arange(len(used)), used)),
                              shape=(len(used), n_v))
        adjacency = self.knowledge.undirected().astype(np.int32)
        for _ in range(self.config.neighbourhood_hops):
            reach = reach + reach @ adjacency
            reach.data[:] = 1
        reach.sort_indices()
        rows = np.repeat(np.arange(len(used), dtype=np.int64), np.diff(reach.indptr))
        return used, rows * n_v + reach.indices

    def compute(self, units: pd.DataFrame, metrics: Sequence[str] | None = None
                ) -> pd.DataFrame:
        """Metric columns for ``units`` (``prompt_id``, ``subject``, ``relation``, ``object``,
        and ``qid`` when the prompts have query-level edges).

        Returns
        -------
        pandas.DataFrame
            One column per metric, aligned with ``units`` (same index), plus ``mode``.
        """
        names = list(metrics) if metrics is not None else METRICS.names()
        funcs = [METRICS.get(n) for n in names]
        p = self.prompts.ids.get_indexer(units["prompt_id"])
        if (p < 0).any():
            missing = units["prompt_id"][p < 0].unique()[:5]
            raise KgfactError(f"unit(s) refer to unknown prompt(s) {', '.join(map(str, missing))}")
        instance = self.prompts.instances(p, units["qid"] if "qid" in units.columns else None)
        codec = self.knowledge.codec
        s, r, o = (codec.entity(units["subject"]), codec.relation(units["relation"]),
                   codec.entity(units["object"]))
        parts = []
        for start in range(0, len(units), self.config.chunk):
            window = slice(start, start + self.config.chunk)
            batch = QueryBatch(self, instance[window], s[window], r[window], o[window])
            parts.append({n: f(batch) for n, f in zip(names, funcs)})
        out = pd.DataFrame({n: np.concatenate([part[n] for part in parts]) if parts else []
                            for n in names}, index=units.index)
        out.insert(0, "mode", self.prompts.modes[p] if len(p) else [])
        return out


class QueryBatch:
    """A chunk of units as code arrays (``instance``: each unit's ``G_P`` instance in the
    :class:`PromptTable`), with lazily computed shared quantities."""

    def __init__(self, engine: MetricEngine, instance: np.ndarray, subject: np.ndarray,
                 relation: np.ndarray, obj: np.ndarray) -> None:
        self.engine, self.prompts = engine, engine.prompts
        self.instance, self.subject, self.relation, self.object = (instance, subject, relation,
                                                                   obj)

    def __len__(self) -> int:
        return len(self.instance)

    def per_prompt(self, values: np.ndarray) -> np.ndarray:
        """A per-instance array of the :class:`PromptTable` gathered for every unit."""
        return values[self.instance]

    @cached_property
    def neighbourhood_overlap(self) -> np.ndarray:
        """Count of the prompt's entities within ``neighbourhood_hops`` of the query subject."""
        used, keys = self.engine.balls
        ptr = self.prompts.entity_ptr
        counts = ptr[self.instance + 1] - ptr[self.instance]
        unit = np.repeat(np.arange(len(self)), counts)
        entity = self.prompts.entities[ragged(ptr[self.instance], counts)]
        row = np.searchsorted(used, entity)
        subject = self.subject[unit]
        wanted = np.where((subject >= 0) & (entity >= 0),
                          row * self.engine.knowledge.codec.n_entities + subject, -1)
        at = np.minimum(np.searchsorted(keys, wanted), max(len(keys) - 1, 0))
        hit = (keys[at] == wanted) if len(keys) else np.zeros(len(wanted), dtype=bool)
        return np.bincount(unit, weights=hit, minlength=len(self)).astype(np.int64)

    @cached_property
    def hop_length(self) -> np.ndarray:
        """Shortest directed path length from ``s`` to ``o`` in ``(K_kn \\ {e_q}) ∪ G_P``, or -1.

        ``G_P`` is the unit's instance: the prompt's shared edges and the edges it states for
        this query (a path hint from ``s``). Breadth-first search of every unit at once on
        (unit, entity) pairs. The query edge
        itself is dropped from ``K_kn`` (else the metric would restate the query's own SliCK
        category) but kept if the prompt states it. A shortest path never uses ``e_q`` after
        its first step (it would revisit ``s``), so dropping it from the first step suffices.
        """
        indptr, k_obj, k_rel = self.engine.known_adjacency
        n_v = self.engine.knowledge.codec.n_entities
        keys, objects = self.prompts.edge_keys, self.prompts.edge_objects
        length = np.full(len(self), -1, dtype=np.int64)
        unit = np.flatnonzero((self.subject >= 0) & (self.object >= 0))
        node = self.subject[unit]
        seen = np.sort(unit * n_v + node)
        for step in range(1, self.engine.config.path_hops + 1):
            deg = indptr[node + 1] - indptr[node]
            at = ragged(indptr[node], deg)
            u_k, n_k = np.repeat(unit, deg), k_obj[at]
            if step == 1:
                keep = ~((n_k == self.object[u_k]) & (k_rel[at] == self.relation[u_k]))
                u_k, n_k = u_k[keep], n_k[keep]
            wanted = self.instance[unit] * n_v + node
            lo, hi = np.searchsorted(keys, wanted), np.searchsorted(keys, wanted, side="right")
            u = np.r_[u_k, np.repeat(unit, hi - lo)]
            nxt = np.r_[n_k, objects[ragged(lo, hi - lo)]]
            arrived = np.unique(u[nxt == self.object[u]])
            length[arrived[length[arrived] < 0]] = step
            frontier = np.unique(u * n_v + nxt)
            frontier = frontier[~np.isin(frontier, seen, assume_unique=True)]
            unit, node = np.divmod(frontier, n_v)
            open_ = length[unit] < 0
            unit, node, frontier = unit[open_], node[open_], frontier[open_]
            if not len(unit):
                break
            seen = np.union1d(seen, frontier)
        return length


Metric = Callable[[QueryBatch], np.ndarray]
METRICS: Registry[Metric] = Registry("theory metric")
#: the metrics and A(P) built on SliCK's graded knownness ``p_correct``, which its lazy protocol
#: does not measure for the questions greedy answers right: they are then missing (NaN)
GRADED = frozenset({"prompt_p_correct", "graded"})


def group_means(frame: pd.DataFrame, by: list[str], names: Sequence[str]) -> pd.DataFrame:
    """Mean of each column ``names`` per group of ``frame``; a :data:`GRADED` mean is missing
    where a unit of the group lacks the value (a mean of the measured units alone would be
    biased), while other NaNs (``hop_length`` without a path) are skipped."""
    names = list(names)
    means = frame.groupby(by)[names].mean()
    for name in GRADED.intersection(names):
        means[name] = means[name].mask(frame[name].isna().groupby([frame[k] for k in by]).any())
    return means


def _share(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """``numerator / denominator``; 0 where the denominator is 0 (empty prompts share nothing)."""
    num, den = np.asarray(numerator, dtype=float), np.asarray(denominator, dtype=float)
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0)


def rel_align(b: QueryBatch) -> np.ndarray:
    """Share of exemplars whose relation is the query relation (0 without exemplars)."""
    key = b.instance * b.engine.knowledge.codec.n_relations + b.relation
    same = lookup(b.prompts.exemplar_keys, b.prompts.exemplar_counts, key)
    return _share(np.where(b.relation >= 0, same, 0), b.per_prompt(b.prompts.n_exemplars))


def prompt_known(b: QueryBatch) -> np.ndarray:
    """Share of the labelled edges of ``G_P`` (``G_P ∩ K``) that are in ``K_kn``; an edge
    without a SliCK record is unlabelled and left out (0 when ``G_P`` has no labelled edge)."""
    return _share(b.per_prompt(b.prompts.n_known), b.per_prompt(b.prompts.n_recorded))


def prompt_p_correct(b: QueryBatch) -> np.ndarray:
    """Mean graded knownness of the labelled edges of ``G_P``: the share of right SliCK answers
    of each edge of ``G_P ∩ K`` (0 when there is none; NaN if an edge's share was not measured,
    by SliCK's lazy protocol). ``prompt_known`` counts an edge the model answers right once in
    170 tries as fully known; this does not."""
    return _share(b.per_prompt(b.prompts.known_mass), b.per_prompt(b.prompts.n_recorded))


def prompt_unlabelled(b: QueryBatch) -> np.ndarray:
    """Share of ``G_P`` edges without a SliCK record (not in ``K``), which ``prompt_known`` and
    ``prompt_p_correct`` leave out: how much of the prompt they say nothing about (0 for an
    empty ``G_P``)."""
    n_edges = b.per_prompt(b.prompts.n_edges)
    return _share(n_edges - b.per_prompt(b.prompts.n_recorded), n_edges)


def ft_overlap_kn(b: QueryBatch) -> np.ndarray:
    """Number of ``G_P`` edges in ``E_kn``."""
    return b.per_prompt(b.prompts.n_e_kn)


def ft_overlap_unk(b: QueryBatch) -> np.ndarray:
    """Number of ``G_P`` edges in ``E_unk``."""
    return b.per_prompt(b.prompts.n_e_unk)


def entity_overlap(b: QueryBatch) -> np.ndarray:
    """Number of entities shared by ``G_P`` and ``D``."""
    return b.per_prompt(b.prompts.entity_overlap)


def query_neighbourhood_overlap(b: QueryBatch) -> np.ndarray:
    """Number of ``G_P`` entities within ``h`` hops of ``s`` in ``G`` (``s`` itself included)."""
    return b.neighbourhood_overlap


def hop_support(b: QueryBatch) -> np.ndarray:
    """1.0 if the query's ``s`` reaches its ``o`` within ``h`` hops in ``(K_kn \\ {e_q}) ∪ G_P``
    (``G_P`` with the edges the prompt states for this query), else 0.0."""
    return (b.hop_length > 0).astype(float)


def hop_length(b: QueryBatch) -> np.ndarray:
    """Length of the shortest such path (NaN when there is none within ``h``)."""
    return np.where(b.hop_length > 0, b.hop_length, np.nan)


for _f in (rel_align, prompt_known, prompt_p_correct, prompt_unlabelled, ft_overlap_kn,
           ft_overlap_unk, entity_overlap, query_neighbourhood_overlap, hop_support, hop_length):
    METRICS.register(_f.__name__, _f)

# -- augmentation strength ---------------------------------------------------------------------
Augmentation = Callable[[pd.DataFrame], np.ndarray]
AUGMENTATIONS: Registry[Augmentation] = Registry("augmentation function")


def _by_mode(metrics: pd.DataFrame, direct: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """Per unit by its prompt mode (:class:`kgfact.prompts.PromptMode`): ``steps`` where its
    exemplars state steps (CoT), ``direct`` where they answer directly (few-shot), 0 without
    exemplars (zero-shot: no prompt, ``Δ* = Δ``)."""
    exemplars = modes_with(metrics["mode"], "exemplars").to_numpy()
    stated = modes_with(metrics["mode"], "steps").to_numpy()
    return np.select([stated, exemplars], [steps, direct], 0.0)


def augmentation_default(m: pd.DataFrame) -> np.ndarray:
    """theory.md's default: ``rel_align · prompt_known``, and for a mode with steps (CoT) the
    max with hop_support."""
    aligned = (m["rel_align"] * m["prompt_known"]).to_numpy()
    return _by_mode(m, aligned, np.maximum(aligned, m["hop_support"].to_numpy()))


def augmentation_graded(m: pd.DataFrame) -> np.ndarray:
    """The default with graded knownness: ``rel_align · prompt_p_correct``, and for a mode with
    steps (CoT) the max with hop_support. Takes many values where ``prompt_known`` takes few (a
    share of four exemplars), so A(P) quantile buckets stay distinct. Needs SliCK's full
    protocol (the theory stage refuses it, or leaves it out of the comparison, on a lazy SliCK
    table)."""
    aligned = (m["rel_align"] * m["prompt_p_correct"]).to_numpy()
    return _by_mode(m, aligned, np.maximum(aligned, m["hop_support"].to_numpy()))


def augmentation_aligned_known(m: pd.DataFrame) -> np.ndarray:
    """``rel_align · prompt_known`` with or without steps: the default without CoT's path
    support."""
    aligned = (m["rel_align"] * m["prompt_known"]).to_numpy()
    return _by_mode(m, aligned, aligned)


def augmentation_rel_align(m: pd.DataFrame) -> np.ndarray:
    """``rel_align`` alone: only the relation of the exemplars matters."""
    return _by_mode(m, m["rel_align"].to_numpy(), m["rel_align"].to_numpy())


def augmentation_prompt_known(m: pd.DataFrame) -> np.ndarray:
    """``prompt_known`` alone: only whether the model knows the prompt's facts matters."""
    return _by_mode(m, m["prompt_known"].to_numpy(), m["prompt_known"].to_numpy())


for _name, _f in (("default", augmentation_default), ("graded", augmentation_graded),
                  ("aligned-known", augmentation_aligned_known),
                  ("rel-align", augmentation_rel_align),
                  ("prompt-known", augmentation_prompt_known)):
    AUGMENTATIONS.register(_name, _f)
