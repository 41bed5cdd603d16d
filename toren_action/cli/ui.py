"""How a job looks in a terminal: stage lines with elapsed time, the agent's output indented, and the
final result. Plain text (fast, pipe-friendly); rich is used only for the status table. Every text from the
agent or the job passes ``texts.terminal`` (or ``one_line``): no escape sequence reaches the terminal."""

from __future__ import annotations

import errno
import json
import os
import sys
import time
from functools import lru_cache
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
            self._console = console(file=self.stream, highlight=False, markup=False, emoji=False)

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
            return
        line = SpinnerLine(state, self.started)
        if self._status is None:
            self._status = self._console.status(line, spinner="dots")
            self._status.start()
        else:
            self._status.update(line)

    def line(self, text: str) -> None:
        if not self.quiet:
            for part in terminal(text).split("\n"):
                self._print(f"           │ {part}")

    def close(self) -> None:
        if self._status is not None:
            status, self._status = self._status, None
            try:
                status.stop()
            except OSError:  # the terminal went away; nothing left to clear
                pass


class SpinnerLine:
    """The text beside the live spinner, made again at each refresh: the stage and how long it and the whole
    job have taken (``running … 1m05s (job 2m10s)``)."""

    def __init__(self, state: str, job_started: float, clock=time.monotonic) -> None:
        self.state, self.job_started, self.clock = state, job_started, clock
        self.stage_started = clock()

    def __str__(self) -> str:
        now = self.clock()
        return f"{self.state} … {fmt_age(now - self.stage_started)} (job {fmt_age(now - self.job_started)})"

    def __rich__(self):
        from rich.text import Text

        return Text(str(self))


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
    verification = getattr(outcome, "verification", None)
    if verification:
        from toren_action.job.verify import verification_line

        w(f"  verify  {terminal(verification_line(verification))}\n")
    if job is not None and setup_text(job.setup):
        w(f"  setup   {setup_text(job.setup)}\n")
    w(f"  job     {outcome.job_id}  (toren logs {outcome.job_id})\n")


def setup_text(setup: dict | None) -> str | None:
    """A job's setup in a few words (job/setup.py's record); None when it had none."""
    if not setup or setup.get("cache") in (None, "none"):
        return None
    what = {"hit": "prepared environment reused (setup cache hit)",
            "miss": "prepared environment made and kept (setup cache miss)",
            "off": "prepared environment made for this job only (--no-setup-cache)"}.get(setup["cache"], "?")
    took = f", {setup['duration_s']:.1f} s" if isinstance(setup.get("duration_s"), (int, float)) else ""
    return f"{what}: {one_line(str(setup.get('image')))}{took}"


def outcome_json(outcome, job, log=None) -> dict:
    """`toren run --disable-daemon --json`: the job's object (job_json) with the exit code the run returns (it
    knows the error, e.g. 8 for a failed verification, where the record knows only the state) and its own keys."""
    from toren_action.jobs.job_json import job_json

    return job_json(job, log, exit_code=outcome.exit_code, image_built=outcome.image_built,
                    pushed_to=outcome.pushed_to, message=outcome.message)


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


def status_table(jobs, stream: TextIO | None = None, *, wide: bool = False, total: int | None = None) -> None:
    """The jobs as a table sized to the terminal (80 columns first; every column with ``wide``); to a pipe or a
    file at 240 columns, so nothing is cut."""
    stream = stream or sys.stdout
    out = console(file=stream, soft_wrap=False, highlight=False)
    if wide:  # as kubectl's -o wide: every cell whole, lines as long as they need
        out = console(file=stream, soft_wrap=False, highlight=False, width=10_000)
        out.print(status_renderable(jobs, wide=True, total=total))
        return
    if not out.is_terminal:  # a pipe or a file: nothing cut
        out = console(file=stream, soft_wrap=False, highlight=False, width=240)
    out.print(status_renderable(jobs, total=total, width=out.width))


#: The columns of `toren status`, by priority: the first ones fit 80 columns; `--wide` shows them all.
NARROW_COLUMNS = ("ID", "STATE", "AGE", "TOOK", "REPO:BRANCH", "RESULT")
WIDE_COLUMNS = ("ID", "STATE", "REPO", "BRANCH", "AGENT", "AGE", "TOOK", "TURNS", "COST", "RESULT")
#: The longest RESULT kept (an error is one line of at most this; the terminal's width cuts it further).
RESULT_CHARS = 300


def status_renderable(jobs, *, wide: bool = False, total: int | None = None, now: float | None = None,
                      width: int | None = None):
    """The table for a terminal ``width`` columns wide; under it "showing N of M jobs" when ``total`` says more
    jobs match than are shown. Every cell keeps to one line: the short columns keep their width, the long ones
    (_FLEXIBLE) share what is left and end in "…" when cut; a header is never cut."""
    from rich.cells import cell_len
    from rich.table import Table
    from rich.text import Text

    caption = None
    if total is not None and total > len(jobs):
        caption = f"showing {len(jobs)} of {total} jobs (--limit N for more, --limit 0 for all)"
    table = Table(box=None, header_style="bold", pad_edge=False, caption=caption, caption_justify="left",
                  caption_style="dim")
    now = time.time() if now is None else now
    columns = WIDE_COLUMNS if wide else NARROW_COLUMNS
    rows = [_status_cells(j, now, wide) for j in jobs]
    natural = {c: max([len(c)] + [cell_len(r[c]) for r in rows]) for c in columns}
    widths = _fit(natural, width - 2 * (len(columns) - 1)) if width else natural
    for col in columns:  # each cell on one line: a long one ends in "…"; a header is never cut
        table.add_column(col, no_wrap=True, width=widths[col], overflow="ellipsis")
    for j, r in zip(jobs, rows, strict=True):
        if "REPO:BRANCH" in columns:
            r["REPO:BRANCH"] = _repo_branch(one_line(_repo_name(j.repo)), one_line(_branch(j)), widths["REPO:BRANCH"])
        # Text, never markup: a branch or an error holding "[red]" is shown as it is
        table.add_row(*(Text(r[c], style=JobState(j.state).colour if c == "STATE" else "") for c in columns))
    return table


#: The columns that give way (cut with "…") when the terminal is too narrow for the table.
_FLEXIBLE = ("REPO:BRANCH", "RESULT", "REPO", "BRANCH", "AGENT")


def _branch(j) -> str:
    """The job's branch; a review round's with its pull request and round."""
    if getattr(j, "pr_number", None):
        return f"{j.branch} (PR #{j.pr_number}, round {getattr(j, 'round', None) or '?'})"
    return j.branch


def _status_cells(j, now: float, wide: bool) -> dict[str, str]:
    """One job's cells, as plain text on one line (every text from the job through one_line)."""
    state = JobState(j.state)
    return {
        "ID": j.id,
        "STATE": f"{state.mark} {state}",
        "AGE": fmt_age(now - j.created_at),
        "TOOK": fmt_age(j.duration if j.finished_at or j.started_at is None else now - j.started_at),
        "REPO:BRANCH": one_line(f"{_repo_name(j.repo)}:{_branch(j)}"),
        "REPO": one_line(_short_repo(j.repo)),
        "BRANCH": one_line(_branch(j)),
        "AGENT": one_line(j.agent + (f"/{j.model}" if j.model else "")),
        "TURNS": str(j.turns or "-"),
        "COST": f"${j.cost_usd:.4f}" if j.cost_usd is not None else "-",
        "RESULT": one_line(_result(j, wide))[:RESULT_CHARS],
    }


def _fit(natural: dict[str, int], room: int) -> dict[str, int]:
    """Column widths in ``room`` characters: the short columns as wide as their text, the long ones what is
    left, shared out fairly (each at least its header; RESULT twice the share of the others)."""
    widths = dict(natural)
    flexible = [c for c in natural if c in _FLEXIBLE]
    left = room - sum(w for c, w in natural.items() if c not in _FLEXIBLE)
    weight = {c: 2 if c == "RESULT" else 1 for c in flexible}
    pending = sorted(flexible, key=lambda c: natural[c] / weight[c])
    while pending:  # the narrowest (for its weight) first: what it does not need goes to the others
        share = left * weight[pending[0]] // sum(weight[c] for c in pending)
        col = pending.pop(0)
        widths[col] = max(len(col), min(natural[col], share))
        left -= widths[col]
    return widths


def _repo_branch(repo: str, branch: str, width: int) -> str:
    """``repo:branch`` in ``width`` characters: the repository's name gives way first, then the middle of the
    branch (its start and its end are what tell branches apart). Both are already one line (texts.one_line)."""
    text = f"{repo}:{branch}"
    if len(text) <= width:
        return text
    if len(branch) + 3 <= width:  # at least a letter of the repository, "…" and ":"
        return f"{repo[:width - len(branch) - 2]}…:{branch}"
    keep = width - 1
    return branch[:keep - keep // 2] + "…" + branch[len(branch) - keep // 2:] if keep > 1 else "…"


def _result(job, wide: bool) -> str:
    """The pull request (its number at 80 columns), else the commit, else the error."""
    if job.pr_url:
        if wide:
            return job.pr_url
        import re

        m = re.search(r"/([^/]+/[^/]+)/pull/(\d+)$", job.pr_url)
        return f"PR {m.group(1)}#{m.group(2)}" if m else job.pr_url
    if job.result_commit:
        n = len(job.files_changed or [])
        return job.result_commit[:10] + (f" ({n} file{'' if n == 1 else 's'})" if n else "")
    return job.error or ""


def _repo_name(repo: str) -> str:
    """A repository as short as it stays recognisable: owner/name, or a local path's last part."""
    text = repo.rstrip("/").removesuffix(".git")
    if "://" in text or text.startswith("git@"):
        return "/".join(text.replace(":", "/").split("/")[-2:])
    if text.count("/") == 1 and not text.startswith((".", "/", "~")):  # owner/name
        return text
    return text.rsplit("/", 1)[-1] or repo


def _short_repo(repo: str) -> str:
    return repo if len(repo) <= 40 else "…" + repo[-39:]


def print_json(data: Any) -> None:
    """``data`` as indented JSON, written at once (json.dump would make one write per token: 130,000 for
    `status --json --limit 1000`)."""
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def console(**options: Any) -> Console:
    """A rich Console on which a closed pipe takes Toren's one path (a BrokenPipeError: cli.main exits quietly
    with 0; a job's log drops its terminal and carries on), not rich's own SystemExit(1)."""
    return _console_class()(**options)


@lru_cache(maxsize=1)
def _console_class() -> type[Console]:
    from rich.console import Console

    class _Console(Console):
        def on_broken_pipe(self) -> None:
            self.quiet = True
            raise BrokenPipeError(errno.EPIPE, os.strerror(errno.EPIPE))

    return _Console


def closed_pipe(exc: BaseException) -> bool:
    """Whether ``exc`` is a write to a pipe whose reader has gone (EPIPE)."""
    return isinstance(exc, BrokenPipeError) or (isinstance(exc, OSError) and exc.errno == errno.EPIPE)


def silence_stdout() -> None:
    """Point stdout and stderr at /dev/null, so that Python's own flush at exit does not fail again on the closed
    pipe (and print "Exception ignored ... BrokenPipeError")."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        for stream in (sys.stdout, sys.stderr):
            os.dup2(devnull, stream.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


def say(line: str) -> None:
    """One line on stderr; dropped when stderr is a closed pipe."""
    try:
        print(line, file=sys.stderr, flush=True)
    except (OSError, ValueError):
        pass
