"""The diff policy: agents that write secrets, workflows, symlinks out of the repository or big binaries get
their push blocked with a named finding; the allow flags let it through."""

from __future__ import annotations

import json

import pytest

from tests.conftest import git
from tests.integration.test_run_local import run_shell

pytestmark = pytest.mark.docker

GITHUB_TOKEN = "ghp_" + "R3alLook1ngT0kenFromTheAgent0123456789"[:36]
AWS_KEY = "AKIA" + "IOSFODNN7EXAMPLE"
PRIVATE_KEY = "-----BEGIN OPENSSH PRIVATE KEY-----"


@pytest.mark.parametrize("name, command, rule", [
    ("github-token", f"echo 'TOKEN = \"{GITHUB_TOKEN}\"' > config.py", "secret-pattern"),
    ("unicode-name", f"echo 'TOKEN = \"{GITHUB_TOKEN}\"' > café.py", "secret-pattern"),
    ("aws-key", f"echo 'aws_access_key_id = {AWS_KEY}' > creds.ini", "secret-pattern"),
    ("private-key", f"printf '%s\\nAAAA\\n' '{PRIVATE_KEY}' > id_ed25519", "secret-pattern"),
    ("entropy", "echo 'api_key = \"q8Zr2Lx9Vw4Nt7Kp1Bf6Hs3Jd0Gm5Yc\"' > settings.py", "secret-pattern"),
    ("workflow", "mkdir -p .github/workflows && echo 'on: push' > .github/workflows/evil.yml", "workflow"),
    ("symlink", "ln -s /etc/passwd passwd-link", "symlink"),
    ("binary", "head -c 2000 /dev/urandom > blob.bin", "binary"),
    # issue 11: the agent cannot blind the policy (finding 1), chain symlinks out (4) or edit what CI runs (5)
    ("plus-plus-line", f"printf 'x = 1\\n++ /dev/null\\nTOKEN = \"%s\"\\n' '{GITHUB_TOKEN}' > notes.py",
     "secret-pattern"),
    ("quoted-name", f"echo 'TOKEN = \"{GITHUB_TOKEN}\"' > \"$(printf 'tab\\there.py')\"", "secret-pattern"),
    ("form-feed", f"printf 'x = 1\\fTOKEN = \"%s\"\\n' '{GITHUB_TOKEN}' > ff.py", "secret-pattern"),
    ("attributes-hide", f"echo '* -diff' > .gitattributes && echo 'TOKEN = \"{GITHUB_TOKEN}\"' > hidden.py",
     "secret-pattern"),
    ("attributes-text", "echo '*.so diff' > .gitattributes && printf '\\177ELF\\0\\0\\1' > lib.so", "binary"),
    ("symlink-chain", "mkdir -p d1/d2/d3 && ln -s ../../.. d1/d2/d3/up && ln -s d1/d2/d3/up/../etc/passwd esc",
     "symlink"),
    ("composite-action", "mkdir -p .github/actions/deploy && echo 'runs: {using: composite}' "
                         "> .github/actions/deploy/action.yml", "workflow"),
    ("nested-action", "mkdir -p tools/x && echo 'runs: {using: node20}' > tools/x/action.yaml", "workflow"),
])
def test_a_change_that_breaks_the_policy_is_not_pushed(name, command, rule, workdir, repo, toren_home, capsys):
    code, result, err = run_shell(capsys, command, branch=f"toren/policy-{name}")
    assert code == 21, err
    assert result["state"] == "blocked_by_policy" and rule in result["message"]
    assert git("branch", "--list", f"toren/policy-{name}", cwd=repo).strip() == ""  # nothing pushed
    report = json.loads((toren_home / "jobs" / result["job_id"] / "policy.json").read_text())
    assert report[0]["rule"] == rule and report[0]["path"]
    # the report and the log name the finding, never the secret
    log = (toren_home / "jobs" / result["job_id"] / "job.log").read_text()
    assert f"policy: {rule}" in log
    for secret in (GITHUB_TOKEN, AWS_KEY):
        assert secret not in log and secret not in err and secret not in json.dumps(report)


@pytest.mark.parametrize("name, command, allow", [
    ("workflow", "mkdir -p .github/workflows && echo 'on: push' > .github/workflows/ok.yml",
     ["--allow-workflow-changes"]),
    ("symlink", "ln -s /etc/passwd passwd-link", ["--allow-policy", "symlink"]),
    ("aws-key", f"echo 'aws_access_key_id = {AWS_KEY}' > creds.ini", ["--allow-policy", "secret-pattern"]),
])
def test_the_allow_flags_let_it_through(name, command, allow, workdir, repo, toren_home, capsys):
    code, result, err = run_shell(capsys, command, *allow, branch=f"toren/allowed-{name}")
    assert code == 0, err
    assert result["state"] == "succeeded"


def test_protected_paths_and_the_size_cap(workdir, repo, toren_home, capsys):
    code, result, _ = run_shell(capsys, "echo x >> README.md", "--protected-path", "README.md",
                                branch="toren/protected")
    assert code == 21 and "protected-path" in result["message"]
    code, result, _ = run_shell(capsys, "head -c 3000000 /dev/zero | tr '\\0' a > big.txt", "--max-file-mb", "1",
                                branch="toren/big")
    assert code == 21 and "large-file" in result["message"]


@pytest.mark.parametrize("name, command", [
    ("copy", "cp /run/toren/secrets/MY_TOKEN leaked.txt"),
    # issue 11, finding 1: attributes, a form feed and a binary file do not hide the value
    ("minus-diff", "echo 'leaked.txt -diff' > .gitattributes && cp /run/toren/secrets/MY_TOKEN leaked.txt"),
    ("form-feed", "printf 'x = 1\\f%s\\n' \"$(cat /run/toren/secrets/MY_TOKEN)\" > leaked.py"),
    ("in-a-binary", "{ printf '\\0\\0'; cat /run/toren/secrets/MY_TOKEN; } > leaked.bin"),
    ("past-the-cap", "{ head -c 1100000 /dev/zero | tr '\\0' a; echo; cat /run/toren/secrets/MY_TOKEN; } > big.txt"),
])
def test_a_secret_value_can_never_be_allowed(name, command, workdir, repo, toren_home, capsys, monkeypatch):
    monkeypatch.setenv("MY_TOKEN", "tok_" + "a1b2c3d4e5f6a7b8")
    code, result, err = run_shell(capsys, command, "--secret", "MY_TOKEN", "--max-file-mb", "1",
                                  *[a for rule in ("secret-pattern", "binary", "large-file")
                                    for a in ("--allow-policy", rule)], branch=f"toren/value-{name}")
    assert code == 21 and "secret-value" in result["message"], err
    assert git("branch", "--list", f"toren/value-{name}", cwd=repo).strip() == ""
    assert "tok_a1b2c3d4e5f6a7b8" not in err


def test_a_hostile_host_git_config_does_not_blind_the_policy(workdir, repo, toren_home, capsys, monkeypatch,
                                                            tmp_path):
    """The user's own ~/.gitconfig sets every option that blinded the old patch parser (issue 11, finding 1)."""
    config = tmp_path / "hostile.gitconfig"
    config.write_text("[diff]\n\tnoprefix = true\n\tmnemonicPrefix = true\n\trelative = true\n"
                      "[core]\n\tquotePath = true\n[color]\n\tui = always\n")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(config))
    code, result, err = run_shell(capsys, f"echo 'TOKEN = \"{GITHUB_TOKEN}\"' > café.py", branch="toren/hostile")
    assert code == 21 and "secret-pattern" in result["message"] and "café.py" in result["message"], err
    assert git("branch", "--list", "toren/hostile", cwd=repo).strip() == ""


def test_the_ci_preset_protects_what_ci_runs(workdir, repo, toren_home, capsys):
    code, result, _ = run_shell(capsys, "echo 'import os' > conftest.py", "--protected-path", "@ci",
                                branch="toren/ci-preset")
    assert code == 21 and "protected-path" in result["message"] and "conftest.py" in result["message"]
    assert git("branch", "--list", "toren/ci-preset", cwd=repo).strip() == ""


def test_a_token_the_agent_prints_is_masked_everywhere(workdir, repo, toren_home, capsys):
    command = (f"echo 'found {GITHUB_TOKEN} and {AWS_KEY}'; mkdir -p .toren; "
               f"echo 'Summary: used {GITHUB_TOKEN}' > .toren/summary.md; echo ok > ok.txt")
    code, result, err = run_shell(capsys, command, branch="toren/printed")
    assert code == 0, err
    job_dir = toren_home / "jobs" / result["job_id"]
    log = (job_dir / "job.log").read_text()
    assert "found *** and ***" in log
    assert "Summary: used ***" in (job_dir / "pr.md").read_text()
    from tests.integration.test_run_local import toren

    _, summary, _ = toren(capsys, "summary", result["job_id"], "--json", "--plain")
    for where in (log, err, summary, (job_dir / "pr.md").read_text(), (toren_home / "toren.db").read_bytes().decode(
            "utf-8", "replace")):
        assert GITHUB_TOKEN not in where and AWS_KEY not in where


def test_claude_writing_a_token_is_blocked(workdir, repo, toren_home, capsys, docker_client, monkeypatch):
    from tests.fakes.anthropic import FakeAnthropic
    from tests.fakes.base import Script
    from toren_action.cli import main
    from toren_action.sandbox.toolchain import cache_dir

    monkeypatch.setenv("TOREN_CACHE_DIR", str(cache_dir()))
    with FakeAnthropic(Script(file_path="/workspace/deploy.py", content=f'GH = "{GITHUB_TOKEN}"\n')) as fake:
        monkeypatch.setenv("ANTHROPIC_API_KEY", fake.script.api_key)
        monkeypatch.setenv("ANTHROPIC_BASE_URL", fake.url)
        code = main(["run", "--repo", "./myproject", "--spec", "task.md", "--branch", "toren/claude-leak",
                     "--base-image", "toren/base:bookworm", "--pull", "never", "--disable-daemon", "--json"])
        out, err = capsys.readouterr()
    assert code == 21, err
    result = json.loads(out)
    assert result["state"] == "blocked_by_policy" and "secret-pattern" in result["message"]
    assert git("branch", "--list", "toren/claude-leak", cwd=repo).strip() == ""
    assert GITHUB_TOKEN not in err and GITHUB_TOKEN not in out


def test_the_code_scan_reports_and_blocks_only_when_asked(workdir, repo, toren_home, capsys):
    risky = "printf 'import subprocess\\ndef f(x):\\n    subprocess.call(x, shell=True)\\n' > risky.py"
    code, result, err = run_shell(capsys, risky, branch="toren/risky")
    assert code == 0, err
    pr = (toren_home / "jobs" / result["job_id"] / "pr.md").read_text()
    assert "## Security scan" in pr and "risky.py:3" in pr and "B602" in pr
    code, result, err = run_shell(capsys, risky, "--fail-on", "high", branch="toren/risky-blocked")
    assert code == 21 and "code scan" in result["message"]
    assert git("branch", "--list", "toren/risky-blocked", cwd=repo).strip() == ""


@pytest.mark.parametrize("comment", ["  # nosec", "  # nosec B602", "  # nosec: B602,B607"])
def test_the_agents_nosec_comments_do_not_silence_the_code_scan(workdir, repo, toren_home, capsys, comment):
    risky = f"printf 'import subprocess\\ndef f(x):\\n    subprocess.call(x, shell=True){comment}\\n' > risky.py"
    code, result, err = run_shell(capsys, risky, "--fail-on", "high", branch="toren/nosec")
    assert code == 21 and "code scan" in result["message"], result
    assert git("branch", "--list", "toren/nosec", cwd=repo).strip() == ""


@pytest.mark.parametrize("command", [f"touch {GITHUB_TOKEN}.txt",
                                     f"mkdir -p d/{GITHUB_TOKEN} && touch d/{GITHUB_TOKEN}/x",
                                     f"touch x{GITHUB_TOKEN}_y.py",
                                     'touch "leak-$(cat /run/toren/secrets/MY_TOKEN).txt"'],
                         ids=["file-name", "directory-name", "inside-a-word", "secret-value-name"])
def test_a_secret_in_a_file_name_is_blocked_and_never_stored(workdir, repo, toren_home, capsys, monkeypatch,
                                                            command):
    value = "tok_a1b2c3d4e5f6a7b8"
    monkeypatch.setenv("MY_TOKEN", value)
    code, result, err = run_shell(capsys, command, "--secret", "MY_TOKEN", branch="toren/name-leak")
    assert code == 21 and result["state"] == "blocked_by_policy", result
    assert "secret-" in result["message"]
    assert git("branch", "--list", "toren/name-leak", cwd=repo).strip() == ""
    for path in toren_home.rglob("*"):  # the record, its events, the log and the report: masked everywhere
        if path.is_file() and not path.is_relative_to(toren_home / "jobs" / result["job_id"] / "workspace"):
            data = path.read_bytes()
            assert GITHUB_TOKEN.encode() not in data and value.encode() not in data, path
