"""Where Toren keeps its state: ``TOREN_HOME`` or the platform's user data directory."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported where used: this module also runs alone (tests/unit/test_paths.py)
    from toren_action.core.errors import HomeUnusable

#: Directories under TOREN_HOME that hold job state and private code: 0700 like TOREN_HOME itself.
PRIVATE_DIRS = ("jobs", "mirrors")


def toren_home(environ: dict[str, str] | None = None) -> Path:
    """TOREN_HOME (or the platform's data directory), made private: 0700, with jobs/ and mirrors/ 0700 too, an
    existing one tightened; one owned by another user is refused (its owner could read every job's state). One
    that cannot hold the state (a file, under a file, not creatable, read-only) is HomeUnusable (exit 23)."""
    env = os.environ if environ is None else environ
    if env.get("TOREN_HOME"):
        home = Path(env["TOREN_HOME"]).expanduser().absolute()
    else:
        from platformdirs import user_data_dir

        home = Path(user_data_dir("toren", appauthor=False))
    try:
        home.mkdir(parents=True, exist_ok=True, mode=0o700)
        info = home.stat()
    except OSError as exc:
        raise home_unusable(home, exc) from None
    if info.st_uid != os.geteuid():
        from toren_action.core.errors import UsageError

        raise UsageError("TOREN_HOME", f"{home} belongs to uid {info.st_uid}, not to you (uid {os.geteuid()}); "
                                       "point TOREN_HOME at a directory of your own")
    try:
        for path in (home, *(home / name for name in PRIVATE_DIRS)):
            path.mkdir(exist_ok=True, mode=0o700)
            if os.lstat(path).st_mode & 0o077:
                os.chmod(path, 0o700)
        if not os.access(home, os.W_OK | os.X_OK):  # a read-only mount: the database could not be written
            raise PermissionError(errno.EROFS if _read_only_fs(home) else errno.EACCES, "not writable")
    except OSError as exc:
        raise home_unusable(home, exc) from None
    return home


def _read_only_fs(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def home_unusable(home: Path, exc: BaseException) -> HomeUnusable:
    """The one-line error for a TOREN_HOME that cannot hold Toren's state, naming what is wrong with it."""
    from toren_action.core.errors import HomeUnusable

    fix = "point TOREN_HOME at a directory"
    shown = str(home)[:200]
    for part in (home, *home.parents):  # the path itself, or the first file in the way
        try:
            if part.exists() and not part.is_dir():
                if part == home:
                    return HomeUnusable(f"TOREN_HOME: {shown} is a file; {fix}")
                return HomeUnusable(f"TOREN_HOME: {shown} lies under {str(part)[:200]}, which is a file; {fix}")
        except OSError:
            continue
    errno_ = getattr(exc, "errno", None)
    if errno_ == errno.EROFS or (home.is_dir() and _read_only_fs(home)):
        return HomeUnusable(f"TOREN_HOME: {shown} is on a read-only file system; {fix} you can write")
    if errno_ in (errno.EACCES, errno.EPERM):
        return HomeUnusable(f"TOREN_HOME: {shown} is not writable by you; {fix} you can write")
    if isinstance(exc, OSError) and exc.strerror:
        why = exc.strerror.lower()
    else:
        why = " ".join(str(exc).split())[:120] or exc.__class__.__name__
    return HomeUnusable(f"TOREN_HOME: cannot use {shown} ({why}); {fix} you can write")


def job_dir(home: Path, job_id: str) -> Path:
    return home / "jobs" / job_id


def log_path(home: Path, job_id: str) -> Path:
    return job_dir(home, job_id) / "job.log"


def write_private(path: Path, data: str | bytes, mode: int = 0o600, owner: tuple[int, int] | None = None,
                  append: bool = False) -> None:
    """Write ``data`` to ``path`` created with ``mode`` (0600 unless said), never through a link (O_NOFOLLOW):
    the one writer of Toren's private files (secrets, saved environments, records)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | (os.O_APPEND if append else os.O_TRUNC)
    fd = os.open(path, flags, mode)
    try:
        os.write(fd, data.encode("utf-8") if isinstance(data, str) else data)
        if owner is not None:
            os.fchown(fd, *owner)
    finally:
        os.close(fd)


def remove_tree(path: Path) -> bool:
    """Delete a directory tree we own, even where the agent left read-only directories in it. Never follows a
    link: a link is removed, not entered, and no chmod goes through one (a read-only directory holding
    ``key -> ~/.ssh/id_ed25519`` must not make that key 0700). Returns True when it is gone."""
    import shutil
    import stat

    def writable(target: str) -> None:
        try:
            mode = os.lstat(target).st_mode
        except OSError:
            return
        if stat.S_ISDIR(mode):  # only real directories; a link's own mode is never changed
            try:
                os.chmod(target, mode | stat.S_IRWXU)
            except OSError:
                pass

    def make_writable_and_retry(func, target, _exc_info):
        writable(os.path.dirname(target))
        writable(target)
        try:
            func(target)
        except OSError:
            pass

    if path.is_symlink():
        path.unlink()
        return True
    if path.exists():
        writable(str(path))
        shutil.rmtree(path, onerror=make_writable_and_retry)
    return not path.exists()


def read_bounded(root: Path, relative: str, limit: int) -> bytes | None:
    """At most ``limit`` bytes of the regular file ``relative`` under ``root``, or None when it is missing or is
    anything else: no component may be a link (each is opened with O_NOFOLLOW from its parent), the file must be
    regular (not a FIFO, a device or a directory), and a sparse or huge file costs ``limit`` bytes, never more."""
    import stat

    parts = [p for p in relative.split("/") if p]
    if not parts or any(p in (".", "..") for p in parts):
        return None
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(root, flags | os.O_DIRECTORY)
    except OSError:
        return None
    try:
        for part in parts[:-1]:
            nxt = os.open(part, flags | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = nxt
        nxt = os.open(parts[-1], flags | os.O_NONBLOCK, dir_fd=fd)
        os.close(fd)
        fd = nxt
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        chunks, left = [], limit
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)
    except OSError:
        return None
    finally:
        os.close(fd)
