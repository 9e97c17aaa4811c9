"""Walks on a :class:`~kgfact.graph.model.KnowledgeGraph`: neighbourhoods, the subgraphs they
span and the paths between two entities (the chain-of-thought paths of the theory)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from kgfact.errors import KgfactError
from kgfact.graph.model import KnowledgeGraph

Direction = Literal["both", "out", "in"]


def neighbourhood(kg: KnowledgeGraph, nodes: str | Iterable[str], hops: int,
                  direction: Direction = "both") -> set[str]:
    """Entities at most ``hops`` edges away from any seed, seeds included.

    Parameters
    ----------
    kg : KnowledgeGraph
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
    kg.check_entities(seeds)
    if hops < 0:
        raise KgfactError(f"hops must be >= 0, got {hops}")
    adjacency = {"out": [kg.graph.succ], "in": [kg.graph.pred],
                 "both": [kg.graph.succ, kg.graph.pred]}
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


def k_hop_subgraph(kg: KnowledgeGraph, nodes: str | Iterable[str], hops: int,
                   direction: Direction = "both") -> KnowledgeGraph:
    """All entities of :func:`neighbourhood` and every edge of ``kg`` among them."""
    hood = neighbourhood(kg, nodes, hops, direction)
    return KnowledgeGraph(kg.graph.subgraph(hood).copy())


def paths(kg: KnowledgeGraph, source: str, target: str, max_hops: int
          ) -> list[list[tuple[str, str, str]]]:
    """All simple directed paths from ``source`` to ``target`` of at most ``max_hops`` edges.

    Each path is a list of ``(subject, relation, object)`` edges, e.g. the chain-of-thought
    path ``[(city, "P17", country), (country, "P36", capital)]``. Parallel relations give
    separate paths. Paths are sorted by length, then by their edges.

    Raises
    ------
    KgfactError
        If ``source`` or ``target`` is not in the graph or ``max_hops`` is negative.
    """
    kg.check_entities([source, target])
    if max_hops < 0:
        raise KgfactError(f"max_hops must be >= 0, got {max_hops}")
    # Hops still needed to reach the target; the search never enters a node that cannot make
    # it in time, which keeps it cheap around hubs of a large graph.
    to_go = {target: 0}
    frontier = [target]
    for step in range(1, max_hops + 1):
        frontier = list(dict.fromkeys(
            p for n in frontier for p in kg.graph.pred[n] if p not in to_go))
        to_go.update((p, step) for p in frontier)
    found: list[list[tuple[str, str, str]]] = []
    path: list[tuple[str, str, str]] = []
    on_path = {source}

    def extend(node: str) -> None:
        budget = max_hops - len(path) - 1  # hops left after taking the next edge
        for nxt, relations in kg.graph.succ[node].items():
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
