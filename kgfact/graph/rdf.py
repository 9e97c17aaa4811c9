"""RDF in and out of a :class:`~kgfact.graph.model.KnowledgeGraph`: N-Triples and Turtle files,
and :class:`rdflib.Graph` objects.

RDF uses Wikidata's own vocabulary (see :mod:`kgfact.wikidata`), so a file written here can be
loaded into a SPARQL store next to Wikidata data, and Wikidata exports can be read back. Files are
read and written with Oxigraph's Rust parser and serializer (tens of times faster than rdflib on
large dumps); :func:`to_rdflib` and :func:`from_rdflib` are for interoperating with rdflib code.
Both paths go through the same plain-string statements, so they cannot disagree.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Iterable
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import pandas as pd
import pyoxigraph as ox
import rdflib
from rdflib import Literal, URIRef

from kgfact.errors import KgfactError
from kgfact.graph.model import TRIPLE_COLUMNS, KnowledgeGraph, entity_frame
from kgfact.rundir import atomic_write_text
from kgfact.wikidata import (
    LOCAL,
    POPULATION,
    PREFIXES,
    QID_RE,
    RDFS_LABEL,
    SKOS_ALT_LABEL,
    WD,
    WIKIBASE_SITELINKS,
    entity_id,
    entity_iri,
    property_id,
    property_iri,
)

_POPULATION = property_iri(POPULATION)
_DECIMAL = PREFIXES["xsd"] + "decimal"
_INTEGER = PREFIXES["xsd"] + "integer"
_SUFFIX_FORMATS = {".nt": "nt", ".ttl": "turtle"}
_FORMAT_NAMES = {"nt": "nt", "ntriples": "nt", "ttl": "turtle", "turtle": "turtle"}
_FORMAT_TITLES = {"nt": "N-Triples", "turtle": "Turtle"}

# A statement as plain strings: (subject IRI, predicate IRI, object), the object ("iri", value) or
# ("literal", value, language, datatype); a subject or object that is a blank node is None.
Statement = tuple[str | None, str, tuple[str | None, ...] | None]


def write_rdf(kg: KnowledgeGraph, path: str | os.PathLike[str], format: str | None = None
              ) -> Path:
    """Write ``kg`` as N-Triples or Turtle, atomically, and return the path.

    N-Triples lines are sorted, so the same graph always gives the same file. The vocabulary is
    :func:`to_rdflib`'s.

    Parameters
    ----------
    kg : KnowledgeGraph
    path : str or Path
        Destination; its suffix (``.nt`` or ``.ttl``) picks the format unless ``format`` does.
    format : {"nt", "ttl"}, optional
        Overrides the suffix (``"ntriples"`` and ``"turtle"`` are accepted too).
    """
    path = Path(path)
    fmt = _rdf_format(path, format)
    triples = [ox.Triple(ox.NamedNode(s), ox.NamedNode(p),
                         ox.NamedNode(o[1]) if o[0] == "iri" else
                         ox.Literal(o[1], language=o[2]) if o[2] else
                         ox.Literal(o[1], datatype=ox.NamedNode(o[3])))
               for s, p, o in _statements(kg)]
    if fmt == "nt":
        text = ox.serialize(triples, format=ox.RdfFormat.N_TRIPLES).decode("utf-8")
        # One statement per line; split on "\n" only, as N-Triples may hold other breaks raw.
        text = "".join(line + "\n" for line in sorted(text.split("\n")) if line)
    else:
        text = ox.serialize(triples, format=ox.RdfFormat.TURTLE,
                            prefixes=dict(PREFIXES)).decode("utf-8")
    atomic_write_text(path, text)
    return path


def read_rdf(path: str | os.PathLike[str], format: str | None = None) -> KnowledgeGraph:
    """Read a graph from an N-Triples (``.nt``) or Turtle (``.ttl``) file.

    Only ``wdt:`` edges between entity IRIs, English (``@en``) labels and aliases, population
    and sitelinks are read; every other statement is ignored. RDF has no order, so aliases come
    back sorted. Wikidata can state several current populations; the largest is kept.

    Parameters
    ----------
    path : str or Path
        The file; its suffix picks the format unless ``format`` does.
    format : {"nt", "ttl"}, optional
        Overrides the suffix.

    Raises
    ------
    KgfactError
        If the format is unknown, the file is missing or does not parse, an entity has two
        different English labels or sitelinks counts, or a population or sitelinks literal is
        not a whole number.
    """
    path = Path(path)
    fmt = _rdf_format(path, format)
    if not path.is_file():
        raise KgfactError(f"{path} does not exist")
    rdf_format = ox.RdfFormat.N_TRIPLES if fmt == "nt" else ox.RdfFormat.TURTLE

    def statements() -> Iterable[Statement]:
        for t in ox.parse(path=path, format=rdf_format):
            s, o = t.subject, t.object
            yield (s.value if isinstance(s, ox.NamedNode) else None, t.predicate.value,
                   ("iri", o.value) if isinstance(o, ox.NamedNode) else
                   ("literal", o.value, o.language, o.datatype.value)
                   if isinstance(o, ox.Literal) else None)
    try:
        return _from_statements(statements())
    except SyntaxError as exc:
        detail = " ".join(str(exc).split())[:300]
        raise KgfactError(f"{path} is not valid {_FORMAT_TITLES[fmt]}: {detail}") from None


def to_rdflib(kg: KnowledgeGraph) -> rdflib.Graph:
    """``kg`` as an :class:`rdflib.Graph` in Wikidata's vocabulary.

    An edge becomes ``wd:S wdt:P wd:O``; a label ``rdfs:label "…"@en``; each alias
    ``skos:altLabel "…"@en``; population ``wdt:P1082`` as ``xsd:decimal`` (Wikidata's type for
    quantities); sitelinks ``wikibase:sitelinks`` as ``xsd:integer``. Non-Q ids get
    ``urn:kgfact:entity:`` IRIs. An entity with no edge and no attribute has nothing to say in
    RDF and is not written.
    """
    g = rdflib.Graph(bind_namespaces="none")
    for prefix, namespace in PREFIXES.items():
        g.bind(prefix, namespace)
    for s, p, o in _statements(kg):
        obj = (URIRef(o[1]) if o[0] == "iri" else
               Literal(o[1], lang=o[2], datatype=URIRef(o[3]) if o[3] else None))
        g.add((URIRef(s), URIRef(p), obj))
    return g


def from_rdflib(g: rdflib.Graph) -> KnowledgeGraph:
    """Read a graph from an :class:`rdflib.Graph` (the inverse of :func:`to_rdflib`).

    See :func:`read_rdf` for what is read and what is ignored.
    """
    def plain(term: rdflib.term.Node) -> tuple[str | None, ...] | None:
        if isinstance(term, URIRef):
            return ("iri", str(term))
        if isinstance(term, Literal):
            return ("literal", str(term), term.language,
                    str(term.datatype) if term.datatype else None)
        return None  # blank node
    return _from_statements(
        (str(s) if isinstance(s, URIRef) else None, str(p), plain(o)) for s, p, o in g)


def _statements(kg: KnowledgeGraph) -> Iterable[Statement]:
    """``kg`` as statements (:data:`Statement`), none with a blank node."""
    iris = {n: entity_iri(n) for n in kg.graph}
    predicates = {r: property_iri(r) for r in kg.relations()}
    for s, o, r in kg.graph.edges(keys=True):
        yield iris[s], predicates[r], ("iri", iris[o])
    for n, data in kg.graph.nodes(data=True):
        if data["label"] is not None:
            yield iris[n], RDFS_LABEL, ("literal", data["label"], "en", None)
        for alias in data["aliases"]:
            yield iris[n], SKOS_ALT_LABEL, ("literal", alias, "en", None)
        if data["population"] is not None:
            yield iris[n], _POPULATION, ("literal", str(data["population"]), None, _DECIMAL)
        if data["sitelinks"] is not None:
            yield iris[n], WIKIBASE_SITELINKS, ("literal", str(data["sitelinks"]), None,
                                                _INTEGER)


def _from_statements(statements: Iterable[Statement]) -> KnowledgeGraph:
    """The graph the statements describe; what :func:`read_rdf` ignores is skipped."""
    edges: list[tuple[str, str, str]] = []
    labels: dict[str, str] = {}
    aliases: defaultdict[str, set[str]] = defaultdict(set)
    sitelinks: dict[str, int] = {}
    populations: dict[str, int] = {}
    for s, p, o in statements:
        subject = _rdf_entity(s)
        if subject is None or o is None:
            continue
        if o[0] == "literal":
            english = (o[2] or "").lower() == "en"
            if p == RDFS_LABEL and english:
                _set_once(labels, subject, o[1], "English labels")
            elif p == SKOS_ALT_LABEL and english:
                aliases[subject].add(o[1])
            elif p == WIKIBASE_SITELINKS:
                _set_once(sitelinks, subject, _whole_number(o[1], "sitelinks", subject),
                          "sitelinks counts")
            elif p == _POPULATION:
                value = _whole_number(o[1], "population", subject)
                populations[subject] = max(value, populations.get(subject, value))
            continue
        relation = property_id(p)
        obj = _rdf_entity(o[1])
        if relation is not None and obj is not None:
            edges.append((subject, relation, obj))
    ids = sorted(labels.keys() | aliases.keys() | sitelinks.keys() | populations.keys())
    entities = entity_frame(ids, [labels.get(i) for i in ids],
                            [sorted(aliases.get(i, ())) for i in ids],
                            [sitelinks.get(i) for i in ids], [populations.get(i) for i in ids])
    return KnowledgeGraph.from_tables(
        pd.DataFrame(edges, columns=list(TRIPLE_COLUMNS), dtype=str), entities)


# -- helpers -----------------------------------------------------------------------------------
def _rdf_format(path: Path, format: str | None) -> str:
    if format is not None:
        if format.lower() not in _FORMAT_NAMES:
            raise KgfactError(f"unknown RDF format {format!r}; use 'nt' or 'ttl'")
        return _FORMAT_NAMES[format.lower()]
    if path.suffix.lower() not in _SUFFIX_FORMATS:
        raise KgfactError(f"cannot tell the RDF format of {path}: use a .nt (N-Triples) or .ttl "
                          "(Turtle) suffix, or pass format='nt' or 'ttl'")
    return _SUFFIX_FORMATS[path.suffix.lower()]


def _rdf_entity(iri: str | None) -> str | None:
    """Entity id of an item or kgfact IRI; ``None`` for anything else."""
    if iri is None:
        return None
    # wd: also names properties, lexemes and statement nodes, which are not graph entities.
    if iri.startswith(LOCAL) or (iri.startswith(WD) and QID_RE.fullmatch(iri[len(WD):])):
        return entity_id(iri)
    return None


def _whole_number(text: str, what: str, entity: str) -> int:
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise KgfactError(f"{what} of {entity} is not a number: {text!r}") from None
    if not value.is_finite() or value != value.to_integral_value():
        raise KgfactError(f"{what} of {entity} is not a whole number: {text!r}")
    return int(value)


def _set_once(found: dict[str, Any], entity: str, value: Any, what: str) -> None:
    if found.setdefault(entity, value) != value:
        raise KgfactError(f"{entity} has two different {what}: {found[entity]!r} and {value!r}")
