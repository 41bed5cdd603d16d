"""A threaded service on a unix socket that a job mounts into its container (the key proxy, the egress proxy).

The socket lives in a private directory of its own (mode 0700, a short path: socket paths are limited to about
100 bytes), is mode 0600 and owned by the agent's uid, and is removed with that directory when the service
stops. The directory's name starts with ``toren-``, so a leftover is easy to recognise.
"""

from __future__ import annotations

import os
import socketserver
import tempfile
import threading
from pathlib import Path


class UnixSocketService:
    def __init__(self, name: str, handler: type[socketserver.BaseRequestHandler],
                 owner: tuple[int, int] | None = None) -> None:
        self.socket_path = Path(tempfile.mkdtemp(prefix="toren-")) / f"{name}.sock"

        class Server(socketserver.ThreadingUnixStreamServer):
            daemon_threads = True

            def get_request(self):  # http.server's handlers want an (address, port) pair
                conn, _ = super().get_request()
                return conn, ("unix", 0)

        self._server = Server(str(self.socket_path), handler)
        os.chmod(self.socket_path, 0o600)  # only the agent's user (and ours) may connect
        if owner is not None and os.geteuid() == 0:
            os.chown(self.socket_path, *owner)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True, name=name)

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
