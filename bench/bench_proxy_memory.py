"""The host process's memory while a client posts a 1 GiB body to the key proxy (issue 12, finding 1).

The key proxy and a model API that reads and drops what it gets run in this process; the client is a child
process that streams the body from a generator (1 MiB at a time), so what is measured is the proxy's side only.
Three shapes: a 1 GiB Content-Length (over the 32 MiB cap: refused before the body), a 1 GiB chunked body
(streamed upstream until the cap, then refused), and 1 GiB under a cap raised to 2 GiB (streamed through
whole). Prints the idle baseline and the peak resident size (VmHWM, reset before each shape); asserts nothing.

    .venv/bin/python bench/bench_proxy_memory.py
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.fakes.base import drain_body  # noqa: E402
from toren_action.core.redact import Secret  # noqa: E402
from toren_action.sandbox.keyproxy import KeyProxy  # noqa: E402
from toren_action.sandbox.sockets import MAX_BODY_BYTES  # noqa: E402

MiB = 1024 * 1024
GiB = 1024 * MiB


def status(field: str) -> float:
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(field)


def reset_peak() -> bool:
    try:  # Linux 4.0+: "5" resets VmHWM to the current resident size
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class Drop(BaseHTTPRequestHandler):
    """The model API: reads the body 64 KiB at a time, keeps nothing, answers with the count."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_POST(self):
        n = drain_body(self)
        data = b'{"bytes": %d}' % n
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def client(path: str, mode: str) -> None:
    """The child: POST 1 GiB from a generator, print how much went out and the answer's status line."""

    def body():
        block = b"x" * MiB
        for _ in range(1024):
            yield b"%x\r\n%s\r\n" % (MiB, block) if mode == "chunked" else block
        if mode == "chunked":
            yield b"0\r\n\r\n"

    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(60)
    s.connect(path)
    framing = "Transfer-Encoding: chunked" if mode == "chunked" else f"Content-Length: {GiB}"
    s.sendall(f"POST /v1/messages HTTP/1.1\r\nHost: localhost\r\n{framing}\r\n\r\n".encode())
    sent = 0
    try:
        for piece in body():
            s.sendall(piece)
            sent += len(piece)
    except OSError:
        pass
    answer = b""
    try:
        while not (answer.endswith(b"0\r\n\r\n") or (b"\r\n\r\n" in answer and b"Connection: close" in answer
                                                      and answer.endswith(b"}"))):
            data = s.recv(65536)
            if not data:
                break
            answer += data
    except OSError:
        pass
    print(sent // MiB, answer.split(b"\r\n", 1)[0].decode(errors="replace"), flush=True)


def main() -> None:
    class Upstream(ThreadingHTTPServer):
        def handle_error(self, request, client_address):  # the proxy cut a refused body off: expected
            pass

    upstream = Upstream(("127.0.0.1", 0), Drop)
    upstream.daemon_threads = True
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{upstream.server_address[1]}"
    key = Secret("ANTHROPIC_API_KEY", "sk-ant-bench-0123456789")
    proxy = KeyProxy(url, key).start()
    raised = KeyProxy(url, key, max_body_bytes=2 * GiB).start()
    time.sleep(0.2)
    idle = status("VmRSS")
    print(f"key proxy, idle (this process: proxy + dropping upstream)   {idle:7.1f} MiB resident")
    print(f"{'1 GiB body':<34} {'sent':>9} {'answer':<32} {'peak RSS':>9} {'growth':>8} {'time':>6}")
    shapes = [("Content-Length, 32 MiB cap", proxy, "length"), ("chunked, 32 MiB cap", proxy, "chunked"),
              ("Content-Length, cap raised to 2 GiB", raised, "length")]
    for name, p, mode in shapes:
        exact = reset_peak()
        base = status("VmRSS")
        started = time.perf_counter()
        out = subprocess.run([sys.executable, __file__, "--client", str(p.socket_path), mode],
                             capture_output=True, text=True, timeout=300).stdout.strip().split(maxsplit=1)
        took = time.perf_counter() - started
        peak = status("VmHWM") if exact else max(status("VmHWM"), base)
        print(f"{name:<34} {out[0]:>5} MiB {out[1][:32]:<32} {peak:6.1f} MiB {peak - base:+6.1f} {took:5.1f}s")
    print(f"(cap: MAX_BODY_BYTES = {MAX_BODY_BYTES // MiB} MiB; VmHWM {'reset per shape' if exact else 'since start'})")
    proxy.stop()
    raised.stop()
    upstream.shutdown()


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--client":
        client(sys.argv[2], sys.argv[3])
    else:
        main()
