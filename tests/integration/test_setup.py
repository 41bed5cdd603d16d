"""The repository's setup on the fixture project (tests/fixtures/pyproj), with real Docker and real pip through the
proxy's CA: it prepares a .venv with pytest before the agent, with the network, while the agent runs with none; the
prepared environment is kept and reused by content; what it wrote never enters the commit; a failing setup ends the
job setup_failed; a setup-only secret never reaches the agent's container."""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import MINICALC_BUG, git, minicalc_fix
from toren_action.cli import main

pytestmark = pytest.mark.docker

#: The agent (shell) checks what the setup left: pytest runs from the .venv; then it tries the network, which
#: --network none must refuse (no traffic leaves: name resolution fails at once); then it writes a change, and a
#: file into the .venv that must stay out of the commit.
AGENT = ("set -e; .venv/bin/python -m pytest -q 2>&1 | tail -n 2; "
         "python3 -c \"import socket\ntry:\n    socket.create_connection(('pypi.org', 443), 5); print('open')\n"
         "except OSError as e:\n    print('closed', type(e).__name__)\" > agent-network.txt; "
         "echo agent-was-here > .venv/agent-file; echo '# touched' >> README.md; "
         "(echo evil >> .venv/pyvenv.cfg) 2>/dev/null || echo cannot-change-prepared-file")


@pytest.fixture
def prepared_cleanup(toren_home, docker_client, engine):
    """The prepared images and files this test's jobs made are removed when it ends."""
    yield
    from toren_action.job import setup

    setup.prune(engine, toren_home, None, False)


def run(capsys, repo: Path, branch: str, *extra: str, command: str = AGENT, image: str) -> tuple[int, dict, str]:
    code = main(["run", "--repo", str(repo), "--spec", "task.md", "--branch", branch, "--agent", "shell",
                 "--command", command, "--base-image", image, "--network", "none", "--disable-daemon", "--json",
                 *extra])
    result = json.loads(capsys.readouterr().out)
    return code, result, log_of(result["job_id"])


def log_of(job_id: str) -> str:
    return (Path(os.environ["TOREN_HOME"]) / "jobs" / job_id / "job.log").read_text()


def committed_files(repo: Path, branch: str) -> list[str]:
    return git("ls-tree", "-r", "--name-only", branch, cwd=repo).split()


def test_setup_prepares_the_venv_once_and_later_jobs_reuse_it(workdir, pyproj, python_image, toren_home, capsys,
                                                              prepared_cleanup):
    # first job: the setup runs (pip installs pytest from the registry through the CA bundle), with the network
    code, first, log = run(capsys, pyproj, "toren/one", image=python_image)
    assert code == 0, first
    assert first["setup"]["cache"] == "miss" and first["setup"]["image"].startswith("toren/prepared:")
    assert "setting_up" in log and "(network bridge)" in log
    assert "1 failed, 5 passed" in log  # the agent ran the project's tests from the prepared .venv
    assert git("show", "toren/one:agent-network.txt", cwd=pyproj).startswith("closed")  # the agent had none
    files = committed_files(pyproj, "toren/one")
    assert not [f for f in files if f.startswith(".venv") or "egg-info" in f], files
    assert git("diff", "--name-only", "main", "toren/one", cwd=pyproj).split() == ["README.md", "agent-network.txt"]

    # second job, same cache-key files: no setup stage, the prepared environment is reused
    code, second, log = run(capsys, pyproj, "toren/two", image=python_image)
    assert code == 0, second
    assert second["setup"]["cache"] == "hit" and second["setup"]["key"] == first["setup"]["key"]
    assert "setting_up" not in log and "setup cache hit" in log
    assert "1 failed, 5 passed" in log
    assert not [f for f in committed_files(pyproj, "toren/two") if f.startswith(".venv")]
    # the prepared files are shared, sealed: the agent could not change them in place, so the kept ones are intact
    if os.geteuid() == 0:  # sealed (root's, read-only, hard links) only when Toren runs as root
        assert "cannot-change-prepared-file" in log
    kept = toren_home / "setup" / second["setup"]["key"] / "tree" / ".venv" / "pyvenv.cfg"
    assert "evil" not in kept.read_text()
    status = json.loads(_status(capsys))
    assert {j["id"]: j["setup"]["cache"] for j in status} == {first["job_id"]: "miss", second["job_id"]: "hit"}

    # a change to the cache-key file redoes it; with a .gitignore that does not name them (only the agent's own
    # bytecode), the prepared files still stay out of the commit
    with open(pyproj / "pyproject.toml", "a") as fh:
        fh.write("# a new comment changes the content\n")
    (pyproj / ".gitignore").write_text("__pycache__/\n.pytest_cache/\n")
    git("-c", "user.name=U", "-c", "user.email=u@example.invalid", "commit", "-qam", "bump", cwd=pyproj)
    code, third, log = run(capsys, pyproj, "toren/three", image=python_image)
    assert code == 0, third
    assert third["setup"]["cache"] == "miss" and third["setup"]["key"] != first["setup"]["key"]
    assert "setting_up" in log
    assert git("diff", "--name-only", "main", "toren/three", cwd=pyproj).split() == ["README.md",
                                                                                    "agent-network.txt"]
    assert third["setup"]["image"] != first["setup"]["image"]


def test_verify_runs_in_the_prepared_environment_without_the_agents_leftovers(workdir, pyproj, python_image,
                                                                               toren_home, capsys, prepared_cleanup):
    verify = ".venv/bin/python -m pytest -q -k 'not left_assoc' && test ! -e .venv/agent-file && test -d src"
    code, result, log = run(capsys, pyproj, "toren/verified", "--verify", verify, image=python_image)
    assert code == 0, result
    assert "5 passed, 1 deselected" in log


def _status(capsys) -> str:
    assert main(["status", "--json"]) == 0
    return capsys.readouterr().out


def test_a_failing_setup_ends_setup_failed_and_nothing_runs_or_is_pushed(workdir, pyproj, python_image, toren_home,
                                                                         capsys, prepared_cleanup):
    setup = "echo preparing; echo 'E: no such package libfoo' >&2; exit 3"
    code, result, log = run(capsys, pyproj, "toren/broken", "--setup", setup, image=python_image)
    assert code == 22 and result["state"] == "setup_failed", result
    assert "exited with code 3" in result["message"] and "no such package libfoo" in result["message"]
    assert "running" not in log.split("setup_failed")[0].split("setting_up", 1)[1]  # the agent never started
    assert "toren/broken" not in git("branch", "--list", cwd=pyproj)
    assert not list((toren_home / "setup").glob("*/meta.json"))  # nothing kept of a failed setup


def test_a_setup_only_secret_never_reaches_the_agent(workdir, pyproj, python_image, toren_home, capsys,
                                                     docker_client, monkeypatch, prepared_cleanup):
    value = "pkg-index-tok-" + hashlib.sha256(str(time.time()).encode()).hexdigest()[:20]
    monkeypatch.setenv("PRIVATE_INDEX_TOKEN", value)
    digest = hashlib.sha256(value.encode()).hexdigest()[:16]
    # the setup proves it read the secret (its hash), prints it (masked in the log) and keeps a copy in ~ and in
    # the workspace's ignored files, as a careless setup would: none of that may reach the agent's secrets
    setup = ('echo "got-$(sha256sum < "$TOREN_SECRETS_DIR/PRIVATE_INDEX_TOKEN" | cut -c1-16)"; '
             'cat "$TOREN_SECRETS_DIR/PRIVATE_INDEX_TOKEN"; echo; ls /run/toren/secrets')
    seen: dict = {}

    def watch() -> None:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and "inspect" not in seen:
            for c in docker_client.containers.list(filters={"label": "toren.role=agent"}):
                if not any(str(m.get("Source", "")).startswith(str(toren_home)) for m in c.attrs.get("Mounts") or ()):
                    continue
                seen["inspect"] = json.dumps(c.attrs) + json.dumps(docker_client.images.get(c.image.id).attrs)
                res = c.exec_run(["/bin/sh", "-c", "env; ls -A /run/toren/secrets 2>&1; cat /proc/1/environ; "
                                  f"grep -rls --exclude-dir=proc --exclude-dir=sys -e '{value}' / ; true"])
                seen["inside"] = res.output.decode(errors="replace")
                return
            time.sleep(0.1)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    code, result, log = run(capsys, pyproj, "toren/secret", "--setup", setup, "--secret", "PRIVATE_INDEX_TOKEN",
                            "--secret-for", "setup", command="sleep 5; echo '# x' >> README.md",
                            image=python_image)
    watcher.join(timeout=30)
    assert code == 0, result
    assert f"got-{digest}" in log  # the setup had it, as a file (its hash is in no command's text)
    assert value not in log
    assert "inspect" in seen, "the agent's container was not seen"
    assert value not in seen["inspect"] and "PRIVATE_INDEX_TOKEN" not in seen["inspect"]
    assert value not in seen["inside"] and "PRIVATE_INDEX_TOKEN" not in seen["inside"], seen["inside"]
    record = json.dumps(json.loads(_status(capsys)))
    assert value not in record


QUICK_SETUP = ("echo setup-as-$(id -u); mkdir -p .deps ~/.local && echo dep-in-workspace > .deps/lib.txt && "
               "echo dep-in-home > ~/.local/marker")
READS = "cat .deps/lib.txt ~/.local/marker; echo '# y' >> README.md"


def test_what_the_setup_writes_outside_the_workspace_is_kept_in_the_prepared_image(workdir, pyproj, python_image,
                                                                                   toren_home, capsys, docker_client,
                                                                                   prepared_cleanup):
    import docker.errors

    code, first, log = run(capsys, pyproj, "toren/q1", "--setup", QUICK_SETUP, command=READS, image=python_image)
    assert code == 0 and first["setup"]["cache"] == "miss", first
    uid = re.search(r"setup-as-(\d+)", log)  # the command's own text in the log says $(id -u), not a number
    assert uid and uid.group(1) != "0"  # the agent's user, not root
    code, second, log = run(capsys, pyproj, "toren/q2", "--setup", QUICK_SETUP, command=READS, image=python_image)
    assert code == 0 and second["setup"]["cache"] == "hit", second
    assert "dep-in-workspace" in log and "dep-in-home" in log  # ~ came from the image, .deps from the copy
    assert docker_client.images.get(second["setup"]["image"]).labels["toren.prepared"] == second["setup"]["key"]

    # --no-setup-cache: run afresh, keep nothing once the job ends
    code, third, log = run(capsys, pyproj, "toren/q3", "--setup", QUICK_SETUP, "--no-setup-cache", command=READS,
                           image=python_image)
    assert code == 0 and third["setup"]["cache"] == "off", third
    assert "setting_up" in log and "dep-in-home" in log
    with pytest.raises(docker.errors.ImageNotFound):
        docker_client.images.get(third["setup"]["image"])
    assert not (toren_home / "jobs" / third["job_id"] / "setup-cache").exists()
    assert [p.name for p in (toren_home / "setup").iterdir() if p.is_dir()] == [first["setup"]["key"]]

    # toren cleanup prunes the kept one
    assert main(["cleanup", "--all"]) == 0
    assert "prepared environment" in capsys.readouterr().out
    with pytest.raises(docker.errors.ImageNotFound):
        docker_client.images.get(first["setup"]["image"])
    assert not [p for p in (toren_home / "setup").iterdir() if p.is_dir()]


def test_setup_network_none_keeps_the_setup_offline_too(workdir, pyproj, python_image, toren_home, capsys,
                                                        prepared_cleanup):
    # the markers are put together at run time: the command's own text (in the log's stage line) holds neither
    probe = ("python3 -c \"import socket\ntry:\n    socket.create_connection(('pypi.org', 443), 5)\n"
             "    print('setup-net-' + 'open')\nexcept OSError as e:\n    print('setup-net-' + 'closed')\"")
    code, result, log = run(capsys, pyproj, "toren/offline", "--setup", probe, "--setup-network", "none",
                            "--no-setup-cache", command="echo '# z' >> README.md", image=python_image)
    assert code == 0, result
    assert "setup-net-closed" in log and "setup-net-open" not in log and "(network none, no cache)" in log


def test_two_jobs_with_one_key_at_once_make_it_once(workdir, pyproj, python_image, toren_home, capsys,
                                                    prepared_cleanup):
    import subprocess
    import sys

    from tests.conftest import subprocess_env

    slow = "sleep 3; mkdir -p .deps && echo made-$(date +%s%N) > .deps/stamp"
    procs = [subprocess.Popen([sys.executable, "-m", "toren_action", "run", "--repo", str(pyproj), "--spec", "task.md",
                               "--branch", f"toren/both-{i}", "--agent", "shell", "--command",
                               "cat .deps/stamp; echo '# b' >> README.md", "--base-image", python_image, "--network",
                               "none", "--setup", slow, "--disable-daemon", "--json"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=subprocess_env())
             for i in range(2)]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        results.append(json.loads(out))
    assert sorted(r["setup"]["cache"] for r in results) == ["hit", "miss"]
    stamps = {re.search(r"made-\d+", log_of(r["job_id"])).group(0) for r in results}  # type: ignore[union-attr]
    assert len(stamps) == 1  # both agents saw the one setup's result


def _fix_script(rule: str) -> str:
    """A script replacing minicalc's bug with its fix whose right side is ``rule`` (tests.conftest)."""
    return (f"from pathlib import Path\np = Path('src/minicalc/parser.py')\ns = p.read_text()\n"
            f"assert {MINICALC_BUG!r} in s\np.write_text(s.replace({MINICALC_BUG!r}, {minicalc_fix(rule)!r}))\n")


def _agent_running(script: str) -> str:
    """A shell agent's command that runs ``script`` with the image's python3 (base64: no quoting to get wrong)."""
    import base64

    return f"python3 -c \"import base64; exec(base64.b64decode('{base64.b64encode(script.encode()).decode()}'))\""


FIX = _agent_running(_fix_script("parse_term"))
BAD_FIX = _agent_running(_fix_script("parse_factor"))

def test_the_projects_own_tests_judge_the_change_against_the_base_commit(workdir, pyproj, python_image, toren_home,
                                                                         capsys, prepared_cleanup):
    """Issue 15's headline, from one command: the setup installs pytest, the agent fixes the bug with no network,
    and pytest in the prepared environment, on the change and on the base commit, says 1 fixed and 0 broken."""
    verify = ["--verify", ".venv/bin/python -m pytest -q", "--verify-baseline"]
    code, result, log = run(capsys, pyproj, "toren/fix", *verify, command=FIX, image=python_image)
    assert code == 0, log
    v = result["verification"]
    assert v["outcome"] == "passed" and v["source"] == "junit", v  # Toren asked pytest for JUnit
    assert v["counts"]["fixed"] == 1 and v["counts"]["broken"] == 0 and v["counts"]["still_passing"] == 5, v
    assert [t for t in v["fixed"] if t.endswith("test_subtraction_is_left_associative")] == v["fixed"], v
    assert v["baseline"]["counts"]["failed"] == 1 and v["baseline"]["counts"]["passed"] == 5, v
    assert "while self.peek()" in git("show", "toren/fix:src/minicalc/parser.py", cwd=pyproj)
    assert not [f for f in committed_files(pyproj, "toren/fix") if f.startswith(".venv")]

    # a change that fixes the bug and breaks another test: verification_failed naming it, nothing pushed
    code, result, log = run(capsys, pyproj, "toren/bad-fix", *verify, command=BAD_FIX, image=python_image)
    assert code == 8 and result["state"] == "verification_failed", log
    v = result["verification"]
    assert v["counts"]["fixed"] == 1 and v["counts"]["broken"] >= 1, v
    assert any(t.endswith("test_precedence") for t in v["broken"]), v
    assert "test_precedence" in result["error"]
    assert "toren/bad-fix" not in git("branch", "--list", cwd=pyproj)
