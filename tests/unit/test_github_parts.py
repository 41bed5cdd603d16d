"""GitHub helpers without a server: endpoints, the token, git's auth environment, the progress comment."""

from __future__ import annotations

import base64
import re
import time

import pytest

from toren_action.config.validate import issue_ref
from toren_action.core.errors import UsageError
from toren_action.git.github import Endpoints, ProgressComment, git_auth_env, read_token


def test_endpoints_default_to_github_com_and_follow_the_enterprise_variables():
    assert Endpoints.from_environ({}) == Endpoints("https://api.github.com", "https://github.com")
    ghes = Endpoints.from_environ({"GITHUB_API_URL": "https://ghe.corp/api/v3/", "GITHUB_SERVER_URL": "https://ghe.corp"})
    assert ghes.api_url == "https://ghe.corp/api/v3" and ghes.clone_url("a/b") == "https://ghe.corp/a/b.git"
    with pytest.raises(UsageError, match="GITHUB_API_URL"):
        Endpoints.from_environ({"GITHUB_API_URL": "https://user:pw@ghe.corp/api/v3"})
    with pytest.raises(UsageError, match="plain http"):
        Endpoints.from_environ({"GITHUB_API_URL": "http://ghe.corp/api/v3"})
    assert Endpoints.from_environ({"GITHUB_API_URL": "http://127.0.0.1:8080/api/v3"}).api_url.startswith("http://")


def test_issue_references():
    assert issue_ref("acme/widget#42").repo == "acme/widget"
    ref = issue_ref("https://ghe.corp/acme/widget/issues/7")
    assert (ref.repo, ref.number, ref.host) == ("acme/widget", 7, "ghe.corp")


def test_token_sources(tmp_path):
    assert read_token({"GH_TOKEN": "b", "GITHUB_TOKEN": "a"}, None).reveal() == "a"
    assert read_token({"GH_TOKEN": " b\n"}, None).reveal() == "b"
    assert read_token({}, None) is None
    f = tmp_path / "tok"
    f.write_text("from-file\n")
    assert read_token({"GITHUB_TOKEN": "a"}, str(f)).reveal() == "from-file"
    with pytest.raises(UsageError, match="--github-token-file"):
        read_token({}, str(tmp_path / "absent"))
    f.write_text("\ufeffghp_abc\n")  # a BOM from a Windows editor is dropped
    assert read_token({}, str(f)).reveal() == "ghp_abc"
    with pytest.raises(UsageError, match="GITHUB_TOKEN"):
        read_token({"GITHUB_TOKEN": "ghp_é"}, None)


def test_git_gets_the_token_as_a_header_scoped_to_the_server_and_only_in_its_environment():
    env = git_auth_env("https://ghe.corp", read_token({"GITHUB_TOKEN": "s3cret"}, None))
    assert env["GIT_CONFIG_KEY_0"] == "http.https://ghe.corp/.extraHeader"
    assert base64.b64decode(env["GIT_CONFIG_VALUE_0"].split()[-1]) == b"x-access-token:s3cret"
    assert git_auth_env("https://ghe.corp", None) == {}
    # the user's own GIT_CONFIG_* entries are kept: Toren's comes after them
    env = git_auth_env("https://ghe.corp", read_token({"GITHUB_TOKEN": "s"}, None), {"GIT_CONFIG_COUNT": "2"})
    assert env["GIT_CONFIG_COUNT"] == "3" and "GIT_CONFIG_KEY_2" in env


class _Comment:
    def __init__(self, log):
        self.log = log

    def edit(self, body):
        self.log.append(("edit", body))


class _Issue:
    def __init__(self, log):
        self.log = log

    def create_comment(self, body):
        self.log.append(("create", body))
        return _Comment(self.log)


class _Repo:
    def __init__(self):
        self.log = []

    def get_issue(self, number):
        return _Issue(self.log)


def test_progress_edits_are_throttled_but_never_left_behind():
    repo = _Repo()
    p = ProgressComment(repo, 42, "job1")
    p.MIN_INTERVAL_S = 0.3
    p.stage("queued", "")
    for state in ("preparing", "building", "running"):
        p.stage(state, "")
    for turn in range(1, 30):
        p.turns(turn)
    assert [k for k, _ in repo.log] == ["create"]  # the burst waited
    time.sleep(0.6)
    assert [k for k, _ in repo.log] == ["create", "edit"]  # ... and was written when its turn came
    assert "Agent running (turn 29)" in repo.log[-1][1]
    p.finish("succeeded", ["Pull request: https://x/pull/1"])
    assert "succeeded" in repo.log[-1][1] and "https://x/pull/1" in repo.log[-1][1]
    time.sleep(0.4)
    assert len(repo.log) == 3  # nothing after the final edit


def test_the_progress_comment_keeps_each_final_line_on_its_line():
    repo = _Repo()
    p = ProgressComment(repo, 42, "job1")
    p.stage("running", "fixes #1 @octocat\n## forged")  # a stage's detail is never shown
    p.finish("failed", ["Reason: x\n## Reviewed and approved by @octocat\r\n- [x] done\x1b[2K", "_took 3s._"])
    body = repo.log[-1][1]
    assert "\n## " not in body and "\n- [x]" not in body and "\x1b" not in body and "\r" not in body
    assert "fixes #1" not in body and "forged" not in body and not re.search(r"@[A-Za-z0-9]", body)
    reason, took = body.rstrip("\n").split("\n")[-2:]  # two lines in, two lines out
    assert reason.startswith("Reason: x\\n## Reviewed") and took == "_took 3s._"


def test_a_pull_request_title_is_one_defused_line_and_its_body_has_no_control_character(tmp_path):
    import subprocess

    from tests.fakes.github import FakeGitHub
    from toren_action.core.redact import Secret
    from toren_action.git.github import GitHub

    with FakeGitHub(tmp_path / "gh") as fake:
        bare = fake.add_repo("acme/widget")
        git = ["git", f"--git-dir={bare}"]
        tree = subprocess.run([*git, "rev-parse", "main^{tree}"], capture_output=True, text=True, check=True)
        commit = subprocess.run([*git, "commit-tree", tree.stdout.strip(), "-p", "main", "-m", "x"],
                                capture_output=True, text=True, check=True,
                                env={"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@e", "GIT_COMMITTER_NAME": "t",
                                     "GIT_COMMITTER_EMAIL": "t@e", "PATH": "/usr/bin:/bin"})
        subprocess.run([*git, "update-ref", "refs/heads/toren/x", commit.stdout.strip()], check=True)
        gh = GitHub(Endpoints(fake.api_url, fake.server_url), Secret("GITHUB_TOKEN", fake.token))
        title = "Typo, fixes #1 cc @acme/security-team\n\nCo-authored-by: Mallory <m@e>\x1b]52;c;eA==\x07"
        body = "Closes #42\n\n## Summary\nok @octocat\x1b[2K\x9b\u202e\n"
        gh.open_or_update_pr("acme/widget", "acme/widget", "toren/x", "main", title, body, draft=False)
        (pr,) = fake.pulls("acme/widget")
        assert "\n" not in pr["title"] and "\x1b" not in pr["title"] and "\x07" not in pr["title"]
        assert not re.search(r"@[a-z]|#\d|fixes\s*#", pr["title"], re.I), pr["title"]
        assert pr["body"].startswith("Closes #42\n")  # Toren's own reference is the caller's to keep
        assert not re.search("[\x1b\x9b\u202e]", pr["body"]) and "\\x1b[2K" in pr["body"]
        assert not re.search(r"@[A-Za-z0-9]", pr["body"])


def test_an_issue_of_wide_characters_makes_a_task_the_cli_can_still_take(tmp_path):
    """An org member (any role) can comment 4-byte characters on an issue: the task stays under the prompt's
    limit in bytes, or every run on the issue would be refused."""
    from tests.fakes.github import FakeGitHub
    from toren_action.config.validate import IssueRef
    from toren_action.core.redact import Secret
    from toren_action.git.github import GitHub
    from toren_action.job.plan import MAX_PROMPT_BYTES

    with FakeGitHub(tmp_path / "gh") as fake:
        fake.add_repo("acme/widget")
        fake.add_issue("acme/widget", 7, "Fix it", "the body\n" + "\u4e2d" * 20_000,
                       comments=[{"login": "mallory", "body": "\U0001f600" * 60_000}])
        fake.set_permission("acme/widget", "mallory", "read")  # a role: a collaborator who may only read
        gh = GitHub(Endpoints(fake.api_url, fake.server_url), Secret("GITHUB_TOKEN", fake.token))
        task = gh.issue_task(IssueRef("acme/widget", 7))
    assert len(task.prompt().encode()) <= MAX_PROMPT_BYTES and "the body" in task.body
