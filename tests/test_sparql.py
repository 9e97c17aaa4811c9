"""The SPARQL client and query files against a real Oxigraph server, directly and through a
fault-injecting proxy."""

from __future__ import annotations


import re
from urllib.parse import parse_qs

import pandas as pd
import pyoxigraph
import pytest

from kgfact.data.fetch import FetchConfig, GraphFetcher
from kgfact.data.sparql import USER_AGENT, EndpointConfig, SparqlClient, render_query
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
