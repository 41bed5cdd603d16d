"""A race's input and records without Docker: the attempts --agents and --attempts make, every refusal, the
fleet's result records read as the untrusted files they are, and the store's claim (exactly one process ends
a race)."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest

from toren_action.config.settings import Settings
from toren_action.core.errors import UsageError
from toren_action.core.states import JobState, RaceState
from toren_action.job import race
from toren_action.jobs import race as races
from toren_action.jobs.store import Store

SHA = "a" * 40


def settings(**kw) -> Settings:
    return Settings.load({"spec": "t.md", **kw}, environ={}, cwd="/")


@pytest.mark.parametrize("flags,expected", [
    ({"attempts": 3, "agent": "shell"}, [("shell", None)] * 3),
    ({"agents": "claude,codex:gpt-5"}, [("claude", None), ("codex", "gpt-5")]),
    ({"agents": "claude:claude-opus-4-1, gemini", "attempts": 2},
     [("claude", "claude-opus-4-1")] * 2 + [("gemini", None)] * 2),
    ({"attempts": 2, "model": "claude-sonnet-4-5"}, [("claude", "claude-sonnet-4-5")] * 2),  # --model: --agent's
])
def test_the_attempts_of_a_race(flags, expected):
    assert race.entries(settings(**flags)) == expected


@pytest.mark.parametrize("flags,field,words", [
    ({"agents": "claude,nosuch"}, "--agents", "unknown agent 'nosuch'"),
    ({"agents": "claude,"}, "--agents", "unknown agent ''"),
    ({"agents": "claude:--dangerously-skip"}, "--agents", "is not a model name"),
    ({"agents": "claude:a b"}, "--agents", "is not a model name"),
    ({"agents": "claude,codex", "attempts": 9}, "--attempts", "make 18; a race has at most 16"),
    ({"attempts": 2, "first_verified": True}, "--first-verified", "needs --verify"),
    ({"attempts": 2, "judge": "claude-opus-4-1"}, "--judge", "no key is set: set ANTHROPIC_API_KEY"),
    ({"attempts": 2, "judge": "--verbose"}, "--judge", "is not a model name"),
])
def test_bad_race_input_is_refused_by_name(flags, field, words, monkeypatch):
    for var in ("ANTHROPIC_API_KEY", "ANTHROPIC_API_KEY_FILE"):
        monkeypatch.delenv(var, raising=False)
    if "not a model" in words:
        monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test-0123456789")
    with pytest.raises(UsageError) as exc:
        race.entries(settings(**flags))
    assert str(exc.value).startswith(field) and words in str(exc.value) and "\n" not in str(exc.value)


@pytest.mark.parametrize("value", [0, 17, -1])
def test_attempts_out_of_range_are_refused_as_flags(value):
    with pytest.raises(UsageError, match="^--attempts"):
        settings(attempts=value)


def test_each_attempt_gets_its_agent_branch_and_cost_cap():
    s = settings(agents="claude,shell", command="make fix", max_cost_usd=6.0, max_cost_usd_per_attempt=2.5,
                 model="m1")
    one = race.attempt_settings(s, "claude", "m1", "toren/x/claude-1")
    two = race.attempt_settings(s, "shell", None, "toren/x/shell-2")
    assert (one.agent, one.branch, one.max_cost_usd, one.command, one.attempts) == ("claude", "toren/x/claude-1",
                                                                                     2.5, None, None)
    assert (two.agent, two.command, two.model) == ("shell", "make fix", None)
    assert race.attempt_settings(settings(max_cost_usd=1.0, max_cost_usd_per_attempt=3.0), "claude", None,
                                 "b").max_cost_usd == 1.0  # never above the race's budget
    with pytest.raises(UsageError):
        race.attempt_branch("toren/../x", "claude", 1)


def test_race_settings_are_host_only(tmp_path):
    from toren_action.core.errors import ConfigError

    (tmp_path / "toren.toml").write_text("attempts = 16\n")
    with pytest.raises(ConfigError, match="may not set attempts"):
        Settings.load({}, environ={}, cwd=str(tmp_path))


# -- the fleet's records ---------------------------------------------------------------------------------------

def record(n: int, **kw) -> dict:
    return {"kind": race.RECORD_KIND, "version": 1, "attempt": n, "agent": "claude", "state": "succeeded",
            "branch": f"toren/issue-1/claude-{n}", "origin": "https://github.example/acme/w.git", "commit": SHA,
            "verify": "pytest", "diffstat": " 1 file changed, 3 insertions(+)", **kw}


def write(folder: Path, name: str, data) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def test_records_are_read_and_chosen_like_a_race(tmp_path):
    write(tmp_path, "a/r.json", record(1, diffstat=" 1 file changed, 30 insertions(+)"))
    write(tmp_path, "b/r.json", record(2))
    write(tmp_path, "b/other.json", {"kind": "something else"})
    write(tmp_path, "c/broken.json", "{not json")
    attempts = [race.record_attempt(d) for d in race.read_records(tmp_path)]
    from toren_action.job.choose import choose

    assert [a.number for a in attempts] == [1, 2] and choose(attempts).winner == 2


@pytest.mark.parametrize("bad,words", [
    ({"attempt": 0}, "'attempt' must be a number from 1 to 16"),
    ({"attempt": True}, "'attempt' must be a number"),
    ({"attempt": "1"}, "'attempt' must be a number"),
    ({"branch": "--upload-pack=evil"}, "--from-artifacts"),
    ({"branch": "toren/../main"}, "--from-artifacts"),
    ({"agent": 7}, "'agent' is missing or not a text"),
    # a record naming a branch not its own would have the final job delete that branch as a loser's
    ({"branch": "main"}, "branch 'main' is not attempt 1's own"),
    ({"branch": "release/v1"}, "is not attempt 1's own"),
    ({"branch": "toren/issue-1/claude-2"}, "is not attempt 1's own"),
    ({"branch": "toren/issue-1/codex-1"}, "is not attempt 1's own"),  # agent claude
])
def test_a_bad_record_is_refused_with_one_line(tmp_path, bad, words):
    write(tmp_path, "r.json", record(1, **bad))
    with pytest.raises(UsageError) as exc:
        race.read_records(tmp_path)
    assert words in str(exc.value) and "\n" not in str(exc.value)


def test_records_of_one_attempt_twice_or_of_two_repositories_are_refused(tmp_path):
    write(tmp_path, "a.json", record(1))
    write(tmp_path, "b.json", record(1))
    with pytest.raises(UsageError, match="two records of attempt 1"):
        race.read_records(tmp_path)
    write(tmp_path, "b.json", record(2, origin="https://github.example/evil/w.git"))
    with pytest.raises(UsageError, match="2 different repositories"):
        race.read_records(tmp_path)


def test_records_of_two_races_are_refused(tmp_path):
    write(tmp_path, "a.json", record(1))
    write(tmp_path, "b.json", record(2, branch="toren/other/claude-2"))
    with pytest.raises(UsageError, match="the records are of 2 races"):
        race.read_records(tmp_path)


def test_a_fleet_attempt_needs_the_shared_branch_and_gets_its_own():
    with pytest.raises(UsageError, match="^--race-attempt.*give --branch"):
        race.fleet_settings(settings(race_attempt=2))
    s = race.fleet_settings(settings(race_attempt=2, branch="toren/issue-9", agent="codex",
                                     max_cost_usd_per_attempt=1.5))
    assert s.branch == "toren/issue-9/codex-2" and s.max_cost_usd == 1.5
    assert not race.is_race(settings(race_attempt=2, attempts=3))  # one attempt of a fleet race, not a race
    with pytest.raises(UsageError, match="^--race-attempt.*drop --attempts and --agents"):
        race.fleet_settings(settings(race_attempt=2, attempts=3, branch="toren/x"))
    with pytest.raises(UsageError, match="^--judge.*--race-attempt"):
        race.fleet_settings(settings(race_attempt=2, judge="m", branch="toren/x"))


def test_the_judge_needs_a_race_and_a_key(monkeypatch, tmp_path):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.delenv("ANTHROPIC_API_KEY_FILE", raising=False)
    with pytest.raises(UsageError, match="^--judge: it breaks a tie between the attempts of a race"):
        race.check_judge(settings(judge="claude-haiku-4-5"))
    with pytest.raises(UsageError, match="^--judge: .*ANTHROPIC_API_KEY"):
        race.check_judge(settings(attempts=2, judge="claude-haiku-4-5"))
    empty = tmp_path / "key"
    empty.write_text("\n")
    monkeypatch.setenv("ANTHROPIC_API_KEY_FILE", str(empty))  # a key file with nothing in it is no key
    with pytest.raises(UsageError, match="^--judge: .*ANTHROPIC_API_KEY"):
        race.check_judge(settings(agents="shell,claude", judge="claude-haiku-4-5"))
    (tmp_path / "key").write_text("sk-ant-test-0123456789\n")
    race.check_judge(settings(agents="shell,claude", judge="claude-haiku-4-5"))  # accepted
    # set by the environment: the refusal names the variable
    from_env = Settings.load({"spec": "t.md"}, environ={"TOREN_JUDGE": "claude-haiku-4-5"}, cwd="/")
    with pytest.raises(UsageError, match="^TOREN_JUDGE: it breaks a tie between the attempts of a race"):
        race.check_judge(from_env)
    with pytest.raises(UsageError, match="^TOREN_JUDGE: a fleet race's records carry no diffs"):
        race.from_artifacts(tmp_path, from_env, keep_attempts=False)
    assert race.entries(settings(attempts=2, agent="shell", judge="claude-haiku-4-5")) == [("shell", None)] * 2


def test_links_huge_files_and_an_empty_folder(tmp_path):
    outside = write(tmp_path / "elsewhere", "r.json", record(1))
    (tmp_path / "art").mkdir()
    os.symlink(outside, tmp_path / "art" / "link.json")  # a link is not followed
    write(tmp_path / "art", "huge.json", json.dumps(record(2, pad="x" * (race.MAX_RECORD_BYTES + 1))))
    with pytest.raises(UsageError, match="no attempt record"):
        race.read_records(tmp_path / "art")
    with pytest.raises(UsageError, match="is not a folder"):
        race.read_records(tmp_path / "missing")


def test_a_records_values_of_the_wrong_type_count_for_nothing(tmp_path):
    a = race.record_attempt(record(1, commit="not-a-sha; rm -rf /", cost_usd="cheap", duration_s=-5, turns=True,
                                   verification={"outcome": "passed", "counts": {"fixed": "9"}}))
    assert a.commit is None and not a.eligible  # no commit: it cannot win
    assert a.cost_usd is None and a.duration_s is None and a.turns is None and a.counts["fixed"] == 0


# -- the store: one claimant ----------------------------------------------------------------------------------

def test_exactly_one_process_claims_a_race(tmp_path):
    store = Store(tmp_path)
    races.create_race(store, race_id="01race", repo="r", branch="b", base_commit=SHA, budget_usd=None,
                      first_verified=False, keep_attempts=False, inputs={}, counters={})
    job = store.create_job(repo="r", branch="b/shell-1", agent="shell", model=None, base_image="i", inputs={},
                           race_id="01race", attempt=1)
    assert not races.claim(store, "01race")  # an attempt has not ended
    store.set_state(job, JobState.SUCCEEDED)
    stores = [Store(tmp_path) for _ in range(8)]
    won: list[bool] = []
    threads = [threading.Thread(target=lambda s=s: won.append(races.claim(s, "01race"))) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert won.count(True) == 1 and races.get_race(store, "01race").state is RaceState.CHOOSING
    assert [j.id for j in races.attempts(store, "01race")] == [job]
    assert store.get(job).race_id == "01race" and store.get(job).attempt == 1


def test_a_prefix_that_names_a_race_and_a_job_is_ambiguous_for_cancel(tmp_path, monkeypatch, capsys):
    from toren_action.cli import main

    monkeypatch.setenv("TOREN_HOME", str(tmp_path))
    store = Store(tmp_path)
    races.create_race(store, race_id="01m8aaaaaa0000", repo="r", branch="b", base_commit=SHA, budget_usd=None,
                      first_verified=False, keep_attempts=False, inputs={}, counters={})
    store.create_job(repo="r", branch="b/shell-1", agent="shell", model=None, base_image="i", inputs={},
                     job_id="01m8aaaaab0000", race_id="01m8aaaaaa0000", attempt=1)
    assert main(["cancel", "01m8aaaaa"]) == 10
    assert "matches a race and a job" in capsys.readouterr().err
    assert races.get_race(store, "01m8aaaaaa0000").state is RaceState.RUNNING
    assert store.get("01m8aaaaab0000").state is JobState.QUEUED
    assert main(["cancel", "01m8aaaaab0000"]) == 0  # the attempt alone, by its id
    assert races.get_race(store, "01m8aaaaaa0000").state is RaceState.RUNNING


def test_a_folder_of_endless_json_files_is_refused_not_read(tmp_path):
    """A hostile artifact may hold any number of .json files (each up to the record limit): the final job reads a
    bounded number, then refuses in one line."""
    write(tmp_path, "a/r.json", record(1))
    for i in range(race.MAX_RECORD_FILES):
        (tmp_path / "a" / f"pad-{i}.json").write_text("{}")
    with pytest.raises(UsageError, match=f"more than {race.MAX_RECORD_FILES} .json files"):
        race.read_records(tmp_path)


def test_a_branchs_commit_is_its_own_refs_not_one_ending_in_its_name(tmp_path):
    """`git ls-remote origin refs/heads/x` also lists refs/heads/a/refs/heads/x, sorted first: the winner check,
    the review round's moved-branch check and --pick read only the exact ref."""
    import subprocess

    from toren_action.git import workspace

    def run(*args):
        return subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True, text=True).stdout.strip()

    run("init", "-q", "-b", "main")
    run("-c", "user.name=t", "-c", "user.email=t@e", "commit", "-q", "--allow-empty", "-m", "one")
    run("branch", "x")
    real = run("rev-parse", "x")
    run("-c", "user.name=t", "-c", "user.email=t@e", "commit", "-q", "--allow-empty", "-m", "two")
    run("branch", "a/refs/heads/x")
    assert workspace.remote_branch_sha(str(tmp_path), "x") == real
    assert workspace.remote_branch_sha(str(tmp_path), "heads/x") is None


# -- --judge at the end of a race (job.race.judge_tie), without a model ------------------------------------------

def _tied_race(tmp_path, budget=None, cost=None):
    store = Store(tmp_path)
    races.create_race(store, race_id="01judge", repo="r", branch="b", base_commit=SHA, budget_usd=budget,
                      first_verified=False, keep_attempts=False, inputs={"judge": "claude-haiku-4-5"}, counters={})
    for n in (1, 2):
        job = store.create_job(repo="r", branch=f"b/shell-{n}", agent="shell", model=None, base_image="i",
                               inputs={}, race_id="01judge", attempt=n)
        store.update(job, result_commit=SHA, started_at=100.0, finished_at=130.0, cost_usd=cost, diffstat=
                     " 1 file changed, 1 insertion(+)")
        store.set_state(job, JobState.SUCCEEDED)
    r = races.get_race(store, "01judge")
    return store, r, race.race_attempts(store, r)


def _plan():
    from types import SimpleNamespace

    from toren_action.core.redact import Redactor

    return SimpleNamespace(redactor=Redactor([]), settings=settings())


def test_the_judge_is_not_asked_when_the_budget_is_spent(tmp_path, monkeypatch):
    from toren_action.job import choose, judge

    store, r, attempts = _tied_race(tmp_path, budget=1.0, cost=0.5)
    monkeypatch.setattr(judge, "decide", lambda *a, **k: pytest.fail("the judge was asked"))
    choice = race.judge_tie(store, tmp_path, r, attempts, choose.choose(attempts), _plan())
    assert choice.winner == 1 and "budget ($1) is spent, so the judge was not asked" in choice.why
    assert choice.judge["usable"] is False and choice.judge["cost_usd"] is None


def test_a_judge_that_fails_oddly_leaves_the_tie_to_the_lowest_number(tmp_path, monkeypatch):
    from toren_action.job import choose, judge

    store, r, attempts = _tied_race(tmp_path)

    def boom(*_a, **_k):
        raise RuntimeError("the SDK broke")

    monkeypatch.setattr(judge, "decide", boom)
    choice = race.judge_tie(store, tmp_path, r, attempts, choose.choose(attempts), _plan())
    assert (choice.winner, choice.order[0]) == (1, 1)
    assert "the judge could not be asked (RuntimeError): the lower attempt number wins" in choice.why


def test_the_judges_cost_is_the_races_while_its_record_is_kept(tmp_path, monkeypatch):
    from toren_action.job import choose, judge

    store, r, attempts = _tied_race(tmp_path, cost=0.25)
    verdict = judge.Verdict(2, (1, 2), "claude-haiku-4-5", True, "clearer", 0.0016, 1200, 80)
    monkeypatch.setattr(judge, "decide", lambda *a, **k: verdict)
    choice = race.judge_tie(store, tmp_path, r, attempts, choose.choose(attempts), _plan())
    assert choice.winner == 2 and choice.order == (2, 1) and "chose attempt 2: clearer" in choice.why
    races.update_race(store, r.id, choice=choice.to_dict(), winner=2)
    assert races.spent(store, r.id) == pytest.approx(0.5016)
    picked = choose.Choice(1, (1, 2), "picked by hand", judge=races.get_race(store, r.id).choice["judge"])
    races.update_race(store, r.id, choice=picked.to_dict(), winner=1)
    assert races.spent(store, r.id) == pytest.approx(0.5016)
    races.update_race(store, r.id, choice='{"judge": {"cost_usd": -5}}')  # a bad record counts nothing
    assert races.spent(store, r.id) == pytest.approx(0.5)


def test_losers_branches_are_deleted_from_a_home_that_never_fetched_the_repository(tmp_path):
    """The final job of a fleet race runs on a runner of its own: no mirror of the repository in its home. The
    losers' branches are deleted all the same, and the winner's and the base branch are left."""
    import subprocess
    from types import SimpleNamespace

    def g(*args: str, cwd: Path = tmp_path) -> str:
        return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout

    origin = tmp_path / "origin.git"
    g("init", "-q", "--bare", "-b", "main", str(origin))
    work = tmp_path / "work"
    g("init", "-q", "-b", "main", str(work))
    g("-c", "user.name=u", "-c", "user.email=u@x", "commit", "-q", "--allow-empty", "-m", "base", cwd=work)
    g("push", "-q", str(origin), "main", "main:toren/f/shell-1", "main:toren/f/shell-2", "main:toren/f/shell-3",
      cwd=work)
    home = tmp_path / "home"
    home.mkdir()
    plan = SimpleNamespace(github=None, origin=str(origin), redactor=str)
    deleted = race.delete_branches(plan, ["toren/f/shell-1", "toren/f/shell-3", "toren/f/shell-4"], home)  # type: ignore[arg-type]
    assert deleted == ["toren/f/shell-1", "toren/f/shell-3"]  # shell-4 never pushed: nothing to delete
    heads = g("--git-dir", str(origin), "for-each-ref", "--format=%(refname:short)", "refs/heads/").split()
    assert sorted(heads) == ["main", "toren/f/shell-2"]
    assert list(home.iterdir()) == []  # nothing left behind in the home (the push ran from a temporary repository)
