"""A newcomer's mistakes (issue 14), the ones that need no Docker engine: each row runs the real `toren` in a
child process and checks the exit code, exactly one line on stderr, no traceback, and that nothing was left
behind (no job record, no job directory, no branch). The rows that need an engine are in
tests/integration/test_newcomer.py."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import git, subprocess_env
from toren_action.jobs.store import Store

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


def toren(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None, stdout=subprocess.PIPE,
          timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "toren_action", *args], env={**subprocess_env(), **(env or {})},
                          cwd=cwd, stdout=stdout, stderr=subprocess.PIPE, text=True, timeout=timeout)


def one_line(proc: subprocess.CompletedProcess) -> str:
    """The one line the command printed on stderr (and no traceback anywhere)."""
    assert "Traceback" not in proc.stderr and "Traceback" not in (proc.stdout or ""), proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("toren: "), lines[0]
    return lines[0]


def no_jobs(home: Path) -> None:
    db = home / "toren.db"
    if db.is_file() and db.stat().st_size:
        assert sqlite3.connect(db).execute("SELECT COUNT(*) FROM jobs").fetchone()[0] == 0
    assert not (home / "jobs").is_dir() or not any((home / "jobs").iterdir())


@pytest.fixture
def env(tmp_path, monkeypatch):
    """A clean environment: TOREN_HOME in tmp_path, no other TOREN_ variable of the caller's."""
    for var in [v for v in os.environ if v.startswith("TOREN_")]:
        monkeypatch.delenv(var)
    home = tmp_path / "toren-home"
    monkeypatch.setenv("TOREN_HOME", str(home))
    return home


@pytest.fixture
def checkout(tmp_path) -> Path:
    path = tmp_path / "proj"
    (path / "src" / "deep").mkdir(parents=True)
    (path / "src" / "deep" / "a.py").write_text("x = 1\n")
    git("init", "-q", "-b", "main", cwd=path)
    git("add", "-A", cwd=path)
    git("-c", "user.name=U", "-c", "user.email=u@example.invalid", "commit", "-q", "-m", "one", cwd=path)
    (tmp_path / "task.md").write_text("# Task\n\nDo it.\n")
    return path


#: A run that never pulls (a regression that let it reach the engine would stop there, not ask a registry).
RUN = ["run", "--spec", "../task.md", "--repo", ".", "--agent", "shell", "--command", "true", "--disable-daemon",
       "--base-image", "toren/base:bookworm", "--pull", "never"]


# -- 1. a TOREN_HOME that cannot hold the state: one line, exit 23, in every command --------------------------

def _home_shapes(tmp: Path) -> dict[str, tuple[Path, str]]:
    (tmp / "a-file").write_text("x")
    (tmp / "bad-db").mkdir()
    (tmp / "bad-db" / "toren.db").write_bytes(b"this is not a database, it is a file of text" * 100)
    (tmp / "db-dir" / "toren.db").mkdir(parents=True)
    return {
        "a-file": (tmp / "a-file", "is a file; point TOREN_HOME at a directory"),
        "under-a-file": (tmp / "a-file" / "sub", "lies under"),
        "proc": (Path("/proc/x"), "point TOREN_HOME at a directory"),
        "not-a-database": (tmp / "bad-db", "cannot use"),
        "database-is-a-directory": (tmp / "db-dir", "cannot use"),
    }


HOME_COMMANDS = [["status"], ["status", "--json"], ["health"], ["logs", "0123"], ["cancel", "0123"],
                 ["summary", "0123"], ["cleanup", "--all"]]


@pytest.mark.parametrize("shape", ["a-file", "under-a-file", "proc", "not-a-database", "database-is-a-directory"])
@pytest.mark.parametrize("command", HOME_COMMANDS, ids=lambda c: " ".join(c))
def test_a_bad_toren_home_is_one_line_and_exit_23(shape, command, tmp_path, env):
    home, words = _home_shapes(tmp_path)[shape]
    before = sorted(p.name for p in tmp_path.iterdir())
    proc = toren(*command, env={"TOREN_HOME": str(home)})
    line = one_line(proc)
    assert proc.returncode == 23, proc.stderr
    assert line.startswith("toren: TOREN_HOME: ") and words in line and str(home) in line, line
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing made next to it
    if shape == "a-file":
        assert line == f"toren: TOREN_HOME: {home} is a file; point TOREN_HOME at a directory"


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"), reason="needs root for a read-only mount")
@pytest.mark.parametrize("command", HOME_COMMANDS[:4], ids=lambda c: " ".join(c))
def test_a_read_only_toren_home_is_one_line_and_exit_23(command, tmp_path):
    home = tmp_path / "ro"
    home.mkdir()
    toren("status", env={"TOREN_HOME": str(home)})  # a database made while it was writable
    script = (f"mount --bind {home} {home} && mount -o remount,ro,bind {home} && exec \"$@\"")
    proc = subprocess.run(["unshare", "-m", "sh", "-c", script, "sh", sys.executable, "-m", "toren_action",
                           *command], env={**subprocess_env(), "TOREN_HOME": str(home)}, capture_output=True,
                          text=True, timeout=60)
    if "mount" in proc.stderr and "toren:" not in proc.stderr:
        pytest.skip(f"no mount namespace here: {proc.stderr.strip()}")
    assert proc.returncode == 23, proc.stderr
    assert one_line(proc) == (f"toren: TOREN_HOME: {home} is on a read-only file system; point TOREN_HOME at a "
                              "directory you can write")


def test_an_unexpected_error_is_one_line_naming_the_traceback_file(tmp_path, env, monkeypatch, capsys):
    from toren_action.cli import commands, main

    def broken(args):
        raise RuntimeError("boom ghp_" + "a" * 36)

    monkeypatch.setattr(commands, "cmd_logs", broken)
    assert main(["logs", "0123"]) == 1
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert out == "" and len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("toren: internal error (RuntimeError); this is a bug in Toren; the full traceback "
                               f"is in {env / 'errors'}/"), lines[0]
    saved = Path(lines[0].rsplit(" ", 1)[1])
    text = saved.read_text()
    assert "Traceback" in text and "RuntimeError: boom" in text and "ghp_" + "a" * 36 not in text  # token masked
    assert saved.stat().st_mode & 0o077 == 0
    # with an unusable TOREN_HOME the traceback goes to the temporary directory instead
    monkeypatch.setenv("TOREN_HOME", str(tmp_path / "a-file"))
    (tmp_path / "a-file").write_text("x")
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)
    assert main(["logs", "0123"]) == 1
    line = capsys.readouterr().err.strip()
    assert f"the full traceback is in {tmp_path / 'tmp'}/traceback-" in line, line


# -- 2. readers of a closed pipe exit quietly ------------------------------------------------------------------

def closed_pipe_run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """`toren ARGS` with stdout a pipe whose reader is already gone (what `| head -1` becomes once head exits)."""
    read, write = os.pipe()
    os.close(read)
    try:
        return toren(*args, env=env, stdout=write)
    finally:
        os.close(write)


@pytest.fixture
def one_job(env) -> str:
    store = Store(env)
    job_id = store.create_job(repo="/somewhere", branch="toren/x", agent="shell", model=None, base_image="img",
                              inputs={})
    store.set_state(job_id, "succeeded")
    log = env / "jobs" / job_id / "job.log"
    log.parent.mkdir(parents=True)
    log.write_text("".join(f"line {i}\n" for i in range(5000)))
    return job_id


READERS = [["status"], ["status", "--json"], ["logs", "{id}"], ["logs", "{id}", "--tail", "10"],
           ["logs", "{id}", "--follow"], ["summary", "{id}"], ["summary", "{id}", "--json"], ["health", "--json"],
           ["cleanup", "--all", "--dry-run"]]


@pytest.mark.parametrize("command", READERS, ids=lambda c: " ".join(c))
def test_a_reader_of_a_closed_pipe_exits_quietly(command, one_job, env):
    proc = closed_pipe_run(*[a.replace("{id}", one_job) for a in command], env={"TOREN_PLAIN": "1"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "", proc.stderr  # no traceback, no "Exception ignored ... BrokenPipeError"


def test_status_watch_into_a_closed_pipe_exits_quietly(one_job, env):
    proc = closed_pipe_run("status", "--watch", "--interval", "0.1", env={})
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr


def test_a_job_log_drops_a_closed_terminal_and_stays_complete(tmp_path):
    """The class fix under `toren run ... | head`: the log carries on when its reporter's pipe is closed."""
    from toren_action.cli.ui import ConsoleReporter
    from toren_action.core.redact import Redactor
    from toren_action.job.log import JobLog

    read, write = os.pipe()
    os.close(read)
    stream = os.fdopen(write, "w")
    log = JobLog(tmp_path / "job.log", Redactor(()), ConsoleReporter(stream=stream), time.monotonic())
    log.stage("running", "agent")
    for i in range(100):
        log.line(f"out {i}")
    log.stage("succeeded", "done")
    log.close()
    text = (tmp_path / "job.log").read_text()
    assert "out 99" in text and "== succeeded: done" in text and "the terminal's output was closed" in text
    try:
        stream.close()
    except BrokenPipeError:
        pass


# -- 3. from a subdirectory, the repository is found as git finds it ---------------------------------------------

def test_the_repository_is_found_from_a_subdirectory(checkout):
    from toren_action.config.validate import repo_spec

    assert repo_spec(".", str(checkout / "src" / "deep")).location == str(checkout)
    assert repo_spec("src", str(checkout)).location == str(checkout)


def test_git_init_is_suggested_only_outside_any_repository(tmp_path, checkout, env):
    (tmp_path / "plain").mkdir()
    line = one_line(toren(*RUN, cwd=tmp_path / "plain"))
    assert "run `git init` there" in line
    proc = toren("run", "--spec", str(tmp_path / "task.md"), "--base-branch", "nosuch", "--pull", "never",
                 "--agent", "shell", "--command", "true", cwd=checkout / "src" / "deep")
    assert "git init" not in proc.stderr and "nosuch" in one_line(proc)  # it got past --repo, to the origin


# -- 4. and 8. what the plan can check, before any job exists -------------------------------------------------

def _empty_repo(tmp_path: Path) -> Path:
    path = tmp_path / "empty"
    path.mkdir()
    git("init", "-q", "-b", "main", cwd=path)
    return path


PLAN_ROWS = [
    # (id, extra args, option named, words)
    ("no-commits", ["--repo", "../empty"], "--repo", "has no commits yet"),
    ("base-branch-missing", ["--base-branch", "nosuch"], "--base-branch", "its branches are main"),
    ("base-branch-head", ["--base-branch", "HEAD"], "--base-branch", "--base-ref HEAD"),
    ("base-branch-refs-other", ["--base-branch", "refs/tags/v1"], "--base-branch", "other than a branch"),
    ("branch-refs-tags", ["--branch", "refs/tags/v1"], "--branch", "other than a branch"),
    ("branch-refs-remotes", ["--branch", "refs/remotes/origin/x"], "--branch", "other than a branch"),
    ("branch-double-slash", ["--branch", "refs/heads/a//b"], "--branch", "'//'"),
    ("branch-lock", ["--branch", "refs/heads/x.lock"], "--branch", ".lock"),
    ("memory-below-minimum", ["--memory", "1m"], "--memory", "Docker's minimum of 6m"),
    ("memory-zero", ["--memory", "0"], "--memory", "Docker's minimum of 6m"),
    ("memory-in-bytes", ["--memory", "6291455b"], "--memory", "Docker's minimum of 6m"),
    ("base-ref-missing", ["--base-ref", "nosuch"], "--base-ref", "is not a commit of"),
    ("base-ref-option", ["--base-ref=--output=/tmp/x"], "--base-ref", "is not a commit of"),
    ("actor-on-local", ["--actor", "octocat"], "--actor", "only a job whose result goes to GitHub"),
    ("shell-model", ["--model", "claude-sonnet-4-5"], "--model", "uses no model"),
    ("shell-max-turns", ["--max-turns", "3"], "--max-turns", "uses no model"),
    ("shell-max-cost", ["--max-cost-usd", "1"], "--max-cost-usd", "uses no model"),
    ("shell-allowed-tools", ["--allowed-tools", "Read"], "--allowed-tools", "uses no model"),
    ("shell-append-prompt", ["--append-system-prompt", "be brief"], "--append-system-prompt", "uses no model"),
]


@pytest.mark.parametrize("extra,option,words", [r[1:] for r in PLAN_ROWS], ids=[r[0] for r in PLAN_ROWS])
def test_what_the_plan_can_check_is_refused_before_the_job_exists(extra, option, words, tmp_path, checkout, env):
    _empty_repo(tmp_path)
    proc = toren(*RUN, *extra, cwd=checkout)
    line = one_line(proc)
    assert proc.returncode == 2, proc.stderr
    assert line.startswith(f"toren: {option}: ") and words in line, line
    no_jobs(env)
    assert git("branch", "--list", cwd=checkout).split() == ["*", "main"]


def test_shell_options_from_a_settings_file_are_only_warned_about(tmp_path, checkout, env):
    """A toren.toml written for the CLI agents may set a model: the shell agent then warns, it does not refuse
    (the job gets as far as the engine: without one here it stops there, after the warning's plan)."""
    from toren_action.config.settings import Settings
    from toren_action.job.plan import make_plan

    (checkout / "toren.toml").write_text('model = "claude-sonnet-4-5"\nmax_turns = 5\n')
    git("add", "-A", cwd=checkout)
    git("-c", "user.name=U", "-c", "user.email=u@example.invalid", "commit", "-q", "-m", "toml", cwd=checkout)
    s = Settings.load({"spec": "../task.md", "agent": "shell", "command": "true"}, environ={}, cwd=str(checkout))
    plan = make_plan(s, "01abc", environ={"HOME": str(tmp_path)}, cwd=str(checkout))
    assert [w for w in plan.warnings if "toren.toml: model is ignored" in w], plan.warnings
    assert [w for w in plan.warnings if "toren.toml: max_turns is ignored" in w], plan.warnings


def test_refs_heads_is_understood(tmp_path, checkout):
    from toren_action.config.settings import Settings
    from toren_action.job.plan import make_plan

    s = Settings.load({"spec": "../task.md", "agent": "shell", "command": "true", "branch": "refs/heads/feat/x",
                       "base_branch": "refs/heads/main"}, environ={}, cwd=str(checkout))
    plan = make_plan(s, "01abc", environ={"HOME": str(tmp_path)}, cwd=str(checkout))
    assert plan.branch == "feat/x" and plan.base_branch == "main" and plan.settings.base_branch == "main"


def test_the_origin_is_read_once_and_the_engine_not_at_all_without_network_or_gpus(tmp_path, checkout,
                                                                                    monkeypatch):
    """The fast path: one `git ls-remote` for the branch checks, and check_engine asks the engine nothing unless
    --network names a network or --gpus is given."""
    from toren_action.config.settings import Settings
    from toren_action.git import workspace
    from toren_action.job.plan import check_engine, make_plan

    calls = []
    real = workspace.git

    def counting(*args, **kw):
        calls.append(args[0])
        return real(*args, **kw)

    monkeypatch.setattr(workspace, "git", counting)
    s = Settings.load({"spec": "../task.md", "agent": "shell", "command": "true"}, environ={}, cwd=str(checkout))
    plan = make_plan(s, "01abc", environ={"HOME": str(tmp_path)}, cwd=str(checkout))
    assert calls.count("ls-remote") == 1

    class NoEngine:
        def __getattr__(self, name):
            raise AssertionError(f"the engine was asked ({name}) though neither --network nor --gpus was given")

    check_engine(plan, NoEngine())
    bridge = make_plan(Settings.load({"spec": "../task.md", "agent": "shell", "command": "true", "network": "bridge"},
                                     environ={}, cwd=str(checkout)), "01abd", environ={"HOME": str(tmp_path)},
                       cwd=str(checkout))
    check_engine(bridge, NoEngine())


# -- 5. nothing accepted silently ----------------------------------------------------------------------------

VARIABLE_ROWS = [
    ("TOREN_TIMEOUT", "5", "did you mean TOREN_TIMEOUT_MINUTES?"),
    ("TOREN_AGNET", "claude", "did you mean TOREN_AGENT?"),
    ("TOREN_BRANCHES", "x", "did you mean TOREN_BRANCH?"),
    ("TOREN_MAXTURNS", "3", "did you mean TOREN_MAX_TURNS?"),
    ("TOREN_SECRET", "A", "did you mean TOREN_SECRETS?"),
    ("TOREN_VOLUME", "/a:/b", "did you mean TOREN_VOLUMES?"),
    ("TOREN_HOMEDIR", "/x", "did you mean TOREN_HOME?"),
    ("TOREN_QQQQQQQQ", "1", "unset it"),
    ("TOREN_ENV", "A=b", "env is not read from a variable"),
    ("TOREN_PRICES", "{}", "prices is not read from a variable"),
]


@pytest.mark.parametrize("var,value,words", VARIABLE_ROWS, ids=[r[0] for r in VARIABLE_ROWS])
def test_an_unknown_toren_variable_is_refused_naming_the_closest(var, value, words, checkout, env):
    proc = toren(*RUN, env={var: value}, cwd=checkout)
    line = one_line(proc)
    assert proc.returncode == 2 and line.startswith(f"toren: {var}: ") and words in line, line
    no_jobs(env)


def test_every_toren_variable_the_code_reads_is_declared():
    """The allow-list is the code's: every TOREN_ name in the package is a setting's variable or listed in
    OTHER_VARIABLES or the test suite's (or is no variable: a file or a placeholder)."""
    import re

    from toren_action.config.settings import OTHER_VARIABLES, SETTINGS

    root = Path(__file__).resolve().parents[2]
    sources = [p.read_text("utf-8") for p in (root / "toren_action").rglob("*.py")]
    sources += [p.read_text("utf-8") for p in (root / "scripts").glob("*.sh")]
    sources += [(root / "action.yml").read_text("utf-8"), (root / "Makefile").read_text("utf-8")]
    named = {v for v in re.findall(r"\bTOREN_[A-Z][A-Z0-9_]*[A-Z0-9]\b", "\n".join(sources))
             if not v.startswith("TOREN_TEST_")}
    not_variables = {"TOREN_DIR", "TOREN_PROMPT", "TOREN_COMMIT_MSG"}  # a directory name, a placeholder, a file
    settings_vars = {"TOREN_" + k.upper() for k in SETTINGS}
    assert named - settings_vars - set(OTHER_VARIABLES) - not_variables == set()


def test_the_allowed_variables_pass(checkout, env):
    proc = toren(*RUN, "--base-branch", "nosuch", env={"TOREN_MAX_JOBS": "2", "TOREN_WORKER_IDLE_S": "1",
                                                        "TOREN_TEST_ANYTHING": "1", "TOREN_TIMEOUT_MINUTES": "5"},
                 cwd=checkout)
    assert "nosuch" in one_line(proc)  # past the variables' check


USAGE_ROWS = [
    ("logs-tail", ["logs", "0123", "--tail", "-3"], "--tail", "negative"),
    ("status-limit", ["status", "--limit", "-1"], "--limit", "negative"),
    ("status-interval", ["status", "--interval", "-1"], "--interval", "negative"),
    ("status-watch-interval", ["status", "--watch", "--interval", "-0.5"], "--interval", "negative"),
    ("cancel-wait", ["cancel", "0123", "--wait", "-5"], "--wait", "negative"),
    ("cancel-wait-nan", ["cancel", "0123", "--wait", "nan"], "--wait", "finite"),
    ("run-max-turns", [*RUN, "--max-turns", "-1"], "--max-turns", "-1 must be at least 1"),
    ("run-pids", [*RUN, "--pids-limit", "-16"], "--pids-limit", "-16 must be at least 16"),
    ("run-timeout", [*RUN, "--timeout", "-5"], "--timeout", "-5 must be greater than 0"),
    ("run-max-file", [*RUN, "--max-file-mb", "-1"], "--max-file-mb", "-1 must be greater than 0"),
    ("run-max-file-inf", [*RUN, "--max-file-mb", "inf"], "--max-file-mb", "finite"),
    ("status-state", ["status", "--state", "bogus"], "--state", "queued"),
    ("scan-allow-policy", ["scan", "--staged", "--allow-policy", "bogus"], "--allow-policy", "secret-pattern"),
    ("scan-allow-secret-value", ["scan", "--staged", "--allow-policy", "secret-value"], "--allow-policy",
     "secret-value findings can never be allowed"),
    ("health-security", ["health", "--security"], "--security", "--docker-image"),
    ("health-check-registry", ["health", "--check-registry"], "--check-registry", "--docker-image"),
    ("memory-word", [*RUN, "--memory", "4x"], "--memory",
     "4x is not a size; use a number with b, k, m or g, e.g. 4g"),
    ("timeout-zero", [*RUN, "--timeout", "0"], "--timeout", "0 must be greater than 0"),
    ("run-allow-secret-value", [*RUN, "--allow-policy", "secret-value"], "--allow-policy",
     "secret-value findings can never be allowed"),
    ("run-allow-bogus", [*RUN, "--allow-policy", "bogus"], "--allow-policy", "is not one of secret-pattern"),
    ("max-turns-zero", [*RUN, "--max-turns", "0"], "--max-turns", "0 must be at least 1"),
    ("cpus-huge", [*RUN, "--cpus", "5000"], "--cpus", "5000 must be at most 1024"),
]


@pytest.mark.parametrize("argv,option,words", [r[1:] for r in USAGE_ROWS], ids=[r[0] for r in USAGE_ROWS])
def test_bad_values_are_refused_in_user_words(argv, option, words, checkout, env):
    proc = toren(*argv, cwd=checkout)
    line = one_line(proc)
    assert proc.returncode == 2, proc.stderr
    assert option in line and words in line, line
    assert "does not match" not in line and "is less than" not in line and "[" not in line.split(":", 2)[-1]
    no_jobs(env)


def test_a_long_value_is_never_echoed_whole(checkout, env):
    proc = toren(*RUN, "--append-system-prompt", "x" * 20_001, cwd=checkout)
    line = one_line(proc)
    assert proc.returncode == 2 and "20001 characters" in line and len(line) < 200, line
    proc = toren(*RUN, "--branch", "b " + "y" * 20_000, cwd=checkout)
    line = one_line(proc)
    assert proc.returncode == 2 and "more characters" in line and len(line) < 300, line


# -- 7. messages with the real cause --------------------------------------------------------------------------

def test_a_rejected_push_keeps_gits_rejected_line(tmp_path):
    from toren_action.core.errors import GitError
    from toren_action.git.workspace import git as host_git

    origin = tmp_path / "origin.git"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(origin)], check=True)
    for name in ("one", "two"):
        git("clone", "-q", str(origin), name, cwd=tmp_path)
        (tmp_path / name / f"{name}.txt").write_text(name)
        git("add", "-A", cwd=tmp_path / name)
        git("-c", "user.name=U", "-c", "user.email=u@example.invalid", "commit", "-q", "-m", name,
            cwd=tmp_path / name)
    git("push", "-q", "origin", "HEAD:refs/heads/main", cwd=tmp_path / "one")
    with pytest.raises(GitError) as caught:
        host_git("push", "--quiet", "origin", "HEAD:refs/heads/main", cwd=tmp_path / "two")
    message = str(caught.value)
    assert "! [rejected]" in message and "(fetch first)" in message and "hint:" not in message, message


def test_an_ambiguous_prefix_lists_the_candidates(env):
    store = Store(env)
    ids = [f"01abcdefghjk{n:02d}" for n in range(8)]
    for job_id in ids:
        store.create_job(repo="/r", branch="b", agent="shell", model=None, base_image="i", inputs={}, job_id=job_id)
    proc = toren("logs", "01abc")
    line = one_line(proc)
    assert proc.returncode == 10 and all(i in line for i in ids[:5]) and ids[5] not in line and "and more" in line


def test_cancel_of_an_ended_job_says_so_on_stderr(one_job):
    proc = toren("cancel", one_job)
    assert proc.returncode == 1 and proc.stdout == ""
    assert one_line(proc) == f"toren: job {one_job} already ended: succeeded"


def test_summary_of_a_queued_job_says_it_has_not_started(env):
    store = Store(env)
    job_id = store.create_job(repo="/r", branch="b", agent="shell", model=None, base_image="i", inputs={})
    proc = toren("summary", job_id, "--plain")
    assert proc.returncode == 0, proc.stderr
    assert "Took -" not in proc.stdout and "Not started yet (queued for " in proc.stdout, proc.stdout


def test_the_checkout_is_read_in_one_status(checkout):
    """Modified, staged, untracked (a name with spaces and a newline), on a branch and detached."""
    from toren_action.git.workspace import checkout_state

    (checkout / "src" / "deep" / "a.py").write_text("changed\n")
    (checkout / "staged file.txt").write_text("s\n")
    git("add", "staged file.txt", cwd=checkout)
    (checkout / "new\nline.txt").write_text("n\n")
    state = checkout_state(checkout)
    assert state is not None and state.branch == "main"
    assert state.head == git("rev-parse", "HEAD", cwd=checkout).strip()
    assert sorted(state.changed) == sorted(["src/deep/a.py", "staged file.txt", "new\nline.txt"])
    git("checkout", "-q", "--detach", cwd=checkout)
    assert checkout_state(checkout).branch is None  # type: ignore[union-attr]


@pytest.mark.parametrize("name", ["line\nbreak", "esc\x1b[2Jape"])
def test_an_error_is_one_line_whatever_it_quotes(name, tmp_path, env):
    """A TOREN_HOME (or a variable's name) holding a newline or an escape still makes one plain line."""
    (tmp_path / name).write_text("x")
    proc = toren("status", env={"TOREN_HOME": str(tmp_path / name)})
    assert proc.returncode == 23 and "\x1b" not in proc.stderr
    assert "is a file" in one_line(proc)
    proc = toren(*RUN, env={"TOREN_" + name.upper(): "1"}, cwd=tmp_path)
    assert proc.returncode == 2 and "\x1b" not in proc.stderr and "not a Toren setting" in one_line(proc)
