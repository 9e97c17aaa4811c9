"""Hypothesis fuzz of endpoint answers: a loopback proxy answers each request with a generated
status, delay and body (SPARQL JSON results, broken ones, other JSON, bytes), hangs or drops the
connection; once its schedule is spent it passes requests to the real test store. Whatever it
does, the client ends with rows of strings binding the query's variables, or with one one-line
:class:`KgfactError` within its deadline, and caches only rows; ``kgfact build`` ends with a run
or one ``kgfact: error:`` line."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from kgfact.data.sparql import EndpointConfig, SparqlClient, render_query
from kgfact.errors import KgfactError
from tests.faultproxy import Fault, FaultProxy
from tests.test_cli_errors import FUZZ, run_cli

TIMEOUT, DEADLINE = 0.25, 1.0
QUERY = render_query("triples", pid="P36", suffix="", limit=5)
WD = "http://www.wikidata.org/entity/"

VALUES = st.sampled_from([f"{WD}Q100", f"{WD}Q200", f"{WD}Q1", "http://example.org/x", "",
                          "Q100"]) | st.text(max_size=8)
TERMS = st.fixed_dictionaries({"type": st.sampled_from(["uri", "literal", "bnode"]),
                               "value": VALUES})
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=6)
                    | st.floats(allow_nan=False, allow_infinity=False),
                    lambda kids: st.lists(kids, max_size=3)
                    | st.dictionaries(st.text(max_size=4), kids, max_size=3), max_leaves=6)


def _paths(node, path=()):
    """Every place in a JSON document, as the keys and indexes leading to it."""
    yield path
    items = node.items() if isinstance(node, dict) else enumerate(node) \
        if isinstance(node, list) else ()
    for key, child in items:
        yield from _paths(child, (*path, key))


@st.composite
def bodies(draw) -> tuple[bytes, list | None]:
    """A body and the rows it holds, or None where it may not be well-formed results: SPARQL
    JSON results, then maybe one place replaced or deleted, or other bytes altogether."""
    rows = draw(st.lists(st.fixed_dictionaries({"s": TERMS, "o": TERMS}), max_size=4))
    doc = {"head": {"vars": ["s", "o"]}, "results": {"bindings": rows}}
    expected = [{var: term["value"] for var, term in row.items()} for row in rows]
    how = draw(st.sampled_from(["intact", "intact", "replace", "delete", "cut", "bytes"]))
    if how in ("replace", "delete"):
        *parents, last = draw(st.sampled_from([p for p in _paths(doc) if p]))
        node = doc
        for key in parents:
            node = node[key]
        if how == "replace":
            node[last] = draw(JSON)
        else:
            del node[last]
        return json.dumps(doc).encode(), None
    text = json.dumps(doc).encode()
    if how == "cut":
        return text[:draw(st.integers(0, len(text) - 1))], None
    if how == "bytes":
        return draw(st.binary(max_size=24) | JSON.map(lambda v: json.dumps(v).encode())), None
    return text, expected


@st.composite
def answers(draw) -> tuple[Fault, list | None]:
    """One request's fate, and the rows the client must return if it is the first."""
    kind = draw(st.sampled_from(["answer"] * 8 + ["hang", "drop"]))
    if kind != "answer":
        return Fault(kind), None
    body, rows = draw(bodies())
    code = draw(st.sampled_from([200] * 8 + [301, 400, 404, 418, 429, 500, 502, 503, 504]))
    delay = draw(st.sampled_from([0.0] * 4 + [0.05, 2 * TIMEOUT]))
    fault = Fault("answer", code=code, body=body, delay=delay,
                  retry_after=draw(st.sampled_from([None, None, 0, 100])),
                  content_type=draw(st.sampled_from(["application/sparql-results+json",
                                                     "text/html"])))
    return fault, rows if code == 200 and delay < TIMEOUT else None


SCHEDULES = st.lists(answers(), min_size=1, max_size=3)


@pytest.fixture(scope="module")
def proxy(mini_store):
    with FaultProxy(mini_store.query_url.rsplit("/", 1)[0]) as p:
        yield p


@settings(FUZZ, max_examples=80)
@given(schedule=SCHEDULES)
def test_the_client_ends_with_rows_or_one_error_line(proxy, schedule):
    proxy.set_faults([fault for fault, _ in schedule])
    url = proxy.url + "/query"
    with tempfile.TemporaryDirectory(prefix="kgfact-fuzz-") as tmp:
        cache = Path(tmp)
        client = SparqlClient(EndpointConfig(url=url, cache_dir=cache, timeout=TIMEOUT,
                                             deadline=DEADLINE, max_retries=2, backoff=0.01,
                                             max_backoff=0.02, max_retry_after=10),
                              progress=lambda line: None)
        t0 = time.monotonic()
        try:
            rows = client.select(QUERY)
        except KgfactError as exc:
            event(str(exc)[len(url):].split(":")[0])  # the kinds of error met (statistics)
            assert str(exc).startswith(url) and "\n" not in str(exc)
            assert list(cache.rglob("*.json")) == []
        else:
            event("rows")
            assert all({"s", "o"} <= row.keys() and all(isinstance(v, str) for v in row.values())
                       for row in rows)
            expected = schedule[0][1]
            assert expected is None or rows == expected
            [entry] = cache.rglob("*.json")
            assert json.loads(entry.read_text("utf-8")) == rows
        assert time.monotonic() - t0 < DEADLINE + 5  # bounded: the deadline and some slack


@settings(FUZZ, max_examples=8)
@given(schedule=SCHEDULES)
def test_build_ends_with_a_run_or_one_error_line(proxy, capsys, schedule):
    proxy.set_faults([fault for fault, _ in schedule])
    with tempfile.TemporaryDirectory(prefix="kgfact-fuzz-") as tmp:
        code, err = run_cli(capsys, [
            "build", "--endpoint", proxy.url + "/query", "--run", str(Path(tmp) / "run"),
            "--quiet", "--no-cache", "--relations", "P36", "--ood", "P30", "--page-size", "5",
            "--timeout", str(TIMEOUT), "--query-deadline", str(DEADLINE)])
    lines = err.splitlines()
    assert "Traceback" not in err and all(line.startswith("kgfact: ") for line in lines), err
    errors = [line for line in lines if line.startswith("kgfact: error: ")]
    assert (code, errors) == (0, []) or (code == 2 and errors == lines[-1:]), err
