"""A fault-injecting HTTP reverse proxy on loopback, for testing clients against a hostile endpoint.

Tests put :class:`FaultProxy` between a SPARQL client and a real (local) endpoint and schedule
faults: rate limiting, server errors, slow answers, dropped connections, truncated bodies,
answers trickled a byte at a time, no answer at all, and any answer of the test's own making.
Standard library only. Usage::

    with FaultProxy("http://127.0.0.1:7878", [Fault("429", retry_after=2), Fault("drop")]) as proxy:
        client = SparqlClient(proxy.url + "/query")
        client.select(query)          # 1st request: 429, 2nd: dropped, 3rd: passed through
        assert [r.fault and r.fault.kind for r in proxy.requests] == ["429", "drop", None]

Fault schedule
    ``faults`` is a sequence consumed one entry per incoming request, in order. An entry is a
    :class:`Fault` or ``None`` (let that request through). Once the schedule is exhausted requests
    pass through, except for rules made with :meth:`Fault.every`, which hit every n-th request
    (counted over all requests the proxy has seen since the last :meth:`FaultProxy.set_faults`)
    whenever no scheduled entry applies. :meth:`FaultProxy.set_faults` replaces the schedule and
    the rules and restarts the count.

Fault kinds
    ``"429"``, ``"503"``  answer with that status and ``Retry-After: <retry_after>`` (the header is
                          left out when ``retry_after`` is ``None``); not forwarded.
    ``"500"``             answer 500; not forwarded.
    ``"slow"``            forward, then wait ``delay`` seconds before answering. Other requests
                          are served meanwhile (one daemon thread per connection).
    ``"drop"``            read the request, then close the connection without answering.
    ``"truncate"``        forward, send the status and headers with the full Content-Length but
                          only the first half of the body, then close.
    ``"trickle"``         forward, then send the whole answer (status line, headers and body)
                          one byte every ``delay`` seconds, until it is sent or the client
                          hangs up.
    ``"hang"``            read the request, then never answer: the connection stays open until
                          the client closes it or the proxy stops.
    ``"answer"``          wait ``delay`` seconds, then answer status ``code`` with ``body`` as
                          ``content_type`` (and ``Retry-After`` if given); not forwarded.

Forwarding keeps the method, path and query (appended to the upstream URL's own path, if any),
body and end-to-end headers; ``Host`` is set to the upstream's. Answers carry
``Connection: close``, so each request comes on its own connection. The proxy only listens on a
loopback address; :meth:`FaultProxy.stop` returns within about a second, closing any connection
still in progress.
"""

from __future__ import annotations

import http.client
import ipaddress
import logging
import select
import socket
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterable, Union
from urllib.parse import urlsplit

__all__ = ["Fault", "FaultProxy", "FaultRule", "RequestRecord", "KINDS"]

log = logging.getLogger(__name__)

KINDS = ("429", "500", "503", "slow", "drop", "truncate", "trickle", "hang", "answer")

# RFC 9110 section 7.6.1: connection-specific headers a proxy must not forward.
HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection",
    "te", "trailer", "trailers", "transfer-encoding", "upgrade",
})

_ERROR_BODIES = {
    429: b"Too Many Requests (injected by FaultProxy)\n",
    500: b"Internal Server Error (injected by FaultProxy)\n",
    503: b"Service Unavailable (injected by FaultProxy)\n",
}


@dataclass(frozen=True)
class Fault:
    """One injected fault; see the module docstring for what each ``kind`` does."""

    kind: str
    retry_after: int | None = None
    delay: float = 0.0
    code: int = 200       # "answer" only
    body: bytes = b""     # "answer" only
    content_type: str = "application/sparql-results+json"  # "answer" only

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; "
                             f"expected one of {', '.join(KINDS)}")
        ra = self.retry_after
        if ra is not None and (isinstance(ra, bool) or not isinstance(ra, int) or ra < 0):
            raise ValueError(f"retry_after must be a non-negative int (seconds), got {ra!r}")
        if self.delay < 0:
            raise ValueError(f"delay must be >= 0, got {self.delay!r}")
        if not 100 <= self.code <= 599:
            raise ValueError(f"code must be an HTTP status (100-599), got {self.code!r}")

    @property
    def status(self) -> int | None:
        """The status code this fault answers with, for the error kinds and ``"answer"``."""
        return int(self.kind) if self.kind.isdigit() else self.code if self.kind == "answer" \
            else None

    @classmethod
    def every(cls, n: int, kind: str, retry_after: int | None = None, delay: float = 0.0,
              **answer) -> FaultRule:
        """A rule injecting ``Fault(kind, ...)`` into the n-th, 2n-th, 3n-th... request."""
        return FaultRule(n, cls(kind, retry_after, delay, **answer))


@dataclass(frozen=True)
class FaultRule:
    """Apply ``fault`` to every ``n``-th request (1-based: requests n, 2n, ...)."""

    n: int
    fault: Fault

    def __post_init__(self) -> None:
        if isinstance(self.n, bool) or not isinstance(self.n, int) or self.n < 1:
            raise ValueError(f"Fault.every needs a positive int, got {self.n!r}")

    def applies(self, count: int) -> bool:
        return count % self.n == 0


ScheduleEntry = Union[Fault, FaultRule, None]


@dataclass
class RequestRecord:
    """What the proxy saw of one request and what it did with it."""

    method: str
    path: str                      # path and query, as the client sent them
    headers: http.client.HTTPMessage  # case-insensitive: record.headers["user-agent"]
    body: bytes
    fault: Fault | None            # the fault applied, or None for a passthrough
    upstream_status: int | None = None  # None if not forwarded or upstream unreachable
    status: int | None = None      # status sent to the client, once sent; None when dropped
    error: str | None = None       # why forwarding failed, if it did

    @property
    def user_agent(self) -> str | None:
        return self.headers.get("User-Agent")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(self, address, handler, proxy: FaultProxy):
        self.proxy = proxy
        self.active: set[socket.socket] = set()
        self.active_lock = threading.Lock()
        super().__init__(address, handler)

    def process_request(self, request, client_address):
        with self.active_lock:
            self.active.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request):
        with self.active_lock:
            self.active.discard(request)
        super().shutdown_request(request)

    def abort_active(self) -> None:
        """Shut down every client connection still open, waking handlers blocked on them."""
        with self.active_lock:
            conns = list(self.active)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def handle_error(self, request, client_address):
        if not self.proxy._stopping.is_set():
            log.debug("FaultProxy: error handling request from %s", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format, *args):  # noqa: A002 - signature of the base class
        log.debug("FaultProxy: " + format, *args)

    def _handle(self) -> None:
        proxy = self.server.proxy
        self.close_connection = True
        body = self._read_body()
        fault = proxy._next_fault()
        record = RequestRecord(self.command, self.path, self.headers, body, fault)
        proxy._record(record)

        kind = fault.kind if fault else None
        if kind == "drop":
            return  # the server closes the socket without a byte of response
        if kind == "hang":
            self._wait_for_hangup()
            return
        if kind == "answer":
            if not proxy._stopping.wait(fault.delay):
                self._send_simple(record, fault.code, fault.body, self._retry_after(fault),
                                  fault.content_type)
            return
        if fault is not None and fault.status is not None:
            self._send_error(record, fault)
            return

        response = self._forward(record)
        if kind == "slow" and proxy._stopping.wait(fault.delay):
            return  # stopping: give up on the client
        if response is None:
            self._send_simple(record, 502, b"Bad Gateway: upstream unreachable (FaultProxy)\n")
            return
        status, reason, headers, payload = response
        head = self.command == "HEAD"  # keeps upstream's Content-Length: there is no body to count
        headers = [(name, value) for name, value in headers
                   if name.lower() not in HOP_BY_HOP and (head or name.lower() != "content-length")]
        if not head:
            headers.append(("Content-Length", str(len(payload))))
        headers.append(("Connection", "close"))
        record.status = status
        if kind == "trickle":
            self._trickle(status, reason, headers, b"" if head else payload, fault.delay)
            return
        self.send_response_only(status, reason)
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        if not head:
            self.wfile.write(payload[: len(payload) // 2] if kind == "truncate" else payload)
        self.wfile.flush()

    do_GET = do_POST = do_HEAD = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _handle

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _forward(self, record: RequestRecord):
        """Send the request upstream; (status, reason, headers, body) or None if that failed."""
        proxy = self.server.proxy
        named = {h.strip().lower() for h in self.headers.get("Connection", "").split(",")}
        headers = [
            (name, value) for name, value in self.headers.items()
            if name.lower() not in HOP_BY_HOP | named | {"host", "content-length"}
        ]
        headers.append(("Host", proxy._upstream_netloc))
        if record.body or self.command in ("POST", "PUT", "PATCH"):
            headers.append(("Content-Length", str(len(record.body))))
        conn = http.client.HTTPConnection(proxy._upstream_host, proxy._upstream_port,
                                          timeout=proxy.upstream_timeout)
        try:
            conn.putrequest(self.command, proxy._upstream_path + self.path,
                            skip_host=True, skip_accept_encoding=True)
            for name, value in headers:
                conn.putheader(name, value)
            conn.endheaders(record.body or None)
            resp = conn.getresponse()
            payload = resp.read()
            record.upstream_status = resp.status
            return resp.status, resp.reason, resp.getheaders(), payload
        except (OSError, http.client.HTTPException) as exc:
            record.error = f"{type(exc).__name__}: {exc}"
            log.debug("FaultProxy: upstream request failed: %s", record.error)
            return None
        finally:
            conn.close()

    def _trickle(self, status: int, reason: str, headers, payload: bytes, delay: float) -> None:
        """Send a whole answer one byte every ``delay`` seconds, until done, the client hangs
        up or the proxy stops."""
        lines = [f"HTTP/1.1 {status} {reason}", *(f"{name}: {value}" for name, value in headers)]
        data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + payload
        for i in range(len(data)):
            if self.server.proxy._stopping.wait(delay):
                return
            try:
                self.wfile.write(data[i:i + 1])
                self.wfile.flush()
            except OSError:  # the client gave up
                return

    def _wait_for_hangup(self) -> None:
        """Block until the client closes the connection or the proxy stops."""
        while not self.server.proxy._stopping.wait(0.05):
            try:
                readable, _, _ = select.select([self.connection], [], [], 0)
                if readable and not self.connection.recv(1, socket.MSG_PEEK):
                    return
            except OSError:
                return

    @staticmethod
    def _retry_after(fault: Fault) -> list[tuple[str, str]]:
        return [] if fault.retry_after is None else [("Retry-After", str(fault.retry_after))]

    def _send_error(self, record: RequestRecord, fault: Fault) -> None:
        self._send_simple(record, fault.status, _ERROR_BODIES[fault.status],
                          self._retry_after(fault))

    def _send_simple(self, record: RequestRecord, status: int, body: bytes, extra=(),
                     content_type: str = "text/plain; charset=utf-8") -> None:
        self.send_response(status)
        for name, value in extra:
            self.send_header(name, value)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        record.status = status
        if self.command != "HEAD":
            self.wfile.write(body)
        self.wfile.flush()


class FaultProxy:
    """Reverse proxy from ``url`` to ``upstream`` that injects scheduled faults.

    ``requests`` lists a :class:`RequestRecord` for every request seen, in arrival order.
    """

    def __init__(self, upstream: str, faults: Iterable[ScheduleEntry] = (), host: str = "127.0.0.1",
                 port: int = 0, upstream_timeout: float = 30.0):
        parts = urlsplit(upstream)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"upstream must be an http:// URL, got {upstream!r}")
        if not _is_loopback(host):
            raise ValueError(f"FaultProxy only listens on loopback, not {host!r}")
        self.upstream = upstream
        self._upstream_host = parts.hostname
        self._upstream_port = parts.port or 80
        self._upstream_netloc = parts.netloc.rsplit("@", 1)[-1]
        self._upstream_path = parts.path.rstrip("/")
        self.upstream_timeout = upstream_timeout
        self.host = host
        self.port = port
        self.requests: list[RequestRecord] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.set_faults(faults)

    # schedule -------------------------------------------------------------------------------

    def set_faults(self, faults: Iterable[ScheduleEntry]) -> None:
        """Replace the fault schedule (and rules); the request count for rules restarts at 0."""
        schedule, rules = [], []
        for entry in faults:
            if isinstance(entry, FaultRule):
                rules.append(entry)
            elif entry is None or isinstance(entry, Fault):
                schedule.append(entry)
            else:
                raise TypeError(f"expected Fault, Fault.every(...) or None, got {entry!r}")
        with self._lock:
            self._schedule = schedule
            self._rules = rules
            self._count = 0

    @property
    def pending(self) -> int:
        """Scheduled entries not yet consumed."""
        with self._lock:
            return len(self._schedule)

    def _next_fault(self) -> Fault | None:
        with self._lock:
            self._count += 1
            if self._schedule:
                return self._schedule.pop(0)
            for rule in self._rules:
                if rule.applies(self._count):
                    return rule.fault
            return None

    def _record(self, record: RequestRecord) -> None:
        with self._lock:
            self.requests.append(record)

    # lifecycle ------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """Base URL of the proxy, e.g. ``http://127.0.0.1:54321`` (no trailing slash)."""
        if self._server is None:
            raise RuntimeError("FaultProxy is not running; call start() or use it in a with block")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> FaultProxy:
        if self._server is not None:
            return self
        self._stopping.clear()
        server_cls = _Server
        if ":" in self.host:
            server_cls = type("_Server6", (_Server,), {"address_family": socket.AF_INET6})
        self._server = server_cls((self.host, self.port), _Handler, self)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05},
                                        name=f"FaultProxy:{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and close connections in progress; returns within about a second."""
        server, thread = self._server, self._thread
        if server is None:
            return
        self._stopping.set()  # wakes "slow" handlers
        server.shutdown()
        server.abort_active()
        server.server_close()
        if thread is not None:
            thread.join(timeout=1.0)
        self._server = self._thread = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = self.url if self._server is not None else "stopped"
        return f"<FaultProxy {state} -> {self.upstream}, {len(self.requests)} requests>"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
