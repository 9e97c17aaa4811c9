"""Wikidata's vocabulary: IRIs, id validation and safe SPARQL literals.

Everything that puts a value into RDF or into a SPARQL query goes through here, so an entity id
or label from the outside world can never change the shape of a query.
"""

from __future__ import annotations

import re
from urllib.parse import quote, unquote

from kgfact.errors import KgfactError

WD = "http://www.wikidata.org/entity/"
WDT = "http://www.wikidata.org/prop/direct/"
RDFS_LABEL = "http://www.w3.org/2000/01/rdf-schema#label"
SKOS_ALT_LABEL = "http://www.w3.org/2004/02/skos/core#altLabel"
WIKIBASE_SITELINKS = "http://wikiba.se/ontology#sitelinks"
# Ids that are not Wikidata items (e.g. EntityQuestions answers known only by label) live here.
LOCAL = "urn:kgfact:entity:"

PREFIXES = {
    "wd": WD,
    "wdt": WDT,
    "rdfs": "http://www.w3.org/2000/01/rdf-schema#",
    "skos": "http://www.w3.org/2004/02/skos/core#",
    "wikibase": "http://wikiba.se/ontology#",
    "xsd": "http://www.w3.org/2001/XMLSchema#",
}

QID_RE = re.compile(r"Q[1-9][0-9]*")  # use with fullmatch: "$" admits a final newline
PID_RE = re.compile(r"P[1-9][0-9]*")
POPULATION = "P1082"
GEONAMES_ID = "P1566"
INSTANCE_OF = "P31"


def check_qid(qid: str) -> str:
    """Return ``qid`` if it is a Wikidata item id (``Q`` and digits), else raise."""
    if not isinstance(qid, str) or not QID_RE.fullmatch(qid):
        raise KgfactError(f"{qid!r} is not a Wikidata item id (expected Q followed by digits)")
    return qid


def entity_iri(entity_id: str) -> str:
    """IRI of an entity id: ``wd:Q…`` for Wikidata items, a ``urn:kgfact:entity:`` IRI otherwise."""
    if QID_RE.fullmatch(entity_id):
        return WD + entity_id
    return LOCAL + quote(entity_id, safe="")


def entity_id(iri: str) -> str:
    """Inverse of :func:`entity_iri`."""
    if iri.startswith(WD):
        return iri[len(WD):]
    if iri.startswith(LOCAL):
        return unquote(iri[len(LOCAL):])
    raise KgfactError(f"{iri!r} is neither a Wikidata entity IRI nor a kgfact entity IRI")


def property_iri(pid: str) -> str:
    """``wdt:`` IRI of a property id."""
    if not PID_RE.fullmatch(pid):
        raise KgfactError(f"{pid!r} is not a Wikidata property id (expected P followed by digits)")
    return WDT + pid


def property_id(iri: str) -> str | None:
    """Property id of a ``wdt:`` IRI, or ``None`` for any other predicate."""
    if iri.startswith(WDT):
        pid = iri[len(WDT):]
        return pid if PID_RE.fullmatch(pid) else None
    return None


_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b", "\f": "\\f"}


def sparql_string(text: str, lang: str | None = "en") -> str:
    """A SPARQL string literal for ``text`` that cannot break out of its quotes.

    >>> sparql_string('"} DROP ALL #')
    '"\\\\"} DROP ALL #"@en'
    """
    if not isinstance(text, str):
        raise KgfactError(f"expected a string label, got {type(text).__name__}")
    body = "".join(_ESCAPES.get(ch, ch) for ch in text)
    if lang is not None and not re.fullmatch(r"[a-zA-Z]+(-[a-zA-Z0-9]+)*", lang):
        raise KgfactError(f"{lang!r} is not a language tag")
    return f'"{body}"' + (f"@{lang}" if lang else "")
