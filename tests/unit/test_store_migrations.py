"""The store's migrations: a database made by every earlier version of Toren migrates to the current schema, and
the result is the same schema a new database gets."""

from __future__ import annotations

import sqlite3

import pytest

from toren_action.jobs.store import MIGRATIONS, Store


def schema(path) -> list[tuple]:
    conn = sqlite3.connect(path)
    rows = sorted(conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'"))
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    conn.close()
    return [*rows, ("user_version", version)]


def test_migrations_are_named_steps_with_their_purpose():
    names = [m.__name__ for m in MIGRATIONS]
    assert names == sorted(names) and all(m.__doc__ for m in MIGRATIONS)
    numbers = [int(n[2:5]) for n in names]
    assert numbers == list(range(1, len(MIGRATIONS) + 1))  # numbered 1, 2, 3, ...: none twice, none missing


@pytest.mark.parametrize("version", range(len(MIGRATIONS)))
def test_a_database_from_every_earlier_version_migrates_and_keeps_its_jobs(tmp_path, version):
    fresh = tmp_path / "fresh"
    Store(fresh).close()
    old = tmp_path / "old"
    old.mkdir()
    conn = sqlite3.connect(old / "toren.db")
    for number, migration in enumerate(MIGRATIONS[:version], start=1):
        migration(conn)
        conn.execute(f"PRAGMA user_version = {number}")
    if version:  # a job written by that version
        conn.execute("INSERT INTO jobs (id, created_at, updated_at, state, repo, branch, agent, base_image, inputs) "
                     "VALUES ('01old', 1, 1, 'succeeded', 'r', 'b', 'shell', 'i', '{}')")
    conn.commit()
    conn.close()
    store = Store(old)
    if version:
        assert store.get("01old").state == "succeeded"
    store.create_job(repo="r", branch="b2", agent="shell", model=None, base_image="i", inputs={})
    store.close()
    assert schema(old / "toren.db") == schema(fresh / "toren.db")


def test_a_failing_migration_leaves_the_database_at_its_version(tmp_path, monkeypatch):
    import toren_action.jobs.store as store_module

    home = tmp_path / "h"
    home.mkdir()
    conn = sqlite3.connect(home / "toren.db")
    MIGRATIONS[0](conn)
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()

    def broken(conn):
        """Breaks halfway."""
        conn.execute("ALTER TABLE jobs ADD COLUMN usage TEXT")
        raise sqlite3.OperationalError("boom")

    monkeypatch.setattr(store_module, "MIGRATIONS", (MIGRATIONS[0], broken, *MIGRATIONS[2:]))
    with pytest.raises(sqlite3.OperationalError):
        Store(home)
    conn = sqlite3.connect(home / "toren.db")
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
    assert "usage" not in [r[1] for r in conn.execute("PRAGMA table_info(jobs)")]  # rolled back whole


def test_a_cancel_request_made_before_it_was_a_field_is_kept(tmp_path):
    """Until _m005 a cancel request was only the job's error text; a job asked to stop then still ends cancelled."""
    home = tmp_path / "h"
    home.mkdir()
    conn = sqlite3.connect(home / "toren.db")
    for number, migration in enumerate(MIGRATIONS[:4], start=1):
        migration(conn)
        conn.execute(f"PRAGMA user_version = {number}")
    for job_id, error in (("01asked", "cancel requested (toren cancel)"), ("01other", "the agent exited")):
        conn.execute("INSERT INTO jobs (id, created_at, updated_at, state, repo, branch, agent, base_image, inputs, "
                     "pid, error) VALUES (?, 1, 5, 'running', 'r', 'b', 'shell', 'i', '{}', 999999999, ?)",
                     (job_id, error))
    conn.commit()
    conn.close()
    store = Store(home)
    assert store.get("01asked").cancel_requested_at == 5 and store.get("01other").cancel_requested_at is None
    assert sorted(store.reap_lost()) == ["01asked", "01other"]  # pid 999999999 does not exist
    assert store.get("01asked").state == "cancelled" and store.get("01other").state == "failed"


def test_the_verification_step_can_run_in_either_order_with_the_setup_step(tmp_path):
    """_m007_verification adds its column only when it is missing: a database that got it under another number
    (the two steps of issue 15 were built apart) migrates without an error and keeps its jobs' results."""
    from toren_action.jobs.store import _m007_verification

    store = Store(tmp_path)
    job_id = store.create_job(repo="r", branch="b", agent="shell", model=None, base_image="i", inputs={})
    store.update(job_id, verification={"outcome": "passed", "counts": {"fixed": 1}})
    store.close()
    conn = sqlite3.connect(tmp_path / "toren.db")
    _m007_verification(conn)  # once more
    conn.commit()
    conn.close()
    assert Store(tmp_path).get(job_id).verification == {"outcome": "passed", "counts": {"fixed": 1}}


def test_two_processes_opening_a_new_home_at_once_both_get_the_store(tmp_path):
    """Two `toren run` started together on a fresh TOREN_HOME: switching the new database to WAL is refused at
    once by SQLite ("database is locked", no busy wait) while the other process reads it to decide the same; it
    failed about one start in twenty. Both processes import, say they are ready, wait for one go, open the
    store and write a job; twenty times over, each on a new home."""
    import subprocess
    import sys
    import time

    code = ("import sys\nfrom pathlib import Path\nfrom toren_action.jobs.store import Store\n"
            "Path(sys.argv[2] + '.' + sys.argv[3]).touch()\n"
            "while not Path(sys.argv[2]).exists(): pass\n"
            "Store(Path(sys.argv[1])).create_job(repo='r', branch='b', agent='shell', model=None, base_image='i', "
            "inputs={})\n")
    for trial in range(20):
        home, go = tmp_path / f"home-{trial}", tmp_path / f"go-{trial}"
        procs = [subprocess.Popen([sys.executable, "-c", code, str(home), str(go), str(n)], stderr=subprocess.PIPE,
                                  text=True) for n in range(2)]
        while len(list(tmp_path.glob(f"go-{trial}.*"))) < 2 and all(p.poll() is None for p in procs):
            time.sleep(0.002)
        go.touch()
        errors = [p.communicate(timeout=120)[1] for p in procs]
        assert [p.returncode for p in procs] == [0, 0], (trial, [e[-600:] for e in errors])
        assert len(Store(home).list(limit=None)) == 2
