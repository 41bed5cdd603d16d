"""A threaded HTTP server on 127.0.0.1 that records every request and lets a subclass answer it."""

from __future__ import annotations

import json
import os
import socketserver
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def drain_body(handler: BaseHTTPRequestHandler, chunk: int = 65536) -> int:
    """Read a request's body (Content-Length or chunked) ``chunk`` bytes at a time, keeping none of it; its
    size. For fakes that must take huge bodies without holding them."""
    n = 0
    if handler.headers.get("Transfer-Encoding", "").lower() == "chunked":
        while size := int(handler.rfile.readline().split(b";")[0], 16):
            while size:
                got = len(handler.rfile.read(min(size, chunk)))
                n, size = n + got, size - got
            handler.rfile.readline()
        handler.rfile.readline()
    else:
        left = int(handler.headers.get("Content-Length") or 0)
        while left:
            got = len(handler.rfile.read(min(left, chunk)))
            n, left = n + got, left - got
    return n


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self):
        return json.loads(self.body or b"null")


@dataclass
class Script:
    """What the fake model does: write `content` to `file_path` with one tool call, then say `final_text`.

    mode: "ok" follows the script; "unauthorized" answers every call with the vendor's 401;
    "loop" keeps calling the tool forever (for budget tests)."""

    file_path: str = "/workspace/hello.txt"
    content: str = "hello from the fake model\n"
    final_text: str = "Wrote hello.txt."
    mode: str = "ok"
    api_key: str = "sk-test-fake-key-0123456789"
    input_tokens: int = 1200
    output_tokens: int = 80
    extra: dict = field(default_factory=dict)


class FakeServer:
    """Subclasses implement handle(req, respond) where respond(status, headers, body_or_chunks)."""

    def __init__(self, script: Script | None = None, unix_socket: str | None = None):
        self.script = script or Script()
        self.requests: list[Recorded] = []
        #: Called with each request before it is answered (tests look at the running container from here).
        self.on_request: Callable[[Recorded], None] | None = None
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _serve(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                req = Recorded(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                with server._lock:
                    server.requests.append(req)
                if server.on_request:
                    server.on_request(req)
                server.handle(req, self._respond)

            def _respond(self, status: int, headers: dict[str, str], body):
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                if isinstance(body, (bytes, str)):
                    data = body.encode() if isinstance(body, str) else body
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                else:  # an iterable of chunks: stream them, then close
                    self.send_header("Connection", "close")
                    self.end_headers()
                    for chunk in body:
                        self.wfile.write(chunk.encode() if isinstance(chunk, str) else chunk)
                        self.wfile.flush()
                    self.close_connection = True

            do_GET = do_POST = do_PUT = do_DELETE = _serve

        self.unix_socket = unix_socket
        if unix_socket:
            class UnixHTTPServer(socketserver.ThreadingUnixStreamServer):
                def get_request(self):
                    conn, _ = super().get_request()
                    return conn, ("unix", 0)

            self._httpd = UnixHTTPServer(unix_socket, Handler)
            os.chmod(unix_socket, 0o666)  # the agent runs as another uid
        else:
            self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        if self.unix_socket:
            return "http://localhost"
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> FakeServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def handle(self, req: Recorded, respond) -> None:  # pragma: no cover - subclasses
        raise NotImplementedError

    @staticmethod
    def json_response(respond, status: int, payload) -> None:
        respond(status, {"Content-Type": "application/json"}, json.dumps(payload))

    @staticmethod
    def sse(events) -> list[str]:
        """Server-sent events from (event_name or None, payload) pairs."""
        out = []
        for name, payload in events:
            data = payload if isinstance(payload, str) else json.dumps(payload)
            out.append((f"event: {name}\n" if name else "") + f"data: {data}\n\n")
        return out
