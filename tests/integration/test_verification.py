"""--verify as test results, end to end with the shell agent on a small unittest project whose one failing test
comes from a real bug (the base image has python3 but no pytest): --verify-baseline's fixed and broken tests,
JUnit files the project writes itself, --on-failure branch and draft, --verify-retries."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from tests.conftest import BASE_IMAGE, git
from toren_action.cli import main

pytestmark = pytest.mark.docker

TEXTOPS = '''def slug(text):
    """'Hello World' -> 'hello-world'."""
    return text.lower().replace(" ", "_")


def words(text):
    return text.split(" ")
'''
TESTS = '''import unittest

import textops


class TestSlug(unittest.TestCase):
    def test_slug_uses_dashes(self):
        self.assertEqual(textops.slug("Hello World"), "hello-world")

    def test_slug_lowercases(self):
        self.assertEqual(textops.slug("ABC"), "abc")


class TestWords(unittest.TestCase):
    def test_words_split_on_spaces(self):
        self.assertEqual(textops.words("a b"), ["a", "b"])
'''
# A runner that writes JUnit XML itself (the project's own choice of report), then exits as unittest did.
JUNIT_RUNNER = '''import sys
import unittest
from xml.sax.saxutils import quoteattr

suite = unittest.defaultTestLoader.discover(".")
result = unittest.TestResult()
cases = []


def walk(s):
    for t in s:
        if isinstance(t, unittest.TestSuite):
            walk(t)
        else:
            cases.append(t)


walk(suite)
for case in cases:
    case.run(result)
bad = {t.id(): tb for t, tb in result.failures + result.errors}
import os
os.makedirs("reports", exist_ok=True)
with open("reports/junit.xml", "w") as fh:
    fh.write('<?xml version="1.0"?><testsuites><testsuite name="textops">')
    for case in cases:
        cls, _, name = case.id().rpartition(".")
        fh.write(f"<testcase classname={quoteattr(cls)} name={quoteattr(name)}>")
        if case.id() in bad:
            fh.write(f"<failure message={quoteattr(bad[case.id()].splitlines()[-1])}></failure>")
        fh.write("</testcase>")
    fh.write("</testsuite></testsuites>")
print(f"{len(cases)} tests, {len(bad)} failed")
sys.exit(1 if bad else 0)
'''
FIX = "sed -i 's/\"_\"/\"-\"/' textops.py"
BREAK_WORDS = "sed -i 's/split(\" \")/split(\"-\")/' textops.py"
VERIFY = "python3 -m unittest -v"


@pytest.fixture
def textops(tmp_path: Path) -> Path:
    path = tmp_path / "textops"
    path.mkdir()
    (path / "textops.py").write_text(TEXTOPS)
    (path / "test_textops.py").write_text(TESTS)
    (path / "run_tests.py").write_text(JUNIT_RUNNER)
    (path / ".gitignore").write_text("__pycache__/\n")
    git("init", "-q", "-b", "main", cwd=path)
    git("add", "-A", cwd=path)
    git("-c", "user.name=U", "-c", "user.email=u@example.invalid", "commit", "-q", "-m", "textops", cwd=path)
    return path


def run(capsys, repo: Path, command: str, branch: str, *extra: str) -> tuple[int, dict]:
    code = main(["run", "--repo", str(repo), "--spec", "task.md", "--branch", branch, "--agent", "shell",
                 "--command", command, "--base-image", BASE_IMAGE, "--pull", "never", "--disable-daemon", "--json",
                 *extra])
    return code, json.loads(capsys.readouterr().out)


def stored(home: Path, job_id: str) -> dict:
    conn = sqlite3.connect(home / "toren.db")
    (value,) = conn.execute("SELECT verification FROM jobs WHERE id = ?", (job_id,)).fetchone()
    return json.loads(value)


ID_DASHES = "test_textops.TestSlug.test_slug_uses_dashes"
ID_WORDS = "test_textops.TestWords.test_words_split_on_spaces"


def test_a_fix_shows_one_test_fixed_and_none_broken(workdir, textops, toren_home, capsys):
    code, result = run(capsys, textops, FIX, "toren/fix", "--verify", VERIFY, "--verify-baseline")
    assert code == 0, result
    v = result["verification"]
    assert v["outcome"] == "passed" and v["source"] == "unittest"
    assert v["fixed"] == [ID_DASHES] and v["broken"] == [] and v["still_failing"] == []
    assert v["counts"] == {"passed": 3, "failed": 0, "skipped": 0, "total": 3, "fixed": 1, "broken": 0,
                           "still_failing": 0, "still_passing": 2}
    assert v["baseline"]["counts"]["failed"] == 1 and v["baseline"]["exit_code"] == 1
    assert [r["outcome"] for r in v["rounds"]] == ["passed"]
    assert stored(toren_home, result["job_id"]) == v  # the job record holds the same
    assert main(["status", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["verification"]["counts"]["fixed"] == 1
    pr = (toren_home / "jobs" / result["job_id"] / "pr.md").read_text()
    assert "1 fixed, 0 broken, 0 still failing, 2 still passing." in pr and f"`{ID_DASHES}`" in pr
    assert main(["summary", result["job_id"], "--plain"]) == 0
    assert "1 fixed, 0 broken" in capsys.readouterr().out
    assert "toren/fix" in git("branch", "--list", cwd=textops)


def test_a_fix_that_breaks_another_test_fails_naming_it_and_pushes_nothing(workdir, textops, toren_home, capsys):
    code, result = run(capsys, textops, f"{FIX}; {BREAK_WORDS}", "toren/bad", "--verify", VERIFY,
                       "--verify-baseline")
    assert code == 8, result
    assert result["state"] == "verification_failed"
    assert ID_WORDS in result["message"] and "nothing was pushed" in result["message"]
    v = result["verification"]
    assert v["outcome"] == "failed" and v["broken"] == [ID_WORDS] and v["fixed"] == [ID_DASHES]
    assert "toren/bad" not in git("branch", "--list", cwd=textops)
    # allowing failures that already failed at the base does not allow a broken one
    code, result = run(capsys, textops, f"{FIX}; {BREAK_WORDS}", "toren/bad2", "--verify", VERIFY,
                       "--verify-baseline", "--verify-allow-preexisting")
    assert code == 8 and result["verification"]["broken"] == [ID_WORDS]


def test_allow_preexisting_passes_when_only_old_failures_remain(workdir, textops, toren_home, capsys):
    code, result = run(capsys, textops, "echo '# note' >> textops.py", "toren/note", "--verify", VERIFY,
                       "--verify-baseline", "--verify-allow-preexisting")
    assert code == 0, result
    v = result["verification"]
    assert v["outcome"] == "passed" and v["still_failing"] == [ID_DASHES] and v["exit_code"] == 1
    # without the flag the same change fails: the command fails
    code, result = run(capsys, textops, "echo '# note' >> textops.py", "toren/note2", "--verify", VERIFY,
                       "--verify-baseline")
    assert code == 8 and result["verification"]["still_failing"] == [ID_DASHES]


def test_junit_written_by_the_project_is_read_and_a_committed_report_does_not_count(workdir, textops, toren_home,
                                                                                     capsys):
    # the agent commits a forged report that says every test passed; only what the command writes counts
    forged = ("mkdir -p reports; printf '<testsuite><testcase classname=\"x\" name=\"all_good\"/></testsuite>' "
              "> reports/forged.xml")
    code, result = run(capsys, textops, f"{FIX}; {BREAK_WORDS}; {forged}", "toren/junit", "--verify",
                       "python3 run_tests.py", "--verify-junit", "reports/*.xml", "--verify-baseline")
    assert code == 8, result
    v = result["verification"]
    assert v["source"] == "junit" and v["broken"] == [ID_WORDS] and v["fixed"] == [ID_DASHES]
    assert v["counts"]["total"] == 3  # x.all_good is not among them


def test_on_failure_branch_pushes_the_failed_change_and_keeps_the_state(workdir, textops, toren_home, capsys):
    code, result = run(capsys, textops, f"{FIX}; {BREAK_WORDS}", "toren/kept", "--verify", VERIFY,
                       "--verify-baseline", "--on-failure", "branch")
    assert code == 8, result
    assert result["state"] == "verification_failed" and "pushed to toren/kept" in result["message"]
    assert git("show", "toren/kept:textops.py", cwd=textops).count('"-"') == 2


def test_a_policy_block_is_never_pushed_whatever_on_failure_says(workdir, textops, toren_home, capsys):
    code, result = run(capsys, textops, "mkdir -p .github/workflows; echo x > .github/workflows/ci.yml",
                       "toren/policy", "--verify", VERIFY, "--on-failure", "branch")
    assert code == 21, result
    assert "toren/policy" not in git("branch", "--list", cwd=textops)


RETRYING_AGENT = (f"if grep -q {ID_WORDS} \"$TOREN_TASK_FILE\"; then sed -i 's/split(\"-\")/split(\" \")/' "
                  f"textops.py; cp \"$TOREN_TASK_FILE\" round2-prompt.md; else {FIX}; {BREAK_WORDS}; mkdir -p .toren; "
                  "echo 'Round one: slug uses dashes now.' > .toren/summary.md; fi")


def test_verify_retries_give_the_agent_the_failing_tests_in_another_round(workdir, textops, toren_home, capsys):
    code, result = run(capsys, textops, RETRYING_AGENT, "toren/retry", "--verify", VERIFY, "--verify-baseline",
                       "--verify-retries", "2")
    assert code == 0, result
    v = result["verification"]
    assert [r["outcome"] for r in v["rounds"]] == ["failed", "passed"]
    assert v["fixed"] == [ID_DASHES] and v["broken"] == []
    prompt = git("show", "toren/retry:round2-prompt.md", cwd=textops)
    assert "verification of your change failed" in prompt and ID_WORDS in prompt
    assert "Round one: slug uses dashes now." in prompt  # what the agent said of its first round
    # one commit on the base holds all of the agent's work
    assert git("rev-list", "--count", "main..toren/retry", cwd=textops).strip() == "1"


def test_verify_retries_stop_when_the_rounds_are_used_up(workdir, textops, toren_home, capsys):
    code, result = run(capsys, textops, f"{FIX}; {BREAK_WORDS}", "toren/stubborn", "--verify", VERIFY,
                       "--verify-baseline", "--verify-retries", "1")
    assert code == 8, result
    assert [r["outcome"] for r in result["verification"]["rounds"]] == ["failed", "failed"]


# -- on GitHub: --on-failure draft (the default for --issue) ---------------------------------------------------------

GH_REPO = "acme/textops"
GH_TOKEN = "ghp_" + "T0kenForTheFakeGitHub" + "v" * 15


@pytest.fixture
def github(tmp_path, monkeypatch, toren_home, docker_client):
    from tests.fakes.github import FakeGitHub

    with FakeGitHub(tmp_path / "github", token=GH_TOKEN) as fake:
        fake.add_repo(GH_REPO, files={"textops.py": TEXTOPS, "test_textops.py": TESTS})
        fake.add_issue(GH_REPO, 7, "slug() should use dashes", "`slug('Hello World')` gives `hello_world`.",
                       author="alice")
        fake.set_permission(GH_REPO, "alice", "maintain")
        for var in ("GH_TOKEN", "GITHUB_TOKEN", "GITHUB_ACTOR", "GITHUB_RUN_ID"):
            monkeypatch.delenv(var, raising=False)
        monkeypatch.setenv("GITHUB_TOKEN", GH_TOKEN)
        monkeypatch.setenv("GITHUB_API_URL", fake.api_url)
        monkeypatch.setenv("GITHUB_SERVER_URL", fake.server_url)
        monkeypatch.chdir(tmp_path)
        yield fake


def gh_run(capsys, *args: str) -> tuple[int, dict]:
    code = main(["run", "--base-image", BASE_IMAGE, "--pull", "never", "--disable-daemon", "--json",
                 "--agent", "shell", *args])
    return code, json.loads(capsys.readouterr().out)


def test_a_failed_job_on_an_issue_opens_a_draft_saying_why_with_the_table(github, capsys):
    code, result = gh_run(capsys, "--issue", f"{GH_REPO}#7", "--branch", "toren/issue-7", "--command",
                          f"{FIX}; {BREAK_WORDS}", "--verify", VERIFY, "--verify-baseline")
    assert code == 8, result
    assert result["state"] == "verification_failed" and "draft pull request" in result["message"]
    (pr,) = github.pulls(GH_REPO)
    assert pr["draft"] is True and pr["head"]["ref"] == "toren/issue-7"
    body = pr["body"]
    assert "## Why this is a draft" in body and "`verification_failed`" in body and ID_WORDS in body
    assert "1 fixed, 1 broken, 0 still failing, 1 still passing." in body  # the table
    assert "| base commit | 2 | 1 | 0 | 3 | 1 |" in body
    assert "Logs: `toren logs" in body  # where the log is
    assert "Closes #7" not in body and "this draft closes nothing" in body  # a failed change closes no issue
    assert result["pr_url"] == pr["html_url"]
    assert b'split("-")' in github.read_file(GH_REPO, "toren/issue-7", "textops.py")
    # the progress comment on the issue shows the table too
    comments = [h[-1] for h in github.comment_history(GH_REPO, 7) if "toren:progress -->" in h[-1]]
    assert comments and "1 fixed, 1 broken" in comments[0]


def test_on_failure_discard_on_an_issue_pushes_nothing(github, capsys):
    code, result = gh_run(capsys, "--issue", f"{GH_REPO}#7", "--branch", "toren/issue-7b", "--command",
                          f"{FIX}; {BREAK_WORDS}", "--verify", VERIFY, "--on-failure", "discard")
    assert code == 8 and "nothing was pushed" in result["message"]
    assert github.pulls(GH_REPO) == []


def test_a_passing_job_on_an_issue_opens_a_ready_pull_request_with_the_table(github, capsys):
    code, result = gh_run(capsys, "--issue", f"{GH_REPO}#7", "--branch", "toren/issue-7c", "--command", FIX,
                          "--verify", VERIFY, "--verify-baseline")
    assert code == 0, result
    (pr,) = github.pulls(GH_REPO)
    assert pr["draft"] is False and "Closes #7" in pr["body"]
    assert "1 fixed, 0 broken" in pr["body"] and f"Fixed: `{ID_DASHES}`" in pr["body"]


# A stand-in for pytest (the base image has none): it writes the JUnit file Toren asks for in PYTEST_ADDOPTS, as
# pytest's --junitxml does, and says what it was asked in its output.
FAKE_PYTEST = r'''#!/bin/sh
echo "PYTEST_ADDOPTS=$PYTEST_ADDOPTS"
out=${PYTEST_ADDOPTS##*--junitxml=}
out=${out%% *}
case "$MODE" in
  link) ln -s /etc/passwd "$out" ;;
  *) printf '<testsuites><testsuite name="pytest"><testcase classname="tests.test_x" name="test_a"/>
<testcase classname="tests.test_x" name="test_b"><failure message="boom"/></testcase></testsuite></testsuites>' \
       > "$out" ;;
esac
echo "1 failed, 1 passed in 0.01s"
exit 1
'''


def test_toren_asks_pytest_for_junit_and_reads_only_a_regular_file(workdir, textops, toren_home, capsys):
    (textops / "pytest").write_text(FAKE_PYTEST)
    (textops / "pytest").chmod(0o755)
    git("add", "pytest", cwd=textops)
    git("-c", "user.name=U", "-c", "user.email=u@example.invalid", "commit", "-q", "-m", "fake pytest", cwd=textops)
    code, result = run(capsys, textops, "echo '# x' >> textops.py", "toren/pt", "--verify", "./pytest -q",
                       "--env", "PYTEST_ADDOPTS=-p no:cacheprovider")
    assert code == 8, result
    v = result["verification"]
    assert v["source"] == "junit" and v["failing"] == ["tests.test_x.test_b"] and v["counts"]["total"] == 2
    log = (toren_home / "jobs" / result["job_id"] / "job.log").read_text()
    # the user's own PYTEST_ADDOPTS first, Toren's --junitxml after it
    assert "PYTEST_ADDOPTS=-p no:cacheprovider --junitxml=/run/toren/verify-results/pytest-junit.xml" in log
    # a link in place of the file is not followed: the summary line is read instead
    code, result = run(capsys, textops, "echo '# y' >> textops.py", "toren/pt2", "--verify", "MODE=link ./pytest")
    assert code == 8, result
    v = result["verification"]
    assert v["source"] == "pytest" and (v["counts"]["passed"], v["counts"]["failed"]) == (1, 1)
    assert "not a regular file" in v["notes"][0] and "root:" not in json.dumps(v)


def test_verify_timeout_ends_the_job_verification_failed(workdir, textops, toren_home, capsys):
    code, result = run(capsys, textops, FIX, "toren/slow", "--verify", "sleep 30", "--verify-timeout", "0.05")
    assert code == 8, result
    assert result["state"] == "verification_failed" and "--verify-timeout" in result["message"]
    assert result["verification"]["outcome"] == "error"
    assert "toren/slow" not in git("branch", "--list", cwd=textops)


# -- --verify-retries with Claude Code against the fake model -----------------------------------------------------

EXTRA_TEST = '''import unittest


class TestExtra(unittest.TestCase):
    def test_new_behaviour(self):
        self.assertEqual(1, 2)
'''
ID_EXTRA = "test_extra.TestExtra.test_new_behaviour"


def test_claude_gets_the_failing_tests_in_its_second_round(workdir, textops, toren_home, capsys, monkeypatch,
                                                           tmp_path):
    from tests.fakes.anthropic import FakeAnthropic
    from tests.fakes.base import Script
    from toren_action.sandbox.toolchain import cache_dir

    monkeypatch.setenv("TOREN_CACHE_DIR", str(cache_dir()))
    for var in ("ANTHROPIC_API_KEY_FILE", "CLAUDE_CODE_OAUTH_TOKEN", "CLAUDE_CREDENTIALS_FILE",
                "ANTHROPIC_UNIX_SOCKET"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "user-home"))
    # the model adds a test that fails, in every round (its script does not change)
    with FakeAnthropic(Script(file_path="/workspace/test_extra.py", content=EXTRA_TEST)) as fake:
        monkeypatch.setenv("ANTHROPIC_API_KEY", fake.script.api_key)
        monkeypatch.setenv("ANTHROPIC_BASE_URL", fake.url)
        code = main(["run", "--repo", str(textops), "--spec", "task.md", "--branch", "toren/claude-retry",
                     "--agent", "claude", "--model", "claude-sonnet-4-5", "--base-image", BASE_IMAGE, "--pull",
                     "never", "--network", "host", "--timeout", "6", "--disable-daemon", "--json",
                     "--verify", VERIFY, "--verify-baseline", "--verify-retries", "1"])
        result = json.loads(capsys.readouterr().out)
        bodies = [r.body.decode("utf-8", "replace") for r in fake.requests]
    assert code == 8, result
    v = result["verification"]
    assert [r["outcome"] for r in v["rounds"]] == ["failed", "failed"] and v["broken"] == [ID_EXTRA]
    # the first round's prompt is the task alone; the second round's names the failing test
    first = next(i for i, b in enumerate(bodies) if "Write" in b)
    assert ID_EXTRA not in bodies[first]
    second = [b for b in bodies if "verification of your change failed" in b]
    assert second and ID_EXTRA in second[0] and "AssertionError: 1 != 2" in second[0]
    assert "What you said at the end of your last round" in second[0] and "Wrote hello.txt." in second[0]
    assert result["usage"]["turns"] >= 4  # both rounds' turns, together
    assert "toren/claude-retry" not in git("branch", "--list", cwd=textops)


SECRET = "sekritValue0123456789abcdef"
# The agent knows the secret and writes it into the commit base64-encoded (the diff policy judges bytes), as a
# test whose name and failure message are the decoded value: only the verification's output holds it.
LEAKY_TEST = '''import base64
import unittest

SECRET = base64.b64decode("%s").decode()


class T(unittest.TestCase):
    pass


def leak(self):
    self.fail(SECRET)


setattr(T, "test_" + SECRET, leak)
'''
LEAKY_AGENT = ("b=$(base64 -w0 /run/toren/secrets/T_VERIFY_SECRET); printf '" + LEAKY_TEST.replace("\n", "\\n")
               + "' \"$b\" > test_leak.py")


def test_a_secret_in_a_test_name_or_message_is_redacted_everywhere_toren_writes(workdir, textops, toren_home, capsys,
                                                                                monkeypatch):
    monkeypatch.setenv("T_VERIFY_SECRET", SECRET)
    code, result = run(capsys, textops, LEAKY_AGENT, "toren/leak", "--secret", "T_VERIFY_SECRET", "--verify",
                       VERIFY, "--verify-baseline", "--verify-retries", "1", "--on-failure", "branch")
    assert code == 8, result
    v = result["verification"]
    assert "test_leak.T.test_***" in v["broken"]  # the verification did see the value, and it was masked
    assert SECRET not in json.dumps(result)
    jdir = toren_home / "jobs" / result["job_id"]
    assert SECRET not in (jdir / "job.log").read_text()
    assert SECRET not in (jdir / "task" / "prompt.md").read_text()  # the second round's prompt
    assert "verification of your change failed" in (jdir / "task" / "prompt.md").read_text()
    assert SECRET.encode() not in (toren_home / "toren.db").read_bytes()
    assert main(["summary", result["job_id"], "--plain"]) == 0
    assert SECRET not in capsys.readouterr().out


def test_on_failure_branch_delivers_the_work_of_an_agent_that_timed_out(workdir, textops, toren_home, capsys,
                                                                        docker_client):
    code, result = run(capsys, textops, f"{FIX}; sleep 120", "toren/late", "--timeout", "0.1", "--verify", VERIFY,
                       "--on-failure", "branch")
    assert code == 7, result
    assert result["state"] == "timed_out" and "pushed to toren/late" in result["message"]
    assert result["verification"]["outcome"] == "passed"  # the work so far was still checked and verified
    assert '"-"' in git("show", "toren/late:textops.py", cwd=textops)
    assert not docker_client.containers.list(all=True, filters={"label": f"toren.job={result['job_id']}"})
    # without it, a timeout pushes nothing
    code, result = run(capsys, textops, f"{FIX}; sleep 120", "toren/late2", "--timeout", "0.1")
    assert code == 7 and "toren/late2" not in git("branch", "--list", cwd=textops)
