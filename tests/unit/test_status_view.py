"""`toren status` in a terminal: a table made for 80 columns first (--wide for every column), each job on one
line, headers never cut, "showing N of M jobs" when --limit hides some; `--watch`'s header; the live line's
elapsed time. Rendered with rich consoles of a fixed width, as a terminal of that size shows them."""

from __future__ import annotations

import time
from argparse import Namespace

import pytest
from hypothesis import given
from hypothesis import strategies as st
from rich.console import Console

from toren_action.cli import main
from toren_action.cli.ui import NARROW_COLUMNS, WIDE_COLUMNS, SpinnerLine, status_renderable
from toren_action.cli.watch import frame, header
from toren_action.jobs.store import Store

LONG_ERROR = ("the agent exited with code 4: pytest found 3 failing tests in tests/test_api.py after the rename "
              "of old_name to new_name; see the log for the tracebacks")


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("TOREN_HOME", str(tmp_path / "home"))
    return Store(tmp_path / "home")


def add(store: Store, state: str, **fields) -> str:
    job_id = store.create_job(repo=fields.pop("repo", "/home/alice/src/widget"),
                              branch=fields.pop("branch", "toren/rename-helper"), agent="claude",
                              model="claude-sonnet-4-5", base_image="python:3.11", inputs={})
    store.update(job_id, started_at=time.time() - 125, **fields)
    store.set_state(job_id, state, **({"error": fields.get("error")} if "error" in fields else {}))
    return job_id


@pytest.fixture
def jobs(store):
    add(store, "succeeded", repo="acme/widget", pr_url="https://github.com/acme/widget/pull/42",
        result_commit="a" * 40, cost_usd=0.1234, turns=12)
    add(store, "failed", error=LONG_ERROR, branch="toren/issue-17-fix-the-flaky-retry-loop-in-the-http-client")
    add(store, "blocked_by_policy", error="secret-pattern: settings.py:1: a GitHub token")
    add(store, "running")
    return store.list()


def render(renderable, width: int) -> list[str]:
    console = Console(width=width, record=True, force_terminal=True, color_system=None)
    console.print(renderable)
    return console.export_text().rstrip("\n").split("\n")


@pytest.mark.parametrize("width", [80, 100, 160])
def test_the_table_fits_the_terminal_one_line_a_job_headers_whole(jobs, width):
    lines = render(status_renderable(jobs, width=width), width)
    assert len(lines) == 1 + len(jobs), lines  # no cell wrapped onto a second line
    assert lines[0].split() == list(NARROW_COLUMNS)  # every header whole, none cut or merged
    assert all(len(ln) <= width for ln in lines)
    for job, line in zip(jobs, lines[1:]):
        assert line.startswith(job.id) and str(job.state) in line  # the id and the state are never cut
    assert "PR acme/widget#42" in lines[-1]  # newest first: the first job made is last


def test_at_160_columns_the_result_is_not_cut_at_40(jobs):
    (failed,) = [ln for ln in render(status_renderable(jobs, width=160), 160) if "exited with code 4" in ln]
    shown = failed[failed.index("the agent exited"):].rstrip().rstrip("…")
    assert len(shown) > 60 and LONG_ERROR.startswith(shown)


def test_a_long_branch_keeps_its_start_and_end_at_80_columns(jobs):
    (line,) = [ln for ln in render(status_renderable(jobs, width=80), 80) if "failed" in ln]
    cell = line.split()[5]
    branch = "toren/issue-17-fix-the-flaky-retry-loop-in-the-http-client"
    start, end = cell.split("…")  # the repository's name gave way, then the branch's middle
    assert branch.startswith(start) and branch.endswith(end) and len(start) >= 4 and len(end) >= 4


def test_wide_shows_every_column_at_full_length(jobs, capsys):
    assert main(["status", "--wide"]) == 0
    lines = capsys.readouterr().out.rstrip("\n").split("\n")
    assert lines[0].split() == list(WIDE_COLUMNS) and len(lines) == 1 + len(jobs)
    assert "https://github.com/acme/widget/pull/42" in lines[4] and "$0.1234" in lines[4]
    assert "claude/claude-sonnet-4-5" in lines[4] and "/home/alice/src/widget" in lines[3]
    assert LONG_ERROR in lines[3]  # whole, however long the line


def test_status_says_when_limit_hides_jobs(store, jobs, capsys):
    assert main(["status", "--limit", "2"]) == 0
    out = capsys.readouterr().out
    assert "showing 2 of 4 jobs (--limit N for more, --limit 0 for all)" in out
    assert main(["status", "--limit", "4"]) == 0
    assert "showing" not in capsys.readouterr().out
    assert main(["status", "--limit", "1", "--state", "failed"]) == 0
    assert "showing" not in capsys.readouterr().out  # 1 of 1 failed job: nothing hidden


def test_watch_has_a_header_with_a_clock_and_how_to_quit(jobs):
    args = Namespace(interval=2.0, state="running", repo=None, wide=False)
    noon = time.mktime((2026, 12, 1, 12, 3, 4, 0, 0, -1))
    assert header(args, noon) == "toren status --state running · every 2s · 12:03:04 · Ctrl-C to quit"
    lines = render(frame(jobs, args, 80, total=9, now=noon), 80)
    assert lines[0].startswith("toren status --state running · every 2s · 12:03:04 · Ctrl-C to quit")
    assert lines[1].split() == list(NARROW_COLUMNS)
    assert lines[-1].startswith("showing 4 of 9 jobs")


def test_the_live_line_shows_the_stage_and_the_jobs_elapsed_time():
    now = [100.0]
    line = SpinnerLine("running", job_started=35.0, clock=lambda: now[0])
    now[0] = 105.0
    assert str(line) == "running … 5.0s (job 1m10s)"
    now[0] = 165.0
    assert render(line, 80) == ["running … 1m05s (job 2m10s)"]  # made again at each refresh


def test_a_cell_is_shown_as_written_never_as_markup_or_escapes(store):
    add(store, "failed", branch="[red]toren/x[/red]", error="[bold]boom[/] \x1b[2J\nsecond line")
    (line,) = render(status_renderable(store.list(), width=160), 160)[1:]
    assert "[red]toren/x[/red]" in line and "[bold]boom[/]" in line
    assert "\x1b" not in line and "second line" in line  # control characters shown, one line


@given(repo=st.text(min_size=1, max_size=40), branch=st.text(min_size=1, max_size=120),
       width=st.integers(min_value=len("REPO:BRANCH"), max_value=200))
def test_repo_branch_always_fits_and_keeps_the_branch_ends(repo, branch, width):
    from toren_action.cli.ui import _repo_branch

    text = _repo_branch(repo, branch, width)
    assert len(text) <= width
    if len(f"{repo}:{branch}") <= width:
        assert text == f"{repo}:{branch}"
    elif len(branch) + 3 <= width:
        assert text.endswith(":" + branch)  # the whole branch; the repository's name gave way
    else:
        start, _, end = text.partition("…")
        assert branch.startswith(start) and branch.endswith(end) and abs(len(start) - len(end)) <= 1
