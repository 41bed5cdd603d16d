"""A newcomer's mistakes (issue 14) that need the real Docker engine: a foreground job piped into `head` still
succeeds with a complete log; what only the engine knows (its networks, its runtimes) is refused before a job
exists; `toren run` from a subdirectory; the warnings about uncommitted work and a detached HEAD, and --base-ref;
`refs/heads/` in --branch; a rejected push says why; `toren cancel` says it cancelled. The rows without Docker are
in tests/unit/test_newcomer.py."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import BASE_IMAGE, git, subprocess_env
from tests.integration.test_bad_input import assert_nothing_started

pytestmark = pytest.mark.docker

SHELL = ["--agent", "shell", "--base-image", BASE_IMAGE]


def toren(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None, stdout=subprocess.PIPE,
          timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "toren_action", *args], cwd=cwd, stdout=stdout,
                          stderr=subprocess.PIPE, text=True, timeout=timeout,
                          env={**subprocess_env(), "TOREN_PLAIN": "1", **(env or {})})


def jobs(toren_home: Path) -> list[dict]:
    conn = sqlite3.connect(toren_home / "toren.db")
    conn.row_factory = sqlite3.Row
    return [dict(r) for r in conn.execute("SELECT * FROM jobs ORDER BY id")]


def only_line(proc: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


# -- 2. a closed pipe never kills a foreground job -------------------------------------------------------------

AGENT_OUTPUT = "for i in $(seq 1 300); do echo agent line $i; done; echo done > result.txt"


@pytest.mark.parametrize("shape", ["closed-before-start", "head-1"])
def test_a_foreground_run_into_a_closed_pipe_still_succeeds_with_a_complete_log(shape, workdir, repo, toren_home):
    argv = [sys.executable, "-m", "toren_action", "run", "--repo", "./myproject", "--spec", "task.md", "--branch",
            f"toren/piped-{shape}", *SHELL, "--command", AGENT_OUTPUT, "--disable-daemon"]
    env = {**subprocess_env(), "TOREN_PLAIN": "1"}
    if shape == "closed-before-start":  # the reader is gone before the first byte: every write fails
        read, write = os.pipe()
        os.close(read)
        proc = subprocess.run(argv, stdout=write, stderr=write, env=env, timeout=180)
        os.close(write)
        code = proc.returncode
    else:  # `toren run ... 2>&1 | head -1`, as a shell runs it
        import shlex

        proc = subprocess.run(["bash", "-c", "set -o pipefail; " + " ".join(map(shlex.quote, argv))
                               + " 2>&1 | head -1; echo \"rc=${PIPESTATUS[0]}\""],
                              capture_output=True, text=True, env=env, timeout=180)
        code = int(proc.stdout.strip().rsplit("rc=", 1)[1])
        assert len(proc.stdout.strip().splitlines()) == 2, proc.stdout  # head's one line, then our rc
    (job,) = jobs(toren_home)
    assert code == 0
    assert job["state"] == "succeeded", job["error"]
    log = (toren_home / "jobs" / job["id"] / "job.log").read_text()
    assert "agent line 300" in log and "== succeeded:" in log and "Traceback" not in log
    assert "done" in git("show", f"toren/piped-{shape}:result.txt", cwd=repo)


# -- 1. and 4. refused before the job exists: nothing started -------------------------------------------------

ENGINE_ROWS = [
    ("network-unknown", ["--network", "nosuchnet-toren-test"], 2, "--network: the Docker engine has no network"),
    ("memory-below-docker-minimum", ["--memory", "5m"], 2, "--memory: 5m is below Docker's minimum of 6m"),
    ("base-branch-missing", ["--base-branch", "nosuch"], 2, "--base-branch: branch 'nosuch' does not exist"),
]


@pytest.mark.parametrize("extra,code,words", [r[1:] for r in ENGINE_ROWS], ids=[r[0] for r in ENGINE_ROWS])
def test_bad_input_is_refused_before_the_job_exists(extra, code, words, workdir, repo, toren_home, docker_client):
    proc = toren("run", "--repo", "./myproject", "--spec", "task.md", "--branch", "toren/refused", *SHELL,
                 "--command", "true", "--disable-daemon", *extra, cwd=workdir)
    assert proc.returncode == code, proc.stderr
    assert words in only_line(proc)
    assert_nothing_started(toren_home, repo, docker_client)


def test_gpus_without_the_nvidia_runtime_are_refused_before_the_job_exists(workdir, repo, toren_home,
                                                                           docker_client):
    if "nvidia" in (docker_client.info().get("Runtimes") or {}):
        pytest.skip("this engine has the NVIDIA runtime")
    proc = toren("run", "--repo", "./myproject", "--spec", "task.md", *SHELL, "--command", "true",
                 "--disable-daemon", "--gpus", "all", cwd=workdir)
    assert proc.returncode == 2 and "--gpus: the Docker engine has no NVIDIA runtime" in only_line(proc)
    assert_nothing_started(toren_home, repo, docker_client)


def test_an_existing_network_is_taken(workdir, repo, toren_home, docker_client):
    net = docker_client.networks.create(f"toren-test-net-{os.getpid()}")
    try:
        proc = toren("run", "--repo", "./myproject", "--spec", "task.md", "--branch", "toren/on-net", *SHELL,
                     "--command", "true", "--disable-daemon", "--network", net.name, cwd=workdir)
        assert proc.returncode == 0, proc.stderr
    finally:
        net.remove()


def test_run_with_a_bad_toren_home_is_one_line_and_exit_23(workdir, repo, toren_home, docker_client, tmp_path):
    (tmp_path / "home-file").write_text("x")
    proc = toren("run", "--repo", "./myproject", "--spec", "task.md", *SHELL, "--command", "true",
                 "--disable-daemon", cwd=workdir, env={"TOREN_HOME": str(tmp_path / "home-file")})
    assert proc.returncode == 23
    assert only_line(proc) == (f"toren: TOREN_HOME: {tmp_path / 'home-file'} is a file; point TOREN_HOME at a "
                               "directory")
    assert git("branch", "--list", cwd=repo).split() == ["*", "main"]


# -- 3. from a subdirectory ------------------------------------------------------------------------------------

def test_run_from_a_subdirectory_of_the_checkout(workdir, repo, toren_home):
    proc = toren("run", "--spec", "../../task.md", "--branch", "toren/from-sub", *SHELL, "--command",
                 "echo x > from-sub.txt", "--disable-daemon", cwd=repo / "src")
    assert proc.returncode == 0, proc.stderr
    assert git("show", "toren/from-sub:from-sub.txt", cwd=repo).strip() == "x"
    (job,) = jobs(toren_home)
    assert job["repo"] == str(repo)


# -- 6. uncommitted work and a detached HEAD ---------------------------------------------------------------------

def test_uncommitted_work_and_a_detached_head_are_warned_about(workdir, repo, toren_home):
    git("-c", "user.name=U", "-c", "user.email=u@example.invalid", "commit", "-q", "--allow-empty", "-m", "two",
        cwd=repo)
    main_tip = git("rev-parse", "HEAD", cwd=repo).strip()
    git("checkout", "-q", "--detach", "HEAD~1", cwd=repo)
    head = git("rev-parse", "HEAD", cwd=repo).strip()
    (repo / "src" / "a.py").write_text("changed but not committed\n")
    for n in range(7):
        (repo / f"untracked-{n}.txt").write_text("new\n")
    proc = toren("run", "--repo", "./myproject", "--spec", "task.md", "--branch", "toren/detached", *SHELL,
                 "--command", "git rev-parse HEAD > started-from.txt", "--disable-daemon", cwd=workdir)
    assert proc.returncode == 0, proc.stderr
    warnings = [ln for ln in proc.stderr.splitlines() if ln.startswith("toren: warning: ")]
    assert len(warnings) == 2, proc.stderr
    assert f"HEAD is detached at {head[:10]}; the job starts from main at {main_tip[:10]}, not from HEAD" in \
        warnings[0] and "--base-ref HEAD" in warnings[0]
    assert "9 uncommitted path(s)" in warnings[1] and "src/a.py" in warnings[1] and "and 4 more" in warnings[1]
    assert f"the job starts from main at {main_tip[:10]}" in warnings[1]
    assert git("show", "toren/detached:started-from.txt", cwd=repo).strip() == main_tip
    (job,) = jobs(toren_home)
    assert "toren: warning: HEAD is detached" in (toren_home / "jobs" / job["id"] / "job.log").read_text()

    proc = toren("run", "--repo", "./myproject", "--spec", "task.md", "--branch", "toren/from-head", *SHELL,
                 "--command", "git rev-parse HEAD > started-from.txt", "--disable-daemon", "--base-ref", "HEAD",
                 cwd=workdir)
    assert proc.returncode == 0, proc.stderr
    assert "detached" not in proc.stderr
    assert git("show", "toren/from-head:started-from.txt", cwd=repo).strip() == head


# -- 8. refs/heads/ in --branch ----------------------------------------------------------------------------------

def test_a_full_ref_name_in_branch_is_the_branch(workdir, repo, toren_home):
    proc = toren("run", "--repo", "./myproject", "--spec", "task.md", "--branch", "refs/heads/feat/full", *SHELL,
                 "--command", "echo y > y.txt", "--disable-daemon", cwd=workdir)
    assert proc.returncode == 0, proc.stderr
    branches = git("for-each-ref", "--format=%(refname)", "refs/heads", cwd=repo).split()
    assert "refs/heads/feat/full" in branches and not [b for b in branches if "refs/heads/refs" in b]


# -- 7. the real cause ------------------------------------------------------------------------------------------

def test_a_push_rejected_because_someone_pushed_first_says_so(workdir, repo, toren_home, tmp_path):
    """The branch did not exist when the job was planned; while the agent works someone pushes it: the job's
    non-forced push is refused, and its message and log keep git's `! [rejected] ... (fetch first)` line."""
    other = tmp_path / "other"
    git("clone", "-q", str(repo), str(other), cwd=tmp_path)
    gate = tmp_path / "gate"
    gate.mkdir()
    proc = subprocess.Popen(  # the agent waits for the gate, which opens once the branch has been pushed
        [sys.executable, "-m", "toren_action", "run", "--repo", "./myproject", "--spec", "task.md", "--branch",
         "toren/raced", *SHELL, "--command", "while [ ! -e /gate/go ]; do sleep 0.1; done; echo mine > mine.txt",
         "--disable-daemon", "--json", "--volume", f"{gate}:/gate:ro", "--timeout", "3"],
        cwd=workdir, env={**subprocess_env(), "TOREN_PLAIN": "1"}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not [j for j in jobs_or_none(toren_home) if j["state"] == "running"]:
        time.sleep(0.1)
    (other / "theirs.txt").write_text("theirs\n")
    git("add", "-A", cwd=other)
    git("-c", "user.name=O", "-c", "user.email=o@example.invalid", "commit", "-q", "-m", "theirs", cwd=other)
    git("push", "-q", "origin", "HEAD:refs/heads/toren/raced", cwd=other)
    (gate / "go").write_text("")
    out, err = proc.communicate(timeout=240)
    result = json.loads(out)
    assert proc.returncode == 9, err
    assert "! [rejected]" in result["message"] and "(fetch first)" in result["message"], result["message"]
    (job,) = jobs(toren_home)
    assert "! [rejected]" in (toren_home / "jobs" / job["id"] / "job.log").read_text()


def jobs_or_none(toren_home: Path) -> list[dict]:
    try:
        return jobs(toren_home)
    except sqlite3.Error:
        return []


def test_toren_cancel_says_cancelled_by_toren_cancel(workdir, repo, toren_home, docker_client):
    proc = toren("run", "--repo", "./myproject", "--spec", "task.md", "--branch", "toren/to-cancel", *SHELL,
                 "--command", "sleep 60", cwd=workdir, env={"TOREN_WORKER_IDLE_S": "2"})
    assert proc.returncode == 0, proc.stderr
    job_id = proc.stdout.strip()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not docker_client.containers.list(filters={"label": f"toren.job={job_id}"}):
        time.sleep(0.1)
    proc = toren("cancel", job_id, cwd=workdir)
    assert proc.returncode == 0, proc.stderr
    (job,) = jobs(toren_home)
    assert job["state"] == "cancelled"
    assert job["error"].startswith("cancelled (toren cancel)") and "Ctrl-C" not in job["error"], job["error"]
