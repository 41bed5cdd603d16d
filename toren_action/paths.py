"""Where Toren keeps its state: ``TOREN_HOME`` or the platform's user data directory."""

from __future__ import annotations

import os
from pathlib import Path


def toren_home(environ: dict[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    if env.get("TOREN_HOME"):
        home = Path(env["TOREN_HOME"]).expanduser().absolute()
    else:
        from platformdirs import user_data_dir

        home = Path(user_data_dir("toren", appauthor=False))
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    return home


def job_dir(home: Path, job_id: str) -> Path:
    return home / "jobs" / job_id


def log_path(home: Path, job_id: str) -> Path:
    return job_dir(home, job_id) / "job.log"


def remove_tree(path: Path) -> bool:
    """Delete a directory tree we own, even where the agent left read-only directories in it.
    Returns True when it is gone."""
    import shutil
    import stat

    def make_writable_and_retry(func, target, _exc_info):
        parent = os.path.dirname(target)
        for p in (parent, target):
            try:
                os.chmod(p, os.stat(p).st_mode | stat.S_IRWXU)
            except OSError:
                pass
        try:
            func(target)
        except OSError:
            pass

    if path.exists() or path.is_symlink():
        try:
            os.chmod(path, os.stat(path).st_mode | stat.S_IRWXU)
        except OSError:
            pass
        shutil.rmtree(path, onerror=make_writable_and_retry)
    return not path.exists()
