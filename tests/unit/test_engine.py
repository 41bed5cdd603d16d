"""The Engine API client (sandbox/engine.py) against answers written by hand on a unix socket: what a real engine
sends (chunked, of a length, to the end), and what a broken or hostile one could (no end, huge, many headers)."""

from __future__ import annotations

import json
import socket
import threading

import pytest

from toren_action.core.errors import DockerError
from toren_action.sandbox import container, engine
from toren_action.sandbox.engine import Engine, EngineError, NotFound, Unreachable


class Answers:
    """A unix-socket server that answers each connection with the next canned bytes, and keeps the requests."""

    def __init__(self, path, answers: list[bytes]) -> None:
        self.path = str(path)
        self.answers = list(answers)
        self.requests: list[bytes] = []
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(self.path)
        self.sock.listen(8)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while self.answers:
            conn, _ = self.sock.accept()
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    data += conn.recv(65536)
                head, _, rest = data.partition(b"\r\n\r\n")
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                while len(rest) < length:
                    rest += conn.recv(65536)
                self.requests.append(head + b"\r\n\r\n" + rest)
                conn.sendall(self.answers.pop(0))

    def engine(self) -> Engine:
        return Engine({"DOCKER_HOST": f"unix://{self.path}"}, timeout=5)


def answer(status: str, body: bytes = b"", headers: tuple[str, ...] = ()) -> bytes:
    head = [f"HTTP/1.1 {status}", *headers]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def test_a_body_of_a_length_a_chunked_one_and_one_to_the_end_are_read_whole(tmp_path):
    data = json.dumps({"Id": "sha256:" + "a" * 64, "Os": "linux"}).encode()
    chunked = b"".join(f"{len(p):x}\r\n".encode() + p + b"\r\n" for p in (data[:10], data[10:])) + b"0\r\n\r\n"
    server = Answers(tmp_path / "s", [
        answer("200 OK", data, (f"Content-Length: {len(data)}",)),
        answer("200 OK", chunked, ("Transfer-Encoding: chunked",)),
        answer("200 OK", data),
    ])
    e = server.engine()
    for _ in range(3):
        assert e.image("toren/agent:x")["Os"] == "linux"
    assert server.requests[0].startswith(b"GET /images/toren/agent:x/json HTTP/1.1\r\n")


def test_the_engines_error_is_its_message_in_one_line_and_404_is_not_found(tmp_path):
    msg = json.dumps({"message": "No such container: abc\nsecond line"}).encode()
    server = Answers(tmp_path / "s", [
        answer("404 Not Found", msg, (f"Content-Length: {len(msg)}",)),
        answer("500 Internal Server Error", b"not json at all"),
        answer("404 Not Found", msg, (f"Content-Length: {len(msg)}",)),
    ])
    e = server.engine()
    with pytest.raises(NotFound) as gone:
        e.start("abc")
    assert gone.value.explanation == "No such container: abc" and gone.value.status == 404
    with pytest.raises(EngineError) as broken:
        e.start("abc")
    assert not isinstance(broken.value, NotFound) and container.first_line(broken.value) == "not json at all"
    assert e.image("nothing") is None  # an absent image is an answer, not an error


@pytest.mark.parametrize("shape", ["length", "chunked", "to the end"])
def test_an_answer_over_the_bound_is_refused_not_held(tmp_path, monkeypatch, shape):
    monkeypatch.setattr(engine, "MAX_BODY_BYTES", 1000)
    big = b"x" * 5000
    headers = {"length": (f"Content-Length: {len(big)}",), "chunked": ("Transfer-Encoding: chunked",),
               "to the end": ()}[shape]
    body = (b"".join(b"200\r\n" + big[i:i + 512] + b"\r\n" for i in range(0, 5000, 512)) + b"0\r\n\r\n"
            if shape == "chunked" else big)
    server = Answers(tmp_path / "s", [answer("200 OK", body, headers)])
    with pytest.raises(EngineError, match="over 1,000 bytes"):
        server.engine().info()


@pytest.mark.parametrize("head", [
    ("X-Many: y",) * 150,  # endless headers
    ("X-Long: " + "y" * 70_000,),  # one endless line
])
def test_an_answer_with_too_many_or_too_long_headers_is_refused(tmp_path, head):
    server = Answers(tmp_path / "s", [answer("200 OK", b"{}", head)])
    with pytest.raises(EngineError, match="headers|64 kB"):
        server.engine().info()


def test_a_chunked_answer_with_an_endless_trailer_is_refused(tmp_path):
    server = Answers(tmp_path / "s", [answer("200 OK", b"2\r\n{}\r\n0\r\n" + b"X-T: y\r\n" * 150 + b"\r\n",
                                             ("Transfer-Encoding: chunked",))])
    with pytest.raises(EngineError, match="trailer lines"):
        server.engine().info()


@pytest.mark.parametrize("size", [b"-1", b"", b"0x10", b"zz"])
def test_a_chunk_of_a_size_that_is_not_hex_digits_is_refused(tmp_path, size):
    server = Answers(tmp_path / "s", [answer("200 OK", size + b"\r\n{}\r\n0\r\n\r\n",
                                             ("Transfer-Encoding: chunked",))])
    with pytest.raises(EngineError, match="bad chunk"):
        server.engine().info()


def test_ping_speaks_the_engines_api_version_and_refuses_one_too_old(tmp_path):
    server = Answers(tmp_path / "s", [
        answer("200 OK", b"OK", ("Api-Version: 1.43", "Content-Length: 2")),
        answer("200 OK", b"{}", ("Content-Length: 2",)),
        answer("200 OK", b"OK", ("Api-Version: 1.39", "Content-Length: 2")),
    ])
    e = server.engine()
    e.ping()
    e.info()
    assert server.requests[1].startswith(b"GET /v1.43/info HTTP/1.1")
    with pytest.raises(Unreachable, match="speaks Engine API 1.39; Toren needs 1.40"):
        server.engine().ping()


def test_no_engine_is_one_clear_line(tmp_path, monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/none.sock")
    with pytest.raises(DockerError) as exc:
        container.client()
    assert exc.value.exit_code == 4 and "no Docker engine answers" in str(exc.value)
    assert f"unix://{tmp_path}/none.sock: no socket there" in str(exc.value)


@pytest.mark.parametrize("host", ["ssh://me@builder", "npipe:////./pipe/docker_engine"])
def test_a_docker_host_it_cannot_reach_says_how_to(host):
    with pytest.raises(Unreachable, match="unix socket or tcp; for ssh, forward the socket"):
        Engine({"DOCKER_HOST": host})


def test_a_tcp_docker_host_is_taken_as_docker_takes_it(tmp_path):
    e = Engine({"DOCKER_HOST": "tcp://127.0.0.1:2376"})
    assert e._address == ("127.0.0.1", 2376) and e._tls is None
    tls = Engine({"DOCKER_HOST": "tcp://127.0.0.1", "DOCKER_TLS_VERIFY": "1", "DOCKER_CERT_PATH": str(tmp_path)})
    assert tls._address == ("127.0.0.1", 2376) and tls._tls.check_hostname  # TLS: its port, and the host checked
    assert Engine({"DOCKER_HOST": "tcp://127.0.0.1"})._address == ("127.0.0.1", 2375)


@pytest.mark.parametrize("host", ["tcp://localhost:bad", "tcp://[::1", "tcp://:2375"])
def test_a_malformed_docker_host_is_one_line_naming_it(host, monkeypatch):
    with pytest.raises(Unreachable, match="DOCKER_HOST="):
        Engine({"DOCKER_HOST": host})
    monkeypatch.setenv("DOCKER_HOST", host)
    with pytest.raises(DockerError, match="no Docker engine answers"):
        container.client()


def test_the_attach_stream_is_read_after_the_upgrade_without_losing_a_byte(tmp_path):
    frames = b"\x01\x00\x00\x00\x00\x00\x00\x06hello\n" + b"\x02\x00\x00\x00\x00\x00\x00\x04err\n"
    server = Answers(tmp_path / "s", [answer("101 UPGRADED", frames, ("Connection: Upgrade", "Upgrade: tcp"))])
    stream = server.engine().attach("abc")
    try:
        assert b"".join(container._frames(stream)) == b"hello\nerr\n"
    finally:
        stream.close()
    assert b"Upgrade: tcp" in server.requests[0]


def test_the_container_config_is_hardened_whatever_the_spec():
    spec = container.ContainerSpec(image="img", command=["sh", "-c", "x"], job_id="j1", user="1000:1000",
                                   mounts=[], environment={"A": "b=c"}, memory="512m", cpus=8, gpus="device=0,2")
    config = container.create_config(spec, ncpu=2)
    host = config["HostConfig"]
    assert host["CapDrop"] == ["ALL"] and host["SecurityOpt"] == ["no-new-privileges"] and host["Init"] is True
    assert host["LogConfig"]["Type"] == "none"  # nothing the container prints reaches the engine's disk
    assert host["Memory"] == host["MemorySwap"] == 512 << 20  # no swap past the limit
    assert host["NanoCpus"] == 2_000_000_000  # cut to the engine's CPUs
    assert host["DeviceRequests"][0]["DeviceIDs"] == ["0", "2"] and config["Env"] == ["A=b=c"]
    assert config["Labels"] == {"toren.job": "j1", "toren.managed": "1", "toren.role": "agent"}
    assert container.device_requests("all")[0]["Count"] == -1 and container.device_requests("2")[0]["Count"] == 2
    assert "DeviceRequests" not in container.create_config(
        container.ContainerSpec(image="i", command=[], job_id="j", user="1:1", mounts=[]), ncpu=0)["HostConfig"]
