"""Egress allow-list: the agent's container has no network (``--network none``); its only way out is an HTTP
proxy on the host that lets through the hosts on the list and refuses every other.

The host side is a small forward proxy (CONNECT for HTTPS, absolute-URI requests for plain HTTP) on a unix
socket mounted into the container. Inside, a relay started by the launcher (a few lines of Node: the agent
images carry Node) listens on 127.0.0.1:3128 and pipes each connection to that socket; HTTPS_PROXY and
HTTP_PROXY point at it. TLS stays end to end: the proxy sees host names, never content.

An entry is a host name (``pypi.org``), a subdomain wildcard (``*.pythonhosted.org``), an IPv4 address or a
bracketed IPv6 address, each optionally with a port (``pypi.org:8443``, ``[::1]:8080``). Without a port an entry
allows 80 and 443 only; with one, that port only. A plain-HTTP request must carry a ``Host`` header naming the
same host and port as its URL (else 403: a CDN would route on the header), is forwarded with
``Connection: close``, one request per connection, its body framed and bounded as the key proxy's
(``sockets.HttpConnection``). What the proxy cannot see: inside a CONNECT tunnel, TLS's SNI and the HTTP Host
may name another site that the allowed address serves (domain fronting).
"""

from __future__ import annotations

import ipaddress
import select
import socket
import socketserver
from urllib.parse import urlsplit

from toren_action.core.errors import UsageError
from toren_action.sandbox.sockets import (
    CHUNK,
    IDLE_TIMEOUT_S,
    MAX_BODY_BYTES,
    MAX_CONNECTIONS,
    ClientGone,
    HttpConnection,
    HttpError,
    RequestHead,
    UnixSocketService,
)

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


#: The most distinct refused (and passed) destinations a proxy records for the job's log and events.
MAX_RECORDED = 200
#: The ports an entry without one allows.
DEFAULT_PORTS = (80, 443)
#: Seconds a tunnel (or a plain-HTTP answer) may carry nothing either way before the proxy closes it.
TUNNEL_IDLE_TIMEOUT_S = 600.0
HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection", "te",
              "trailer", "trailers", "transfer-encoding", "upgrade", "host", "content-length", "expect"}


def _split(authority: str) -> tuple[str, str | None]:
    """``host``, ``host:port``, ``[v6]``, ``[v6]:port`` -> (host, port text or None); a bare IPv6 address has no
    port. Brackets are removed."""
    if authority.startswith("["):
        host, sep, rest = authority[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError("a bracketed IPv6 address")
        return host, rest[1:] if rest else None
    if authority.count(":") > 1:
        return authority, None
    host, sep, port = authority.partition(":")
    return host, port if sep else None


def _port(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or not 0 < int(text) < 65536:
        raise ValueError(f"port {text!r}")
    return int(text)


def _norm(host: str) -> str:
    """Lowercase, no trailing dot, an IP address in its canonical form (::0001 and ::1 are one host)."""
    host = host.lower().rstrip(".")
    try:
        return ipaddress.ip_address(host).compressed
    except ValueError:
        return host


def parse(spec: str) -> tuple[str, ...]:
    """`allow=host1,host2:port,...` (`*.domain` for subdomains, `[v6]` for an IPv6 address): the entries the
    agent may reach, lowercased; an entry without a port allows 80 and 443."""
    spec = spec.strip()
    if not spec.startswith("allow="):
        raise UsageError("--egress", f"{spec!r}: use allow=HOST[:PORT][,HOST...] (e.g. allow=pypi.org,"
                                     "files.pythonhosted.org,example.com:8443)")
    entries = tuple(h.strip().lower() for h in spec[len("allow="):].split(",") if h.strip())
    for entry in entries:
        try:
            host, port = _split(entry)
            if port is not None:
                _port(port)
        except ValueError:
            raise UsageError("--egress", f"{entry!r}: a port is a number from 1 to 65535 (HOST:PORT, "
                                         "[IPv6]:PORT)") from None
        if entry.startswith("["):
            try:
                ipaddress.IPv6Address(host)
            except ValueError:
                raise UsageError("--egress", f"{entry!r}: not an IPv6 address in brackets") from None
            continue
        if ":" in host:
            raise UsageError("--egress", f"{entry!r}: put an IPv6 address in brackets ([::1] or [::1]:PORT)")
        labels = host.split(".")
        wild = labels[0] == "*"
        if wild:
            labels = labels[1:]
        if not host.isascii() or not all(part and part.replace("-", "").isalnum() for part in labels):
            raise UsageError("--egress", f"{entry!r} is not a host name (a leading *. allows subdomains)")
        if wild and len(labels) < 2:
            raise UsageError("--egress", f"{entry!r}: a wildcard needs a domain of two labels or more")
    if not entries:
        raise UsageError("--egress", "allow= needs at least one host")
    return entries


def allowed(host: str, port: int, entries: tuple[str, ...]) -> bool:
    """Whether ``host:port`` is on the list (entries as `parse` returns them)."""
    host = _norm(host)
    for entry in entries:
        name, entry_port = _split(entry)
        if (int(entry_port) != port) if entry_port else (port not in DEFAULT_PORTS):
            continue
        name = _norm(name)
        if host == name or (name.startswith("*.") and host.endswith(name[1:])):
            return True
    return False


def _authority(text: str, default_port: int | None) -> tuple[str, int]:
    """A request's ``host[:port]`` (CONNECT target, Host header) -> (normalised host, port); HttpError 400 if
    it is not one."""
    try:
        host, port = _split(text)
        if port is not None:
            number = _port(port)
        elif default_port is not None and ":" not in host:
            number = default_port
        else:
            raise ValueError("no port")
    except ValueError:
        raise HttpError(400, f"not a host and port: {text[:100]!r}") from None
    if not host or not host.isascii() or any(c in host for c in "/?#@ \t"):
        raise HttpError(400, f"not a host name: {host[:100]!r}")
    return _norm(host), number


def _shown(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return shown if port in DEFAULT_PORTS else f"{shown}:{port}"


class EgressProxy(UnixSocketService):
    """The allow-list proxy: bounded as ``sockets.UnixSocketService`` (``max_connections`` at once, a client idle
    for ``idle_timeout`` dropped); a tunnel or an answer silent both ways for ``tunnel_timeout`` is closed."""

    def __init__(self, hosts: tuple[str, ...], owner: tuple[int, int] | None = None,
                 max_connections: int = MAX_CONNECTIONS, idle_timeout: float = IDLE_TIMEOUT_S,
                 max_body_bytes: int = MAX_BODY_BYTES, tunnel_timeout: float = TUNNEL_IDLE_TIMEOUT_S) -> None:
        self.hosts = hosts
        #: What was refused and what passed, each at most MAX_RECORDED distinct entries (a flood of refused
        #: requests must not grow the host process).
        self.refused: set[str] = set()
        self.passed: set[str] = set()
        proxy = self

        def record(where: set[str], what: str) -> None:
            if len(where) < MAX_RECORDED:
                where.add(what)

        def check(host: str, port: int) -> None:
            if not allowed(host, port, proxy.hosts):
                record(proxy.refused, _shown(host, port))
                raise HttpError(403, f"egress to {_shown(host, port)} is not on the allow-list")

        def dial(host: str, port: int) -> socket.socket:
            try:
                upstream = socket.create_connection((host, port), timeout=30)
            except OSError:
                raise HttpError(502, f"cannot reach {_shown(host, port)}") from None
            upstream.settimeout(tunnel_timeout)
            record(proxy.passed, _shown(host, port))
            return upstream

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                client = HttpConnection(self.request, idle_timeout)
                try:
                    head = client.read_head()
                    if head is None:
                        return
                    if head.method == "CONNECT":
                        self._tunnel(client, head)
                    else:
                        self._forward(client, head)
                except HttpError as err:
                    client.refuse(err.status, f"toren: {err.message}\n".encode())
                except ClientGone:
                    pass

            def _tunnel(self, client: HttpConnection, head: RequestHead) -> None:
                host, port = _authority(head.target, None)
                check(host, port)
                upstream = dial(host, port)
                try:
                    client.send(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    upstream.sendall(client.take_buffered())  # a client may send its TLS hello at once
                except OSError:
                    upstream.close()
                    return
                _pipe(client.sock, upstream, tunnel_timeout)

            def _forward(self, client: HttpConnection, head: RequestHead) -> None:
                url = urlsplit(head.target)
                if url.scheme.lower() != "http" or not url.netloc:
                    raise HttpError(400, "a proxy request needs an absolute http:// URL (https goes by CONNECT)")
                if "@" in url.netloc:
                    raise HttpError(400, "no user information in the URL")
                host, port = _authority(url.netloc, 80)
                check(host, port)
                sent_hosts = head.get_all("host")
                if len(sent_hosts) > 1:
                    raise HttpError(400, "more than one Host header")
                if sent_hosts and _authority(sent_hosts[0], 80) != (host, port):
                    record(proxy.refused, f"{_shown(host, port)} (Host: {sent_hosts[0][:100]})")
                    raise HttpError(403, f"the Host header ({sent_hosts[0][:100]}) is not the URL's host "
                                         f"({_shown(host, port)})")
                framing = client.body_framing(head, max_body_bytes)
                named = head.tokens("connection")
                lines = [f"{head.method} {(url.path or '/') + (f'?{url.query}' if url.query else '')} HTTP/1.1",
                         f"Host: {url.netloc}"]
                lines += [f"{k}: {v}" for k, v in head.headers
                          if k.lower() not in HOP_BY_HOP and k.lower() not in named]
                if isinstance(framing, int):
                    lines.append(f"Content-Length: {framing}")
                elif framing == "chunked":
                    lines.append("Transfer-Encoding: chunked")
                lines.append("Connection: close")
                upstream = dial(host, port)
                try:
                    if framing is not None and "100-continue" in head.tokens("expect"):
                        client.send(b"HTTP/1.1 100 Continue\r\n\r\n")
                    try:
                        upstream.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
                        for piece in client.body(framing, max_body_bytes):
                            upstream.sendall(b"%x\r\n%s\r\n" % (len(piece), piece) if framing == "chunked" else piece)
                        if framing == "chunked":
                            upstream.sendall(b"0\r\n\r\n")
                    except OSError:
                        raise HttpError(502, f"{_shown(host, port)} broke off") from None
                    while True:  # the answer, as it comes, until the server closes (Connection: close)
                        try:
                            data = upstream.recv(CHUNK)
                        except OSError:
                            return
                        if not data:
                            return
                        client.send(data)
                finally:
                    upstream.close()

        super().__init__("egress", Handler, owner, max_connections=max_connections, idle_timeout=idle_timeout)


def _pipe(a: socket.socket, b: socket.socket, idle_timeout: float = TUNNEL_IDLE_TIMEOUT_S) -> None:
    socks = [a, b]
    try:
        while True:
            ready, _, _ = select.select(socks, [], [], idle_timeout)
            if not ready:
                return
            for s in ready:
                data = s.recv(CHUNK)
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
