"""Where Toren keeps its state: ``TOREN_HOME`` or the platform's user data directory."""

from __future__ import annotations

import os
from pathlib import Path


def toren_home(environ: dict[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    if env.get("TOREN_HOME"):
        home = Path(env["TOREN_HOME"]).expanduser()
    else:
        from platformdirs import user_data_dir

        home = Path(user_data_dir("toren", appauthor=False))
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    return home


def job_dir(home: Path, job_id: str) -> Path:
    return home / "jobs" / job_id


def log_path(home: Path, job_id: str) -> Path:
    return job_dir(home, job_id) / "job.log"
