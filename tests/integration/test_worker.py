"""Background jobs with real worker processes and real containers (the `shell` agent)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.conftest import BASE_IMAGE, git, subprocess_env

pytestmark = pytest.mark.docker


def toren(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "toren_action", *args], capture_output=True, text=True,
                          env=env or worker_env(), timeout=timeout)


def worker_env(**extra: str) -> dict[str, str]:
    return {**subprocess_env(), "TOREN_WORKER_IDLE_S": "2", **extra}


def submit(branch: str, command: str, env: dict | None = None) -> str:
    proc = toren("run", "--repo", "./myproject", "--spec", "task.md", "--branch", branch, "--agent", "shell",
                 "--command", command, "--base-image", BASE_IMAGE, env=env)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def status(env: dict | None = None) -> dict[str, dict]:
    proc = toren("status", "--json", "--limit", "100", env=env)
    assert proc.returncode == 0, proc.stderr
    return {j["id"]: j for j in json.loads(proc.stdout)}


def wait_until(predicate, timeout: float = 90, step: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError("timed out waiting")


def worker_pid(toren_home) -> int | None:
    import sqlite3

    conn = sqlite3.connect(toren_home / "toren.db")
    row = conn.execute("SELECT value FROM meta WHERE key = 'worker'").fetchone()
    return json.loads(row[0])["pid"] if row else None


def test_a_background_job_goes_queued_running_succeeded_and_the_worker_goes_idle(workdir, repo, toren_home):
    started = time.monotonic()
    job_id = submit("toren/bg1", "sleep 1; echo hi > hi.txt")
    assert time.monotonic() - started < 5  # returns at once
    follow = toren("logs", job_id, "--follow")
    assert follow.returncode == 0, follow.stdout + follow.stderr
    job = status()[job_id]
    assert job["state"] == "succeeded" and git("show", "toren/bg1:hi.txt", cwd=repo) == "hi\n"
    import sqlite3

    conn = sqlite3.connect(toren_home / "toren.db")
    states = [json.loads(d)["state"] for (d,) in conn.execute(
        "SELECT data FROM events WHERE job_id = ? AND kind = 'state' ORDER BY id", (job_id,))]
    assert states[0] == "queued" and "running" in states and states[-1] == "succeeded"
    # the environment file the job ran with is gone; the worker leaves when idle
    assert not (toren_home / "jobs" / job_id / "env.json").exists()
    wait_until(lambda: worker_pid(toren_home) is None, timeout=30)


def test_ten_jobs_at_once_run_two_at_a_time_and_all_finish(workdir, repo, toren_home):
    env = worker_env(TOREN_MAX_JOBS="2")
    with ThreadPoolExecutor(10) as pool:
        ids = list(pool.map(lambda i: submit(f"toren/many-{i}", f"sleep 1; echo {i} > n.txt", env), range(10)))
    assert len(set(ids)) == 10  # distinct ids, even when submitted at the same instant
    jobs = wait_until(lambda: (s := status(env)) and all(s[i]["state"] == "succeeded" for i in ids) and s,
                      timeout=180, step=0.5)
    for i, job_id in enumerate(ids):
        assert git("show", f"toren/many-{i}:n.txt", cwd=repo) == f"{i}\n"
        assert jobs[job_id]["result_commit"]
    # never more than two jobs between "preparing" and their end at any moment
    import sqlite3

    conn = sqlite3.connect(toren_home / "toren.db")
    spans = {}
    for job_id, ts, data in conn.execute("SELECT job_id, ts, data FROM events WHERE kind = 'state' ORDER BY id"):
        state = json.loads(data)["state"]
        if state == "preparing":
            spans[job_id] = [ts, None]
        elif state == "succeeded":
            spans[job_id][1] = ts
    points = sorted([(a, 1) for a, _ in spans.values()] + [(b, -1) for _, b in spans.values()])
    running = peak = 0
    for _, delta in points:
        running += delta
        peak = max(peak, running)
    assert peak == 2


def test_logs_follow_streams_while_the_job_runs(workdir, repo, toren_home):
    job_id = submit("toren/follow", "for i in 1 2 3; do echo tick-$i; sleep 1; done; exit 3")
    proc = subprocess.Popen([sys.executable, "-m", "toren_action", "logs", job_id, "--follow"],
                            stdout=subprocess.PIPE, text=True, env=worker_env())
    first_seen = None
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if "tick-1" in line and first_seen is None:
            first_seen = time.monotonic()
            assert status()[job_id]["state"] == "running"  # seen while the job still runs
    assert proc.wait(timeout=60) == 6  # the job's outcome: the agent exited non-zero
    assert any("tick-3" in ln for ln in lines) and first_seen is not None


def test_a_killed_worker_leaves_no_job_running(workdir, repo, toren_home, docker_client):
    job_id = submit("toren/lost", "sleep 60")
    wait_until(lambda: docker_client.containers.list(filters={"label": f"toren.job={job_id}"}))
    os.kill(worker_pid(toren_home), signal.SIGKILL)
    job = wait_until(lambda: (j := status()[job_id])["state"] == "failed" and j, timeout=30)
    assert "worker lost" in job["error"]
    assert not docker_client.containers.list(all=True, filters={"label": f"toren.job={job_id}"})


def test_cancel_a_running_and_a_queued_job(workdir, repo, toren_home, docker_client):
    env = worker_env(TOREN_MAX_JOBS="1")
    running = submit("toren/c1", "sleep 60", env)
    queued = submit("toren/c2", "echo never > x.txt", env)
    wait_until(lambda: docker_client.containers.list(filters={"label": f"toren.job={running}"}))
    proc = toren("cancel", queued[:10], env=env)
    assert proc.returncode == 0 and "had not started" in proc.stdout
    proc = toren("cancel", running, env=env)
    assert proc.returncode == 0, proc.stderr
    jobs = status(env)
    assert jobs[running]["state"] == "cancelled" and jobs[queued]["state"] == "cancelled"
    assert not docker_client.containers.list(all=True, filters={"label": f"toren.job={running}"})
    assert git("branch", "--list", "toren/c2", cwd=repo).strip() == ""


def test_a_job_runs_with_the_environment_it_was_submitted_with(workdir, repo, toren_home):
    """The worker is shared; each job still sees its own submitter's variables (a --secret here)."""
    import hashlib

    ids = {}
    for name, value in (("a", "first-value-123"), ("b", "second-value-456")):
        proc = toren("run", "--repo", "./myproject", "--spec", "task.md", "--branch", f"toren/env-{name}",
                     "--agent", "shell", "--command", "sha256sum < /run/toren/secrets/MY_VALUE > v.txt",
                     "--secret", "MY_VALUE", "--base-image", BASE_IMAGE, env=worker_env(MY_VALUE=value))
        assert proc.returncode == 0, proc.stderr
        ids[name] = (proc.stdout.strip(), value)
    for name, (job_id, value) in ids.items():
        assert toren("logs", job_id, "--follow").returncode == 0
        assert git("show", f"toren/env-{name}:v.txt", cwd=repo).split()[0] == hashlib.sha256(value.encode()).hexdigest()
    leaks = [p for p in toren_home.rglob("*") if p.is_file() and b"second-value-456" in p.read_bytes()]
    assert not leaks  # the saved environment is deleted when the job starts


def test_cancel_right_after_submit_leaves_nothing_behind(workdir, repo, toren_home, docker_client):
    job_id = submit("toren/quick-cancel", "sleep 30")
    proc = toren("cancel", job_id)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert status()[job_id]["state"] == "cancelled"
    assert not (toren_home / "jobs" / job_id / "env.json").exists()
    time.sleep(1)
    assert not docker_client.containers.list(all=True, filters={"label": f"toren.job={job_id}"})
    assert status()[job_id]["state"] == "cancelled"  # nothing overwrote the end state


@pytest.mark.parametrize("background", [False, True], ids=["foreground", "background"])
def test_a_token_in_the_inputs_is_masked_in_the_record_yet_the_job_runs_with_it(workdir, repo, toren_home,
                                                                               background):
    token = "ghp_" + "Q7x" * 12  # a known GitHub token format, 40 characters
    branch = f"toren/token-{background}"
    command = f"printf %s {token} | wc -c > n.txt"
    extra = [] if background else ["--disable-daemon"]
    proc = toren("run", "--repo", "./myproject", "--spec", "task.md", "--branch", branch, "--agent", "shell",
                 "--command", command, "--base-image", BASE_IMAGE, *extra)
    assert proc.returncode == 0, proc.stderr
    if background:
        job_id = proc.stdout.strip()
        assert toren("logs", job_id, "--follow").returncode == 0
    # the job ran the command as given (the container counted the real token's 40 characters)
    assert git("show", f"{branch}:n.txt", cwd=repo).strip() == "40"
    # ... and nothing under TOREN_HOME holds it: not the record (toren.db and its WAL), not the log
    for path in toren_home.rglob("*"):
        if path.is_file():
            assert token.encode() not in path.read_bytes(), path
    import sqlite3

    inputs = [json.loads(r[0]) for r in sqlite3.connect(toren_home / "toren.db").execute("SELECT inputs FROM jobs")]
    assert any(i.get("command") == "printf %s *** | wc -c > n.txt" for i in inputs), inputs


def test_a_job_killed_while_its_agent_runs_leaves_no_secret_on_disk(workdir, repo, toren_home, docker_client):
    import sqlite3

    env = worker_env(MY_TOKEN="tok-" + os.urandom(8).hex())
    proc = toren("run", "--repo", "./myproject", "--spec", "task.md", "--branch", "toren/killed", "--agent", "shell",
                 "--command", "sleep 60", "--secret", "MY_TOKEN", "--base-image", BASE_IMAGE, env=env)
    assert proc.returncode == 0, proc.stderr
    job_id = proc.stdout.strip()
    secrets_dir = toren_home / "jobs" / job_id / "secrets"
    wait_until(lambda: docker_client.containers.list(filters={"label": f"toren.job={job_id}"}))
    assert secrets_dir.is_dir()  # the agent is running with its secret
    db = sqlite3.connect(toren_home / "toren.db")
    pid = db.execute("SELECT pid FROM jobs WHERE id = ?", (job_id,)).fetchone()[0]
    os.kill(pid, signal.SIGKILL)  # the job's own process: no finally of its own runs
    job = wait_until(lambda: (j := status()[job_id])["state"] == "failed" and j, timeout=30)
    assert "lost" in job["error"]
    assert not secrets_dir.exists()  # the reaper removed what the dead job left, before marking it
    # ... and then its container (the reaper marks the job first, so that no one else picks it up)
    wait_until(lambda: not docker_client.containers.list(all=True, filters={"label": f"toren.job={job_id}"}))
