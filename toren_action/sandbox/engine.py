"""The Docker Engine API over its socket, with the standard library: the calls on a job's path.

A job asks the engine a dozen small questions (is it there, is this image there, create, attach, start, wait,
remove). Each is one HTTP/1.1 exchange on a connection of its own (on the engine's unix socket, a fraction of a
millisecond), written and read here with ``socket`` alone: not even ``http.client`` (with ``email`` and ``ssl``)
is imported for them. The Docker SDK (with requests and urllib3, about a third of a bare ``docker run``) is
loaded only by :attr:`Engine.sdk`, for what a warm job never does: building and pulling images, saving one for a
scan, listing images for ``toren cleanup``.

The engine is the user's, and trusted; what a container makes it say is not: every body read from it is
bounded (:data:`MAX_BODY_BYTES`), its headers too, and the attach stream is read by the caller in bounded
pieces.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote, urlencode, urlsplit

#: The most bytes of one answer of the engine that Toren reads (an image's inspect is a few kB).
MAX_BODY_BYTES = 16 * 1024 * 1024
#: The oldest Engine API that has everything a job's container uses (DeviceRequests came in 1.40: Docker 19.03).
MIN_API = (1, 40)
DEFAULT_HOST = "unix:///var/run/docker.sock"
#: How long one call may take, except waiting for a container (which takes the job's own timeout).
TIMEOUT_S = 300.0
_MAX_HEADER_LINE = 64 * 1024
_MAX_HEADERS = 100


class EngineError(Exception):
    """The engine answered with an error: its HTTP status and its message (the first line of it)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.explanation = message


class NotFound(EngineError):
    """404: no such container, image or network."""


class Unreachable(Exception):
    """No engine answers where DOCKER_HOST (or the default socket) says."""


class Engine:
    """One Docker engine, found as the Docker SDK finds it (``DOCKER_HOST``, ``DOCKER_TLS_VERIFY``,
    ``DOCKER_CERT_PATH``; else the default socket). Safe to use from several threads: each call has a connection
    of its own."""

    def __init__(self, environ: dict[str, str] | None = None, timeout: float = TIMEOUT_S) -> None:
        env = os.environ if environ is None else environ
        self.host = env.get("DOCKER_HOST") or DEFAULT_HOST
        self.timeout = timeout
        self._environ = {k: v for k, v in env.items() if k.startswith("DOCKER_")}  # for the SDK: nothing else
        try:
            url = urlsplit(self.host)
            port = url.port if url.scheme != "unix" else None
        except ValueError as exc:
            raise Unreachable(f"DOCKER_HOST={self.host[:200]} is not an address ({exc}); use unix:///path or "
                              "tcp://host:port") from None
        self._scheme = url.scheme
        tls = bool(env.get("DOCKER_TLS_VERIFY") or env.get("DOCKER_CERT_PATH")) or url.scheme == "https"
        if url.scheme == "unix":
            self._path = url.path or "/var/run/docker.sock"
        elif url.scheme in ("tcp", "http", "https"):
            if not url.hostname:
                raise Unreachable(f"DOCKER_HOST={self.host[:200]} names no host; use tcp://host:port")
            self._address = (url.hostname, port or (2376 if tls else 2375))
        else:
            raise Unreachable(f"DOCKER_HOST={self.host}: Toren reaches an engine over a unix socket or tcp; for "
                              "ssh, forward the socket (ssh -nNL /tmp/docker.sock:/var/run/docker.sock HOST) and "
                              "set DOCKER_HOST=unix:///tmp/docker.sock")
        self._tls = self._tls_context(env, url.scheme == "https")
        self._prefix = ""
        self._info: dict[str, Any] | None = None
        self._sdk: Any = None

    @staticmethod
    def _tls_context(env, https: bool) -> Any:
        verify = env.get("DOCKER_TLS_VERIFY") or ""
        cert_path = env.get("DOCKER_CERT_PATH") or ""
        if not (verify or cert_path or https):
            return None
        import ssl

        where = Path(cert_path or Path.home() / ".docker")
        if verify:  # the engine's certificate checked against the CA, and for the host it was asked by
            ctx = ssl.create_default_context(cafile=str(where / "ca.pem") if (where / "ca.pem").is_file() else None)
        else:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        if (where / "cert.pem").is_file() and (where / "key.pem").is_file():
            ctx.load_cert_chain(str(where / "cert.pem"), str(where / "key.pem"))
        return ctx

    # -- one exchange ------------------------------------------------------------------------------------------

    def _open(self, timeout: float | None) -> socket.socket:
        if self._scheme == "unix":
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            try:
                sock.connect(self._path)
            except BaseException:
                sock.close()
                raise
            return sock
        sock = socket.create_connection(self._address, timeout=timeout)
        if self._tls is not None:
            try:
                sock = self._tls.wrap_socket(sock, server_hostname=self._address[0])
            except BaseException:
                sock.close()
                raise
        return sock

    def _send(self, method: str, target: str, body: bytes | None, timeout: float | None,
              upgrade: bool = False) -> tuple[socket.socket, IO[bytes], int, dict[str, str]]:
        """Open a connection, send one request, read the answer's head: (socket, its reader, status, headers)."""
        sock = self._open(timeout)
        try:
            head = [f"{method} {target} HTTP/1.1", "Host: docker", "User-Agent: toren"]
            head += ["Connection: Upgrade", "Upgrade: tcp"] if upgrade else ["Connection: close"]
            if body is not None:
                head += ["Content-Type: application/json"]
            head += [f"Content-Length: {len(body or b'')}", "", ""]
            sock.sendall("\r\n".join(head).encode("utf-8") + (body or b""))
            reader = sock.makefile("rb")
            status, headers = _read_head(reader)
            return sock, reader, status, headers
        except BaseException:
            sock.close()
            raise

    def request(self, method: str, path: str, query: dict[str, Any] | None = None, body: Any = None,
                timeout: float | None = None, ok: tuple[int, ...] = (200, 201, 204, 304)) -> tuple[int, bytes]:
        """One call: (status, body). An error status raises :class:`EngineError` (:class:`NotFound` for 404)
        with the engine's message; no answer raises :class:`OSError` (:class:`TimeoutError` past ``timeout``,
        the engine's default when None)."""
        target = self._prefix + path + ("?" + urlencode(query, doseq=True) if query else "")
        data = json.dumps(body).encode() if body is not None else None
        status, _, payload = self._exchange(method, target, data, self.timeout if timeout is None else timeout)
        if status not in ok:
            raise _refused(status, payload, "")
        return status, payload

    def _exchange(self, method: str, target: str, body: bytes | None,
                  timeout: float | None) -> tuple[int, dict[str, str], bytes]:
        """One request on a connection of its own, its whole answer read: (status, headers, body)."""
        sock, reader, status, headers = self._send(method, target, body, timeout)
        return status, headers, _finish(sock, reader, status, headers, method)

    def json(self, method: str, path: str, **kw: Any) -> Any:
        _, payload = self.request(method, path, **kw)
        return json.loads(payload) if payload else None

    # -- the calls of a job ------------------------------------------------------------------------------------

    def ping(self) -> None:
        """That the engine answers, and the API version to speak: the engine's own (its ``Api-Version``
        header), which must be at least :data:`MIN_API`."""
        try:
            status, headers, _ = self._exchange("GET", "/_ping", None, self.timeout)
        except (OSError, EngineError) as exc:
            raise Unreachable(f"{self.host}: {_os_reason(exc)}") from None
        if status != 200:
            raise Unreachable(f"{self.host} answered HTTP {status} to a ping")
        version = headers.get("api-version", "")
        parts = tuple(int(p) for p in version.split(".") if p.isdigit())
        if len(parts) != 2:
            return  # an engine that does not say: unversioned paths, its own current API
        if parts < MIN_API:
            raise Unreachable(f"{self.host} speaks Engine API {version}; Toren needs {MIN_API[0]}.{MIN_API[1]} "
                              "(Docker 19.03) or newer")
        self._prefix = f"/v{parts[0]}.{parts[1]}"

    def info(self) -> dict[str, Any]:
        """``docker info``, asked once."""
        if self._info is None:
            self._info = self.json("GET", "/info")
        return self._info

    def image(self, ref: str) -> dict[str, Any] | None:
        """An image's inspect (``Id``, ``Os``, ``Architecture``, ``Config``: its labels), or None when absent."""
        try:
            return self.json("GET", f"/images/{quote(ref, safe='/:@')}/json")
        except NotFound:
            return None

    def remove_image(self, ref: str, force: bool = False) -> None:
        self.request("DELETE", f"/images/{quote(ref, safe='/:@')}", query={"force": int(force)})

    def networks(self, name: str) -> list[dict[str, Any]]:
        return self.json("GET", "/networks", query={"filters": json.dumps({"name": [name]})})

    def containers(self, filters: dict[str, list[str]]) -> list[dict[str, Any]]:
        """Containers, stopped ones too, that match ``filters`` (``{"label": ["toren.job=..."]}``)."""
        return self.json("GET", "/containers/json", query={"all": 1, "filters": json.dumps(filters)})

    def create(self, config: dict[str, Any], name: str | None = None) -> str:
        """A container from its configuration (the API's body, ``HostConfig`` in it); its id."""
        created = self.json("POST", "/containers/create", query={"name": name} if name else None, body=config)
        return created["Id"]

    def start(self, container_id: str) -> None:
        self.request("POST", f"/containers/{container_id}/start")

    def wait(self, container_id: str, timeout: float) -> int:
        """The container's exit code, once it has exited; :class:`TimeoutError` after ``timeout`` seconds."""
        status = self.json("POST", f"/containers/{container_id}/wait", timeout=timeout)
        return int((status or {}).get("StatusCode", 1))

    def kill(self, container_id: str) -> None:
        """Kill it; one that is not running (409) or gone (404) is left as it is."""
        try:
            self.request("POST", f"/containers/{container_id}/kill", ok=(204, 304, 409))
        except NotFound:
            pass

    def remove(self, container_id: str) -> None:
        """Remove it, running or not, with its anonymous volumes; one already gone is no error."""
        try:
            self.request("DELETE", f"/containers/{container_id}", query={"v": 1, "force": 1})
        except NotFound:
            pass

    def commit(self, container_id: str, repo: str, tag: str, changes: list[str]) -> str:
        """``docker commit`` with Dockerfile instructions in ``changes``; the new image's id."""
        made = self.json("POST", "/commit", query={"container": container_id, "repo": repo, "tag": tag,
                                                   "changes": changes}, body={})
        return made["Id"]

    def attach(self, container_id: str) -> AttachStream:
        """The container's stdout and stderr as the engine's multiplexed stream, opened before the start (so no
        line is missed), with no read timeout (an agent may be silent for long)."""
        target = f"{self._prefix}/containers/{container_id}/attach?stream=1&stdout=1&stderr=1"
        sock, reader, status, headers = self._send("POST", target, None, self.timeout, upgrade=True)
        if status not in (101, 200):
            raise _refused(status, _finish(sock, reader, status, headers, "POST"), " to attach")
        sock.settimeout(None)
        return AttachStream(sock, reader)

    # -- everything else ---------------------------------------------------------------------------------------

    @property
    def sdk(self) -> Any:
        """The Docker SDK's client for the same engine, made on first use: for building, pulling, saving and
        listing images, which a warm job does not do."""
        if self._sdk is None:
            import docker
            import docker.errors

            try:
                self._sdk = docker.from_env(timeout=int(self.timeout), environment=self._environ)
            except docker.errors.DockerException as exc:
                from toren_action.core.errors import DockerError

                raise DockerError(f"the Docker SDK cannot reach {self.host} ({str(exc).splitlines()[0][:300]}); "
                                  "start the engine (scripts/setup-docker.sh) or fix DOCKER_HOST") from None
        return self._sdk


class AttachStream:
    """The raw stream of an attach: read it with :meth:`read`, close it with :meth:`close`."""

    def __init__(self, sock: socket.socket, stream) -> None:
        self._sock = sock
        self._stream = stream

    def read(self, n: int) -> bytes:
        """Up to ``n`` bytes (at least one), or b"" at the end of the stream."""
        return self._stream.read1(n)

    def close(self) -> None:
        """End the stream now, even while another thread is blocked reading it (the shutdown wakes that read;
        closing the reader alone would wait for it, for ever if the engine keeps the connection open)."""
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        try:
            self._stream.close()
        finally:
            self._sock.close()


def _line(reader: IO[bytes]) -> bytes:
    line = reader.readline(_MAX_HEADER_LINE + 1)
    if len(line) > _MAX_HEADER_LINE:
        raise EngineError(0, "the engine's answer has a line over 64 kB")
    return line


def _read_head(reader: IO[bytes]) -> tuple[int, dict[str, str]]:
    """An answer's status line and headers (names in lower case); bounded in lines and in their length."""
    parts = _line(reader).split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
        raise EngineError(0, "the engine's answer is not HTTP" if parts else "the engine closed the connection")
    headers: dict[str, str] = {}
    for _ in range(_MAX_HEADERS):
        line = _line(reader)
        if line in (b"\r\n", b"\n", b""):
            return int(parts[1]), headers
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    raise EngineError(0, f"the engine's answer has over {_MAX_HEADERS} headers")


def _read_body(reader: IO[bytes], headers: dict[str, str]) -> bytes:
    """An answer's body (chunked, of a length, or up to the end), at most :data:`MAX_BODY_BYTES`."""
    too_long = EngineError(0, f"the engine's answer is over {MAX_BODY_BYTES:,} bytes")
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = bytearray()
        while True:
            size_text = _line(reader).split(b";", 1)[0].strip()
            if not size_text or not all(c in b"0123456789abcdefABCDEF" for c in size_text):
                raise EngineError(0, "the engine's answer has a bad chunk")
            size = int(size_text, 16)
            if size == 0:
                for _ in range(_MAX_HEADERS):  # the trailer
                    if _line(reader) in (b"\r\n", b"\n", b""):
                        return bytes(body)
                raise EngineError(0, f"the engine's answer has over {_MAX_HEADERS} trailer lines")
            if len(body) + size > MAX_BODY_BYTES:
                raise too_long
            chunk = reader.read(size)
            if len(chunk) < size:
                raise EngineError(0, "the engine closed the connection inside an answer")
            body += chunk
            _line(reader)
    length = headers.get("content-length")
    if length is not None:
        if not length.isdigit():
            raise EngineError(0, "the engine's answer has a bad Content-Length")
        if int(length) > MAX_BODY_BYTES:
            raise too_long
        data = reader.read(int(length))
        if len(data) < int(length):
            raise EngineError(0, "the engine closed the connection inside an answer")
        return data
    data = reader.read(MAX_BODY_BYTES + 1)
    if len(data) > MAX_BODY_BYTES:
        raise too_long
    return data


def _finish(sock: socket.socket, reader: IO[bytes], status: int, headers: dict[str, str], method: str) -> bytes:
    """The rest of an answer (its bounded body; none for 204, 304 or HEAD), then its connection closed."""
    try:
        return b"" if status in (204, 304) or method == "HEAD" else _read_body(reader, headers)
    finally:
        reader.close()
        sock.close()


def _refused(status: int, payload: bytes, what: str) -> EngineError:
    """The engine's error status as an error: its message, else the status (:class:`NotFound` for 404)."""
    message = _message(payload) or f"HTTP {status}{what}"
    return (NotFound if status == 404 else EngineError)(status, message)


def _message(payload: bytes) -> str:
    """The engine's error message (its JSON ``message``), in one line."""
    try:
        text = str(json.loads(payload).get("message") or "")
    except (ValueError, AttributeError):
        text = payload[:2000].decode("utf-8", errors="replace")
    text = text.strip()
    return text.splitlines()[0][:2000] if text else ""


def _os_reason(exc: BaseException) -> str:
    if isinstance(exc, FileNotFoundError):
        return "no socket there"
    if isinstance(exc, PermissionError):
        return "permission denied on its socket (add your user to the docker group)"
    return getattr(exc, "strerror", None) or str(exc) or exc.__class__.__name__
