"""Shared fixtures: an isolated TOREN_HOME, throwaway git repositories, the real Docker engine.

Every test that reaches the ``docker_client`` fixture (itself or through ``workdir``) must carry the ``docker``
marker, so that ``pytest -m "not docker"`` never needs an engine: collection stops with the names of the tests
that do not (see pytest_collection_modifyitems)."""

from __future__ import annotations

import os
import socketserver
import subprocess
from pathlib import Path

import pytest

BASE_IMAGE = os.environ.get("TOREN_TEST_BASE_IMAGE", "toren/base:bookworm")
#: The base image plus python3-pip and python3-venv (scripts/build-python-image.sh), for the fixture project.
PYTHON_IMAGE = os.environ.get("TOREN_TEST_PYTHON_IMAGE", "toren/base-python:bookworm")
#: A tiny real Python library with its own pytest suite (one test fails because of a real bug) and a toren.toml
#: whose [setup] makes a .venv with the test extra: the fixture of the setup and verification tests.
PYPROJ = Path(__file__).resolve().parent / "fixtures" / "pyproj"
#: minicalc's real bug, as its parser holds it, and its fix: a loop whose right side is ``rule`` (parse_term fixes
#: the bug; parse_factor fixes it and breaks precedence, 2 + 3 * 4 stopping at 5).
MINICALC_BUG = """        token = self.peek()
        if token in ("+", "-"):
            self.take()
            right = self.parse_expr()  # bug: recursing here makes "-" right-associative (10 - 4 - 3 == 9)
            return left + right if token == "+" else left - right
        return left"""


def minicalc_fix(rule: str = "parse_term") -> str:
    return f"""        while self.peek() in ("+", "-"):
            token = self.take()
            right = self.{rule}()
            left = left + right if token == "+" else left - right
        return left"""
#: The fixture project's own tests are not Toren's.
collect_ignore = ["fixtures"]
#: The fixtures that need a running Docker engine; a test that uses one (directly or through another fixture)
#: without the ``docker`` marker is a collection error.
DOCKER_FIXTURES = ("docker_client", "engine")


@pytest.hookimpl(tryfirst=True)  # before -m deselects anything: an unmarked test would slip into "not docker"
def pytest_collection_modifyitems(config, items):
    unmarked = [item.nodeid for item in items
                if set(DOCKER_FIXTURES) & set(getattr(item, "fixturenames", ()))
                and item.get_closest_marker("docker") is None]
    if unmarked:
        raise pytest.UsageError(
            "these tests use Docker (the docker_client or workdir fixture) without the docker marker; add "
            "`pytestmark = pytest.mark.docker` to the module or `@pytest.mark.docker` to the test:\n  "
            + "\n  ".join(unmarked))


@pytest.fixture(scope="session", autouse=True)
def _quick_server_shutdown():
    """Servers in tests (the key and egress proxies, the fake GitHub, upstream stand-ins) notice shutdown()
    within 50 ms instead of socketserver's default 0.5 s poll, which alone made up half of the non-Docker run.
    Only the wait in stop() changes; nothing a test asserts depends on it."""
    original = socketserver.BaseServer.serve_forever

    def serve_forever(self, poll_interval=0.05):
        return original(self, poll_interval)

    socketserver.BaseServer.serve_forever = serve_forever  # type: ignore[method-assign]
    yield
    socketserver.BaseServer.serve_forever = original  # type: ignore[method-assign]


def subprocess_env() -> dict[str, str]:
    """The environment for running `python -m toren_action` in a child process from this checkout."""
    return {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}


def git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


@pytest.fixture
def toren_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "toren-home"
    monkeypatch.setenv("TOREN_HOME", str(home))
    for var in [v for v in os.environ if v.startswith("TOREN_") and v not in ("TOREN_HOME", "TOREN_TEST_BASE_IMAGE",
                                                                                  "TOREN_CACHE_DIR")]:
        monkeypatch.delenv(var)
    monkeypatch.setenv("TOREN_WORKER_IDLE_S", "2")  # a worker a test started leaves soon after
    yield home
    _stop_worker(home)


def _stop_worker(home: Path) -> None:
    """A worker this test left running (a failed test): stop it; its jobs end and remove their containers."""
    import json
    import signal
    import sqlite3
    import time

    db = home / "toren.db"
    if not db.exists():
        return
    try:
        row = sqlite3.connect(db).execute("SELECT value FROM meta WHERE key = 'worker'").fetchone()
    except sqlite3.Error:
        return
    if not row:
        return
    pid = json.loads(row[0])["pid"]
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A user's checkout: one commit on main with src/a.py, plus an uncommitted local edit."""
    path = tmp_path / "myproject"
    (path / "src").mkdir(parents=True)
    (path / "src" / "a.py").write_text("def old_name():\n    return 1\n\nprint(old_name())\n")
    (path / "src" / "b.py").write_text("from a import old_name\n")
    (path / "README.md").write_text("# myproject\n")
    git("init", "-q", "-b", "main", cwd=path)
    git("add", "-A", cwd=path)
    git("-c", "user.name=User", "-c", "user.email=user@example.invalid", "commit", "-q", "-m", "initial", cwd=path)
    (path / "NOTES.txt").write_text("the user's uncommitted work\n")
    return path


@pytest.fixture
def spec(tmp_path: Path) -> Path:
    path = tmp_path / "task.md"
    path.write_text("# Rename the helper\n\nRename old_name to new_name everywhere.\n")
    return path


@pytest.fixture(scope="session")
def docker_client():
    import docker

    client = docker.from_env()
    client.ping()  # no engine: the test errors (run scripts/setup-docker.sh), it is not skipped
    client.images.get(BASE_IMAGE)  # missing: run scripts/build-base-image.sh
    return client


@pytest.fixture(scope="session")
def engine(docker_client):
    """Toren's own client of the same engine (sandbox/engine.py), for the functions that take one."""
    from toren_action.sandbox import container

    return container.client()


@pytest.fixture
def workdir(tmp_path, repo, spec, toren_home, monkeypatch, docker_client):
    """The user's shell: cwd holds ./myproject and task.md; Docker answers."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(scope="session")
def python_image(docker_client) -> str:
    """The Python-capable test image, built once (about a minute) when missing and kept by tag for later runs."""
    import docker.errors

    try:
        docker_client.images.get(PYTHON_IMAGE)
    except docker.errors.ImageNotFound:
        script = Path(__file__).resolve().parents[1] / "scripts" / "build-python-image.sh"
        subprocess.run([str(script)], check=True,
                       env={**os.environ, "TOREN_PYTHON_IMAGE": PYTHON_IMAGE, "TOREN_BASE_IMAGE": BASE_IMAGE})
    return PYTHON_IMAGE


@pytest.fixture
def pyproj(tmp_path: Path) -> Path:
    """A fresh checkout of the fixture project (tests/fixtures/pyproj): one commit on main, nothing else."""
    import shutil

    path = tmp_path / "pyproj"
    shutil.copytree(PYPROJ, path, ignore=shutil.ignore_patterns("__pycache__", ".venv", "*.egg-info",
                                                                ".pytest_cache"))
    git("init", "-q", "-b", "main", cwd=path)
    git("add", "-A", cwd=path)
    git("-c", "user.name=User", "-c", "user.email=user@example.invalid", "commit", "-q", "-m", "minicalc", cwd=path)
    return path
