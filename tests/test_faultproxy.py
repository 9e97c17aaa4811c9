"""Tests of the fault-injecting proxy itself, against a tiny echo server on 127.0.0.1."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.faultproxy import Fault, FaultProxy

pytestmark = pytest.mark.timeout(30)

SPARQL_EMPTY = b'{"head": {"vars": ["x"]}, "results": {"bindings": []}}'


class _Echo(BaseHTTPRequestHandler):
    """Answers JSON describing the request; ``/status/N`` answers status N; ``/sparql`` answers
    an empty SPARQL JSON result."""

    protocol_version = "HTTP/1.1"

    def _handle(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.server.seen.append((self.command, self.path, dict(self.headers.items()), body))
        path = urllib.parse.urlsplit(self.path).path
        status, ctype = 200, "application/json"
        if path.startswith("/status/"):
            status = int(path.rsplit("/", 1)[1])
        if path == "/sparql":
            payload, ctype = SPARQL_EMPTY, "application/sparql-results+json"
        else:
            payload = json.dumps({"method": self.command, "path": self.path, "body": body.decode(),
                                  "filler": "x" * 200}).encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("X-Upstream", "echo")
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = _handle

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def upstream():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    server.daemon_threads = True
    server.seen = []
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def proxy(upstream):
    upstream.seen.clear()
    with FaultProxy(f"http://127.0.0.1:{upstream.server_address[1]}") as p:
        yield p


def get(url, timeout=5.0, **kw):
    req = urllib.request.Request(url, **kw)
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return resp.status, resp.headers, resp.read()


def status_of(url):
    try:
        return get(url)[0]
    except urllib.error.HTTPError as err:
        return err.code


# passthrough ---------------------------------------------------------------------------------


def test_get_passthrough_keeps_path_query_and_records(proxy, upstream):
    status, headers, body = get(proxy.url + "/query?query=SELECT%20%2A&format=json",
                                headers={"User-Agent": "kgfact-test/1.0"})
    assert status == 200
    assert headers["X-Upstream"] == "echo"
    assert json.loads(body)["path"] == "/query?query=SELECT%20%2A&format=json"
    method, path, sent_headers, _ = upstream.seen[-1]
    assert (method, path) == ("GET", "/query?query=SELECT%20%2A&format=json")
    assert sent_headers["User-Agent"] == "kgfact-test/1.0"
    assert sent_headers["Host"] == f"127.0.0.1:{upstream.server_address[1]}"
    [rec] = proxy.requests
    assert (rec.method, rec.path, rec.body, rec.fault) == (
        "GET", "/query?query=SELECT%20%2A&format=json", b"", None)
    assert rec.user_agent == "kgfact-test/1.0"
    assert rec.headers["user-agent"] == "kgfact-test/1.0"  # case-insensitive
    assert (rec.upstream_status, rec.status) == (200, 200)


def test_post_form_body_passthrough(proxy, upstream):
    form = urllib.parse.urlencode({"query": 'SELECT ?x WHERE { ?x ?p "é" }'}).encode()
    status, _, body = get(proxy.url + "/query", data=form,
                          headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 200
    assert json.loads(body)["body"] == form.decode()
    method, _, sent_headers, sent_body = upstream.seen[-1]
    assert (method, sent_body) == ("POST", form)
    assert sent_headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert proxy.requests[-1].body == form
    assert proxy.requests[-1].method == "POST"


def test_upstream_error_status_passes_through(proxy):
    with pytest.raises(urllib.error.HTTPError) as err:
        get(proxy.url + "/status/404")
    assert err.value.code == 404
    assert json.loads(err.value.read())["path"] == "/status/404"
    assert proxy.requests[-1].upstream_status == 404


def test_hop_by_hop_headers_not_forwarded(proxy, upstream):
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=5)
    conn.request("GET", "/hop", headers={"Connection": "keep-alive, X-Private", "X-Private": "1",
                                         "Keep-Alive": "timeout=5", "X-End-To-End": "yes"})
    resp = conn.getresponse()
    resp.read()
    conn.close()
    assert resp.status == 200
    assert resp.headers["Connection"] == "close"
    sent = {k.lower() for k in upstream.seen[-1][2]}
    assert "x-end-to-end" in sent
    assert not sent & {"x-private", "keep-alive"}


def test_unreachable_upstream_gives_502():
    with socket.socket() as s:  # a loopback port with nobody listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with FaultProxy(f"http://127.0.0.1:{port}") as p:
        assert status_of(p.url + "/query") == 502
        assert p.requests[0].upstream_status is None and p.requests[0].error


def test_client_user_agent_recorded(proxy):
    from kgfact.data.sparql import EndpointConfig, SparqlClient

    client = SparqlClient(EndpointConfig(proxy.url + "/sparql", cache_dir=None,
                                         user_agent="kgfact-test/2.0 (faultproxy)"))
    assert client.select("SELECT ?x WHERE { ?x ?p ?o }") == []
    assert proxy.requests[-1].user_agent == "kgfact-test/2.0 (faultproxy)"
    assert proxy.requests[-1].path == "/sparql"  # POSTed: the query is in the body


# faults --------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind,retry_after", [("429", 7), ("503", 3), ("500", None), ("429", None)])
def test_error_faults_answer_without_forwarding(proxy, upstream, kind, retry_after):
    proxy.set_faults([Fault(kind, retry_after=retry_after)])
    with pytest.raises(urllib.error.HTTPError) as err:
        get(proxy.url + "/query?x=1")
    assert err.value.code == int(kind)
    expected = None if retry_after is None else str(retry_after)
    assert err.value.headers.get("Retry-After") == expected
    assert err.value.read()  # a short body
    assert upstream.seen == []
    rec = proxy.requests[-1]
    assert rec.fault == Fault(kind, retry_after=retry_after)
    assert (rec.status, rec.upstream_status) == (int(kind), None)


def test_slow_times_out_client_without_blocking_next_request(proxy, upstream):
    proxy.set_faults([Fault("slow", delay=1.5)])
    t0 = time.monotonic()
    with pytest.raises((TimeoutError, urllib.error.URLError)) as err:
        get(proxy.url + "/query", timeout=0.5)
    if isinstance(err.value, urllib.error.URLError):
        assert isinstance(err.value.reason, TimeoutError)
    assert time.monotonic() - t0 < 1.2
    # the retry is served while the slow handler is still sleeping
    t1 = time.monotonic()
    assert get(proxy.url + "/query", timeout=0.5)[0] == 200
    assert time.monotonic() - t1 < 0.9  # well before the slow one (1.5 s) answers
    assert [r.fault and r.fault.kind for r in proxy.requests] == ["slow", None]
    assert proxy.requests[0].upstream_status == 200  # slow requests are forwarded
    assert len(upstream.seen) == 2


def test_slow_answers_after_delay_when_client_waits(proxy):
    proxy.set_faults([Fault("slow", delay=0.3)])
    t0 = time.monotonic()
    assert get(proxy.url + "/query", timeout=5)[0] == 200
    assert time.monotonic() - t0 >= 0.3


def test_drop_closes_without_response(proxy, upstream):
    proxy.set_faults([Fault("drop")])
    with pytest.raises((ConnectionError, http.client.RemoteDisconnected, urllib.error.URLError)):
        get(proxy.url + "/query", data=b"query=ASK%7B%7D")
    rec = proxy.requests[-1]
    assert (rec.fault.kind, rec.status, rec.upstream_status) == ("drop", None, None)
    assert rec.body == b"query=ASK%7B%7D"  # the request was read before the drop
    assert upstream.seen == []


def test_truncate_sends_half_the_body(proxy):
    _, _, full = get(proxy.url + "/query")
    proxy.set_faults([Fault("truncate")])
    with urllib.request.urlopen(proxy.url + "/query", timeout=5) as resp:
        assert resp.status == 200
        assert int(resp.headers["Content-Length"]) == len(full)
        with pytest.raises(http.client.IncompleteRead) as err:
            resp.read()
    assert len(err.value.partial) == len(full) // 2
    assert full.startswith(err.value.partial)
    assert proxy.requests[-1].upstream_status == 200


def test_schedule_consumed_in_order_then_passthrough(proxy, upstream):
    proxy.set_faults([Fault("429", retry_after=1), Fault("500"), None, Fault("503", retry_after=2)])
    assert proxy.pending == 4
    statuses = [status_of(proxy.url + f"/q{i}") for i in range(6)]
    assert statuses == [429, 500, 200, 503, 200, 200]
    assert proxy.pending == 0
    assert [r.path for r in proxy.requests] == [f"/q{i}" for i in range(6)]
    kinds = [r.fault and r.fault.kind for r in proxy.requests]
    assert kinds == ["429", "500", None, "503", None, None]
    assert [r.upstream_status for r in proxy.requests] == [None, None, 200, None, 200, 200]
    assert [p for _, p, _, _ in upstream.seen] == ["/q2", "/q4", "/q5"]

    proxy.set_faults([Fault("500")])  # replaces the schedule; records are kept
    assert [status_of(proxy.url + "/r") for _ in range(2)] == [500, 200]
    assert len(proxy.requests) == 8


def test_every_rule_after_schedule(proxy):
    proxy.set_faults([Fault("503", retry_after=1), Fault.every(3, "500")])
    statuses = [status_of(proxy.url + "/q") for _ in range(7)]
    # request 1 takes the scheduled 503; the rule then hits requests 3 and 6
    assert statuses == [503, 200, 500, 200, 200, 500, 200]


def test_answer_is_made_up_without_forwarding(proxy, upstream):
    proxy.set_faults([Fault("answer", code=418, body=b'{"x": [1]}', retry_after=5,
                            content_type="application/json"),
                      Fault("answer", body=SPARQL_EMPTY, delay=0.3)])
    with pytest.raises(urllib.error.HTTPError) as err:
        get(proxy.url + "/query")
    assert err.value.code == 418 and err.value.read() == b'{"x": [1]}'
    assert err.value.headers["Content-Type"] == "application/json"
    assert err.value.headers["Retry-After"] == "5"
    t0 = time.monotonic()
    status, headers, body = get(proxy.url + "/query")
    assert time.monotonic() - t0 >= 0.3
    assert (status, headers["Content-Type"], body) == (200, "application/sparql-results+json",
                                                       SPARQL_EMPTY)
    assert upstream.seen == []
    assert [(r.status, r.upstream_status) for r in proxy.requests] == [(418, None), (200, None)]


def test_trickle_sends_the_whole_answer_a_byte_at_a_time(proxy):
    _, _, full = get(proxy.url + "/query")
    proxy.set_faults([Fault("trickle", delay=0.5), Fault("trickle", delay=0.001)])
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as sock:
        sock.sendall(b"GET /query HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(100) == b"H"  # the status line comes a byte at a time too
    status, headers, body = get(proxy.url + "/query")
    assert (status, headers["X-Upstream"], body) == (200, "echo", full)
    assert [r.upstream_status for r in proxy.requests] == [200, 200, 200]


def test_hang_never_answers_and_lets_go_when_the_client_does(proxy, upstream):
    proxy.set_faults([Fault("hang")])
    with pytest.raises((TimeoutError, urllib.error.URLError)) as err:
        get(proxy.url + "/query", data=b"query=ASK%7B%7D", timeout=0.5)
    if isinstance(err.value, urllib.error.URLError):
        assert isinstance(err.value.reason, TimeoutError)
    rec = proxy.requests[-1]
    assert (rec.fault.kind, rec.status, rec.body) == ("hang", None, b"query=ASK%7B%7D")
    assert upstream.seen == []
    deadline = time.monotonic() + 5  # its handler ends once the client has hung up
    while proxy._server.active and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not proxy._server.active


# lifecycle and validation -------------------------------------------------------------------


def test_stop_is_quick_with_slow_request_in_flight(upstream):
    p = FaultProxy(f"http://127.0.0.1:{upstream.server_address[1]}", [Fault("slow", delay=30)])
    p.start()
    url = p.url
    outcome = []

    def call():
        try:
            outcome.append(get(url + "/q", timeout=10))
        except Exception as exc:  # noqa: BLE001 - any failure is the expected outcome here
            outcome.append(exc)

    client = threading.Thread(target=call, daemon=True)
    client.start()
    deadline = time.monotonic() + 5
    while not p.requests and time.monotonic() < deadline:
        time.sleep(0.01)
    t0 = time.monotonic()
    p.stop()
    assert time.monotonic() - t0 < 1.0
    client.join(timeout=2)
    assert not client.is_alive()  # the in-flight connection was closed, not left hanging
    assert isinstance(outcome[0],
                      (ConnectionError, http.client.HTTPException, urllib.error.URLError))
    with pytest.raises((ConnectionError, urllib.error.URLError)):
        get(url + "/q", timeout=1)
    with pytest.raises(RuntimeError):
        p.url


def test_listens_on_loopback_only():
    with pytest.raises(ValueError):
        FaultProxy("http://127.0.0.1:1", host="0.0.0.0")
    with FaultProxy("http://127.0.0.1:1") as p:
        assert p.url.startswith("http://127.0.0.1:") and p.port > 0


@pytest.mark.parametrize("bad", [lambda: Fault("404"), lambda: Fault("429", retry_after=-1),
                                 lambda: Fault("slow", delay=-1), lambda: Fault.every(0, "500"),
                                 lambda: Fault("answer", code=99)])
def test_invalid_faults_rejected(bad):
    with pytest.raises(ValueError):
        bad()
