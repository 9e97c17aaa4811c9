"""The knowledge graph: Wikidata triplets as a networkx ``MultiDiGraph``, split by what is done
with it.

- :mod:`kgfact.graph.model`: :class:`KnowledgeGraph` (built from and turned back into the
  ``triples`` and ``entities`` tables; look-ups; subgraphs of an edge set) and :func:`popularity`;
- :mod:`kgfact.graph.rdf`: N-Triples and Turtle files, and rdflib graphs, in Wikidata's vocabulary;
- :mod:`kgfact.graph.traversal`: neighbourhoods, k-hop subgraphs, paths between two entities;
- :mod:`kgfact.graph.metrics`: degrees, PageRank, edges per relation, a size summary.

Everything is importable from here: ``from kgfact.graph import KnowledgeGraph, read_rdf``.
"""

from kgfact.graph.metrics import degree_table, pagerank_table, relation_counts, summary
from kgfact.graph.model import ENTITY_COLUMNS, TRIPLE_COLUMNS, KnowledgeGraph, popularity
from kgfact.graph.rdf import from_rdflib, read_rdf, to_rdflib, write_rdf
from kgfact.graph.traversal import Direction, k_hop_subgraph, neighbourhood, paths

__all__ = [
    "ENTITY_COLUMNS", "TRIPLE_COLUMNS", "Direction", "KnowledgeGraph", "degree_table",
    "from_rdflib", "k_hop_subgraph", "neighbourhood", "pagerank_table", "paths", "popularity",
    "read_rdf", "relation_counts", "summary", "to_rdflib", "write_rdf",
]
