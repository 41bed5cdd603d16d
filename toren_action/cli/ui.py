"""How a job looks in a terminal: stage lines with elapsed time, the agent's output indented, and the
final result. Plain text (fast, pipe-friendly); rich is used only for the status table. Every text from the
agent or the job passes ``texts.terminal`` (or ``one_line``): no escape sequence reaches the terminal."""

from __future__ import annotations

import json
import sys
import time
from typing import TYPE_CHECKING, Any, TextIO

from toren_action.core.states import JobState
from toren_action.core.texts import one_line, terminal
from toren_action.job.usage import usage_text

if TYPE_CHECKING:
    from rich.console import Console
    from rich.status import Status


class ConsoleReporter:
    """Stage lines and the agent's output. On a terminal (not under CI) a rich spinner below them shows the
    current stage and its elapsed time; elsewhere plain lines only."""

    def __init__(self, stream: TextIO | None = None, quiet: bool = False) -> None:
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.started = time.monotonic()
        self._status: Status | None = None
        self._console: Console | None = None
        if _interactive(self.stream):
            from rich.console import Console

            self._console = Console(file=self.stream, highlight=False, markup=False, emoji=False)

    def _elapsed(self) -> str:
        return f"{time.monotonic() - self.started:6.1f}s"

    def _print(self, text: str) -> None:
        if self._console is not None:
            self._console.print(text, soft_wrap=True)
        else:
            print(text, file=self.stream, flush=True)

    def stage(self, state: str, detail: str) -> None:
        state = JobState(state)
        self._print(f"[{self._elapsed()}] {state.mark} {state:<10} {one_line(detail)}")
        if self._console is None:
            return
        if state.final:  # no spinner after it
            self.close()
        elif self._status is None:
            self._status = self._console.status(f"{state} …", spinner="dots")
            self._status.start()
        else:
            self._status.update(f"{state} …")

    def line(self, text: str) -> None:
        if not self.quiet:
            for part in terminal(text).split("\n"):
                self._print(f"           │ {part}")

    def close(self) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None


def _interactive(stream) -> bool:
    import os

    if any(os.environ.get(v) for v in ("CI", "GITHUB_ACTIONS", "TOREN_PLAIN")) or os.environ.get("TERM") == "dumb":
        return False
    return hasattr(stream, "isatty") and stream.isatty()


def print_outcome(outcome, job, stream: TextIO | None = None) -> None:
    w = (stream or sys.stdout).write
    state = JobState(outcome.state)
    if state is JobState.SUCCEEDED:
        w(f"{state.mark} {state} in {outcome.duration_s:.1f}s\n")
        w(f"  branch  {one_line(outcome.branch)}  (pushed to {one_line(outcome.pushed_to)})\n")
        w(f"  commit  {outcome.commit}\n")
        files = ", ".join(one_line(f) for f in outcome.files[:10])
        files += f", … (+{len(outcome.files) - 10})" if len(outcome.files) > 10 else ""
        w(f"  files   {len(outcome.files)} changed: {files}\n")
        if outcome.pr_url:
            w(f"  pr      {one_line(outcome.pr_url)}\n")
    else:
        w(f"{state.mark} {state} in {outcome.duration_s:.1f}s: "
          f"{terminal(outcome.message)}\n")
    if outcome.usage:
        w(f"  usage   {usage_text(outcome.usage, outcome.cost_usd, outcome.cost_source)}\n")
    w(f"  job     {outcome.job_id}  (toren logs {outcome.job_id})\n")


def outcome_json(outcome, job) -> dict:
    return {
        "job_id": outcome.job_id,
        "state": outcome.state,
        "exit_code": outcome.exit_code,
        "message": outcome.message,
        "branch": outcome.branch,
        "commit": outcome.commit,
        "files_changed": outcome.files,
        "diffstat": outcome.diffstat,
        "duration_s": round(outcome.duration_s, 3),
        "image": job.image if job else None,
        "image_built": outcome.image_built,
        "pushed_to": outcome.pushed_to,
        "pr_url": outcome.pr_url,
        "usage": outcome.usage,
        "cost_usd": outcome.cost_usd,
        "cost_source": outcome.cost_source,
    }


def fmt_age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 10:
        return f"{seconds:.1f}s"
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d"


def status_table(jobs, stream: TextIO | None = None) -> None:
    stream = stream or sys.stdout
    from rich.console import Console

    console = Console(file=stream, soft_wrap=False)
    if not console.is_terminal:
        console = Console(file=stream, soft_wrap=False, width=240)
    console.print(status_renderable(jobs))


def status_renderable(jobs):
    from rich.markup import escape
    from rich.table import Table

    table = Table(box=None, header_style="bold", pad_edge=False)
    for col in ("JOB", "STATE", "REPO", "BRANCH", "AGENT", "AGE", "DURATION", "TURNS", "COST", "RESULT"):
        table.add_column(col, no_wrap=col in ("JOB", "STATE"))
    now = time.time()
    for j in jobs:
        agent = j.agent + (f"/{j.model}" if j.model else "")
        result = j.pr_url or (j.result_commit or "")[:10] or (j.error or "")[:40]
        branch = j.branch
        if getattr(j, "pr_number", None):  # a review round: its pull request and round
            branch += f" (PR #{j.pr_number}, round {getattr(j, 'round', None) or '?'})"
        table.add_row(
            j.id, f"[{JobState(j.state).colour}]{j.state}[/]", escape(one_line(_short_repo(j.repo))),
            escape(one_line(branch)), escape(one_line(agent)),
            fmt_age(now - j.created_at), fmt_age(j.duration), str(j.turns or "-"),
            f"${j.cost_usd:.4f}" if j.cost_usd is not None else "-", escape(one_line(result)),
        )
    return table


def _short_repo(repo: str) -> str:
    return repo if len(repo) <= 40 else "…" + repo[-39:]


def print_json(data: Any) -> None:
    """``data`` as indented JSON, written at once (json.dump would make one write per token: 130,000 for
    `status --json --limit 1000`)."""
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
