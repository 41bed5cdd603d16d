"""`toren run` of a race (--attempts, --agents), `toren race ID` (the table, --json, --watch, --pick N) and
`toren race --from-artifacts DIR` (a race over a runner fleet), `toren cancel RACE`. See docs/race.md."""

from __future__ import annotations

import sys
import time
from argparse import Namespace
from pathlib import Path
from typing import Any

from toren_action.cli.ui import print_json
from toren_action.config.settings import Settings
from toren_action.core.errors import Interrupted, NoWinner, UsageError
from toren_action.core.paths import toren_home
from toren_action.core.states import RaceState
from toren_action.core.texts import terminal
from toren_action.job import choose
from toren_action.jobs import race as races
from toren_action.jobs.store import Store


def run_race(args: Namespace, settings: Settings) -> int:
    """`toren run --attempts/--agents`: submit the race; in the background print its id, else wait, showing each
    attempt's row as it ends, then the table and the choice."""
    from toren_action.job import race

    submitted = race.submit_race(settings, say=lambda line: print(f"toren: {line}", file=sys.stderr))
    rid = submitted.race_id
    if not args.disable_daemon:
        if args.json:
            print_json({"race_id": rid, "state": RaceState.RUNNING, "job_ids": list(submitted.job_ids)})
        else:
            print(rid)
            print(f"toren: race {rid} of {len(submitted.job_ids)} attempt(s) started in the background; watch it "
                  f"with `toren race {rid} --watch`", file=sys.stderr)
        return 0
    def on_end(a: choose.Attempt) -> None:
        if not args.json:
            print(terminal("toren: attempt " + " | ".join(choose.cells(a))), file=sys.stderr, flush=True)

    try:
        r = race.wait_for_race(submitted, on_end)
    except KeyboardInterrupt:
        race.cancel_race(submitted.store, submitted.home, races.get_race(submitted.store, rid), 30.0)
        raise Interrupted("interrupted; the race's attempts were stopped and the race marked cancelled") from None
    return show(submitted.store, r, args.json)


def race_json(store: Store, r: races.Race) -> dict[str, Any]:
    from toren_action.job import race

    attempts = race.race_attempts(store, r)
    return {"race_id": r.id, "state": r.state, "repo": r.repo, "branch": r.branch, "base_commit": r.base_commit,
            "budget_usd": r.budget_usd, "spent_usd": races.spent(store, r.id), "winner": r.winner,
            "pr_url": r.pr_url, "choice": r.choice, "error": r.error, "counters": r.counters,
            "first_verified": r.first_verified, "keep_attempts": r.keep_attempts,
            "attempts": [choose.row(a) for a in attempts]}


def render(store: Store, r: races.Race):
    """The race's rich table, its title the state, its caption the choice."""
    from rich.table import Table

    from toren_action.job import race

    attempts = race.race_attempts(store, r)
    spent = races.spent(store, r.id)
    budget = f", ${spent:.4f} of ${r.budget_usd:g}" if r.budget_usd else f", ${spent:.4f} spent" if spent else ""
    table = Table(title=f"race {r.id}: {r.state}{budget}", title_justify="left")
    for col in choose.COLUMNS:
        table.add_column(col, justify="right" if col in ("#", "fixed", "broken", "turns", "cost", "time") else "left")
    for a in attempts:
        cells = [terminal(c) for c in choose.cells(a)]
        if a.number == r.winner:
            cells[0] += " ✔"
        table.add_row(*cells)
    why = (r.choice or {}).get("why")
    if why:
        judge = (r.choice or {}).get("judge")
        table.caption = terminal(("chosen: " if r.winner else "no winner: ") + why
                                 + (f"; judge {choose.judge_line(judge)}" if isinstance(judge, dict) else "")
                                 + (f"; {r.pr_url}" if r.pr_url else ""))
        table.caption_justify = "left"
    return table


def show(store: Store, r: races.Race, as_json: bool) -> int:
    if as_json:
        print_json(race_json(store, r))
    else:
        from rich.console import Console

        Console(highlight=False, emoji=False).print(render(store, r))
    if r.state is RaceState.NO_WINNER:
        return NoWinner.exit_code
    return r.state.exit_code or 0


def cmd_race(args: Namespace) -> int:
    if args.from_artifacts:
        return _from_artifacts(args)
    home = toren_home()
    store = Store(home)
    if not args.race:
        if args.pick is not None or args.force or args.watch:
            raise UsageError("race", "name the race: `toren race ID --pick N`")
        return _list(store, args.json)
    r = races.find_race(store, args.race)
    if r is None:
        raise UsageError("race", f"no race starts with {args.race!r}")
    if args.force and args.pick is None:
        raise UsageError("--force", "--force goes with --pick N")
    if args.pick is not None:
        return _pick(store, home, r, args)
    if args.watch and not args.json:
        return _watch(store, r.id, args.interval)
    store.reap_lost()
    return show(store, races.get_race(store, r.id), args.json)


def _list(store: Store, as_json: bool) -> int:
    """`toren race`: the recent races, newest first."""
    found = races.list_races(store)
    rows = [{"race_id": r.id, "state": r.state, "attempts": len(races.attempts(store, r.id)), "winner": r.winner,
             "branch": r.branch, "pr_url": r.pr_url, "created_at": r.created_at} for r in found]
    if as_json:
        print_json(rows)
        return 0
    if not rows:
        print("no races; `toren run --attempts N` starts one")
        return 0
    for row in rows:
        winner = f"attempt {row['winner']}" if row["winner"] else "-"
        print(terminal(f"{row['race_id']}  {row['state']:<9}  {row['attempts']:>2} attempt(s)  winner {winner:<10}  "
                       f"{row['branch']}  {row['pr_url'] or ''}").rstrip())
    return 0


def _watch(store: Store, rid: str, interval: float) -> int:
    from rich.console import Console
    from rich.live import Live

    if interval <= 0:
        raise UsageError("--interval", f"{interval:g} is not a positive number of seconds")
    console = Console(highlight=False, emoji=False)
    with Live(console=console, auto_refresh=False, transient=False) as live:
        try:
            while True:
                store.reap_lost()
                r = races.get_race(store, rid)
                live.update(render(store, r), refresh=True)
                if r.state.final:
                    return NoWinner.exit_code if r.state is RaceState.NO_WINNER else r.state.exit_code or 0
                time.sleep(interval)
        except KeyboardInterrupt:
            return 0


def _pick(store: Store, home: Path, r: races.Race, args: Namespace) -> int:
    import dataclasses

    from toren_action.config.settings import settings_from_record
    from toren_action.job import race

    if not r.state.final:
        raise UsageError("--pick", f"race {r.id} is still {r.state}; pick once it has ended (`toren race {r.id} "
                                   "--watch`)")
    settings = dataclasses.replace(settings_from_record(r.inputs), no_pr=bool(r.inputs.get("no_pr")))
    attempts = race.race_attempts(store, r)
    try:
        choose.pick(attempts, args.pick, args.force)  # refused before any check talks to GitHub
    except ValueError as exc:
        raise UsageError("--pick", str(exc)) from None
    plan = race.delivery_plan(settings)
    url = race.pick(store, home, r, args.pick, args.force, plan)
    print(f"picked attempt {args.pick} of race {r.id}" + (f": {url}" if url else ""))
    return 0


def _from_artifacts(args: Namespace) -> int:
    from toren_action.job import race

    flags = {"repo": args.repo, "spec": args.spec, "issue": args.issue, "no_pr": args.no_pr or None,
             "draft": args.draft or None}
    settings = Settings.load(flags, config_file=args.config)
    attempts, choice, url = race.from_artifacts(Path(args.from_artifacts), settings, args.keep_attempts)
    if args.json:
        print_json({"winner": choice.winner, "choice": choice.to_dict(), "pr_url": url,
                    "attempts": [choose.row(a) for a in attempts]})
    else:
        print(terminal(choose.markdown_table(attempts, choice)))
        if url:
            print(f"pull request: {url}")
    return 0 if choice.winner else NoWinner.exit_code


def cancel_race(store: Store, home: Path, r: races.Race, wait: float) -> int:
    """`toren cancel RACE`: every attempt stopped (a queued one never starts), the race ended cancelled."""
    from toren_action.job import race

    if r.state.final:
        print(f"race {r.id} already ended: {r.state}")
        return 0 if r.state is RaceState.CANCELLED else 1
    stopped = race.cancel_race(store, home, r, wait)
    print(f"cancelled race {r.id}: {len(stopped)} attempt(s) stopped")
    return 0
