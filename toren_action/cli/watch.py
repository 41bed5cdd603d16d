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

    from toren_action.cli.ui import console as make_console
    from toren_action.cli.ui import status_renderable
    from toren_action.jobs import worker

    if args.interval <= 0:
        raise UsageError("--interval", f"{args.interval:g} is not a positive number of seconds")
    console = make_console()
    if not console.is_terminal:  # a pipe or a file: the table again every interval
        from toren_action.cli.ui import status_table

        try:
            while True:
                worker.reap(store) if store.has_unfinished() else None
                status_table(store.list(limit=args.limit, state=args.state, repo=args.repo))
                sys.stdout.flush()
                time.sleep(args.interval)
        except KeyboardInterrupt:
            return 0
    with Live(console=console, auto_refresh=False, transient=False) as live:
        try:
            while True:
                worker.reap(store) if store.has_unfinished() else None
                jobs = store.list(limit=args.limit, state=args.state, repo=args.repo)
                live.update(status_renderable(jobs), refresh=True)
                time.sleep(args.interval)
        except KeyboardInterrupt:
            return 0
