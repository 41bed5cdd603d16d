"""A job's own process: how it takes termination signals and how it tells the store it is alive."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from toren_action.core.errors import WorkerLost
from toren_action.jobs.store import Store, pid_alive


def stop_on_termination(parent: int | None = None) -> None:
    """SIGTERM and SIGHUP take the same path as Ctrl-C: container removed, job marked cancelled. In a job
    started by the worker (``parent``), a SIGTERM that comes because the worker died marks it worker lost."""
    import signal

    def interrupt(signum, _frame):
        if parent is not None and os.getppid() != parent:
            raise WorkerLost()
        raise KeyboardInterrupt(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGHUP, interrupt)


def heartbeat(home: Path, job_id: str) -> threading.Thread:
    """Beat into the store from a thread (its own connection) while this job's process lives and the job has not
    ended."""
    from toren_action.jobs.worker import HEARTBEAT_S

    def beat():
        store = None
        while True:
            try:
                store = store or Store(home)
                if not store.beat(job_id):  # the job ended (or is gone): nothing left to say
                    return
            except Exception:  # noqa: BLE001,S110 - a busy database: beat next time
                pass
            time.sleep(HEARTBEAT_S)

    thread = threading.Thread(target=beat, daemon=True, name="heartbeat")
    thread.start()
    return thread


def is_job_process(pid: int, job_id: str) -> bool:
    """The pid still belongs to this job's process (not to a process that reused it after a reboot): safe to
    signal. Stricter than the store's pid_alive (which also counts a job run by the Action)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:  # no /proc (not Linux): trust the pid while it is alive and the user's
        return pid_alive(pid)
    return job_id.encode() in cmdline or b"--disable-daemon" in cmdline
