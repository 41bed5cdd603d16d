"""The egress proxy against a hostile client on its socket: the Host header must name the URL's host, ports
are 80/443 unless an entry names one, a pipelined second request never reaches the server, and the same bounds
as the key proxy (lengths, slow heads, idle connections and the cap, memory). Servers on 127.0.0.1 (and ::1
where there is one); nothing leaves the machine."""

from __future__ import annotations

import socket
import socketserver
import threading
import time

import pytest

from tests.unit.test_keyproxy import MiB, PeakRss, read_all, send_body, status_of
from toren_action.sandbox.egress import MAX_RECORDED, EgressProxy

IPV6 = socket.has_ipv6
try:
    socket.socket(socket.AF_INET6).bind(("::1", 0))
except OSError:
    IPV6 = False


class RawServer:
    """Records the raw bytes of each connection (the first 64 KiB, and how many in all); answers 200 with the
    head it got once the head is in, and closes after 0.5 s of silence."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.seen: list[tuple[bytes, int]] = []
        rec = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self):
                conn, first, total, answered = self.request, b"", 0, False
                conn.settimeout(0.5)
                try:
                    while chunk := conn.recv(65536):
                        total += len(chunk)
                        if len(first) < 65536:
                            first += chunk
                        if not answered and b"\r\n\r\n" in first:
                            head = first.split(b"\r\n\r\n", 1)[0]
                            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(head), head))
                            answered = True
                except OSError:
                    pass
                rec.seen.append((first, total))

        class Server(socketserver.ThreadingTCPServer):
            address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
            daemon_threads = True
            allow_reuse_address = True

        self.server = Server((host, 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def site():
    s = RawServer()
    yield s
    s.stop()


def proxy_for(*entries: str, **kw) -> EgressProxy:
    return EgressProxy(tuple(entries), **kw).start()


def ask(proxy: EgressProxy, request: bytes, limit: float = 5) -> bytes:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(limit)
    s.connect(str(proxy.socket_path))
    s.sendall(request)
    try:
        return read_all(s, limit)
    finally:
        s.close()


def get(url: str, host: str | None, extra: str = "") -> bytes:
    return (f"GET {url} HTTP/1.1\r\n" + (f"Host: {host}\r\n" if host is not None else "") + extra
            + "Proxy-Connection: keep-alive\r\n\r\n").encode()


def test_plain_http_reaches_an_allowed_host_with_its_own_host_header(site):
    p = site.port
    proxy = proxy_for(f"127.0.0.1:{p}", f"localhost:{p}")
    try:
        for url, host in [(f"http://127.0.0.1:{p}/x?q=1", f"127.0.0.1:{p}"),
                          (f"http://LOCALHOST:{p}/x?q=1", f"localhost.:{p}"),  # case, a trailing dot
                          (f"http://localhost:{p}/x?q=1", f"LocalHost:{p}"),
                          (f"http://127.0.0.1:{p}/x?q=1", None)]:  # HTTP/1.0 style: the URL's host is sent
            answer = ask(proxy, get(url, host))
            assert status_of(answer) == 200, answer
            assert b"\r\n\r\nGET /x?q=1 HTTP/1.1\r\n" in answer  # origin-form upstream
            assert b"\r\nConnection: close" in answer and b"Proxy-Connection" not in answer
    finally:
        proxy.stop()
    assert len(site.seen) == 4


@pytest.mark.parametrize("host", ["evil.example", "pypi.org", "127.0.0.1", "127.0.0.1:1", "localhost:{p}",
                                  "127.0.0.2:{p}", "[::1]:{p}"])
def test_a_host_header_that_is_not_the_urls_host_is_refused(site, host):
    p = site.port
    proxy = proxy_for(f"127.0.0.1:{p}", f"localhost:{p}")
    try:
        answer = ask(proxy, get(f"http://127.0.0.1:{p}/", host.format(p=p)))
    finally:
        proxy.stop()
    assert status_of(answer) == 403 and b"Host header" in answer
    assert site.seen == []
    assert [r for r in proxy.refused if "Host:" in r]


@pytest.mark.parametrize("request_bytes, status", [
    (b"GET http://127.0.0.1:{p}/ HTTP/1.1\r\nHost: 127.0.0.1:{p}\r\nHost: evil.example\r\n\r\n", 400),
    (b"GET http://127.0.0.1:{p}/ HTTP/1.1\r\nHost: 127.0.0.1:{p}:1\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: 127.0.0.1:{p}\r\n\r\n", 400),                    # not a proxy request
    (b"GET https://127.0.0.1:{p}/ HTTP/1.1\r\nHost: 127.0.0.1:{p}\r\n\r\n", 400),
    (b"GET http://user@127.0.0.1:{p}/ HTTP/1.1\r\nHost: 127.0.0.1:{p}\r\n\r\n", 400),
    (b"GET http://127.0.0.1:{p}/ HTTP/1.1\r\nHost: 127.0.0.1:{p}\r\nContent-Length: -1\r\n\r\n", 400),
    (b"POST http://127.0.0.1:{p}/ HTTP/1.1\r\nHost: 127.0.0.1:{p}\r\nContent-Length: 10737418240\r\n\r\n", 413),
    (b"POST http://127.0.0.1:{p}/ HTTP/1.1\r\nHost: 127.0.0.1:{p}\r\nContent-Length: many\r\n\r\n", 400),
    (b"POST http://127.0.0.1:{p}/ HTTP/1.1\r\nHost: 127.0.0.1:{p}\r\nContent-Length: 5\r\n"
     b"Transfer-Encoding: chunked\r\n\r\n", 400),
    (b"GET http://127.0.0.1:{p}/ HTTP/1.1\r\n" + b"X: y\r\n" * 101 + b"\r\n", 431),
    (b"CONNECT 127.0.0.1 HTTP/1.1\r\n\r\n", 400),                                # no port
    (b"CONNECT 127.0.0.1:0 HTTP/1.1\r\n\r\n", 400),
    (b"CONNECT ::1:443 HTTP/1.1\r\n\r\n", 400),                                  # IPv6 without brackets
])
def test_malformed_requests_are_refused(site, request_bytes, status):
    proxy = proxy_for(f"127.0.0.1:{site.port}", "127.0.0.1", "[::1]")
    try:
        answer = ask(proxy, request_bytes.replace(b"{p}", str(site.port).encode()))
    finally:
        proxy.stop()
    assert status_of(answer) == status, answer
    assert site.seen == []


def test_a_pipelined_second_request_never_reaches_the_server(site):
    p = site.port
    proxy = proxy_for(f"127.0.0.1:{p}")
    try:
        answer = ask(proxy, get(f"http://127.0.0.1:{p}/a", f"127.0.0.1:{p}")
                     + b"GET /b HTTP/1.1\r\nHost: other-tenant.example\r\n\r\n")
    finally:
        proxy.stop()
    assert status_of(answer) == 200
    assert len(site.seen) == 1 and b"/b" not in site.seen[0][0] and b"other-tenant" not in site.seen[0][0]


def test_ports_are_80_and_443_unless_the_entry_names_one(site):
    p = site.port
    connect = f"CONNECT 127.0.0.1:{p} HTTP/1.1\r\nHost: 127.0.0.1:{p}\r\n\r\n".encode()
    for entries, status in [(("127.0.0.1",), 403), ((f"127.0.0.1:{p + 1}",), 403), ((f"localhost:{p}",), 403),
                            ((f"127.0.0.1:{p}",), 200)]:
        proxy = proxy_for(*entries)
        try:
            answer = ask(proxy, connect + b"PING through the tunnel\r\n\r\n")
        finally:
            proxy.stop()
        assert status_of(answer) == status, (entries, answer)
        if status == 200:  # the tunnel carried the bytes sent right after CONNECT
            assert b"PING through the tunnel" in answer
        else:
            assert f"127.0.0.1:{p}" in proxy.refused
    plain = proxy_for("127.0.0.1")
    try:
        assert status_of(ask(plain, get(f"http://127.0.0.1:{p}/", f"127.0.0.1:{p}"))) == 403
        # the default ports pass the check (nothing listens there, so the dial fails: 502, not 403)
        assert status_of(ask(plain, b"CONNECT 127.0.0.1:443 HTTP/1.1\r\n\r\n")) in (200, 502)
        assert status_of(ask(plain, get("http://127.0.0.1/", "127.0.0.1:80"))) in (200, 502)
    finally:
        plain.stop()
    assert len(site.seen) == 1


@pytest.mark.skipif(not IPV6, reason="no IPv6 loopback")
def test_ipv6_literals_match_by_address():
    site6 = RawServer("::1")
    p = site6.port
    try:
        for entries, status in [((f"[::1]:{p}",), 200), ((f"[0:0::0001]:{p}",), 200), ((f"127.0.0.1:{p}",), 403),
                                (("[::1]",), 403)]:
            proxy = proxy_for(*entries)
            try:
                answer = ask(proxy, f"CONNECT [::1]:{p} HTTP/1.1\r\n\r\nPING\r\n\r\n".encode())
                assert status_of(answer) == status, (entries, answer)
                answer = ask(proxy, get(f"http://[::1]:{p}/v6", f"[0::1]:{p}"))
                assert status_of(answer) == status, (entries, answer)
            finally:
                proxy.stop()
    finally:
        site6.stop()


def test_bounds_hold_for_egress_too(site):
    """Slow heads, idle connections past the cap, and bodies past the cap, as for the key proxy."""
    p = site.port
    before = threading.active_count()
    proxy = proxy_for(f"127.0.0.1:{p}", max_connections=8, idle_timeout=0.5)
    socks = []
    try:
        loris = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        loris.settimeout(5)
        loris.connect(str(proxy.socket_path))
        started = time.monotonic()
        loris.sendall(b"GET http://127.0.0.1/ HTTP/1.1\r\n")
        for _ in range(8):
            loris.sendall(b"X")
            time.sleep(0.1)
        assert status_of(read_all(loris)) == 408 and time.monotonic() - started < 3
        for _ in range(300):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(3)
            while True:
                try:
                    s.connect(str(proxy.socket_path))
                    break
                except BlockingIOError:
                    time.sleep(0.01)
            socks.append(s)
        assert threading.active_count() - before <= 8 + 2
        assert sum(read_all(s).startswith(b"HTTP/1.1 503") for s in socks[8:]) >= 300 - 8 - 4
        time.sleep(1)
        with PeakRss() as mem:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(5)
            s.connect(str(proxy.socket_path))
            s.sendall(f"POST http://127.0.0.1:{p}/up HTTP/1.1\r\nHost: 127.0.0.1:{p}\r\n"
                      "Transfer-Encoding: chunked\r\n\r\n".encode())
            assert send_body(s, 200 * MiB, chunked=True) < 200 * MiB
            assert status_of(read_all(s)) == 413
            s.close()
        assert mem.growth < 50, f"the host process grew by {mem.growth:.0f} MiB"
        assert status_of(ask(proxy, get(f"http://127.0.0.1:{p}/after", f"127.0.0.1:{p}"))) == 200
    finally:
        for s in socks:
            s.close()
        proxy.stop()


def test_what_is_recorded_stays_bounded_under_a_flood_of_refusals():
    proxy = proxy_for("pypi.org")
    try:
        for i in range(MAX_RECORDED + 50):
            assert status_of(ask(proxy, f"CONNECT host-{i}.example:443 HTTP/1.1\r\n\r\n".encode())) == 403
    finally:
        proxy.stop()
    assert len(proxy.refused) == MAX_RECORDED
