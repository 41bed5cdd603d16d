"""Host-side git keeps git's ownership check (security issue 11, finding 6): `toren scan` run as root in a
repository owned by another user refuses it instead of running that repository's config (a textconv command)
as root. Only Toren's own job workspaces and mirrors are trusted."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import subprocess_env
from tests.unit.test_policy_blind import TOKEN, run_git, write
from toren_action.core.errors import GitError
from toren_action.git import workspace

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a repository to another uid")
OTHER_UID = 12345


def chown_tree(path: Path, uid: int) -> None:
    for root, dirs, files in os.walk(path):
        os.lchown(root, uid, uid)
        for name in dirs + files:
            os.lchown(os.path.join(root, name), uid, uid)


@pytest.fixture
def hostile_repo(tmp_path: Path) -> tuple[Path, Path]:
    """A repository whose own config runs a command (textconv for every file) and that has a staged token."""
    marker = tmp_path / "textconv-ran"
    repo = tmp_path / "theirs"
    repo.mkdir()
    run_git("init", "-q", "-b", "main", cwd=repo)
    write(repo, ".gitattributes", "* diff=evil\n")
    write(repo, "a.py", "x = 1\n")
    run_git("add", "-A", cwd=repo)
    run_git("commit", "-qm", "base", cwd=repo)
    write(repo, "a.py", f"x = 1\nT = '{TOKEN}'\n")
    run_git("add", "-A", cwd=repo)
    run_git("commit", "-qm", "token", cwd=repo)
    write(repo, "b.py", f"T = '{TOKEN}'\n")
    run_git("add", "-A", cwd=repo)
    run_git("config", "diff.evil.textconv", f"touch {marker}; cat", cwd=repo)
    return repo, marker


def toren_scan(repo: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "toren_action", "scan", *args], cwd=repo, capture_output=True,
                          text=True, env=subprocess_env())


@pytest.mark.parametrize("args", [["--staged"], ["--diff", "HEAD~1..HEAD"]], ids=["staged", "diff"])
def test_scan_refuses_a_repository_owned_by_another_user(args, hostile_repo):
    repo, marker = hostile_repo
    chown_tree(repo, OTHER_UID)
    proc = toren_scan(repo, *args)
    assert proc.returncode != 0 and not marker.exists()  # refused, and nothing of theirs ran as root
    said = proc.stderr.strip()
    assert str(repo) in said and len(said.splitlines()) == 1 and "Traceback" not in said
    assert "owned by another user" in said and "not a git repository" not in said  # the real reason


@pytest.mark.parametrize("args", [["--staged"], ["--diff", "HEAD~1..HEAD"]], ids=["staged", "diff"])
def test_in_your_own_repository_no_textconv_runs_either(args, hostile_repo):
    repo, marker = hostile_repo
    proc = toren_scan(repo, *args, "--json")
    assert proc.returncode == 21, proc.stderr
    assert "secret-pattern" in proc.stdout and not marker.exists()


def test_workspace_git_says_why_it_refuses(hostile_repo):
    repo, marker = hostile_repo
    chown_tree(repo, OTHER_UID)
    with pytest.raises(workspace.UntrustedRepository, match="owned by another user"):
        workspace.git("diff-tree", "-r", "HEAD~1", "HEAD", cwd=repo)
    assert not marker.exists()


def test_only_torens_own_workspaces_are_trusted(tmp_path, monkeypatch):
    home = tmp_path / "toren-home"
    monkeypatch.setenv("TOREN_HOME", str(home))
    job_ws = home / "jobs" / "j1" / "workspace"
    mirror = home / "mirrors" / "proj-0123.git"
    nested = job_ws / "sub"
    elsewhere = home / "jobs" / "j1" / "other"
    for path in (job_ws, nested, elsewhere):
        path.mkdir(parents=True)
        run_git("init", "-q", cwd=path)
    mirror.parent.mkdir(parents=True)
    run_git("init", "-q", "--bare", str(mirror), cwd=tmp_path)
    for path in (job_ws, mirror, nested, elsewhere):
        chown_tree(path, OTHER_UID)  # as when the agent's uid owns the work tree
    assert workspace.git("rev-parse", "--git-dir", cwd=job_ws).strip() == ".git"
    assert workspace.git("rev-parse", "--git-dir", cwd=mirror).strip() == "."
    for untrusted in (nested, elsewhere):  # a repository the agent made, or any other place
        with pytest.raises(GitError, match="owned by another user"):
            workspace.git("rev-parse", "--git-dir", cwd=untrusted)
    assert workspace.git("rev-parse", "--git-dir", cwd=elsewhere, trusted=True).strip() == ".git"
    with pytest.raises(GitError):
        workspace.git("rev-parse", "--git-dir", cwd=job_ws, trusted=False)
