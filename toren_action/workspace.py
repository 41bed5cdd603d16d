"""git on the host: a bare mirror per repository, a clone per job, the commit and the push.

Host-side git never runs hooks or fsmonitor commands from a job's repository: the agent cannot write the
job's .git (it is mounted read-only in the container), and every command here also disables both.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import posixpath
import re
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from toren_action.errors import GitError, UsageError

SAFE = ["-c", "core.hooksPath=/dev/null", "-c", "core.fsmonitor=false", "-c", "protocol.ext.allow=never"]
TOREN_DIR = ".toren"


def git(*args: str, cwd: Path | str | None = None, env: dict[str, str] | None = None,
        redact: Callable[[str], str] = str) -> str:
    full_env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "/bin/false", **(env or {})}
    # Trust only the directory we run in (a job's tree may belong to the agent's uid); a repository the agent
    # nests inside it stays untrusted, so git refuses to run its config instead of running it as us.
    trust = ["-c", f"safe.directory={os.path.realpath(cwd)}"] if cwd else []
    proc = subprocess.run(["git", *SAFE, *trust, *args], cwd=cwd, env=full_env, capture_output=True, text=True,
                          check=False)
    if proc.returncode != 0:
        lines = [ln for ln in (proc.stderr or proc.stdout).strip().splitlines() if ln.strip()]
        detail = lines[-1] if lines else f"exit code {proc.returncode}"
        raise GitError(redact(f"git {args[0]} failed: {detail}"))
    return proc.stdout


def mirror_path(home: Path, origin: str) -> Path:
    digest = hashlib.sha256(origin.encode()).hexdigest()[:16]
    name = re.sub(r"[^A-Za-z0-9._-]", "_", origin.rstrip("/").rsplit("/", 1)[-1].removesuffix(".git"))[:40]
    return home / "mirrors" / f"{name}-{digest}.git"


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(str(path) + ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def update_mirror(home: Path, origin: str, env: dict[str, str] | None = None,
                  redact: Callable[[str], str] = str) -> Path:
    """Create or refresh the bare mirror of ``origin`` (one per repository, shared by all its jobs). ``env``
    carries credentials for the origin (see github.git_auth_env); nothing is stored in the mirror's config."""
    mirror = mirror_path(home, origin)
    with _locked(mirror):
        if (mirror / "HEAD").is_file():
            git("remote", "update", "--prune", cwd=mirror, env=env, redact=redact)
            # follow the origin's default branch if it changed
            head = _remote_head(origin, env)
            if head:
                git("symbolic-ref", "HEAD", f"refs/heads/{head}", cwd=mirror)
        else:
            tmp = mirror.with_suffix(".tmp")
            if tmp.exists():
                from toren_action.paths import remove_tree

                remove_tree(tmp)
            git("clone", "--mirror", "--quiet", origin, str(tmp), env=env, redact=redact)
            tmp.rename(mirror)
    return mirror


def _remote_head(origin: str, env: dict[str, str] | None = None) -> str | None:
    try:
        out = git("ls-remote", "--symref", origin, "HEAD", env=env)
    except GitError:
        return None
    m = re.search(r"^ref: refs/heads/(\S+)\s+HEAD", out, re.M)
    return m.group(1) if m else None


def default_branch(mirror: Path) -> str:
    try:
        return git("symbolic-ref", "--short", "HEAD", cwd=mirror).strip()
    except GitError:
        return "main"


def branch_exists(mirror: Path, branch: str) -> bool:
    try:
        git("rev-parse", "--verify", "--quiet", f"refs/heads/{branch}^{{commit}}", cwd=mirror)
        return True
    except GitError:
        return False


def remote_branch_sha(origin: str, branch: str, env: dict[str, str] | None = None,
                      redact: Callable[[str], str] = str) -> str | None:
    """The commit ``branch`` points to in ``origin``, or None when it does not exist there."""
    out = git("ls-remote", "--heads", origin, f"refs/heads/{branch}", env=env, redact=redact)
    return out.split()[0] if out.strip() else None


@dataclass(frozen=True)
class Workspace:
    path: Path
    base_commit: str
    base_branch: str


def create_clone(mirror: Path, origin: str, dest: Path, base_branch: str | None, branch: str) -> Workspace:
    """A per-job clone sharing the mirror's objects, on a new branch from the base branch."""
    base = base_branch or default_branch(mirror)
    try:
        commit = git("rev-parse", "--verify", f"refs/heads/{base}^{{commit}}", cwd=mirror).strip()
    except GitError:
        raise UsageError("--base-branch",
                         f"branch {base!r} does not exist in {origin}; name an existing branch") from None
    git("clone", "--quiet", "--shared", "--no-checkout", str(mirror), str(dest))
    # A relative alternates path resolves both on the host and in the container (see alternates_mount).
    alternates = dest / ".git" / "objects" / "info" / "alternates"
    alternates.write_text(os.path.relpath(mirror / "objects", dest / ".git" / "objects") + "\n")
    git("remote", "set-url", "origin", origin, cwd=dest)
    git("checkout", "--quiet", "-B", branch, commit, cwd=dest)
    with open(dest / ".git" / "info" / "exclude", "a") as fh:
        fh.write(f"\n/{TOREN_DIR}/\n")
    return Workspace(dest, commit, base)


def alternates_mount(ws_path: Path, container_path: str = "/workspace") -> tuple[str, str] | None:
    """(host dir, container dir) to mount read-only so that git inside the container finds the objects the
    job's clone shares with the mirror, at the place its relative alternates path points to."""
    alternates = ws_path / ".git" / "objects" / "info" / "alternates"
    if not alternates.is_file():
        return None
    rel = alternates.read_text().strip().splitlines()[0]
    host = os.path.normpath(os.path.join(ws_path, ".git", "objects", rel))
    inside = posixpath.normpath(posixpath.join(container_path, ".git", "objects", rel))
    return host, inside


def give_tree_to(dest: Path, uid: int, gid: int) -> None:
    """Hand the work tree (not .git) to the container's user when it differs from ours (we are root)."""
    if os.geteuid() == uid:
        return
    for root, dirs, files in os.walk(dest):
        if root == str(dest) and ".git" in dirs:
            dirs.remove(".git")
        os.chown(root, uid, gid)
        for name in files:
            os.lchown(os.path.join(root, name), uid, gid)


@dataclass(frozen=True)
class Change:
    commit: str
    files: list[str]
    diffstat: str


def nested_repositories(root: Path) -> list[str]:
    """Paths (relative) of every .git below the top level: a repository the agent made inside the tree.
    Host-side git would enter it and could run its filters or hooks, so Toren refuses to commit such a tree."""
    found = []
    for dirpath, dirs, files in os.walk(root):
        if dirpath != str(root) and (".git" in dirs or ".git" in files):
            found.append(os.path.relpath(os.path.join(dirpath, ".git"), root))
        if ".git" in dirs:
            dirs.remove(".git")
    return sorted(found)


def commit_all(ws: Workspace, message: str, author_name: str, author_email: str) -> Change | None:
    """Commit everything the agent changed; None when the tree is unchanged."""
    nested = nested_repositories(ws.path)
    if nested:
        raise GitError(f"the agent created a git repository inside the work tree ({', '.join(nested[:3])}); "
                       "Toren does not commit nested repositories, as host-side git could run their config")
    git("add", "--all", cwd=ws.path)
    if not git("status", "--porcelain", "--untracked-files=no", cwd=ws.path).strip():
        return None
    env = {"GIT_AUTHOR_NAME": author_name, "GIT_AUTHOR_EMAIL": author_email,
           "GIT_COMMITTER_NAME": author_name, "GIT_COMMITTER_EMAIL": author_email}
    msg_file = ws.path / ".git" / "TOREN_COMMIT_MSG"
    msg_file.write_text(message)
    git("commit", "--quiet", "--no-verify", "-F", str(msg_file), cwd=ws.path, env=env)
    commit = git("rev-parse", "HEAD", cwd=ws.path).strip()
    files = [f for f in git("diff", "--name-only", ws.base_commit, commit, cwd=ws.path).splitlines() if f]
    stat = git("diff", "--stat", ws.base_commit, commit, cwd=ws.path).rstrip()
    return Change(commit, files, stat)


def push(ws: Workspace, branch: str, force: bool, env: dict[str, str] | None = None,
         redact: Callable[[str], str] = str, lease: str | None = None) -> None:
    """Push HEAD to ``branch``. ``lease``: overwrite it only if it still points to that commit (a pull
    request branch someone pushed to since the job was planned is left alone)."""
    if lease:
        args = [f"--force-with-lease=refs/heads/{branch}:{lease}", f"HEAD:refs/heads/{branch}"]
    else:
        args = [f"{'+' if force else ''}HEAD:refs/heads/{branch}"]
    git("push", "--quiet", "--no-verify", "origin", *args, cwd=ws.path, env=env, redact=redact)


def read_agent_summary(ws: Workspace, limit: int = 20_000) -> str | None:
    path = ws.path / TOREN_DIR / "summary.md"
    if path.is_file() and not path.is_symlink():
        return path.read_text("utf-8", errors="replace")[:limit].strip() or None
    return None


def last_patch(ws) -> str:
    """The last commit's patch (what the agent changed), for the record and the AI summary."""
    return git("show", "--format=", "--no-color", "--no-ext-diff", "--stat", "--patch", "HEAD", cwd=ws.path)
