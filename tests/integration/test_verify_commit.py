"""--verify and the code scan judge the commit that is pushed, never the agent's work tree: ignored and untracked
files an agent leaves behind (a compiled module of the right version, a sourceless .pyc, Toren's own excluded
.toren/ directory) cannot make a check pass that the pushed commit fails."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import BASE_IMAGE, git
from toren_action.cli import main

pytestmark = pytest.mark.docker

CHECK = "import calc\nassert calc.add(2, 3) == 5, 'calc.add is broken'\nprint('ok')\n"


@pytest.fixture
def calc_repo(tmp_path: Path) -> Path:
    path = tmp_path / "calc"
    path.mkdir()
    (path / "calc.py").write_text("def add(a, b):\n    return a + b\n")
    (path / "check.py").write_text(CHECK)
    (path / ".gitignore").write_text("__pycache__/\n*.pyc\nignored.txt\n")
    git("init", "-q", "-b", "main", cwd=path)
    git("add", "-A", cwd=path)
    git("-c", "user.name=U", "-c", "user.email=u@example.invalid", "commit", "-q", "-m", "calc", cwd=path)
    return path


def run(capsys, repo: Path, command: str, verify: str, branch: str) -> tuple[int, dict]:
    code = main(["run", "--repo", str(repo), "--spec", "task.md", "--branch", branch, "--agent", "shell",
                 "--command", command, "--base-image", BASE_IMAGE, "--verify", verify, "--disable-daemon", "--json"])
    return code, json.loads(capsys.readouterr().out)


def branches(repo: Path) -> str:
    return git("branch", "--list", cwd=repo)


# The agent compiles the correct module, breaks the source keeping its size and mtime, so that Python in the work
# tree still loads the stale (correct) bytecode from the ignored __pycache__.
STALE_PYC = ("python3 -m py_compile calc.py && touch -r calc.py /tmp/ref && sed -i 's/a + b/a - b/' calc.py && "
             "touch -r /tmp/ref calc.py && python3 check.py")
# The agent deletes the module and leaves a sourceless .pyc of the correct one (ignored by *.pyc).
SOURCELESS_PYC = ("python3 -c 'import py_compile; py_compile.compile(\"calc.py\", cfile=\"calc.pyc\")' && "
                  "rm calc.py && echo '# tidy' >> check.py && python3 check.py")


@pytest.mark.parametrize("command", [STALE_PYC, SOURCELESS_PYC], ids=["stale-pycache", "sourceless-pyc"])
def test_ignored_bytecode_cannot_make_verify_pass(workdir, calc_repo, toren_home, capsys, command):
    code, result = run(capsys, calc_repo, command, "python3 check.py", "toren/sneaky")
    assert code == 8, result
    assert result["state"] == "verification_failed" and "--verify exited" in result["message"]
    assert "toren/sneaky" not in branches(calc_repo)
    log = (toren_home / "jobs" / result["job_id"] / "job.log").read_text()
    # the agent's own run of the check passed in its work tree; the verification of the commit did not
    assert log.count("ok") >= 1 and ("calc.add is broken" in log or "No module named 'calc'" in log)


def test_verify_sees_exactly_the_commit(workdir, calc_repo, toren_home, capsys):
    # untracked-but-ignored files, Toren's excluded .toren/ directory and a nested cache are all left behind
    command = ("echo x > ignored.txt; mkdir -p .toren __pycache__; echo x > .toren/extra; echo x > __pycache__/y; "
               "echo '# note' >> calc.py")
    verify = ("test ! -e ignored.txt && test ! -e .toren && test ! -e __pycache__ && grep -q '# note' calc.py && "
              "python3 check.py")
    code, result = run(capsys, calc_repo, command, verify, "toren/clean-tree")
    assert code == 0, result
    assert result["state"] == "succeeded"
    assert git("show", "toren/clean-tree:calc.py", cwd=calc_repo).endswith("# note\n")
    events = [e for e in _events(toren_home, result["job_id"]) if e[0] == "verify"]
    assert events and events[0][1]["commit"] == result["commit"] and events[0][1]["exit_code"] == 0
    # the clean copies are gone once the job ends
    assert not list((toren_home / "jobs" / result["job_id"]).glob("*-tree"))


def test_verify_passes_on_the_commit_even_when_the_work_tree_would_fail(workdir, calc_repo, toren_home, capsys):
    # the inverse: an ignored file that breaks the check in the work tree does not count either
    command = "echo 'raise SystemExit(\"ignored file ran\")' > ignored.txt; echo '# ok' >> calc.py"
    code, result = run(capsys, calc_repo, command, "test ! -e ignored.txt && python3 check.py", "toren/fine")
    assert code == 0, result
    assert "toren/fine" in branches(calc_repo)


def _events(home: Path, job_id: str) -> list[tuple[str, dict]]:
    import sqlite3

    conn = sqlite3.connect(home / "toren.db")
    return [(kind, json.loads(data)) for kind, data in
            conn.execute("SELECT kind, data FROM events WHERE job_id = ? ORDER BY id", (job_id,))]


def test_verify_sees_the_users_volumes_read_only(workdir, calc_repo, toren_home, capsys, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    data.chmod(0o777)
    code = main(["run", "--repo", str(calc_repo), "--spec", "task.md", "--branch", "toren/vol", "--agent", "shell",
                 "--command", "echo written > /data/by-agent; echo '# v' >> calc.py", "--base-image", BASE_IMAGE,
                 "--volume", f"{data}:/data", "--verify",
                 "cat /data/by-agent && ! touch /data/by-verify 2>/dev/null && python3 check.py",
                 "--disable-daemon", "--json"])
    result = json.loads(capsys.readouterr().out)
    assert code == 0, result
    assert (data / "by-agent").read_text() == "written\n" and not (data / "by-verify").exists()
