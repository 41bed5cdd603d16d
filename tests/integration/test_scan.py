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
    proc = install_hook(repo)  # with Toren's virtualenv active
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


BARE_PATH = "/usr/local/bin:/usr/bin:/bin"  # no virtualenv on it: the hook must not need one


def install_hook(repo: Path, *args: str, path: str | None = None, toren: bool = True) -> subprocess.CompletedProcess:
    env = env_with_toren()
    if path is not None:
        env["PATH"] = path
    if not toren:  # a user who has not installed Toren (the tests import it from the checkout)
        env.pop("PYTHONPATH", None)
    return subprocess.run([str(ROOT / "scripts" / "install-hooks.sh"), *args, str(repo)], capture_output=True,
                          text=True, env=env)


def commit_without_toren_on_path(repo: Path, message: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-c", "user.name=u", "-c", "user.email=u@x", "commit", "-qm", message], cwd=repo,
                          capture_output=True, text=True, env={**env_with_toren(), "PATH": BARE_PATH})


def stage_a_token(repo: Path) -> None:
    (repo / "settings.py").write_text(f'TOKEN = "{TOKEN}"\n')
    git("add", "settings.py", cwd=repo)


@pytest.mark.parametrize("how", ["toren on PATH", "--python"])
def test_the_hook_runs_the_toren_that_installed_it_when_no_virtualenv_is_active(repo, how):
    args = ("--python", sys.executable) if how == "--python" else ()
    proc = install_hook(repo, *args)
    assert proc.returncode == 0, proc.stderr
    hook = (repo / ".git" / "hooks" / "pre-commit").read_text()
    assert ("'" + (sys.executable if args else str(Path(sys.executable).parent / "toren")) + "'") in hook
    stage_a_token(repo)
    blocked = commit_without_toren_on_path(repo, "with a token")
    said = blocked.stdout + blocked.stderr
    assert blocked.returncode != 0 and "secret-pattern: settings.py:1" in said, said
    (repo / "settings.py").write_text("TOKEN = None\n")
    git("add", "settings.py", cwd=repo)
    assert commit_without_toren_on_path(repo, "clean").returncode == 0


def _toren_copy(bindir: Path, interpreter: str) -> Path:
    """A `toren` console script like pip's, run by ``interpreter``."""
    bindir.mkdir(parents=True, exist_ok=True)
    script = bindir / "toren"
    script.write_text(f"#!{interpreter}\nimport sys\nfrom toren_action.cli import main\nsys.exit(main())\n")
    script.chmod(0o755)
    return script


@pytest.mark.parametrize("gone", ["the toren script", "its virtualenv's python", "the --python interpreter"])
def test_a_moved_toren_is_one_line_saying_how_to_fix_the_hook(repo, tmp_path, gone):
    venv_python = tmp_path / "venv" / "bin" / "python"  # a stand-in for a virtualenv that is later removed
    venv_python.parent.mkdir(parents=True)
    venv_python.symlink_to(sys.executable)
    if gone == "the --python interpreter":
        proc = install_hook(repo, "--python", str(venv_python), path=BARE_PATH)
    else:
        script = _toren_copy(tmp_path / "bin", str(venv_python))
        proc = install_hook(repo, path=f"{script.parent}:{BARE_PATH}")
    assert proc.returncode == 0, proc.stderr
    if gone == "the toren script":
        script.unlink()
    else:
        venv_python.unlink()
    head = git("rev-parse", "HEAD", cwd=repo)
    stage_a_token(repo)
    blocked = commit_without_toren_on_path(repo, "with a token")
    assert blocked.returncode != 0
    lines = blocked.stderr.strip().splitlines()
    assert len(lines) == 1, blocked.stderr
    assert lines[0].startswith("toren pre-commit hook: ") and "is gone" in lines[0]
    assert f"re-run {ROOT / 'scripts' / 'install-hooks.sh'} {repo}" in lines[0]
    assert "not found" not in blocked.stderr and "Traceback" not in blocked.stderr
    assert git("rev-parse", "HEAD", cwd=repo) == head  # nothing committed, the staged work kept
    assert "settings.py" in git("diff", "--cached", "--name-only", cwd=repo)


def test_a_toren_under_a_hostile_path_is_quoted_in_the_hook(repo, tmp_path):
    """The path is the hook's data, never its code: quotes, spaces, $(...) and backticks in it stay text."""
    marker = tmp_path / "pwned"
    weird = tmp_path / f"it's a \"dir\" $(touch {marker}) `touch {marker}`" / "bin"
    script = _toren_copy(weird, sys.executable)
    proc = install_hook(repo, path=f"{script.parent}:{BARE_PATH}")
    assert proc.returncode == 0, proc.stderr
    stage_a_token(repo)
    blocked = commit_without_toren_on_path(repo, "with a token")
    assert blocked.returncode != 0 and "secret-pattern: settings.py:1" in blocked.stdout + blocked.stderr
    script.unlink()
    gone = commit_without_toren_on_path(repo, "with a token")
    assert gone.returncode == 1 and f"toren pre-commit hook: {script} is gone" in gone.stderr
    assert not marker.exists()


def test_the_hook_is_not_installed_without_a_toren_to_run(repo, tmp_path):
    probe = subprocess.run(["python3", "-c", "import toren_action"], cwd="/", capture_output=True,
                           env={k: v for k, v in env_with_toren().items() if k != "PYTHONPATH"} | {"PATH": BARE_PATH})
    if probe.returncode == 0:
        pytest.skip("this machine's own python3 imports toren_action")
    proc = install_hook(repo, path=BARE_PATH, toren=False)
    assert proc.returncode == 2 and "activate Toren's virtualenv" in proc.stderr, proc.stderr
    assert not (repo / ".git" / "hooks" / "pre-commit").exists()
    bad = install_hook(repo, "--python", str(tmp_path / "nope"))
    assert bad.returncode == 2 and "cannot import toren_action" in bad.stderr


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
