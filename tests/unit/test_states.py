"""The job states are one table (``JobState``): every state has every fact, every place that shows or maps a state
covers all of them, the errors take their end state and exit code from it, and nothing else lists states or exit
codes. Also the typed facts that used to be text: a cancel request and a lost worker."""

from __future__ import annotations

import ast
import io
import json
import os
import re
import sqlite3
from pathlib import Path
from types import SimpleNamespace

import pytest

from toren_action.core import errors
from toren_action.core.states import FINAL_STATES, JobState

ROOT = Path(__file__).resolve().parents[2]
UNFINISHED = [s for s in JobState if not s.final]
ENDS = [s for s in JobState if s.final]


def all_errors() -> list[type[errors.TorenError]]:
    """The errors of core.errors (not the subclasses other modules define, which share their base's code)."""
    return [c for c in (errors.TorenError, *errors._subclasses(errors.TorenError)) if c.__module__ == errors.__name__]


# --- the table ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("state", list(JobState))
def test_every_state_has_every_fact(state):
    assert isinstance(state, str) and state == state.value and str(state) == state.value and f"{state}" == state.value
    assert JobState(state.value) is state
    assert isinstance(state.final, bool)
    assert (state.exit_code is None) is not state.final  # an end state has an exit code; an unfinished one none
    assert state.colour and state.mark and state.github_mark and state.github_title
    if state.final:
        assert state.github_title == state.value.replace("_", " ")  # the progress comment's heading, as before
    else:
        assert state.github_title[0].isupper() and (state.colour, state.mark, state.github_mark) == ("cyan", "▸", "⏳")


def test_the_states_and_their_exit_codes_are_the_ones_toren_always_had():
    assert [s.value for s in JobState] == [
        "queued", "preparing", "building", "setting_up", "running", "verifying", "pushing", "pull_request",
        "succeeded", "failed", "no_changes", "cancelled", "timed_out",
        "budget_exceeded", "auth_failed", "rate_limited", "max_turns", "blocked_by_policy", "verification_failed",
        "setup_failed", "branch_moved"]
    assert {s.value: s.exit_code for s in ENDS} == {
        "succeeded": 0, "no_changes": 0, "failed": 6, "timed_out": 7, "cancelled": 130, "budget_exceeded": 11,
        "auth_failed": 12, "rate_limited": 13, "max_turns": 14, "blocked_by_policy": 21,
        "verification_failed": 8, "setup_failed": 22, "branch_moved": 24}
    assert FINAL_STATES == set(ENDS)
    from toren_action.jobs import store

    assert store.FINAL_STATES is FINAL_STATES  # the name the store has always exported


def test_a_state_is_stored_and_sent_as_its_value():
    assert json.dumps({"state": JobState.BLOCKED_BY_POLICY}) == '{"state": "blocked_by_policy"}'
    conn = sqlite3.connect(":memory:")
    assert conn.execute("SELECT ?, typeof(?)", (JobState.QUEUED, JobState.QUEUED)).fetchone() == ("queued", "text")


# --- the errors -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("cls", all_errors(), ids=lambda c: c.__name__)
def test_every_error_has_a_state_an_exit_code_and_says_whether_it_is_a_refusal(cls):
    assert isinstance(cls.state, JobState) and cls.state.final
    assert isinstance(cls.exit_code, int) and isinstance(cls.refusal, bool)
    if "state" in cls.__dict__ and cls is not errors.TorenError:  # an end state of its own: its exit code too
        assert cls.exit_code == cls.state.exit_code


def test_each_end_state_but_success_is_the_state_of_an_error_with_its_exit_code():
    for state in ENDS:
        owners = [c for c in all_errors()[1:] if "state" in c.__dict__ and c.state is state]
        if state.exit_code == 0:
            assert not owners
        else:
            assert len(owners) == 1 and owners[0].exit_code == state.exit_code, state


def test_exit_codes_are_distinct_and_the_refusals_are_the_ones_the_action_reported():
    codes = [c.exit_code for c in all_errors()]
    assert len(codes) == len(set(codes))
    assert {c.exit_code for c in all_errors() if c.refusal} == {2, 3, 15, 20}  # `action.run`'s old tuple


def test_the_errors_that_end_a_job_in_a_state_of_their_own_are_unchanged():
    own = {c: c.state for c in all_errors() if c.state not in ("failed", "cancelled")}
    assert own == {
        errors.BudgetExceeded: "budget_exceeded", errors.AgentAuthFailed: "auth_failed",
        errors.AgentRateLimited: "rate_limited", errors.MaxTurnsReached: "max_turns",
        errors.JobTimedOut: "timed_out", errors.PolicyBlocked: "blocked_by_policy",
        errors.VerificationFailed: "verification_failed", errors.SetupFailed: "setup_failed",
        errors.BranchMoved: "branch_moved"}


def test_a_lost_worker_is_its_own_exception_on_the_ctrl_c_path():
    exc = errors.WorkerLost()
    assert isinstance(exc, KeyboardInterrupt) and not isinstance(exc, errors.TorenError)
    assert str(exc) == errors.WORKER_LOST == "worker lost"


def test_a_termination_signal_in_a_worker_job_whose_worker_died_raises_worker_lost(monkeypatch):
    import signal

    from toren_action.jobs import process

    handlers = {}
    monkeypatch.setattr(signal, "signal", lambda signum, handler: handlers.setdefault(signum, handler))
    process.stop_on_termination(parent=os.getppid() + 1)  # not our parent: the worker is gone
    with pytest.raises(errors.WorkerLost):
        handlers[signal.SIGTERM](signal.SIGTERM, None)
    handlers.clear()
    process.stop_on_termination(parent=os.getppid())
    with pytest.raises(KeyboardInterrupt) as caught:
        handlers[signal.SIGTERM](signal.SIGTERM, None)
    assert not isinstance(caught.value, errors.WorkerLost) and str(caught.value) == "SIGTERM"


# --- every place that shows or maps a state covers all of them ------------------------------------------------------

@pytest.mark.parametrize("state", list(JobState))
def test_the_terminal_shows_every_state_with_its_mark(state):
    from toren_action.cli.ui import ConsoleReporter

    stream = io.StringIO()
    ConsoleReporter(stream).stage(state.value, "detail")
    assert f"{state.mark} {state.value:<10} detail" in stream.getvalue()


@pytest.mark.parametrize("state", ENDS)
def test_the_outcome_of_every_end_state_is_printed_with_its_mark(state):
    from toren_action.cli.ui import print_outcome

    outcome = SimpleNamespace(state=state.value, duration_s=1.0, branch="b", pushed_to="o", commit="c", files=[],
                              pr_url=None, message="m", usage=None, job_id="j")
    stream = io.StringIO()
    print_outcome(outcome, None, stream)
    assert stream.getvalue().startswith(f"{state.mark} {state.value} in 1.0s")


def test_the_status_table_colours_every_state_as_the_table_says():
    from rich.console import Console

    from toren_action.cli.ui import status_renderable

    jobs = [SimpleNamespace(id=f"j{i}", state=s.value, repo="r", branch="b", agent="shell", model=None, pr_url=None,
                            result_commit=None, error=None, created_at=0.0, duration=None, turns=None, cost_usd=None,
                            started_at=None, finished_at=None, files_changed=[])
            for i, s in enumerate(JobState)]
    table = status_renderable(jobs)
    cells = list(table.columns[1].cells)
    assert [(c.plain, c.style) for c in cells] == [(f"{s.mark} {s.value}", s.colour) for s in JobState]
    assert JobState.BLOCKED_BY_POLICY.colour == "red"  # the old table had none: it showed as running
    Console(file=io.StringIO(), width=200).print(table)  # each colour is one rich knows


def test_the_progress_comment_titles_every_state():
    from toren_action.git.github import ProgressComment

    written = []
    issue = SimpleNamespace(create_comment=lambda body: written.append(body) or SimpleNamespace(
        edit=lambda body: written.append(body)))
    repo = SimpleNamespace(get_issue=lambda _n: issue)
    for end in ENDS:
        written.clear()
        p = ProgressComment(repo, 1, "job1")
        p.MIN_INTERVAL_S = 0.0
        for state in UNFINISHED:
            p.stage(state.value, "")
        p.stage(end.value, "")  # an end state is not a row
        assert f"- {JobState.PULL_REQUEST.github_mark} {JobState.PULL_REQUEST.github_title}" in written[-1]
        p.finish(end.value, ["done"])
        body = written[-1]
        assert f": {end.github_mark} **{end.github_title}**" in body
        rows = [line for line in body.splitlines() if line.startswith("- ")]
        assert rows == [f"- ✅ {s.github_title}" for s in UNFINISHED]
    assert {e.github_mark for e in ENDS} == {"✅", "➖", "❌"}
    assert (JobState.SUCCEEDED.github_mark, JobState.NO_CHANGES.github_mark) == ("✅", "➖")


def test_the_store_takes_every_state_and_ends_a_job_once(tmp_path):
    from toren_action.jobs.store import Store

    store = Store(tmp_path)
    for end in ENDS:
        job_id = store.create_job(repo="r", branch="b", agent="shell", model=None, base_image="i", inputs={})
        for state in UNFINISHED:
            assert store.set_state(job_id, state.value)
            job = store.get(job_id)
            assert job.state is state and job.finished_at is None
        assert store.set_state(job_id, end)
        job = store.get(job_id)
        assert job.state is end and job.finished_at is not None
        assert not store.set_state(job_id, JobState.RUNNING)  # never overwritten
    assert not store.has_unfinished()
    with pytest.raises(ValueError):
        store.set_state(job_id, "exploded")


def test_the_cli_docs_exit_code_tables_are_the_errors_and_the_states():
    text = (ROOT / "docs" / "cli.md").read_text("utf-8")
    by_error = {m[2]: int(m[1]) for m in re.finditer(r"^\| (\d+) \| `(\w+)` \|", text, re.M)}
    assert by_error == {c.__name__: c.exit_code for c in all_errors()}
    by_state = {m[1]: int(m[2]) for m in re.finditer(r"^\| `(\w+)` \| (\d+) \|$", text, re.M)}
    assert by_state == {s.value: s.exit_code for s in ENDS}


# --- nothing else lists the states ----------------------------------------------------------------------------------

STATE_VALUES = {s.value for s in JobState}


def _literals_of_states(path: Path) -> list[int]:
    """Lines of dict, set, list and tuple literals that name three states or more: a table of states."""
    found = []
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        items = node.keys if isinstance(node, ast.Dict) else node.elts if isinstance(
            node, (ast.Set, ast.List, ast.Tuple)) else []
        names = {n.value for n in items if isinstance(n, ast.Constant) and n.value in STATE_VALUES}
        if len(names) >= 3:
            found.append(node.lineno)
    return found


def test_no_module_but_the_states_lists_states():
    tables = {str(p.relative_to(ROOT)): lines for p in sorted((ROOT / "toren_action").rglob("*.py"))
              if p.name != "states.py" and (lines := _literals_of_states(p))}
    assert tables == {}


def test_no_exit_code_tuple_stands_in_for_an_error_class():
    """Toren's own exit codes are the errors' and the states' (agents/ reads the agent CLIs' codes: not these)."""
    pattern = re.compile(r"exit_code\s*(?:in\s*[(\[{]\s*\d|[=!]=\s*(?:[2-9]|1\d|2\d|130)\b)|return 130\b")
    hits = [f"{p.relative_to(ROOT)}:{n}" for p in (ROOT / "toren_action").rglob("*.py") if "agents" not in p.parts
            for n, line in enumerate(p.read_text("utf-8").splitlines(), 1) if pattern.search(line)]
    # Ctrl-C's 130 in cli/__init__.py is to become Interrupted.exit_code with that file's rework; then drop this.
    hits = [h for h in hits if not h.startswith("toren_action/cli/__init__.py:")]
    assert hits == []


# --- the cancel request and the lost process are fields, not text ---------------------------------------------------

def _running_job(store, pid: int) -> str:
    job_id = store.create_job(repo="r", branch="b", agent="shell", model=None, base_image="i", inputs={})
    store.set_state(job_id, JobState.RUNNING)
    store.update(job_id, pid=pid)
    return job_id


def test_a_cancel_request_is_a_field_and_a_lost_job_that_had_one_ends_cancelled(tmp_path, monkeypatch):
    from toren_action.jobs import store as store_module

    store = store_module.Store(tmp_path)
    asked, not_asked = _running_job(store, 4242), _running_job(store, 4243)
    store.request_cancel(asked)
    job = store.get(asked)
    assert job.cancel_requested_at is not None and job.error == "cancel requested (toren cancel)"  # shown as before
    store.update(not_asked, error="cancel requested, said the agent")  # text alone is no request
    monkeypatch.setattr(store_module, "pid_alive", lambda pid: False)
    assert sorted(store.reap_lost()) == sorted([asked, not_asked])
    assert (store.get(asked).state, store.get(asked).error) == ("cancelled", "cancelled (toren cancel)")
    assert store.get(not_asked).state == "failed" and store.get(not_asked).error.startswith("worker lost: ")


def test_a_pid_another_user_owns_is_not_a_jobs_process(tmp_path, monkeypatch):
    """A job's process always runs as the user who started it: a pid that exists but may not be signalled
    (PermissionError) was reused by someone else's process, so the job is lost; `toren cancel` agrees."""
    from toren_action.jobs import store as store_module
    from toren_action.jobs.process import is_job_process

    def kill(pid, sig):
        assert sig == 0
        if pid == 1111:
            raise PermissionError(1, "Operation not permitted")
        if pid == 2222:
            raise ProcessLookupError(3, "No such process")

    monkeypatch.setattr(os, "kill", kill)
    assert (store_module.pid_alive(1111), store_module.pid_alive(2222), store_module.pid_alive(3333)) == (
        False, False, True)
    store = store_module.Store(tmp_path)
    theirs, mine = _running_job(store, 1111), _running_job(store, 3333)
    store.beat(mine)
    assert store.reap_lost() == [theirs]  # at once, not after the heartbeat timeout
    assert store.get(mine).state == "running"
    real_read = Path.read_bytes
    monkeypatch.setattr(Path, "read_bytes", lambda self: (_ for _ in ()).throw(FileNotFoundError(str(self)))
                        if str(self).startswith("/proc/") else real_read(self))  # no /proc: the fallback
    assert (is_job_process(1111, theirs), is_job_process(3333, mine)) == (False, True)
