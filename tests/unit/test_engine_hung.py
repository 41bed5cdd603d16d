"""container.run against an engine that has stopped managing its container: the job still ends."""

from __future__ import annotations

import json
import socket
import threading
import time

from toren_action.core.errors import JobTimedOut
from toren_action.sandbox import container
from toren_action.sandbox.engine import Engine


class HungEngine:
    """Answers info/create/start at once; attach upgrades then says nothing; wait sends its head and then
    nothing; kill and remove fail (500): an engine that has stopped managing the container."""

    def __init__(self, path) -> None:
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(self.path)
        self.sock.listen(16)
        self.held: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            conn, _ = self.sock.accept()
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(65536)
            line = data.split(b"\r\n", 1)[0].decode()
            def send(status, body=b"", extra=()):
                head = [f"HTTP/1.1 {status}", f"Content-Length: {len(body)}", *extra]
                conn.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + body)
                conn.close()
            if "/info" in line:
                send("200 OK", json.dumps({"NCPU": 2}).encode())
            elif "/containers/create" in line:
                send("201 Created", json.dumps({"Id": "c1"}).encode())
            elif "/attach" in line:
                conn.sendall(b"HTTP/1.1 101 UPGRADED\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\n")
                self.held.append(conn)  # open, silent
            elif "/start" in line:
                send("204 No Content")
            elif "/wait" in line:
                conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                self.held.append(conn)
            else:  # kill, remove
                msg = json.dumps({"message": "cannot kill container c1: tried to kill container, "
                                             "but did not receive an exit event"}).encode()
                send("500 Internal Server Error", msg)


def test_a_timed_out_job_returns_even_when_the_engine_cannot_kill_its_container(tmp_path):
    HungEngine(tmp_path / "s")
    engine = Engine({"DOCKER_HOST": f"unix://{tmp_path}/s"}, timeout=5)
    spec = container.ContainerSpec(image="i", command=["x"], job_id="j", user="1:1", mounts=[], timeout_s=1)
    box: dict = {}

    def go() -> None:
        try:
            container.run(engine, spec, lambda line: None)
        except BaseException as exc:  # noqa: BLE001
            box["exc"] = exc

    t = threading.Thread(target=go, daemon=True)
    started = time.monotonic()
    t.start()
    t.join(timeout=20)
    assert not t.is_alive(), "container.run hangs (in AttachStream.close(): the reader thread holds its lock)"
    assert isinstance(box.get("exc"), JobTimedOut) and time.monotonic() - started < 20
