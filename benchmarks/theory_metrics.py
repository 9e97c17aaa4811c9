"""Theory metrics throughput: every (prompt, query) unit at once versus one query at a time.

Builds a synthetic GeoNames-shaped world (cities in states in countries; countries with capital,
continent, currency and borders), SliCK-like knowledge (a seeded share of the edges known), a
fine-tuning set, and per relation 10 prompts (5 few-shot, 5 CoT with two steps per exemplar).
Every test query gets the 10 prompts of its relation, so 100,000 queries make 1,000,000 units.
Then, in one run:

1. the vectorised engine (:class:`kgfact.theory.MetricEngine`, prompt table build included) on
   every unit;
2. the naive way (:func:`kgfact.theory.reference.reference_metrics`: per query a networkx
   prompt subgraph, ``K_kn ∪ G_P`` composed into a fresh graph, networkx neighbourhood and
   shortest paths) on a seeded sample of units, whose rate is extrapolated;

and checks that both give identical values on the sample. Target: 100k queries x 10 prompts in
under a minute. Run from the repository root::

    bash .ci/with-venv python benchmarks/theory_metrics.py                 # 100k queries
    bash .ci/with-venv python benchmarks/theory_metrics.py --queries 10000 --naive-units 20
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import pandas as pd

from kgfact.graph import KnowledgeGraph
from kgfact.theory import (FineTuningSet, MetricConfig, MetricEngine, ModelKnowledge,
                           PromptSubgraph, PromptTable, flag_edges)
from kgfact.theory.reference import known_graph, reference_metrics

TARGET_SECONDS = 60.0


def world(n_queries: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(triples, test queries) of a synthetic world with ``n_queries`` test cities."""
    rng = np.random.default_rng(seed)
    n_countries, n_states, n_cities = 250, 3000, n_queries + 20_000
    country = [f"Q1{i:06d}" for i in range(n_countries)]
    state = [f"Q2{i:06d}" for i in range(n_states)]
    city = [f"Q3{i:07d}" for i in range(n_cities)]
    continent = [f"Q4{i:06d}" for i in range(7)]
    currency = [f"Q5{i:06d}" for i in range(160)]
    state_country = rng.integers(0, n_countries, n_states)
    city_state = rng.integers(0, n_states, n_cities)
    has_state = rng.random(n_cities) < 0.3
    rows = [(city[i], "P17", country[state_country[city_state[i]]]) for i in range(n_cities)]
    rows += [(city[i], "P131", state[city_state[i]]) for i in np.flatnonzero(has_state)]
    rows += [(state[i], "P17", country[state_country[i]]) for i in range(n_states)]
    for c in range(n_countries):
        capital = city[int(rng.integers(0, n_cities))]
        rows += [(country[c], "P36", capital), (capital, "P1376", country[c]),
                 (country[c], "P30", continent[c % 7]),
                 (country[c], "P38", currency[int(rng.integers(0, 160))])]
        rows += [(country[c], "P47", country[int(b)]) for b in rng.integers(0, n_countries, 3)
                 if b != c]
    triples = pd.DataFrame(rows, columns=["subject", "relation", "object"]).drop_duplicates()
    qa = triples.reset_index(drop=True).rename_axis("n").reset_index()
    qa["qid"] = "q" + qa["n"].astype(str)
    tests = qa[qa["relation"].isin(["P17", "P131"]) & qa["subject"].str.startswith("Q3")]
    tests = tests.sample(n=n_queries, random_state=seed)
    return triples, qa.drop(columns="n"), tests


def setup(n_queries: int, seed: int):
    rng = np.random.default_rng(seed + 1)
    triples, qa, tests = world(n_queries, seed)
    slick = qa[["qid"]].assign(category=np.where(rng.random(len(qa)) < 0.6, "HighlyKnown",
                                                 "Unknown"))
    train = qa[~qa["qid"].isin(tests["qid"])]
    ft = train[train["relation"].isin(["P17", "P131"])].sample(n=2000, random_state=seed)
    out_of = train.set_index("subject")
    prompts, edges = [], []
    for rel in ("P17", "P131"):
        pool = train[train["relation"] == rel]
        for p in range(10):
            mode = "few-shot" if p < 5 else "cot"
            pid = f"{mode}/{rel}/{p}"
            prompts.append((pid, mode))
            for s, r, o in pool.sample(n=4, random_state=seed + p)[
                    ["subject", "relation", "object"]].itertuples(index=False):
                edges.append((pid, "exemplar", s, r, o))
                if mode == "cot":  # two supporting facts: the object's own out-edges
                    more = out_of.loc[[o]] if o in out_of.index else out_of.iloc[:0]
                    edges += [(pid, "cot", o, r2, o2) for r2, o2 in
                              more[["relation", "object"]].head(2).itertuples(index=False)]
    prompts = pd.DataFrame(prompts, columns=["prompt_id", "mode"])
    edges = pd.DataFrame(edges, columns=["prompt_id", "source", "subject", "relation", "object"])
    units = tests.merge(prompts.assign(relation=prompts["prompt_id"].str.split("/").str[1]),
                        on="relation")[["prompt_id", "qid", "subject", "relation", "object"]]
    return triples, qa, slick, ft, prompts, edges, units


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--queries", type=int, default=100_000)
    ap.add_argument("--naive-units", type=int, default=40,
                    help="units timed the naive way (its rate is extrapolated)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    t0 = time.perf_counter()
    triples, qa, slick, ft, prompts, edges, units = setup(args.queries, args.seed)
    print(f"world: {len(triples):,} edges, {args.queries:,} queries x 10 prompts = "
          f"{len(units):,} units (built in {time.perf_counter() - t0:.1f} s)")
    config = MetricConfig()

    t0 = time.perf_counter()
    knowledge = ModelKnowledge.from_tables(triples, qa, slick, extra=[edges])
    ftset = FineTuningSet.from_table("ft", ft, knowledge)
    flagged = flag_edges(edges, knowledge, ftset)
    table = PromptTable.build(prompts, flagged, knowledge)
    t_setup = time.perf_counter() - t0
    t0 = time.perf_counter()
    fast = MetricEngine(knowledge, table, config).compute(units).drop(columns="mode")
    t_fast = time.perf_counter() - t0
    total = t_setup + t_fast
    print(f"vectorised: {total:.1f} s ({t_setup:.1f} s graphs and prompt table, {t_fast:.1f} s "
          f"metrics), {len(units) / total:,.0f} units/s")

    kg = KnowledgeGraph.from_tables(triples)
    recorded = qa.merge(slick, on="qid")
    known = known_graph(list(recorded.query("category != 'Unknown'")[
        ["subject", "relation", "object"]].itertuples(index=False, name=None)))
    recorded = set(recorded[["subject", "relation", "object"]].itertuples(index=False,
                                                                          name=None))
    decode = knowledge.codec
    s, r, o = decode.decode(ftset.known.codes)
    e_kn = set(zip(decode.entities[s], decode.relations[r], decode.entities[o]))
    s, r, o = decode.decode(ftset.unknown.codes)
    e_unk = set(zip(decode.entities[s], decode.relations[r], decode.entities[o]))
    d_entities = set(decode.entities[ftset.entities])
    subgraphs = {pid: PromptSubgraph(pid, g) for pid, g in flagged.groupby("prompt_id")}
    sample = units.sample(n=args.naive_units, random_state=args.seed)
    t0 = time.perf_counter()
    slow = pd.DataFrame([reference_metrics(kg, known, recorded, subgraphs[p], (s_, r_, o_),
                                           e_kn, e_unk, d_entities, config)
                         for p, _, s_, r_, o_ in sample.itertuples(index=False)],
                        index=sample.index)
    t_slow = time.perf_counter() - t0
    rate_slow = len(sample) / t_slow
    print(f"naive networkx, per query: {rate_slow:,.1f} units/s on {len(sample)} units "
          f"(all {len(units):,} would take {len(units) / rate_slow / 3600:,.1f} h)")
    same = fast.loc[sample.index].equals(slow[fast.columns].astype(fast.dtypes.to_dict()))
    print(f"speed-up: {len(units) / total / rate_slow:,.0f}x; identical values on the sample: "
          f"{same}")
    ok = same and total < TARGET_SECONDS
    print(f"target ({len(units):,} units under {TARGET_SECONDS:.0f} s): "
          f"{'met' if total < TARGET_SECONDS else 'missed'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
