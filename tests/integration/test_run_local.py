"""The README's `toren run --agent shell` flow and its failure paths, on real Docker and real git."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import BASE_IMAGE, git, subprocess_env
from toren_action.cli import main

pytestmark = pytest.mark.docker


def toren(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def run_shell(capsys, command: str, *extra: str, branch: str = "toren/rename-helper") -> tuple[int, dict, str]:
    code, out, err = toren(capsys, "run", "--repo", "./myproject", "--spec", "task.md", "--branch", branch,
                           "--agent", "shell", "--command", command, "--base-image", BASE_IMAGE,
                           "--disable-daemon", "--json", *extra)
    return code, json.loads(out), err


def job_record(toren_home: Path, job_id: str) -> dict:
    conn = sqlite3.connect(toren_home / "toren.db")
    conn.row_factory = sqlite3.Row
    return dict(conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone())


def toren_containers(docker_client, job_id: str) -> list:
    return docker_client.containers.list(all=True, filters={"label": f"toren.job={job_id}"})


def test_readme_flow(workdir, repo, toren_home, capsys, docker_client):
    before_head = git("rev-parse", "HEAD", cwd=repo)
    code, result, err = run_shell(capsys, "sed -i s/old_name/new_name/g src/*.py")
    assert code == 0, err
    assert result["state"] == "succeeded"
    # live progress by stage went to stderr
    for stage in ("preparing", "building", "running", "pushing", "succeeded"):
        assert f" {stage} " in err

    # the user's repository has the branch with one commit holding the change
    assert git("rev-parse", "toren/rename-helper", cwd=repo).strip() == result["commit"]
    assert git("rev-list", "--count", "main..toren/rename-helper", cwd=repo).strip() == "1"
    assert git("show", "toren/rename-helper:src/a.py", cwd=repo).count("new_name") == 2
    assert "old_name" not in git("show", "toren/rename-helper:src/b.py", cwd=repo)
    assert sorted(result["files_changed"]) == ["src/a.py", "src/b.py"]
    author = git("log", "-1", "--format=%an <%ae>|%s", "toren/rename-helper", cwd=repo)
    assert author.strip() == "toren[bot] <toren[bot]@users.noreply.github.com>|Rename the helper"

    # ... and its working tree and current branch are untouched
    assert git("symbolic-ref", "--short", "HEAD", cwd=repo).strip() == "main"
    assert git("rev-parse", "HEAD", cwd=repo) == before_head
    assert (repo / "src" / "a.py").read_text().count("old_name") == 2
    assert (repo / "NOTES.txt").read_text() == "the user's uncommitted work\n"

    # the job record and the log
    job = job_record(toren_home, result["job_id"])
    assert job["state"] == "succeeded" and job["result_commit"] == result["commit"]
    assert job["branch"] == "toren/rename-helper" and job["exit_code"] == 0
    assert json.loads(job["files_changed"]) == result["files_changed"]
    log = (toren_home / "jobs" / result["job_id"] / "job.log").read_text()
    assert "== running:" in log and "== succeeded:" in log
    pr = (toren_home / "jobs" / result["job_id"] / "pr.md").read_text()
    assert pr.startswith("# Rename the helper") and "src/a.py" in pr
    assert not toren_containers(docker_client, result["job_id"])

    # status and logs read the same job
    code, out, _ = toren(capsys, "status", "--json")
    assert code == 0 and [j["id"] for j in json.loads(out)] == [result["job_id"]]
    code, out, _ = toren(capsys, "logs", result["job_id"][:12], "--tail", "1")
    assert code == 0 and "succeeded" in out and out.count("\n") == 1


def test_second_run_reuses_the_image_and_mirror(workdir, repo, toren_home, capsys, docker_client, tmp_path):
    # a CA bundle of our own makes the image unique to this test, so the first run must build it
    ca = tmp_path / "ca.pem"
    ca.write_text(Path("/etc/ssl/certs/ca-certificates.crt").read_text() + f"\n# {secrets.token_hex(8)}\n")
    code, first, err = run_shell(capsys, "echo one > one.txt", "--ca-bundle", str(ca), branch="toren/one")
    assert code == 0, err
    try:
        assert first["image_built"] is True and "Step " in err
        code, second, err = run_shell(capsys, "echo two > two.txt", "--ca-bundle", str(ca), branch="toren/two")
        assert code == 0, err
        assert second["image_built"] is False and second["image"] == first["image"]
        assert "Step " not in err and "reusing" in err
        assert len(list((toren_home / "mirrors").glob("*.git"))) == 1
        # the CA reached the image and the variables point at it
        code, third, err = run_shell(capsys, "cmp $SSL_CERT_FILE $REQUESTS_CA_BUNDLE && cp $SSL_CERT_FILE ca.txt",
                                     "--ca-bundle", str(ca), branch="toren/three")
        assert code == 0, err
        assert git("show", "toren/three:ca.txt", cwd=repo) == ca.read_text()
    finally:
        docker_client.images.remove(first["image"], force=True)


def test_no_changes(workdir, repo, toren_home, capsys):
    code, result, err = run_shell(capsys, "cat src/a.py >/dev/null", branch="toren/nothing")
    assert code == 0, err
    assert result["state"] == "no_changes" and result["commit"] is None
    assert "toren/nothing" not in git("branch", "--list", cwd=repo)
    assert job_record(toren_home, result["job_id"])["state"] == "no_changes"


def test_failing_command(workdir, repo, toren_home, capsys, docker_client):
    code, result, err = run_shell(capsys, "echo about to fail; sed -i s/old/new/ src/a.py; exit 3", branch="toren/f")
    assert code == 6  # AgentFailed
    assert result["state"] == "failed" and "exited with code 3" in result["message"]
    job = job_record(toren_home, result["job_id"])
    assert job["state"] == "failed" and job["exit_code"] == 3 and "code 3" in job["error"]
    assert "about to fail" in (toren_home / "jobs" / result["job_id"] / "job.log").read_text()
    assert "toren/f" not in git("branch", "--list", cwd=repo)  # nothing pushed
    assert not toren_containers(docker_client, result["job_id"])


def test_timeout_stops_and_removes_the_container(workdir, repo, toren_home, capsys, docker_client):
    started = time.monotonic()
    code, result, err = run_shell(capsys, "touch started.txt; sleep 60", "--timeout", "0.05", branch="toren/slow")
    assert time.monotonic() - started < 30
    assert code == 7 and result["state"] == "timed_out"
    assert job_record(toren_home, result["job_id"])["state"] == "timed_out"
    assert not toren_containers(docker_client, result["job_id"])
    assert "toren/slow" not in git("branch", "--list", cwd=repo)


def test_verify_failure_blocks_the_push(workdir, repo, toren_home, capsys):
    code, result, err = run_shell(capsys, "echo broken > src/a.py", "--verify", "python3 src/a.py",
                                  branch="toren/broken")
    assert code == 8 and result["state"] == "verification_failed" and "--verify" in result["message"]
    assert "toren/broken" not in git("branch", "--list", cwd=repo)


def test_container_is_hardened_and_sees_its_inputs(workdir, repo, toren_home, capsys, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "in.txt").write_text("mounted\n")
    cmd = ("id -u > uid.txt; grep -E '^(CapEff|NoNewPrivs)' /proc/self/status > status.txt; echo \"$FOO\" > foo.txt; "
           "cat /data/in.txt > data.txt; (touch /data/x 2>/dev/null && echo rw || echo ro) > datamode.txt; "
           "(touch .git/hooks/pre-commit 2>/dev/null && echo writable || echo readonly) > gitdir.txt; "
           "git log --format=%s -1 > gitlog.txt; head -c 300 \"$TOREN_TASK_FILE\" > prompt.txt")
    code, result, err = run_shell(capsys, cmd, "--env", "FOO=bar baz", "--volume", f"{data}:/data:ro",
                                  branch="toren/inside")
    assert code == 0, err

    def show(name: str) -> str:
        return git("show", f"toren/inside:{name}", cwd=repo)

    from toren_action.job.plan import AGENT_ID_RANGE

    uid = int(show("uid.txt"))
    if os.getuid():  # the user's own uid, so the files stay theirs
        assert uid == os.getuid()
    else:  # never root, and no host account: nobody on the host can read its /proc, signal it or own its files
        import grp
        import pwd

        assert uid in AGENT_ID_RANGE
        for lookup in (pwd.getpwuid, grp.getgrgid):
            with pytest.raises(KeyError):
                lookup(uid)
    assert "CapEff:\t0000000000000000" in show("status.txt") and "NoNewPrivs:\t1" in show("status.txt")
    assert show("foo.txt") == "bar baz\n"
    assert show("data.txt") == "mounted\n" and show("datamode.txt") == "ro\n"
    assert show("gitdir.txt") == "readonly\n"  # the agent cannot plant hooks for host-side git
    assert show("gitlog.txt") == "initial\n"  # but it can read history
    assert "Do not commit" in show("prompt.txt")
    # files the agent wrote belong to the agent's uid, i.e. the user's (or an unused id when the user is root)
    assert not (repo / "uid.txt").exists()


def test_secrets_reach_the_agent_as_files_and_nowhere_else(workdir, repo, toren_home, capsys, docker_client,
                                                           monkeypatch):
    value = "tok_" + secrets.token_hex(16)
    monkeypatch.setenv("MY_TOKEN", value)
    seen: dict[str, str] = {}

    def inspect_while_running():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and "inspect" not in seen:
            for c in docker_client.containers.list(filters={"label": "toren.managed=1"}):
                seen["inspect"] = json.dumps(docker_client.api.inspect_container(c.id))
            time.sleep(0.05)

    watcher = threading.Thread(target=inspect_while_running)
    watcher.start()
    cmd = ('ls -l /run/toren/secrets/MY_TOKEN | cut -c1-10 > mode.txt; sleep 2; '
           'echo "token is $(cat /run/toren/secrets/MY_TOKEN)"; sha256sum < /run/toren/secrets/MY_TOKEN > got.txt; '
           'env > env.txt')
    code, result, err = run_shell(capsys, cmd, "--secret", "MY_TOKEN", branch="toren/secret")
    watcher.join()
    assert code == 0, err
    # the agent got the value, as a read-only file (its hash is committed: a change holding the value itself
    # would not be pushed)
    assert git("show", "toren/secret:got.txt", cwd=repo).split()[0] == hashlib.sha256(value.encode()).hexdigest()
    assert git("show", "toren/secret:mode.txt", cwd=repo).strip() == "-r--------"
    assert value not in git("show", "toren/secret:env.txt", cwd=repo)  # not an environment variable
    # ... and it is nowhere else
    assert "inspect" in seen and value not in seen["inspect"]
    log = (toren_home / "jobs" / result["job_id"] / "job.log").read_text()
    assert "token is ***" in log and value not in log
    assert "token is ***" in err and value not in err
    assert value.encode() not in (toren_home / "toren.db").read_bytes()
    wal = toren_home / "toren.db-wal"
    assert not wal.exists() or value.encode() not in wal.read_bytes()
    assert "MY_TOKEN" in json.loads(job_record(toren_home, result["job_id"])["inputs"])["secrets"]
    assert not (toren_home / "jobs" / result["job_id"] / "secrets").exists()  # removed after the job


def test_a_warm_job_speaks_to_the_engine_without_loading_the_docker_sdk(workdir, repo, toren_home):
    """The job's own engine calls (sandbox/engine.py) are the standard library's socket: the Docker SDK, requests,
    urllib3 and http.client are not imported by a warm job, and the job still ran in its container."""
    env = subprocess_env()
    args = [sys.executable, "-X", "importtime", "-m", "toren_action", "run", "--repo", "./myproject", "--spec",
            "task.md", "--agent", "shell", "--base-image", BASE_IMAGE, "--disable-daemon"]
    first = subprocess.run([*args, "--branch", "toren/sdk-1", "--command", "echo one > one.txt"],
                           capture_output=True, text=True, env=env, timeout=300)
    assert first.returncode == 0, first.stderr[-3000:]
    warm = subprocess.run([*args, "--branch", "toren/sdk-2", "--command", "cat /etc/hostname > two.txt"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert warm.returncode == 0, warm.stderr[-3000:]
    loaded = {line.rsplit("|", 1)[1].strip() for line in warm.stderr.splitlines() if line.startswith("import time:")}
    assert "toren_action.sandbox.engine" in loaded  # the log is complete: the job's own client is in it
    assert not loaded & {"docker", "requests", "urllib3", "http.client"}, sorted(loaded & {"docker", "requests",
                                                                                             "urllib3", "http.client"})
    assert git("show", "toren/sdk-2:two.txt", cwd=repo).strip()  # the container's own hostname: it ran


def test_background_run_returns_at_once(workdir, repo, toren_home, spec):
    env = subprocess_env()
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "toren_action", "run", "--repo", "./myproject", "--spec", "task.md",
         "--branch", "toren/bg", "--agent", "shell", "--command", "sleep 1; echo bg > bg.txt",
         "--base-image", BASE_IMAGE],
        capture_output=True, text=True, env=env, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert time.monotonic() - started < 5
    job_id = proc.stdout.strip()
    follow = subprocess.run([sys.executable, "-m", "toren_action", "logs", job_id, "--follow"],
                            capture_output=True, text=True, env=env, timeout=120)
    assert follow.returncode == 0, follow.stdout + follow.stderr
    assert "== succeeded:" in follow.stdout
    assert git("show", "toren/bg:bg.txt", cwd=repo) == "bg\n"


def state_history(home: Path, job_id: str) -> list:
    """The job's state events, oldest first (for an assertion's message)."""
    with sqlite3.connect(home / "toren.db") as conn:
        return conn.execute("SELECT ts, data FROM events WHERE job_id = ? AND kind = 'state' ORDER BY id",
                            (job_id,)).fetchall()


def test_ctrl_c_removes_the_container_and_cancels_the_job(workdir, repo, toren_home, docker_client):
    import signal

    env = subprocess_env()
    proc = subprocess.Popen(
        [sys.executable, "-m", "toren_action", "run", "--repo", "./myproject", "--spec", "task.md",
         "--branch", "toren/interrupted", "--agent", "shell", "--command", "touch x; sleep 60",
         "--base-image", BASE_IMAGE, "--disable-daemon", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        # as from a terminal: a CI runner may start the suite with SIGINT ignored, which children inherit
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    # this test's own job (other suites may run Toren containers on the same engine at the same time)
    deadline, job_id, running = time.monotonic() + 60, None, []
    while time.monotonic() < deadline and not running:
        if job_id is None and (toren_home / "toren.db").exists():
            try:
                rows = sqlite3.connect(toren_home / "toren.db").execute("SELECT id FROM jobs").fetchall()
            except sqlite3.OperationalError:  # the file exists a moment before its first migration commits
                rows = []
            job_id = rows[0][0] if rows else None
        if job_id is not None:
            running = docker_client.containers.list(filters={"label": f"toren.job={job_id}", "status": "running"})
        time.sleep(0.1)
    assert running, "the agent container never started"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert not toren_containers(docker_client, job_id)
    assert job_record(toren_home, job_id)["state"] == "cancelled", (state_history(toren_home, job_id), err)
    assert "toren/interrupted" not in git("branch", "--list", cwd=repo)


def test_base_image_without_git_or_apt_is_refused_clearly(workdir, repo, toren_home, capsys, docker_client, tmp_path):
    import io

    tag = f"toren-test/nogit:{secrets.token_hex(4)}"
    dockerfile = (f"FROM {BASE_IMAGE}\nRUN rm -f /usr/bin/git /usr/bin/apt-get\n").encode()
    docker_client.images.build(fileobj=io.BytesIO(dockerfile), tag=tag, rm=True)
    try:
        code, result, err = run_shell(capsys, "true", "--base-image", tag, "--pull", "never", branch="toren/nogit")
        assert code == 5, err  # ImageError
        assert result["state"] == "failed"
        assert "neither git nor apt-get" in result["message"] and "Debian/Ubuntu" in result["message"]
    finally:
        docker_client.images.remove(tag, force=True)


def test_nested_repository_from_the_agent_cannot_run_code_on_the_host(workdir, repo, toren_home, capsys):
    marker = Path(f"/tmp/toren-pwned-{secrets.token_hex(6)}")
    cmd = ("mkdir sub && cd sub && git init -q && "
           f"git config filter.evil.clean 'touch {marker}; cat' && echo '* filter=evil' > .gitattributes && "
           "echo a > f && git add . && git -c user.name=a -c user.email=a@b commit -qm x && echo b > f")
    code, result, err = run_shell(capsys, cmd, branch="toren/nested")
    assert not marker.exists(), "host-side git ran a filter the agent configured"
    assert code == 9 and result["state"] == "failed"
    assert "git repository inside the work tree (sub/.git)" in result["message"]
    assert "toren/nested" not in git("branch", "--list", cwd=repo)


def test_sigterm_to_a_background_job_cancels_it_and_removes_the_container(workdir, repo, toren_home, docker_client):
    import signal

    env = subprocess_env()
    proc = subprocess.run(
        [sys.executable, "-m", "toren_action", "run", "--repo", "./myproject", "--spec", "task.md",
         "--branch", "toren/killed", "--agent", "shell", "--command", "sleep 60", "--base-image", BASE_IMAGE],
        capture_output=True, text=True, env=env, timeout=60,
    )
    job_id = proc.stdout.strip()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not docker_client.containers.list(
            filters={"label": f"toren.job={job_id}", "status": "running"}):
        time.sleep(0.1)
    pid = job_record(toren_home, job_id)["pid"]
    os.kill(pid, signal.SIGTERM)
    while time.monotonic() < deadline and job_record(toren_home, job_id)["state"] != "cancelled":
        time.sleep(0.1)
    assert job_record(toren_home, job_id)["state"] == "cancelled", state_history(toren_home, job_id)
    assert not toren_containers(docker_client, job_id)


def test_a_job_whose_process_died_is_marked_lost(toren_home, capsys):
    from toren_action.jobs.store import Store

    dead = subprocess.Popen(["true"])
    dead.wait()
    store = Store(toren_home)
    job_id = store.create_job(repo="/r", branch="b", agent="shell", model=None, base_image="i", inputs={})
    store.set_state(job_id, "running", pid=dead.pid)
    code, out, _ = toren(capsys, "status", "--json")
    job = [j for j in json.loads(out) if j["id"] == job_id][0]
    assert job["state"] == "failed" and "worker lost" in job["error"]


@pytest.mark.parametrize("command", ["cat /run/toren/secrets/MY_TOKEN > /dev/null; echo x > out.txt",
                                     "cat /run/toren/secrets/MY_TOKEN > /dev/null; exit 3"],
                         ids=["succeeds", "agent-fails"])
def test_the_secret_files_are_gone_before_the_end_state_is_written(workdir, repo, toren_home, capsys, monkeypatch,
                                                                   command):
    from toren_action.jobs.store import FINAL_STATES, Store

    monkeypatch.setenv("MY_TOKEN", "tok_" + secrets.token_hex(16))
    seen = []
    original = Store.set_state

    def watching(self, job_id, state, **fields):
        if state in FINAL_STATES:
            seen.append((state, (toren_home / "jobs" / job_id / "secrets").exists()))
        return original(self, job_id, state, **fields)

    monkeypatch.setattr(Store, "set_state", watching)
    run_shell(capsys, command, "--secret", "MY_TOKEN", branch="toren/secret-order")
    assert seen and all(not exists for _, exists in seen), seen


@pytest.mark.parametrize("command", ["yes toren | head -n 400000; echo x > out.txt",
                                     "head -c 3000000 /dev/zero | tr '\\0' a; echo; echo x > out.txt"],
                         ids=["many-short-lines", "one-long-line"])
def test_the_job_log_is_capped_with_a_marker_and_the_job_still_ends(workdir, repo, toren_home, capsys, monkeypatch,
                                                                    command):
    from toren_action.job import log as job_log

    monkeypatch.setattr(job_log, "MAX_LOG_BYTES", 1 << 20)
    code, result, err = run_shell(capsys, command, "--quiet", branch="toren/noisy")
    assert code == 0 and result["state"] == "succeeded", err[-2000:]
    log = (toren_home / "jobs" / result["job_id"] / "job.log").read_text()
    assert len(log.encode()) < (1 << 20) + 8192  # the cap and the stage lines after it
    assert log.count("the log reached its cap of 1 MiB") == 1
    assert "== succeeded:" in log.splitlines()[-1]  # stages after the cut are still there
    assert git("show", "toren/noisy:out.txt", cwd=repo) == "x\n"


@pytest.mark.parametrize("command,extra", [
    ("truncate -s 2G big.bin", []),  # sparse: no disk, yet git add would read and hash 2 GB
    ("mkdir d; for i in $(seq 30); do head -c 200000 /dev/urandom > d/f$i; done", ["--max-change-mb", "5"]),
    ("mkdir m && cd m && seq 1 10001 | xargs touch", []),  # empty files: no size, yet 10,001 of them
], ids=["sparse-2g", "many-small-files", "ten-thousand-and-one-empty-files"])
def test_a_change_over_max_change_mb_is_refused_before_the_commit(workdir, repo, toren_home, capsys, command, extra):
    started = time.monotonic()
    code, result, err = run_shell(capsys, command, *extra, branch="toren/huge")
    assert code == 21 and result["state"] == "blocked_by_policy", result
    assert ("--max-change-mb" in result["message"] or "more than 10000 files" in result["message"]) \
        and "nothing was committed" in result["message"]
    assert time.monotonic() - started < 60
    assert "toren/huge" not in git("branch", "--list", cwd=repo)
    ws = toren_home / "jobs" / result["job_id"] / "workspace"
    assert git("-c", "safe.directory=*", "rev-list", "--count", "HEAD", cwd=ws).strip() == "1"  # never committed


def test_ignored_files_do_not_count_toward_max_change_mb(workdir, repo, toren_home, capsys):
    code, result, err = run_shell(capsys, "echo 'cache/' > .gitignore; mkdir cache; truncate -s 2G cache/big; "
                                  "echo x > out.txt", branch="toren/ignored-big")
    assert code == 0, result
    assert git("show", "toren/ignored-big:out.txt", cwd=repo) == "x\n"


@pytest.mark.parametrize("shape", ["dir-link", "dir-link-allowed", "file-link", "sparse-2g", "fifo"])
def test_the_agent_summary_is_a_bounded_regular_file_inside_the_workspace(workdir, repo, toren_home, capsys,
                                                                          tmp_path, shape):
    import resource

    host = tmp_path / "host-only"
    host.mkdir()
    (host / "summary.md").write_text("# HOST FILE CONTENT\n")
    command = {"dir-link": f"ln -s {host} .toren",  # dangling in the container, a host directory on the host
               "dir-link-allowed": f"ln -s {host} .toren",
               "file-link": f"mkdir .toren && ln -s {host}/summary.md .toren/summary.md",
               "sparse-2g": "mkdir .toren && truncate -s 2G .toren/summary.md",
               "fifo": "mkdir .toren && mkfifo .toren/summary.md"}[shape]
    extra = ["--allow-policy", "symlink"] if shape == "dir-link-allowed" else []
    started, peak = time.monotonic(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    code, result, err = run_shell(capsys, command + "; echo x > out.txt", *extra, branch=f"toren/summary-{shape}")
    assert time.monotonic() - started < 60
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak < 200_000  # KiB: never the 2 GiB file
    if shape == "dir-link":  # .toren itself is then a link the commit would carry: the symlink rule stops it
        assert code == 21 and "symlink" in result["message"], result
    else:
        assert code == 0 and result["state"] == "succeeded", err[-2000:]
        assert len((toren_home / "jobs" / result["job_id"] / "pr.md").read_text()) < 30_000
    for path in toren_home.rglob("*"):  # the host file reached no record, log or body
        if path.is_file() and not path.is_symlink():
            assert b"HOST FILE CONTENT" not in path.read_bytes(), path
