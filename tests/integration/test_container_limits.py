"""The container's resource limits, read back from Docker and from inside the container while it runs; and the
anonymous volumes of an image's VOLUME, removed with the container."""

from __future__ import annotations

import io
import uuid

import pytest

from tests.conftest import BASE_IMAGE
from toren_action.sandbox import container
from toren_action.sandbox.container import ContainerSpec

pytestmark = pytest.mark.docker


def spec(command: str, **kw) -> ContainerSpec:
    name = f"toren-test-{uuid.uuid4().hex[:10]}"
    base = dict(image=BASE_IMAGE, command=["/bin/sh", "-c", command], job_id=name, user="65534:65534", mounts=[],
                timeout_s=120, name=name, role="test")
    return ContainerSpec(**{**base, **kw})


def run_and_inspect(docker_client, s: ContainerSpec) -> tuple[container.ContainerResult, dict, list[str]]:
    """Run the container; when it prints its first line, inspect it (it is still running then)."""
    seen: dict = {}
    lines: list[str] = []

    def on_line(line: str) -> None:
        if not seen:
            seen.update(docker_client.api.inspect_container(s.name))
        lines.append(line)

    result = container.run(container.client(), s, on_line)
    return result, seen, lines


def cgroup_read(path_v1: str, path_v2: str) -> str:
    return f"cat /sys/fs/cgroup/{path_v1} 2>/dev/null || cat /sys/fs/cgroup/{path_v2}"


def test_cpu_memory_swap_and_log_limits_hold_in_the_running_container(docker_client):
    s = spec("echo ready; " + cgroup_read("cpu/cpu.cfs_quota_us", "cpu.max") + "; "
             + cgroup_read("cpu/cpu.cfs_period_us", "cpu.max") + "; "
             + cgroup_read("memory/memory.limit_in_bytes", "memory.max") + "; "
             + "cat /sys/fs/cgroup/memory/memory.memsw.limit_in_bytes 2>/dev/null || "
               "cat /sys/fs/cgroup/memory.swap.max 2>/dev/null || echo no-swap-accounting",
             cpus=0.5, memory="96m")
    result, info, lines = run_and_inspect(docker_client, s)
    assert result.exit_code == 0, lines
    host = info["HostConfig"]
    assert host["NanoCpus"] == 500_000_000
    assert host["Memory"] == 96 << 20 and host["MemorySwap"] == host["Memory"]  # no swap past the memory limit
    assert host["LogConfig"]["Type"] == "none"  # nothing of the output is kept on the engine's disk
    quota, period, memory, swap = lines[1:5]
    if quota.split()[0] != "max" and " " not in quota:  # cgroup v1: quota and period apart
        assert int(quota) / int(period) == 0.5
    else:  # cgroup v2: "50000 100000"
        q, p = quota.split()
        assert int(q) / int(p) == 0.5
    assert int(memory) == 96 << 20
    if swap not in ("no-swap-accounting", "max"):
        assert int(swap) in (96 << 20, 0)  # v1: memory+swap equal to memory; v2: swap.max 0


def test_more_cpus_than_the_engine_has_are_cut_to_what_it_has(docker_client):
    have = docker_client.info()["NCPU"]
    result, info, _ = run_and_inspect(docker_client, spec("echo ready", cpus=have + 64))
    assert result.exit_code == 0 and info["HostConfig"]["NanoCpus"] == have * 1_000_000_000


def test_the_default_is_two_cpus_or_what_the_engine_has():
    assert ContainerSpec(image="x", command=[], job_id="j", user="1:1", mounts=[]).cpus == 2.0


def test_a_container_that_allocates_past_its_memory_is_killed_not_swapped(docker_client):
    # 256 MiB touched page by page against a 64 MiB limit: with swap it could page out and live on
    grab = "b = bytearray(256 << 20); b[::4096] = b'x' * (len(b) // 4096); print('survived')"
    result, info, lines = run_and_inspect(docker_client, spec(f'echo ready; python3 -c "{grab}"; echo "exit=$?"',
                                                              memory="64m"))
    assert info["HostConfig"]["MemorySwap"] == 64 << 20
    assert "survived" not in lines and "exit=137" in lines, (result, lines)  # SIGKILL from the OOM killer


@pytest.fixture
def volume_image(docker_client):
    """An image built FROM Toren's base that declares a VOLUME (legacy builder, no registry)."""
    tag = f"toren-test/volume:{uuid.uuid4().hex[:10]}"
    docker_client.images.build(fileobj=io.BytesIO(f"FROM {BASE_IMAGE}\nVOLUME /data\n".encode()), tag=tag, rm=True)
    yield tag
    docker_client.images.remove(tag, force=True)


def volume_names(info: dict) -> list[str]:
    return [m["Name"] for m in info.get("Mounts", []) if m.get("Type") == "volume"]


def test_the_anonymous_volume_of_an_images_volume_goes_with_the_container(docker_client, volume_image):
    before = {v.name for v in docker_client.volumes.list()}
    result, info, _ = run_and_inspect(docker_client, spec("echo ready; echo left-behind > /data/x 2>/dev/null; true",
                                                          image=volume_image))
    made = volume_names(info)
    assert result.exit_code == 0 and len(made) == 1  # /data was a fresh anonymous volume while it ran
    after = {v.name for v in docker_client.volumes.list()}
    assert made[0] not in after and made[0] not in before  # made for this container, gone with it


def test_removing_a_jobs_containers_removes_their_anonymous_volumes(docker_client, volume_image):
    job = f"toren-test-{uuid.uuid4().hex[:10]}"
    c = docker_client.containers.run(volume_image, ["sleep", "60"], detach=True,
                                     labels={container.LABEL_JOB: job, container.LABEL_MANAGED: "1"})
    try:
        c.reload()
        made = volume_names(c.attrs)
        assert len(made) == 1
        assert container.remove_job_containers(container.client(), job) == [c.id]
        assert made[0] not in {v.name for v in docker_client.volumes.list()}
    finally:
        try:
            c.remove(v=True, force=True)
        except Exception:  # noqa: BLE001,S110 - removed by the test already
            pass


def test_a_container_whose_output_can_no_longer_be_read_is_stopped(docker_client):
    def on_line(line: str) -> None:
        raise RuntimeError("the job log cannot be written")

    result = container.run(container.client(), spec("echo hello; sleep 60", timeout_s=120), on_line)
    assert result.exit_code == 137 and result.duration_s < 30  # killed at once, not left to its timeout
