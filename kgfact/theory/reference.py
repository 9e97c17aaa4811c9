"""The metrics the obvious way, one query at a time with networkx: the reference the vectorised
:class:`~kgfact.theory.metrics.MetricEngine` is checked against (tests) and timed against
(``benchmarks/theory_metrics.py``). Each call copies the prompt subgraph and ``K_kn`` into a fresh
graph, as a per-query analysis written with networkx would.
"""

from __future__ import annotations

import math

import networkx as nx

from kgfact.graph import KnowledgeGraph, neighbourhood
from kgfact.theory.graphs import PromptSubgraph
from kgfact.theory.metrics import MetricConfig


def reference_metrics(graph: KnowledgeGraph, known: nx.MultiDiGraph,
                      recorded: set[tuple[str, str, str]], prompt: PromptSubgraph,
                      query: tuple[str, str, str], e_kn: set[tuple[str, str, str]],
                      e_unk: set[tuple[str, str, str]], d_entities: set[str],
                      config: MetricConfig = MetricConfig()) -> dict[str, float]:
    """Every registered metric of one (prompt, query) unit.

    Parameters
    ----------
    graph : KnowledgeGraph
        ``G``.
    known : networkx.MultiDiGraph
        ``K_kn`` in the same layout (edge key = relation).
    recorded : set of (subject, relation, object)
        ``K``: the edges with a SliCK record.
    prompt : PromptSubgraph
        ``G_P`` with its flags, as the query sees it (:meth:`PromptSubgraph.of_query`).
    query : (subject, relation, object)
        The query edge ``e_q``.
    e_kn, e_unk : set of (subject, relation, object)
        ``E_kn`` and ``E_unk`` of the prompt's fine-tuning set (empty without one).
    d_entities : set of str
        Entity ids of ``D``.
    config : MetricConfig
        Radii.
    """
    s, r, o = query
    gp = prompt.to_networkx()
    exemplar_relations = list(prompt.exemplars["relation"])
    n_edges = gp.number_of_edges()
    labelled = [(a, k, b) for a, b, k in gp.edges(keys=True) if (a, k, b) in recorded]
    in_known = sum(known.has_edge(a, b, key=k) for a, b, k in gp.edges(keys=True))
    graded = {(a, k, b): p for a, k, b, p in
              prompt.given[["subject", "relation", "object", "p_correct"]].itertuples(
                  index=False, name=None)}
    hood = neighbourhood(graph, s, config.neighbourhood_hops) if s in graph.graph else {s}
    h = nx.compose(known, gp)
    if known.has_edge(s, o, key=r) and not gp.has_edge(s, o, key=r):
        h.remove_edge(s, o, key=r)
    reach = (nx.single_source_shortest_path_length(h, s, cutoff=config.path_hops)
             if s in h else {})
    length = reach.get(o)
    found = length is not None and length > 0
    return {
        "rel_align": (exemplar_relations.count(r) / len(exemplar_relations)
                      if exemplar_relations else 0.0),
        "prompt_known": in_known / len(labelled) if labelled else 0.0,
        "prompt_p_correct": (sum(graded[e] for e in labelled) / len(labelled)
                             if labelled else 0.0),
        "prompt_unlabelled": (n_edges - len(labelled)) / n_edges if n_edges else 0.0,
        "ft_overlap_kn": sum((a, k, b) in e_kn for a, b, k in gp.edges(keys=True)),
        "ft_overlap_unk": sum((a, k, b) in e_unk for a, b, k in gp.edges(keys=True)),
        "entity_overlap": len(set(gp.nodes) & d_entities),
        "query_neighbourhood_overlap": len(set(gp.nodes) & hood),
        "hop_support": 1.0 if found else 0.0,
        "hop_length": float(length) if found else math.nan,
    }


def known_graph(knowledge_edges: list[tuple[str, str, str]]) -> nx.MultiDiGraph:
    """``K_kn`` as a ``MultiDiGraph`` from (subject, relation, object) edges."""
    g = nx.MultiDiGraph()
    g.add_edges_from((s, o, r, {}) for s, r, o in knowledge_edges)
    return g
