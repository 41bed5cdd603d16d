"""Where a job's lines go: its log file (every line redacted, bounded) and a Reporter (the terminal, the
Action's log, the progress comment on the issue)."""

from __future__ import annotations

import errno
import time
from pathlib import Path
from typing import Protocol

from toren_action.core import texts
from toren_action.core.redact import Redactor


class Reporter(Protocol):
    def stage(self, state: str, detail: str) -> None: ...
    def line(self, text: str) -> None: ...


class NullReporter:
    def stage(self, state: str, detail: str) -> None:
        pass

    def line(self, text: str) -> None:
        pass


class Tee:
    """The console (or the Action's) reporter, plus the progress comment on the issue (stages only)."""

    def __init__(self, reporter: Reporter, progress) -> None:
        self._reporter = reporter
        self._progress = progress

    def stage(self, state: str, detail: str) -> None:
        self._reporter.stage(state, detail)
        self._progress.stage(state, detail)

    def line(self, text: str) -> None:
        self._reporter.line(text)


#: The most a job's log keeps of its lines (the agent's output, mostly); stages are always kept.
MAX_LOG_BYTES = 50 * 1024 * 1024


class JobLog:
    """The job's log file: every line redacted, then its control characters made visible, before it is written
    or shown. Past ``max_bytes`` of lines, one
    marker says where the log was cut and further lines are dropped (from the file and the reporter); stages
    and the end state are still written, so an agent printing without end cannot fill the disk."""

    def __init__(self, path: Path, redact: Redactor, reporter: Reporter, started: float,
                 max_bytes: int | None = None) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115 - closed in close()
        self._redact = redact
        self._reporter = reporter
        self._started = started
        self._max = self._left = MAX_LOG_BYTES if max_bytes is None else max_bytes

    def stage(self, state: str, detail: str) -> None:
        detail = texts.one_line(self._redact(detail))  # redacted first: an escape could hide a secret's value
        self._fh.write(f"[{time.monotonic() - self._started:7.2f}s] == {state}: {detail}\n")
        try:
            self._reporter.stage(state, detail)
        except OSError as exc:
            self._lost(exc)

    def line(self, text: str, show: bool = True) -> None:
        """One line of the log; ``show``: also to the reporter (False: the caller has already shown it)."""
        if self._left <= 0:
            return
        text = texts.terminal(self._redact(text))  # no control sequence reaches a terminal that shows the log
        self._left -= len(text.encode("utf-8", "replace")) + 1
        if self._left <= 0:
            text = (f"toren: the log reached its cap of {self._max // (1024 * 1024)} MiB here; the rest of the "
                    "agent's output is not kept (stages and the outcome still are)")
        self._fh.write(text + "\n")
        if not show:
            return
        try:
            self._reporter.line(text)
        except OSError as exc:
            self._lost(exc)

    def _lost(self, exc: OSError) -> None:
        """The terminal went away (a closed pipe: `toren run ... | head`; a hung-up terminal): the job carries on
        to its end and its log stays complete; only what would have been shown is dropped, from now on."""
        if not (isinstance(exc, BrokenPipeError) or exc.errno in (errno.EPIPE, errno.EIO)):
            raise exc
        self._fh.write(f"[{time.monotonic() - self._started:7.2f}s] toren: the terminal's output was closed "
                       f"({exc.strerror or exc.__class__.__name__}); the job carries on and this log is complete\n")
        self._reporter = NullReporter()

    def close(self) -> None:
        self._fh.close()
