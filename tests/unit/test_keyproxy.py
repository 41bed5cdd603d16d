"""The key proxy's bounds against a hostile client on its socket: body lengths, chunked bodies, header size,
slow heads, idle connections and the connection cap, and that the host process's memory stays flat while it
is fed hundreds of MB. The upstream is a small HTTP server on 127.0.0.1 that counts and drops what it gets."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.fakes.base import drain_body
from toren_action.core.redact import Secret
from toren_action.sandbox.keyproxy import KeyProxy
from toren_action.sandbox.sockets import MAX_BODY_BYTES

KEY = "sk-ant-real-key-0123456789abcdef"
MiB = 1024 * 1024


class Upstream:
    """Answers POST with {"bytes": body size, "key": the x-api-key it got}; GET /v1/stream streams events,
    the first at once, the rest `gap` seconds apart once `go` is set."""

    def __init__(self, events: int = 5, gap: float = 0.0) -> None:
        self.requests: list[dict] = []
        self.go = threading.Event()
        up = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                n = drain_body(self)
                up.requests.append({"path": self.path, "bytes": n, "headers": dict(self.headers)})
                data = json.dumps({"bytes": n, "key": self.headers.get("x-api-key")}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                up.requests.append({"path": self.path, "bytes": 0, "headers": dict(self.headers)})
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Connection", "close")
                self.end_headers()
                for i in range(events):
                    if i == 1:
                        up.go.wait(10)
                    elif i:
                        time.sleep(gap)
                    self.wfile.write(f"event: ping\ndata: {i}\n\n".encode())
                    self.wfile.flush()
                self.close_connection = True

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def upstream():
    up = Upstream()
    yield up
    up.stop()


def make_proxy(upstream: Upstream, **kw) -> KeyProxy:
    return KeyProxy(upstream.url, Secret("ANTHROPIC_API_KEY", KEY), **kw).start()


def connect(proxy: KeyProxy, timeout: float = 5) -> socket.socket:
    for _ in range(200):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(timeout)
        try:
            s.connect(str(proxy.socket_path))
            return s
        except BlockingIOError:  # the listen backlog is full for a moment: the accepting thread drains it
            s.close()
            time.sleep(0.01)
    raise AssertionError("the proxy's backlog stayed full")


def read_all(s: socket.socket, limit: float = 5) -> bytes:
    """Everything until the proxy closes (which it must do within `limit` seconds)."""
    out, deadline = b"", time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            data = s.recv(65536)
        except TimeoutError:
            continue
        except ConnectionResetError:  # it closed with our bytes unread: what it said before still counts
            return out
        if not data:
            return out
        out += data
    raise AssertionError(f"the proxy did not close within {limit} s; got {out[:200]!r}")


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def rss_mib() -> float:
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


class PeakRss:
    """The process's peak resident size while the block runs, sampled every 5 ms."""

    def __enter__(self):
        self.base = self.peak = rss_mib()
        self._stop = threading.Event()

        def sample():
            while not self._stop.wait(0.005):
                self.peak = max(self.peak, rss_mib())

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_mib())

    @property
    def growth(self) -> float:
        return self.peak - self.base


def send_body(s: socket.socket, total: int, chunked: bool = False) -> int:
    """Send `total` bytes from one reused 1 MiB buffer (the client holds no body either); stop when the proxy
    stops reading. Returns how much went out."""
    block, sent = b"x" * MiB, 0
    try:
        while sent < total:
            n = min(MiB, total - sent)
            s.sendall(b"%x\r\n%s\r\n" % (n, block[:n]) if chunked else block[:n])
            sent += n
        if chunked:
            s.sendall(b"0\r\n\r\n")
    except OSError:
        pass
    return sent


def post_head(length: str | None = None, chunked: bool = False, extra: str = "") -> bytes:
    head = "POST /v1/messages HTTP/1.1\r\nHost: localhost\r\nx-api-key: stand-in\r\n"
    if length is not None:
        head += f"Content-Length: {length}\r\n"
    if chunked:
        head += "Transfer-Encoding: chunked\r\n"
    return (head + extra + "\r\n").encode()


def test_a_request_goes_through_with_the_real_key_and_keeps_its_connection(upstream):
    proxy = make_proxy(upstream)
    try:
        s = connect(proxy)
        for _ in range(2):  # keep-alive: two requests on one connection
            s.sendall(post_head("5") + b"hello")
            answer = b""
            while not answer.endswith(b"0\r\n\r\n"):
                answer += s.recv(65536)
            assert status_of(answer) == 200
            assert b'{"bytes": 5, "key": "%s"}' % KEY.encode() in answer
        s.sendall(post_head(chunked=True) + b"3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n")
        answer = b""
        while not answer.endswith(b"0\r\n\r\n"):
            answer += s.recv(65536)
        assert b'"bytes": 7' in answer
        s.close()
    finally:
        proxy.stop()
    assert len(upstream.requests) == 3 and all("stand-in" not in json.dumps(r) for r in upstream.requests)


@pytest.mark.parametrize("head, status", [
    (post_head("-1"), 400),                            # once read to EOF, holding it all
    (post_head(str(10 * 1024 * MiB)), 413),            # 10 GiB
    (post_head(str(MAX_BODY_BYTES + 1)), 413),         # one byte over the cap
    (post_head("abc"), 400),
    (post_head("1e9"), 400),
    (post_head("+5"), 400),
    (post_head(" 5, 6"), 400),
    (post_head("5", extra="Content-Length: 6\r\n"), 400),  # two lengths
    (post_head("5", chunked=True), 400),                # length and chunked: a smuggling shape
    (post_head(extra="Transfer-Encoding: gzip\r\n"), 501),
    (b"POST /v1/messages HTTP/1.1\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(101)) + b"\r\n", 431),
    (b"POST /v1/messages HTTP/1.1\r\nX-Big: " + b"a" * (70 * 1024) + b"\r\n\r\n", 431),
    (b"POST /v1/messages HTTP/1.1\r\nX-Big: " + b"a" * (70 * 1024), 431),  # never finished, but too big
    (b"GET http://evil.example/v1/x HTTP/1.1\r\n\r\n", 403),
    (b"GET /v1/x\x01 HTTP/1.1\r\n\r\n", 400),
    (b"GET /v1/x HTTP/1.1\r\nBad Name: x\r\n\r\n", 400),
    (b"GET /v1/x HTTP/1.1\r\nX-A: a\r\n folded\r\n\r\n", 400),
])
def test_a_bad_request_is_refused_at_once_and_closed(upstream, head, status):
    proxy = make_proxy(upstream)
    try:
        s = connect(proxy)
        started = time.monotonic()
        s.sendall(head)
        answer = read_all(s, limit=5)
        assert time.monotonic() - started < 3
        assert status_of(answer) == status, answer[:300]
        assert b"Connection: close" in answer
    finally:
        proxy.stop()
    assert upstream.requests == []  # nothing reached the model API


def test_huge_bodies_do_not_grow_the_host_process(upstream):
    """200 MiB each way: a 10 GiB Content-Length (refused before the body), a chunked body past the cap (streamed
    upstream until the cap, then refused), and a 200 MiB body under a raised cap (streamed through, never held)."""
    proxy = make_proxy(upstream)
    big = make_proxy(upstream, max_body_bytes=256 * MiB)
    try:
        with PeakRss() as mem:
            s = connect(proxy)
            s.sendall(post_head(str(10 * 1024 * MiB)))
            send_body(s, 200 * MiB)
            assert status_of(read_all(s)) == 413
            s = connect(proxy)
            s.sendall(post_head(chunked=True))
            sent = send_body(s, 200 * MiB, chunked=True)
            assert status_of(read_all(s)) == 413
            assert sent < 200 * MiB  # the proxy stopped reading soon after the cap
            s = connect(big)
            s.sendall(post_head(str(200 * MiB)))
            assert send_body(s, 200 * MiB) == 200 * MiB
            answer = b""
            while not answer.endswith(b"0\r\n\r\n"):
                answer += s.recv(65536)
            assert b'"bytes": %d' % (200 * MiB) in answer
            s.close()
    finally:
        proxy.stop()
        big.stop()
    assert mem.growth < 50, f"the host process grew by {mem.growth:.0f} MiB"


def test_a_slow_head_is_cut_off(upstream):
    proxy = make_proxy(upstream, idle_timeout=0.5)
    try:
        loris = connect(proxy)
        loris.sendall(b"POST /v1/messages HTTP/1.1\r\n")
        started = time.monotonic()

        def trickle():  # a byte every 0.1 s: never idle, never finished
            try:
                for _ in range(40):
                    loris.sendall(b"X")
                    time.sleep(0.1)
            except OSError:
                pass

        threading.Thread(target=trickle, daemon=True).start()
        first = loris.recv(65536)  # the answer comes at the deadline, however the bytes trickle
        assert time.monotonic() - started < 1.5
        assert status_of(first) == 408
        read_all(loris)
        silent = connect(proxy)  # connects and says nothing: closed after the idle timeout
        started = time.monotonic()
        assert read_all(silent, limit=3) == b""
        assert 0.3 < time.monotonic() - started < 2
        body = connect(proxy)  # a body that stops half way
        body.sendall(post_head("100") + b"x" * 10)
        assert read_all(body, limit=3) == b""
    finally:
        proxy.stop()


def test_idle_connections_are_capped_and_time_out(upstream):
    cap = 16
    before = threading.active_count()
    proxy = make_proxy(upstream, max_connections=cap, idle_timeout=1.0)
    socks = []
    try:
        started = time.monotonic()
        for _ in range(500):
            socks.append(connect(proxy))
        time.sleep(0.3)
        threads = threading.active_count() - before
        assert threads <= cap + 2, f"{threads} threads for {len(socks)} idle connections"
        busy = 0
        for s in socks[cap:]:
            s.settimeout(2)
            answer = read_all(s, limit=3)
            busy += answer.startswith(b"HTTP/1.1 503")
        assert busy >= 500 - cap - 4  # refused by the accepting thread, not queued
        assert time.monotonic() - started < 5
        time.sleep(1.5)  # the idle ones time out and give their slots back
        assert threading.active_count() - before <= 2
        s = connect(proxy)
        s.sendall(post_head("2") + b"ok")
        answer = b""
        while not answer.endswith(b"0\r\n\r\n"):
            answer += s.recv(65536)
        assert status_of(answer) == 200
        s.close()
    finally:
        for s in socks:
            s.close()
        proxy.stop()
    assert proxy.busy_refusals >= 500 - cap - 4


def test_a_streamed_answer_passes_as_it_comes_and_outlives_the_idle_timeout():
    up = Upstream(events=6, gap=0.25)
    proxy = make_proxy(up, idle_timeout=0.3)
    try:
        s = connect(proxy)
        s.sendall(b"GET /v1/stream HTTP/1.1\r\nHost: localhost\r\n\r\n")
        first = b""
        while b"data: 0" not in first:
            first += s.recv(65536)  # before the upstream has finished: streamed, not buffered whole
        up.go.set()
        rest = first
        while not rest.endswith(b"0\r\n\r\n"):
            data = s.recv(65536)
            assert data, rest
            rest += data
        assert all(b"data: %d" % i in rest for i in range(6))  # 1.25 s of answer, idle timeout 0.3 s
    finally:
        proxy.stop()
        up.stop()

