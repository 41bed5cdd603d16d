"""A threaded service on a unix socket that a job mounts into its container (the key proxy, the egress proxy),
and the bounded HTTP/1.1 framing both read hostile requests with.

The socket lives in a private directory of its own (mode 0700, a short path: socket paths are limited to about
100 bytes), is mode 0600 and owned by the agent's uid, and is removed with that directory when the service
stops. The directory's name starts with ``toren-``, so a leftover is easy to recognise.

Everything that arrives on the socket comes from the agent, so the service bounds what one client can cost the
host process:

* at most ``max_connections`` (MAX_CONNECTIONS) connections are served at once, one thread each; a connection
  beyond that is answered ``503`` and closed by the accepting thread at once (no thread, no queue);
* every read from a client has an idle timeout (``idle_timeout``, IDLE_TIMEOUT_S): a client that sends nothing
  for that long is dropped. Only idle reads are timed, never a whole exchange, so a response that streams for
  many minutes is fine;
* a request head (request line and headers) must arrive whole within ``idle_timeout`` and within
  MAX_HEAD_BYTES and MAX_HEADERS (``HttpConnection.read_head``), however slowly it trickles in;
* a request body is read in pieces of at most CHUNK bytes and never held whole (``HttpConnection.body``):
  a ``Content-Length`` must be plain digits, at most MAX_BODY_BYTES; a chunked body is cut off past the same
  cap; anything else (two lengths, a length with chunked, another transfer coding) is refused.
"""

from __future__ import annotations

import contextlib
import os
import socket
import socketserver
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

#: Connections served at once, per service. Real CLIs open a handful; the rest are refused (503) at once.
MAX_CONNECTIONS = 64
#: Seconds a client may send nothing while Toren waits for its request (head or body) before it is dropped.
IDLE_TIMEOUT_S = 60.0
#: A request body, at most: long-context model requests (a whole conversation, images) are several MB.
MAX_BODY_BYTES = 32 * 1024 * 1024
#: The request line and headers together, at most, and how many header lines.
MAX_HEAD_BYTES = 64 * 1024
MAX_HEADERS = 100
#: The most bytes read from a socket at a time (so the most one connection holds of a body).
CHUNK = 64 * 1024


class HttpError(Exception):
    """A request Toren refuses: answer ``status`` with ``message`` and close the connection."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class ClientGone(Exception):
    """The client closed, reset or went idle past the timeout: nothing more to say to it."""

    def __init__(self, why: str, timed_out: bool = False) -> None:
        super().__init__(why)
        self.timed_out = timed_out


REASONS = {400: "Bad Request", 403: "Forbidden", 408: "Request Timeout", 413: "Content Too Large",
           421: "Misdirected Request", 431: "Request Header Fields Too Large", 501: "Not Implemented",
           502: "Bad Gateway", 503: "Service Unavailable"}


@dataclass
class RequestHead:
    method: str
    target: str
    version: str
    headers: list[tuple[str, str]]  # as sent, in order (names as sent; compare them lowercased)

    def get_all(self, name: str) -> list[str]:
        name = name.lower()
        return [v for k, v in self.headers if k.lower() == name]

    def get(self, name: str) -> str | None:
        values = self.get_all(name)
        return values[0] if values else None

    def tokens(self, name: str) -> set[str]:
        """The comma-separated tokens of every ``name`` header, lowercased (Connection, Transfer-Encoding)."""
        return {t.strip().lower() for v in self.get_all(name) for t in v.split(",") if t.strip()}

    @property
    def keep_alive(self) -> bool:
        conn = self.tokens("connection")
        return "close" not in conn and (self.version == "HTTP/1.1" or "keep-alive" in conn)


class HttpConnection:
    """A client socket read with bounds: a head within a deadline and size, a body in capped pieces."""

    def __init__(self, sock: socket.socket, idle_timeout: float = IDLE_TIMEOUT_S) -> None:
        self.sock = sock
        self.idle_timeout = idle_timeout
        self._buf = bytearray()
        sock.settimeout(idle_timeout)

    def _recv(self, timeout: float | None = None) -> bytes:
        try:
            if timeout is not None:
                self.sock.settimeout(max(timeout, 0.001))
            data = self.sock.recv(CHUNK)
        except TimeoutError:
            raise ClientGone("idle", timed_out=True) from None
        except OSError as exc:
            raise ClientGone(exc.__class__.__name__) from None
        finally:
            if timeout is not None:
                with contextlib.suppress(OSError):
                    self.sock.settimeout(self.idle_timeout)
        if not data:
            raise ClientGone("closed")
        return data

    def read_head(self) -> RequestHead | None:
        """The next request's head, or None when the client closed (or sent nothing in time) between requests.

        Raises HttpError for a head that is too big, has too many headers, is malformed, or does not arrive
        whole within the idle timeout (a slow-loris)."""
        deadline = time.monotonic() + self.idle_timeout
        searched = 0  # where the search for the blank line may resume (a trickled head costs linear work)
        while True:
            end = self._buf.find(b"\r\n\r\n", searched)
            if end >= 0:
                break
            searched = max(0, len(self._buf) - 3)
            if len(self._buf) > MAX_HEAD_BYTES:
                raise HttpError(431, f"the request head is over {MAX_HEAD_BYTES} bytes")
            left = deadline - time.monotonic()
            if left <= 0:
                if not self._buf:
                    return None
                raise HttpError(408, "the request head did not arrive in time")
            try:
                self._buf += self._recv(left)
            except ClientGone as gone:
                if self._buf and gone.timed_out:
                    raise HttpError(408, "the request head did not arrive in time") from None
                return None
        if end > MAX_HEAD_BYTES:
            raise HttpError(431, f"the request head is over {MAX_HEAD_BYTES} bytes")
        raw = bytes(self._buf[:end])
        del self._buf[:end + 4]
        lines = raw.decode("latin-1").split("\r\n")
        while lines and not lines[0]:  # stray blank lines before a request are allowed (RFC 9112 2.2)
            lines.pop(0)
        if not lines:
            raise HttpError(400, "an empty request")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[0].isalpha() or parts[2] not in ("HTTP/1.0", "HTTP/1.1"):
            raise HttpError(400, "a malformed request line")
        if not parts[1] or any(not 33 <= ord(c) <= 126 for c in parts[1]):
            raise HttpError(400, "a control character or space in the request target")
        if len(lines) - 1 > MAX_HEADERS:
            raise HttpError(431, f"more than {MAX_HEADERS} headers")
        headers = []
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep or not name or name != name.strip() or any(c in name for c in " \t()<>@,;\\\"/[]?={}"):
                raise HttpError(400, "a malformed header line")  # also refuses obsolete line folding
            if any(ord(c) < 32 and c != "\t" or ord(c) == 127 for c in value):
                raise HttpError(400, "a control character in a header")
            headers.append((name, value.strip(" \t")))
        return RequestHead(parts[0], parts[1], parts[2], headers)

    def body_framing(self, head: RequestHead, max_bytes: int = MAX_BODY_BYTES) -> int | str | None:
        """How the body is framed: a checked length, "chunked", or None for no body. Raises HttpError (400, 413,
        501) for a length that is not plain digits, is over ``max_bytes``, or appears twice with another value,
        for chunked with a length (a smuggling shape) and for any other transfer coding."""
        codings = [t.strip().lower() for v in head.get_all("transfer-encoding") for t in v.split(",")]
        lengths = {v.strip() for v in head.get_all("content-length")}
        if codings:
            if codings != ["chunked"]:
                raise HttpError(501, "only the chunked transfer coding is accepted")
            if lengths:
                raise HttpError(400, "Content-Length together with Transfer-Encoding")
            return "chunked"
        if not lengths:
            return None
        if len(lengths) > 1:
            raise HttpError(400, "conflicting Content-Length headers")
        value = lengths.pop()
        if not (value.isascii() and value.isdigit()) or len(value) > 20:
            raise HttpError(400, f"Content-Length is not a length: {value[:40]!r}")
        length = int(value)
        if length > max_bytes:
            raise HttpError(413, f"the request body is over {max_bytes} bytes")
        return length or None

    def body(self, framing: int | str | None, max_bytes: int = MAX_BODY_BYTES) -> Iterator[bytes]:
        """The body's bytes, in pieces of at most CHUNK (de-chunked). Raises HttpError past ``max_bytes`` or
        for broken chunked framing, ClientGone when the client stops sending."""
        if framing is None:
            return
        if isinstance(framing, int):
            left = framing
            while left:
                piece = self._take(min(left, CHUNK))
                left -= len(piece)
                yield piece
            return
        total = 0
        while True:
            line = self._line()
            size_text = line.split(b";", 1)[0].strip()
            if not size_text or len(size_text) > 16 or any(c not in b"0123456789abcdefABCDEF" for c in size_text):
                raise HttpError(400, "a malformed chunk size")
            size = int(size_text, 16)
            if size == 0:
                for _ in range(MAX_HEADERS + 1):  # trailers, dropped
                    if not self._line():
                        return
                raise HttpError(431, "too many trailers")
            total += size
            if total > max_bytes:
                raise HttpError(413, f"the request body is over {max_bytes} bytes")
            while size:
                piece = self._take(min(size, CHUNK))
                size -= len(piece)
                yield piece
            if self._line():
                raise HttpError(400, "a chunk not followed by CRLF")

    def _take(self, n: int) -> bytes:
        if not self._buf:
            self._buf += self._recv()
        piece = bytes(self._buf[:n])
        del self._buf[:n]
        return piece

    def _line(self, limit: int = 4096) -> bytes:
        while (end := self._buf.find(b"\r\n")) < 0:
            if len(self._buf) > limit:
                raise HttpError(400, "a chunk line is too long")
            self._buf += self._recv()
        line = bytes(self._buf[:end])
        del self._buf[:end + 2]
        return line

    def take_buffered(self) -> bytes:
        """What the client sent past the head that was read with it (CONNECT: the start of the tunnel)."""
        data = bytes(self._buf)
        self._buf.clear()
        return data

    def send(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except OSError as exc:
            raise ClientGone(exc.__class__.__name__) from None

    def refuse(self, status: int, body: bytes, content_type: str = "text/plain; charset=utf-8") -> None:
        """Answer ``status`` with ``body`` and close: Connection: close, then a short lingering close (what the
        client still sends is read and dropped, at most 1 MiB and 2 s) so that it can read the answer."""
        head = (f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
        try:
            self.sock.settimeout(2)
            self.sock.sendall(head + body)
            self.sock.shutdown(socket.SHUT_WR)
            deadline, drained = time.monotonic() + 2, 0
            while drained < 1024 * 1024 and (left := deadline - time.monotonic()) > 0:
                self.sock.settimeout(left)
                data = self.sock.recv(CHUNK)
                if not data:
                    break
                drained += len(data)
        except OSError:
            pass


#: How often a service's thread checks whether stop() was called (socketserver's default is 0.5 s).
POLL_S = 0.05


class UnixSocketService:
    #: What a connection beyond ``max_connections`` is told before it is closed.
    busy_response = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nRetry-After: 1\r\n"
                     b"Connection: close\r\n\r\n")

    def __init__(self, name: str, handler: type[socketserver.BaseRequestHandler],
                 owner: tuple[int, int] | None = None, max_connections: int = MAX_CONNECTIONS,
                 idle_timeout: float = IDLE_TIMEOUT_S) -> None:
        self.socket_path = Path(tempfile.mkdtemp(prefix="toren-")) / f"{name}.sock"
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self.busy_refusals = 0
        slots = threading.BoundedSemaphore(max_connections)
        service = self

        class Server(socketserver.ThreadingUnixStreamServer):
            daemon_threads = True
            request_queue_size = 128
            service: UnixSocketService  # set below; handlers may read their settings as self.server.service

            def get_request(self):  # http.server's handlers want an (address, port) pair
                conn, _ = super().get_request()
                return conn, ("unix", 0)

            def process_request(self, request, client_address):
                if not slots.acquire(blocking=False):  # full: refuse now, in the accepting thread
                    service.busy_refusals += 1
                    try:
                        request.setblocking(False)
                        request.send(service.busy_response)
                    except OSError:
                        pass
                    self.shutdown_request(request)
                    return
                request.settimeout(idle_timeout)
                try:
                    super().process_request(request, client_address)
                except BaseException:
                    slots.release()
                    raise

            def process_request_thread(self, request, client_address):
                try:
                    super().process_request_thread(request, client_address)
                finally:
                    slots.release()

            def handle_error(self, request, client_address):  # a hostile client is not worth a traceback
                pass

        self._server = Server(str(self.socket_path), handler)
        self._server.service = self  # handlers reach their service's settings as self.server.service
        os.chmod(self.socket_path, 0o600)  # only the agent's user (and ours) may connect
        if owner is not None and os.geteuid() == 0:
            os.chown(self.socket_path, *owner)
        # a short poll: stop() waits for serve_forever to notice, and a job waits for stop() as it ends
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": POLL_S},
                                        daemon=True, name=name)

    def start(self):
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        try:
            self.socket_path.unlink()
            self.socket_path.parent.rmdir()
        except OSError:
            pass
