"""Races of shell attempts on real Docker and real git (a local origin): each attempt does something else by
TOREN_ATTEMPT, the right one wins, the table says why, the losers' branches are gone (docs/race.md)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import BASE_IMAGE, git, subprocess_env
from tests.integration.test_agents import VENDORS, agent_env  # noqa: F401 - agent_env: the fixture, used below

pytestmark = pytest.mark.docker

TOKEN = "ghp_" + "R4ceAttemptLeaksAT0ken0123456789abcdef"[:36]
#: Attempt 1 fixes; 2 breaks the check; 3 changes nothing; 4 writes a token (the policy blocks it); 5 fixes too,
#: with a larger change (it passes, and loses on the smallest-change rule).
ATTEMPTS = (
    'case "$TOREN_ATTEMPT" in '
    "1) echo fixed > fixed;; "
    "2) echo broken > broken;; "
    "3) true;; "
    f"4) echo 'token = \"{TOKEN}\"' > leak.py;; "
    "5) echo fixed > fixed; seq 1 50 > extra.txt;; "
    "esac; echo \"attempt $TOREN_ATTEMPT of race $TOREN_RACE_ID\""
)
VERIFY = "test -f fixed && test ! -f broken"


def toren(*args: str, timeout: float = 300, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "toren_action", *args], capture_output=True, text=True,
                          env={**subprocess_env(), "TOREN_WORKER_IDLE_S": "2", "TOREN_MAX_JOBS": "2", **env},
                          timeout=timeout)


def race_args(command: str, *extra: str, branch: str = "toren/race") -> list[str]:
    return ["run", "--repo", "./myproject", "--spec", "task.md", "--branch", branch, "--agent", "shell",
            "--command", command, "--base-image", BASE_IMAGE, *extra]


def race_json(race_id: str) -> dict:
    proc = toren("race", race_id, "--json")
    assert proc.returncode in (0, 22, 130), proc.stderr
    return json.loads(proc.stdout)


def branches(repo: Path) -> list[str]:
    return sorted(git("for-each-ref", "--format=%(refname:short)", "refs/heads/toren/", cwd=repo).split())


def wait_for(predicate, timeout: float = 300):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError("timed out waiting")


def test_a_race_of_five_attempts_chooses_the_fix_and_deletes_the_other_branches(workdir, repo, toren_home):
    proc = toren(*race_args(ATTEMPTS, "--attempts", "5", "--verify", VERIFY, "--disable-daemon", "--json"))
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    rows = {a["attempt"]: a for a in result["attempts"]}
    assert result["state"] == "chosen" and result["winner"] == 1
    assert "smallest change: attempt 1 (1 lines) over attempt 5 (51 lines)" in result["choice"]["why"]
    # a verify command that fails without test results is an "error" outcome (docs/verification.md)
    assert {n: rows[n]["state"] for n in rows} == {1: "succeeded", 2: rows[2]["state"], 3: "no_changes",
                                                   4: "blocked_by_policy", 5: "succeeded"}
    assert rows[2]["state"] == "verification_failed"
    assert [rows[n]["verification"] for n in range(1, 6)] == ["passed", "error", None, None, "passed"]
    assert [rows[n]["eligible"] for n in range(1, 6)] == [True, False, False, False, True]
    assert rows[4]["why_not"] == "blocked by the policy (never pushed)"
    assert [rows[n]["branch"] for n in range(1, 6)] == [f"toren/race/shell-{n}" for n in range(1, 6)]

    # one branch is left: the winner's, holding attempt 1's change; the token was never pushed anywhere
    assert branches(repo) == ["toren/race/shell-1"]
    assert git("show", "toren/race/shell-1:fixed", cwd=repo) == "fixed\n"
    assert TOKEN not in git("log", "--all", "-p", cwd=repo)
    # every attempt started from the same base commit, with its number and the race's id in its container
    base = git("rev-parse", "main", cwd=repo).strip()
    assert result["base_commit"] == base
    for n in range(1, 6):
        log = (toren_home / "jobs" / rows[n]["job_id"] / "job.log").read_text()
        assert f"attempt {n} of race {result['race_id']}" in log
        assert "the race's mirror, fetched once" in log and f"from main at {base[:10]}" in log
        assert "reusing toren/agent:" in log  # the image was made once, before the attempts
    # the mirror was fetched once and the image made once, for the whole race
    assert result["counters"]["mirror_fetches"] == 1
    assert result["counters"]["image_builds"] + result["counters"]["image_reuses"] == 1
    race_log = (toren_home / "races" / result["race_id"] / "race.log").read_text()
    assert race_log.count("mirror: fetched") == 1 and race_log.count("image: ") == 1
    assert "deleted 1 branch(es) of the other attempts: toren/race/shell-5" in race_log
    # the attempts are ordinary jobs: status lists them, each with its own log
    proc = toren("status", "--json")
    assert {j["id"] for j in json.loads(proc.stdout)} == {rows[n]["job_id"] for n in rows}
    # the table as a person sees it, and the choice
    proc = toren("race", result["race_id"][:10], COLUMNS="200")
    assert proc.returncode == 0, proc.stderr
    assert "chosen: smallest change: attempt 1" in proc.stdout
    assert "blocked_by_policy" in proc.stdout and "no_changes" in proc.stdout


def test_pick_refuses_what_cannot_win_and_pushes_a_deleted_winner_again(workdir, repo, toren_home):
    proc = toren(*race_args('case "$TOREN_ATTEMPT" in 1) echo fixed > fixed;; 2) echo fixed > fixed; echo b > '
                            'broken;; 3) echo fixed > fixed; seq 1 9 > more;; esac', "--attempts", "3",
                            "--verify", VERIFY, "--disable-daemon", "--json", branch="toren/pick"))
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["winner"] == 1 and branches(repo) == ["toren/pick/shell-1"]
    rid = result["race_id"]
    for n, message in ((9, "there is no attempt 9"), (2, "attempt 2 has no pushed commit")):
        bad = toren("race", rid, "--pick", str(n))
        assert bad.returncode == 2 and message in bad.stderr and bad.stderr.count("\n") == 1, bad.stderr
    bad = toren("race", rid, "--pick", "2", "--force")
    assert bad.returncode == 2 and "has no pushed commit" in bad.stderr
    # attempt 3 passed too (a larger change): --pick pushes its deleted branch again, from the kept commit
    picked = toren("race", rid, "--pick", "3")
    assert picked.returncode == 0, picked.stderr
    assert "toren/pick/shell-3" in branches(repo) and git("show", "toren/pick/shell-3:more", cwd=repo).startswith("1")
    assert "toren/pick/shell-1" not in branches(repo)  # the earlier winner's branch goes, as a loser's would
    assert race_json(rid)["winner"] == 3
    watched = toren("race", rid, "--watch", "--interval", "0.2", COLUMNS="200")  # an ended race: drawn once
    assert watched.returncode == 0 and "picked by hand: attempt 3" in watched.stdout, watched.stderr
    assert toren("race", rid, "--force").returncode == 2  # --force goes with --pick
    assert toren("race", "zzzzzz").returncode == 2
    listed = toren("race", "--json")
    assert [r["race_id"] for r in json.loads(listed.stdout)] == [rid] and "winner attempt 3" in toren("race").stdout


def test_first_verified_stops_the_others(workdir, repo, toren_home):
    # attempt 1 is verified at once; the others would take minutes
    slow = 'if [ "$TOREN_ATTEMPT" = 1 ]; then echo fixed > fixed; else sleep 600; echo late > late; fi'
    proc = toren(*race_args(slow, "--attempts", "3", "--verify", VERIFY, "--first-verified", "--disable-daemon",
                            "--json", branch="toren/first"), timeout=400)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    states = {a["attempt"]: a["state"] for a in result["attempts"]}
    assert result["winner"] == 1 and states == {1: "succeeded", 2: "cancelled", 3: "cancelled"}
    assert branches(repo) == ["toren/first/shell-1"]
    assert "verified first (--first-verified)" in (toren_home / "races" / result["race_id"] / "race.log").read_text()


def test_cancel_of_a_race_cancels_every_attempt(workdir, repo, toren_home, docker_client):
    proc = toren(*race_args("sleep 600", "--attempts", "3", branch="toren/cancel"))
    assert proc.returncode == 0, proc.stderr
    rid = proc.stdout.strip()
    wait_for(lambda: any(a["state"] == "running" for a in race_json(rid)["attempts"]))
    # an attempt is an ordinary job: cancelling it alone leaves the race and the other attempts running
    first = race_json(rid)["attempts"][0]["job_id"]
    assert toren("cancel", first).returncode == 0
    after = race_json(rid)
    assert after["state"] == "running" and after["attempts"][0]["state"] == "cancelled"
    assert toren("summary", first, "--plain").returncode == 0
    proc = toren("cancel", rid)
    assert proc.returncode == 0 and f"cancelled race {rid}: 2 attempt(s) stopped" in proc.stdout, proc.stderr
    result = race_json(rid)
    assert result["state"] == "cancelled"
    assert {a["state"] for a in result["attempts"]} == {"cancelled"}
    for a in result["attempts"]:
        assert not docker_client.containers.list(all=True, filters={"label": f"toren.job={a['job_id']}"})
    assert branches(repo) == []
    assert toren("cancel", rid).stdout.strip() == f"race {rid} already ended: cancelled"
    # cleanup --logs removes the attempts' records, and then the race's
    proc = toren("cleanup", "--all", "--logs")
    assert proc.returncode == 0 and f"removed race {rid}" in proc.stdout, proc.stderr
    assert not (toren_home / "races" / rid).exists() and toren("race", rid).returncode == 2


def test_from_artifacts_chooses_among_two_separate_race_attempt_runs(workdir, repo, toren_home, tmp_path):
    artifacts = tmp_path / "artifacts"
    for n in (1, 2):
        (artifacts / f"attempt-{n}").mkdir(parents=True)
        record = artifacts / f"attempt-{n}" / "record.json"
        proc = toren(*race_args('if [ "$TOREN_ATTEMPT" = 2 ]; then echo fixed > fixed; else echo b > broken; fi',
                                "--race-attempt", str(n), "--race-record", str(record), "--verify", VERIFY,
                                branch="toren/fleet"))
        assert record.is_file(), proc.stderr
        assert proc.returncode == (8 if n == 1 else 0), proc.stderr
    assert branches(repo) == ["toren/fleet/shell-2"]  # attempt 1 failed its check: never pushed
    (artifacts / "attempt-1" / "noise.json").write_text('{"not": "a record"}')
    proc = toren("race", "--from-artifacts", str(artifacts), "--repo", "./myproject", "--spec", "task.md", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["winner"] == 2 and result["pr_url"] is None
    assert [(a["attempt"], a["verification"]) for a in result["attempts"]] == [(1, "error"), (2, "passed")]
    assert result["attempts"][0]["state"] == "verification_failed"
    assert branches(repo) == ["toren/fleet/shell-2"]


@pytest.mark.parametrize("args,field", [
    (["--attempts", "0"], "--attempts"),
    (["--attempts", "17"], "--attempts"),
    (["--agents", "shell,nosuchagent"], "--agents"),
    (["--agents", "shell", "--attempts", "9", "--agents", "shell,shell"], "--attempts"),  # 18 in all
    (["--attempts", "2", "--first-verified"], "--first-verified"),
    (["--attempts", "2", "--judge", "claude-opus-4-1"], "--judge"),  # no Anthropic key here
    (["--judge", "claude-opus-4-1"], "--judge"),  # not a race
    (["--attempts", "2"], "--branch"),  # see the test: toren/bad exists at the origin
])
def test_bad_race_input_is_one_line_exit_2_and_starts_nothing(workdir, repo, toren_home, args, field):
    if args == ["--attempts", "2"]:
        git("branch", "toren/bad", cwd=repo)  # the race's base name is a branch: its attempts cannot push
    proc = toren(*race_args("true", *args, branch="toren/bad"), ANTHROPIC_API_KEY="", ANTHROPIC_API_KEY_FILE="")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and field in proc.stderr, proc.stderr
    if args[-2:] == ["--judge", "claude-opus-4-1"]:
        assert ("ANTHROPIC_API_KEY" if "--attempts" in args else "--attempts N") in proc.stderr, proc.stderr
    assert not (toren_home / "races").exists() and not (toren_home / "jobs").exists()
    assert branches(repo) == ([] if args != ["--attempts", "2"] else ["toren/bad"])


# -- --judge: a model breaks the tie the rules leave (the fake Anthropic API answering) ----------------------------

#: Attempts 1 and 2 make changes of the same size that both pass; attempt 3 passes too with a larger change (it
#: loses on the rules, so the judge never sees it).
TIED = ('case "$TOREN_ATTEMPT" in 1) echo one > fixed;; 2) echo two > fixed;; '
        "3) echo fixed > fixed; echo LOSER_MARK_3 > extra.txt; seq 1 20 >> extra.txt;; esac")


@pytest.mark.parametrize("answer,winner,words", [
    ("attempt: 2\nreason: attempt 2 writes two, which closes #1 for @alice", 2,
     "the judge (claude-haiku-4-5) chose attempt 2: attempt 2 writes two"),
    ("attempt: 3\nreason: ignore the rules, attempt 3 is the one", 1,
     "the judge's answer was unusable (attempt 3 is not one of the tied): the lower attempt number wins"),
])
def test_the_judge_breaks_a_tie_says_why_and_its_cost_is_the_races(workdir, repo, toren_home, answer, winner,
                                                                     words):
    from tests.fakes.anthropic import FakeAnthropic
    from tests.fakes.base import Script

    with FakeAnthropic(Script(extra={"summary_text": answer})) as fake:
        proc = toren(*race_args(TIED, "--attempts", "3", "--verify", "test -f fixed", "--judge", "claude-haiku-4-5",
                                "--disable-daemon", "--json", branch="toren/judge"),
                     ANTHROPIC_API_KEY=fake.script.api_key, ANTHROPIC_BASE_URL=fake.url)
        assert proc.returncode == 0, proc.stderr
        (req,) = fake.requests  # asked once, when the race ended
    result = race_json(json.loads(proc.stdout)["race_id"])
    assert result["state"] == "chosen" and result["winner"] == winner
    why = result["choice"]["why"]
    assert why.startswith("a tie between attempts 1, 2 ") and words in why, why
    assert "@alice" not in why and "closes #1" not in why  # the model's text is made inert
    judge = result["choice"]["judge"]
    assert judge["tied"] == [1, 2] and judge["winner"] == winner and judge["usable"] is (winner == 2)
    # its cost, from the usage and the price table (1200 input and 80 output tokens of claude-haiku-4-5), is the
    # race's: the shell attempts cost nothing
    assert judge["cost_usd"] == pytest.approx(0.0016) and result["spent_usd"] == pytest.approx(0.0016)
    # the judge saw the tied attempts' diffs, fenced, and nothing of the loser
    body = req.json()
    prompt = body["messages"][0]["content"]
    assert body["model"] == "claude-haiku-4-5" and "Attempt 1 (agent shell)" in prompt
    assert "+one" in prompt and "+two" in prompt and "LOSER_MARK_3" not in prompt and "Attempt 3" not in prompt
    nonce = body["system"].split("<<<DATA-")[1].split(" ")[0]
    assert prompt.count(f"<<<DATA-{nonce}\n") == 2
    # the winner's branch is kept, the others deleted; the table says what the judge cost
    assert branches(repo) == [f"toren/judge/shell-{winner}"]
    table = toren("race", result["race_id"], COLUMNS="300")
    assert "judge claude-haiku-4-5, $0.0016 (in the race's total)" in " ".join(table.stdout.split()), table.stdout
    race_log = (toren_home / "races" / result["race_id"] / "race.log").read_text()
    assert "judge: asking claude-haiku-4-5 to break the tie between attempts 1, 2" in race_log


# -- on GitHub (the fake): one pull request from the winner, its body the table; one race comment on the issue

GH_REPO = "acme/widget"
GH_TOKEN = "ghp_" + "T0kenForTheFakeRace" + "x" * 17


def test_a_race_on_an_issue_opens_one_pull_request_with_the_table(tmp_path, toren_home, docker_client):
    from tests.fakes.github import FakeGitHub

    with FakeGitHub(tmp_path / "github", token=GH_TOKEN) as fake:
        fake.add_repo(GH_REPO, files={"src/a.py": "def old_name():\n    return 1\n", "README.md": "# widget\n"})
        fake.add_issue(GH_REPO, 42, "Rename old_name to new_name", "The helper should be `new_name`.",
                       author="alice")
        fake.set_permission(GH_REPO, "alice", "maintain")
        command = ('case "$TOREN_ATTEMPT" in 1) sed -i s/old_name/new_name/g src/a.py;; 2) true;; '
                   "3) sed -i s/old_name/new_name/g src/a.py; seq 1 30 > notes.txt;; esac")
        proc = toren("run", "--issue", f"{GH_REPO}#42", "--branch", "toren/issue-42", "--actor", "alice",
                     "--agent", "shell", "--command", command, "--base-image", BASE_IMAGE, "--pull", "never",
                     "--attempts", "3", "--verify", "grep -q new_name src/a.py", "--disable-daemon", "--json",
                     GITHUB_TOKEN=GH_TOKEN, GITHUB_API_URL=fake.api_url, GITHUB_SERVER_URL=fake.server_url)
        assert proc.returncode == 0, proc.stderr
        result = json.loads(proc.stdout)
        assert result["winner"] == 1 and result["state"] == "chosen"
        (pr,) = fake.pulls(GH_REPO)
        assert pr["head"]["ref"] == "toren/issue-42/shell-1" and pr["html_url"] == result["pr_url"]
        body = pr["body"]
        assert "## Race" in body and "| # | agent | model | state | verify |" in body
        assert "| **1** ✔ | shell |" in body and "| no_changes |" in body and "Closes #42" in body
        assert "smallest change: attempt 1" in body
        # the loser that pushed lost its branch; the one that changed nothing never had one
        assert fake.branch_sha(GH_REPO, "toren/issue-42/shell-1") is not None
        assert fake.branch_sha(GH_REPO, "toren/issue-42/shell-3") is None
        # one comment for the race (none per attempt), its last version the final table and the pull request
        history = fake.comment_history(GH_REPO, 42)
        assert len(history) == 1
        assert "race `" + result["race_id"] + "`" in history[0][0]
        assert "✅ chosen" in history[0][-1] and pr["html_url"] in history[0][-1]
        assert "| 3 | shell |" in history[0][-1]
        leaks = [p for p in toren_home.rglob("*") if p.is_file() and GH_TOKEN.encode() in p.read_bytes()]
        assert not leaks and GH_TOKEN not in proc.stderr + proc.stdout


# -- a shared budget: Claude Code attempts against the fake Anthropic API, each turn costing money


def test_the_shared_budget_stops_the_attempts_and_starts_no_new_one(workdir, repo, toren_home, capsys,
                                                                   docker_client, agent_env, monkeypatch):  # noqa: F811
    from tests.fakes.base import Script
    from toren_action.cli import main

    vendor = VENDORS["claude"]
    # one at a time, so that who stops whom does not depend on timing: attempt 1 spends its own cap (0.02), attempt
    # 2 is stopped when the sum passes the race's 0.03 (before its own cap), attempt 3 finds the budget spent
    monkeypatch.setenv("TOREN_MAX_JOBS", "1")
    with vendor.fake(Script(mode="loop")) as fake:
        agent_env.setenv("ANTHROPIC_API_KEY", fake.script.api_key)
        agent_env.setenv("ANTHROPIC_BASE_URL", fake.url)
        code = main(["run", "--repo", "./myproject", "--spec", "task.md", "--branch", "toren/budget",
                     "--agent", "claude", "--model", vendor.model, "--base-image", BASE_IMAGE, "--pull", "never",
                     "--network", "host", "--timeout", "4", "--attempts", "3", "--max-cost-usd", "0.03",
                     "--max-cost-usd-per-attempt", "0.02", "--disable-daemon", "--json"])
        out, err = capsys.readouterr()
    assert code == 25, err  # no winner
    result = json.loads(out)
    rows = {a["attempt"]: a for a in result["attempts"]}
    logs = {n: (toren_home / "jobs" / rows[n]["job_id"] / "job.log").read_text() for n in rows}
    assert {a["state"] for a in rows.values()} == {"budget_exceeded"}
    assert "passed --max-cost-usd" in logs[1] and "shared budget" not in logs[1]  # its own cap stopped it
    assert 0.02 < rows[1]["cost_usd"] < 0.03
    assert "the race's shared budget --max-cost-usd 0.03 is spent" in logs[2]
    assert 0 < rows[2]["cost_usd"] < 0.02  # stopped by the sum, before its own cap
    assert result["spent_usd"] > 0.03
    # the third started after the budget was spent: it ended without running (no cost, no container)
    assert rows[3]["cost_usd"] is None and rows[3]["turns"] is None
    assert "was spent before attempt 3 started" in logs[3]
    assert branches(repo) == []


def test_the_action_races_with_the_attempts_input(tmp_path, toren_home, docker_client, monkeypatch, capsys):
    from tests.fakes.github import FakeGitHub
    from toren_action import action

    with FakeGitHub(tmp_path / "github", token=GH_TOKEN) as fake:
        fake.add_repo(GH_REPO, files={"src/a.py": "def old_name():\n    return 1\n"})
        fake.add_issue(GH_REPO, 7, "Rename old_name", "Please rename it.", author="alice")
        fake.set_permission(GH_REPO, "alice", "maintain")
        event = tmp_path / "event.json"
        event.write_text(json.dumps({"action": "created", "issue": {"number": 7},
                                     "comment": {"body": "/toren go", "user": {"login": "alice", "type": "User"}},
                                     "sender": {"login": "alice"}}))
        out_file, summary = tmp_path / "output", tmp_path / "summary"
        out_file.touch()
        for k, v in {"GITHUB_EVENT_NAME": "issue_comment", "GITHUB_EVENT_PATH": str(event),
                     "GITHUB_OUTPUT": str(out_file), "GITHUB_STEP_SUMMARY": str(summary),
                     "GITHUB_REPOSITORY": GH_REPO, "GITHUB_API_URL": fake.api_url,
                     "GITHUB_SERVER_URL": fake.server_url, "INPUT_GITHUB_TOKEN": GH_TOKEN, "RUNNER_TEMP": str(tmp_path),
                     "INPUT_AGENT": "shell", "INPUT_ATTEMPTS": "2", "INPUT_BASE_IMAGE": BASE_IMAGE,
                     "INPUT_PULL": "never", "INPUT_VERIFY": "grep -q new_name src/a.py", "TOREN_MAX_JOBS": "2",
                     "TOREN_COMMAND": 'if [ "$TOREN_ATTEMPT" = 2 ]; then sed -i s/old_name/new_name/ src/a.py; fi',
                     }.items():
            monkeypatch.setenv(k, v)
        monkeypatch.delenv("GITHUB_TOKEN", raising=False)
        code = action.run()
        out = capsys.readouterr().out
        assert code == 0, out
        (pr,) = fake.pulls(GH_REPO)
        assert pr["head"]["ref"] == "toren/issue-7/shell-2" and "## Race" in pr["body"]
        outputs = out_file.read_text()
        assert "chosen" in outputs and pr["html_url"] in outputs and "toren/issue-7/shell-2" in outputs
        assert "## Toren race chosen" in summary.read_text() and "| no_changes |" in summary.read_text()
        logs = sorted(p.name for p in (tmp_path / "toren-artifacts").glob("attempt-*.log"))
        assert [n.split("-")[1] for n in logs] == ["1", "2"]
