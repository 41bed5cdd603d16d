"""Bad invocations: each exits 2 with one line naming the option, and leaves no job, branch or container."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import BASE_IMAGE, git, subprocess_env
from toren_action.cli import main

pytestmark = pytest.mark.docker

GOOD = ["--repo", "./myproject", "--spec", "task.md", "--branch", "toren/ok", "--agent", "shell",
        "--command", "true", "--base-image", BASE_IMAGE, "--disable-daemon"]


def with_(**changes: str | None) -> list[str]:
    """GOOD with some flags replaced (value None drops the flag and its value)."""
    args = list(GOOD)
    for flag, value in changes.items():
        flag = "--" + flag.replace("_", "-")
        if flag in args:
            i = args.index(flag)
            del args[i:i + 2]
        if value is not None:
            args += [flag, value]
    return args


CASES = [
    # (id, argv, expected option in the message)
    ("branch-space", with_(branch="bad name"), "--branch"),
    ("branch-dotdot", with_(branch="a..b"), "--branch"),
    ("branch-dash", with_(branch=None) + ["--branch=-x"], "--branch"),
    ("branch-lock", with_(branch="x.lock"), "--branch"),
    ("branch-slash", with_(branch="a/"), "--branch"),
    ("branch-long", with_(branch="x" * 300), "--branch"),
    ("branch-exists", with_(branch="main"), "--branch"),
    ("base-branch-bad", GOOD + ["--base-branch", "a b"], "--base-branch"),
    ("spec-missing", with_(spec="missing.md"), "--spec"),
    ("spec-empty", with_(spec="empty.md"), "--spec"),
    ("spec-binary", with_(spec="binary.md"), "--spec"),
    ("no-task", with_(spec=None), "--spec"),
    ("spec-and-issue", GOOD + ["--issue", "acme/widget#1"], "--spec"),
    ("issue-bad", with_(spec=None, issue="not-an-issue"), "--issue"),
    ("agent-unknown", with_(agent="nope"), "--agent"),
    ("shell-without-command", with_(command=None), "--command"),
    ("repo-missing", with_(repo="/nonexistent/deeply/nested"), "--repo"),
    ("repo-not-git", with_(repo="plain"), "--repo"),
    ("repo-is-file", with_(repo="task.md"), "--repo"),
    ("repo-url-credential", with_(repo="https://user:ghp_secret123@example.com/a/b.git"), "--repo"),
    ("repo-path-too-long", with_(repo="x" * 300), "--repo"),
    ("spec-path-too-long", with_(spec="s" * 300 + ".md"), "--spec"),
    ("branch-head", with_(branch="HEAD"), "--branch"),
    ("image-upper", with_(base_image="UPPER/Case"), "--base-image"),
    ("image-space", with_(base_image="bad image"), "--base-image"),
    ("env-no-equals", GOOD + ["--env", "NOEQUALS"], "--env"),
    ("env-bad-name", GOOD + ["--env", "1BAD=x"], "--env"),
    ("env-newline", GOOD + ["--env", "A=line1\nline2"], "--env"),
    ("env-credential", GOOD + ["--env", "OPENAI_API_KEY=sk-123"], "--env"),
    ("volume-missing", GOOD + ["--volume", "/nonexistent-src:/x"], "--volume"),
    ("volume-root", GOOD + ["--volume", "/:/host"], "--volume"),
    ("volume-docker-socket", GOOD + ["--volume", "/var/run/docker.sock:/var/run/docker.sock"], "--volume"),
    ("volume-home", GOOD + ["--volume", "{home}:/h"], "--volume"),
    ("volume-ssh", GOOD + ["--volume", "{home}/.ssh:/s:ro"], "--volume"),
    ("volume-relative-dst", GOOD + ["--volume", "plain:relative"], "--volume"),
    ("volume-workspace", GOOD + ["--volume", "plain:/workspace"], "--volume"),
    ("volume-workspace-slash", GOOD + ["--volume", "plain://workspace/."], "--volume"),
    ("volume-secrets-dots", GOOD + ["--volume", "plain:/run//toren/./secrets"], "--volume"),
    ("volume-source-too-long", GOOD + ["--volume", "v" * 300 + ":/x"], "--volume"),
    ("volume-mode", GOOD + ["--volume", "plain:/x:rx"], "--volume"),
    ("volume-dotdot", GOOD + ["--volume", "plain/../plain:/x"], "--volume"),
    ("gpus-word", GOOD + ["--gpus", "lots"], "--gpus"),
    ("gpus-zero", GOOD + ["--gpus", "0"], "--gpus"),
    ("network-container", GOOD + ["--network", "container:abc"], "--network"),
    ("timeout-zero", GOOD + ["--timeout", "0"], "--timeout"),
    ("timeout-negative", GOOD + ["--timeout", "-5"], "--timeout"),
    ("timeout-word", GOOD + ["--timeout", "soon"], "--timeout"),
    ("cost-zero", GOOD + ["--max-cost-usd", "0"], "--max-cost-usd"),
    ("pull-policy", GOOD + ["--pull", "sometimes"], "--pull"),
    ("ca-missing", GOOD + ["--ca-bundle", "/nonexistent.pem"], "--ca-bundle"),
    ("ca-not-pem", GOOD + ["--ca-bundle", "task.md"], "--ca-bundle"),
    ("secret-unset", GOOD + ["--secret", "TOREN_TEST_UNSET_VAR"], "--secret"),
    ("secret-bad-name", GOOD + ["--secret", "a-b"], "--secret"),
    ("memory", GOOD + ["--memory", "lots"], "--memory"),
    ("pids-limit", GOOD + ["--pids-limit", "1"], "--pids-limit"),
    ("unknown-flag", GOOD + ["--frobnicate"], "--frobnicate"),
]


@pytest.fixture
def bad_input_dir(tmp_path, repo, spec, toren_home, monkeypatch):
    monkeypatch.chdir(tmp_path)
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    (tmp_path / "empty.md").write_text("")
    (tmp_path / "binary.md").write_bytes(b"\xff\xfe\x00bad")
    (tmp_path / "plain").mkdir()
    monkeypatch.delenv("TOREN_TEST_UNSET_VAR", raising=False)
    return tmp_path


def assert_nothing_started(toren_home: Path, repo: Path, docker_client) -> None:
    db = toren_home / "toren.db"
    if db.exists():
        import sqlite3

        assert sqlite3.connect(db).execute("SELECT COUNT(*) FROM jobs").fetchone()[0] == 0
    assert not (toren_home / "jobs").exists() or not any((toren_home / "jobs").iterdir())
    assert git("branch", "--list", cwd=repo).split() == ["*", "main"]
    assert not docker_client.containers.list(all=True, filters={"label": "toren.managed=1"})


def test_at_least_thirty_cases():
    assert len(CASES) >= 30


@pytest.mark.parametrize("argv,option", [(c[1], c[2]) for c in CASES], ids=[c[0] for c in CASES])
def test_bad_invocation(argv, option, bad_input_dir, toren_home, repo, capsys, docker_client):
    home = os.environ["HOME"]
    code = main(["run", *[a.replace("{home}", home) for a in argv]])
    out, err = capsys.readouterr()
    assert code == 2, err
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("toren: ") and option in lines[0], lines[0]
    assert_nothing_started(toren_home, repo, docker_client)


def test_config_file_error_exits_3(bad_input_dir, toren_home, repo, capsys, docker_client):
    (repo / "toren.toml").write_text('timeout_minutes = "soon"\n')
    code = main(["run", *GOOD])
    err = capsys.readouterr().err
    assert code == 3 and "toren.toml: timeout_minutes:" in err and len(err.strip().splitlines()) == 1
    assert_nothing_started(toren_home, repo, docker_client)


def test_repository_config_may_not_reach_host_secrets(bad_input_dir, toren_home, repo, capsys, docker_client,
                                                        monkeypatch):
    monkeypatch.setenv("HOST_DEPLOY_TOKEN", "s3cr3t-value-123")
    for line in ('secrets = ["HOST_DEPLOY_TOKEN"]', 'volumes = ["/etc:/host-etc:ro"]', 'network = "host"',
                 'allow_mounts = ["/"]'):
        (repo / "toren.toml").write_text(line + "\n")
        code = main(["run", *GOOD])
        err = capsys.readouterr().err
        assert code == 3, err
        assert "may not set" in err and len(err.strip().splitlines()) == 1
        assert_nothing_started(toren_home, repo, docker_client)


def test_bad_utf8_config_is_a_config_error(bad_input_dir, toren_home, repo, capsys, docker_client):
    (repo / "toren.toml").write_bytes(b'command = "\xff"\n')
    code = main(["run", *GOOD])
    err = capsys.readouterr().err
    assert code == 3 and "cannot read it as TOML" in err


def test_environment_error_names_the_variable(bad_input_dir, toren_home, repo, capsys, docker_client, monkeypatch):
    monkeypatch.setenv("TOREN_TIMEOUT_MINUTES", "abc")
    code = main(["run", *GOOD])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("toren: TOREN_TIMEOUT_MINUTES: ")
    assert_nothing_started(toren_home, repo, docker_client)


def test_missing_base_image_with_pull_never(bad_input_dir, toren_home, repo, capsys, docker_client):
    code = main(["run", *with_(base_image="toren/does-not-exist:1"), "--pull", "never", "--json"])
    out, err = capsys.readouterr()
    assert code == 5  # ImageError
    assert "--pull never" in out and "toren/does-not-exist:1" in out


def test_as_a_subprocess_one_line_and_exit_2(bad_input_dir, toren_home):
    env = subprocess_env()
    proc = subprocess.run([sys.executable, "-m", "toren_action", "run", *with_(branch="bad name")],
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("toren: --branch: ")
