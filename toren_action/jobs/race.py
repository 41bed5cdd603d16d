"""A race's record in the store: the ``races`` row and its attempts, which are ordinary jobs linked to it by
``jobs.race_id`` and numbered by ``jobs.attempt`` (so `status`, `logs`, `cancel`, `summary` and `cleanup` work on
each). The worker runs the attempts like any queued job, at most TOREN_MAX_JOBS at a time. When the last one
ends (or, with --first-verified, the first verified one), one process claims the choice (``running`` ->
``choosing``, a single UPDATE: of the processes that try, exactly one wins) and ends the race. See docs/race.md.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from toren_action.core.errors import JobNotFound
from toren_action.core.states import FINAL_STATES, RaceState
from toren_action.jobs.store import _CROCKFORD, Job, Store, _job

#: Most attempts in one race (--attempts times the agents).
MAX_ATTEMPTS = 16


@dataclass
class Race:
    id: str
    created_at: float
    updated_at: float
    state: RaceState
    repo: str
    branch: str
    base_commit: str | None
    budget_usd: float | None
    first_verified: bool
    keep_attempts: bool
    winner: int | None
    pr_url: str | None
    choice: dict[str, Any] | None
    error: str | None
    counters: dict[str, int]
    comment_id: int | None
    cancel_requested_at: float | None
    finished_at: float | None
    inputs: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _race(row) -> Race:
    data = dict(row)
    data["state"] = RaceState(data["state"])
    data["first_verified"], data["keep_attempts"] = bool(data["first_verified"]), bool(data["keep_attempts"])
    data["choice"] = json.loads(data["choice"]) if data["choice"] else None
    data["counters"] = json.loads(data["counters"] or "{}")
    data["inputs"] = json.loads(data["inputs"] or "{}")
    return Race(**data)


def create_race(store: Store, *, race_id: str, repo: str, branch: str, base_commit: str | None,
                budget_usd: float | None, first_verified: bool, keep_attempts: bool, inputs: dict[str, Any],
                counters: dict[str, int]) -> None:
    now = time.time()
    with store._tx() as conn:
        conn.execute("INSERT INTO races (id, created_at, updated_at, state, repo, branch, base_commit, budget_usd, "
                     "first_verified, keep_attempts, counters, inputs) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                     (race_id, now, now, RaceState.RUNNING, repo, branch, base_commit, budget_usd,
                      int(first_verified), int(keep_attempts), json.dumps(counters),
                      json.dumps(inputs, sort_keys=True)))


def get_race(store: Store, race_id: str) -> Race:
    row = store._conn.execute("SELECT * FROM races WHERE id = ?", (race_id,)).fetchone()
    if row is None:
        raise JobNotFound(f"no race {race_id!r}; `toren status` lists the jobs (a race's attempts show its id)")
    return _race(row)


def find_race(store: Store, prefix: str) -> Race | None:
    """A race by full id or unambiguous prefix; None when no race starts with it (it may be a job's)."""
    prefix = prefix.strip().lower()
    if not prefix or any(c not in _CROCKFORD for c in prefix):
        return None
    rows = store._conn.execute("SELECT * FROM races WHERE id >= ? AND id < ? ORDER BY id LIMIT 2",
                               (prefix, prefix + "~")).fetchall()
    if not rows:
        return None
    if len(rows) > 1 and rows[0]["id"] != prefix:
        raise JobNotFound(f"{prefix!r} matches several races; give more characters of the id")
    return _race(rows[0])


def job_matches(store: Store, prefix: str) -> bool:
    """Whether some job's id starts with ``prefix`` (which then does not name a race alone)."""
    prefix = prefix.strip().lower()
    return store._conn.execute("SELECT 1 FROM jobs WHERE id >= ? AND id < ? LIMIT 1",
                               (prefix, prefix + "~")).fetchone() is not None


def list_races(store: Store, limit: int = 50) -> list[Race]:
    return [_race(r) for r in store._conn.execute("SELECT * FROM races ORDER BY id DESC LIMIT ?", (int(limit),))]


def attempts(store: Store, race_id: str) -> list[Job]:
    """The race's attempts, by number."""
    rows = store._conn.execute("SELECT * FROM jobs WHERE race_id = ? ORDER BY attempt", (race_id,)).fetchall()
    return [_job(r) for r in rows]


def spent(store: Store, race_id: str) -> float:
    """What the race has cost so far: each attempt's cost as last recorded, and the judge's (--judge) once it was
    asked (``choice.judge.cost_usd``)."""
    row = store._conn.execute("SELECT COALESCE(SUM(cost_usd), 0) FROM jobs WHERE race_id = ?", (race_id,)).fetchone()
    return float(row[0]) + judge_cost(store, race_id)


def judge_cost(store: Store, race_id: str) -> float:
    """What asking the judge cost (0 when it was not asked or no price is known)."""
    row = store._conn.execute("SELECT choice FROM races WHERE id = ?", (race_id,)).fetchone()
    try:
        judge = (json.loads(row[0]) if row and row[0] else {}).get("judge") or {}
    except (ValueError, AttributeError):
        return 0.0
    cost = judge.get("cost_usd") if isinstance(judge, dict) else None
    return float(cost) if isinstance(cost, (int, float)) and not isinstance(cost, bool) and cost >= 0 else 0.0


def all_ended(store: Store, race_id: str) -> bool:
    placeholders = ",".join("?" * len(FINAL_STATES))
    row = store._conn.execute(f"SELECT COUNT(*) FROM jobs WHERE race_id = ? AND state NOT IN ({placeholders})",  # noqa: S608  # nosec B608: placeholders only
                              (race_id, *FINAL_STATES)).fetchone()
    return row[0] == 0


def claim(store: Store, race_id: str, *, when_all_ended: bool = True) -> bool:
    """Move the race from running to choosing, in one statement: True for exactly one of the processes that try.
    ``when_all_ended``: only once every attempt has ended (False: --first-verified, the others are then stopped)."""
    placeholders = ",".join("?" * len(FINAL_STATES))
    sql = "UPDATE races SET state = ?, updated_at = ? WHERE id = ? AND state = ?"
    args: tuple = (RaceState.CHOOSING, time.time(), race_id, RaceState.RUNNING)
    if when_all_ended:
        sql += f" AND NOT EXISTS (SELECT 1 FROM jobs WHERE race_id = ? AND state NOT IN ({placeholders}))"  # noqa: S608  # nosec B608: placeholders only
        args += (race_id, *FINAL_STATES)
    with store._tx() as conn:
        return conn.execute(sql, args).rowcount == 1


def update_race(store: Store, race_id: str, **fields: Any) -> None:
    for key in ("choice", "counters"):
        if key in fields and not isinstance(fields[key], str) and fields[key] is not None:
            fields[key] = json.dumps(fields[key])
    if "state" in fields and RaceState(fields["state"]).final:
        fields.setdefault("finished_at", time.time())
    fields["updated_at"] = time.time()
    cols = ", ".join(f"{k} = ?" for k in fields)
    with store._tx() as conn:
        conn.execute(f"UPDATE races SET {cols} WHERE id = ?", (*fields.values(), race_id))  # noqa: S608  # nosec B608: column names from code, values bound


def count(store: Store, race_id: str, name: str, by: int = 1) -> None:
    """Add to one of the race's counters (mirror_fetches, image_builds, ...), which the bench and tests read."""
    with store._tx() as conn:
        row = conn.execute("SELECT counters FROM races WHERE id = ?", (race_id,)).fetchone()
        counters = json.loads(row["counters"] or "{}") if row else {}
        counters[name] = counters.get(name, 0) + by
        conn.execute("UPDATE races SET counters = ? WHERE id = ?", (json.dumps(counters), race_id))


def ended_without_attempts(store: Store) -> list[Race]:
    """Ended races none of whose attempts is left in the store (`cleanup --logs` removed them)."""
    finals = [s.value for s in RaceState if s.final]
    rows = store._conn.execute(
        f"SELECT * FROM races WHERE state IN ({','.join('?' * len(finals))}) AND NOT EXISTS "  # noqa: S608  # nosec B608: placeholders only
        "(SELECT 1 FROM jobs WHERE jobs.race_id = races.id)", finals).fetchall()
    return [_race(r) for r in rows]


def delete_race(store: Store, race_id: str) -> None:
    with store._tx() as conn:
        conn.execute("DELETE FROM races WHERE id = ?", (race_id,))
