"""The container's output is hostile: whatever it prints (no newlines, any bytes, invalid UTF-8, a flood), the
host process reads it in linear time and bounded memory, and the line splitter keeps every byte."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import BASE_IMAGE, subprocess_env
from toren_action.sandbox.container import MAX_LINE_BYTES, LineSplitter


def split(data: bytes, chunks: list[int] | None = None, limit: int = 16) -> list[bytes]:
    s = LineSplitter(limit)
    out: list[bytes] = []
    pos = 0
    for size in chunks or []:
        out += s.feed(data[pos:pos + size])
        pos += size
    out += s.feed(data[pos:])
    return out + s.flush()


def test_lines_are_split_at_newlines_and_the_last_one_is_kept():
    assert split(b"a\nbb\n\nccc") == [b"a", b"bb", b"", b"ccc"]
    assert split(b"a\n") == [b"a"] and split(b"") == []


def test_an_over_long_line_goes_on_as_further_lines_of_at_most_the_limit():
    assert split(b"x" * 40 + b"\ny") == [b"x" * 16, b"x" * 16, b"x" * 8, b"y"]
    assert split(b"x" * 16 + b"\n") == [b"x" * 16]  # exactly the limit is one line


def test_a_cut_never_falls_inside_a_utf8_sequence():
    text = ("é" * 20).encode()  # two bytes each: a cut at 16 falls between characters...
    assert all(p.decode() for p in split(text))
    text = ("a" + "€" * 10).encode()  # ...and here, inside one unless it moves back
    parts = split(text)
    assert [p.decode() for p in parts] and b"".join(parts) == text and max(map(len, parts)) <= 16
    broken = b"\x80" * 40  # continuation bytes only: not UTF-8, cut at the limit
    assert split(broken) == [b"\x80" * 16, b"\x80" * 16, b"\x80" * 8]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.lists(st.integers(min_value=0, max_value=50), max_size=10))
def test_any_bytes_in_any_chunks(data, chunks):
    lines = split(data, chunks)
    assert lines == split(data)  # how the stream was cut into reads does not matter
    assert all(len(line) <= 16 and b"\n" not in line for line in lines)
    assert b"".join(lines) == data.replace(b"\n", b"")  # nothing is lost or added
    if all(len(line) <= 16 for line in data.split(b"\n")):
        assert b"\n".join(lines) == data.removesuffix(b"\n")


def test_the_splitter_holds_at_most_about_one_line():
    s = LineSplitter(1024)
    for _ in range(1000):
        for line in s.feed(b"z" * 777):
            assert len(line) == 1024
        assert len(s._pending) <= 1024


def test_one_huge_read_is_split_in_linear_time():
    import time

    t = time.perf_counter()
    s = LineSplitter()
    lines = s.feed(b"a" * (64 << 20))
    assert len(lines) == 63  # the last full piece waits: the line may end right after it
    lines += s.flush()
    assert time.perf_counter() - t < 5 and len(lines) == 64 and {len(x) for x in lines} == {MAX_LINE_BYTES}


_FLOOD = r"""
import json, sys, time
from toren_action.sandbox import container
from toren_action.sandbox.container import ContainerSpec
def status(key):
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith(key + ":"))
client = container.client()
with open("/proc/self/clear_refs", "w") as fh:
    fh.write("5")  # the peak (VmHWM) starts again from here
before = status("VmRSS")
seen = {"lines": 0, "bytes": 0, "longest": 0, "last": ""}
def on_line(line):
    seen["lines"] += 1
    seen["bytes"] += len(line)
    seen["longest"] = max(seen["longest"], len(line))
    seen["last"] = line[:50]
spec = ContainerSpec(image=sys.argv[1], command=["/bin/sh", "-c", sys.argv[2]], job_id=sys.argv[3],
                     user="65534:65534", mounts=[], timeout_s=300, name=sys.argv[3], role="test")
t = time.monotonic()
result = container.run(client, spec, on_line)
seen.update(exit_code=result.exit_code, seconds=time.monotonic() - t,
            growth_kib=status("VmHWM") - before)
print(json.dumps(seen))
"""


def flood(command: str) -> dict:
    name = f"toren-test-flood-{uuid.uuid4().hex[:8]}"
    done = subprocess.run([sys.executable, "-c", _FLOOD, BASE_IMAGE, command, name], env=subprocess_env(),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.docker
def test_256_mib_without_a_newline_is_read_in_bounded_time_and_memory(docker_client):
    seen = flood("head -c 268435456 /dev/zero | tr '\\0' a; echo; echo END")
    assert seen["exit_code"] == 0 and seen["last"] == "END"
    assert seen["bytes"] == (256 << 20) + 3  # every byte came through
    assert seen["lines"] == 256 + 1 and seen["longest"] == MAX_LINE_BYTES
    assert seen["growth_kib"] < 100 * 1024, seen  # was +512 MiB and more with one growing buffer
    assert seen["seconds"] < 120, seen


@pytest.mark.docker
def test_random_bytes_and_invalid_utf8_are_read_in_bounded_memory(docker_client):
    seen = flood("head -c 67108864 /dev/urandom; printf '\\377\\376\\n\\300END\\n'")
    assert seen["exit_code"] == 0 and seen["last"] == "\ufffdEND"
    assert seen["longest"] <= MAX_LINE_BYTES and seen["growth_kib"] < 100 * 1024, seen


@pytest.mark.docker
def test_millions_of_short_lines_on_stdout_and_stderr(docker_client):
    # END on the same stream as the lines before it: stdout and stderr are two pipes, not ordered with each other
    seen = flood("yes abcdefgh | head -n 1000000; yes ijk | head -n 1000000 >&2; echo END >&2")
    assert seen["lines"] == 2_000_001 and seen["last"] == "END" and seen["growth_kib"] < 100 * 1024, seen
