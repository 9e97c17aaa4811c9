"""The SPARQL client and query files against a real Oxigraph server, directly and through a
fault-injecting proxy."""

from __future__ import annotations


import json
import re
import time
from urllib.parse import parse_qs

import pandas as pd
import pyoxigraph
import pytest

from kgfact.cli import main
from kgfact.data.fetch import FetchConfig, GraphFetcher
from kgfact.data.sparql import (USER_AGENT, EndpointConfig, SparqlClient, render_query,
                                required_variables)
from kgfact.errors import KgfactError
from tests import miniworld
from tests.faultproxy import Fault, FaultProxy


def _query_text(record) -> str:
    """The query a request carried, without its comment lines."""
    query = parse_qs(record.body.decode())["query"][0]
    return "\n".join(line for line in query.splitlines() if not line.lstrip().startswith("#"))


def client(url: str, cache_dir=None, **kw) -> SparqlClient:
    return SparqlClient(EndpointConfig(url=url, cache_dir=cache_dir, backoff=0.01, **kw))


def fetch(url, tmp_path, page_size=10_000, relations=("P17", "P36", "P1376", "P30"), **kw):
    c = client(url, **kw)
    config = FetchConfig(relations=relations, page_size=page_size)
    return GraphFetcher(c, config, tmp_path / "ckpt", progress=False).run(), c


# -- query rendering ---------------------------------------------------------------------------

def test_render_rejects_bad_ids_and_missing_params():
    with pytest.raises(KgfactError, match="not a Wikidata item id"):
        render_query("labels", entities=["Q1 } DROP ALL {"])
    with pytest.raises(KgfactError, match="not a Wikidata property id"):
        render_query("triples", pid="P17 ?x", suffix="", limit=3)
    with pytest.raises(KgfactError, match="digits"):
        render_query("triples", pid="P17", suffix='1") }', limit=3)
    with pytest.raises(KgfactError, match="missing"):
        render_query("triples", pid="P17", limit=3)
    # "$" lets a final newline through; ids are checked whole
    with pytest.raises(KgfactError, match="not a Wikidata item id"):
        render_query("labels", entities=["Q1\n"])
    with pytest.raises(KgfactError, match="not a Wikidata property id"):
        render_query("triples", pid="P17\n", suffix="", limit=3)


def test_injection_shaped_label_stays_a_literal():
    query = render_query("entities_by_label", labels=[miniworld.INJECTION, "Atlantis"], limit=5)
    parsed = pyoxigraph.Store()
    parsed.add(pyoxigraph.Quad(pyoxigraph.NamedNode("http://x/e"),
                               pyoxigraph.NamedNode("http://www.w3.org/2000/01/rdf-schema#label"),
                               pyoxigraph.Literal(miniworld.INJECTION, language="en")))
    rows = list(parsed.query(query))  # parses as one SELECT and matches the label exactly
    assert [str(r["label"].value) for r in rows] == [miniworld.INJECTION]


def test_injection_label_against_server_changes_nothing(mini_store):
    c = client(mini_store.query_url)
    before = mini_store.count_triples()
    rows = c.select(render_query("entities_by_label", labels=[miniworld.INJECTION], limit=5))
    assert rows == [{"e": "http://www.wikidata.org/entity/Q1020", "label": miniworld.INJECTION}]
    assert mini_store.count_triples() == before


# -- client against the real server ------------------------------------------------------------

def test_select_returns_exact_rows(mini_store):
    rows = client(mini_store.query_url).select(
        render_query("triples", pid="P36", suffix="", limit=100))
    got = sorted((r["s"].rsplit("/", 1)[1], r["o"].rsplit("/", 1)[1]) for r in rows)
    assert got == sorted(miniworld.CAPITALS.items())


def test_paging_by_partition_gives_the_same_triples(mini_store, tmp_path):
    with FaultProxy(mini_store.query_url.rsplit("/", 1)[0]) as proxy:
        small, _ = fetch(proxy.url + "/query", tmp_path / "small", page_size=4)
        assert proxy.requests and not any(re.search(r"\bOFFSET\b", _query_text(r), re.I)
                                          for r in proxy.requests)
    whole, _ = fetch(mini_store.query_url, tmp_path / "whole")
    assert small.triples.equals(whole.triples)
    assert small.report["partitions_split"] > 0 and whole.report["partitions_split"] == 0
    expected = miniworld.tables()[0]
    assert whole.triples.reset_index(drop=True).equals(expected)


def test_fetch_labels_and_popularity(mini_store, tmp_path):
    result, _ = fetch(mini_store.query_url, tmp_path)
    ent = result.entities.set_index("id")
    assert ent.loc["Q100", "label"] == "Atlantis"
    assert list(ent.loc["Q100", "aliases"]) == ["Republic of Atlantis"]
    assert ent.loc["Q100", "population"] == 1_000_000
    assert ent.loc["Q1020", "label"] == miniworld.INJECTION
    assert pd.isna(ent.loc["Q1030", "label"])  # the town without a label
    assert len(ent) == 3 + 1 + miniworld.N_TOWNS


def test_cache_makes_a_rerun_free(mini_store, tmp_path):
    upstream = mini_store.query_url.rsplit("/", 1)[0]
    with FaultProxy(upstream) as proxy:
        first, _ = fetch(proxy.url + "/query", tmp_path / "a", cache_dir=tmp_path / "cache")
        sent = len(proxy.requests)
        second, c = fetch(proxy.url + "/query", tmp_path / "b", cache_dir=tmp_path / "cache")
        assert len(proxy.requests) == sent > 0
    assert c.stats.requests == 0 and c.stats.cache_hits == sent
    assert second.triples.equals(first.triples) and second.entities.equals(first.entities)


def test_faults_are_survived_with_exact_same_triples(mini_store, tmp_path):
    reference, _ = fetch(mini_store.query_url, tmp_path / "ref", page_size=6)
    faults = [Fault("429", retry_after=1), Fault("500"), Fault("slow", delay=3.0), Fault("drop"),
              Fault("truncate"), Fault("503", retry_after=0), None, Fault("drop"), Fault("500")]
    with FaultProxy(mini_store.query_url.rsplit("/", 1)[0], faults) as proxy:
        result, c = fetch(proxy.url + "/query", tmp_path / "faulty", page_size=6, timeout=1.0)
        assert {r.user_agent for r in proxy.requests} == {USER_AGENT}
        assert proxy.pending == 0
    assert result.triples.equals(reference.triples)
    assert result.entities.equals(reference.entities)
    assert c.stats.retries == 8
    # a truncated body surfaces as IncompleteRead, i.e. a connection fault
    assert c.stats.retry_reasons == {"HTTP 429": 1, "HTTP 500": 2, "timeout": 1,
                                     "connection": 3, "HTTP 503": 1}


def test_retry_after_is_honoured(mini_store):
    waits = []
    with FaultProxy(mini_store.query_url.rsplit("/", 1)[0], [Fault("429", retry_after=7)]) as p:
        c = SparqlClient(EndpointConfig(url=p.url + "/query", cache_dir=None), sleep=waits.append)
        c.select("SELECT * WHERE { ?s ?p ?o } LIMIT 1")
    assert waits == [7.0]


def test_backoff_doubles_then_gives_up(mini_store):
    waits = []
    with FaultProxy(mini_store.query_url.rsplit("/", 1)[0], [Fault("500")] * 4) as p:
        c = SparqlClient(EndpointConfig(url=p.url + "/query", cache_dir=None, max_retries=3,
                                        backoff=0.5), sleep=waits.append)
        with pytest.raises(KgfactError, match="failed 4 times; last error: HTTP 500"):
            c.select("SELECT * WHERE { ?s ?p ?o } LIMIT 1")
    assert waits == [0.5, 1.0, 2.0]


def test_too_long_retry_after_is_an_error(mini_store):
    with FaultProxy(mini_store.query_url.rsplit("/", 1)[0], [Fault("429", retry_after=3600)]) as p:
        c = client(p.url + "/query", max_retry_after=60)
        with pytest.raises(KgfactError, match="Retry-After"):
            c.select("SELECT * WHERE { ?s ?p ?o } LIMIT 1")


def test_unreachable_endpoint_is_a_clear_error():
    with pytest.raises(KgfactError, match="cannot reach http://127.0.0.1:9/query"):
        client("http://127.0.0.1:9/query").select("SELECT * WHERE { ?s ?p ?o } LIMIT 1")


def test_malformed_query_is_not_retried(mini_store):
    c = client(mini_store.query_url)
    with pytest.raises(KgfactError, match="malformed"):
        c.select("SELECT WHERE {")
    assert c.stats.requests == 1


def test_empty_result_is_a_clear_error(mini_store, tmp_path):
    with pytest.raises(KgfactError, match="returned no triples for P50"):
        fetch(mini_store.query_url, tmp_path, relations=("P50",))


def test_unknown_relation_fails_before_any_request(mini_store, tmp_path):
    with pytest.raises(KgfactError, match="unknown relation"):
        fetch("http://127.0.0.1:9/query", tmp_path, relations=("P17", "P99999"))


class _NotSparql:
    """A loopback HTTP server answering every request with one fixed status, type, body and
    extra headers."""

    def __init__(self, status: int, content_type: str, body: bytes,
                 headers: dict[str, str] | None = None) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        answer = (status, content_type, body)

        class Handler(BaseHTTPRequestHandler):
            def _answer(self):
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self.send_response(answer[0])
                self.send_header("Content-Type", answer[1])
                self.send_header("Content-Length", str(len(answer[2])))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(answer[2])

            do_GET = do_POST = _answer

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/sparql"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("status, content_type, body, message", [
    (200, "text/html", b"<html><body>Welcome</body></html>", "is not a SPARQL endpoint: it "
     "answered with text/html"),
    (200, "application/json", b'{"ok": true}', "not SPARQL JSON results"),
    (501, "text/plain", b"no", "answered HTTP 501"),
    (405, "text/plain", b"no", "answered HTTP 405"),
    (403, "text/plain", b"no", "403"),
])
def test_permanent_failures_are_not_retried(status, content_type, body, message):
    waits = []
    with _NotSparql(status, content_type, body) as server:
        c = SparqlClient(EndpointConfig(url=server.url, cache_dir=None), sleep=waits.append)
        with pytest.raises(KgfactError, match=re.escape(message)):
            c.select("SELECT * WHERE { ?s ?p ?o } LIMIT 1")
    assert c.stats.requests == 1 and waits == []


@pytest.mark.parametrize("url", ["ftp://example.org/sparql", "localhost:7878/query", "query",
                                 "http:///sparql"])
def test_a_url_that_is_not_http_is_refused_before_any_request(url):
    with pytest.raises(KgfactError, match="is not an http\\(s\\) URL"):
        EndpointConfig(url=url)


@pytest.mark.parametrize("status", [502, 504])
def test_gateway_errors_are_retried(status):
    waits = []
    with _NotSparql(status, "text/plain", b"busy") as server:
        c = SparqlClient(EndpointConfig(url=server.url, cache_dir=None, max_retries=2),
                         sleep=waits.append)
        with pytest.raises(KgfactError, match=f"failed 3 times; last error: HTTP {status}"):
            c.select("SELECT * WHERE { ?s ?p ?o } LIMIT 1")
    assert c.stats.requests == 3 and waits == [1.0, 2.0]


@pytest.mark.parametrize("retry_after", ["\u00b2", "soon", "-5"])
def test_an_unreadable_retry_after_falls_back_to_backoff(retry_after):
    """A Retry-After that is neither seconds nor an HTTP date means the usual backoff ("\u00b2"
    is a digit to str.isdigit() but not to float(): it escaped as a ValueError)."""
    waits = []
    with _NotSparql(429, "text/plain", b"slow down", {"Retry-After": retry_after}) as server:
        c = SparqlClient(EndpointConfig(url=server.url, cache_dir=None, max_retries=2),
                         sleep=waits.append)
        with pytest.raises(KgfactError, match="failed 3 times; last error: HTTP 429"):
            c.select("SELECT * WHERE { ?s ?p ?o } LIMIT 1")
    assert c.stats.requests == 3 and waits == [1.0, 2.0]


# -- every answer checked ----------------------------------------------------------------------

DEAD = "http://127.0.0.1:1"  # the upstream of a proxy that only makes answers up
TRIPLES = render_query("triples", pid="P17", suffix="", limit=3)
NAME = "triples.rq(limit=3, pid='P17', suffix='')"
URI = {"type": "uri", "value": "http://www.wikidata.org/entity/Q1"}
ROW = {"s": URI, "o": URI}


def _results(bindings, **doc) -> bytes:
    return json.dumps({"head": {"vars": ["s", "o"]}, "results": {"bindings": bindings},
                       **doc}).encode()


def test_render_query_names_the_query_and_the_variables_it_binds():
    assert TRIPLES.name == NAME and TRIPLES.required == ("s", "o")
    assert {name: required_variables(name) for name in
            ("triples", "neighbourhood", "labels", "entities_by_label")} == {
        "triples": ("s", "o"), "neighbourhood": ("s", "p", "o"), "labels": ("e",),
        "entities_by_label": ("e", "label")}  # labels.rq binds the rest in OPTIONAL blocks
    assert render_query("labels", entities=iter(["Q1", "Q2"])).name == "labels.rq(entities: 2)"


NOT_SPARQL = "is not a SPARQL endpoint: it answered with application/sparql-results+json, not " \
             "SPARQL JSON results"


@pytest.mark.parametrize("body, fault", [
    (b'{"results": {}}', 'results has no "bindings" member'),
    (b'{"results": [1]}', "results is an array, not an object"),
    (b"null", None),
    (b"[]", None),
    (_results("abc"), "results.bindings is a string, not an array"),
    (_results([ROW, {"s": URI, "o": {"type": "uri"}}]),
     "results.bindings[1]['o'] has no \"value\""),
    (_results([{"s": URI}]), "results.bindings[0] does not bind ?o, which the query needs"),
    (_results([ROW, ROW, ROW, []]), "results.bindings[3] is an array, not an object"),
    (_results([{"s": URI, "o": "http://x/"}]), "results.bindings[0]['o'] is a string, not an "
                                               "object"),
    (_results([{"s": URI, "o": {"type": "uri", "value": 5}}]),
     "results.bindings[0]['o'].value is a number, not a string"),
    (_results([{"s": URI, "o": {"value": "x"}}]), "results.bindings[0]['o'] has no \"type\""),
    (_results([{"s": URI, "o": {"type": "literal", "value": "\ud800"}}]),
     "results.bindings[0]['o'].value is not valid Unicode (a lone surrogate)"),
    (_results([{**ROW, "x": URI}]), "results.bindings[0] binds 'x', which head.vars does not "
                                    "list"),
    (_results([], head={"vars": "s"}), "head.vars is a string, not an array"),
    (_results([], head=[]), "head is an array, not an object"),
])
def test_a_malformed_answer_is_one_line_error_and_never_cached(body, fault, tmp_path):
    waits = []
    with FaultProxy(DEAD, [Fault("answer", body=body)]) as proxy:
        url = proxy.url + "/query"
        c = SparqlClient(EndpointConfig(url=url, cache_dir=tmp_path), sleep=waits.append)
        with pytest.raises(KgfactError) as err:
            c.select(TRIPLES)
    expected = (f"{url} {NOT_SPARQL} (query {NAME})" if fault is None else
                f"{url} answered malformed SPARQL JSON results: {fault} (query {NAME})")
    assert str(err.value) == expected
    assert c.stats.requests == 1 and waits == []  # not retried
    assert list(tmp_path.rglob("*")) == []  # nothing cached


def test_a_fetch_given_rows_without_a_variable_is_a_one_line_error(tmp_path):
    body = _results([{"s": URI}])
    with FaultProxy(DEAD, [Fault.every(1, "answer", body=body)]) as proxy:
        with pytest.raises(KgfactError, match=re.escape(
                "results.bindings[0] does not bind ?o, which the query needs (query "
                "triples.rq(limit=10001, pid='P17', suffix=''))")):
            fetch(proxy.url + "/query", tmp_path)  # was a KeyError in the fetcher


@pytest.mark.parametrize("damage", ['{"s": "x"}', "[1]", '[{"s": "x", "o": 1}]', '[{"s": "x"}]',
                                    '[["s", "o"]]'])
def test_a_damaged_cache_entry_is_fetched_again(mini_store, tmp_path, damage):
    query = render_query("triples", pid="P36", suffix="", limit=100)
    first = client(mini_store.query_url, tmp_path).select(query)
    [entry] = tmp_path.rglob("*.json")
    entry.write_text(damage)
    again = client(mini_store.query_url, tmp_path)
    assert again.select(query) == first and len(first) == len(miniworld.CAPITALS)
    assert (again.stats.requests, again.stats.cache_hits) == (1, 0)
    assert json.loads(entry.read_text()) == first
    assert client(mini_store.query_url, tmp_path).select(query) == first  # a hit again


# -- deadlines and progress --------------------------------------------------------------------

@pytest.mark.timeout(60)
def test_a_trickling_server_ends_at_the_query_deadline(mini_store):
    """One byte every 0.2 s: each read comes well within the 1 s timeout, so a timeout per
    socket read waited for the whole answer, a minute per attempt."""
    lines = []
    upstream = mini_store.query_url.rsplit("/", 1)[0]
    with FaultProxy(upstream, [Fault.every(1, "trickle", delay=0.2)]) as proxy:
        url = proxy.url + "/query"
        c = SparqlClient(EndpointConfig(url=url, cache_dir=None, timeout=1, deadline=3,
                                        backoff=0.01), progress=lines.append)
        t0 = time.monotonic()
        with pytest.raises(KgfactError) as err:
            c.select(TRIPLES)
        assert time.monotonic() - t0 < 3 + 10  # bounded: the deadline and some slack
    # the last attempt has only the time left (unless a stalled machine used it up already)
    assert re.fullmatch(re.escape(f"{url} gave up after the 3 s query deadline: last error: no "
                                  "answer within the ") + r"(1 s request timeout|0\.\d+ s left)"
                        + re.escape(f" (query {NAME})"), str(err.value)), str(err.value)
    assert lines[0] == (f"kgfact: {url} no answer within the 1 s request timeout, retrying in "
                        "0.01 s (attempt 2 of 9)")


@pytest.mark.timeout(60)
def test_one_trickled_request_ends_at_the_request_timeout(mini_store):
    upstream = mini_store.query_url.rsplit("/", 1)[0]
    with FaultProxy(upstream, [Fault("trickle", delay=0.2)]) as proxy:
        url = proxy.url + "/query"
        c = client(url, timeout=1, max_retries=0)
        with pytest.raises(KgfactError) as err:
            c.select(TRIPLES)
    assert str(err.value) == (f"{url} failed 1 time; last error: no answer within the 1 s "
                              f"request timeout (query {NAME})")


@pytest.mark.timeout(60)
def test_a_server_that_never_answers_ends_at_the_query_deadline():
    lines = []
    with FaultProxy(DEAD, [Fault.every(1, "hang")]) as proxy:
        url = proxy.url + "/query"
        c = SparqlClient(EndpointConfig(url=url, cache_dir=None, timeout=0.5, deadline=2,
                                        max_retries=1000, backoff=0.1, max_backoff=0.1),
                         progress=lines.append)
        t0 = time.monotonic()
        with pytest.raises(KgfactError, match=re.escape(f"{url} gave up") +
                           r".* the 2 s query deadline.*: no answer within"):
            c.select(TRIPLES)
        assert time.monotonic() - t0 < 2 + 10
    assert lines[0] == (f"kgfact: {url} no answer within the 0.5 s request timeout, retrying "
                        "in 0.1 s (attempt 2 of 1001)")


@pytest.mark.timeout(60)
def test_the_overall_deadline_covers_every_query_of_a_client():
    with FaultProxy(DEAD, [Fault.every(1, "hang")]) as proxy:
        url = proxy.url + "/query"
        c = client(url, timeout=0.5, total_deadline=1.5, max_retries=1000)
        with pytest.raises(KgfactError, match=re.escape(f"{url} gave up") +
                           r".* the 1\.5 s overall deadline.*: no answer within"):
            c.select(TRIPLES)
        with pytest.raises(KgfactError) as err:
            c.select("SELECT * WHERE { ?s ?p ?o }")
    assert str(err.value) == (f"{url}: the 1.5 s overall deadline passed before query SELECT * "
                              "WHERE { ?s ?p ?o } was sent")


def test_a_wait_past_the_deadline_is_refused_at_once():
    waits = []
    with FaultProxy(DEAD, [Fault("503", retry_after=30)]) as proxy:
        url = proxy.url + "/query"
        c = SparqlClient(EndpointConfig(url=url, cache_dir=None, deadline=10),
                         sleep=waits.append)
        with pytest.raises(KgfactError) as err:
            c.select(TRIPLES)
    assert str(err.value) == (f"{url} gave up: waiting 30 s to retry would pass the 10 s query "
                              f"deadline; last error: HTTP 503 (query {NAME})")
    assert waits == []


def test_each_retry_prints_one_progress_line(mini_store):
    waits, lines = [], []
    upstream = mini_store.query_url.rsplit("/", 1)[0]
    with FaultProxy(upstream, [Fault("503", retry_after=4), Fault("500"), Fault("drop")]) as p:
        url = p.url + "/query"
        c = SparqlClient(EndpointConfig(url=url, cache_dir=None), sleep=waits.append,
                         progress=lines.append)
        assert len(c.select(TRIPLES)) == 3
    assert waits == [4.0, 2.0, 4.0]
    assert lines == [f"kgfact: {url} HTTP 503, retrying in 4 s (attempt 2 of 9)",
                     f"kgfact: {url} HTTP 500, retrying in 2 s (attempt 3 of 9)",
                     f"kgfact: {url} connection: RemoteDisconnected, retrying in 4 s "
                     "(attempt 4 of 9)"]


def test_build_prints_retries_even_when_quiet(mini_store, tmp_path, capsys):
    upstream = mini_store.query_url.rsplit("/", 1)[0]
    with FaultProxy(upstream, [Fault("503", retry_after=0)]) as proxy:
        url = proxy.url + "/query"
        assert main(["build", "--endpoint", url, "--run", str(tmp_path / "run"), "--quiet",
                     "--no-cache", "--relations", "P36", "--ood", "P30"]) == 0
    assert capsys.readouterr().err.splitlines() == [
        f"kgfact: {url} HTTP 503, retrying in 0 s (attempt 2 of 9)"]


@pytest.mark.timeout(60)
def test_build_ends_at_its_deadlines(tmp_path, capsys):
    with FaultProxy(DEAD, [Fault.every(1, "hang")]) as proxy:
        url = proxy.url + "/query"
        for flags, deadline in ((["--query-deadline", "1.5"], "1.5 s query deadline"),
                                (["--fetch-deadline", "1"], "1 s overall deadline")):
            code = main(["build", "--endpoint", url, "--run", str(tmp_path / "run"), "--quiet",
                         "--no-cache", "--relations", "P36", "--timeout", "0.4", *flags])
            err = capsys.readouterr().err
            assert code == 2 and "Traceback" not in err
            *retries, line = err.splitlines()
            assert all(r.startswith(f"kgfact: {url} no answer within the ") for r in retries)
            assert line.startswith(f"kgfact: error: {url} gave up") and deadline in line
            assert "last error: no answer within the " in line


def test_a_client_of_wikidata_without_a_contact_says_how_to_set_one(capsys):
    SparqlClient(EndpointConfig(url="https://query.wikidata.org/sparql"))  # sends nothing yet
    err = capsys.readouterr().err
    assert err == ("kgfact: Wikidata's User-Agent policy asks for a contact: set yours with "
                   "--user-agent 'my-study/1.0 (you@example.org)' (build.user_agent in a "
                   "config)\n")
    assert "github.com" not in USER_AGENT  # no address that may not exist
    SparqlClient(EndpointConfig(url="https://query.wikidata.org/sparql",
                                user_agent="my-study/1.0 (me@example.org)"))
    SparqlClient(EndpointConfig(url="http://127.0.0.1:1/query"))
    assert capsys.readouterr().err == ""
