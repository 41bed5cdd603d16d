"""`toren scan`: the diff policy as a pre-commit hook and on a range of commits, and the image scan."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import BASE_IMAGE, git, subprocess_env

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "ghp_" + "HookCatchesThisT0ken0123456789abcdef"[:36]


def env_with_toren() -> dict[str, str]:
    env = subprocess_env()
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    return env


def commit(repo: Path, message: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-c", "user.name=u", "-c", "user.email=u@x", "commit", "-qm", message], cwd=repo,
                          capture_output=True, text=True, env=env_with_toren())


def test_the_pre_commit_hook_stops_a_token_and_lets_clean_work_through(repo):
    proc = subprocess.run([str(ROOT / "scripts" / "install-hooks.sh"), str(repo)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    (repo / "settings.py").write_text(f'TOKEN = "{TOKEN}"\n')
    git("add", "settings.py", cwd=repo)
    blocked = commit(repo, "with a token")
    assert blocked.returncode != 0
    said = blocked.stdout + blocked.stderr
    assert "secret-pattern: settings.py:1" in said and TOKEN not in said
    (repo / "settings.py").write_text('TOKEN = os.environ["TOKEN"]\n')
    git("add", "settings.py", cwd=repo)
    assert commit(repo, "clean").returncode == 0


def test_scan_a_range_of_commits(repo):
    (repo / ".github" / "workflows").mkdir(parents=True)
    (repo / ".github" / "workflows" / "x.yml").write_text("on: push\n")
    git("add", "-A", cwd=repo)
    assert commit(repo, "workflow").returncode == 0
    proc = subprocess.run([sys.executable, "-m", "toren_action", "scan", "--diff", "HEAD~1..HEAD", "--json"],
                          cwd=repo, capture_output=True, text=True, env=env_with_toren())
    assert proc.returncode == 21
    assert [f["rule"] for f in json.loads(proc.stdout)] == ["workflow"]
    allowed = subprocess.run([sys.executable, "-m", "toren_action", "scan", "--diff", "HEAD~1..HEAD",
                              "--allow-policy", "workflow"], cwd=repo, capture_output=True, text=True,
                             env=env_with_toren())
    assert allowed.returncode == 0 and "no findings" in allowed.stdout
    bad = subprocess.run([sys.executable, "-m", "toren_action", "scan", "--diff", "nope..HEAD"], cwd=repo,
                         capture_output=True, text=True, env=env_with_toren())
    assert bad.returncode == 2 and "'nope' is not a commit" in bad.stderr


@pytest.mark.docker
def test_scan_an_image(docker_client, toren_home):
    proc = subprocess.run([sys.executable, "-m", "toren_action", "scan", "--image", BASE_IMAGE, "--json"],
                          capture_output=True, text=True, env=env_with_toren())
    rows = {r["check"]: r for r in json.loads(proc.stdout)}
    assert rows["user"]["ok"] is False and "root" in rows["user"]["detail"]  # the base image runs as root
    assert rows["secrets"]["ok"] and rows["credential files"]["ok"] and rows["PATH"]["ok"]
    assert "setuid" in " ".join(rows) and "trivy or grype" in rows["vulnerabilities"]["detail"]
    assert proc.returncode == 1  # something to look at: the root user
