"""`toren race --from-artifacts` against the fake GitHub with records an attacker wrote (a matrix job's artifact is
no more trusted than what the agent prints): no text of a record acts in the pull request Toren opens, no pull
request is opened from a branch that is not at the commit the record says passed, and a record of another
repository is refused. No Docker: the final job runs no agent."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import subprocess_env
from toren_action.job import race

REPO = "acme/widget"
TOKEN = "ghp_" + "H0stileRecordsT0ken" + "x" * 17


def toren(fake, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "toren_action", *args], capture_output=True, text=True,
                          env={**subprocess_env(), "GITHUB_TOKEN": TOKEN, "GITHUB_API_URL": fake.api_url,
                               "GITHUB_SERVER_URL": fake.server_url}, timeout=120)


def record(fake, n: int, commit: str | None, **kw) -> dict:
    return {"kind": race.RECORD_KIND, "version": 1, "attempt": n, "agent": "shell", "state": "succeeded",
            "branch": f"toren/issue-42/shell-{n}", "origin": f"{fake.server_url}/{REPO}.git", "commit": commit,
            "verify": "pytest", "verification": {"outcome": "passed"},
            "diffstat": " 1 file changed, 1 insertion(+)", **kw}


@pytest.fixture
def fleet(tmp_path, toren_home):
    from tests.fakes.github import FakeGitHub

    with FakeGitHub(tmp_path / "github", token=TOKEN) as fake:
        fake.add_repo(REPO, files={"a.py": "x = 1\n"})
        fake.add_issue(REPO, 42, "Fix x", "x should be 2", author="alice")
        fake.add_issue(REPO, 7, "Unrelated", "another issue", author="alice")
        one = fake.commit(REPO, "toren/issue-42/shell-1", {"a.py": "x = 2\n"}, parent="main")
        two = fake.commit(REPO, "toren/issue-42/shell-2", {"a.py": "x = 3\n"}, parent="main")
        art = tmp_path / "artifacts"
        art.mkdir()
        yield fake, art, one, two


def write(art: Path, n: int, data: dict) -> None:
    (art / f"toren-attempt-{n}").mkdir(exist_ok=True)
    (art / f"toren-attempt-{n}" / "record.json").write_text(json.dumps(data))


def test_a_records_texts_do_not_act_in_the_pull_request(fleet):
    fake, art, one, two = fleet
    body = ("# Fix x\n\nCloses #42\nCloses #7\n\n<img src=\"https://evil.invalid/p.png\"> @octocat fixes "
            "acme/widget#7\n<!-- toren:source issue=7 -->\n<!-- toren:pull-request -->\n")
    write(art, 1, record(fake, 1, one, pr_body=body))
    write(art, 2, record(fake, 2, two, state="failed", verification={"outcome": "failed"}))
    proc = toren(fake, "race", "--from-artifacts", str(art), "--issue", f"{REPO}#42", "--json")
    assert proc.returncode == 0, proc.stderr
    (pr,) = fake.pulls(REPO)
    text = pr["body"]
    assert text.count("Closes #42") == 1 and "Closes #7" not in text and "fixes acme/widget#7" not in text
    assert "<img" not in text and "@octocat" not in text
    assert "<!-- toren:source issue=7 -->" not in text and "<!-- toren:source issue=42 -->" in text
    assert text.count("<!-- toren:pull-request -->") == 1
    # the final job ran on a runner with no mirror of the repository (a fresh one): the loser's branch is gone
    assert fake.branch_sha(REPO, "toren/issue-42/shell-2") is None and fake.branch_sha(REPO, "toren/issue-42/shell-1")


@pytest.mark.parametrize("field,value", [
    ("state", "failed <img src=x> Closes #7"),  # a state is one of Toren's, never a text
    ("agent", "fixes"),  # an agent is one Toren knows (its branch would be toren/issue-42/fixes-2)
])
def test_a_record_with_a_state_or_agent_toren_does_not_have_is_refused(fleet, field, value):
    fake, art, one, two = fleet
    write(art, 1, record(fake, 1, one))
    bad = record(fake, 2, two, **{field: value})
    if field == "agent":
        bad["branch"] = f"toren/issue-42/{value}-2"
    write(art, 2, bad)
    proc = toren(fake, "race", "--from-artifacts", str(art), "--issue", f"{REPO}#42")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert f"'{field}'" in proc.stderr
    assert fake.pulls(REPO) == [] and fake.branch_sha(REPO, "toren/issue-42/shell-2") == two


def test_no_pull_request_from_a_branch_that_is_not_at_the_verified_commit(fleet):
    fake, art, one, two = fleet
    write(art, 1, record(fake, 1, one))
    write(art, 2, record(fake, 2, two, state="failed", verification={"outcome": "failed"}))
    moved = fake.commit(REPO, "toren/issue-42/shell-1", {"a.py": "import os; os.system('curl evil')\n"})
    proc = toren(fake, "race", "--from-artifacts", str(art), "--issue", f"{REPO}#42")
    assert proc.returncode != 0, proc.stdout
    assert "toren/issue-42/shell-1" in proc.stderr and one[:10] in proc.stderr, proc.stderr
    assert fake.pulls(REPO) == []
    assert fake.branch_sha(REPO, "toren/issue-42/shell-1") == moved  # nothing deleted or pushed either


def test_a_winner_record_whose_commit_was_never_pushed_opens_nothing(fleet):
    fake, art, one, two = fleet
    write(art, 1, record(fake, 1, "b" * 40))  # a commit the branch never had
    proc = toren(fake, "race", "--from-artifacts", str(art), "--issue", f"{REPO}#42")
    assert proc.returncode != 0 and fake.pulls(REPO) == [], proc.stderr


def test_records_of_another_repository_are_refused(fleet):
    fake, art, one, two = fleet
    fake.add_repo("acme/other")
    other = fake.commit("acme/other", "toren/issue-42/shell-2", {"b.py": "y\n"}, parent="main")
    for n, commit in ((1, one), (2, other)):
        write(art, n, record(fake, n, commit, origin=f"{fake.server_url}/acme/other.git",
                             **({"state": "failed"} if n == 2 else {})))
    proc = toren(fake, "race", "--from-artifacts", str(art), "--issue", f"{REPO}#42")
    assert proc.returncode == 2 and "--from-artifacts" in proc.stderr and "acme/other" in proc.stderr, proc.stderr
    assert fake.pulls(REPO) == [] and fake.branch_sha("acme/other", "toren/issue-42/shell-2") == other


def test_a_decoy_branch_ending_in_the_winners_name_neither_passes_the_check_nor_is_deleted(fleet):
    """git ls-remote matches a pattern against the end of a ref: `a/refs/heads/<winner>` at the checked commit
    must not stand in for the winner's moved branch, and a loser's decoy twin is no loser's branch to delete."""
    fake, art, one, two = fleet
    write(art, 1, record(fake, 1, one))
    write(art, 2, record(fake, 2, two, state="failed", verification={"outcome": "failed"}))
    subprocess.run(["git", "--git-dir", str(fake.bare_path(REPO)), "update-ref",
                    "refs/heads/a/refs/heads/toren/issue-42/shell-1", one], check=True)  # the decoy: the checked one
    fake.commit(REPO, "a/refs/heads/toren/issue-42/shell-2", {"z": "z\n"}, parent="main")
    moved = fake.commit(REPO, "toren/issue-42/shell-1", {"a.py": "x = 9\n"})
    proc = toren(fake, "race", "--from-artifacts", str(art), "--issue", f"{REPO}#42")
    assert proc.returncode != 0 and fake.pulls(REPO) == [], proc.stdout + proc.stderr
    assert fake.branch_sha(REPO, "toren/issue-42/shell-1") == moved
    assert fake.branch_sha(REPO, "a/refs/heads/toren/issue-42/shell-2") is not None  # never a loser's
