"""Running one hardened container with the Docker SDK: live output, timeout, removal whatever happens.

Everything the container prints is hostile. Its output is read from an attach stream opened before the start
(Docker keeps no log of it: the log driver is ``none``, so the engine's disk cannot be filled), with natural
back-pressure (the container's writes wait while Toren has not read), in bounded reads, into a line splitter
whose memory is bounded whatever arrives: with or without newlines, any bytes, invalid UTF-8.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from toren_action.config.validate import Mount
from toren_action.core.errors import DockerError, JobTimedOut

LABEL_JOB = "toren.job"
LABEL_MANAGED = "toren.managed"
#: The longest line handed on, in bytes. A longer line goes on as further lines of at most this many bytes
#: (cut before a UTF-8 sequence, not inside one); nothing is dropped. 1 MiB leaves whole the stream-json events
#: that carry a file the agent wrote or read (their usage counts toward the budgets) while what Toren holds of
#: the output stays a few MiB.
MAX_LINE_BYTES = 1 << 20
#: The most bytes read from the attach stream at once.
READ_BYTES = 64 * 1024


def client():
    """A Docker client, or a clear error when no engine answers."""
    import docker
    import docker.errors

    try:
        c = docker.from_env(timeout=300)
        c.ping()
        return c
    except docker.errors.DockerException as exc:
        raise DockerError(
            f"no Docker engine answers ({_first_line(exc)}); start one with scripts/setup-docker.sh or set DOCKER_HOST"
        ) from None


def connect_soon() -> Callable[[], Any]:
    """Start :func:`client` in a thread and return the function that waits for it: its client, or its error.

    Importing the Docker SDK (with requests and urllib3) is the largest part of a job's start-up; begun before
    the planning's git work, most of it happens while this process waits for git."""
    box: dict[str, Any] = {}

    def connect() -> None:
        try:
            box["client"] = client()
        except BaseException as exc:  # noqa: BLE001 - handed to whoever waits, raised there
            box["error"] = exc

    thread = threading.Thread(target=connect, name="toren-docker-connect", daemon=True)
    thread.start()

    def wait() -> Any:
        thread.join()
        if "error" in box:
            raise box["error"]
        return box["client"]

    return wait


@dataclass
class ContainerSpec:
    image: str
    command: list[str]
    job_id: str
    user: str
    mounts: list[Mount]
    environment: dict[str, str] = field(default_factory=dict)
    network: str = "none"
    gpus: str | None = None
    memory: str = "4g"  # and the same for memory plus swap: the container cannot swap past it
    cpus: float = 2.0  # --cpus (nano_cpus); more than the engine has is cut to what it has
    pids_limit: int = 1024
    timeout_s: float = 3600.0
    name: str | None = None
    role: str = "agent"


@dataclass
class ContainerResult:
    exit_code: int
    container_id: str
    duration_s: float


def has_gpu_runtime(info: dict) -> bool:
    """Whether the engine (its ``docker info``) has the NVIDIA runtime that --gpus needs."""
    return "nvidia" in (info.get("Runtimes") or {})


def network_exists(docker_client, name: str) -> bool:
    """Whether the engine has a network called ``name`` (or with that id): one call."""
    return any(n.name == name or n.id == name for n in docker_client.networks.list(names=[name]))


def device_requests(gpus: str | None):
    if not gpus:
        return None
    from docker.types import DeviceRequest

    if gpus == "all":
        return [DeviceRequest(count=-1, capabilities=[["gpu"]])]
    if gpus.isdigit():
        return [DeviceRequest(count=int(gpus), capabilities=[["gpu"]])]
    return [DeviceRequest(device_ids=gpus.split("=", 1)[1].split(","), capabilities=[["gpu"]])]


def run(docker_client, spec: ContainerSpec, on_line: Callable[[str], bool | None],
        on_start: Callable[[str], None] | None = None,
        on_exit: Callable[[object, int], None] | None = None) -> ContainerResult:
    """Create, start and wait for a container; stream its output line by line to ``on_line``. When ``on_line``
    returns True (a budget passed, a bad key), the container is killed at once. ``on_exit(container, exit
    code)`` runs once it has exited and its output is read, before it is removed (the setup commits it).

    The container is removed on every path out of here: normal exit, timeout, error or Ctrl-C.
    """
    import docker.errors
    import requests.exceptions
    from docker.types import LogConfig
    from docker.types import Mount as DockerMount

    mounts = [DockerMount(m.target, m.source, type="bind", read_only=m.read_only) for m in spec.mounts]
    container = None
    stream = None
    started = time.monotonic()
    try:
        try:
            container = docker_client.containers.create(
                spec.image,
                command=spec.command,
                name=spec.name,
                user=spec.user,
                working_dir="/workspace",
                environment=spec.environment,
                labels={LABEL_JOB: spec.job_id, LABEL_MANAGED: "1", "toren.role": spec.role},
                mounts=mounts,
                network_mode=spec.network,
                device_requests=device_requests(spec.gpus),
                security_opt=["no-new-privileges"],
                cap_drop=["ALL"],
                pids_limit=spec.pids_limit,
                mem_limit=spec.memory,
                memswap_limit=spec.memory,
                nano_cpus=_nano_cpus(docker_client, spec.cpus),
                log_config=LogConfig(type="none"),  # output comes through the attach stream, never a log file
                init=True,
                detach=True,
            )
            if on_start:
                on_start(container.id)
            stream = _attach(docker_client, container)  # before the start: no line is missed
            container.start()
        except docker.errors.APIError as exc:
            raise _start_error(exc, spec) from None

        reader = threading.Thread(target=_pump, args=(container, stream, on_line), daemon=True)
        reader.start()
        remaining = spec.timeout_s - (time.monotonic() - started)
        try:
            status = container.wait(timeout=max(remaining, 0.001))
        except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError):
            _kill(container)
            reader.join(timeout=5)
            raise JobTimedOut(
                f"the {spec.role} ran past the timeout of {spec.timeout_s / 60:g} min; its container was stopped "
                "and removed (raise --timeout to give it longer)"
            ) from None
        reader.join(timeout=60)  # the container has exited: its log stream ends once the last lines are read
        code = int(status.get("StatusCode", 1))
        if on_exit is not None:
            on_exit(container, code)
        return ContainerResult(code, container.id, time.monotonic() - started)
    finally:
        if container is not None:
            try:
                container.remove(v=True, force=True)  # v: with the anonymous volumes the image's VOLUMEs made
            except docker.errors.NotFound:
                pass
            except docker.errors.APIError:
                pass
        if stream is not None:
            try:
                stream.close()
            except OSError:
                pass


def _nano_cpus(docker_client, cpus: float) -> int:
    """--cpus as nano-CPUs, cut to the engine's CPU count (Docker refuses a limit above it)."""
    try:
        have = int(docker_client.info().get("NCPU") or 0)
    except Exception:  # noqa: BLE001 - an engine that does not say: ask for the limit as given
        have = 0
    wanted = min(cpus, have) if have else cpus
    return max(int(wanted * 1_000_000_000), 10_000_000)  # Docker's smallest limit: 0.01 CPU


def _attach(docker_client, container):
    """The container's stdout and stderr as Docker's multiplexed raw stream, with no read timeout (an agent may
    be silent for longer than the client's timeout)."""
    sock = docker_client.api.attach_socket(container.id, params={"stdout": 1, "stderr": 1, "stream": 1})
    for s in (sock, getattr(sock, "_sock", None)):
        if s is not None and hasattr(s, "settimeout"):
            s.settimeout(None)
    return sock


def _frames(sock):
    """The payloads of Docker's multiplexed stream (an 8-byte header: stream, 0, 0, 0, a big-endian length),
    in pieces of at most READ_BYTES, stdout and stderr in the order they came."""
    from docker.utils.socket import read

    while True:
        header = b""
        while len(header) < 8:
            data = read(sock, 8 - len(header))
            if not data:
                return
            header += data
        size = int.from_bytes(header[4:8], "big")
        while size:
            data = read(sock, min(size, READ_BYTES))
            if not data:
                return
            size -= len(data)
            yield data


class LineSplitter:
    """Bytes in, lines out (without their newline): a line longer than ``max_bytes`` goes on as further lines
    of at most ``max_bytes``, cut before a UTF-8 sequence where the bytes allow. The work is linear in what it
    is fed and it holds at most about ``max_bytes``, whatever it is fed."""

    def __init__(self, max_bytes: int = MAX_LINE_BYTES) -> None:
        self.max_bytes = max_bytes
        self._pending = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        lines: list[bytes] = []
        for i in range(0, len(data), self.max_bytes):
            self._feed(bytes(data[i:i + self.max_bytes]), lines)
        return lines

    def flush(self) -> list[bytes]:
        """What is left after the last newline, as a last line."""
        rest, self._pending = bytes(self._pending), bytearray()
        return [rest] if rest else []

    def _feed(self, data: bytes, lines: list[bytes]) -> None:
        start = 0
        while True:
            nl = data.find(b"\n", start)
            if nl < 0:
                self._pending += data[start:]
                self._split_long(lines)
                return
            if not self._pending and nl - start <= self.max_bytes:
                lines.append(data[start:nl])
            else:
                self._pending += data[start:nl]
                self._split_long(lines)
                lines.append(bytes(self._pending))
                self._pending.clear()
            start = nl + 1

    def _split_long(self, lines: list[bytes]) -> None:
        buf, limit = self._pending, self.max_bytes
        while len(buf) > limit:
            cut = limit
            while cut > limit - 3 and buf[cut] & 0xC0 == 0x80:  # a UTF-8 continuation byte: back to its lead
                cut -= 1
            if buf[cut] & 0xC0 == 0x80:  # not UTF-8 after all: cut where the limit says
                cut = limit
            lines.append(bytes(buf[:cut]))
            del buf[:cut]


def _text(line: bytes) -> str:
    return line.decode("utf-8", errors="replace").rstrip("\r")


def _pump(container, stream, on_line: Callable[[str], bool | None]) -> None:
    """Hand each line of the container's output to ``on_line``; kill the container the first time it says so."""
    splitter = LineSplitter()
    stopped = False

    def hand(lines: list[bytes]) -> None:
        nonlocal stopped
        for line in lines:
            if on_line(_text(line)) and not stopped:
                stopped = True
                _kill(container)

    try:
        for data in _frames(stream):
            hand(splitter.feed(data))
        hand(splitter.flush())
    except Exception:  # noqa: BLE001 - the stream broke or on_line failed: what was read is kept, and a
        try:  # container whose output no one reads any more (budgets unwatched) is not left running
            _kill(container)
        except Exception:  # noqa: BLE001,S110 - the engine went away too: run() removes it or says so
            pass


def _kill(container) -> None:
    import docker.errors

    try:
        container.kill()
    except docker.errors.APIError:
        pass


def _start_error(exc, spec: ContainerSpec) -> DockerError:
    text = _first_line(exc)
    if "could not select device driver" in text or "nvidia" in text.lower():
        return DockerError(f"--gpus: this Docker engine cannot give containers GPUs ({text}); install the NVIDIA "
                           "container toolkit or drop --gpus")
    if "network" in text.lower() and "not found" in text.lower():
        return DockerError(f"--network: {spec.network} does not exist ({text}); create it or use bridge, host or none")
    return DockerError(f"Docker refused to start the {spec.role} container: {text}")


def _first_line(exc) -> str:
    """What Docker said, in one line: the first line of the API's explanation (or of the error's text), or the
    error's class name when it said nothing."""
    text = str(getattr(exc, "explanation", None) or exc).strip()
    return text.splitlines()[0] if text else exc.__class__.__name__


def remove_job_containers(docker_client, job_id: str | None = None, dry_run: bool = False) -> list[str]:
    """Remove containers Toren created (by label), for one job or all, with their anonymous volumes (those of the
    image's VOLUMEs); returns their ids. ``dry_run``: only the ids of those it would remove."""
    label = f"{LABEL_JOB}={job_id}" if job_id else f"{LABEL_MANAGED}=1"
    removed = []
    for c in docker_client.containers.list(all=True, filters={"label": label}):
        if not dry_run:
            c.remove(v=True, force=True)
        removed.append(c.id)
    return removed
