"""`toren status`: the jobs in the store, as a table or JSON. It reads the store and never loads the Docker,
GitHub or Anthropic SDKs, nor rich's live display (a contract in pyproject.toml; `--watch` is watch.py)."""

from __future__ import annotations

from argparse import Namespace

from toren_action.cli.ui import print_json
from toren_action.core.paths import toren_home
from toren_action.jobs.store import Store


def cmd_status(args: Namespace) -> int:
    store = Store(toren_home())
    if store.has_unfinished():  # the worker's code only when a job may have been lost
        from toren_action.jobs import worker

        worker.reap(store)
    jobs = store.list(limit=args.limit, state=args.state, repo=args.repo)
    if args.json:
        from toren_action.core.paths import log_path
        from toren_action.jobs.job_json import job_json

        home = toren_home()
        print_json([job_json(j, log_path(home, j.id)) for j in jobs])
    elif not jobs:
        print("no jobs yet; start one with `toren run`")
    else:
        from toren_action.cli.ui import status_table

        status_table(jobs, wide=args.wide, total=_total(store, args, jobs))
    return 0


def _total(store: Store, args: Namespace, jobs: list) -> int | None:
    """How many jobs match when --limit may have hidden some (counted only then)."""
    if args.limit and len(jobs) >= args.limit:
        return store.count(state=args.state, repo=args.repo)
    return None
