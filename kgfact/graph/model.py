"""The knowledge-graph model: Wikidata triplets as a networkx ``MultiDiGraph``.

Entities are nodes, keyed by entity id (``"Q17"`` or a local id such as ``"eq:Tokyo"``); every
entity-valued statement is one edge whose key is the property id, so two relations between the same
pair of entities are two edges and a repeated triple is one. Nodes carry ``label``, ``aliases``
(a tuple), ``sitelinks``, ``population`` and ``popularity`` (sitelinks, else population).

Tables in and out follow two contracts:

* triples: ``subject``, ``relation``, ``object`` (str ids);
* entities: ``id`` (str), ``label`` (str or missing), ``aliases`` (list of str), ``sitelinks`` and
  ``population`` (nullable ``Int64``).

This module holds the graph and its look-ups; RDF files are read and written by
:mod:`kgfact.graph.rdf`, walks by :mod:`kgfact.graph.traversal` and whole-graph measures by
:mod:`kgfact.graph.metrics`, all as functions of a :class:`KnowledgeGraph`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import networkx as nx
import numpy as np
import pandas as pd

from kgfact.errors import KgfactError
from kgfact.wikidata import PID_RE

TRIPLE_COLUMNS = ("subject", "relation", "object")
ENTITY_COLUMNS = ("id", "label", "aliases", "sitelinks", "population")

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
        copied. Build from data with :meth:`from_tables`, or read an RDF file with
        :func:`kgfact.graph.rdf.read_rdf`.

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
        return entity_frame(
            [n for n, _ in nodes], [d["label"] for _, d in nodes],
            [list(d["aliases"]) for _, d in nodes], [d["sitelinks"] for _, d in nodes],
            [d["population"] for _, d in nodes])

    # -- look-ups -------------------------------------------------------------------------------
    def label(self, entity: str) -> str | None:
        """English label of ``entity``, or ``None`` if it has none."""
        self.check_entities([entity])
        return self._graph.nodes[entity]["label"]

    def has_edge(self, subject: str, relation: str, obj: str) -> bool:
        """Whether the triple ``(subject, relation, obj)`` is in the graph."""
        return self._graph.has_edge(subject, obj, key=relation)

    def relations(self) -> list[str]:
        """Property ids used by at least one edge, sorted."""
        return sorted({r for _, _, r in self._graph.edges(keys=True)})

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

    def check_entities(self, ids: Iterable[str]) -> None:
        """Raise :class:`~kgfact.errors.KgfactError` naming the first few ``ids`` that are not
        entities of the graph (none, no error)."""
        unknown = [i for i in ids if i not in self._graph]
        if unknown:
            more = f" and {len(unknown) - _SHOW} more" if len(unknown) > _SHOW else ""
            raise KgfactError(f"unknown entit{'y' if len(unknown) == 1 else 'ies'} "
                              f"{', '.join(map(repr, unknown[:_SHOW]))}{more} (not in the graph)")


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


def entity_frame(ids: list[str], labels: list[str | None], aliases: list[list[str]],
                 sitelinks: list[int | None], population: list[int | None]) -> pd.DataFrame:
    """An entities table from its columns, in the contract's dtypes (integers kept exact)."""
    return pd.DataFrame({
        "id": pd.Series(ids, dtype=str),
        "label": pd.Series(labels, dtype=str),
        "aliases": pd.Series(aliases, dtype=object),
        "sitelinks": pd.array(sitelinks, dtype="Int64"),
        "population": pd.array(population, dtype="Int64"),
    })
