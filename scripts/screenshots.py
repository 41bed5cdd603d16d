"""The README's screenshots (docs/images/*.svg), from real jobs: runs a few shell-agent jobs on a scratch
repository with the real Docker engine and git (needs `scripts/build-base-image.sh`'s image, or
TOREN_TEST_BASE_IMAGE), then draws `toren status` at 80 and 160 columns and a foreground run while its agent
works, with rich's SVG export.

    PYTHONPATH=. .venv/bin/python scripts/screenshots.py [OUT_DIR]     # default docs/images
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BASE_IMAGE = os.environ.get("TOREN_TEST_BASE_IMAGE", "toren/base:bookworm")
TOKEN = "ghp_" + "ScreenshotT0kenNotReal0123456789abcdef"[:36]

#: The jobs shown in the table: (branch, command, extra flags).
JOBS = [
    ("toren/rename-helper", "sed -i s/old_name/new_name/g src/*.py", ()),
    ("toren/add-type-hints", "sed -i 's/def old_name():/def old_name() -> int:/' src/a.py", ()),
    ("toren/fix-flaky-retry-loop-in-the-http-client", "echo 'retry = 3' >> src/a.py; exit 4", ()),
    ("toren/bump-version", "true", ()),
    ("toren/config-from-env", f"echo 'TOKEN = \"{TOKEN}\"' > src/settings.py", ()),
    ("toren/faster-tests", "echo 'x = 1' >> src/b.py", ("--verify", "python3 -c 'raise SystemExit(3)'")),
]


def git(*args: str, cwd: Path) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


def scratch_repo(where: Path) -> Path:
    repo = where / "widget"
    (repo / "src").mkdir(parents=True)
    (repo / "src" / "a.py").write_text("def old_name():\n    return 1\n")
    (repo / "src" / "b.py").write_text("from a import old_name\n")
    git("init", "-q", "-b", "main", cwd=repo)
    git("add", "-A", cwd=repo)
    git("-c", "user.name=Alice", "-c", "user.email=alice@example.invalid", "commit", "-qm", "initial", cwd=repo)
    return repo


def run_jobs(repo: Path, spec: Path, env: dict[str, str]) -> None:
    for branch, command, extra in JOBS:
        proc = subprocess.run([sys.executable, "-m", "toren_action", "run", "--repo", str(repo), "--spec", str(spec),
                               "--branch", branch, "--agent", "shell", "--command", command, "--base-image",
                               BASE_IMAGE, "--pull", "never", "--disable-daemon", "--quiet", *extra],
                              env=env, capture_output=True, text=True)
        print(f"{branch}: exit {proc.returncode}", file=sys.stderr)


def table_svg(width: int, title: str):
    from rich.console import Console

    from toren_action.cli.ui import status_renderable
    from toren_action.core.paths import toren_home
    from toren_action.jobs.store import Store

    store = Store(toren_home())
    jobs = store.list(limit=5)
    console = Console(width=width, record=True, force_terminal=True, file=io.StringIO(), highlight=False)
    console.print("$ toren status", style="bold", markup=False)
    console.print(status_renderable(jobs, total=store.count(), width=width))
    return console.export_svg(title=title)


def live_svg(repo: Path, spec: Path) -> str:
    """A foreground run drawn while its agent works: the stage lines, the agent's output and the live line."""
    from rich.console import Console, Group
    from rich.spinner import Spinner
    from rich.text import Text

    from toren_action.cli.ui import ConsoleReporter, SpinnerLine
    from toren_action.config.settings import Settings
    from toren_action.core.states import JobState
    from toren_action.job.submit import run_in_foreground, submit

    class Recorder(ConsoleReporter):
        """ConsoleReporter's lines, recorded; the live line kept to be drawn at the moment of the picture."""

        def __init__(self) -> None:
            super().__init__(stream=io.StringIO())
            self.record = Console(width=80, record=True, force_terminal=True, file=io.StringIO(), highlight=False,
                                  markup=False, emoji=False)
            self.live: SpinnerLine | None = None
            self.saw_work = threading.Event()

        def _print(self, text: str) -> None:
            self.record.print(text, soft_wrap=True)
            if "running the tests" in text:
                self.saw_work.set()

        def stage(self, state: str, detail: str) -> None:
            super().stage(state, detail)
            self.live = None if JobState(state).final else SpinnerLine(state, self.started)

    command = ("echo 'renaming old_name in src/'; sed -i s/old_name/new_name/g src/*.py; "
               "echo 'running the tests'; sleep 4")
    settings = Settings.load({"repo": str(repo), "spec": str(spec), "branch": "toren/live-run", "agent": "shell",
                              "command": command, "base_image": BASE_IMAGE, "pull": "never"})
    job = submit(settings, background=False)
    reporter = Recorder()
    picture: list[str] = []

    def snap() -> None:
        reporter.saw_work.wait(300)
        time.sleep(2)
        shot = Console(width=80, record=True, force_terminal=True, file=io.StringIO(), highlight=False)
        shot.print("$ toren run --spec task.md --agent shell --command '…' --disable-daemon", style="bold",
                   markup=False)
        shot.print(Text.from_ansi(reporter.record.export_text(clear=False, styles=True)), end="")
        if reporter.live is not None:
            shot.print(Group(Spinner("dots", text=reporter.live)))
        picture.append(shot.export_svg(title="toren run (foreground)"))

    thread = threading.Thread(target=snap)
    thread.start()
    run_in_foreground(job, reporter)
    thread.join()
    return picture[0]


def main() -> int:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "images"
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        where = Path(tmp)
        os.environ["TOREN_HOME"] = str(where / "toren-home")
        repo = scratch_repo(where)
        spec = where / "task.md"
        spec.write_text("# Rename the helper\n\nRename old_name to new_name everywhere.\n")
        env = {**os.environ, "PYTHONPATH": str(ROOT), "TOREN_PLAIN": "1"}
        run_jobs(repo, spec, env)
        (out / "status-80.svg").write_text(table_svg(80, "toren status (80 columns)"), "utf-8")
        (out / "status-160.svg").write_text(table_svg(160, "toren status (160 columns)"), "utf-8")
        (out / "run-live.svg").write_text(live_svg(repo, spec), "utf-8")
        subprocess.run([sys.executable, "-m", "toren_action", "cleanup", "--all", "--logs"], env=env,
                       capture_output=True)
    for name in ("status-80.svg", "status-160.svg", "run-live.svg"):
        print(out / name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
