"""What the key proxy and the egress proxy send on and what they answer, request by request: which headers
reach the server and which are dropped, the key put in and never shown to the client, the upstream's path,
the upstream's own errors passed through as they are and an unreachable upstream answered 502. (Bounds and
hostile framing: test_keyproxy.py and test_egress_proxy.py.) Servers on 127.0.0.1; nothing leaves the machine."""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.unit.test_egress_proxy import RawServer, ask
from tests.unit.test_keyproxy import KEY, connect, read_all, status_of
from toren_action.core.redact import Secret
from toren_action.sandbox.egress import EgressProxy
from toren_action.sandbox.keyproxy import KeyProxy


class Recorder:
    """Records each request (method, path, headers, body); answers by path: /…/status/N with N and a JSON
    error body, /…/empty with 204, anything else 200 with a JSON body that echoes the key it got."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        rec = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _any(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                rec.requests.append({"method": self.command, "path": self.path, "body": body,
                                     "headers": [(k.lower(), v) for k, v in self.headers.items()]})
                if "/status/" in self.path:
                    status = int(self.path.rsplit("/", 1)[1])
                    data = json.dumps({"type": "error", "error": {"type": "rate_limit_error"}}).encode()
                elif self.path.endswith("/empty"):
                    self.send_response(204)
                    self.send_header("X-Upstream", "yes")
                    self.end_headers()
                    return
                else:
                    status, data = 200, json.dumps({"key": self.headers.get("x-api-key")}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Retry-After", "7")
                self.send_header("Keep-Alive", "timeout=5")  # hop-by-hop: not passed on
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = _any

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def upstream():
    rec = Recorder()
    yield rec
    rec.stop()


def exchange(proxy: KeyProxy, request: bytes) -> bytes:
    """One request with Connection: close; the whole answer, chunked framing and all."""
    s = connect(proxy)
    try:
        s.sendall(request)
        return read_all(s)
    finally:
        s.close()


def body_of(answer: bytes) -> bytes:
    """The body of a chunked answer, de-chunked."""
    rest, out = answer.split(b"\r\n\r\n", 1)[1], b""
    while True:
        size, rest = rest.split(b"\r\n", 1)
        n = int(size, 16)
        if not n:
            return out
        out, rest = out + rest[:n], rest[n + 2:]


def headers_of(answer: bytes) -> dict[str, str]:
    lines = answer.split(b"\r\n\r\n", 1)[0].decode().split("\r\n")[1:]
    return {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}


REQUEST = (b"POST /v1/messages?beta=true HTTP/1.1\r\nHost: localhost\r\nContent-Length: 4\r\n"
           b"x-api-key: stand-in\r\nAuthorization: Bearer stand-in\r\nx-goog-api-key: stand-in\r\n"
           b"anthropic-version: 2023-06-01\r\nanthropic-beta: tools\r\nUser-Agent: claude-cli/2\r\n"
           b"Proxy-Authorization: Basic c3RhbmQtaW4=\r\nConnection: close, X-Drop-Me\r\nX-Drop-Me: 1\r\n"
           b"TE: trailers\r\nUpgrade: h2c\r\n\r\nping")


def test_the_key_goes_in_the_client_credentials_and_hop_by_hop_headers_do_not(upstream):
    proxy = KeyProxy(upstream.url, Secret("ANTHROPIC_API_KEY", KEY)).start()
    try:
        answer = exchange(proxy, REQUEST)
    finally:
        proxy.stop()
    assert status_of(answer) == 200
    [got] = upstream.requests
    assert (got["method"], got["path"], got["body"]) == ("POST", "/v1/messages?beta=true", b"ping")
    names = [k for k, _ in got["headers"]]
    assert dict(got["headers"]) == {
        "x-api-key": KEY, "host": upstream.url.removeprefix("http://"), "content-length": "4",
        "anthropic-version": "2023-06-01", "anthropic-beta": "tools", "user-agent": "claude-cli/2",
        "accept-encoding": "identity"}  # the last one http.client adds
    assert names.count("x-api-key") == 1 and "stand-in" not in json.dumps(got["headers"])


def test_the_profiles_header_and_value_form_are_used(upstream):
    proxy = KeyProxy(upstream.url, Secret("OPENAI_API_KEY", KEY), header="Authorization",
                     value="Bearer {key}").start()
    try:
        assert status_of(exchange(proxy, REQUEST)) == 200
    finally:
        proxy.stop()
    headers = dict(upstream.requests[0]["headers"])
    assert headers["authorization"] == f"Bearer {KEY}" and "x-api-key" not in headers


def test_the_upstreams_path_prefixes_requests_or_bounds_them(upstream):
    prefixed = KeyProxy(upstream.url + "/api/anthropic/", Secret("K", KEY)).start()
    bounded = KeyProxy(upstream.url + "/v1beta/openai", Secret("K", KEY), keep_path=False).start()
    try:
        get = b"GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        assert status_of(exchange(prefixed, get % b"/v1/models")) == 200
        assert status_of(exchange(bounded, get % b"/v1beta/openai/chat/completions")) == 200
        refused = exchange(bounded, get % b"/v1beta/other")
        assert status_of(refused) == 403 and b"/v1beta/openai/..." in refused
        assert status_of(exchange(prefixed, get % b"/admin")) == 403
    finally:
        prefixed.stop()
        bounded.stop()
    assert [r["path"] for r in upstream.requests] == ["/api/anthropic/v1/models", "/v1beta/openai/chat/completions"]


def test_the_upstreams_errors_pass_through_as_they_are(upstream):
    proxy = KeyProxy(upstream.url, Secret("K", KEY)).start()
    try:
        answer = exchange(proxy, b"POST /v1/status/429 HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n"
                                 b"Connection: close\r\n\r\n")
        empty = exchange(proxy, b"DELETE /v1/empty HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    finally:
        proxy.stop()
    assert status_of(answer) == 429 and answer.startswith(b"HTTP/1.1 429 Too Many Requests\r\n")
    headers = headers_of(answer)
    assert headers["retry-after"] == "7" and headers["transfer-encoding"] == "chunked"
    assert headers["connection"] == "close" and "keep-alive" not in headers
    assert json.loads(body_of(answer)) == {"type": "error", "error": {"type": "rate_limit_error"}}
    assert status_of(empty) == 204 and headers_of(empty)["x-upstream"] == "yes"
    assert "transfer-encoding" not in headers_of(empty) and empty.endswith(b"\r\n\r\n")  # no body at all


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_model_api_is_answered_at_once_with_the_cause_and_never_shows_the_key():
    """Connection refused at the model API: no 502 that the CLI would retry for a minute (issue 14), but at once
    a status CLIs do not retry, saying "connection refused" and the URL; the proxy keeps the cause for the job."""
    from toren_action.sandbox.keyproxy import UNREACHABLE_STATUS

    port = free_port()
    proxy = KeyProxy(f"http://127.0.0.1:{port}", Secret("K", KEY)).start()
    try:
        answer = exchange(proxy, REQUEST)
    finally:
        proxy.stop()
    assert status_of(answer) == UNREACHABLE_STATUS and b"Connection: close" in answer
    assert 400 <= UNREACHABLE_STATUS < 500 and UNREACHABLE_STATUS not in (408, 409, 429)  # what CLIs retry
    error = json.loads(answer.split(b"\r\n\r\n", 1)[1])
    assert error["error"]["type"] == "proxy_error"
    assert error["error"]["message"] == ("the key proxy cannot connect to the model API: connection refused "
                                         f"(http://127.0.0.1:{port})")
    assert proxy.unreachable == f"connection refused (http://127.0.0.1:{port})"
    assert KEY.encode() not in answer


@pytest.mark.parametrize("request_line, status", [(b"PATCH /v1/x", 501), (b"GET /v2/x", 403), (b"GET /", 403)])
def test_methods_and_paths_outside_the_model_api_are_refused_with_json(upstream, request_line, status):
    proxy = KeyProxy(upstream.url, Secret("K", KEY)).start()
    try:
        answer = exchange(proxy, request_line + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    finally:
        proxy.stop()
    assert status_of(answer) == status and upstream.requests == []
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]["type"] == "proxy_error"
    assert KEY.encode() not in answer


def test_a_bad_upstream_url_is_refused_at_once():
    for url in ("ftp://api.example", "https:///v1", "api.example"):
        with pytest.raises(ValueError, match="not an http"):
            KeyProxy(url, Secret("K", KEY))


# -- the egress proxy --------------------------------------------------------------------------------------

@pytest.fixture
def site():
    s = RawServer()
    yield s
    s.stop()


def test_egress_forwards_the_clients_headers_and_body_but_not_its_proxy_credentials(site):
    p = site.port
    proxy = EgressProxy((f"127.0.0.1:{p}",)).start()
    try:
        answer = ask(proxy, f"POST http://127.0.0.1:{p}/upload?x=1 HTTP/1.1\r\nHost: 127.0.0.1:{p}\r\n"
                            "User-Agent: pip/24\r\nAccept: */*\r\nProxy-Authorization: Basic c2VjcmV0\r\n"
                            "Proxy-Connection: keep-alive\r\nConnection: X-Hop\r\nX-Hop: 1\r\n"
                            "Content-Length: 5\r\n\r\nhello".encode())
        chunked = ask(proxy, f"PUT http://127.0.0.1:{p}/c HTTP/1.1\r\nHost: 127.0.0.1:{p}\r\n"
                             "Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n".encode())
    finally:
        proxy.stop()
    assert status_of(answer) == 200 and status_of(chunked) == 200
    [sent] = [first for first, _ in site.seen if first.startswith(b"POST")]  # what the server got, as bytes
    head, body = sent.split(b"\r\n\r\n", 1)
    lines = head.decode().split("\r\n")
    assert lines[0] == "POST /upload?x=1 HTTP/1.1"
    assert sorted(lines[1:]) == sorted([f"Host: 127.0.0.1:{p}", "User-Agent: pip/24", "Accept: */*",
                                        "Content-Length: 5", "Connection: close"])
    assert body == b"hello"
    [put] = [first for first, _ in site.seen if first.startswith(b"PUT")]
    assert put.startswith(b"PUT /c HTTP/1.1\r\n") and b"Transfer-Encoding: chunked\r\n" in put
    assert put.endswith(b"\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
    assert proxy.passed == {f"127.0.0.1:{p}"} and proxy.refused == set()


def test_egress_answers_502_for_an_allowed_host_that_does_not_answer():
    port = free_port()
    proxy = EgressProxy((f"127.0.0.1:{port}",)).start()
    try:
        connect_answer = ask(proxy, f"CONNECT 127.0.0.1:{port} HTTP/1.1\r\n\r\n".encode())
        get_answer = ask(proxy, f"GET http://127.0.0.1:{port}/ HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
    finally:
        proxy.stop()
    for answer in (connect_answer, get_answer):
        assert status_of(answer) == 502 and f"toren: cannot reach 127.0.0.1:{port}".encode() in answer
    assert proxy.passed == set() and proxy.refused == set()  # allowed, but nothing passed
