"""A polite, fault-tolerant SPARQL client and the query files it runs.

The client is built for Wikidata's query service and works unchanged against the embedded
Oxigraph store: a specific User-Agent (Wikidata's policy), queries sent by POST asking for SPARQL
JSON results, one request in flight, retries with exponential backoff on transient failures
(HTTP 500, 502, 503 and 504, timeouts, dropped connections), honouring ``Retry-After`` on
429/503, and an on-disk cache of answers so a re-run costs nothing. A permanent failure is a
one-line error at once, with no retry: a URL that is not http(s), any other 3xx, 4xx or 5xx
status (501 included), or an answer that is not well-formed SPARQL JSON results (a web page
answering 200, a ``bindings`` that is not a list of rows of terms, a row without a variable the
query needs); such an answer is never cached.

Three deadlines bound the waiting, each named by the error that hits it: the request timeout
(the whole HTTP exchange, connection, headers and body, however slowly the server trickles
bytes), the query deadline (one query with all its retries and waits) and an optional overall
deadline for all the client's queries together. Every retry prints one line through the
client's ``progress`` callable (stderr by default), so a patient client is never a silent one.

The cache is keyed by URL, query and the endpoint's data version where it has one: the embedded
store's changes with every load (``kgfact build`` passes it whether it uses the store by default
or names its URL), so a build after ``kgfact store load`` asks again. Any other endpoint's answers
are taken as unchanging: ``kgfact build --no-cache`` asks it afresh. A cache entry that is not a
list of rows of strings with the variables the query needs is fetched again.

Queries live as ``.rq`` files in the project's ``queries/`` folder with ``{{name}}`` placeholders.
:func:`render_query` fills them only with validated or escaped values, so an entity id or label
coming from outside cannot change a query's shape.
"""

from __future__ import annotations

import email.utils
import hashlib
import http.client
import io
import json
import re
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

from tqdm import tqdm

import kgfact
from kgfact.config import check_fields
from kgfact.errors import KgfactError
from kgfact.paths import kgfact_home
from kgfact.rundir import atomic_write_text
from kgfact.wikidata import check_qid, property_iri, sparql_string

# no contact of its own: Wikidata's User-Agent policy asks each user for theirs (build.user_agent)
USER_AGENT = (f"kgfact/{kgfact.__version__} (research toolkit for knowledge-graph QA; no "
              "contact set)")
WIKIDATA_ENDPOINT = "https://query.wikidata.org/sparql"
ACCEPT = "application/sparql-results+json, application/json;q=0.9"


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


def render_query(name: str, **params: Any) -> Query:
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
    params = {key: list(value) if isinstance(value, Iterable) and not isinstance(value, str)
              else value for key, value in params.items()}  # a generator is read once
    rendered = {key: _PLACEHOLDERS[key](value) for key, value in params.items()}
    shown = ", ".join(f"{key}: {len(value)}" if isinstance(value, list) else f"{key}={value!r}"
                      for key, value in sorted(params.items()))
    return Query(_PLACEHOLDER_RE.sub(lambda m: rendered[m.group(1)], text),
                 f"{name}.rq({shown})", required_variables(name))


class Query(str):
    """A query's text, with the name errors cite and the variables every solution must bind.

    :func:`render_query` makes them; :meth:`SparqlClient.select` checks each row of the answer
    for ``required`` and names ``name`` in its errors.
    """

    name: str
    required: tuple[str, ...]

    def __new__(cls, text: str, name: str, required: tuple[str, ...] = ()) -> Query:
        query = super().__new__(cls, text)
        query.name, query.required = name, required
        return query


@cache
def required_variables(name: str) -> tuple[str, ...]:
    """The variables of the SELECT clause of ``queries/<name>.rq`` that every solution binds.

    kgfact's query files bind a variable in every solution exactly when they mention it outside
    their ``OPTIONAL`` blocks: they use no UNION, MINUS, BIND or ``UNDEF``, which this rule
    does not follow.

    Examples
    --------
    >>> required_variables("triples"), required_variables("labels")
    (('s', 'o'), ('e',))
    """
    text = "\n".join(line for line in load_query(name).splitlines()
                     if not line.lstrip().startswith("#"))
    text = _PLACEHOLDER_RE.sub(" ", text)
    select = re.search(r"\bSELECT\b(.*?)\bWHERE\b", text, re.IGNORECASE | re.DOTALL)
    if select is None:
        raise KgfactError(f"query file {name}.rq has no SELECT ... WHERE")
    body = text[select.end():]
    while optional := re.search(r"\bOPTIONAL\s*\{", body, re.IGNORECASE):
        depth, end = 1, optional.end()
        while depth:
            depth += {"{": 1, "}": -1}.get(body[end], 0)
            end += 1
        body = body[:optional.start()] + body[end:]
    mentioned = set(re.findall(r"[?$](\w+)", body))
    return tuple(dict.fromkeys(v for v in re.findall(r"[?$](\w+)", select.group(1))
                               if v in mentioned))


# -- answers -----------------------------------------------------------------------------------

class MalformedAnswer(ValueError):
    """An answer that is not SPARQL JSON results of the expected shape; the message names the
    first fault by its place, e.g. ``results.bindings[3] is an array, not an object``."""


def sparql_rows(data: Any, required: Iterable[str] = ()) -> list[dict[str, str]]:
    """The rows of a decoded SPARQL 1.1 JSON results document, one dict per solution (variable
    → lexical value), once its whole shape is checked.

    ``head``, if present, is an object whose ``vars``, if present, is a list of strings naming
    every variable a row binds; ``results.bindings`` is a list of objects, each mapping variables
    to terms; a term is an object with a string ``type`` and a string ``value`` (valid Unicode,
    so it can be stored); every row binds every variable of ``required``.

    Raises
    ------
    MalformedAnswer
        Naming the first fault found.

    Examples
    --------
    >>> sparql_rows({"results": {"bindings": [{"s": {"type": "uri", "value": "http://x/a"}}]}})
    [{'s': 'http://x/a'}]
    >>> sparql_rows({"results": {"bindings": [[]]}})
    Traceback (most recent call last):
    ...
    kgfact.data.sparql.MalformedAnswer: results.bindings[0] is an array, not an object
    """
    _expect(data, dict, "the answer")
    head = data.get("head", {})
    _expect(head, dict, "head")
    variables = head.get("vars") if "vars" in head else None
    if "vars" in head:
        _expect(variables, list, "head.vars")
        for i, var in enumerate(variables):
            _text(var, f"head.vars[{i}]")
    if "results" not in data:
        raise MalformedAnswer('it has no "results" member')
    _expect(data["results"], dict, "results")
    if "bindings" not in data["results"]:
        raise MalformedAnswer('results has no "bindings" member')
    bindings = data["results"]["bindings"]
    _expect(bindings, list, "results.bindings")
    rows = []
    for i, binding in enumerate(bindings):
        where = f"results.bindings[{i}]"
        _expect(binding, dict, where)
        row = {}
        for var, term in binding.items():
            at = f"{where}[{var!r}]"
            if variables is not None and var not in variables:
                raise MalformedAnswer(f"{where} binds {var!r}, which head.vars does not list")
            _expect(term, dict, at)
            for key in ("type", "value"):
                if key not in term:
                    raise MalformedAnswer(f'{at} has no "{key}"')
                _text(term[key], f"{at}.{key}")
            row[_text(var, f"{where}'s variable {var!r}")] = term["value"]
        missing = next((var for var in required if var not in row), None)
        if missing is not None:
            raise MalformedAnswer(f"{where} does not bind ?{missing}, which the query needs")
        rows.append(row)
    return rows


def _valid_rows(rows: Any, required: Iterable[str]) -> bool:
    """Whether ``rows`` (a cache entry) is a list of rows of strings binding ``required``."""
    return isinstance(rows, list) and all(
        isinstance(row, dict) and all(isinstance(v, str) for v in row.values())
        and all(var in row for var in required) for row in rows)


_KINDS = ((bool, "a boolean"), ((int, float), "a number"), (str, "a string"),
          (list, "an array"), (dict, "an object"))


def _expect(value: Any, kind: type, where: str) -> None:
    if not isinstance(value, kind):
        raise MalformedAnswer(f"{where} is {_kind(value)}, not {_kind(kind())}")


def _kind(value: Any) -> str:
    """What JSON value ``value`` is, with its article (bool before int: True is an int)."""
    return next((name for kinds, name in _KINDS if isinstance(value, kinds)), "null")


def _text(value: Any, where: str) -> str:
    _expect(value, str, where)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # JSON's "\ud800": no file or table can hold it
        raise MalformedAnswer(f"{where} is not valid Unicode (a lone surrogate)") from None
    return value


# -- client ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class EndpointConfig:
    """How to reach a SPARQL endpoint and how patiently."""

    url: str = field(metadata={"help": "SPARQL query endpoint URL."})
    user_agent: str = field(default=USER_AGENT,
                            metadata={"help": "User-Agent header (Wikidata requires one)."})
    timeout: float = field(default=60.0, metadata={"above": 0, "max": 86_400,
        "help": "Seconds one request may take, connection, headers and body together "
                "(Wikidata's own limit is 60 s)."})
    deadline: float = field(default=600.0, metadata={"above": 0,
        "help": "Seconds one query may take with all its retries and waits: no attempt or "
                "wait starts past it, so a server that never answers fails after this."})
    total_deadline: float | None = field(default=None, metadata={"above": 0,
        "help": "Seconds all the client's queries may take together, from its creation "
                "(a build's whole fetch); None: no limit."})
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
        try:
            port_ok = parts.port is None or parts.port > 0
        except ValueError:  # "http://host:99999/"
            port_ok = False
        if parts.scheme not in ("http", "https") or not parts.hostname or not port_ok:
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
    """A transient failure: ``kind`` counts it in the stats, ``detail`` tells it, ``wait`` is
    the server's Retry-After, if any."""

    def __init__(self, kind: str, detail: str | None = None, wait: float | None = None) -> None:
        super().__init__(detail or kind)
        self.kind, self.detail, self.wait = kind, detail or kind, wait


def _say(line: str) -> None:
    """Print one progress line on stderr (between progress bars, if any are drawn)."""
    tqdm.write(line, file=sys.stderr)


class SparqlClient:
    """Run SELECT queries against one endpoint, one at a time, with retries and a disk cache.

    Parameters
    ----------
    config : EndpointConfig or str
        The endpoint, or just its URL.
    sleep : callable, optional
        Injected for tests of the backoff schedule; defaults to :func:`time.sleep`.
    progress : callable, optional
        Receives one line per retry (``kgfact: URL HTTP 503, retrying in 4 s (attempt 2 of
        9)``); prints it on stderr by default, whether or not progress bars are shown.
    """

    def __init__(self, config: EndpointConfig | str,
                 sleep: Callable[[float], None] = time.sleep,
                 progress: Callable[[str], None] = _say) -> None:
        self.config = EndpointConfig(config) if isinstance(config, str) else config
        self._url = urlsplit(self.config.url)
        if (self._url.hostname or "").endswith("wikidata.org") \
                and self.config.user_agent == USER_AGENT:
            print("kgfact: Wikidata's User-Agent policy asks for a contact: set yours with "
                  "--user-agent 'my-study/1.0 (you@example.org)' (build.user_agent in a "
                  "config)", file=sys.stderr)
        self.stats = ClientStats()
        self._sleep, self._progress = sleep, progress
        self._started = time.monotonic()  # the total deadline counts from here
        self._lock = threading.Lock()  # Wikidata asks for one request in flight per client
        self._answered = False
        self._tls: ssl.SSLContext | None = None

    def _cache_path(self, query: str) -> Path | None:
        if self.config.cache_dir is None:
            return None
        key = hashlib.sha256(f"{self.config.url}\n{self.config.data_version or ''}\n{query}"
                             .encode()).hexdigest()
        return Path(self.config.cache_dir) / key[:2] / f"{key}.json"

    def select(self, query: str, required: Iterable[str] | None = None) -> list[dict[str, str]]:
        """Run a SELECT query; return one dict per solution (variable → lexical value).

        Parameters
        ----------
        query : str
            The query; a :class:`Query` from :func:`render_query` also names itself in errors
            and says which variables every solution binds.
        required : iterable of str, optional
            Variables every row must bind; by default a :class:`Query`'s own, else none.

        Raises
        ------
        KgfactError
            If the endpoint rejects the query, cannot be reached, answers something that is not
            SPARQL JSON results with the ``required`` variables, keeps failing after
            ``max_retries`` retries, or a deadline passes.
        """
        if required is None:
            required = query.required if isinstance(query, Query) else ()
        required = tuple(required)
        path = self._cache_path(query)
        if path is not None:
            rows = _read_cache(path, required)
            if rows is not None:
                self.stats.cache_hits += 1
                return rows
        name = query.name if isinstance(query, Query) else _one_line(query, 60)
        with self._lock:
            rows = self._select_with_retries(query, required, name)
        if path is not None:
            atomic_write_text(path, json.dumps(rows))
        return rows

    def _deadline(self) -> tuple[float, str]:
        """When the query about to start must end (``time.monotonic``), and which deadline
        that is: its own, or the client's total one if that comes first."""
        end = time.monotonic() + self.config.deadline
        name = f"the {_secs(self.config.deadline)} s query deadline"
        total = self.config.total_deadline
        if total is not None and self._started + total < end:
            end, name = self._started + total, f"the {_secs(total)} s overall deadline"
        return end, name

    def _select_with_retries(self, query: str, required: tuple[str, ...],
                             name: str) -> list[dict[str, str]]:
        url, tries = self.config.url, self.config.max_retries + 1
        end, deadline = self._deadline()
        last: _Retry | None = None
        for attempt in range(tries):
            if last is not None:
                wait, now = self._wait(last, attempt - 1), time.monotonic()
                if now >= end:
                    break
                if now + wait >= end:
                    raise KgfactError(f"{url} gave up: waiting {_secs(wait)} s to retry would "
                                      f"pass {deadline}; last error: {last.detail} "
                                      f"(query {name})")
                self.stats.retries += 1
                self.stats.retry_reasons[last.kind] = (
                    self.stats.retry_reasons.get(last.kind, 0) + 1)
                self._progress(f"kgfact: {url} {last.detail}, retrying in {_secs(wait)} s "
                               f"(attempt {attempt + 1} of {tries})")
                self._sleep(wait)
            left = end - time.monotonic()
            if left <= 0:
                break
            try:
                return self._attempt(query, required, name, min(self.config.timeout, left))
            except _Retry as retry:
                last = retry
        else:
            raise KgfactError(f"{url} failed {tries} time{'s' if tries > 1 else ''}; "
                              f"last error: {last.detail} (query {name})")
        if last is None:
            raise KgfactError(f"{url}: {deadline} passed before query {name} was sent")
        raise KgfactError(f"{url} gave up after {deadline}: last error: {last.detail} "
                          f"(query {name})")

    def _wait(self, retry: _Retry, failures: int) -> float:
        """Seconds to wait before retrying after ``failures + 1`` failed attempts: the
        server's Retry-After if it gave one, else the doubling backoff."""
        if retry.wait is None:
            return min(self.config.backoff * 2 ** min(failures, 64), self.config.max_backoff)
        if retry.wait > self.config.max_retry_after:
            raise KgfactError(
                f"{self.config.url} asks to wait {retry.wait:.0f} s (Retry-After), longer than "
                f"the {self.config.max_retry_after:.0f} s allowed; try again later")
        return retry.wait

    def _attempt(self, query: str, required: tuple[str, ...], name: str,
                 timeout: float) -> list[dict[str, str]]:
        """One request: the rows, a :class:`_Retry` for a transient failure, or a
        :class:`KgfactError` for a permanent one."""
        url = self.config.url
        response, body = self._exchange(query, timeout)
        status = response.status
        if status in (429, 503):
            raise _Retry(f"HTTP {status}", wait=_retry_after(response.getheader("Retry-After")))
        if status in (500, 502, 504):
            raise _Retry(f"HTTP {status}")
        said = _one_line(body.decode("utf-8", "replace"), 200)
        said = f": {said}" if said else ""
        if status == 400:
            raise KgfactError(f"{url} rejected the query as malformed (HTTP 400){said} "
                              f"(query {name})")
        if 300 <= status < 400 and response.getheader("Location"):
            raise KgfactError(f"{url} answered HTTP {status}, redirecting to "
                              f"{_one_line(response.getheader('Location'), 200)}: use that URL")
        if status != 200:
            raise KgfactError(f"{url} answered HTTP {status} {_one_line(response.reason, 60)}"
                              f"{said}")
        kind = _one_line(response.getheader("Content-Type") or "no content type", 60)
        try:
            data = json.loads(body)
        except (ValueError, RecursionError):  # not JSON, not text, or nested past Python's stack
            data = None
        if not isinstance(data, dict) or "results" not in data:
            raise KgfactError(f"{url} is not a SPARQL endpoint: it answered with {kind}, not "
                              f"SPARQL JSON results (query {name})")
        try:
            rows = sparql_rows(data, required)
        except MalformedAnswer as exc:
            raise KgfactError(f"{url} answered malformed SPARQL JSON results: {exc} "
                              f"(query {name})") from None
        self._answered = True
        return rows

    def _exchange(self, query: str, timeout: float) -> tuple[http.client.HTTPResponse, bytes]:
        """POST ``query``; the response and its whole body, within ``timeout`` seconds."""
        end = time.monotonic() + timeout
        self.stats.requests += 1
        path = (self._url.path or "/") + (f"?{self._url.query}" if self._url.query else "")
        conn = None
        try:
            conn = self._connect(end)
            sock = conn.sock
            conn.request("POST", path, body=urlencode({"query": query}).encode("ascii"),
                         headers={"User-Agent": self.config.user_agent, "Accept": ACCEPT,
                                  "Content-Type": "application/x-www-form-urlencoded"})
            response = conn.getresponse()
            return response, response.read()
        except TimeoutError:
            limit = (f"the {_secs(timeout)} s request timeout" if timeout == self.config.timeout
                     else f"the {_secs(timeout)} s left")
            raise _Retry("timeout", f"no answer within {limit}") from None
        except (http.client.HTTPException, OSError) as exc:
            # dropped connections, truncated bodies (IncompleteRead), garbled status lines
            raise _Retry("connection", f"connection: {exc.__class__.__name__}") from None
        finally:
            if conn is not None:
                conn.close()
                sock.sock.close()

    def _connect(self, end: float) -> http.client.HTTPConnection:
        """A connection to the endpoint whose every later send and receive ends by ``end``."""
        https = self._url.scheme == "https"
        if https:
            if self._tls is None:
                self._tls = ssl.create_default_context()
            conn = http.client.HTTPSConnection(self._url.hostname, self._url.port,
                                               context=self._tls)
        else:
            conn = http.client.HTTPConnection(self._url.hostname, self._url.port)
        sock = None
        try:
            sock = socket.create_connection((conn.host, conn.port), timeout=_left(end))
            if https:
                sock.settimeout(_left(end))
                sock = self._tls.wrap_socket(sock, server_hostname=conn.host)
        except OSError as exc:
            if sock is not None:
                sock.close()
            if isinstance(exc, TimeoutError):
                raise
            if self._answered:  # it answered before: a restart or a blip, worth waiting for
                raise _Retry("unreachable", f"unreachable: {exc}") from None
            raise KgfactError(f"cannot reach {self.config.url}: {exc}") from None
        conn.sock = _DeadlineSocket(sock, end)  # http.client sends and reads through it
        return conn


class _DeadlineSocket:
    """A connected socket whose sends and receives all end by ``end`` (``time.monotonic``):
    each gets the time left as its timeout, so a server trickling bytes cannot stretch an
    exchange past it. It stands in for an :class:`http.client.HTTPConnection`'s socket, which
    sends through ``sendall`` and reads through ``makefile``."""

    def __init__(self, sock: socket.socket, end: float) -> None:
        self.sock, self.end = sock, end

    def armed(self) -> socket.socket:
        self.sock.settimeout(_left(self.end))
        return self.sock

    def sendall(self, data: bytes) -> None:
        self.armed().sendall(data)

    def makefile(self, mode: str = "rb") -> io.BufferedReader:
        return io.BufferedReader(_DeadlineReader(self))

    def close(self) -> None:
        """Nothing: http.client closes its socket as soon as a response says ``Connection:
        close``, before reading the body; the exchange closes ``sock`` once it is done."""


class _DeadlineReader(io.RawIOBase):
    """The receiving side of a :class:`_DeadlineSocket`."""

    def __init__(self, owner: _DeadlineSocket) -> None:
        super().__init__()
        self.owner = owner

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        return self.owner.armed().recv_into(buffer)


def _left(end: float) -> float:
    """Seconds until ``end``; a :class:`TimeoutError` once it has passed."""
    left = end - time.monotonic()
    if left <= 0:
        raise TimeoutError("the deadline passed")
    return left


def _read_cache(path: Path, required: tuple[str, ...]) -> list[dict[str, str]] | None:
    """The rows cached at ``path``; None when there are none or the entry is damaged (not a
    list of rows of strings binding ``required``), which is then fetched again."""
    try:
        rows = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    return rows if _valid_rows(rows, required) else None


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


def _secs(seconds: float) -> str:
    """Seconds for a message: ``4``, ``0.5``, ``600``."""
    return f"{round(seconds, 2):g}"


def _one_line(text: str, limit: int) -> str:
    """The first non-blank line of ``text``, without a comment's ``#``, control characters
    shown as ``?`` and cut to ``limit`` characters: safe inside a one-line message."""
    line = next((ln.strip().lstrip("#").strip() for ln in text.splitlines() if ln.strip()), "")
    line = "".join(c if c.isprintable() else "?" for c in line)
    return line if len(line) <= limit else line[:limit - 1] + "…"
