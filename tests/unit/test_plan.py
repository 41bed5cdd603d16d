"""make_plan without Docker or a network: an injected environment and working directory, a local repository.
Each refusal names the flag (or variable) to fix; a good plan carries the key proxy's upstream as a field."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import pytest

from toren_action.config.settings import Settings
from toren_action.core.errors import MissingCredentials, UsageError
from toren_action.job.plan import MAX_PROMPT_BYTES, make_plan


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path)


@pytest.fixture
def environ(tmp_path: Path) -> dict[str, str]:
    return clean_environ(tmp_path)


def make_repo(tmp_path: Path) -> Path:
    """A local repository with one commit, and a task file beside it."""
    repo = tmp_path / "repo"
    repo.mkdir()
    for args in (("init", "-q", "-b", "main"), ("-c", "user.name=t", "-c", "user.email=t@x", "commit", "-q",
                                               "--allow-empty", "-m", "init")):
        subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)
    (tmp_path / "task.md").write_text("# Do the thing\n\nPlease.\n")
    return repo


def clean_environ(tmp_path: Path) -> dict[str, str]:
    """An environment of its own: a fresh HOME (no login files), PATH, nothing else."""
    home = tmp_path / "home"
    home.mkdir()
    return {"HOME": str(home), "PATH": os.environ.get("PATH", "/usr/bin:/bin")}


def plan(repo_dir: Path, environ: dict[str, str], **flags):
    flags = {"repo": str(repo_dir), "spec": str(repo_dir.parent / "task.md"), "agent": "shell", **flags}
    if flags["agent"] == "shell" and "command" not in flags:
        flags["command"] = "true"
    flags = {k: v for k, v in flags.items() if v is not None}
    settings = Settings.load(flags, environ=environ, cwd=str(repo_dir))
    return make_plan(settings, "job1", environ=environ, cwd=str(repo_dir))


def refusal(repo_dir: Path, environ: dict[str, str], **flags) -> UsageError:
    with pytest.raises(UsageError) as caught:
        plan(repo_dir, environ, **flags)
    return caught.value


KEY = {"ANTHROPIC_API_KEY": "sk-ant-test-0123456789abcdefghij"}


@pytest.mark.parametrize("flags,env,option,says", [
    ({"command": None}, {}, "--command", "needs a command"),
    ({"agent": "claude", "command": "make"}, KEY, "--command", "only the shell agent"),
    ({"issue": "acme/widget#1"}, {}, "--spec", "not both"),
    ({"spec": None}, {}, "--spec", "no task given"),
    ({"spec": None, "issue": "https://ghe.example.com/acme/widget/issues/3", "repo": "."}, {}, "--issue",
     "GITHUB_SERVER_URL"),
    ({"spec": None, "issue": "acme/widget#3"}, {}, "--repo", "with --issue the result goes to GitHub"),
    ({"egress": "allow=pypi.org"}, {}, "--egress", "no Node"),
    ({"agent": "claude", "egress": "allow=pypi.org", "network": "bridge"}, KEY, "--egress", "drop --network"),
    ({"agent": "claude", "env": {"ANTHROPIC_BASE_URL": "http://x"}}, KEY, "--env", "set by the claude profile"),
    ({"env": {"DB_PASSWORD": "hunter22"}}, {}, "--env", "looks like a credential"),
    ({"env": {"GH_TOKEN": "x"}}, {}, "--env", "looks like a credential"),
    ({"key_proxy": "on"}, {}, "--key-proxy", "uses no model API"),
    ({"agent": "claude", "key_proxy": "on"}, {"CLAUDE_CODE_OAUTH_TOKEN": "oauth-token-value"}, "--key-proxy",
     "needs ANTHROPIC_API_KEY"),
    ({"agent": "claude"}, {**KEY, "ANTHROPIC_BASE_URL": "https://user:pw@gateway.example"}, "ANTHROPIC_BASE_URL",
     "user or password"),
    ({"agent": "claude"}, {**KEY, "ANTHROPIC_BASE_URL": "ftp://gateway.example"}, "ANTHROPIC_BASE_URL",
     "not an http(s) URL"),
    ({"agent": "claude", "key_proxy": "off"}, {**KEY, "ANTHROPIC_BASE_URL": "https://user:pw@gateway.example"},
     "ANTHROPIC_BASE_URL", "user or password"),
    ({"agent": "claude", "key_proxy": "off"}, {**KEY, "ANTHROPIC_BASE_URL": "http://127.0.0.1:8080"},
     "ANTHROPIC_BASE_URL", "--network host"),
    ({"agent": "claude", "key_proxy": "off"}, {**KEY, "ANTHROPIC_UNIX_SOCKET": "/nonexistent/api.sock"},
     "ANTHROPIC_UNIX_SOCKET", "not a unix socket"),
    ({"agent": "codex", "max_cost_usd": 1.0}, {"OPENAI_API_KEY": "sk-test-0123456789abcdefghijklmnop"},
     "--max-cost-usd", "only when it finishes"),
    ({"agent": "qwen", "max_cost_usd": 1.0, "model": "no-such-model"},
     {"OPENAI_API_KEY": "sk-test-0123456789abcdefghijklmnop"}, "--max-cost-usd", "no price is known"),
])
def test_each_refusal_names_its_flag(repo, environ, flags, env, option, says):
    err = refusal(repo, {**environ, **env}, **flags)
    assert err.option == option and says in str(err), str(err)


def test_a_prompt_too_long_for_one_argument_is_refused(repo, environ):
    (repo.parent / "task.md").write_text("# Big\n\n" + "x" * (MAX_PROMPT_BYTES + 10) + "\n")
    err = refusal(repo, {**environ, **KEY}, agent="claude")
    assert err.option == "--spec" and "bytes" in str(err)


def test_another_uid_needs_root(repo, environ):
    if os.geteuid() == 0:
        pytest.skip("root may run the agent as any uid")
    err = refusal(repo, environ, agent_uid=os.getuid() + 1)
    assert err.option == "--agent-uid" and "only root" in str(err)


def test_an_existing_branch_is_refused_without_force(repo, environ):
    subprocess.run(["git", "branch", "toren/taken"], cwd=repo, check=True)
    err = refusal(repo, environ, branch="toren/taken")
    assert err.option == "--branch" and "already exists" in str(err)
    assert plan(repo, environ, branch="toren/taken", force_branch=True).force_push


def test_a_container_engine_socket_is_never_passed_through(repo, environ, tmp_path):
    path = tmp_path / "engine.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    try:
        env = {**environ, **KEY, "ANTHROPIC_UNIX_SOCKET": str(path), "DOCKER_HOST": f"unix://{path}"}
        err = refusal(repo, env, agent="claude", key_proxy="off")
        assert err.option == "ANTHROPIC_UNIX_SOCKET" and "container engine" in str(err)
    finally:
        server.close()


def test_github_needs_a_token_before_anything_is_asked_of_it(repo, environ):
    settings = Settings.load({"repo": "acme/widget", "spec": str(repo.parent / "task.md"), "agent": "shell",
                              "command": "true"}, environ=environ, cwd=str(repo))
    with pytest.raises(MissingCredentials, match="GITHUB_TOKEN"):
        make_plan(settings, "job1", environ=environ, cwd=str(repo))


@pytest.mark.parametrize("extra", [{"no_pr": True}, {}])
def test_a_review_round_needs_a_token_even_with_no_pr(repo, environ, extra):
    """--pr --no-pr without a token is no plain git push with the host's credentials: the round reads the pull
    request through the API, so the missing token is the one-line refusal (it was an internal error)."""
    settings = Settings.load({"pr": "acme/widget#5", "agent": "shell", "command": "true", **extra},
                             environ=environ, cwd=str(repo))
    with pytest.raises(MissingCredentials, match="GITHUB_TOKEN"):
        make_plan(settings, "job1", environ=environ, cwd=str(repo))


def test_a_missing_credential_is_refused(repo, environ):
    with pytest.raises(MissingCredentials, match="ANTHROPIC_API_KEY"):
        plan(repo, environ, agent="claude")


def test_the_key_proxy_upstream_is_a_field_not_a_passthrough_entry(repo, environ):
    env = {**environ, **KEY, "ANTHROPIC_BASE_URL": "https://gateway.example/anthropic",
           "ANTHROPIC_SMALL_FAST_MODEL": "claude-haiku-4-5"}
    p = plan(repo, env, agent="claude")
    assert p.proxy_key is not None and p.proxy_key.reveal() == KEY["ANTHROPIC_API_KEY"]
    assert p.key_proxy_upstream == "https://gateway.example/anthropic"
    assert dict(p.passthrough) == {"ANTHROPIC_SMALL_FAST_MODEL": "claude-haiku-4-5"}
    assert KEY["ANTHROPIC_API_KEY"] not in {s.reveal() for s in p.secrets}  # the key stays on the host

    off = plan(repo, env, agent="claude", key_proxy="off")
    assert off.proxy_key is None and off.key_proxy_upstream is None
    assert dict(off.passthrough)["ANTHROPIC_BASE_URL"] == "https://gateway.example/anthropic"
    assert [s.name for s in off.secrets] == ["ANTHROPIC_API_KEY"]


def test_a_plan_is_built_with_keywords_only(repo, environ):
    import dataclasses

    from toren_action.job.plan import Plan

    p = plan(repo, environ)
    assert p.branch == "toren/job1" and p.origin == str(repo) and p.network == "none"
    with pytest.raises(TypeError):
        Plan(*[getattr(p, f.name) for f in dataclasses.fields(Plan)])  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.branch = "x"  # type: ignore[misc]
