"""The knowledge-graph model: Wikidata triplets as a networkx ``MultiDiGraph``.

Entities are nodes, keyed by entity id (``"Q17"`` or a local id such as ``"eq:Tokyo"``); every
entity-valued statement is one edge whose key is the property id, so two relations between the same
pair of entities are two edges and a repeated triple is one. Nodes carry ``label``, ``aliases``
(a tuple), ``sitelinks``, ``population`` and ``popularity`` (sitelinks, else population).

Tables in and out follow two contracts:

* triples: ``subject``, ``relation``, ``object`` (str ids);
* entities: ``id`` (str), ``label`` (str or missing), ``aliases`` (list of str), ``sitelinks`` and
  ``population`` (nullable ``Int64``).

RDF uses Wikidata's own vocabulary (see :mod:`kgfact.wikidata`), so a file written here can be
loaded into a SPARQL store next to Wikidata data, and Wikidata exports can be read back.
"""

from __future__ import annotations

import math
import os
from collections import defaultdict
from collections.abc import Iterable
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Literal as TypingLiteral

import networkx as nx
import numpy as np
import pandas as pd
import pyoxigraph as ox
import rdflib
from rdflib import Literal, URIRef

from kgfact.errors import KgfactError
from kgfact.relations import RELATIONS
from kgfact.rundir import atomic_write_text
from kgfact.wikidata import (
    LOCAL,
    PID_RE,
    POPULATION,
    PREFIXES,
    QID_RE,
    RDFS_LABEL,
    SKOS_ALT_LABEL,
    WD,
    WIKIBASE_SITELINKS,
    entity_id,
    entity_iri,
    property_id,
    property_iri,
)

Direction = TypingLiteral["both", "out", "in"]

TRIPLE_COLUMNS = ("subject", "relation", "object")
ENTITY_COLUMNS = ("id", "label", "aliases", "sitelinks", "population")

_POPULATION = property_iri(POPULATION)
_DECIMAL = PREFIXES["xsd"] + "decimal"
_INTEGER = PREFIXES["xsd"] + "integer"
_SUFFIX_FORMATS = {".nt": "nt", ".ttl": "turtle"}
_FORMAT_NAMES = {"nt": "nt", "ntriples": "nt", "ttl": "turtle", "turtle": "turtle"}
_FORMAT_TITLES = {"nt": "N-Triples", "turtle": "Turtle"}
_SHOW = 5  # how many offending values an error message lists


def popularity(entities: pd.DataFrame) -> pd.Series:
    """Popularity of each entity: its sitelinks count, or its population where that is missing.

    Parameters
    ----------
    entities : pandas.DataFrame
        An entities table with ``sitelinks`` and ``population`` columns.

    Returns
    -------
    pandas.Series
        Nullable ``Int64`` series named ``popularity``, aligned with ``entities``.
    """
    missing = [c for c in ("sitelinks", "population") if c not in entities.columns]
    if missing:
        raise KgfactError(f"entities table has no {', '.join(missing)} column(s)")
    sitelinks = _int64(entities["sitelinks"], "sitelinks")
    population = _int64(entities["population"], "population")
    return sitelinks.where(sitelinks.notna(), population).rename("popularity")


class KnowledgeGraph:
    """A knowledge graph of Wikidata entities and entity-valued statements.

    Parameters
    ----------
    graph : networkx.MultiDiGraph, optional
        A graph in kgfact's layout (edge keys are property ids, every node carries ``label``,
        ``aliases``, ``sitelinks``, ``population`` and ``popularity``); it is used as is, not
        copied. Build from data with :meth:`from_tables`, :meth:`from_rdflib` or :meth:`read_rdf`.

    Examples
    --------
    >>> triples = pd.DataFrame({"subject": ["Q90"], "relation": ["P17"], "object": ["Q142"]})
    >>> kg = KnowledgeGraph.from_tables(triples)
    >>> kg.has_edge("Q90", "P17", "Q142"), len(kg)
    (True, 1)
    """

    def __init__(self, graph: nx.MultiDiGraph | None = None) -> None:
        self._graph = graph if graph is not None else nx.MultiDiGraph()

    @property
    def graph(self) -> nx.MultiDiGraph:
        """The underlying ``MultiDiGraph`` (shared, not a copy)."""
        return self._graph

    def __len__(self) -> int:
        """Number of edges (distinct triples)."""
        return self._graph.number_of_edges()

    def __repr__(self) -> str:
        return f"KnowledgeGraph({self._graph.number_of_nodes()} entities, {len(self)} edges)"

    # -- tables ---------------------------------------------------------------------------------
    @classmethod
    def from_tables(cls, triples: pd.DataFrame,
                    entities: pd.DataFrame | None = None) -> KnowledgeGraph:
        """Build a graph from a triples table and, optionally, an entities table.

        Parameters
        ----------
        triples : pandas.DataFrame
            Columns ``subject``, ``relation``, ``object``; repeated rows become one edge.
        entities : pandas.DataFrame, optional
            Column ``id`` plus any of ``label``, ``aliases``, ``sitelinks``, ``population``
            (missing columns mean "unknown"). Entities without edges become isolated nodes;
            entities in ``triples`` but not here get empty attributes.

        Raises
        ------
        KgfactError
            On missing columns, missing or non-string ids, malformed property ids, duplicate
            entity ids or attribute values of the wrong type.
        """
        t = _check_triples(triples)
        g = nx.MultiDiGraph()
        if entities is not None:
            g.add_nodes_from(_entity_nodes(entities))
        ends = pd.unique(pd.concat([t["subject"], t["object"]], ignore_index=True))
        g.add_nodes_from((n for n in ends if n not in g), label=None, aliases=(), sitelinks=None,
                         population=None, popularity=None)
        # 4-tuples: with an explicit key networkx neither guesses whether the third item is a
        # data dict nor adds a second edge for a repeated (subject, object, relation).
        no_data: dict[str, Any] = {}
        g.add_edges_from(zip(t["subject"].tolist(), t["object"].tolist(), t["relation"].tolist(),
                             [no_data] * len(t)))
        return cls(g)

    def triples(self) -> pd.DataFrame:
        """All edges as a triples table sorted by subject, relation, object."""
        df = pd.DataFrame(list(self._graph.edges(keys=True)),
                          columns=["subject", "object", "relation"], dtype=str)
        return df[list(TRIPLE_COLUMNS)].sort_values(list(TRIPLE_COLUMNS), ignore_index=True)

    def entities(self) -> pd.DataFrame:
        """Every node as an entities table sorted by id (isolated nodes included)."""
        nodes = sorted(self._graph.nodes(data=True), key=lambda item: item[0])
        return _entity_frame(
            [n for n, _ in nodes], [d["label"] for _, d in nodes],
            [list(d["aliases"]) for _, d in nodes], [d["sitelinks"] for _, d in nodes],
            [d["population"] for _, d in nodes])

    # -- look-ups -------------------------------------------------------------------------------
    def label(self, entity: str) -> str | None:
        """English label of ``entity``, or ``None`` if it has none."""
        self._check_known([entity])
        return self._graph.nodes[entity]["label"]

    def has_edge(self, subject: str, relation: str, obj: str) -> bool:
        """Whether the triple ``(subject, relation, obj)`` is in the graph."""
        return self._graph.has_edge(subject, obj, key=relation)

    def relations(self) -> list[str]:
        """Property ids used by at least one edge, sorted."""
        return sorted({r for _, _, r in self._graph.edges(keys=True)})

    # -- RDF ------------------------------------------------------------------------------------
    # Files are read and written with Oxigraph's Rust parser and serializer (tens of times faster
    # than rdflib on large dumps); to_rdflib/from_rdflib are for interoperating with rdflib code.
    # Both paths go through the same plain-string statements, so they cannot disagree.

    def _statements(self) -> Iterable[tuple[str, str, tuple[str, ...]]]:
        """The graph as (subject IRI, predicate IRI, object) with objects ``("iri", value)`` or
        ``("literal", value, language, datatype)``."""
        iris = {n: entity_iri(n) for n in self._graph}
        predicates = {r: property_iri(r) for r in self.relations()}
        for s, o, r in self._graph.edges(keys=True):
            yield iris[s], predicates[r], ("iri", iris[o])
        for n, data in self._graph.nodes(data=True):
            if data["label"] is not None:
                yield iris[n], RDFS_LABEL, ("literal", data["label"], "en", None)
            for alias in data["aliases"]:
                yield iris[n], SKOS_ALT_LABEL, ("literal", alias, "en", None)
            if data["population"] is not None:
                yield iris[n], _POPULATION, ("literal", str(data["population"]), None, _DECIMAL)
            if data["sitelinks"] is not None:
                yield iris[n], WIKIBASE_SITELINKS, ("literal", str(data["sitelinks"]), None,
                                                    _INTEGER)

    def to_rdflib(self) -> rdflib.Graph:
        """The graph as an :class:`rdflib.Graph` in Wikidata's vocabulary.

        An edge becomes ``wd:S wdt:P wd:O``; a label ``rdfs:label "…"@en``; each alias
        ``skos:altLabel "…"@en``; population ``wdt:P1082`` as ``xsd:decimal`` (Wikidata's type for
        quantities); sitelinks ``wikibase:sitelinks`` as ``xsd:integer``. Non-Q ids get
        ``urn:kgfact:entity:`` IRIs. An entity with no edge and no attribute has nothing to say in
        RDF and is not written.
        """
        g = rdflib.Graph(bind_namespaces="none")
        for prefix, namespace in PREFIXES.items():
            g.bind(prefix, namespace)
        for s, p, o in self._statements():
            obj = (URIRef(o[1]) if o[0] == "iri" else
                   Literal(o[1], lang=o[2], datatype=URIRef(o[3]) if o[3] else None))
            g.add((URIRef(s), URIRef(p), obj))
        return g

    @classmethod
    def from_rdflib(cls, g: rdflib.Graph) -> KnowledgeGraph:
        """Read a graph from an :class:`rdflib.Graph` (the inverse of :meth:`to_rdflib`).

        See :meth:`read_rdf` for what is read and what is ignored.
        """
        def plain(term: rdflib.term.Node) -> tuple[str, ...] | None:
            if isinstance(term, URIRef):
                return ("iri", str(term))
            if isinstance(term, Literal):
                return ("literal", str(term), term.language,
                        str(term.datatype) if term.datatype else None)
            return None  # blank node
        return cls._from_statements(
            (str(s) if isinstance(s, URIRef) else None, str(p), plain(o)) for s, p, o in g)

    @classmethod
    def _from_statements(cls, statements: Iterable[tuple[str | None, str, tuple | None]]
                         ) -> KnowledgeGraph:
        edges: list[tuple[str, str, str]] = []
        labels: dict[str, str] = {}
        aliases: defaultdict[str, set[str]] = defaultdict(set)
        sitelinks: dict[str, int] = {}
        populations: dict[str, int] = {}
        for s, p, o in statements:
            subject = _rdf_entity(s)
            if subject is None or o is None:
                continue
            if o[0] == "literal":
                english = (o[2] or "").lower() == "en"
                if p == RDFS_LABEL and english:
                    _set_once(labels, subject, o[1], "English labels")
                elif p == SKOS_ALT_LABEL and english:
                    aliases[subject].add(o[1])
                elif p == WIKIBASE_SITELINKS:
                    _set_once(sitelinks, subject, _whole_number(o[1], "sitelinks", subject),
                              "sitelinks counts")
                elif p == _POPULATION:
                    value = _whole_number(o[1], "population", subject)
                    populations[subject] = max(value, populations.get(subject, value))
                continue
            relation = property_id(p)
            obj = _rdf_entity(o[1])
            if relation is not None and obj is not None:
                edges.append((subject, relation, obj))
        ids = sorted(labels.keys() | aliases.keys() | sitelinks.keys() | populations.keys())
        entities = _entity_frame(ids, [labels.get(i) for i in ids],
                                 [sorted(aliases.get(i, ())) for i in ids],
                                 [sitelinks.get(i) for i in ids], [populations.get(i) for i in ids])
        return cls.from_tables(pd.DataFrame(edges, columns=list(TRIPLE_COLUMNS), dtype=str),
                               entities)

    def write_rdf(self, path: str | os.PathLike[str], format: str | None = None) -> Path:
        """Write the graph as N-Triples or Turtle, atomically, and return the path.

        N-Triples lines are sorted, so the same graph always gives the same file.

        Parameters
        ----------
        path : str or Path
            Destination; its suffix (``.nt`` or ``.ttl``) picks the format unless ``format`` does.
        format : {"nt", "ttl"}, optional
            Overrides the suffix (``"ntriples"`` and ``"turtle"`` are accepted too).
        """
        path = Path(path)
        fmt = _rdf_format(path, format)
        triples = [ox.Triple(ox.NamedNode(s), ox.NamedNode(p),
                             ox.NamedNode(o[1]) if o[0] == "iri" else
                             ox.Literal(o[1], language=o[2]) if o[2] else
                             ox.Literal(o[1], datatype=ox.NamedNode(o[3])))
                   for s, p, o in self._statements()]
        if fmt == "nt":
            text = ox.serialize(triples, format=ox.RdfFormat.N_TRIPLES).decode("utf-8")
            # One statement per line; split on "\n" only, as N-Triples may hold other breaks raw.
            text = "".join(line + "\n" for line in sorted(text.split("\n")) if line)
        else:
            text = ox.serialize(triples, format=ox.RdfFormat.TURTLE,
                                prefixes=dict(PREFIXES)).decode("utf-8")
        atomic_write_text(path, text)
        return path

    @classmethod
    def read_rdf(cls, path: str | os.PathLike[str], format: str | None = None) -> KnowledgeGraph:
        """Read a graph from an N-Triples (``.nt``) or Turtle (``.ttl``) file.

        Only ``wdt:`` edges between entity IRIs, English (``@en``) labels and aliases, population
        and sitelinks are read; every other statement is ignored. RDF has no order, so aliases come
        back sorted. Wikidata can state several current populations; the largest is kept.

        Parameters
        ----------
        path : str or Path
            The file; its suffix picks the format unless ``format`` does.
        format : {"nt", "ttl"}, optional
            Overrides the suffix.

        Raises
        ------
        KgfactError
            If the format is unknown, the file is missing or does not parse, an entity has two
            different English labels or sitelinks counts, or a population or sitelinks literal is
            not a whole number.
        """
        path = Path(path)
        fmt = _rdf_format(path, format)
        if not path.is_file():
            raise KgfactError(f"{path} does not exist")
        rdf_format = ox.RdfFormat.N_TRIPLES if fmt == "nt" else ox.RdfFormat.TURTLE

        def statements():
            for t in ox.parse(path=path, format=rdf_format):
                s, o = t.subject, t.object
                yield (s.value if isinstance(s, ox.NamedNode) else None, t.predicate.value,
                       ("iri", o.value) if isinstance(o, ox.NamedNode) else
                       ("literal", o.value, o.language, o.datatype.value)
                       if isinstance(o, ox.Literal) else None)
        try:
            return cls._from_statements(statements())
        except SyntaxError as exc:
            detail = " ".join(str(exc).split())[:300]
            raise KgfactError(f"{path} is not valid {_FORMAT_TITLES[fmt]}: {detail}") from None

    # -- neighbourhoods and subgraphs -----------------------------------------------------------
    def neighbourhood(self, nodes: str | Iterable[str], hops: int,
                      direction: Direction = "both") -> set[str]:
        """Entities at most ``hops`` edges away from any seed, seeds included.

        Parameters
        ----------
        nodes : str or iterable of str
            Seed entity ids.
        hops : int
            Maximum number of edges to follow (0 returns the seeds).
        direction : {"both", "out", "in"}
            Follow edges forwards (``"out"``), backwards (``"in"``) or either way.

        Raises
        ------
        KgfactError
            If a seed is not in the graph, ``hops`` is negative or ``direction`` is unknown.
        """
        seeds = [nodes] if isinstance(nodes, str) else list(nodes)
        self._check_known(seeds)
        if hops < 0:
            raise KgfactError(f"hops must be >= 0, got {hops}")
        adjacency = {"out": [self._graph.succ], "in": [self._graph.pred],
                     "both": [self._graph.succ, self._graph.pred]}
        if direction not in adjacency:
            raise KgfactError(f"unknown direction {direction!r}; use 'both', 'out' or 'in'")
        seen = set(seeds)
        frontier = list(seen)
        for _ in range(hops):
            reached = []
            for node in frontier:
                for adj in adjacency[direction]:
                    for other in adj[node]:
                        if other not in seen:
                            seen.add(other)
                            reached.append(other)
            if not reached:
                break
            frontier = reached
        return seen

    def subgraph(self, edges: Iterable[tuple[str, str, str]] | pd.DataFrame) -> KnowledgeGraph:
        """The graph made of ``edges`` and their end points, with the entities' attributes.

        Parameters
        ----------
        edges : iterable of (subject, relation, object), or a triples table

        Raises
        ------
        KgfactError
            If any edge is not in this graph (the message lists the first few).
        """
        if isinstance(edges, pd.DataFrame):
            edges = edges[list(TRIPLE_COLUMNS)].itertuples(index=False, name=None)
        wanted = list(dict.fromkeys(tuple(e) for e in edges))
        missing = [e for e in wanted if not self.has_edge(*e)]
        if missing:
            shown = ", ".join(map(repr, missing[:_SHOW]))
            more = f" and {len(missing) - _SHOW} more" if len(missing) > _SHOW else ""
            raise KgfactError(f"{len(missing)} edge(s) not in the graph: {shown}{more}")
        h = nx.MultiDiGraph()
        h.add_nodes_from((n, self._graph.nodes[n]) for s, _, o in wanted for n in (s, o))
        h.add_edges_from((s, o, r, {}) for s, r, o in wanted)
        return KnowledgeGraph(h)

    def k_hop_subgraph(self, nodes: str | Iterable[str], hops: int,
                       direction: Direction = "both") -> KnowledgeGraph:
        """All entities of :meth:`neighbourhood` and every edge among them."""
        hood = self.neighbourhood(nodes, hops, direction)
        return KnowledgeGraph(self._graph.subgraph(hood).copy())

    def paths(self, source: str, target: str, max_hops: int) -> list[list[tuple[str, str, str]]]:
        """All simple directed paths from ``source`` to ``target`` of at most ``max_hops`` edges.

        Each path is a list of ``(subject, relation, object)`` edges, e.g. the chain-of-thought
        path ``[(city, "P17", country), (country, "P36", capital)]``. Parallel relations give
        separate paths. Paths are sorted by length, then by their edges.

        Raises
        ------
        KgfactError
            If ``source`` or ``target`` is not in the graph or ``max_hops`` is negative.
        """
        self._check_known([source, target])
        if max_hops < 0:
            raise KgfactError(f"max_hops must be >= 0, got {max_hops}")
        # Hops still needed to reach the target; the search never enters a node that cannot make
        # it in time, which keeps it cheap around hubs of a large graph.
        to_go = {target: 0}
        frontier = [target]
        for step in range(1, max_hops + 1):
            frontier = list(dict.fromkeys(
                p for n in frontier for p in self._graph.pred[n] if p not in to_go))
            to_go.update((p, step) for p in frontier)
        found: list[list[tuple[str, str, str]]] = []
        path: list[tuple[str, str, str]] = []
        on_path = {source}

        def extend(node: str) -> None:
            budget = max_hops - len(path) - 1  # hops left after taking the next edge
            for nxt, relations in self._graph.succ[node].items():
                if nxt in on_path or to_go.get(nxt, budget + 1) > budget:
                    continue
                for relation in relations:
                    path.append((node, relation, nxt))
                    if nxt == target:
                        found.append(list(path))
                    else:
                        on_path.add(nxt)
                        extend(nxt)
                        on_path.discard(nxt)
                    path.pop()

        extend(source)
        return sorted(found, key=lambda p: (len(p), p))

    # -- metrics --------------------------------------------------------------------------------
    def degree_table(self) -> pd.DataFrame:
        """``id``, ``label``, ``in_degree``, ``out_degree``, ``degree`` per entity, by id.

        Degrees count edges, so two relations between the same pair count twice.
        """
        ids = sorted(self._graph)
        ins = np.array([self._graph.in_degree(n) for n in ids], dtype=np.int64)
        outs = np.array([self._graph.out_degree(n) for n in ids], dtype=np.int64)
        return pd.DataFrame({"id": pd.Series(ids, dtype=str), "label": self._labels(ids),
                             "in_degree": ins, "out_degree": outs, "degree": ins + outs})

    def pagerank_table(self, alpha: float = 0.85) -> pd.DataFrame:
        """``id``, ``label``, ``pagerank`` per entity, by id; the scores sum to 1.

        ``networkx.pagerank`` on the graph collapsed to a ``DiGraph`` whose edge ``u -> v`` weighs
        as many as the relations from ``u`` to ``v``: an entity linked to another by several
        statements passes on more of its rank there, as a multigraph random walk would.

        Parameters
        ----------
        alpha : float
            Damping factor, in ``[0, 1)``.

        Raises
        ------
        KgfactError
            If ``alpha`` is out of range or the iteration does not converge.
        """
        if not 0 <= alpha < 1:
            raise KgfactError(f"alpha must be in [0, 1), got {alpha}")
        ids = sorted(self._graph)
        collapsed = nx.DiGraph()
        collapsed.add_nodes_from(ids)
        collapsed.add_weighted_edges_from(
            (u, v, len(relations)) for u, nbrs in self._graph.succ.items()
            for v, relations in nbrs.items())
        try:
            rank = nx.pagerank(collapsed, alpha=alpha, weight="weight", tol=1e-12, max_iter=1000)
        except nx.PowerIterationFailedConvergence:
            raise KgfactError(f"PageRank did not converge with alpha={alpha}; "
                              "use a smaller alpha") from None
        return pd.DataFrame({"id": pd.Series(ids, dtype=str), "label": self._labels(ids),
                             "pagerank": np.array([rank[i] for i in ids], dtype=float)})

    def relation_counts(self) -> pd.DataFrame:
        """Per relation: ``relation``, ``label``, ``edges``, distinct ``subjects`` and ``objects``.

        ``label`` comes from :data:`kgfact.relations.RELATIONS` and is missing for relations not in
        the registry. Rows are sorted by relation id.
        """
        counts = (self.triples().groupby("relation", sort=True)
                  .agg(edges=("subject", "size"), subjects=("subject", "nunique"),
                       objects=("object", "nunique"))
                  .reset_index())
        labels = [RELATIONS.get(r).label if r in RELATIONS else None for r in counts["relation"]]
        counts.insert(1, "label", pd.Series(labels, dtype=str))
        return counts

    def summary(self) -> dict[str, int | float]:
        """Size and shape of the graph.

        Returns
        -------
        dict
            ``entities``, ``edges``, ``relations`` (distinct property ids), ``density`` (share of
            ordered pairs of distinct entities linked by at least one edge, so parallel relations
            and self-loops cannot push it past 1) and ``weakly_connected_components``.
        """
        n = self._graph.number_of_nodes()
        linked = sum(1 for u, nbrs in self._graph.succ.items() for v in nbrs if v != u)
        return {
            "entities": n,
            "edges": len(self),
            "relations": len(self.relations()),
            "density": linked / (n * (n - 1)) if n > 1 else 0.0,
            "weakly_connected_components": nx.number_weakly_connected_components(self._graph),
        }

    # -- helpers --------------------------------------------------------------------------------
    def _check_known(self, ids: list[str]) -> None:
        unknown = [i for i in ids if i not in self._graph]
        if unknown:
            more = f" and {len(unknown) - _SHOW} more" if len(unknown) > _SHOW else ""
            raise KgfactError(f"unknown entit{'y' if len(unknown) == 1 else 'ies'} "
                              f"{', '.join(map(repr, unknown[:_SHOW]))}{more} (not in the graph)")

    def _labels(self, ids: list[str]) -> pd.Series:
        return pd.Series([self._graph.nodes[n]["label"] for n in ids], dtype=str)


# -- table checks ------------------------------------------------------------------------------
def _check_triples(triples: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in TRIPLE_COLUMNS if c not in triples.columns]
    if missing:
        raise KgfactError(f"triples table has no {', '.join(missing)} column(s); "
                          f"expected {', '.join(TRIPLE_COLUMNS)}")
    t = triples[list(TRIPLE_COLUMNS)]
    for col in TRIPLE_COLUMNS:
        _check_ids(t[col], f"triples column {col!r}")
    bad = [r for r in pd.unique(t["relation"]) if not PID_RE.fullmatch(r)]
    if bad:
        raise KgfactError(f"triples column 'relation' holds non-property ids "
                          f"{', '.join(map(repr, bad[:_SHOW]))} (expected P followed by digits)")
    return t


def _check_ids(ids: pd.Series, where: str) -> None:
    if ids.isna().any():
        raise KgfactError(f"{where} has missing values (row {ids.isna().idxmax()!r})")
    if not pd.api.types.is_string_dtype(ids):
        raise KgfactError(f"{where} must hold strings")
    if (ids == "").any():
        raise KgfactError(f"{where} has empty ids (row {(ids == '').idxmax()!r})")


def _entity_nodes(entities: pd.DataFrame) -> list[tuple[str, dict[str, Any]]]:
    """Check an entities table and turn its rows into networkx node records."""
    if "id" not in entities.columns:
        raise KgfactError("entities table has no 'id' column; "
                          f"expected {', '.join(ENTITY_COLUMNS)}")
    ids = entities["id"]
    _check_ids(ids, "entities column 'id'")
    repeated = ids[ids.duplicated()].unique()
    if len(repeated):
        raise KgfactError(f"entities table repeats ids {', '.join(map(repr, repeated[:_SHOW]))}")

    def column(name: str, default: Any) -> pd.Series:
        # An absent optional column means the attribute is unknown for every entity.
        if name in entities.columns:
            return entities[name]
        return pd.Series([default] * len(entities), index=entities.index, dtype=object)

    labels = column("label", None)
    present = labels[labels.notna()]  # an all-missing column may come as float NaN
    if len(present) and not pd.api.types.is_string_dtype(present):
        raise KgfactError("entities column 'label' must hold strings or missing values")
    numbers = pd.DataFrame({c: _int64(column(c, None), c) for c in ("sitelinks", "population")})
    return [
        (eid, {"label": None if pd.isna(label) else label, "aliases": _aliases(aliases, eid),
               "sitelinks": _plain(sitelinks), "population": _plain(population),
               "popularity": _plain(popular)})
        for eid, label, aliases, sitelinks, population, popular in zip(
            ids, labels, column("aliases", ()), numbers["sitelinks"], numbers["population"],
            popularity(numbers))
    ]


def _aliases(value: Any, entity: str) -> tuple[str, ...]:
    # Parquet hands list columns back as numpy arrays; a missing list means no aliases.
    if isinstance(value, (list, tuple, np.ndarray)):
        if all(isinstance(a, str) for a in value):
            return tuple(value)
    elif value is None or (isinstance(value, float) and math.isnan(value)):
        return ()
    raise KgfactError(f"aliases of {entity!r} must be a list of strings, got {value!r}")


def _int64(values: pd.Series, column: str) -> pd.Series:
    try:
        return pd.Series(pd.array(values, dtype="Int64"), index=values.index)
    except (TypeError, ValueError):
        raise KgfactError(f"entities column {column!r} must hold whole numbers or missing "
                          "values") from None


def _plain(value: Any) -> int | None:
    return None if pd.isna(value) else int(value)


def _entity_frame(ids: list[str], labels: list[str | None], aliases: list[list[str]],
                  sitelinks: list[int | None], population: list[int | None]) -> pd.DataFrame:
    return pd.DataFrame({
        "id": pd.Series(ids, dtype=str),
        "label": pd.Series(labels, dtype=str),
        "aliases": pd.Series(aliases, dtype=object),
        "sitelinks": pd.array(sitelinks, dtype="Int64"),
        "population": pd.array(population, dtype="Int64"),
    })


# -- RDF helpers -------------------------------------------------------------------------------
def _rdf_format(path: Path, format: str | None) -> str:
    if format is not None:
        if format.lower() not in _FORMAT_NAMES:
            raise KgfactError(f"unknown RDF format {format!r}; use 'nt' or 'ttl'")
        return _FORMAT_NAMES[format.lower()]
    if path.suffix.lower() not in _SUFFIX_FORMATS:
        raise KgfactError(f"cannot tell the RDF format of {path}: use a .nt (N-Triples) or .ttl "
                          "(Turtle) suffix, or pass format='nt' or 'ttl'")
    return _SUFFIX_FORMATS[path.suffix.lower()]


def _rdf_entity(iri: str | None) -> str | None:
    """Entity id of an item or kgfact IRI; ``None`` for anything else."""
    if iri is None:
        return None
    # wd: also names properties, lexemes and statement nodes, which are not graph entities.
    if iri.startswith(LOCAL) or (iri.startswith(WD) and QID_RE.fullmatch(iri[len(WD):])):
        return entity_id(iri)
    return None


def _whole_number(text: str, what: str, entity: str) -> int:
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise KgfactError(f"{what} of {entity} is not a number: {text!r}") from None
    if not value.is_finite() or value != value.to_integral_value():
        raise KgfactError(f"{what} of {entity} is not a whole number: {text!r}")
    return int(value)


def _set_once(found: dict[str, Any], entity: str, value: Any, what: str) -> None:
    if found.setdefault(entity, value) != value:
        raise KgfactError(f"{entity} has two different {what}: {found[entity]!r} and {value!r}")
