"""The model-API key proxy: the API key stays in Toren's process on the host, never in the agent's container.

It listens on a unix socket in a private directory, mounted into the container; the CLI talks HTTP over it
(Claude Code: ANTHROPIC_UNIX_SOCKET), or, for CLIs that speak only TCP (Gemini CLI, Codex, Qwen Code), through a
relay on the container's loopback that their base URL points at. For each request the proxy drops whatever
credentials the client sent, adds the real key, and forwards to the one configured API origin only (the profile's
base-URL variable, e.g. ANTHROPIC_BASE_URL, or
https://api.anthropic.com); responses, streamed server-sent events included, are passed back as they arrive. So
the agent can run with ``--network none`` and still reach its model, and there is no key in the container to
`cat` and exfiltrate.
"""

from __future__ import annotations

import http.client
import json
import socketserver
import ssl
from urllib.parse import urlsplit

from toren_action.core.redact import Secret
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

HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection", "te",
              "trailer", "trailers", "transfer-encoding", "upgrade", "host", "content-length", "expect"}
CREDENTIAL_HEADERS = {"x-api-key", "authorization", "x-goog-api-key"}
ALLOWED_PATH_PREFIX = "/v1"
METHODS = {"GET", "POST", "PUT", "DELETE"}
#: Seconds the model API may send nothing before the proxy gives up on it (an idle read, never a total: a
#: streamed answer may take many minutes as long as it keeps coming).
UPSTREAM_IDLE_TIMEOUT_S = 600.0


#: The status of an answer when the model API cannot even be connected to: a 4xx that CLIs do not retry (they
#: retry 5xx, 408, 409 and 429 for a minute or more), so the agent stops within seconds and the job says why.
UNREACHABLE_STATUS = 421
#: Seconds a connect to the model API may take (a host that drops packets).
CONNECT_TIMEOUT_S = 30.0


def connect_failure(exc: BaseException) -> str:
    """A connect failure in words: "connection refused", "no such host", "timed out", a TLS failure."""
    import socket

    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, socket.gaierror):
        return "no such host"
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return "connection timed out"
    if isinstance(exc, ssl.SSLError):
        return f"TLS failed: {getattr(exc, 'reason', None) or exc.__class__.__name__}"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return exc.__class__.__name__


class KeyProxy(UnixSocketService):
    """A threaded HTTP/1.1 server on a unix socket that adds the key and forwards to one origin.

    Requests are read with the bounds of ``sockets.HttpConnection`` (head size and deadline, a body of at most
    ``max_body_bytes``, streamed upstream in 64 KiB pieces, never held whole); responses are streamed back as
    they arrive. At most ``max_connections`` clients at once; a client idle for ``idle_timeout`` is dropped."""

    def __init__(self, upstream: str, key: Secret, header: str = "x-api-key",
                 owner: tuple[int, int] | None = None, value: str = "{key}", keep_path: bool = True,
                 max_connections: int = MAX_CONNECTIONS, idle_timeout: float = IDLE_TIMEOUT_S,
                 max_body_bytes: int = MAX_BODY_BYTES, upstream_timeout: float = UPSTREAM_IDLE_TIMEOUT_S) -> None:
        """``keep_path``: prefix each request with the upstream URL's path (the CLI's base URL is the bare
        socket); otherwise the CLI's base URL already carries that path and requests are forwarded as they
        are, but only under it."""
        parts = urlsplit(upstream.rstrip("/"))
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {upstream}")
        hostname = parts.hostname
        self.requests = 0
        #: Why the model API could not be connected to (refused, no such host, TLS), the last time it was not:
        #: such a failure is answered at once with a status no CLI retries, and the job reports this cause.
        self.unreachable: str | None = None
        proxy = self
        base_path = parts.path if keep_path else ""
        allowed_prefix = ALLOWED_PATH_PREFIX if keep_path else (parts.path.rstrip("/") + "/" if parts.path else "/")

        def connect() -> http.client.HTTPConnection:
            """A connection to the model API, not yet connected: its connect waits CONNECT_TIMEOUT_S at most."""
            timeout = min(CONNECT_TIMEOUT_S, upstream_timeout)
            if parts.scheme == "https":
                return http.client.HTTPSConnection(hostname, parts.port or 443, timeout=timeout,
                                                   context=ssl.create_default_context())
            return http.client.HTTPConnection(hostname, parts.port or 80, timeout=timeout)

        def error_body(message: str) -> bytes:
            return json.dumps({"type": "error", "error": {"type": "proxy_error", "message": message}}).encode()

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                client = HttpConnection(self.request, idle_timeout)
                try:
                    while (head := client.read_head()) is not None and self._exchange(client, head):
                        pass
                except HttpError as err:
                    client.refuse(err.status, error_body(err.message), "application/json")
                except ClientGone:
                    pass

            def _exchange(self, client: HttpConnection, head: RequestHead) -> bool:
                """Forward one request and stream its answer back; True if the connection may carry another."""
                if head.method not in METHODS:
                    raise HttpError(501, f"the key proxy does not forward {head.method[:20]}")
                if not head.target.startswith(allowed_prefix):
                    raise HttpError(403, f"the key proxy forwards model API calls ({allowed_prefix}...) only")
                framing = client.body_framing(head, max_body_bytes)
                named = head.tokens("connection")  # headers the client marked hop-by-hop
                headers = {k: v for k, v in head.headers
                           if k.lower() not in HOP_BY_HOP and k.lower() not in CREDENTIAL_HEADERS
                           and k.lower() not in named}
                headers[header] = value.format(key=key.reveal())
                headers["Host"] = parts.netloc
                if isinstance(framing, int):
                    headers["Content-Length"] = str(framing)
                elif framing == "chunked":
                    headers["Transfer-Encoding"] = "chunked"
                if framing is not None and "100-continue" in head.tokens("expect"):
                    client.send(b"HTTP/1.1 100 Continue\r\n\r\n")
                proxy.requests += 1
                conn = connect()
                try:
                    try:
                        conn.connect()
                        assert conn.sock is not None
                        conn.sock.settimeout(upstream_timeout)  # from now on an idle read's limit
                    except (OSError, http.client.HTTPException) as exc:  # nothing was sent: no point retrying
                        proxy.unreachable = f"{connect_failure(exc)} ({parts.scheme}://{parts.netloc})"
                        client.refuse(UNREACHABLE_STATUS, error_body(f"the key proxy cannot connect to the model "
                                                                     f"API: {proxy.unreachable}"),
                                      "application/json")
                        return False
                    try:
                        conn.request(head.method, base_path + head.target, headers=headers,
                                     body=client.body(framing, max_body_bytes) if framing is not None else None,
                                     encode_chunked=framing == "chunked")
                        resp = conn.getresponse()
                    except (OSError, http.client.HTTPException) as exc:
                        client.refuse(502, error_body("the key proxy cannot reach the model API "
                                                      f"({exc.__class__.__name__})"), "application/json")
                        return False
                    lines = [f"HTTP/1.1 {resp.status} {resp.reason}"]
                    lines += [f"{k}: {v}" for k, v in resp.getheaders() if k.lower() not in HOP_BY_HOP]
                    no_body = head.method == "HEAD" or resp.status in (204, 304) or resp.status < 200
                    if not no_body:
                        lines.append("Transfer-Encoding: chunked")
                    if not head.keep_alive:
                        lines.append("Connection: close")
                    client.send(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace"))
                    if no_body:
                        return head.keep_alive
                    try:
                        while chunk := resp.read1(CHUNK):
                            client.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    except (OSError, http.client.HTTPException):
                        return False  # the model API broke off: so must the answer (no last chunk)
                    client.send(b"0\r\n\r\n")
                    return head.keep_alive
                finally:
                    conn.close()

        super().__init__("model-api", Handler, owner, max_connections=max_connections, idle_timeout=idle_timeout)
