"""Whole-graph measures of a :class:`~kgfact.graph.model.KnowledgeGraph` as pandas tables:
degrees, PageRank, edges per relation and a size summary (the report's graph sections)."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pandas as pd

from kgfact.errors import KgfactError
from kgfact.graph.model import KnowledgeGraph
from kgfact.relations import RELATIONS


def degree_table(kg: KnowledgeGraph) -> pd.DataFrame:
    """``id``, ``label``, ``in_degree``, ``out_degree``, ``degree`` per entity, by id.

    Degrees count edges, so two relations between the same pair count twice.
    """
    ids = sorted(kg.graph)
    ins = np.array([kg.graph.in_degree(n) for n in ids], dtype=np.int64)
    outs = np.array([kg.graph.out_degree(n) for n in ids], dtype=np.int64)
    return pd.DataFrame({"id": pd.Series(ids, dtype=str), "label": _labels(kg, ids),
                         "in_degree": ins, "out_degree": outs, "degree": ins + outs})


def pagerank_table(kg: KnowledgeGraph, alpha: float = 0.85) -> pd.DataFrame:
    """``id``, ``label``, ``pagerank`` per entity, by id; the scores sum to 1.

    ``networkx.pagerank`` on the graph collapsed to a ``DiGraph`` whose edge ``u -> v`` weighs
    as many as the relations from ``u`` to ``v``: an entity linked to another by several
    statements passes on more of its rank there, as a multigraph random walk would.

    Parameters
    ----------
    kg : KnowledgeGraph
    alpha : float
        Damping factor, in ``[0, 1)``.

    Raises
    ------
    KgfactError
        If ``alpha`` is out of range or the iteration does not converge.
    """
    if not 0 <= alpha < 1:
        raise KgfactError(f"alpha must be in [0, 1), got {alpha}")
    ids = sorted(kg.graph)
    collapsed = nx.DiGraph()
    collapsed.add_nodes_from(ids)
    collapsed.add_weighted_edges_from(
        (u, v, len(relations)) for u, nbrs in kg.graph.succ.items()
        for v, relations in nbrs.items())
    try:
        rank = nx.pagerank(collapsed, alpha=alpha, weight="weight", tol=1e-12, max_iter=1000)
    except nx.PowerIterationFailedConvergence:
        raise KgfactError(f"PageRank did not converge with alpha={alpha}; "
                          "use a smaller alpha") from None
    return pd.DataFrame({"id": pd.Series(ids, dtype=str), "label": _labels(kg, ids),
                         "pagerank": np.array([rank[i] for i in ids], dtype=float)})


def relation_counts(kg: KnowledgeGraph) -> pd.DataFrame:
    """Per relation: ``relation``, ``label``, ``edges``, distinct ``subjects`` and ``objects``.

    ``label`` comes from :data:`kgfact.relations.RELATIONS` and is missing for relations not in
    the registry. Rows are sorted by relation id.
    """
    counts = (kg.triples().groupby("relation", sort=True)
              .agg(edges=("subject", "size"), subjects=("subject", "nunique"),
                   objects=("object", "nunique"))
              .reset_index())
    labels = [RELATIONS.get(r).label if r in RELATIONS else None for r in counts["relation"]]
    counts.insert(1, "label", pd.Series(labels, dtype=str))
    return counts


def summary(kg: KnowledgeGraph) -> dict[str, int | float]:
    """Size and shape of the graph.

    Returns
    -------
    dict
        ``entities``, ``edges``, ``relations`` (distinct property ids), ``density`` (share of
        ordered pairs of distinct entities linked by at least one edge, so parallel relations
        and self-loops cannot push it past 1) and ``weakly_connected_components``.
    """
    n = kg.graph.number_of_nodes()
    linked = sum(1 for u, nbrs in kg.graph.succ.items() for v in nbrs if v != u)
    return {
        "entities": n,
        "edges": len(kg),
        "relations": len(kg.relations()),
        "density": linked / (n * (n - 1)) if n > 1 else 0.0,
        "weakly_connected_components": nx.number_weakly_connected_components(kg.graph),
    }


def _labels(kg: KnowledgeGraph, ids: list[str]) -> pd.Series:
    return pd.Series([kg.graph.nodes[n]["label"] for n in ids], dtype=str)
