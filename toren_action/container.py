"""Running one hardened container with the Docker SDK: live output, timeout, removal whatever happens."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from toren_action.errors import DockerError, JobTimedOut
from toren_action.validate import Mount

LABEL_JOB = "toren.job"
LABEL_MANAGED = "toren.managed"


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
    memory: str = "4g"
    pids_limit: int = 1024
    timeout_s: float = 3600.0
    name: str | None = None
    role: str = "agent"


@dataclass
class ContainerResult:
    exit_code: int
    container_id: str
    duration_s: float


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
        on_start: Callable[[str], None] | None = None) -> ContainerResult:
    """Create, start and wait for a container; stream its output line by line to ``on_line``. When ``on_line``
    returns True (a budget passed, a bad key), the container is killed at once.

    The container is removed on every path out of here: normal exit, timeout, error or Ctrl-C.
    """
    import docker.errors
    import requests.exceptions
    from docker.types import Mount as DockerMount

    mounts = [DockerMount(m.target, m.source, type="bind", read_only=m.read_only) for m in spec.mounts]
    container = None
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
                init=True,
                detach=True,
            )
            if on_start:
                on_start(container.id)
            container.start()
        except docker.errors.APIError as exc:
            raise _start_error(exc, spec) from None

        reader = threading.Thread(target=_pump, args=(container, on_line), daemon=True)
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
        return ContainerResult(int(status.get("StatusCode", 1)), container.id, time.monotonic() - started)
    finally:
        if container is not None:
            try:
                container.remove(force=True)
            except docker.errors.NotFound:
                pass
            except docker.errors.APIError:
                pass


def _pump(container, on_line: Callable[[str], bool | None]) -> None:
    pending = b""
    stopped = False
    try:
        for chunk in container.logs(stream=True, follow=True, stdout=True, stderr=True):
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                if on_line(line.decode("utf-8", errors="replace").rstrip("\r")) and not stopped:
                    stopped = True
                    _kill(container)
    except Exception:  # noqa: BLE001,S110 - the container went away; what was read is kept
        pass
    if pending:
        on_line(pending.decode("utf-8", errors="replace"))


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
    text = getattr(exc, "explanation", None) or str(exc)
    return str(text).strip().splitlines()[0] if str(text).strip() else exc.__class__.__name__


def remove_job_containers(docker_client, job_id: str | None = None) -> list[str]:
    """Remove containers Toren created (by label), for one job or all; returns their ids."""
    label = f"{LABEL_JOB}={job_id}" if job_id else f"{LABEL_MANAGED}=1"
    removed = []
    for c in docker_client.containers.list(all=True, filters={"label": label}):
        c.remove(force=True)
        removed.append(c.id)
    return removed
