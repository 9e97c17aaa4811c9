"""A polite, fault-tolerant SPARQL client and the query files it runs.

The client is built for Wikidata's query service and works unchanged against the embedded
Oxigraph store: a specific User-Agent (Wikidata's policy), a timeout (60 s by default, the
service's own limit), retries with exponential backoff on transient failures (HTTP 500, 502, 503
and 504, timeouts, dropped connections), honouring ``Retry-After`` on 429/503, one request in
flight, and an on-disk cache of responses so a re-run costs nothing. A permanent failure is a
one-line error at once, with no retry: a URL that is not http(s), any other 4xx or 5xx status
(501 included), or an answer that is not SPARQL JSON results (a web page answering 200).

The cache is keyed by URL, query and the endpoint's data version where it has one: the embedded
store's changes with every load (``kgfact build`` passes it whether it uses the store by default
or names its URL), so a build after ``kgfact store load`` asks again. Any other endpoint's answers
are taken as unchanging: ``kgfact build --no-cache`` asks it afresh.

Queries live as ``.rq`` files in the project's ``queries/`` folder with ``{{name}}`` placeholders.
:func:`render_query` fills them only with validated or escaped values, so an entity id or label
coming from outside cannot change a query's shape.
"""

from __future__ import annotations

import email.utils
import hashlib
import http.client
import json
import re
import socket
import threading
import time
import urllib.error
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from SPARQLWrapper import JSON, POST, SPARQLWrapper
from SPARQLWrapper.SPARQLExceptions import (
    EndPointInternalError,
    EndPointNotFound,
    QueryBadFormed,
    Unauthorized,
    URITooLong,
)

import kgfact
from kgfact.config import check_fields
from kgfact.errors import KgfactError
from kgfact.paths import kgfact_home
from kgfact.rundir import atomic_write_text
from kgfact.wikidata import check_qid, property_iri, sparql_string

USER_AGENT = (f"kgfact/{kgfact.__version__} (research toolkit for knowledge-graph QA; "
              "https://github.com/kgfact/kgfact) SPARQLWrapper")
WIKIDATA_ENDPOINT = "https://query.wikidata.org/sparql"


# -- query files -------------------------------------------------------------------------------

def queries_dir() -> Path:
    """The ``queries/`` folder: packaged inside ``kgfact`` in a wheel, beside it in a checkout."""
    packaged = Path(kgfact.__file__).parent / "queries"
    return packaged if packaged.is_dir() else Path(kgfact.__file__).parent.parent / "queries"


@cache
def load_query(name: str) -> str:
    """The text of ``queries/<name>.rq``."""
    path = queries_dir() / f"{name}.rq"
    if not path.is_file():
        raise KgfactError(f"no query file {path}")
    return path.read_text("utf-8")


def _digits(value: Any) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"[0-9]*", value):
        raise KgfactError(f"partition suffix must be digits, got {value!r}")
    return value


def _limit(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise KgfactError(f"limit must be a positive integer, got {value!r}")
    return str(value)


def _pid(value: Any) -> str:
    property_iri(value)  # validates
    return value


def _entities(values: Iterable[str]) -> str:
    ids = [check_qid(v) for v in values]
    if not ids:
        raise KgfactError("a query needs at least one entity id")
    return " ".join(f"wd:{q}" for q in ids)


def _properties(values: Iterable[str]) -> str:
    iris = [property_iri(v) for v in values]
    if not iris:
        raise KgfactError("a query needs at least one property id")
    return " ".join(f"<{iri}>" for iri in iris)


def _labels(values: Iterable[str]) -> str:
    lits = [sparql_string(v) for v in values]
    if not lits:
        raise KgfactError("a query needs at least one label")
    return " ".join(lits)


# Each placeholder name has exactly one way in: a validator or an escaper.
_PLACEHOLDERS: dict[str, Callable[[Any], str]] = {
    "pid": _pid, "suffix": _digits, "limit": _limit,
    "entities": _entities, "properties": _properties, "labels": _labels,
}
_PLACEHOLDER_RE = re.compile(r"\{\{(\w+)\}\}")


def render_query(name: str, **params: Any) -> str:
    """Fill the placeholders of ``queries/<name>.rq`` with validated values.

    Parameters
    ----------
    name : str
        Query file stem, e.g. ``"triples"``.
    **params
        One value per placeholder: ``pid`` (property id), ``suffix`` (digits), ``limit`` (int),
        ``entities`` (item ids), ``properties`` (property ids), ``labels`` (strings, escaped).

    Examples
    --------
    >>> "wdt:P17" in render_query("triples", pid="P17", suffix="", limit=10)
    True
    """
    text = load_query(name)
    wanted = set(_PLACEHOLDER_RE.findall(text))
    missing, extra = wanted - params.keys(), params.keys() - wanted
    if missing or extra:
        raise KgfactError(f"query {name!r} takes {sorted(wanted)}; missing {sorted(missing)}, "
                          f"unexpected {sorted(extra)}")
    rendered = {key: _PLACEHOLDERS[key](value) for key, value in params.items()}
    return _PLACEHOLDER_RE.sub(lambda m: rendered[m.group(1)], text)


# -- client ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class EndpointConfig:
    """How to reach a SPARQL endpoint and how patiently."""

    url: str = field(metadata={"help": "SPARQL query endpoint URL."})
    user_agent: str = field(default=USER_AGENT,
                            metadata={"help": "User-Agent header (Wikidata requires one)."})
    timeout: float = field(default=60.0, metadata={"above": 0,
        "help": "Seconds before a request times out."})
    max_retries: int = field(default=8, metadata={"min": 0,
        "help": "Retries of one query before giving up."})
    backoff: float = field(default=1.0, metadata={"min": 0,
        "help": "First retry delay in seconds; doubles."})
    max_backoff: float = field(default=60.0, metadata={"min": 0,
        "help": "Cap on one retry delay (seconds)."})
    max_retry_after: float = field(
        default=600.0, metadata={"min": 0,
            "help": "Longest Retry-After honoured before giving up (s)."})
    cache_dir: Path | None = field(
        default_factory=lambda: kgfact_home() / "sparql-cache",
        metadata={"help": "On-disk response cache; None disables it."})
    data_version: str | None = field(default=None, metadata={
        "help": "Version of the endpoint's data, part of the cache key: the embedded store's "
                "changes with every load. None: answers are cached by URL and query only."})

    def __post_init__(self) -> None:
        check_fields(self)
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise KgfactError(f"{self.url!r} is not an http(s) URL of a SPARQL endpoint "
                              "(e.g. https://query.wikidata.org/sparql)")


@dataclass
class ClientStats:
    """What the client did: requests sent, cache hits, retries and why."""

    requests: int = 0
    cache_hits: int = 0
    retries: int = 0
    retry_reasons: dict[str, int] = field(default_factory=dict)


class _Retry(Exception):
    def __init__(self, reason: str, wait: float | None = None) -> None:
        super().__init__(reason)
        self.reason, self.wait = reason, wait


class SparqlClient:
    """Run SELECT queries against one endpoint, one at a time, with retries and a disk cache.

    Parameters
    ----------
    config : EndpointConfig or str
        The endpoint, or just its URL.
    sleep : callable, optional
        Injected for tests of the backoff schedule; defaults to :func:`time.sleep`.
    """

    def __init__(self, config: EndpointConfig | str,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.config = EndpointConfig(config) if isinstance(config, str) else config
        self.stats = ClientStats()
        self._sleep = sleep
        self._lock = threading.Lock()  # Wikidata asks for one request in flight per client
        self._answered = False

    def _cache_path(self, query: str) -> Path | None:
        if self.config.cache_dir is None:
            return None
        key = hashlib.sha256(f"{self.config.url}\n{self.config.data_version or ''}\n{query}"
                             .encode()).hexdigest()
        return Path(self.config.cache_dir) / key[:2] / f"{key}.json"

    def select(self, query: str) -> list[dict[str, str]]:
        """Run a SELECT query; return one dict per solution (variable → lexical value).

        Raises
        ------
        KgfactError
            If the endpoint rejects the query, cannot be reached, or keeps failing after
            ``max_retries`` retries.
        """
        path = self._cache_path(query)
        if path is not None and path.exists():
            try:
                rows = json.loads(path.read_text("utf-8"))
                self.stats.cache_hits += 1
                return rows
            except json.JSONDecodeError:
                path.unlink(missing_ok=True)  # a damaged entry is simply fetched again
        with self._lock:
            rows = self._select_with_retries(query)
        if path is not None:
            atomic_write_text(path, json.dumps(rows))
        return rows

    def _select_with_retries(self, query: str) -> list[dict[str, str]]:
        last = ""
        for attempt in range(self.config.max_retries + 1):
            try:
                return self._request(query)
            except _Retry as retry:
                last = retry.reason
                if attempt == self.config.max_retries:
                    break
                wait = retry.wait
                if wait is None:
                    wait = min(self.config.backoff * 2 ** attempt, self.config.max_backoff)
                elif wait > self.config.max_retry_after:
                    raise KgfactError(
                        f"{self.config.url} asks to wait {wait:.0f} s (Retry-After), longer than "
                        f"the {self.config.max_retry_after:.0f} s allowed; try again later") from None
                self.stats.retries += 1
                kind = last.split(":")[0]
                self.stats.retry_reasons[kind] = self.stats.retry_reasons.get(kind, 0) + 1
                self._sleep(wait)
        raise KgfactError(f"{self.config.url} failed {self.config.max_retries + 1} times; "
                          f"last error: {last}")

    def _request(self, query: str) -> list[dict[str, str]]:
        sw = SPARQLWrapper(self.config.url, agent=self.config.user_agent)
        sw.setQuery(query)
        sw.setMethod(POST)  # long VALUES blocks overflow URLs; Wikidata accepts POST
        sw.setReturnFormat(JSON)
        sw.setTimeout(int(max(1, round(self.config.timeout))))
        self.stats.requests += 1
        result = None
        try:
            result = sw.query()
            with warnings.catch_warnings():  # SPARQLWrapper warns of a non-SPARQL answer;
                warnings.simplefilter("ignore", RuntimeWarning)  # kgfact refuses it below
                data = result.convert()
        except urllib.error.HTTPError as exc:
            if exc.code in (429, 503):
                raise _Retry(f"HTTP {exc.code}", _retry_after(exc.headers.get("Retry-After"))) \
                    from None
            if exc.code in (502, 504):
                raise _Retry(f"HTTP {exc.code}") from None
            raise KgfactError(f"{self.config.url} answered HTTP {exc.code} {exc.reason}") from None
        except EndPointInternalError as exc:
            raise _Retry(f"HTTP 500: {_first_line(exc)}") from None
        except QueryBadFormed as exc:
            raise KgfactError(f"{self.config.url} rejected the query as malformed: "
                              f"{_first_line(exc)}") from None
        except (EndPointNotFound, Unauthorized, URITooLong) as exc:
            raise KgfactError(f"{self.config.url}: {_first_line(exc)}") from None
        except urllib.error.URLError as exc:
            reason = exc.reason
            if isinstance(reason, (TimeoutError, socket.timeout)):
                raise _Retry("timeout") from None
            if self._answered:  # it answered before: a restart or a blip, worth waiting for
                raise _Retry(f"unreachable: {reason}") from None
            raise KgfactError(f"cannot reach {self.config.url}: {reason}") from None
        except (TimeoutError, socket.timeout):
            raise _Retry("timeout") from None
        except (http.client.HTTPException, ConnectionError, OSError) as exc:
            raise _Retry(f"connection: {exc.__class__.__name__}") from None
        except (json.JSONDecodeError, UnicodeDecodeError, ValueError):
            data = None
        if not isinstance(data, dict) or "results" not in data:
            kind = result.info().get("content-type", "?") if result is not None else "?"
            raise KgfactError(f"{self.config.url} is not a SPARQL endpoint: it answered with "
                              f"{kind}, not SPARQL JSON results")
        self._answered = True
        return [{var: term["value"] for var, term in row.items()}
                for row in data["results"]["bindings"]]


def _retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if re.fullmatch(r"[0-9]+", value):  # not isdigit(): "²" is a digit float() cannot read
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else exc.__class__.__name__
