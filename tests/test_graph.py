"""The knowledge-graph model against a small graph whose every number is worked out by hand.

Canonical graph (10 edges, 9 entities; Q30 has no edges)::

    Lyon Q456 ----P17---> France Q142 <---P17--- Marseille Q23482
    Paris Q90 ==P17, P1376==> France Q142 ---P36---> Paris Q90
    France Q142 ---P30---> Europe Q46 <---P30--- Germany Q183
    Hamburg Q1055 ---P17---> Germany Q183 <---P17--- Berlin Q64
    Germany Q183 ---P36---> Berlin Q64
"""

from __future__ import annotations

import pandas as pd
import pytest
import rdflib

from kgfact.errors import KgfactError
from kgfact.graph import (KnowledgeGraph, degree_table, from_rdflib, k_hop_subgraph, neighbourhood,
                          pagerank_table, paths, popularity, read_rdf, relation_counts, summary,
                          to_rdflib, write_rdf)
from kgfact.wikidata import PREFIXES

EDGES = [
    ("Q456", "P17", "Q142"),
    ("Q23482", "P17", "Q142"),
    ("Q1055", "P17", "Q183"),
    ("Q90", "P17", "Q142"),
    ("Q64", "P17", "Q183"),
    ("Q90", "P1376", "Q142"),
    ("Q142", "P36", "Q90"),
    ("Q183", "P36", "Q64"),
    ("Q142", "P30", "Q46"),
    ("Q183", "P30", "Q46"),
]
ALL = {"Q456", "Q23482", "Q1055", "Q90", "Q64", "Q142", "Q183", "Q46", "Q30"}


def frame(rows: list[tuple[str, str, str]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["subject", "relation", "object"])


def entity_table() -> pd.DataFrame:
    """Sorted by id, aliases sorted: the canonical form every reader gives back."""
    rows = [
        ("Q1055", "Hamburg", [], 180, None),
        ("Q142", "France", ["French Republic"], 300, 68_000_000),
        ("Q183", "Germany", ["Deutschland", "FRG"], 310, 84_000_000),
        ("Q23482", "Marseille", [], None, None),
        ("Q30", "United States", ["USA", "United States of America"], 400, 330_000_000),
        ("Q456", "Lyon", [], None, 520_000),
        ("Q46", "Europe", [], 290, None),
        ("Q64", "Berlin", [], 250, 3_700_000),
        ("Q90", "Paris", ["City of Light"], 260, 2_100_000),
    ]
    return pd.DataFrame({
        "id": [r[0] for r in rows],
        "label": [r[1] for r in rows],
        "aliases": [r[2] for r in rows],
        "sitelinks": pd.array([r[3] for r in rows], dtype="Int64"),
        "population": pd.array([r[4] for r in rows], dtype="Int64"),
    })


@pytest.fixture
def kg() -> KnowledgeGraph:
    # A repeated row must collapse into the one edge it describes.
    return KnowledgeGraph.from_tables(frame(EDGES + [EDGES[0]]), entity_table())


# -- construction and tables -------------------------------------------------------------------
def test_tables_round_trip_exactly(kg):
    assert len(kg) == 10
    expected = frame(sorted(EDGES))
    pd.testing.assert_frame_equal(kg.triples(), expected)
    pd.testing.assert_frame_equal(kg.entities(), entity_table())
    assert kg.triples().iloc[0].tolist() == ["Q1055", "P17", "Q183"]


def test_node_attributes(kg):
    g = kg.graph
    assert g.number_of_nodes() == 9 and g.number_of_edges() == 10
    assert g.nodes["Q183"] == {"label": "Germany", "aliases": ("Deutschland", "FRG"),
                               "sitelinks": 310, "population": 84_000_000, "popularity": 310}
    assert g.nodes["Q456"]["popularity"] == 520_000  # no sitelinks: population
    assert g.nodes["Q23482"]["popularity"] is None
    assert set(g["Q90"]["Q142"]) == {"P17", "P1376"}


def test_popularity_prefers_sitelinks_then_population():
    result = popularity(entity_table())
    assert result.name == "popularity" and str(result.dtype) == "Int64"
    assert result.tolist() == [180, 300, 310, pd.NA, 400, 520_000, 290, 250, 260]


def test_lookups(kg):
    assert kg.label("Q90") == "Paris"
    assert kg.has_edge("Q90", "P1376", "Q142")
    assert not kg.has_edge("Q142", "P1376", "Q90")
    assert not kg.has_edge("Q90", "P36", "Q142")
    assert kg.relations() == ["P1376", "P17", "P30", "P36"]
    with pytest.raises(KgfactError, match="'Q1'"):
        kg.label("Q1")
    kg.check_entities(["Q90", "Q30"])  # all in the graph (Q30 without edges): no error
    with pytest.raises(KgfactError, match=r"^unknown entities 'A', 'B', 'C', 'D', 'E' and 2 more "
                                          r"\(not in the graph\)$"):
        kg.check_entities(["Q90", *"ABCDEFG"])


def test_entities_read_back_from_parquet(tmp_path):
    # Parquet returns list columns as numpy arrays; the graph must accept them unchanged.
    entity_table().to_parquet(tmp_path / "entities.parquet")
    stored = pd.read_parquet(tmp_path / "entities.parquet")
    kg = KnowledgeGraph.from_tables(frame(EDGES), stored)
    pd.testing.assert_frame_equal(kg.entities(), entity_table())
    assert kg.graph.nodes["Q183"]["aliases"] == ("Deutschland", "FRG")


def test_entities_default_when_only_triples_given():
    kg = KnowledgeGraph.from_tables(frame([("Q1", "P17", "eq:Somewhere")]))
    assert kg.label("Q1") is None
    ents = kg.entities()
    assert ents["id"].tolist() == ["Q1", "eq:Somewhere"]
    assert ents["label"].isna().all() and ents["sitelinks"].isna().all()
    assert ents["aliases"].tolist() == [[], []]


def test_entities_with_missing_optional_columns():
    kg = KnowledgeGraph.from_tables(frame([("Q1", "P17", "Q2")]),
                                    pd.DataFrame({"id": ["Q1", "Q2"], "label": [None, "Two"]}))
    assert kg.graph.nodes["Q2"] == {"label": "Two", "aliases": (), "sitelinks": None,
                                    "population": None, "popularity": None}
    assert kg.graph.nodes["Q1"]["label"] is None
    assert kg.label("Q1") is None


def test_missing_values_become_none_and_write_nothing(tmp_path):
    entities = pd.DataFrame({"id": ["Q1", "Q2"], "label": ["One", None], "aliases": [None, ["b"]],
                             "sitelinks": [float("nan"), 3.0], "population": [None, None]})
    kg = KnowledgeGraph.from_tables(frame([("Q1", "P17", "Q2")]), entities)
    assert kg.graph.nodes["Q1"] == {"label": "One", "aliases": (), "sitelinks": None,
                                    "population": None, "popularity": None}
    assert kg.graph.nodes["Q2"] == {"label": None, "aliases": ("b",), "sitelinks": 3,
                                    "population": None, "popularity": 3}
    assert write_rdf(kg, tmp_path / "g.nt").read_text("utf-8").count("\n") == 4


@pytest.mark.parametrize("triples, message", [
    (pd.DataFrame({"subject": ["Q1"], "object": ["Q2"]}), "no relation column"),
    (frame([("Q1", "17", "Q2")]), "'17'"),
    (frame([("Q1", "P17", None)]), "missing values"),
    (frame([("Q1", "P17", "")]), "empty ids"),
    (pd.DataFrame({"subject": [1], "relation": ["P17"], "object": ["Q2"]}), "must hold strings"),
])
def test_bad_triples(triples, message):
    with pytest.raises(KgfactError, match=message):
        KnowledgeGraph.from_tables(triples)


@pytest.mark.parametrize("entities, message", [
    (pd.DataFrame({"id": ["Q1", "Q1"]}), "repeats ids 'Q1'"),
    (pd.DataFrame({"label": ["x"]}), "no 'id' column"),
    (pd.DataFrame({"id": ["Q1"], "sitelinks": [1.5]}), "'sitelinks' must hold whole numbers"),
    (pd.DataFrame({"id": ["Q1"], "aliases": ["one"]}), "aliases of 'Q1'"),
    (pd.DataFrame({"id": ["Q1"], "label": [3]}), "'label' must hold strings"),
])
def test_bad_entities(entities, message):
    with pytest.raises(KgfactError, match=message):
        KnowledgeGraph.from_tables(frame([("Q1", "P17", "Q2")]), entities)


# -- neighbourhoods, subgraphs and paths -------------------------------------------------------
@pytest.mark.parametrize("seeds, hops, direction, expected", [
    (["Q456"], 0, "both", {"Q456"}),
    (["Q456"], 1, "out", {"Q456", "Q142"}),
    (["Q456"], 2, "out", {"Q456", "Q142", "Q90", "Q46"}),
    (["Q456"], 3, "out", {"Q456", "Q142", "Q90", "Q46"}),
    (["Q456"], 1, "in", {"Q456"}),
    (["Q456"], 1, "both", {"Q456", "Q142"}),
    (["Q456"], 2, "both", {"Q456", "Q142", "Q23482", "Q90", "Q46"}),
    (["Q456"], 3, "both", {"Q456", "Q142", "Q23482", "Q90", "Q46", "Q183"}),
    (["Q456"], 4, "both", ALL - {"Q30"}),
    (["Q46"], 1, "out", {"Q46"}),
    (["Q46"], 1, "in", {"Q46", "Q142", "Q183"}),
    (["Q46"], 2, "in", ALL - {"Q30"}),
    (["Q456", "Q1055"], 1, "out", {"Q456", "Q1055", "Q142", "Q183"}),
    ("Q30", 5, "both", {"Q30"}),
])
def test_neighbourhood(kg, seeds, hops, direction, expected):
    assert neighbourhood(kg, seeds, hops, direction) == expected


def test_neighbourhood_errors(kg):
    with pytest.raises(KgfactError, match="unknown entity 'Q999'"):
        neighbourhood(kg, ["Q456", "Q999"], 1)
    with pytest.raises(KgfactError, match="hops"):
        neighbourhood(kg, ["Q456"], -1)
    with pytest.raises(KgfactError, match="direction"):
        neighbourhood(kg, ["Q456"], 1, "sideways")


def test_subgraph_keeps_edges_and_attributes(kg):
    sub = kg.subgraph([("Q142", "P36", "Q90"), ("Q456", "P17", "Q142"), ("Q142", "P36", "Q90")])
    assert sub.triples().values.tolist() == [["Q142", "P36", "Q90"], ["Q456", "P17", "Q142"]]
    assert sub.entities()["id"].tolist() == ["Q142", "Q456", "Q90"]
    assert sub.graph.nodes["Q142"] == kg.graph.nodes["Q142"]
    assert sub.label("Q90") == "Paris"
    # The subgraph owns its attributes: editing it leaves the parent alone.
    sub.graph.nodes["Q90"]["label"] = "changed"
    assert kg.label("Q90") == "Paris"
    from_table = kg.subgraph(kg.triples().iloc[:2])
    assert len(from_table) == 2 and from_table.has_edge("Q1055", "P17", "Q183")


def test_subgraph_missing_edges(kg):
    only = r"^1 edge\(s\) not in the graph: \('Q90', 'P36', 'Q142'\)$"
    with pytest.raises(KgfactError, match=only):
        kg.subgraph([("Q456", "P17", "Q142"), ("Q90", "P36", "Q142")])
    missing = [(f"Q{i}", "P17", "Q142") for i in range(1, 8)]
    with pytest.raises(KgfactError, match=r"^7 edge\(s\) .*'Q5', 'P17', 'Q142'\) and 2 more$"):
        kg.subgraph(missing)


def test_k_hop_subgraph(kg):
    assert k_hop_subgraph(kg, ["Q456"], 1).triples().values.tolist() == [["Q456", "P17", "Q142"]]
    two = k_hop_subgraph(kg, ["Q456"], 2)
    assert set(two.entities()["id"]) == {"Q456", "Q142", "Q23482", "Q90", "Q46"}
    assert two.triples().values.tolist() == [
        ["Q142", "P30", "Q46"], ["Q142", "P36", "Q90"], ["Q23482", "P17", "Q142"],
        ["Q456", "P17", "Q142"], ["Q90", "P1376", "Q142"], ["Q90", "P17", "Q142"],
    ]
    assert two.label("Q46") == "Europe"
    lonely = k_hop_subgraph(kg, "Q30", 2)
    assert len(lonely) == 0 and lonely.entities()["id"].tolist() == ["Q30"]


@pytest.mark.parametrize("source, target, max_hops, expected", [
    ("Q456", "Q90", 2, [[("Q456", "P17", "Q142"), ("Q142", "P36", "Q90")]]),
    ("Q456", "Q90", 1, []),
    ("Q1055", "Q64", 2, [[("Q1055", "P17", "Q183"), ("Q183", "P36", "Q64")]]),
    ("Q90", "Q142", 3, [[("Q90", "P1376", "Q142")], [("Q90", "P17", "Q142")]]),
    ("Q90", "Q46", 2, [[("Q90", "P1376", "Q142"), ("Q142", "P30", "Q46")],
                       [("Q90", "P17", "Q142"), ("Q142", "P30", "Q46")]]),
    ("Q90", "Q46", 1, []),
    ("Q456", "Q46", 5, [[("Q456", "P17", "Q142"), ("Q142", "P30", "Q46")]]),
    ("Q46", "Q90", 5, []),  # edges are directed
    ("Q90", "Q90", 3, []),  # simple paths never come back
    ("Q456", "Q142", 0, []),
])
def test_paths(kg, source, target, max_hops, expected):
    assert paths(kg, source, target, max_hops) == expected


def test_paths_shorter_first_and_errors():
    kg = KnowledgeGraph.from_tables(frame([("A", "P1", "B"), ("B", "P2", "C"), ("A", "P3", "C"),
                                           ("C", "P4", "A")]))
    assert paths(kg, "A", "C", 2) == [[("A", "P3", "C")], [("A", "P1", "B"), ("B", "P2", "C")]]
    with pytest.raises(KgfactError, match="unknown entity 'Z'"):
        paths(kg, "A", "Z", 2)
    with pytest.raises(KgfactError, match="max_hops"):
        paths(kg, "A", "C", -1)


# -- metrics -----------------------------------------------------------------------------------
def test_degree_table(kg):
    table = degree_table(kg)
    assert list(table.columns) == ["id", "label", "in_degree", "out_degree", "degree"]
    assert table.values.tolist() == [
        ["Q1055", "Hamburg", 0, 1, 1],
        ["Q142", "France", 4, 2, 6],
        ["Q183", "Germany", 2, 2, 4],
        ["Q23482", "Marseille", 0, 1, 1],
        ["Q30", "United States", 0, 0, 0],
        ["Q456", "Lyon", 0, 1, 1],
        ["Q46", "Europe", 2, 0, 2],
        ["Q64", "Berlin", 1, 1, 2],
        ["Q90", "Paris", 1, 2, 3],
    ]


def test_relation_counts(kg):
    table = relation_counts(kg)
    assert list(table.columns) == ["relation", "label", "edges", "subjects", "objects"]
    assert table.values.tolist() == [
        ["P1376", "capital of", 1, 1, 1],
        ["P17", "country", 5, 5, 2],
        ["P30", "continent", 2, 2, 1],
        ["P36", "capital", 2, 2, 2],
    ]


def test_relation_counts_unregistered_relation_has_no_label():
    table = relation_counts(KnowledgeGraph.from_tables(frame([("Q1", "P999999", "Q2")])))
    assert table["relation"].tolist() == ["P999999"]
    assert table["label"].isna().tolist() == [True]
    assert table["edges"].tolist() == [1]


def test_summary(kg):
    # 9 ordered pairs of distinct entities are linked (Paris->France twice counts once): 9 / (9*8).
    assert summary(kg) == {"entities": 9, "edges": 10, "relations": 4, "density": 9 / 72,
                            "weakly_connected_components": 2}
    assert summary(KnowledgeGraph()) == {"entities": 0, "edges": 0, "relations": 0,
                                          "density": 0.0, "weakly_connected_components": 0}


def test_self_loops():
    # Singapore is its own capital: the loop counts as an edge and a degree, not as a linked pair.
    kg = KnowledgeGraph.from_tables(frame([("Q334", "P36", "Q334"), ("Q334", "P30", "Q48")]))
    assert summary(kg) == {"entities": 2, "edges": 2, "relations": 2, "density": 0.5,
                            "weakly_connected_components": 1}
    assert degree_table(kg)[["id", "in_degree", "out_degree", "degree"]].values.tolist() == [
        ["Q334", 1, 2, 3], ["Q48", 1, 0, 1]]
    assert paths(kg, "Q334", "Q48", 3) == [[("Q334", "P30", "Q48")]]
    assert paths(kg, "Q334", "Q334", 3) == []
    assert neighbourhood(kg, "Q48", 1, "in") == {"Q48", "Q334"}


def pagerank(rows, alpha=0.85):
    table = pagerank_table(KnowledgeGraph.from_tables(frame(rows)), alpha)
    return dict(zip(table["id"], table["pagerank"]))


def test_pagerank_three_cycle_is_uniform():
    ranks = pagerank([("A", "P1", "B"), ("B", "P1", "C"), ("C", "P1", "A")])
    assert ranks == pytest.approx({"A": 1 / 3, "B": 1 / 3, "C": 1 / 3}, abs=1e-9)


def test_pagerank_two_nodes_by_hand():
    # A -> B, B dangling (spreads its rank evenly): a = 0.075 + 0.425 b, a + b = 1 => a = 20/57.
    ranks = pagerank([("A", "P1", "B")])
    assert ranks == pytest.approx({"A": 20 / 57, "B": 37 / 57}, abs=1e-9)


def test_pagerank_weights_parallel_relations():
    # A sends 2/3 of its rank to B (two relations) and 1/3 to C; B and C send all back.
    # a = 0.05 + 0.85 (1 - a) => a = 18/37; b = 0.05 + 0.85 * 2/3 * a = 241/740; c = 139/740.
    ranks = pagerank([("A", "P1", "B"), ("A", "P2", "B"), ("A", "P1", "C"), ("B", "P1", "A"),
                      ("C", "P1", "A")])
    assert ranks == pytest.approx({"A": 18 / 37, "B": 241 / 740, "C": 139 / 740}, abs=1e-9)


def test_pagerank_table_on_canonical_graph(kg):
    table = pagerank_table(kg)
    assert list(table.columns) == ["id", "label", "pagerank"]
    assert table["id"].tolist() == sorted(ALL)
    assert table["pagerank"].sum() == pytest.approx(1.0, abs=1e-12)
    top = table.sort_values("pagerank", ascending=False)["id"].tolist()[:2]
    assert set(top) == {"Q142", "Q46"}  # France and Europe collect the most links
    ranks = dict(zip(table["id"], table["pagerank"]))
    # Nodes without in-edges only get the teleport and dangling share: all equal.
    assert ranks["Q456"] == pytest.approx(ranks["Q30"]) == pytest.approx(ranks["Q1055"])
    assert pagerank([("A", "P1", "B")], alpha=0.0) == pytest.approx({"A": 0.5, "B": 0.5})
    with pytest.raises(KgfactError, match="alpha"):
        pagerank_table(kg, alpha=1.0)


# -- RDF ---------------------------------------------------------------------------------------
NASTY = [
    '"} DROP ALL #', 'quote " inside', "back\\slash", "trailing backslash\\", 'trailing quote"',
    'three """ quotes', "'''single'''", "new\nline", "carriage\rreturn", "tab\there",
    "Ōsaka 大阪 🌍", "\u2028line separator", "vertical\x0btab", "", " ", "<http://x> .",
    '@en', "^^<http://www.w3.org/2001/XMLSchema#integer>",
]


def nasty_tables() -> tuple[pd.DataFrame, pd.DataFrame]:
    ids = [f"Q{i}" for i in range(1, len(NASTY) + 1)]
    local = ["eq:Tokyo", "eq:São Paulo/Centro", "eq:100% <weird> id#1", "eq:quote\"and space"]
    triples = frame(sorted([(ids[i], "P17", ids[i + 1]) for i in range(len(ids) - 1)]
                           + [(local[0], "P36", "Q1"), ("Q1", "P19", local[1]),
                              (local[2], "P1376", local[3])]))
    all_ids = sorted(ids + local)
    labels = dict(zip(ids, NASTY)) | {local[0]: "Tokyo", local[1]: None}
    aliases = {"Q1": sorted(NASTY[:4]), "Q2": ["a\nb", "a\\nb"], local[2]: ["東京"]}
    entities = pd.DataFrame({
        "id": all_ids,
        "label": [labels.get(i) for i in all_ids],
        "aliases": [aliases.get(i, []) for i in all_ids],
        "sitelinks": pd.array([7 if i == "Q3" else 0 if i == local[0] else None for i in all_ids],
                              dtype="Int64"),
        "population": pd.array([13_960_000 if i == local[0] else 1 if i == "Q1" else None
                                for i in all_ids], dtype="Int64"),
    })
    return triples, entities


@pytest.mark.parametrize("suffix", [".nt", ".ttl"])
def test_rdf_round_trip_is_exact(tmp_path, suffix):
    triples, entities = nasty_tables()
    kg = KnowledgeGraph.from_tables(triples, entities)
    path = write_rdf(kg, tmp_path / f"graph{suffix}")
    assert "NaN" not in path.read_text("utf-8") and "None" not in path.read_text("utf-8")
    back = read_rdf(path)
    pd.testing.assert_frame_equal(back.triples(), triples)
    pd.testing.assert_frame_equal(back.entities(), entities)
    # The canonical graph too, isolated Q30 included (it has attributes to write).
    canonical = KnowledgeGraph.from_tables(frame(EDGES), entity_table())
    again = read_rdf(write_rdf(canonical, tmp_path / f"canonical{suffix}"))
    pd.testing.assert_frame_equal(again.triples(), frame(sorted(EDGES)))
    pd.testing.assert_frame_equal(again.entities(), entity_table())


@pytest.mark.parametrize("suffix, rdflib_format", [(".nt", "nt"), (".ttl", "turtle")])
def test_rdflib_graph_states_what_the_file_does_and_reads_back_exactly(tmp_path, suffix,
                                                                       rdflib_format):
    triples, entities = nasty_tables()
    kg = KnowledgeGraph.from_tables(triples, entities)
    g = to_rdflib(kg)
    # 20 edges, 19 labels (all but one entity's, empty ones included), 7 aliases, 2 sitelinks
    # counts and 2 populations; rdflib reading the file written through Oxigraph finds the same
    assert len(g) == 20 + 19 + 7 + 2 + 2
    assert set(g) == set(rdflib.Graph().parse(write_rdf(kg, tmp_path / f"g{suffix}"),
                                              format=rdflib_format))
    assert {prefix: str(iri) for prefix, iri in g.namespaces()} == dict(PREFIXES)
    back = from_rdflib(g)
    pd.testing.assert_frame_equal(back.triples(), triples)
    pd.testing.assert_frame_equal(back.entities(), entities)
    canonical = from_rdflib(to_rdflib(KnowledgeGraph.from_tables(frame(EDGES), entity_table())))
    pd.testing.assert_frame_equal(canonical.triples(), frame(sorted(EDGES)))
    pd.testing.assert_frame_equal(canonical.entities(), entity_table())


def test_ntriples_output_uses_wikidata_vocabulary(tmp_path):
    kg = KnowledgeGraph.from_tables(frame(EDGES), entity_table())
    text = write_rdf(kg, tmp_path / "g.nt").read_text("utf-8")
    lines = text.splitlines()
    assert lines == sorted(lines) and len(lines) == len(set(lines)) == 10 + 9 + 6 + 7 + 6
    wd, wdt = "http://www.wikidata.org/entity/", "http://www.wikidata.org/prop/direct/"
    assert f"<{wd}Q456> <{wdt}P17> <{wd}Q142> ." in lines
    assert f'<{wd}Q456> <http://www.w3.org/2000/01/rdf-schema#label> "Lyon"@en .' in lines
    assert (f'<{wd}Q142> <http://www.w3.org/2004/02/skos/core#altLabel> "French Republic"@en .'
            in lines)
    assert (f'<{wd}Q456> <{wdt}P1082> "520000"^^<http://www.w3.org/2001/XMLSchema#decimal> .'
            in lines)
    assert (f'<{wd}Q64> <http://wikiba.se/ontology#sitelinks> '
            f'"250"^^<http://www.w3.org/2001/XMLSchema#integer> .' in lines)


def test_non_q_ids_get_kgfact_iris(tmp_path):
    kg = KnowledgeGraph.from_tables(frame([("eq:São Paulo", "P17", "Q155")]))
    text = write_rdf(kg, tmp_path / "g.nt").read_text("utf-8")
    assert text == ("<urn:kgfact:entity:eq%3AS%C3%A3o%20Paulo> "
                    "<http://www.wikidata.org/prop/direct/P17> "
                    "<http://www.wikidata.org/entity/Q155> .\n")


def test_turtle_binds_prefixes(tmp_path):
    kg = KnowledgeGraph.from_tables(frame(EDGES), entity_table())
    text = write_rdf(kg, tmp_path / "g.ttl").read_text("utf-8")
    for prefix, iri in [("wd", "http://www.wikidata.org/entity/"),
                        ("wdt", "http://www.wikidata.org/prop/direct/"),
                        ("rdfs", "http://www.w3.org/2000/01/rdf-schema#"),
                        ("skos", "http://www.w3.org/2004/02/skos/core#"),
                        ("wikibase", "http://wikiba.se/ontology#")]:
        assert f"@prefix {prefix}: <{iri}> ." in text
    for term in ['wd:Q456 rdfs:label "Lyon"@en', "wdt:P17 wd:Q142", "wikibase:sitelinks 250",
                 'skos:altLabel "City of Light"@en']:
        assert term in text


def test_format_argument_overrides_suffix(tmp_path):
    kg = KnowledgeGraph.from_tables(frame(EDGES))
    path = write_rdf(kg, tmp_path / "graph.txt", format="ttl")
    assert path.read_text("utf-8").startswith("@prefix")
    assert len(read_rdf(path, format="turtle")) == 10


@pytest.mark.parametrize("read", [
    read_rdf, lambda path: from_rdflib(rdflib.Graph().parse(path, format="nt"))],
    ids=["read_rdf", "from_rdflib"])
def test_reader_ignores_what_it_does_not_know(tmp_path, read):
    path = tmp_path / "wikidata.nt"
    wd, wdt = "http://www.wikidata.org/entity/", "http://www.wikidata.org/prop/direct/"
    label = "<http://www.w3.org/2000/01/rdf-schema#label>"
    alt = "<http://www.w3.org/2004/02/skos/core#altLabel>"
    path.write_text("\n".join([
        f"<{wd}Q90> <{wdt}P17> <{wd}Q142> .",
        f'<{wd}Q90> {label} "Paris"@en .',
        f'<{wd}Q90> {label} "Parigi"@it .',
        f'<{wd}Q90> {label} "Paris, untagged" .',
        f'<{wd}Q90> {alt} "Lutetia"@en .',
        f'<{wd}Q90> {alt} "City of Light"@en .',
        f'<{wd}Q90> {alt} "Ville Lumière"@fr .',
        f'<{wd}Q90> <http://schema.org/description> "capital of France"@en .',
        f'<{wd}Q90> <{wdt}P1082> "+2100000"^^<http://www.w3.org/2001/XMLSchema#decimal> .',
        f'<{wd}Q90> <{wdt}P1082> "2000000"^^<http://www.w3.org/2001/XMLSchema#decimal> .',
        f'<{wd}Q90> <{wdt}P18> <http://commons.wikimedia.org/wiki/Special:FilePath/P.jpg> .',
        f'<{wd}Q90> <{wdt}P1448> "Paris"@fr .',
        f"<{wd}Q90> <http://www.wikidata.org/prop/P17> <{wd}statement/Q90-abc> .",
        f"<{wd}statement/Q90-abc> <http://www.wikidata.org/prop/statement/P17> <{wd}Q142> .",
        f"<{wd}P17> <{wdt}P31> <{wd}Q18616576> .",
        f"_:b0 <{wdt}P17> <{wd}Q142> .",
        f"<{wd}Q90> <{wdt}P17> _:b1 .",
        "",
    ]), "utf-8")
    kg = read(path)
    assert kg.triples().values.tolist() == [["Q90", "P17", "Q142"]]
    ents = kg.entities()
    assert ents["id"].tolist() == ["Q142", "Q90"]
    paris = ents.iloc[1]
    assert paris["label"] == "Paris"
    assert paris["aliases"] == ["City of Light", "Lutetia"]  # RDF has no order: sorted
    assert paris["population"] == 2_100_000  # several current values: the largest
    assert pd.isna(paris["sitelinks"])


def test_reader_rejects_conflicting_labels(tmp_path):
    path = tmp_path / "g.nt"
    label = "<http://www.w3.org/2000/01/rdf-schema#label>"
    path.write_text(f'<http://www.wikidata.org/entity/Q1> {label} "One"@en .\n'
                    f'<http://www.wikidata.org/entity/Q1> {label} "Uno"@en .\n', "utf-8")
    with pytest.raises(KgfactError, match="Q1 has two different English labels"):
        read_rdf(path)


def test_reader_rejects_fractional_population(tmp_path):
    path = tmp_path / "g.nt"
    path.write_text('<http://www.wikidata.org/entity/Q1> '
                    '<http://www.wikidata.org/prop/direct/P1082>'
                    ' "2.5"^^<http://www.w3.org/2001/XMLSchema#decimal> .\n', "utf-8")
    with pytest.raises(KgfactError, match="population of Q1 is not a whole number: '2.5'"):
        read_rdf(path)


@pytest.mark.parametrize("name", ["graph.json", "graph", "graph.nt.gz"])
def test_unknown_suffix(tmp_path, name):
    kg = KnowledgeGraph.from_tables(frame(EDGES))
    with pytest.raises(KgfactError, match="cannot tell the RDF format") as write_error:
        write_rdf(kg, tmp_path / name)
    assert "\n" not in str(write_error.value)
    (tmp_path / name).write_text("x", "utf-8")
    with pytest.raises(KgfactError, match="cannot tell the RDF format"):
        read_rdf(tmp_path / name)
    with pytest.raises(KgfactError, match="unknown RDF format 'xml'"):
        write_rdf(kg, tmp_path / "g.nt", format="xml")


@pytest.mark.parametrize("suffix, text, title", [
    (".nt", "<http://a> <http://b> .\n", "N-Triples"),
    (".nt", "this is not rdf\n", "N-Triples"),
    (".ttl", "@prefix wd: <http://www.wikidata.org/entity/> .\nwd:Q1 wd:P2 \"open\n", "Turtle"),
    (".ttl", "wd:Q1 wd:P2 wd:Q3 .\n", "Turtle"),  # undeclared prefix
])
def test_unparseable_file(tmp_path, suffix, text, title):
    path = tmp_path / f"bad{suffix}"
    path.write_text(text, "utf-8")
    with pytest.raises(KgfactError, match=f"is not valid {title}: ") as error:
        read_rdf(path)
    assert "\n" not in str(error.value)


def test_missing_file(tmp_path):
    with pytest.raises(KgfactError, match="does not exist"):
        read_rdf(tmp_path / "absent.nt")
