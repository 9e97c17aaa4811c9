"""A small invented world with known facts, for exact-value tests of the data pipeline.

60 towns in 3 countries (town ``Q1000 + i`` lies in country ``[Q100, Q200, Q300][i % 3]``), each
country with a capital town and a continent, plus traps: two towns sharing a label but not a
country (an ambiguous question), a town in two countries (more than one answer), a town with no
label, and a town whose label is shaped like a SPARQL injection.
"""

from __future__ import annotations

import pandas as pd

COUNTRIES = {"Q100": "Atlantis", "Q200": "Lemuria", "Q300": "Hyperborea"}
CAPITALS = {"Q100": "Q1000", "Q200": "Q1001", "Q300": "Q1002"}  # towns 0, 1, 2
CONTINENT = ("Q900", "Mythica")
INJECTION = '"} DROP ALL #'
N_TOWNS = 60


def country_of(town: int) -> str:
    return list(COUNTRIES)[town % 3]


def tables() -> tuple[pd.DataFrame, pd.DataFrame]:
    """(triples, entities) of the mini world."""
    triples = [(f"Q{1000 + i}", "P17", country_of(i)) for i in range(N_TOWNS)]
    triples += [("Q1059", "P17", "Q100")]  # town 59 lies in Lemuria (59 % 3 == 2 -> Q300) too
    triples += [(c, "P36", cap) for c, cap in CAPITALS.items()]
    triples += [(cap, "P1376", c) for c, cap in CAPITALS.items()]
    triples += [(c, "P30", CONTINENT[0]) for c in COUNTRIES]
    entities = [(q, name, [f"Republic of {name}"], 1_000_000 * (k + 1))
                for k, (q, name) in enumerate(COUNTRIES.items())]
    entities.append((CONTINENT[0], CONTINENT[1], [], None))
    for i in range(N_TOWNS):
        label = f"Town {i}"
        if i == 10:
            label = "Twin Town"   # town 10 (Lemuria) and town 12 (Atlantis) share a label
        if i == 12:
            label = "Twin Town"
        if i == 20:
            label = INJECTION
        entities.append((f"Q{1000 + i}", None if i == 30 else label, [], 1000 * (i + 1)))
    ent = pd.DataFrame(entities, columns=["id", "label", "aliases", "population"])
    ent["sitelinks"] = pd.array([None] * len(ent), dtype="Int64")
    ent["population"] = pd.array(ent["population"].tolist(), dtype="Int64")
    trip = pd.DataFrame(triples, columns=["subject", "relation", "object"])
    return (trip.sort_values(["subject", "relation", "object"]).reset_index(drop=True),
            ent[["id", "label", "aliases", "sitelinks", "population"]]
            .sort_values("id").reset_index(drop=True))
