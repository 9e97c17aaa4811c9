"""A small run directory for fine-tuning and evaluation tests: 60 towns in 6 regions of 3
countries, asked about with two relations (P17 country, P131 region), and a SliCK table whose
categories are assigned by rule (town ``i`` is Unknown when ``i % 3 == 0``), so every set's
composition is known exactly."""

from __future__ import annotations

import pandas as pd

from kgfact.contract import CATEGORIES
from kgfact.qa import QAConfig, build_qa
from kgfact.rundir import RunDir

COUNTRIES = {"Q100": "Atlantis", "Q200": "Lemuria", "Q300": "Hyperborea"}
REGIONS = {f"Q{500 + k}": f"Region {k}" for k in range(6)}  # region k lies in country k % 3
N_TOWNS = 60


def town_category(i: int) -> str:
    """Town ``i``'s SliCK category: Unknown for i % 3 == 0, else cycling through the others."""
    return "Unknown" if i % 3 == 0 else CATEGORIES[i % 4 % 3]


def tables() -> tuple[pd.DataFrame, pd.DataFrame]:
    triples, entities = [], []
    for k, region in enumerate(REGIONS):
        triples.append((region, "P17", list(COUNTRIES)[k % 3]))
    for i in range(N_TOWNS):
        region = list(REGIONS)[i % 6]
        triples += [(f"Q{1000 + i}", "P131", region),
                    (f"Q{1000 + i}", "P17", list(COUNTRIES)[i % 6 % 3])]
        entities.append((f"Q{1000 + i}", f"Town {i}"))
    entities += list(COUNTRIES.items()) + list(REGIONS.items())
    ent = pd.DataFrame(entities, columns=["id", "label"]).assign(
        aliases=[[] for _ in entities], sitelinks=pd.NA, population=pd.NA)
    return (pd.DataFrame(triples, columns=["subject", "relation", "object"]),
            ent.sort_values("id").reset_index(drop=True))


def make_run(path) -> RunDir:
    """A run with build tables and a rule-based ``slick`` table for every question."""
    triples, entities = tables()
    qa, _ = build_qa(triples, entities, QAConfig(in_distribution=("P17", "P131")))
    run = RunDir(path)
    with run.stage("build", {"source": "ftworld"}):
        run.write_table("triples", triples)
        run.write_table("entities", entities)
        run.write_table("qa", qa)
    towns = qa["subject"].str[1:].astype(int) - 1000
    slick = qa[["qid", "relation", "split", "distribution"]].assign(
        category=[town_category(i) for i in towns])
    with run.stage("slick", {"rule": "town_category"}):
        run.write_table("slick", slick)
    return run


def make_ft_run(path) -> RunDir:
    """:func:`make_run` plus FT-Known and FT-Unknown sets of 6 examples (3 per relation)."""
    from kgfact.ftsets import FtSetsConfig, make_ftsets

    run = make_run(path)
    make_ftsets(run, FtSetsConfig(size=6, unknown_shares=(0.0, 1.0)))
    return run
