"""`toren status --watch`: a live table of the jobs (rich's live display on a terminal)."""

from __future__ import annotations

import sys
import time
from argparse import Namespace

from toren_action.core.errors import UsageError
from toren_action.jobs.store import Store


def cmd_watch(args: Namespace) -> int:
    """`toren status --watch`: the table redrawn every interval (plainly when stdout is not a terminal)."""
    from toren_action.core.paths import toren_home
    from toren_action.jobs import worker

    store = Store(toren_home())
    worker.reap(store) if store.has_unfinished() else None
    return watch(store, args)


def watch(store: Store, args: Namespace) -> int:
    from rich.live import Live

    from toren_action.cli.status import _total
    from toren_action.cli.ui import console as make_console
    from toren_action.jobs import worker

    if args.interval <= 0:
        raise UsageError("--interval", f"{args.interval:g} is not a positive number of seconds")
    console = make_console(highlight=False)
    if not console.is_terminal:  # a pipe or a file: the header and the table again every interval
        from toren_action.cli.ui import status_table

        try:
            while True:
                worker.reap(store) if store.has_unfinished() else None
                jobs = store.list(limit=args.limit, state=args.state, repo=args.repo)
                print(header(args), flush=True)
                status_table(jobs, wide=args.wide, total=_total(store, args, jobs))
                sys.stdout.flush()
                time.sleep(args.interval)
        except KeyboardInterrupt:
            return 0
    with Live(console=console, auto_refresh=False, transient=False) as live:
        try:
            while True:
                worker.reap(store) if store.has_unfinished() else None
                jobs = store.list(limit=args.limit, state=args.state, repo=args.repo)
                live.update(frame(jobs, args, console.width, _total(store, args, jobs)), refresh=True)
                time.sleep(args.interval)
        except KeyboardInterrupt:
            return 0


def header(args: Namespace, now: float | None = None) -> str:
    """The line above the table: what is shown, how often, the time of this refresh, how to stop."""
    shown = "toren status" + "".join(f" --{k} {getattr(args, k)}" for k in ("state", "repo") if getattr(args, k))
    clock = time.strftime("%H:%M:%S", time.localtime(now))
    return f"{shown} · every {args.interval:g}s · {clock} · Ctrl-C to quit"


def frame(jobs: list, args: Namespace, width: int, total: int | None = None, now: float | None = None):
    """One refresh of `status --watch` in a terminal: the header, then the table fitted to ``width``."""
    from rich.console import Group
    from rich.text import Text

    from toren_action.cli.ui import status_renderable

    return Group(Text(header(args, now), style="dim", no_wrap=True, overflow="ellipsis"),
                 status_renderable(jobs, wide=args.wide, total=total, now=now, width=width))
