"""The job store: one SQLite database under TOREN_HOME (WAL, busy timeout, numbered migrations).

A job row holds its inputs (secret names, never values), its state and what it produced; the events
table holds every state change with its time, which is what `status`, `logs` and `summary` read.
"""

from __future__ import annotations

import builtins
import fcntl
import json
import os
import secrets
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from toren_action.core.errors import JobNotFound
from toren_action.core.paths import job_dir, remove_tree
from toren_action.core.states import FINAL_STATES, JobState

#: The error a job shows while `toren cancel` waits for it to stop (the request itself is ``cancel_requested_at``).
CANCEL_REQUESTED = "cancel requested (toren cancel)"

def _m001_jobs_and_events(conn: sqlite3.Connection) -> None:
    """Jobs and their events."""
    _statements(conn, """
    CREATE TABLE jobs (
        id TEXT PRIMARY KEY,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        state TEXT NOT NULL,
        repo TEXT NOT NULL,
        branch TEXT NOT NULL,
        agent TEXT NOT NULL,
        model TEXT,
        base_image TEXT NOT NULL,
        image TEXT,
        container_id TEXT,
        base_commit TEXT,
        result_commit TEXT,
        files_changed TEXT,
        diffstat TEXT,
        exit_code INTEGER,
        error TEXT,
        cost_usd REAL,
        turns INTEGER,
        started_at REAL,
        finished_at REAL,
        pid INTEGER,
        inputs TEXT NOT NULL
    );
    CREATE INDEX jobs_created ON jobs(created_at);
    CREATE INDEX jobs_state ON jobs(state);
    CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
        ts REAL NOT NULL,
        kind TEXT NOT NULL,
        data TEXT
    );
    CREATE INDEX events_job ON events(job_id, id)
    """)


def _statements(conn: sqlite3.Connection, script: str) -> None:
    """Each statement of ``script`` in the migration's transaction (executescript would commit it first)."""
    for statement in filter(str.strip, script.split(";")):
        conn.execute(statement)


def _m002_usage_and_cost_source(conn: sqlite3.Connection) -> None:
    """What the agent used: tokens, tool calls, errors (JSON) and where the cost figure came from."""
    conn.execute("ALTER TABLE jobs ADD COLUMN usage TEXT")
    conn.execute("ALTER TABLE jobs ADD COLUMN cost_source TEXT")


def _m003_pull_request(conn: sqlite3.Connection) -> None:
    """The pull request a job opened or updated."""
    conn.execute("ALTER TABLE jobs ADD COLUMN pr_url TEXT")


def _m004_heartbeat_meta_summary(conn: sqlite3.Connection) -> None:
    """The job process's heartbeat; the worker's state; the AI summary, cached."""
    conn.execute("ALTER TABLE jobs ADD COLUMN heartbeat_at REAL")
    conn.execute("ALTER TABLE jobs ADD COLUMN ai_summary TEXT")
    conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")
    conn.execute("CREATE INDEX jobs_queued ON jobs(state, id)")


def _m005_cancel_requested(conn: sqlite3.Connection) -> None:
    """When `toren cancel` asked a running job to stop: whoever ends it from then on ends it cancelled. (Until
    then the request was only the job's error text: a request made before this step is kept.)"""
    conn.execute("ALTER TABLE jobs ADD COLUMN cancel_requested_at REAL")
    conn.execute("UPDATE jobs SET cancel_requested_at = updated_at WHERE error LIKE 'cancel requested%'")


def _m006_setup(conn: sqlite3.Connection) -> None:
    """The job's setup (job/setup.py), as JSON: whether the prepared environment was reused ("hit"), made
    ("miss"), made without the cache ("off") or there was no setup ("none"); its key, image and duration."""
    conn.execute("ALTER TABLE jobs ADD COLUMN setup TEXT")


def _m007_verification(conn: sqlite3.Connection) -> None:
    """The verification's results (JSON: outcome, counts, the tests fixed, broken and still failing, the baseline,
    each round). Numbered 7 after _m006_setup (issue 15's setup); it adds its column only when missing, so either
    order of the two steps leaves the same schema."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(jobs)")}
    if "verification" not in columns:
        conn.execute("ALTER TABLE jobs ADD COLUMN verification TEXT")


def _m008_pull_request_round(conn: sqlite3.Connection) -> None:
    """A review round (`toren run --pr`): the pull request's number, the round, and the job of the round before
    (its session is continued when this host ran it)."""
    conn.execute("ALTER TABLE jobs ADD COLUMN pr_number INTEGER")
    conn.execute("ALTER TABLE jobs ADD COLUMN round INTEGER")
    conn.execute("ALTER TABLE jobs ADD COLUMN parent_job TEXT")
    conn.execute("CREATE INDEX jobs_pull ON jobs(repo, pr_number)")


def _m009_races(conn: sqlite3.Connection) -> None:
    """Races: several attempts (ordinary jobs, linked by race_id and numbered by attempt) on one task, and the
    choice among them."""
    _statements(conn, """
    CREATE TABLE races (
        id TEXT PRIMARY KEY,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        state TEXT NOT NULL,
        repo TEXT NOT NULL,
        branch TEXT NOT NULL,
        base_commit TEXT,
        budget_usd REAL,
        first_verified INTEGER NOT NULL DEFAULT 0,
        keep_attempts INTEGER NOT NULL DEFAULT 0,
        winner INTEGER,
        pr_url TEXT,
        choice TEXT,
        error TEXT,
        counters TEXT,
        comment_id INTEGER,
        cancel_requested_at REAL,
        finished_at REAL,
        inputs TEXT NOT NULL
    );
    ALTER TABLE jobs ADD COLUMN race_id TEXT;
    ALTER TABLE jobs ADD COLUMN attempt INTEGER;
    CREATE INDEX jobs_race ON jobs(race_id, attempt)
    """)


#: The schema's history, oldest first: a database at version N (PRAGMA user_version) runs MIGRATIONS[N:].
#: Add a new step at the end; never edit or reorder one that has shipped.
MIGRATIONS: tuple[Callable[[sqlite3.Connection], None], ...] = (
    _m001_jobs_and_events,
    _m002_usage_and_cost_source,
    _m003_pull_request,
    _m004_heartbeat_meta_summary,
    _m005_cancel_requested,
    _m006_setup,
    _m007_verification,
    _m008_pull_request_round,
    _m009_races,
)
#: A job whose process has not beaten for this long is lost, even if a process with its pid exists (reused).
HEARTBEAT_TIMEOUT_S = 120.0

_CROCKFORD = "0123456789abcdefghjkmnpqrstvwxyz"
#: How many jobs an ambiguous id prefix names.
MAX_CANDIDATES = 5


def new_job_id(now: float | None = None) -> str:
    """14 characters, lexically sortable by creation time: 10 of milliseconds, 4 random."""
    ms = int((time.time() if now is None else now) * 1000)
    head = "".join(_CROCKFORD[(ms >> (5 * i)) & 31] for i in reversed(range(10)))
    rand = secrets.randbits(20)
    tail = "".join(_CROCKFORD[(rand >> (5 * i)) & 31] for i in reversed(range(4)))
    return head + tail


@dataclass
class Job:
    id: str
    created_at: float
    updated_at: float
    state: JobState
    repo: str
    branch: str
    agent: str
    model: str | None
    base_image: str
    image: str | None
    container_id: str | None
    base_commit: str | None
    result_commit: str | None
    files_changed: list[str]
    diffstat: str | None
    exit_code: int | None
    error: str | None
    cost_usd: float | None
    turns: int | None
    started_at: float | None
    finished_at: float | None
    pid: int | None
    inputs: dict[str, Any]
    usage: dict[str, Any] | None = None
    cost_source: str | None = None
    pr_url: str | None = None
    heartbeat_at: float | None = None
    ai_summary: str | None = None
    cancel_requested_at: float | None = None
    verification: dict[str, Any] | None = None
    #: The setup's record (job/setup.py): {"cache": "hit"|"miss"|"off"|"none", "key", "image", "duration_s"}
    setup: dict[str, Any] | None = None
    pr_number: int | None = None
    round: int | None = None
    parent_job: str | None = None
    race_id: str | None = None  # the race this job is an attempt of (jobs/race.py)
    attempt: int | None = None  # its number in the race, from 1

    @property
    def duration(self) -> float | None:
        if self.started_at is None:
            return None
        return (self.finished_at or time.time()) - self.started_at

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "duration_s": self.duration}


def _where(state: str | None, repo: str | None) -> tuple[str, builtins.list[str]]:
    """The WHERE clause of ``Store.list`` and ``Store.count`` (values bound, never formatted in)."""
    where, args = [], []
    if state:
        where.append("state = ?")
        args.append(state)
    if repo:
        where.append("repo LIKE ?")
        args.append(f"%{repo}%")
    return (" WHERE " + " AND ".join(where) if where else ""), args


class Store:
    def __init__(self, home: Path) -> None:
        self.path = home / "toren.db"
        try:
            home.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._open(home)
        except (OSError, sqlite3.Error) as exc:  # a read-only or broken TOREN_HOME: one line, exit 23
            from toren_action.core.paths import home_unusable

            raise home_unusable(home, exc) from None
        self._migrate()

    def _open(self, home: Path) -> None:
        # Created 0600 before SQLite opens it: SQLite gives the -wal and -shm files (which hold job inputs) the
        # database's mode. Files an older Toren left readable are tightened.
        os.close(os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600))
        for path in (self.path, home / "toren.db-wal", home / "toren.db-shm"):
            try:
                if os.lstat(path).st_mode & 0o077:
                    os.chmod(path, 0o600)
            except FileNotFoundError:
                pass
        self._conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        self._conn.row_factory = sqlite3.Row
        self._conn.execute("PRAGMA busy_timeout = 30000")
        self._conn.execute("PRAGMA foreign_keys = ON")
        # Switching a new database to WAL needs it to itself, and SQLite refuses the switch at once ("database is
        # locked": no busy wait) while another process reads it to decide the same. Two `toren run` started
        # together on a new TOREN_HOME did: the check and the switch are one process's at a time.
        fd = os.open(home / "toren.db.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if self._conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                self._conn.execute("PRAGMA journal_mode = WAL")
        finally:
            os.close(fd)

    def close(self) -> None:
        self._conn.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield self._conn
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    def _migrate(self) -> None:
        with self._tx() as conn:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            for number, migration in enumerate(MIGRATIONS[version:], start=version + 1):
                migration(conn)
                conn.execute(f"PRAGMA user_version = {number}")

    def create_job(self, *, repo: str, branch: str, agent: str, model: str | None, base_image: str,
                   inputs: dict[str, Any], job_id: str | None = None, race_id: str | None = None,
                   attempt: int | None = None) -> str:
        now = time.time()
        job_id = job_id or new_job_id(now)
        with self._tx() as conn:
            conn.execute(
                "INSERT INTO jobs (id, created_at, updated_at, state, repo, branch, agent, model, base_image, inputs,"
                " race_id, attempt) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (job_id, now, now, JobState.QUEUED, repo, branch, agent, model, base_image,
                 json.dumps(inputs, sort_keys=True), race_id, attempt),
            )
            conn.execute("INSERT INTO events (job_id, ts, kind, data) VALUES (?, ?, 'state', ?)",
                         (job_id, now, json.dumps({"state": JobState.QUEUED})))
        return job_id

    def update(self, job_id: str, **fields: Any) -> None:
        for key in ("files_changed", "usage", "verification", "setup"):
            if key in fields:
                fields[key] = json.dumps(fields[key])
        fields["updated_at"] = time.time()
        cols = ", ".join(f"{k} = ?" for k in fields)
        with self._tx() as conn:
            conn.execute(f"UPDATE jobs SET {cols} WHERE id = ?", (*fields.values(), job_id))  # noqa: S608  # nosec B608: column names from code, values bound

    def set_state(self, job_id: str, state: str, **fields: Any) -> bool:
        """Move a job to ``state`` (a JobState or its value), unless it already ended: an end state is never
        overwritten (a reaper, a cancel and the job itself may race). Returns whether the state changed."""
        state = JobState(state)
        now = time.time()
        if state.final:
            fields.setdefault("finished_at", now)
        for key in ("files_changed", "usage", "verification", "setup"):
            if key in fields:
                fields[key] = json.dumps(fields[key])
        fields.update(state=state, updated_at=now)
        cols = ", ".join(f"{k} = ?" for k in fields)
        placeholders = ",".join("?" * len(FINAL_STATES))
        with self._tx() as conn:
            cur = conn.execute(f"UPDATE jobs SET {cols} WHERE id = ? AND state NOT IN ({placeholders})",  # noqa: S608  # nosec B608: column names from code, values bound
                               (*fields.values(), job_id, *FINAL_STATES))
            if cur.rowcount != 1:
                return False
            conn.execute("INSERT INTO events (job_id, ts, kind, data) VALUES (?, ?, 'state', ?)",
                         (job_id, now, json.dumps({"state": state})))
        return True

    def request_cancel(self, job_id: str) -> None:
        """`toren cancel` asks a running job to stop: from now on, whoever ends it (the job itself, a reaper,
        `toren cancel` again) ends it cancelled."""
        self.update(job_id, cancel_requested_at=time.time(), error=CANCEL_REQUESTED)

    def add_event(self, job_id: str, kind: str, data: dict[str, Any]) -> None:
        with self._tx() as conn:
            conn.execute("INSERT INTO events (job_id, ts, kind, data) VALUES (?, ?, ?, ?)",
                         (job_id, time.time(), kind, json.dumps(data)))

    def add_events(self, job_id: str, events: list[tuple[str, dict[str, Any]]]) -> None:
        now = time.time()
        with self._tx() as conn:
            conn.executemany("INSERT INTO events (job_id, ts, kind, data) VALUES (?, ?, ?, ?)",
                             [(job_id, now, kind, json.dumps(data)) for kind, data in events])

    def events(self, job_id: str) -> list[dict[str, Any]]:
        rows = self._conn.execute("SELECT ts, kind, data FROM events WHERE job_id = ? ORDER BY id", (job_id,))
        return [{"ts": r["ts"], "kind": r["kind"], **json.loads(r["data"] or "{}")} for r in rows]

    def get(self, job_id: str) -> Job:
        row = self._conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise JobNotFound(f"no job {job_id!r}; `toren status` lists the jobs")
        return _job(row)

    def resolve(self, prefix: str) -> Job:
        """A job by full id or unambiguous prefix."""
        prefix = prefix.strip().lower()
        if not prefix or any(c not in _CROCKFORD for c in prefix):
            raise JobNotFound(f"{prefix!r} is not a job id; `toren status` lists the jobs")
        rows = self._conn.execute(
            "SELECT * FROM jobs WHERE id >= ? AND id < ? ORDER BY id LIMIT ?",
            (prefix, prefix + "~", MAX_CANDIDATES + 1)).fetchall()
        if not rows:
            raise JobNotFound(f"no job starts with {prefix!r}; `toren status` lists the jobs")
        if len(rows) > 1 and rows[0]["id"] != prefix:
            shown = [r["id"] for r in rows[:MAX_CANDIDATES]]
            more = " and more" if len(rows) > MAX_CANDIDATES else ""
            raise JobNotFound(f"{prefix!r} matches several jobs ({', '.join(shown)}{more}); give more characters "
                              "of the id")
        return _job(rows[0])

    def list(self, *, limit: int | None = 50, state: str | None = None, repo: str | None = None) -> list[Job]:
        where, args = _where(state, repo)
        sql = "SELECT * FROM jobs" + where + " ORDER BY id DESC"  # noqa: S608  # nosec B608: clauses from code, values bound
        if limit:
            sql += f" LIMIT {int(limit)}"
        return [_job(r) for r in self._conn.execute(sql, args)]

    def count(self, *, state: str | None = None, repo: str | None = None) -> int:
        """How many jobs ``list`` would return without a limit."""
        where, args = _where(state, repo)
        sql = "SELECT COUNT(*) FROM jobs" + where  # noqa: S608  # nosec B608: clauses from code, values bound
        return self._conn.execute(sql, args).fetchone()[0]

    def reap_lost(self, job_id: str | None = None) -> builtins.list[str]:  # `list` here is Store.list
        """Mark failed every unfinished job (or just ``job_id``) whose process is gone (killed, machine rebooted),
        after removing the secret files it left. Returns their ids."""
        lost = []
        placeholders = ",".join("?" * len(FINAL_STATES))
        sql = f"SELECT id, pid FROM jobs WHERE state NOT IN ({placeholders})"  # noqa: S608  # nosec B608: column names from code, values bound
        args: tuple = tuple(FINAL_STATES)
        if job_id:
            sql, args = sql + " AND id = ?", (*args, job_id)
        columns = "SELECT id, pid, heartbeat_at, cancel_requested_at"
        rows = self._conn.execute(sql.replace("SELECT id, pid", columns), args).fetchall()
        now = time.time()
        for row in rows:
            if not row["pid"]:
                continue  # queued, not taken yet
            silent = row["heartbeat_at"] is not None and now - row["heartbeat_at"] > HEARTBEAT_TIMEOUT_S
            if not pid_alive(row["pid"]) or silent:
                # a job killed while its agent ran left its secret files: they go before the end state is written
                remove_tree(job_dir(self.path.parent, row["id"]) / "secrets")
                why = "is gone" if not silent else f"stopped beating {now - row['heartbeat_at']:.0f}s ago"
                if row["cancel_requested_at"] is not None:  # `toren cancel` got there first
                    if self.set_state(row["id"], JobState.CANCELLED, error="cancelled (toren cancel)"):
                        lost.append(row["id"])
                elif self.set_state(row["id"], JobState.FAILED,
                                    error=f"worker lost: its process {row['pid']} {why}"):
                    lost.append(row["id"])
        return lost

    def last_round(self, repo: str, pr_number: int, other_than: str = "") -> Job | None:
        """The newest job on pull request ``pr_number`` of ``repo`` (its origin), ``other_than`` aside: the round
        before the next."""
        row = self._conn.execute("SELECT * FROM jobs WHERE repo = ? AND pr_number = ? AND id != ? ORDER BY "
                                 "created_at DESC, id DESC LIMIT 1", (repo, pr_number, other_than)).fetchone()
        return _job(row) if row else None

    def has_unfinished(self) -> bool:
        placeholders = ",".join("?" * len(FINAL_STATES))
        return self._conn.execute(f"SELECT 1 FROM jobs WHERE state NOT IN ({placeholders}) LIMIT 1",  # noqa: S608  # nosec B608: column names from code, values bound
                                  tuple(FINAL_STATES)).fetchone() is not None

    def queued(self, limit: int) -> builtins.list[Job]:
        """Queued jobs no process has taken yet, oldest first."""
        rows = self._conn.execute("SELECT * FROM jobs WHERE state = ? AND pid IS NULL ORDER BY id LIMIT ?",
                                  (JobState.QUEUED, limit)).fetchall()
        return [_job(r) for r in rows]

    def beat(self, job_id: str) -> bool:
        """The job's process lives: its heartbeat, while the job is unfinished (an ended job's record no longer
        changes). Returns whether the job is still unfinished."""
        placeholders = ",".join("?" * len(FINAL_STATES))
        with self._tx() as conn:
            cur = conn.execute(f"UPDATE jobs SET heartbeat_at = ? WHERE id = ? AND state NOT IN ({placeholders})",  # noqa: S608  # nosec B608: placeholders only
                               (time.time(), job_id, *FINAL_STATES))
            return cur.rowcount == 1

    def set_meta(self, key: str, value: Any) -> None:
        with self._tx() as conn:
            if value is None:
                conn.execute("DELETE FROM meta WHERE key = ?", (key,))
            else:
                conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, json.dumps(value)))

    def get_meta(self, key: str) -> Any:
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return json.loads(row["value"]) if row else None

    def delete(self, job_id: str) -> None:
        with self._tx() as conn:
            conn.execute("DELETE FROM events WHERE job_id = ?", (job_id,))
            conn.execute("DELETE FROM jobs WHERE id = ?", (job_id,))


def pid_alive(pid: int) -> bool:
    """A process with this pid exists and is this user's. A job's process is always the user's own (the worker,
    `toren run` or the Action started it as that user), so a pid that exists but may not be signalled
    (PermissionError: another user's process) was reused: the job's process is gone."""
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


_JOB_FIELDS = frozenset(f.name for f in fields(Job))


def _job(row: sqlite3.Row) -> Job:
    data = {k: v for k, v in dict(row).items() if k in _JOB_FIELDS}  # a column a newer Toren added is ignored
    data["files_changed"] = json.loads(data["files_changed"] or "[]")
    data["inputs"] = json.loads(data["inputs"] or "{}")
    data["usage"] = json.loads(data["usage"]) if data.get("usage") else None
    data["verification"] = json.loads(data["verification"]) if data.get("verification") else None
    data["setup"] = json.loads(data["setup"]) if data.get("setup") else None
    data["state"] = JobState(data["state"])
    return Job(**data)
