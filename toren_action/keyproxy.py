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
import ssl
from http.server import BaseHTTPRequestHandler
from urllib.parse import urlsplit

from toren_action.redact import Secret
from toren_action.sockets import UnixSocketService

HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
              "transfer-encoding", "upgrade", "host", "content-length"}
CREDENTIAL_HEADERS = {"x-api-key", "authorization", "x-goog-api-key"}
ALLOWED_PATH_PREFIX = "/v1"


class KeyProxy(UnixSocketService):
    """A threaded HTTP/1.1 server on a unix socket that adds the key and forwards to one origin."""

    def __init__(self, upstream: str, key: Secret, header: str = "x-api-key",
                 owner: tuple[int, int] | None = None, value: str = "{key}", keep_path: bool = True) -> None:
        """``keep_path``: prefix each request with the upstream URL's path (the CLI's base URL is the bare
        socket); otherwise the CLI's base URL already carries that path and requests are forwarded as they
        are, but only under it."""
        parts = urlsplit(upstream.rstrip("/"))
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {upstream}")
        self.requests = 0
        proxy = self
        base_path = parts.path if keep_path else ""
        allowed_prefix = ALLOWED_PATH_PREFIX if keep_path else (parts.path.rstrip("/") + "/" if parts.path else "/")

        def connect() -> http.client.HTTPConnection:
            if parts.scheme == "https":
                return http.client.HTTPSConnection(parts.hostname, parts.port or 443, timeout=600,
                                                   context=ssl.create_default_context())
            return http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=600)

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet: requests are counted, never logged with headers
                pass

            def _forward(self) -> None:
                if not self.path.startswith(allowed_prefix):
                    self._refuse(403, f"the key proxy forwards model API calls ({allowed_prefix}...) only")
                    return
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in HOP_BY_HOP and k.lower() not in CREDENTIAL_HEADERS}
                headers[header] = value.format(key=key.reveal())
                headers["Host"] = parts.netloc
                proxy.requests += 1
                conn = connect()
                try:
                    conn.request(self.command, base_path + self.path, body=body, headers=headers)
                    resp = conn.getresponse()
                except OSError as exc:
                    self._refuse(502, f"the key proxy cannot reach the model API ({exc.__class__.__name__})")
                    return
                self.send_response(resp.status, resp.reason)
                for k, v in resp.getheaders():
                    if k.lower() not in HOP_BY_HOP:
                        self.send_header(k, v)
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                try:
                    while True:
                        chunk = resp.read1(65536) if hasattr(resp, "read1") else resp.read(65536)
                        if not chunk:
                            break
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                        self.wfile.flush()
                    self.wfile.write(b"0\r\n\r\n")
                except OSError:
                    self.close_connection = True
                finally:
                    conn.close()

            def _refuse(self, status: int, message: str) -> None:
                import json

                data = json.dumps({"type": "error", "error": {"type": "proxy_error", "message": message}}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = _forward

        super().__init__("model-api", Handler, owner)
