"""The background worker: one per TOREN_HOME, started on demand by `toren run`, guarded by a lock file.

It takes queued jobs oldest first and runs each in its own process (`python -m toren_action _run-job ID`),
at most ``max_jobs`` at a time; beats a heartbeat into the store; marks jobs whose process died as failed
(`worker lost`) and removes their containers; and exits after an idle period. Job processes die with the
worker (PR_SET_PDEATHSIG), so a killed worker never leaves a job running unwatched: the next worker, or
`toren status`, reports it as lost within seconds.

A job runs with the environment of the `toren run` that submitted it, not the worker's: `toren run` writes
it to ``jobs/<id>/env.json`` (mode 0600) and the job's process reads and deletes it before anything else. The
same file carries the job's inputs as given: the job record holds them with token formats masked.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from toren_action.core.errors import UsageError
from toren_action.core.paths import job_dir, log_path, write_private
from toren_action.core.states import JobState
from toren_action.jobs.store import Store
from toren_action.sandbox import container

LOCK_NAME = "worker.lock"
ENV_FILE = "env.json"
POLL_S = 0.25
HEARTBEAT_S = 2.0


def max_jobs_default() -> int:
    """Jobs at once when not configured: one per core, and no more than one per 4 GiB of memory."""
    cpus = os.cpu_count() or 1
    try:
        mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / (1 << 30)
    except (ValueError, OSError):
        mem_gib = 8.0
    return max(1, min(cpus, int(mem_gib // 4)))


def max_jobs(environ: dict[str, str] | None = None) -> int:
    env = os.environ if environ is None else environ
    raw = env.get("TOREN_MAX_JOBS")
    if not raw:
        return max_jobs_default()
    if not raw.isdigit() or not 1 <= int(raw) <= 256:
        raise UsageError("TOREN_MAX_JOBS", f"{raw!r} is not a number of jobs from 1 to 256")
    return int(raw)


def idle_seconds(environ: dict[str, str] | None = None) -> float:
    env = os.environ if environ is None else environ
    try:
        return max(float(env.get("TOREN_WORKER_IDLE_S", "60")), 0.5)
    except ValueError:
        return 60.0


def save_job_env(home: Path, job_id: str, environ: dict[str, str], inputs: dict | None = None) -> None:
    """The submitting shell's environment and the job's inputs as given, for the job's process (0600; deleted
    when the job starts)."""
    path = job_dir(home, job_id) / ENV_FILE
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_private(path, json.dumps({"environ": environ, "inputs": inputs}))


def take_job_env(home: Path, job_id: str) -> tuple[dict[str, str], dict | None] | None:
    """(environment, inputs) saved by save_job_env, the file deleted as it is read; None when it is missing."""
    path = job_dir(home, job_id) / ENV_FILE
    try:
        data = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return None
    finally:
        path.unlink(missing_ok=True)
    if not isinstance(data, dict) or not isinstance(data.get("environ"), dict):
        return None
    inputs = data.get("inputs")
    return data["environ"], inputs if isinstance(inputs, dict) else None


def discard_job_env(home: Path, job_id: str) -> None:
    (job_dir(home, job_id) / ENV_FILE).unlink(missing_ok=True)


def worker_running(home: Path) -> bool:
    try:
        fd = os.open(home / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def ensure_worker(home: Path) -> bool:
    """Start a worker unless one holds the lock. Returns True when one was started."""
    if worker_running(home):
        return False
    with open(home / "worker.log", "ab") as out:
        subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", "toren_action", "_worker"], stdin=subprocess.DEVNULL, stdout=out, stderr=out,
            start_new_session=True, cwd=str(home), env={**os.environ, "TOREN_HOME": str(home)},
        )
    return True


def _die_with(parent: int):
    """In the job's process, before exec: get SIGTERM when the worker dies (Linux), so the job removes its
    container and ends `worker lost`; if the worker is already gone, do not start at all."""

    def prepare() -> None:
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
        if os.getppid() != parent:
            os._exit(1)

    return prepare


def serve(home: Path) -> int:
    """The worker's loop. Returns when idle for idle_seconds(), or when another worker holds the lock."""
    lock_fd = os.open(home / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
    for attempt in range(5):  # `worker_running` holds the lock for an instant: try again before giving up
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if attempt == 4:
                os.close(lock_fd)
                return 0  # another worker serves this TOREN_HOME
            time.sleep(0.05)
    store = Store(home)
    limit, idle_for = max_jobs(), idle_seconds()
    running: dict[str, subprocess.Popen] = {}
    stopping = False

    def stop(_signum, _frame):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    last_busy = last_beat = time.monotonic()
    store.set_meta("worker", {"pid": os.getpid(), "started_at": time.time(), "max_jobs": limit})
    reap(store)
    try:
        while not stopping:
            now = time.monotonic()
            if now - last_beat >= HEARTBEAT_S:
                store.set_meta("worker_heartbeat", {"pid": os.getpid(), "at": time.time(), "running": len(running)})
                last_beat = now
            for job_id, proc in list(running.items()):
                if proc.poll() is not None:
                    del running[job_id]
            if running:
                last_busy = now
            if len(running) < limit:
                for job in store.queued(limit - len(running)):
                    if job.id in running or not (job_dir(home, job.id) / ENV_FILE).is_file():
                        continue  # cancelled as it was picked
                    try:
                        running[job.id] = _spawn(store, home, job)
                    except OSError as exc:  # one job that cannot start must not stop the queue
                        store.set_state(job.id, JobState.FAILED, error=f"the worker could not start the job: {exc}")
                        discard_job_env(home, job.id)
                    last_busy = now
            reap(store)
            if not running and now - last_busy >= idle_for and not store.queued(1):
                break
            time.sleep(POLL_S)
    finally:
        for proc in running.values():  # asked to stop: let jobs end as cancelled, as with Ctrl-C
            proc.send_signal(signal.SIGTERM)
        for proc in running.values():
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
        store.set_meta("worker", None)
        os.close(lock_fd)
    # a job queued while this worker was deciding to leave would wait for the next `toren run`: hand over
    if not stopping and store.queued(1):
        ensure_worker(home)
    return 0


def _spawn(store: Store, home: Path, job) -> subprocess.Popen:
    cwd = job.inputs.get("_cwd") or str(home)
    if not Path(cwd).is_dir():
        cwd = str(home)
    log = log_path(home, job.id)
    log.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(log, "ab") as out:
        proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", "toren_action", "_run-job", job.id], stdin=subprocess.DEVNULL, stdout=out,
            stderr=out, cwd=cwd, preexec_fn=_die_with(os.getpid()),  # noqa: PLW1509 - only prctl, no locks
        )
    store.update(job.id, pid=proc.pid)
    return proc


def reap(store: Store) -> list[str]:
    """Mark lost jobs failed and remove their containers. Returns their ids."""
    lost = store.reap_lost()
    if lost:
        remove_containers(lost)
        for job_id in lost:
            discard_job_env(store.path.parent, job_id)
    return lost


def remove_containers(job_ids: list[str]) -> None:
    try:
        client = container.client()
        for job_id in job_ids:
            container.remove_job_containers(client, job_id)
    except Exception:  # noqa: BLE001,S110 - best effort: `toren cleanup` removes what is left
        pass
