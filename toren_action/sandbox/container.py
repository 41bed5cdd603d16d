"""Running one hardened container on the Engine API: live output, timeout, removal whatever happens.

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

from toren_action.config.validate import Mount, memory_size
from toren_action.core.errors import DockerError, JobTimedOut
from toren_action.sandbox.engine import AttachStream, Engine, EngineError, Unreachable

LABEL_JOB = "toren.job"
LABEL_MANAGED = "toren.managed"
#: The longest line handed on, in bytes. A longer line goes on as further lines of at most this many bytes
#: (cut before a UTF-8 sequence, not inside one); nothing is dropped. 1 MiB leaves whole the stream-json events
#: that carry a file the agent wrote or read (their usage counts toward the budgets) while what Toren holds of
#: the output stays a few MiB.
MAX_LINE_BYTES = 1 << 20
#: The most bytes read from the attach stream at once.
READ_BYTES = 64 * 1024


def client() -> Engine:
    """The Docker engine, answering, or a clear error when none does."""
    try:
        engine = Engine()
        engine.ping()
        return engine
    except Unreachable as exc:
        raise DockerError(
            f"no Docker engine answers ({exc}); start one with scripts/setup-docker.sh or set DOCKER_HOST"
        ) from None


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


def network_exists(engine: Engine, name: str) -> bool:
    """Whether the engine has a network called ``name`` (or with that id): one call."""
    return any(n.get("Name") == name or n.get("Id") == name for n in engine.networks(name))


def device_requests(gpus: str | None) -> list[dict[str, Any]] | None:
    """--gpus as the API's DeviceRequests: all, a count, or device=ID,ID."""
    if not gpus:
        return None
    request: dict[str, Any] = {"Driver": "", "Count": 0, "DeviceIDs": None, "Capabilities": [["gpu"]], "Options": {}}
    if gpus == "all":
        request["Count"] = -1
    elif gpus.isdigit():
        request["Count"] = int(gpus)
    else:
        request["DeviceIDs"] = gpus.split("=", 1)[1].split(",")
    return [request]


def create_config(spec: ContainerSpec, ncpu: int) -> dict[str, Any]:
    """The container's configuration as the Engine API takes it: hardened whatever the spec says (no
    capabilities, no new privileges, an init, no log file), its limits, its labels."""
    memory = memory_size(spec.memory)
    host: dict[str, Any] = {
        "Mounts": [{"Type": "bind", "Source": m.source, "Target": m.target, "ReadOnly": m.read_only}
                   for m in spec.mounts],
        "NetworkMode": spec.network,
        "SecurityOpt": ["no-new-privileges"],
        "CapDrop": ["ALL"],
        "PidsLimit": spec.pids_limit,
        "Memory": memory,
        "MemorySwap": memory,  # memory plus swap: the container cannot swap past its limit
        "NanoCpus": nano_cpus(spec.cpus, ncpu),
        "LogConfig": {"Type": "none", "Config": {}},  # output comes through the attach stream, never a log file
        "Init": True,
    }
    requests = device_requests(spec.gpus)
    if requests:
        host["DeviceRequests"] = requests
    return {
        "Image": spec.image,
        "Cmd": list(spec.command),
        "User": spec.user,
        "WorkingDir": "/workspace",
        "Env": [f"{k}={v}" for k, v in spec.environment.items()],
        "Labels": {LABEL_JOB: spec.job_id, LABEL_MANAGED: "1", "toren.role": spec.role},
        "AttachStdout": True,
        "AttachStderr": True,
        "HostConfig": host,
    }


def run(engine: Engine, spec: ContainerSpec, on_line: Callable[[str], bool | None],
        on_start: Callable[[str], None] | None = None,
        on_exit: Callable[[str, int], None] | None = None) -> ContainerResult:
    """Create, start and wait for a container; stream its output line by line to ``on_line``. When ``on_line``
    returns True (a budget passed, a bad key), the container is killed at once. ``on_exit(container id, exit
    code)`` runs once it has exited and its output is read, before it is removed (the setup commits it).

    The container is removed on every path out of here: normal exit, timeout, error or Ctrl-C.
    """
    container_id: str | None = None
    stream: AttachStream | None = None
    started = time.monotonic()
    try:
        try:
            config = create_config(spec, int(engine.info().get("NCPU") or 0))
            container_id = engine.create(config, spec.name)
            if on_start:
                on_start(container_id)
            stream = engine.attach(container_id)  # before the start: no line is missed
            engine.start(container_id)
        except EngineError as exc:
            raise _start_error(exc, spec) from None
        except OSError as exc:
            raise DockerError(f"the Docker engine went away while starting the {spec.role} container "
                              f"({exc.strerror or exc})") from None

        reader = threading.Thread(target=_pump, args=(engine, container_id, stream, on_line), daemon=True)
        reader.start()
        remaining = spec.timeout_s - (time.monotonic() - started)
        try:
            code = engine.wait(container_id, timeout=max(remaining, 0.001))
        except (OSError, EngineError) as exc:
            _kill(engine, container_id)
            reader.join(timeout=5)
            if not isinstance(exc, TimeoutError):
                raise DockerError(f"the Docker engine stopped answering while the {spec.role} ran ({first_line(exc)});"
                                  " its container was stopped and removed") from None
            raise JobTimedOut(
                f"the {spec.role} ran past the timeout of {spec.timeout_s / 60:g} min; its container was stopped "
                "and removed (raise --timeout to give it longer)"
            ) from None
        reader.join(timeout=60)  # the container has exited: its stream ends once the last lines are read
        if on_exit is not None:
            on_exit(container_id, code)
        return ContainerResult(code, container_id, time.monotonic() - started)
    finally:
        if container_id is not None:
            try:
                engine.remove(container_id)  # with the anonymous volumes the image's VOLUMEs made
            except (EngineError, OSError):
                pass
        if stream is not None:
            try:
                stream.close()
            except OSError:
                pass


def nano_cpus(cpus: float, have: int) -> int:
    """--cpus as nano-CPUs, cut to the engine's CPU count ``have`` (Docker refuses a limit above it; 0: the
    engine did not say, ask for the limit as given)."""
    wanted = min(cpus, have) if have else cpus
    return max(int(wanted * 1_000_000_000), 10_000_000)  # Docker's smallest limit: 0.01 CPU


def _frames(stream: AttachStream):
    """The payloads of Docker's multiplexed stream (an 8-byte header: stream, 0, 0, 0, a big-endian length),
    in pieces of at most READ_BYTES, stdout and stderr in the order they came."""
    while True:
        header = b""
        while len(header) < 8:
            data = stream.read(8 - len(header))
            if not data:
                return
            header += data
        size = int.from_bytes(header[4:8], "big")
        while size:
            data = stream.read(min(size, READ_BYTES))
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


def _pump(engine: Engine, container_id: str, stream: AttachStream, on_line: Callable[[str], bool | None]) -> None:
    """Hand each line of the container's output to ``on_line``; kill the container the first time it says so."""
    splitter = LineSplitter()
    stopped = False

    def hand(lines: list[bytes]) -> None:
        nonlocal stopped
        for line in lines:
            if on_line(_text(line)) and not stopped:
                stopped = True
                _kill(engine, container_id)

    try:
        for data in _frames(stream):
            hand(splitter.feed(data))
        hand(splitter.flush())
    except Exception:  # noqa: BLE001 - the stream broke or on_line failed: what was read is kept, and a
        try:  # container whose output no one reads any more (budgets unwatched) is not left running
            _kill(engine, container_id)
        except Exception:  # noqa: BLE001,S110 - the engine went away too: run() removes it or says so
            pass


def _kill(engine: Engine, container_id: str) -> None:
    try:
        engine.kill(container_id)
    except (EngineError, OSError):
        pass


def _start_error(exc, spec: ContainerSpec) -> DockerError:
    text = first_line(exc)
    if "could not select device driver" in text or "nvidia" in text.lower():
        return DockerError(f"--gpus: this Docker engine cannot give containers GPUs ({text}); install the NVIDIA "
                           "container toolkit or drop --gpus")
    if "network" in text.lower() and "not found" in text.lower():
        return DockerError(f"--network: {spec.network} does not exist ({text}); create it or use bridge, host or none")
    return DockerError(f"Docker refused to start the {spec.role} container: {text}")


def first_line(exc) -> str:
    """What Docker said, in one line: the first line of the API's explanation (or of the error's text), or the
    error's class name when it said nothing."""
    text = str(getattr(exc, "explanation", None) or exc).strip()
    return text.splitlines()[0] if text else exc.__class__.__name__


def remove_job_containers(engine: Engine, job_id: str | None = None, dry_run: bool = False) -> list[str]:
    """Remove containers Toren created (by label), for one job or all, with their anonymous volumes (those of the
    image's VOLUMEs); returns their ids. ``dry_run``: only the ids of those it would remove."""
    label = f"{LABEL_JOB}={job_id}" if job_id else f"{LABEL_MANAGED}=1"
    removed = []
    for c in engine.containers({"label": [label]}):
        if not dry_run:
            engine.remove(c["Id"])
        removed.append(c["Id"])
    return removed
