"""The designed prompt interventions that need per-query prompts: the ``neighbourhood`` exemplar
strategy and the CoT ``path-hint`` / ``side-steps`` pair, with exact values on a hand-built
world, the theory's metrics computed on the prompts they build, and one evaluation through the
real pipeline on the tiny model.

The world (``T`` towns, ``R`` regions, ``C`` countries; P17 country, P131 region, P47 border)::

    T1 -P17-> C1  -P131-> R1 -P17-> C1 (t0, known)   T1 -P47-> T9, T8, T6   T7 -P47-> T1
    T2 -P17-> C1  -P131-> R2 -P17-> C1 (t6, Unknown)  T2 -P47-> T9
    T3 -P17-> C1  -P47-> T9 (no path to C1)
    T4 -P17-> C1  -P131-> R1 (a path, but every other fact of T4 is next to C1)
    T30 -P131-> R3 (a P131 query: no path, no side step)

Test queries q1-q4 ask T1-T4's country, q5 T30's region. Only q1 has a path hint (T1 -> R1,
whose R1 -> C1 the model knows) and a side step (T1 -> T9, T8 or T6, none adjacent to C1); q4
has a path hint but no side step. P17 questions near T1 (N_1(T1) = T1, C1, R1, T9, T8, T6,
T7): d3 (T8, dev) and t1 (T9, train) are the neighbourhood candidates; t2 (T7) is in FT-Known,
d6 (T6) has no SliCK record, t0 (R1) names the answer C1.
"""

from __future__ import annotations

import pandas as pd
import pytest

from kgfact.evaluate import EvalConfig, EvalModel, PromptBuilder, evaluate, model_requests
from kgfact.models import ModelConfig
from kgfact.prompts import STRATEGIES
from kgfact.rundir import RunDir
from kgfact.theory import CONTROLS, MetricEngine, ModelKnowledge, PromptTable, flag_edges

LABELS = {**{f"T{i}": f"Town {i}" for i in (1, 2, 3, 4, 6, 7, 8, 9, 20, 21, 22, 23, 30)},
          **{f"R{i}": f"Region {i}" for i in (1, 2, 3)},
          **{f"C{i}": f"Country {i}" for i in (1, 2, 3)}}
GRAPH = [("T1", "P17", "C1"), ("T2", "P17", "C1"), ("T3", "P17", "C1"), ("T4", "P17", "C1"),
         ("R1", "P17", "C1"), ("R2", "P17", "C1"), ("T6", "P17", "C3"), ("T7", "P17", "C2"),
         ("T8", "P17", "C3"), ("T9", "P17", "C2"), ("T20", "P17", "C2"), ("T21", "P17", "C3"),
         ("T22", "P17", "C2"), ("T23", "P17", "C3"), ("R3", "P17", "C2"), ("T30", "P17", "C2"),
         ("T1", "P131", "R1"), ("T2", "P131", "R2"), ("T4", "P131", "R1"),
         ("T20", "P131", "R3"), ("T21", "P131", "R3"), ("T22", "P131", "R3"),
         ("T30", "P131", "R3"), ("T1", "P47", "T9"), ("T1", "P47", "T8"), ("T1", "P47", "T6"),
         ("T7", "P47", "T1"), ("T2", "P47", "T9"), ("T3", "P47", "T9")]
# qid: (edge, split, SliCK category or None for no record)
QUESTIONS = {
    "q1": (("T1", "P17", "C1"), "test", "Unknown"), "q2": (("T2", "P17", "C1"), "test", "Unknown"),
    "q3": (("T3", "P17", "C1"), "test", "Unknown"), "q4": (("T4", "P17", "C1"), "test", "Unknown"),
    "q5": (("T30", "P131", "R3"), "test", "Unknown"),
    "t0": (("R1", "P17", "C1"), "train", "HighlyKnown"),
    "t6": (("R2", "P17", "C1"), "train", "Unknown"),
    "t1": (("T9", "P17", "C2"), "train", "HighlyKnown"),
    "t2": (("T7", "P17", "C2"), "train", "HighlyKnown"),
    "t3": (("T22", "P17", "C2"), "train", "Unknown"),
    "t4": (("T23", "P17", "C3"), "train", "Unknown"),
    "t5": (("T1", "P131", "R1"), "train", "Unknown"),
    "d3": (("T8", "P17", "C3"), "dev", "MaybeKnown"),
    "d4": (("T20", "P17", "C2"), "dev", "HighlyKnown"),
    "d5": (("T21", "P17", "C3"), "dev", "HighlyKnown"),
    "d6": (("T6", "P17", "C3"), "dev", None),
    "d7": (("T20", "P131", "R3"), "dev", "HighlyKnown"),
    "d8": (("T21", "P131", "R3"), "dev", "HighlyKnown"),
    "d9": (("T22", "P131", "R3"), "dev", "MaybeKnown"),
}
FT_SETS = {"ft-known": ["t2"], "ft-unknown": ["t4"]}
ASK = {"P17": "Which country is {} in?", "P131": "Which region is {} in?"}
NEAR_T1 = {"T1", "C1", "R1", "T9", "T8", "T6", "T7"}


def make_world(path) -> RunDir:
    """The world above as a run directory: build, SliCK and fine-tuning set tables."""
    triples = pd.DataFrame(GRAPH, columns=["subject", "relation", "object"])
    entities = pd.DataFrame({"id": list(LABELS), "label": list(LABELS.values())}).assign(
        aliases=[[] for _ in LABELS], sitelinks=pd.NA, population=pd.NA)
    qa = pd.DataFrame([
        {"qid": qid, "relation": r, "subject": s, "subject_label": LABELS[s], "object": o,
         "answer": LABELS[o], "aliases": [], "question": ASK[r].format(LABELS[s]),
         "popularity": 1, "split": split, "distribution": "id"}
        for qid, ((s, r, o), split, _) in QUESTIONS.items()])
    slick = pd.DataFrame([(qid, c) for qid, (_, _, c) in QUESTIONS.items() if c],
                         columns=["qid", "category"])
    run = RunDir(path)
    with run.stage("build", {"source": "hand-built"}):
        run.write_table("triples", triples)
        run.write_table("entities", entities)
        run.write_table("qa", qa)
    with run.stage("slick", {"rule": "hand-built"}):
        run.write_table("slick", slick)
    with run.stage("ftsets", {"rule": "hand-built"}):
        run.write_table("ftsets", pd.DataFrame({"set": list(FT_SETS),
                                                "unknown_share": [0.0, 1.0]}))
        for name, qids in FT_SETS.items():
            run.write_table(f"ftsets/{name}", qa[qa["qid"].isin(qids)].assign(
                known=name == "ft-known"))
    return run


BASE = EvalModel("base", None, "base", None)


@pytest.fixture
def world(tmp_path):
    """The world's run, a builder of every mode and strategy the tests look at, and the
    requests of the base model (what each asks, and its ``suffix``)."""
    config = EvalConfig(modes=("few-shot", "cot"), shots=2, n_prompts=2,
                        strategies=("random", "neighbourhood", "other-relation", "path-hint",
                                    "side-steps"))
    run = make_world(tmp_path / "run")
    builder = PromptBuilder(run, config)
    queries = run.read_table("qa").query("split == 'test'").assign(category="Unknown")
    jobs = [(m, s) for m in config.modes for s in config.strategies]
    requests, frame = model_requests(BASE, jobs, queries, builder)
    return run, builder, frame.assign(suffix=[r.suffix for r in requests])


def metrics_of(run: RunDir, builder: PromptBuilder, frame: pd.DataFrame) -> pd.DataFrame:
    """The theory's metrics of every (prompt, query) unit of ``frame``, computed on the
    builder's own ``prompts`` and ``prompt_edges``."""
    prompts, edges = builder.tables()
    qa = run.read_table("qa")
    knowledge = ModelKnowledge.from_tables(run.read_table("triples"), qa,
                                           run.read_table("slick"), extra=[edges])
    table = PromptTable.build(prompts[["prompt_id", "mode"]], flag_edges(edges, knowledge, None),
                              knowledge)
    units = frame[["prompt_id", "qid", "strategy"]].merge(
        qa[["qid", "subject", "relation", "object"]], on="qid")
    return pd.concat([units, MetricEngine(knowledge, table).compute(units)], axis=1)


def test_the_path_hint_states_the_first_hop_to_a_known_last_hop_and_side_steps_lead_nowhere(
        world):
    run, builder, frame = world
    cot = frame[frame["mode"] == "cot"]
    hinted = cot[cot["strategy"].isin(["path-hint", "side-steps"])]
    # q1 alone has both kinds; q2's last hop is Unknown, q3 has no path, q4 no side step,
    # q5 neither: no hint prompt for them
    assert sorted(set(hinted["qid"])) == ["q1"]
    assert len(hinted) == 2 * 2  # two strategies x two exemplar sets
    path = hinted[hinted["strategy"] == "path-hint"]
    assert set(path["suffix"]) == {"Q: Which country is Town 1 in?\nA: Town 1 lies in the "
                                   "administrative region Region 1."}
    stated = {(pid, qid): e for (pid, qid), e in builder.query_edges.items()}
    assert {stated[(pid, "q1")] for pid in path["prompt_id"]} == {("T1", "P131", "R1")}
    side = {stated[(pid, "q1")] for pid in hinted.loc[hinted["strategy"] == "side-steps",
                                                         "prompt_id"]}
    assert len(side) == 1 and side <= {("T1", "P47", "T9"), ("T1", "P47", "T8"),
                                       ("T1", "P47", "T6")}
    assert all("Country 1" not in s.split("\nA:")[1] for s in hinted["suffix"])
    # the hints reach the theory as edges of q1 alone
    _, edges = builder.tables()
    own = edges[edges["qid"].notna()]
    assert own[["source", "qid"]].drop_duplicates().values.tolist() == [["cot", "q1"]]
    assert len(own) == 4
    m = metrics_of(run, builder, hinted)
    by = m.groupby("strategy")
    assert by["hop_support"].agg(list).to_dict() == {"path-hint": [1.0, 1.0],
                                                      "side-steps": [0.0, 0.0]}
    assert by["hop_length"].first()["path-hint"] == 2
    # other-relation exemplars: A = hop_support under CoT's default A(P)
    assert (m["rel_align"] == 0).all()
    # outside CoT the hint strategies give no prompt, recorded like too few exemplars
    assert not len(frame[(frame["mode"] == "few-shot")
                         & frame["strategy"].isin(["path-hint", "side-steps"])])
    assert builder.skipped["few-shot/path-hint"] == ["P131", "P17"]
    assert builder.skipped["cot/path-hint"] == ["P131"]


def test_the_two_hint_strategies_share_the_other_relation_prefix(world):
    _, builder, frame = world
    prompts = builder.tables()[0].set_index("prompt_id")
    for p in (0, 1):
        ids = [f"cot/{s}/-/P17/{p}" for s in ("other-relation", "path-hint", "side-steps")]
        assert prompts.loc[ids, "prefix"].nunique() == 1
        assert len({tuple(e) for e in prompts.loc[ids, "exemplars"]}) == 1
        assert set(prompts.loc[ids[0], "exemplars"]) <= {"d7", "d8", "d9"}
    # q1's requests under prompt 0 differ only by what follows "A:"
    q1 = frame[(frame["qid"] == "q1") & frame["prompt_id"].str.endswith("/P17/0")
               & (frame["mode"] == "cot")].set_index("strategy")["suffix"]
    assert q1["other-relation"] == "Q: Which country is Town 1 in?\nA:"
    assert q1["path-hint"] == q1["other-relation"] + " Town 1 lies in the administrative region " \
                              "Region 1."
    assert q1["side-steps"].startswith(q1["other-relation"] + " Town 1 shares a border with Town ")


def test_neighbourhood_exemplars_are_near_the_subject_never_the_answer_never_fine_tuned(world):
    run, builder, frame = world
    prompts = builder.tables()[0]
    near = prompts[prompts["strategy"] == "neighbourhood"]
    # per query: q1 alone has two candidates (d3 near T8, t1 near T9); q2-q5 have fewer
    assert sorted(near["prompt_id"]) == [f"{m}/neighbourhood/-/P17/q1/{p}"
                                         for m in ("cot", "few-shot") for p in (0, 1)]
    assert set(near["qid"]) == {"q1"} and sorted(near["prompt"]) == [0, 0, 1, 1]
    assert all(sorted(e) == ["d3", "t1"] for e in near["exemplars"])
    qa = run.read_table("qa").set_index("qid")
    for e in near["exemplars"]:
        rows = qa.loc[list(e)]
        assert (rows["subject"].isin(NEAR_T1) | rows["object"].isin(NEAR_T1)).all()
        assert not ({"C1"} & set(rows["subject"]) | {"C1"} & set(rows["object"]))
        assert not set(e) & {"t2", "t4"}  # the fine-tuning sets' questions
    shared = prompts[prompts["strategy"] != "neighbourhood"]
    assert shared["qid"].isna().all()
    asked = frame[frame["strategy"] == "neighbourhood"]
    assert sorted(asked["prompt_id"]) == sorted(near["prompt_id"])
    assert set(asked["qid"]) == {"q1"}
    assert builder.skipped["few-shot/neighbourhood"] == ["P131"]
    # the theory's neighbourhood overlap: T8 and T9 against at most T8 for random exemplars
    m = metrics_of(run, builder, frame[frame["qid"] == "q1"])
    overlap = m.groupby(["mode", "strategy"])["query_neighbourhood_overlap"]
    for mode in ("few-shot", "cot"):
        assert overlap.min()[(mode, "neighbourhood")] == 2
        assert overlap.min()[(mode, "neighbourhood")] > overlap.max()[(mode, "random")]
    assert (m.loc[m["strategy"] == "neighbourhood", "rel_align"] == 1).all()
    assert (m.loc[m["strategy"] == "neighbourhood", "ft_overlap_kn"] == 0).all()


def test_the_controls_of_the_interventions_are_registered():
    near, hint = CONTROLS.get("neighbourhood-vs-random"), CONTROLS.get("path-hint-vs-side-steps")
    assert (near.treatment, near.baseline, near.metric, near.expected) == (
        "neighbourhood", "random", "query_neighbourhood_overlap", "=")
    assert (hint.treatment, hint.baseline, hint.metric, hint.expected) == (
        "path-hint", "side-steps", "hop_support", "<")
    assert STRATEGIES.get("neighbourhood").per_query
    assert [STRATEGIES.get(s).hint for s in ("path-hint", "side-steps")] == ["path", "side"]
    assert {STRATEGIES.get(s).draws_as for s in ("path-hint", "side-steps")} == {
        "other-relation"}


def test_an_evaluation_on_the_tiny_model_writes_query_prompts_edges_and_shares(
        tmp_path, tiny_model_dir):
    run = make_world(tmp_path / "run")
    config = EvalConfig(modes=("few-shot", "cot"), shots=2, n_prompts=1, bootstrap=10,
                        strategies=("random", "neighbourhood", "path-hint", "side-steps"))
    evaluate(run, config, ModelConfig(name=str(tiny_model_dir), dtype="float32"),
             progress=False)
    predictions = run.read_table("predictions")
    assert sorted(predictions.loc[predictions["strategy"] == "neighbourhood", "prompt_id"]) == [
        "cot/neighbourhood/-/P17/q1/0", "few-shot/neighbourhood/-/P17/q1/0"]
    hinted = predictions[predictions["strategy"].isin(["path-hint", "side-steps"])]
    assert sorted(hinted["prompt_id"]) == ["cot/path-hint/-/P17/0", "cot/side-steps/-/P17/0"]
    assert set(hinted["qid"]) == {"q1"}
    prompts = run.read_table("prompts").set_index("prompt_id")
    assert prompts.loc["cot/neighbourhood/-/P17/q1/0", "qid"] == "q1"
    assert prompts["qid"].notna().sum() == 2
    edges = run.read_table("prompt_edges")
    own = edges[edges["qid"].notna()]
    assert sorted(own["prompt_id"]) == ["cot/path-hint/-/P17/0", "cot/side-steps/-/P17/0"]
    assert own.loc[own["prompt_id"] == "cot/path-hint/-/P17/0",
                   ["subject", "relation", "object", "qid"]].values.tolist() == [
        ["T1", "P131", "R1", "q1"]]
    report = run.manifest()["stages"]["evaluate"]["report"]
    assert report["path_hint_share"] == {"P131": 0.0, "P17": 0.5}
    assert report["hint_pair_share"] == {"P131": 0.0, "P17": 0.25}
    assert report["neighbourhood_share"] == {"P131": 0.0, "P17": 0.25}
    assert report["skipped_prompts"]["few-shot/side-steps"] == ["P131", "P17"]
