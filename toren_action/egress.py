"""Egress allow-list: the agent's container has no network (``--network none``); its only way out is an HTTP
proxy on the host that lets through the hosts on the list and refuses every other.

The host side is a small forward proxy (CONNECT for HTTPS, absolute-URI requests for plain HTTP) on a unix
socket mounted into the container. Inside, a relay started by the launcher (a few lines of Node: the agent
images carry Node) listens on 127.0.0.1:3128 and pipes each connection to that socket; HTTPS_PROXY and
HTTP_PROXY point at it. TLS stays end to end: the proxy sees host names, never content.
"""

from __future__ import annotations

import select
import socket
import socketserver
from urllib.parse import urlsplit

from toren_action.errors import UsageError
from toren_action.sockets import UnixSocketService

RELAY_PORT = 3128
#: `node relay.js PORT SOCKET`: loopback PORT (IPv4 and IPv6, never another interface) -> a unix socket.
RELAY_JS = """\
// Toren's relay: the container's loopback port argv[2] -> the host's proxy on the unix socket argv[3].
const net = require('net');
for (const host of ['127.0.0.1', '::1']) {
  const server = net.createServer((c) => {
    const u = net.connect(process.argv[3]);
    c.pipe(u); u.pipe(c);
    c.on('error', () => u.destroy()); u.on('error', () => c.destroy());
  });
  server.on('error', () => {});  // no IPv6 loopback: IPv4 alone
  server.listen(Number(process.argv[2]), host);
}
"""


def parse(spec: str) -> tuple[str, ...]:
    """`allow=host1,host2` (or `none`/`open`): the hosts the agent may reach."""
    spec = spec.strip()
    if not spec.startswith("allow="):
        raise UsageError("--egress", f"{spec!r}: use allow=HOST[,HOST...] (e.g. allow=api.anthropic.com,pypi.org)")
    hosts = tuple(h.strip().lower() for h in spec[len("allow="):].split(",") if h.strip())
    for host in hosts:
        if not all(part and (part.replace("-", "").isalnum() or part == "*") for part in host.split(".")):
            raise UsageError("--egress", f"{host!r} is not a host name (a leading *. allows subdomains)")
    if not hosts:
        raise UsageError("--egress", "allow= needs at least one host")
    return hosts


def allowed(host: str, hosts: tuple[str, ...]) -> bool:
    host = host.lower().rstrip(".")
    return any(host == h or (h.startswith("*.") and host.endswith(h[1:])) for h in hosts)


class EgressProxy(UnixSocketService):
    def __init__(self, hosts: tuple[str, ...], owner: tuple[int, int] | None = None) -> None:
        self.hosts = hosts
        self.refused: list[str] = []
        self.passed: list[str] = []
        proxy = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                conn: socket.socket = self.request
                head = b""
                while b"\r\n\r\n" not in head and len(head) < 65536:
                    chunk = conn.recv(4096)
                    if not chunk:
                        return
                    head += chunk
                line = head.split(b"\r\n", 1)[0].decode("latin-1")
                parts = line.split()
                if len(parts) != 3:
                    return
                method, target = parts[0], parts[1]
                if method == "CONNECT":
                    host, _, port = target.rpartition(":")
                    rest = b""
                else:
                    url = urlsplit(target)
                    host, port = url.hostname or "", str(url.port or 80)
                    path = (url.path or "/") + (f"?{url.query}" if url.query else "")
                    rest = head.replace(target.encode(), path.encode(), 1)
                host = host.strip("[]")
                if not allowed(host, proxy.hosts):
                    proxy.refused.append(host)
                    conn.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n"
                                 + f"toren: egress to {host} is not on the allow-list\n".encode())
                    return
                try:
                    upstream = socket.create_connection((host, int(port)), timeout=30)
                except (OSError, ValueError):
                    conn.sendall(b"HTTP/1.1 502 Bad Gateway\r\nConnection: close\r\n\r\n")
                    return
                proxy.passed.append(host)
                if method == "CONNECT":
                    conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                else:
                    upstream.sendall(rest)
                _pipe(conn, upstream)

        super().__init__("egress", Handler, owner)


def _pipe(a: socket.socket, b: socket.socket) -> None:
    socks = [a, b]
    try:
        while True:
            ready, _, _ = select.select(socks, [], [], 600)
            if not ready:
                return
            for s in ready:
                data = s.recv(65536)
                if not data:
                    return
                (b if s is a else a).sendall(data)
    except OSError:
        return
    finally:
        for s in socks:
            try:
                s.close()
            except OSError:
                pass
