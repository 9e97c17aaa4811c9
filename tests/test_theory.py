"""The theory stage on a small graph whose every number is worked out by hand.

Graph G (11 edges; ids as in test_graph)::

    Lyon Q456 -P17-> France Q142 <-P17- Marseille Q23482
    Paris Q90 =P17, P1376=> France Q142 -P36-> Paris Q90
    France Q142 -P30-> Europe Q46 <-P30- Germany Q183
    Hamburg Q1055 -P17-> Germany Q183 <-P17- Berlin Q64
    Germany Q183 -P36-> Berlin Q64
    France Q142 -P47-> Germany Q183

One question per edge except P47. SliCK categories (base model)::

    q1 Lyon P17 France        HighlyKnown     q6 France P36 Paris      HighlyKnown
    q2 Marseille P17 France   Unknown         q7 Germany P36 Berlin    WeaklyKnown
    q3 Hamburg P17 Germany    MaybeKnown      q8 France P30 Europe     Unknown
    q4 Paris P17 France       HighlyKnown     q9 Germany P30 Europe    HighlyKnown
    q5 Berlin P17 Germany     Unknown         q10 Paris P1376 France   (no SliCK record)

so K_kn = {q1, q3, q4, q6, q7, q9}. Fine-tuning set D = {q1, q2, q7}: E_kn = {q1, q7},
E_unk = {q2}, entities(D) = {Lyon, France, Marseille, Germany, Berlin}.

Prompts: pA few-shot, exemplars q1, q3, q8, q2; pC CoT, exemplar q9 and CoT steps
(France P47 Germany), (Germany P30 Europe); pZ zero-shot, no edges.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kgfact.cli import main
from kgfact.errors import KgfactError
from kgfact.graph import KnowledgeGraph
from kgfact.rundir import RunDir
from kgfact.theory import (AUGMENTATIONS, CONTROLS, Control, FineTuningSet, GapStudy,
                           MetricConfig, MetricEngine, ModelKnowledge, PredictionConfig,
                           PromptSubgraph, PromptTable, StepParser, bootstrap, flag_edges,
                           relation_distances, verify_steps)
from kgfact.theory.graphs import TRIPLE
from kgfact.theory.metrics import ragged
from kgfact.theory.predict import spearman
from kgfact.theory.reference import known_graph, reference_metrics

QA = {
    "q1": ("Q456", "P17", "Q142"), "q2": ("Q23482", "P17", "Q142"),
    "q3": ("Q1055", "P17", "Q183"), "q4": ("Q90", "P17", "Q142"),
    "q5": ("Q64", "P17", "Q183"), "q6": ("Q142", "P36", "Q90"),
    "q7": ("Q183", "P36", "Q64"), "q8": ("Q142", "P30", "Q46"),
    "q9": ("Q183", "P30", "Q46"), "q10": ("Q90", "P1376", "Q142"),
}
BORDER = ("Q142", "P47", "Q183")
CATEGORY = {"q1": "HighlyKnown", "q2": "Unknown", "q3": "MaybeKnown", "q4": "HighlyKnown",
            "q5": "Unknown", "q6": "HighlyKnown", "q7": "WeaklyKnown", "q8": "Unknown",
            "q9": "HighlyKnown"}
# share of right SliCK answers (graded knownness), consistent with the categories
P_CORRECT = {"q1": 1.0, "q2": 0.0, "q3": 0.5, "q4": 0.9, "q5": 0.0, "q6": 1.0, "q7": 0.1,
             "q8": 0.0, "q9": 0.8}
LABELS = {"Q456": "Lyon", "Q23482": "Marseille", "Q1055": "Hamburg", "Q90": "Paris",
          "Q64": "Berlin", "Q142": "France", "Q183": "Germany", "Q46": "Europe"}
ALIASES = {"Q142": ["French Republic"], "Q183": ["Deutschland"]}
D = ["q1", "q2", "q7"]
PROMPT_EDGES = ([("pA", "exemplar", *QA[q]) for q in ("q1", "q3", "q8", "q2")]
                + [("pC", "exemplar", *QA["q9"]), ("pC", "cot", *BORDER),
                   ("pC", "cot", *QA["q9"])])
PROMPTS = [("pA", "few-shot"), ("pC", "cot"), ("pZ", "zero-shot")]


def triples() -> pd.DataFrame:
    return pd.DataFrame([*QA.values(), BORDER], columns=["subject", "relation", "object"])


def entities() -> pd.DataFrame:
    ids = sorted(LABELS)
    return pd.DataFrame({"id": ids, "label": [LABELS[i] for i in ids],
                         "aliases": [ALIASES.get(i, []) for i in ids],
                         "sitelinks": pd.array([None] * len(ids), dtype="Int64"),
                         "population": pd.array([None] * len(ids), dtype="Int64")})


def qa() -> pd.DataFrame:
    rows = [(q, *e) for q, e in QA.items()]
    return pd.DataFrame(rows, columns=["qid", "subject", "relation", "object"])


def slick() -> pd.DataFrame:
    return pd.DataFrame({"qid": list(CATEGORY), "category": list(CATEGORY.values()),
                         "p_correct": [P_CORRECT[q] for q in CATEGORY]})


def ft_table(qids: list[str]) -> pd.DataFrame:
    return qa().set_index("qid").loc[qids].reset_index()


def edges_frame() -> pd.DataFrame:
    return pd.DataFrame(PROMPT_EDGES, columns=["prompt_id", "source", "subject", "relation",
                                               "object"])


@pytest.fixture
def knowledge() -> ModelKnowledge:
    return ModelKnowledge.from_tables(triples(), qa(), slick(), entities())


@pytest.fixture
def ftset(knowledge) -> FineTuningSet:
    return FineTuningSet.from_table("ft-mixed", ft_table(D), knowledge)


def triples_of(knowledge: ModelKnowledge, edges) -> set[tuple[str, str, str]]:
    s, r, o = knowledge.codec.decode(edges.codes)
    c = knowledge.codec
    return set(zip(c.entities[s], c.relations[r], c.entities[o]))


# -- objects -----------------------------------------------------------------------------------
def test_knowledge_and_fine_tuning_split(knowledge, ftset):
    assert len(knowledge.graph) == 11
    assert len(knowledge.recorded) == 9  # q10 has no SliCK record
    assert triples_of(knowledge, knowledge.known) == {QA[q] for q in
                                                      ("q1", "q3", "q4", "q6", "q7", "q9")}
    assert triples_of(knowledge, ftset.known) == {QA["q1"], QA["q7"]}
    assert triples_of(knowledge, ftset.unknown) == {QA["q2"]}
    assert set(knowledge.codec.entities[ftset.entities]) == {"Q456", "Q142", "Q23482", "Q183",
                                                             "Q64"}
    assert ftset.unknown_share == pytest.approx(1 / 3)
    assert ftset.relations == ("P17", "P36")


def test_edge_codes_round_trip(knowledge):
    c = knowledge.codec
    codes = c.encode_frame(triples())
    s, r, o = c.decode(codes)
    assert list(zip(c.entities[s], c.relations[r], c.entities[o])) == [*QA.values(), BORDER]
    # an id the codec does not hold encodes to -1 and is in no set
    bad = c.encode(c.entity(["Q1"]), c.relation(["P17"]), c.entity(["Q142"]))
    assert bad.tolist() == [-1] and not knowledge.graph.contains(bad).any()


def test_prompt_subgraph_flags(knowledge, ftset):
    edges = edges_frame()
    gen = pd.DataFrame([("pC", "generated", "Q90", "P17", "Q183")],
                       columns=edges.columns)
    p = PromptSubgraph.build("pC", pd.concat([edges[edges["prompt_id"] == "pC"], gen]),
                             knowledge, ftset)
    flags = p.edges[["source", "in_graph", "in_recorded", "in_known", "in_e_kn", "in_e_unk",
                     "hallucinated"]]
    assert flags.values.tolist() == [
        ["exemplar", True, True, True, False, False, False],     # q9: known, not in D
        ["cot", True, False, False, False, False, False],        # border: in G, no record
        ["cot", True, True, True, False, False, False],          # q9 again, as a CoT step
        ["generated", False, False, False, False, False, True],  # Paris is not in Germany
    ]
    assert len(p.given) == 2  # X ∪ C without the repeat; generated steps are not given content
    assert sorted(p.to_networkx().edges(keys=True)) == [("Q142", "Q183", "P47"),
                                                        ("Q183", "Q46", "P30")]


def test_flag_edges_rejects_unknown_source(knowledge):
    bad = edges_frame().assign(source="exemplar").iloc[:1].assign(source="hint")
    with pytest.raises(KgfactError, match="unknown prompt edge source"):
        flag_edges(bad, knowledge, None)


# -- metrics -----------------------------------------------------------------------------------
def engine_of(knowledge, prompts, edges, ftset=None, config=MetricConfig()) -> MetricEngine:
    table = PromptTable.build(pd.DataFrame(prompts, columns=["prompt_id", "mode"]),
                              flag_edges(edges, knowledge, ftset), knowledge)
    return MetricEngine(knowledge, table, config)


def engine_for(knowledge, ftset, config=MetricConfig()) -> MetricEngine:
    return engine_of(knowledge, PROMPTS, edges_frame(), ftset, config)


def reference_frame(triples_, entities_, known_edges, recorded, flagged, units, config,
                    e_kn=frozenset(), e_unk=frozenset(), d_entities=frozenset()) -> pd.DataFrame:
    """The networkx reference's metrics of every unit, each on the G_P its query sees."""
    kg = KnowledgeGraph.from_tables(triples_, entities_)
    known = known_graph(known_edges)
    return pd.DataFrame([
        reference_metrics(kg, known, recorded, PromptSubgraph.of_query(flagged, p, q),
                          (s, r, o), set(e_kn), set(e_unk), set(d_entities), config)
        for p, q, s, r, o in units[["prompt_id", "qid", "subject", "relation", "object"]]
        .itertuples(index=False)])


UNITS = [("pA", "q5"), ("pA", "q4"), ("pC", "q8"), ("pZ", "q10"), ("pZ", "q4")]


def units_frame() -> pd.DataFrame:
    return pd.DataFrame([(p, q, *QA[q]) for p, q in UNITS],
                        columns=["prompt_id", "qid", "subject", "relation", "object"])


def test_metrics_exact_values(knowledge, ftset):
    m = engine_for(knowledge, ftset).compute(units_frame())
    # pA: 3 of 4 exemplars are P17 (query relation of q5 and q4) -> rel_align 3/4.
    # G_P(pA) = {q1, q3, q8, q2}; in K_kn: q1, q3 -> prompt_known 2/4. In E_kn: q1; E_unk: q2.
    # entities(pA) = {Lyon, France, Hamburg, Germany, Europe, Marseille}; with D's entities
    # they share Lyon, France, Germany, Marseille -> 4.
    # Berlin's 1-hop neighbourhood (either direction) = {Berlin, Germany}: Germany -> 1.
    # Paris's = {Paris, France}: France -> 1.
    # Berlin has no out-edge in K_kn (q5 is Unknown) or pA: no path.
    # Paris -> France by P17 is the query edge q4 itself, dropped; P1376 has no SliCK record,
    # so it is not in K_kn: no path.
    # pC for q8 (France P30 Europe): exemplar q9 is P30 -> rel_align 1/1. G_P(pC) = {q9,
    # border}; the border edge has no SliCK record (unlabelled), q9 is known -> prompt_known
    # 1/1, prompt_unlabelled 1/2; no edge in D, entities {Germany, Europe, France}, of which
    # Germany and France are D's -> 2. France's neighbourhood is {France, Lyon, Marseille,
    # Paris, Europe, Germany}: all 3 entities. Path: France -P47-> Germany (CoT step)
    # -P30-> Europe (q9, in K_kn and in pC) -> length 2.
    # pZ: no edges, every prompt metric 0. q10 (Paris P1376 France): Paris -P17-> France is
    # q4, in K_kn and not the query edge -> length 1. q4 under pZ: as under pA, no path.
    expected = pd.DataFrame({
        "mode": ["few-shot", "few-shot", "cot", "zero-shot", "zero-shot"],
        "rel_align": [0.75, 0.75, 1.0, 0.0, 0.0],
        "prompt_known": [0.5, 0.5, 1.0, 0.0, 0.0],
        # pA: (1 + 0.5 + 0 + 0) / 4 for q1, q3, q8, q2; pC: 0.8 / 1 for q9 (the border edge
        # is unlabelled, not a 0)
        "prompt_p_correct": [0.375, 0.375, 0.8, 0.0, 0.0],
        # pA: all four exemplars have a SliCK record; pC: q9 has, the border edge has not
        "prompt_unlabelled": [0.0, 0.0, 0.5, 0.0, 0.0],
        "ft_overlap_kn": [1, 1, 0, 0, 0],
        "ft_overlap_unk": [1, 1, 0, 0, 0],
        "entity_overlap": [4, 4, 2, 0, 0],
        "query_neighbourhood_overlap": [1, 1, 3, 0, 0],
        "hop_support": [0.0, 0.0, 1.0, 1.0, 0.0],
        "hop_length": [math.nan, math.nan, 2.0, 1.0, math.nan],
    })
    pd.testing.assert_frame_equal(m, expected, check_dtype=False)


def test_neighbourhood_two_hops(knowledge, ftset):
    m = engine_for(knowledge, ftset, MetricConfig(neighbourhood_hops=2)).compute(units_frame())
    # Berlin within 2 hops: Berlin, Germany, and Germany's neighbours Hamburg, Europe, France;
    # of pA's entities that is Hamburg, Germany, Europe, France -> 4 (Lyon, Marseille are 3 away)
    assert m["query_neighbourhood_overlap"].tolist()[:3] == [4, 5, 3]


def test_hop_support_needs_enough_hops(knowledge, ftset):
    m = engine_for(knowledge, ftset, MetricConfig(path_hops=1)).compute(units_frame())
    # the 2-hop CoT path of q8 no longer counts; q10's direct P17 edge still does
    assert m["hop_support"].tolist() == [0.0, 0.0, 0.0, 1.0, 0.0]


def test_prompt_stating_the_query_edge_supports_it(knowledge):
    # a CoT step that states e_q itself is the prompt giving the answer: a 1-hop path, even
    # though e_q is dropped from K_kn
    edges = pd.DataFrame([("pQ", "cot", *QA["q4"])], columns=edges_frame().columns)
    table = PromptTable.build(pd.DataFrame([("pQ", "cot")], columns=["prompt_id", "mode"]),
                              flag_edges(edges, knowledge, None), knowledge)
    units = pd.DataFrame([("pQ", *QA["q4"])], columns=["prompt_id", "subject", "relation",
                                                       "object"])
    m = MetricEngine(knowledge, table).compute(units)
    assert m["hop_length"].tolist() == [1.0] and m["prompt_known"].tolist() == [1.0]


def test_chunking_does_not_change_results(knowledge, ftset):
    whole = engine_for(knowledge, ftset).compute(units_frame())
    chunked = engine_for(knowledge, ftset, MetricConfig(chunk=2)).compute(units_frame())
    pd.testing.assert_frame_equal(whole, chunked)


def test_vectorised_equals_networkx_reference(knowledge, ftset):
    # every prompt with every question, on both radii settings
    units = pd.DataFrame([(p, q, *QA[q]) for p, _ in PROMPTS for q in QA],
                         columns=["prompt_id", "qid", "subject", "relation", "object"])
    known = [QA[q] for q in QA if CATEGORY.get(q, "Unknown") != "Unknown"]
    flagged = flag_edges(edges_frame(), knowledge, ftset)
    for config in (MetricConfig(), MetricConfig(neighbourhood_hops=2, path_hops=3)):
        fast = engine_for(knowledge, ftset, config).compute(units).drop(columns="mode")
        slow = reference_frame(triples(), entities(), known, {QA[q] for q in CATEGORY},
                               flagged, units, config, {QA["q1"], QA["q7"]}, {QA["q2"]},
                               {"Q456", "Q142", "Q23482", "Q183", "Q64"})
        pd.testing.assert_frame_equal(fast, slow[fast.columns], check_dtype=False)


def test_unlabelled_step_edges_are_not_unknown(knowledge):
    # The four exemplars of pA (q1, q3, q8, q2) once few-shot (pF) and once under CoT (pK) with
    # two steps that have no SliCK record, the border edge and Paris P1376 France (q10): they
    # are unlabelled, not unknown, so both prompts have prompt_known 2/4 (q1, q3) and
    # prompt_p_correct (1 + 0.5 + 0 + 0) / 4, and the graded A(P) is 3/4 * 3/8 = 9/32 in both
    # modes (Berlin has no path to Germany: hop_support 0). Only prompt_unlabelled differs:
    # 0 and 2/6. pU states the two unlabelled steps alone: no labelled edge, knownness 0.
    exemplars = [QA[q] for q in ("q1", "q3", "q8", "q2")]
    steps = [("cot", *BORDER), ("cot", *QA["q10"])]
    edges = pd.DataFrame([("pF", "exemplar", *e) for e in exemplars]
                         + [("pK", "exemplar", *e) for e in exemplars]
                         + [("pK", *e) for e in steps] + [("pU", *e) for e in steps],
                         columns=edges_frame().columns)
    engine = engine_of(knowledge, [("pF", "few-shot"), ("pK", "cot"), ("pU", "cot")], edges)
    units = pd.DataFrame([(p, "q5", *QA["q5"]) for p in ("pF", "pK", "pU")],
                         columns=["prompt_id", "qid", "subject", "relation", "object"])
    m = engine.compute(units)
    assert m["prompt_known"].tolist() == [0.5, 0.5, 0.0]
    assert m["prompt_p_correct"].tolist() == [0.375, 0.375, 0.0]
    assert m["prompt_unlabelled"].tolist() == pytest.approx([0.0, 1 / 3, 1.0])
    assert AUGMENTATIONS.get("graded")(m).tolist() == [0.28125, 0.28125, 0.0]
    assert AUGMENTATIONS.get("default")(m).tolist() == [0.375, 0.375, 0.0]


# A second world for edges a prompt states for one query only (a CoT path hint):
#   queries (Unknown):       qa s -P1-> o     qb s -P1-> o2     qc t -P1-> o
#   HighlyKnown:             k1 m -P2-> o     k2 m -P2-> o2     k3 x -P2-> y    h1 t -P3-> n
#   Unknown:                 u1 n -P2-> o     MaybeKnown (p_correct 0.25): e1 a -P1-> b
# CoT prompt pH: exemplar e1 for every query; hints s -P3-> m for qa and s -P3-> x for qb (not in
# G, no SliCK record) and h1 for qc.
HINT_QA = {"qa": ("s", "P1", "o"), "qb": ("s", "P1", "o2"), "qc": ("t", "P1", "o"),
           "k1": ("m", "P2", "o"), "k2": ("m", "P2", "o2"), "k3": ("x", "P2", "y"),
           "h1": ("t", "P3", "n"), "u1": ("n", "P2", "o"), "e1": ("a", "P1", "b")}
HINT_CATEGORY = {"qa": "Unknown", "qb": "Unknown", "qc": "Unknown", "k1": "HighlyKnown",
                 "k2": "HighlyKnown", "k3": "HighlyKnown", "h1": "HighlyKnown", "u1": "Unknown",
                 "e1": "MaybeKnown"}
HINT_P = {"Unknown": 0.0, "HighlyKnown": 1.0, "MaybeKnown": 0.25}
HINT_EDGES = [("pH", "exemplar", *HINT_QA["e1"], None), ("pH", "cot", "s", "P3", "m", "qa"),
              ("pH", "cot", "s", "P3", "x", "qb"), ("pH", "cot", *HINT_QA["h1"], "qc")]
HINT_UNITS = ["qa", "qb", "qc", "u1"]


def hint_world(config=MetricConfig()):
    t = pd.DataFrame(list(HINT_QA.values()), columns=["subject", "relation", "object"])
    q = t.assign(qid=list(HINT_QA))
    sl = pd.DataFrame({"qid": list(HINT_CATEGORY), "category": list(HINT_CATEGORY.values())})
    sl["p_correct"] = sl["category"].map(HINT_P)
    edges = pd.DataFrame(HINT_EDGES, columns=[*edges_frame().columns, "qid"])
    knowledge = ModelKnowledge.from_tables(t, q, sl, extra=[edges])
    units = pd.DataFrame([("pH", u, *HINT_QA[u]) for u in HINT_UNITS],
                         columns=["prompt_id", "qid", "subject", "relation", "object"])
    return t, knowledge, edges, units, engine_of(knowledge, [("pH", "cot")], edges,
                                                 config=config)


def test_hop_support_follows_the_query_path_the_prompt_states():
    _, _, _, units, engine = hint_world()
    m = engine.compute(units)
    # qa: the hint s -> m and the known m -> o: a 2-hop path. qb: its hint leads to x, whose
    # known edge goes to y, not o2 (qa's hint s -> m would reach o2 through k2, but qb's prompt
    # does not state it). qc: t -> n, but n -> o is Unknown. u1: no hint, n -> o is the query.
    assert m["hop_support"].tolist() == [1.0, 0.0, 0.0, 0.0]
    assert m["hop_length"].tolist() == pytest.approx([2.0, math.nan, math.nan, math.nan],
                                                     nan_ok=True)
    # each query's G_P: e1 plus its own hint. qa, qb: e1 labelled (known, 0.25), the hint
    # unlabelled; qc: e1 and h1 (known, 1.0); u1: e1 alone
    assert m["prompt_known"].tolist() == [1.0, 1.0, 1.0, 1.0]
    assert m["prompt_p_correct"].tolist() == [0.25, 0.25, 0.625, 0.25]
    assert m["prompt_unlabelled"].tolist() == [0.5, 0.5, 0.0, 0.0]
    # e1 is P1, as are qa, qb, qc; u1 is P2. Within 1 hop of s: s (qa, qb); of t: t, n (qc)
    assert m["rel_align"].tolist() == [1.0, 1.0, 1.0, 0.0]
    assert m["query_neighbourhood_overlap"].tolist() == [1, 1, 2, 0]
    _, _, _, units, engine = hint_world(MetricConfig(path_hops=1))
    assert engine.compute(units)["hop_support"].tolist() == [0.0, 0.0, 0.0, 0.0]


def test_query_level_edges_equal_networkx_reference():
    for config in (MetricConfig(), MetricConfig(neighbourhood_hops=2, path_hops=3)):
        t, knowledge, edges, units, engine = hint_world(config)
        fast = engine.compute(units).drop(columns="mode")
        slow = reference_frame(
            t, None, [HINT_QA[q] for q, c in HINT_CATEGORY.items() if c != "Unknown"],
            set(HINT_QA.values()), flag_edges(edges, knowledge, None), units, config)
        pd.testing.assert_frame_equal(fast, slow[fast.columns], check_dtype=False)


FUZZ_ENTITIES, FUZZ_RELATIONS = [f"e{i}" for i in range(5)], ["P1", "P2", "P3"]
fuzz_edge = st.tuples(st.sampled_from(FUZZ_ENTITIES), st.sampled_from(FUZZ_RELATIONS),
                      st.sampled_from(FUZZ_ENTITIES))


@settings(deadline=None, max_examples=30, suppress_health_check=[HealthCheck.too_slow])
@given(triples_=st.lists(fuzz_edge.filter(lambda e: e[0] != e[2]), min_size=1, max_size=10,
                         unique=True),
       categories=st.lists(st.sampled_from([None, "Unknown", "MaybeKnown", "HighlyKnown"]),
                           min_size=10, max_size=10),
       stated=st.lists(st.tuples(st.sampled_from(["pF", "pC"]),
                                 st.sampled_from(["exemplar", "cot"]), fuzz_edge,
                                 st.one_of(st.none(), st.integers(0, 9))), max_size=12),
       hops=st.integers(1, 3))
def test_query_level_metrics_fuzzed_against_networkx(triples_, categories, stated, hops):
    # random graphs, SliCK records and prompts whose edges are shared or stated for one query
    # (also repeating a shared edge, or for a query of another relation): both ways agree.
    # Queries are not self-loops (s = o): networkx puts o at distance 0, no path of length >= 1
    t = pd.DataFrame(triples_, columns=["subject", "relation", "object"])
    q = t.assign(qid=[f"q{i}" for i in range(len(t))])
    cat = dict(zip(q["qid"], categories))
    sl = pd.DataFrame([(k, c) for k, c in cat.items() if c], columns=["qid", "category"])
    sl["p_correct"] = sl["category"].map({"Unknown": 0.0, "MaybeKnown": 0.25,
                                          "HighlyKnown": 1.0})
    edges = pd.DataFrame([(p, src, *e, None if k is None else f"q{k % len(t)}")
                          for p, src, e, k in stated],
                         columns=[*edges_frame().columns, "qid"])
    knowledge = ModelKnowledge.from_tables(t, q, sl, extra=[edges])
    units = pd.DataFrame([(p, k, s, r, o) for p in ("pF", "pC")
                          for k, s, r, o in q[["qid", *TRIPLE]].itertuples(index=False)],
                         columns=["prompt_id", "qid", *TRIPLE])
    config = MetricConfig(path_hops=hops)
    fast = engine_of(knowledge, [("pF", "few-shot"), ("pC", "cot")], edges,
                     config=config).compute(units).drop(columns="mode")
    slow = reference_frame(
        t, None, [e for e, k in zip(triples_, q["qid"]) if cat[k] not in (None, "Unknown")],
        {e for e, k in zip(triples_, q["qid"]) if cat[k]},
        flag_edges(edges, knowledge, None), units, config)
    pd.testing.assert_frame_equal(fast, slow[fast.columns], check_dtype=False)


def test_query_level_edges_need_units_with_a_qid():
    _, _, _, units, engine = hint_world()
    with pytest.raises(KgfactError, match="units need a qid column"):
        engine.compute(units.drop(columns="qid"))


def test_unit_with_unknown_prompt_is_an_error(knowledge, ftset):
    units = units_frame().assign(prompt_id="nope")
    with pytest.raises(KgfactError, match="unknown prompt"):
        engine_for(knowledge, ftset).compute(units)


def test_ragged_ranges():
    assert ragged(np.array([5, 0, 2]), np.array([2, 0, 3])).tolist() == [5, 6, 2, 3, 4]
    assert ragged(np.array([1]), np.array([0])).tolist() == []


def test_augmentation_functions(knowledge, ftset):
    m = engine_for(knowledge, ftset).compute(units_frame())
    # few-shot: 3/4 * 1/2 = 3/8; CoT: max(1 * 1, hop_support 1) = 1; zero-shot: 0
    assert AUGMENTATIONS.get("default")(m).tolist() == [0.375, 0.375, 1.0, 0.0, 0.0]
    assert AUGMENTATIONS.get("aligned-known")(m).tolist() == [0.375, 0.375, 1.0, 0.0, 0.0]
    assert AUGMENTATIONS.get("rel-align")(m).tolist() == [0.75, 0.75, 1.0, 0.0, 0.0]
    assert AUGMENTATIONS.get("prompt-known")(m).tolist() == [0.5, 0.5, 1.0, 0.0, 0.0]


# -- CoT steps ---------------------------------------------------------------------------------
def test_step_parser(knowledge):
    ents = pd.concat([entities(), pd.DataFrame({"id": ["Q99"], "label": ["Paris"],
                                                "aliases": [[]]})], ignore_index=True)
    parser = StepParser(knowledge, ents)
    step = parser.parse("Lyon is in the country France.")
    assert (step.status, step.subject, step.relation, step.object) == ("edge", "Q456", "P17",
                                                                       "Q142")
    # case, articles and a missing period do not matter; an alias names its entity
    assert parser.parse("the capital of the french republic is PARIS").status == "edge"
    # "Paris" names Q90 and Q99: the reading Q90 is an edge of G
    step = parser.parse("Paris is the capital of France.")
    assert (step.status, step.subject, step.relation) == ("edge", "Q90", "P1376")
    step = parser.parse("Berlin is in the country France.")
    assert (step.status, step.subject, step.object) == ("hallucinated", "Q64", "Q142")
    step = parser.parse("Atlantis is in the country France.")
    assert (step.status, step.subject, step.object, step.subject_text) == (
        "hallucinated", None, "Q142", "atlantis")
    assert parser.parse("France is a lovely country.").status == "unparsed"


def test_a_step_stated_for_one_query_is_in_that_querys_prompt_only(knowledge):
    edges = pd.DataFrame([("pH", "cot", *QA["q9"], "q8")],
                         columns=["prompt_id", "source", "subject", "relation", "object", "qid"])
    preds = pd.DataFrame({"model": ["m"] * 2, "set": ["ft-known"] * 2,
                          "checkpoint": ["convergence"] * 2, "prompt_id": ["pH"] * 2,
                          "qid": ["q8", "q5"],
                          "cot_steps": [["Germany is on the continent of Europe."]] * 2})
    out = verify_steps(preds, StepParser(knowledge, entities()),
                       flag_edges(edges, knowledge, None))
    assert out[["qid", "status", "in_prompt"]].values.tolist() == [["q8", "edge", True],
                                                                   ["q5", "edge", False]]


def test_verify_steps_without_any_step(knowledge):
    preds = pd.DataFrame({"model": ["m"], "set": ["ft-known"], "checkpoint": ["convergence"],
                          "prompt_id": ["pC"], "qid": ["q8"], "cot_steps": [[]]})
    out = verify_steps(preds, StepParser(knowledge, entities()),
                       flag_edges(edges_frame(), knowledge, None))
    assert out.empty and {"subject", "in_known", "hallucinated"} <= set(out.columns)


def test_verify_steps_table(knowledge):
    preds = pd.DataFrame({
        "model": ["ft-known@convergence"] * 2, "set": ["ft-known"] * 2,
        "checkpoint": ["convergence"] * 2, "prompt_id": ["pC", "pC"], "qid": ["q8", "q5"],
        "cot_steps": [["France shares a border with Germany.", "Germany is on the continent "
                       "of Europe."], ["Berlin is in the country France", "So what"]],
    })
    flagged = flag_edges(edges_frame(), knowledge, None)
    out = verify_steps(preds, StepParser(knowledge, entities()), flagged)
    assert out[["qid", "step", "status", "in_known", "in_prompt", "hallucinated"]
               ].values.tolist() == [
        ["q8", 0, "edge", False, True, False],       # the prompt's own CoT step, no record
        ["q8", 1, "edge", True, True, False],        # q9
        ["q5", 0, "hallucinated", False, False, True],
        ["q5", 1, "unparsed", False, False, True],
    ]


# -- predictions -------------------------------------------------------------------------------
# Four ID test queries, one checkpoint. Zero-shot correctness (q1..q4):
#   ft-known 1 1 1 0 (0.75), mix-25 1 1 0 0 (0.5), ft-unknown 0 1 0 0 (0.25).
# u = 1 - 2 * unknown_share: 1, 0.5, -1. Fitted on all three sets (study()'s default):
#   OLS slope of acc on u: mean u = 1/6, mean acc = 1/2,
#   Sxy = (5/6)(1/4) + (1/3)(0) + (-7/6)(-1/4) = 1/2, Sxx = 25/36 + 4/36 + 49/36 = 78/36,
#   alpha = (1/2) / (78/36) = 3/13; delta_u = 2, so the predicted zero-shot gap is 6/13.
# Few-shot "random" with A = 1/2 everywhere: predicted gap 6/13 * 1/2 = 3/13.
#   ft-known 1 1 0 0, ft-unknown 0 1 0 0 -> d = 1 0 0 0: measured 1/4; zero-shot d0 = 1 0 1 0.
# Controls: "known" (A = 3/4): ft-known 1 1 1 0, ft-unknown 1 1 0 0 -> gap 1/4;
#           "unknown" (A = 1/4): ft-known 1 1 1 1, ft-unknown 0 0 0 1 -> gap 3/4.
P_QA = {"q1": "P17", "q2": "P17", "q3": "P36", "q4": "P36"}
CORRECT = {
    ("ft-known", "zero-shot", "none"): [1, 1, 1, 0],
    ("mix-25", "zero-shot", "none"): [1, 1, 0, 0],
    ("ft-unknown", "zero-shot", "none"): [0, 1, 0, 0],
    ("ft-known", "few-shot", "random"): [1, 1, 0, 0],
    ("ft-unknown", "few-shot", "random"): [0, 1, 0, 0],
    ("ft-known", "few-shot", "known"): [1, 1, 1, 0],
    ("ft-unknown", "few-shot", "known"): [1, 1, 0, 0],
    ("ft-known", "few-shot", "unknown"): [1, 1, 1, 1],
    ("ft-unknown", "few-shot", "unknown"): [0, 0, 0, 1],
}
A_OF = {"none": 0.0, "random": 0.5, "known": 0.75, "unknown": 0.25}
SHARE = {"ft-known": 0.0, "mix-25": 0.25, "ft-unknown": 1.0}
FIT_ALL = ("ft-known", "ft-unknown", "mix-25")  # nothing held out


def predictions_frame() -> pd.DataFrame:
    rows = []
    for (set_, mode, strategy), correct in CORRECT.items():
        for (qid, rel), ok in zip(P_QA.items(), correct):
            rows.append({"model": f"{set_}@convergence", "set": set_,
                         "checkpoint": "convergence", "mode": mode, "strategy": strategy,
                         "prompt_id": f"{set_}/{strategy}", "qid": qid, "relation": rel,
                         "distribution": "id", "category": "Unknown" if qid == "q4" else None,
                         "cot_steps": [], "correct": bool(ok)})
    return pd.DataFrame(rows)


def study(**overrides) -> GapStudy:
    """The study of :func:`predictions_frame`, fitted on all three sets unless ``overrides``
    say otherwise (``fit_sets=None``: FT-Known and FT-Unknown, mix-25 held out)."""
    preds = predictions_frame()
    prompts = preds[["prompt_id"]].drop_duplicates().assign(prompt=0)
    aug = preds[["prompt_id", "qid", "strategy"]].drop_duplicates()
    aug["default"] = aug["strategy"].map(A_OF)
    config = PredictionConfig(**{"min_bucket": 1, "n_boot": 200, "fit_sets": FIT_ALL,
                                 **overrides})
    controls = {"known-vs-unknown": CONTROLS.get("known-vs-unknown")}
    return GapStudy(preds, prompts, SHARE, aug.drop(columns="strategy"),
                    pd.DataFrame(columns=["relation", "distance", "hops"]), controls, config,
                    primary="default")


def test_alpha_fit_and_bucket_predictions():
    s = study()
    point = s.estimate(np.ones(len(s.cells)))
    assert point["fit.alpha"].tolist() == pytest.approx([3 / 13])
    keys = {(aug, fam): (k, i) for i, (aug, fam, k, _) in enumerate(s.buckets)}
    k, _ = keys[("default", "all")]
    block = point["b.default.all"]
    row = k.index[k["strategy"] == "random"][0]
    # measured, zero-shot, mean A, predicted, predicted reduction, measured reduction
    assert block[:, row] == pytest.approx([1 / 4, 1 / 2, 1 / 2, 3 / 13, 3 / 13, 1 / 4])
    k, _ = keys[("default", "relation")]
    block = point["b.default.relation"]
    rows = k.index[k["strategy"] == "random"]
    assert k.loc[rows, "level"].tolist() == ["P17", "P36"]
    # P17: d = 1 0 -> 1/2, d0 = 1 0 -> 1/2; P36: d = 0 0, d0 = 1 0 -> 1/2
    assert block[0, rows] == pytest.approx([0.5, 0.0])
    assert block[1, rows] == pytest.approx([0.5, 0.5])
    k, _ = keys[("default", "category")]
    assert k["level"].tolist() == ["Unknown", "uncovered"] * 3
    # few-shot A: four units each at 1/4 (unknown), 1/2 (random), 3/4 (known); the quartiles
    # are 1/4, 1/4, 1/2, 3/4, 3/4, so the inner cut is at 1/2 and ties go up: two bins
    k, _ = keys[("default", "a_quantile")]
    assert list(zip(k["strategy"], k["level"])) == [("known", "A in [0.500, 0.750]"),
                                                    ("random", "A in [0.500, 0.750]"),
                                                    ("unknown", "A in [0.250, 0.250]")]


def test_intervals_resample_training_seeds():
    # seed 0: FT-Known right and FT-Unknown wrong on every prompted query (gap 1); seed 1: both
    # right (gap 0). Every query has the same gap under a seed, so a bootstrap over queries
    # alone would give the interval [1/2, 1/2]; drawing the seeds gives [0, 1].
    frames = []
    for seed in (0, 1):
        p = predictions_frame().assign(seed=seed)
        prompted = p["mode"] != "zero-shot"
        p.loc[prompted, "correct"] = (p.loc[prompted, "set"] == "ft-known") | (seed == 1)
        frames.append(p)
    preds = pd.concat(frames, ignore_index=True)
    aug = preds[["prompt_id", "qid"]].drop_duplicates().assign(default=0.5)
    s = GapStudy(preds, preds[["prompt_id"]].drop_duplicates().assign(prompt=0), SHARE, aug,
                 pd.DataFrame(columns=["relation", "distance", "hops"]), {},
                 PredictionConfig(min_bucket=1, n_boot=400), primary="default")
    table = s.tables()["theory_predictions"]
    row = table[(table["family"] == "all") & (table["strategy"] == "random")].iloc[0]
    assert row["measured_gap"] == 0.5 and row["n"] == 8  # 4 queries x 2 seeds
    assert (row["ci_low"], row["ci_high"]) == (0.0, 1.0)


def test_bucket_statistics_exact():
    s = study()
    k = next(k for aug, fam, k, _ in s.buckets if fam == "relation")
    stats = s._bucket_statistics(k[k["strategy"] == "random"].reset_index(drop=True),
                                 s.estimate(np.ones(len(s.cells)))["b.default.relation"][:, 2:4])
    few = dict(zip(["spearman_gap", "mae_gap", "spearman_reduction", "mae_reduction",
                    "share_reduced"], stats[:5]))
    # predicted 3/13 for both; measured 1/2 and 0 -> MAE ((1/2 - 3/13) + 3/13) / 2 = 1/4;
    # reductions: predicted 3/13 both, measured 0 and 1/2 -> MAE 1/4; both buckets have
    # measured <= zero-shot; Spearman needs 3 buckets -> NaN
    assert math.isnan(few["spearman_gap"]) and math.isnan(few["spearman_reduction"])
    assert few["mae_gap"] == pytest.approx(0.25) and few["mae_reduction"] == pytest.approx(0.25)
    assert few["share_reduced"] == 1.0


def test_tables_with_intervals():
    tables = study().tables()
    fit = tables["theory_fit"]
    assert fit["set"].tolist() == ["ft-known", "ft-unknown", "mix-25"]
    assert fit["accuracy"].tolist() == pytest.approx([0.75, 0.25, 0.5])
    assert fit["u"].tolist() == [1.0, -1.0, 0.5]
    assert fit["predicted_gap_known_unknown"].tolist() == pytest.approx([6 / 13] * 3)
    assert (fit["ci_low"] <= fit["accuracy"]).all() and (fit["accuracy"] <= fit["ci_high"]).all()
    c = tables["theory_controls"].iloc[0]
    # predicted gaps 6/13 * (1 - 3/4) = 3/26 < 6/13 * (1 - 1/4) = 9/26: treatment smaller
    assert (c["predicted"], c["expected"]) == ("<", "<")
    assert c["predicted_gap_treatment"] == pytest.approx(3 / 26)
    assert c["difference"] == pytest.approx(-0.5)
    # per-query differences are -1 -1 (P17) and 0 0 (P36); queries are drawn within their
    # relation, so every replicate keeps two P17 and two P36 queries: the interval is -1/2
    assert (c["ci_low"], c["ci_high"], c["outcome"]) == (-0.5, -0.5, "as predicted")
    preds = tables["theory_predictions"]
    assert set(preds["family"]) == {"all", "relation", "category", "a_quantile"}


def test_fit_needs_two_unknown_shares():
    preds = predictions_frame()
    preds = preds[~preds["set"].isin(["mix-25", "ft-unknown"]) | (preds["mode"] != "zero-shot")]
    s = GapStudy(preds, preds[["prompt_id"]].drop_duplicates().assign(prompt=0), SHARE,
                 preds[["prompt_id", "qid"]].drop_duplicates().assign(default=0.0),
                 pd.DataFrame(columns=["relation", "distance", "hops"]), {},
                 PredictionConfig(min_bucket=1, n_boot=2), primary="default")
    assert math.isnan(s.estimate(np.ones(len(s.cells)))["fit.alpha"][0])


def test_missing_set_is_an_error():
    with pytest.raises(KgfactError, match="'ft-unknown' is not in the ftsets index"):
        GapStudy(predictions_frame(), pd.DataFrame({"prompt_id": [], "prompt": []}),
                 {"ft-known": 0.0}, pd.DataFrame(columns=["prompt_id", "qid"]),
                 pd.DataFrame(), {}, PredictionConfig(), primary="default")


def test_bootstrap_and_spearman():
    values = np.array([1.0, 2.0, 3.0, 6.0])
    boot = bootstrap(lambda w: {"mean": np.array([np.average(values, weights=w)])}, 4,
                     n_boot=300, level=0.9, seed=1)
    point, low, high = boot["mean"]
    assert point.tolist() == [3.0] and 1.0 <= low[0] < 3.0 < high[0] <= 6.0
    again = bootstrap(lambda w: {"mean": np.array([np.average(values, weights=w)])}, 4,
                      n_boot=300, level=0.9, seed=1)["mean"]
    assert again[1].tolist() == low.tolist()  # seeded
    assert spearman(np.array([1.0, 2, 3]), np.array([1.0, 3, 2])) == pytest.approx(0.5)
    assert math.isnan(spearman(np.array([1.0, 2]), np.array([2.0, 1])))


def test_training_and_ood_statistics():
    # early_stop: every set answers q1, q2 zero-shot and nothing else -> alpha 0; convergence
    # alpha 3/13 (above), so the gap opens by 3/13. OOD queries o1..o3 (P30, P38, P47) at
    # convergence: FT-Known always right, FT-Unknown right on o2, o3 -> gaps 1, 0, 0 against
    # distances 0.2, 0.5, 0.9: Spearman of ranks (1, 2, 3) and (3, 1.5, 1.5) = -1.5 / sqrt(3)
    conv = predictions_frame()
    early = conv[conv["mode"] == "zero-shot"].assign(
        checkpoint="early_stop", correct=lambda d: d["qid"].isin(["q1", "q2"]))
    ood = []
    for set_, correct in (("ft-known", [1, 1, 1]), ("ft-unknown", [0, 1, 1])):
        for (qid, rel), ok in zip((("o1", "P30"), ("o2", "P38"), ("o3", "P47")), correct):
            ood.append(conv.iloc[0].to_dict() | {
                "set": set_, "qid": qid, "relation": rel, "distribution": "ood",
                "strategy": "none", "mode": "zero-shot", "prompt_id": f"{set_}/none",
                "correct": bool(ok)})
    preds = pd.concat([conv, early, pd.DataFrame(ood)], ignore_index=True)
    aug = preds[["prompt_id", "qid"]].drop_duplicates().assign(default=0.0)
    dist = pd.DataFrame({"relation": ["P30", "P38", "P47"], "distance": [0.2, 0.5, 0.9],
                         "hops": [1.0, 1.0, 2.0]})
    s = GapStudy(preds, preds[["prompt_id"]].drop_duplicates().assign(prompt=0), SHARE, aug,
                 dist, {}, PredictionConfig(min_bucket=1, n_boot=2, fit_sets=FIT_ALL),
                 primary="default")
    point = s.estimate(np.ones(len(s.cells)))
    assert point["training"].tolist() == pytest.approx([3 / 13])
    assert point["ood.gap"].tolist() == [1.0, 0.0, 0.0]
    assert point["ood.rho"].tolist() == pytest.approx([-1.5 / math.sqrt(3)])


def test_held_out_set_is_predicted_from_the_fit_on_the_others():
    # fitted on FT-Known (0.75, u = 1) and FT-Unknown (0.25, u = -1): α = 1/4, c = 1/2; mix-25
    # (u = 1/2) is predicted 1/2 + 1/8 = 5/8 and answers 1/2: difference -1/8
    tables = study(fit_sets=None, n_boot=20).tables()
    assert tables["theory_fit"]["set"].tolist() == ["ft-known", "ft-unknown"]
    assert tables["theory_fit"]["alpha"].tolist() == pytest.approx([1 / 4] * 2)
    assert tables["theory_fit"]["fitted"].tolist() == pytest.approx([3 / 4, 1 / 4])
    held = tables["theory_heldout"]
    assert held["set"].tolist() == ["mix-25", "pooled"]
    assert held[["measured", "predicted", "difference"]].to_numpy().ravel().tolist() == (
        pytest.approx([1 / 2, 5 / 8, -1 / 8] * 2))
    assert held["n_queries"].tolist() == [4, 4] and held["u"].iloc[0] == 0.5
    # fitted on all three sets, nothing is held out, and the table says so
    held = study(n_boot=20).tables()["theory_heldout"]
    assert held[["checkpoint", "set", "outcome"]].values.tolist() == [
        ["convergence", "pooled", "not measured"]]
    assert held["note"].iloc[0].startswith("no set held out")


def test_statistics_have_p_values_and_count_dropped_replicates():
    # two training seeds; OOD P38 and P47 answered under both (gap 0), P30 under seed 0 only
    # (gap 1). A replicate that draws seed 1 twice leaves P30 without weight: two distances,
    # no Spearman, dropped. Every other replicate has the point's rho = -1.5 / sqrt(3).
    base = predictions_frame()
    ood = []
    for seed in (0, 1):
        for set_, correct in (("ft-known", [1, 1, 1]), ("ft-unknown", [0, 1, 1])):
            for (qid, rel), ok in zip((("o1", "P30"), ("o2", "P38"), ("o3", "P47")), correct):
                if rel != "P30" or seed == 0:
                    ood.append(base.iloc[0].to_dict() | {
                        "set": set_, "qid": qid, "relation": rel, "distribution": "ood",
                        "strategy": "none", "mode": "zero-shot", "prompt_id": f"{set_}/none",
                        "correct": bool(ok), "seed": seed})
    preds = pd.concat([base.assign(seed=0), base.assign(seed=1), pd.DataFrame(ood)],
                      ignore_index=True)
    aug = preds[["prompt_id", "qid"]].drop_duplicates().assign(default=0.0)
    dist = pd.DataFrame({"relation": ["P30", "P38", "P47"], "distance": [0.2, 0.5, 0.9],
                         "hops": [1.0, 1.0, 2.0]})
    config = PredictionConfig(min_bucket=1, n_boot=200)
    s = GapStudy(preds, preds[["prompt_id"]].drop_duplicates().assign(prompt=0), SHARE, aug,
                 dist, {}, config, primary="default")
    # the draws the bootstrap makes: the replicates in which seed 0 has no weight
    rng = np.random.default_rng(config.seed)
    seed0 = (s.cells["seed"] == 0).to_numpy()
    dropped = sum(int(s.draw_weights(rng)[seed0].sum() == 0) for _ in range(config.n_boot))
    assert 0 < dropped < config.n_boot
    stats = s.tables()["theory_stats"]
    row = stats[stats["statistic"] == "spearman_distance_gap"].iloc[0]
    assert (row["value"], row["ci_low"], row["ci_high"]) == pytest.approx(
        (-1.5 / math.sqrt(3),) * 3)
    assert row["dropped"] == dropped
    # every finite replicate below 0: p = 2 (0 + 1) / (finite + 1)
    assert row["p_value"] == pytest.approx(2 / (config.n_boot - dropped + 1))
    assert row["note"].startswith(f"{dropped} of 200 bootstrap replicates not finite")
    # a mean absolute error has no null value at 0: no p-value
    assert stats.loc[stats["statistic"] == "mae_gap", "p_value"].isna().all()


def test_relation_distances():
    # R1 a-b, R2 b-c, R4 c-d, R3 d-e: consecutive relations share one of three entities,
    # Jaccard 1/3, length 2/3; R5 stands apart
    t = pd.DataFrame([("a", "P1", "b"), ("b", "P2", "c"), ("c", "P4", "d"), ("d", "P3", "e"),
                      ("x", "P5", "y")], columns=["subject", "relation", "object"])
    d = relation_distances(t, ["P1"], ["P1", "P2", "P3", "P4", "P5"]).set_index("relation")
    assert d["distance"].tolist() == pytest.approx([0, 2 / 3, 2, 4 / 3, math.inf])
    assert d["hops"].tolist() == [0, 1, 3, 2, math.inf]


# -- controlled prompts ------------------------------------------------------------------------
def test_controls_are_registered_with_predictions():
    c = CONTROLS.get("known-vs-unknown")
    assert isinstance(c, Control) and (c.treatment, c.baseline, c.expected) == ("known",
                                                                                "unknown", "<")
    assert sorted(CONTROLS.names()) == ["from-d-vs-disjoint", "known-vs-unknown",
                                        "neighbourhood-vs-random", "path-hint-vs-side-steps",
                                        "same-vs-other-relation"]
    from kgfact.prompts import STRATEGIES

    for name in CONTROLS:  # every control names strategies evaluation can run
        assert {CONTROLS.get(name).treatment, CONTROLS.get(name).baseline} <= set(STRATEGIES)


# -- the stage and its command -----------------------------------------------------------------
# A run directory in the evaluation stage's layout on the graph above. D: ft-known = {q1, q7}
# (both known), ft-unknown = {q2, q5} (both Unknown); relations P17 and P36. Test queries:
# q3, q4 (P17) and q6 (P36) in distribution; q8, q9 (P30) and q10 (P1376) out of it.
TEST_ID, TEST_OOD = ["q3", "q4", "q6"], ["q8", "q9", "q10"]
ZERO_SHOT = {"ft-known": [1, 1, 1, 1, 1, 0], "ft-unknown": [0, 1, 0, 0, 1, 0]}
STEPS = {("ft-known", "q3"): ["Hamburg is in the country Germany."],
         ("ft-unknown", "q3"): ["Hamburg is in the country France."],
         ("ft-known", "q4"): ["Paris is the capital of France."],
         ("ft-unknown", "q4"): ["Paris is the capital of France."],
         ("ft-known", "q6"): ["The capital of France is Lyon.", "France is nice."],
         ("ft-unknown", "q6"): []}


def write_run(path) -> RunDir:
    run = RunDir(path)
    with run.stage("build", {}):
        pass
    split = {q: "test" for q in TEST_ID + TEST_OOD} | {q: "train" for q in ("q1", "q2", "q5",
                                                                            "q7")}
    q = qa()
    q["subject_label"] = q["subject"].map(LABELS)
    q["answer"] = q["object"].map(LABELS)
    q["aliases"] = q["object"].map(lambda e: ALIASES.get(e, []))
    q["question"] = "Q?"
    q["popularity"] = 1.0
    q["split"] = q["qid"].map(split).fillna("dev")
    q["distribution"] = np.where(q["relation"].isin(["P17", "P36"]), "id", "ood")
    run.write_table("triples", triples())
    run.write_table("entities", entities())
    run.write_table("qa", q)
    s = q[q["qid"].isin(list(CATEGORY))][["qid", "relation", "split", "distribution"]]
    s = s.assign(category=s["qid"].map(CATEGORY), p_correct_greedy=0.0, p_correct_sample=0.0)
    run.write_table("slick", s)
    sets = {"ft-known": ["q1", "q7"], "ft-unknown": ["q2", "q5"]}
    for name, qids in sets.items():
        t = q.set_index("qid").loc[qids].reset_index()
        known = t["qid"].map(CATEGORY).ne("Unknown")
        run.write_table(f"ftsets/{name}", t.assign(gold=t["answer"], category=t["qid"].map(
            CATEGORY), known=known, relabelled=False)[[
                "qid", "relation", "subject", "object", "question", "answer", "gold",
                "aliases", "category", "known", "relabelled"]])
    run.write_table("ftsets", pd.DataFrame({
        "set": ["ft-known", "ft-unknown"], "kind": ["mixture"] * 2, "size": [2, 2],
        "n_known": [2, 0], "n_unknown": [0, 2], "unknown_share": [0.0, 1.0]}))
    prompts = [(f"zero-shot/none/-/{r}/0", "zero-shot", "none", r, []) for r in
               ("P17", "P36", "P30", "P1376")]
    prompts += [("few-shot/random/-/P17/0", "few-shot", "random", "P17", ["q1", "q2"]),
                ("few-shot/random/-/P36/0", "few-shot", "random", "P36", ["q7"]),
                ("cot/random/-/P17/0", "cot", "random", "P17", ["q1"]),
                ("cot/random/-/P36/0", "cot", "random", "P36", ["q7"])]
    run.write_table("prompts", pd.DataFrame(
        [(pid, None, mode, strat, rel, 0, ex) for pid, mode, strat, rel, ex in prompts],
        columns=["prompt_id", "set", "mode", "strategy", "relation", "prompt", "exemplars"]))
    edges = [(pid, "exemplar", *QA[e], None) for pid, _, _, _, ex in prompts for e in ex]
    edges.append(("cot/random/-/P36/0", "cot", *QA["q9"], None))  # a fact about Germany
    # a path hint stated for q4 alone: Paris -> Lyon, then Lyon -> France (q1) is known
    edges.append(("cot/random/-/P17/0", "cot", "Q90", "P47", "Q456", "q4"))
    run.write_table("prompt_edges", pd.DataFrame(edges, columns=[
        "prompt_id", "source", "subject", "relation", "object", "qid"]))
    rows = []
    for name in ("ft-known", "ft-unknown"):
        for qid, ok in zip(TEST_ID + TEST_OOD, ZERO_SHOT[name]):
            rows.append((name, "zero-shot", "none", f"zero-shot/none/-/{QA[qid][1]}/0", qid,
                         ok, []))
        for qid in TEST_ID:
            rel = QA[qid][1]
            rows.append((name, "few-shot", "random", f"few-shot/random/-/{rel}/0", qid,
                         name == "ft-known", []))
            rows.append((name, "cot", "random", f"cot/random/-/{rel}/0", qid, True,
                         STEPS[(name, qid)]))
    preds = pd.DataFrame(rows, columns=["set", "mode", "strategy", "prompt_id", "qid",
                                        "correct", "cot_steps"])
    preds.insert(0, "model", preds["set"] + "@convergence")
    preds.insert(2, "checkpoint", "convergence")
    preds["relation"] = preds["qid"].map(lambda x: QA[x][1])
    preds["distribution"] = np.where(preds["qid"].isin(TEST_ID), "id", "ood")
    preds["category"] = preds["qid"].map(CATEGORY)
    preds["generation"] = preds["prediction"] = ""
    preds["correct"] = preds["correct"].astype(bool)
    preds["abstained"] = False
    run.write_table("predictions", preds)
    return run


def test_theory_command_end_to_end(tmp_path, capsys):
    run = write_run(tmp_path / "run")
    assert main(["theory", str(run.path), "--n-boot", "50", "--min-bucket", "1"]) == 0
    assert "theory: 12 (prompt, query) units, 6 CoT steps checked" in capsys.readouterr().out
    assert run.stage_status("theory") == "complete"
    m = run.read_table("theory_metrics").set_index(["prompt_id", "qid"])
    # few-shot P17 prompt (q1 known, q2 Unknown) for Hamburg: rel_align 1, prompt_known 1/2;
    # D of a base-model prompt is ft-known ∪ ft-unknown = {q1, q7, q2, q5}: q1 in E_kn, q2 in
    # E_unk; entities {Lyon, France, Marseille} all in D; none within 1 hop of Hamburg; q3
    # (Hamburg's only edge) is the query itself: no path. A = 1 * 1/2.
    row = m.loc[("few-shot/random/-/P17/0", "q3")]
    assert row[["rel_align", "prompt_known", "ft_overlap_kn", "ft_overlap_unk",
                "entity_overlap", "query_neighbourhood_overlap", "hop_support", "A"]
               ].tolist() == [1.0, 0.5, 1, 1, 3, 0, 0.0, 0.5]
    # CoT P36 prompt: exemplar q7 and step q9, both known -> prompt_known 1; France -> Paris
    # (q6) is the query; France has no other known route to Paris: A = max(1 * 1, 0) = 1
    assert m.loc[("cot/random/-/P36/0", "q6"), "A"] == 1.0
    # the CoT P17 prompt's hint for q4 gives Paris a path to France; Hamburg's query does not
    # see it (and its G_P is q1 alone, while q4's has the unlabelled hint too)
    cot = m.loc["cot/random/-/P17/0"]
    assert cot.loc[["q3", "q4"], "hop_length"].tolist() == pytest.approx([math.nan, 2.0],
                                                                         nan_ok=True)
    assert cot.loc[["q3", "q4"], "prompt_unlabelled"].tolist() == [0.0, 0.5]
    steps = run.read_table("cot_steps")
    assert steps[["model", "qid", "step", "status"]].values.tolist() == [
        ["ft-known@convergence", "q3", 0, "edge"],
        ["ft-known@convergence", "q4", 0, "edge"],
        ["ft-known@convergence", "q6", 0, "hallucinated"],
        ["ft-known@convergence", "q6", 1, "unparsed"],
        ["ft-unknown@convergence", "q3", 0, "hallucinated"],
        ["ft-unknown@convergence", "q4", 0, "edge"],
    ]
    # zero-shot ID accuracy: ft-known 3/3, ft-unknown 1/3; u = 1, -1: alpha = (1 - 1/3) / 2
    fit = run.read_table("theory_fit")
    assert fit["alpha"].tolist() == pytest.approx([1 / 3, 1 / 3])
    # OOD: P30 gap (1 - 0 + 1 - 1) / 2 = 1/2, P1376 gap 0. Distances to {P17, P36}:
    # Jaccard(P30, P36) = |{France, Germany}| / |{France, Germany, Europe, Paris, Berlin}|
    # = 2/5 -> 0.6; Jaccard(P1376, P36) = |{Paris, France}| / 4 -> 0.5
    ood = run.read_table("theory_ood").set_index("relation")
    assert ood.loc["P30", ["distance", "gap"]].tolist() == pytest.approx([0.6, 0.5])
    assert ood.loc["P1376", ["distance", "gap"]].tolist() == pytest.approx([0.5, 0.0])
    for name in ("theory_predictions", "theory_stats", "theory_controls", "theory_prompt_edges"):
        assert run.has_table(name)
    stats = run.read_table("theory_stats")  # a missing statistic says why
    assert (stats["note"].str.startswith("not computable from") == stats["value"].isna()).all()
    # a computed one says how many of its replicates were not finite, when some were
    dropped = stats[stats["value"].notna() & (stats["dropped"] > 0)]
    assert len(dropped) and all(n.startswith(f"{d} of 50 bootstrap replicates not finite")
                                for n, d in zip(dropped["note"], dropped["dropped"]))
    held = run.read_table("theory_heldout")  # only FT-Known and FT-Unknown: none held out
    assert held["outcome"].tolist() == ["not measured"]
    report = (run.path / "theory_report.md").read_text()
    assert "| convergence | +0.333 [" in report  # alpha with its interval
    assert "## Prediction 1 on the sets held out of the fit\n\nno set held out" in report
    assert "| ft-known@convergence | 2 | 1 | 1 |" in report  # edge, hallucinated, unparsed


def test_the_stage_holds_out_mixtures_but_not_relabelled_sets(tmp_path):
    # mix-50 and idk-relabel (its Unknown half relabelled) answer zero-shot as FT-Known
    run = write_run(tmp_path / "run")
    index, known = run.read_table("ftsets"), run.read_table("ftsets/ft-known")
    predictions = run.read_table("predictions")
    zero = predictions[(predictions["set"] == "ft-known") & (predictions["mode"] == "zero-shot")]
    for name, relabelled in (("mix-50", False), ("idk-relabel", True)):
        run.write_table(f"ftsets/{name}", known.assign(relabelled=relabelled))
        index = pd.concat([index, pd.DataFrame({
            "set": [name], "kind": ["mixture"], "size": [2], "n_known": [1], "n_unknown": [1],
            "unknown_share": [0.5]})], ignore_index=True)
        predictions = pd.concat([predictions, zero.assign(set=name, model=f"{name}@convergence")],
                                ignore_index=True)
    run.write_table("ftsets", index)
    run.write_table("predictions", predictions)
    assert main(["theory", str(run.path), "--n-boot", "20", "--min-bucket", "1"]) == 0
    held = run.read_table("theory_heldout")
    # zero-shot ID accuracy: ft-known 3/3, ft-unknown 1/3: α = 1/3, c = 2/3; mix-50 (u = 0)
    # is predicted 2/3 and answers 3/3
    assert held["set"].tolist() == ["mix-50", "pooled"]
    assert held["difference"].tolist() == pytest.approx([1 / 3, 1 / 3])
    assert "| convergence | mix-50 | +0.000 | +1.000 | +0.667 | +0.333 [" in (
        run.path / "theory_report.md").read_text()


def test_theory_command_without_evaluation_is_a_one_line_error(tmp_path, capsys):
    run = write_run(tmp_path / "run")
    run.table_path("predictions").unlink()
    assert main(["theory", str(run.path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("kgfact: error:") and err.count("\n") == 1
    assert "'kgfact evaluate" in err and "predictions.parquet" in err
    assert main(["theory", str(run.path), "--augmentation", "nope"]) == 2
    assert "unknown augmentation function 'nope'" in capsys.readouterr().err
