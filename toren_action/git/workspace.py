"""git on the host: a bare mirror per repository, a clone per job, the commit and the push.

Host-side git never runs hooks or fsmonitor commands from a job's repository: the agent cannot write the
job's .git (it is mounted read-only in the container), and every command here also disables both.

Every host-side git command goes through :func:`git` (or :class:`Blobs`) and runs with the fixed options in
``SAFE``, whatever the user's or the repository's config says: paths unquoted, explicit ``a/``/``b/`` prefixes,
whole-repository diffs, no attributes file of the user's, no system attributes, no external diff from the
environment. Output is read as bytes and decoded as UTF-8 with ``surrogateescape`` (a Latin-1 file name or
line never crashes a caller, and encoding it back gives git's bytes).

git's ownership check (``safe.directory``) stays on, except for Toren's own job workspaces and mirrors: a
repository owned by another user (``toren scan`` run as root in someone else's checkout) is refused by git
before any of its config can run.
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

from toren_action.core.errors import GitError, UsageError

SAFE = ["-c", "core.hooksPath=/dev/null", "-c", "core.fsmonitor=false", "-c", "protocol.ext.allow=never",
        "-c", "core.quotePath=false", "-c", "core.attributesFile=/dev/null",
        "-c", "diff.noprefix=false", "-c", "diff.mnemonicPrefix=false", "-c", "diff.relative=false",
        "-c", "diff.ignoreSubmodules=none", "-c", "color.ui=never"]
#: Environment variables of the user's that would change what host-side git shows or runs.
UNSAFE_ENV = ("GIT_EXTERNAL_DIFF", "GIT_DIFF_OPTS", "GIT_ATTR_SOURCE")
TOREN_DIR = ".toren"


class UntrustedRepository(GitError):
    """git refused a repository owned by another user (its config would run as us)."""


def _toren_home() -> str:
    """Where Toren keeps its state (as paths.toren_home, without creating it)."""
    if os.environ.get("TOREN_HOME"):
        return str(Path(os.environ["TOREN_HOME"]).expanduser().absolute())
    from platformdirs import user_data_dir

    return user_data_dir("toren", appauthor=False)


def is_toren_workspace(cwd: Path | str) -> bool:
    """Whether ``cwd`` is one of Toren's own repositories: a job's clone (``$TOREN_HOME/jobs/<id>/workspace``)
    or a mirror (``$TOREN_HOME/mirrors/<name>.git``). Exactly those directories, never one below them (a
    repository the agent nested in its work tree stays untrusted)."""
    home = os.path.realpath(_toren_home())
    here = os.path.realpath(cwd)
    parent = os.path.dirname(here)
    return ((os.path.basename(here) == "workspace" and os.path.dirname(parent) == os.path.join(home, "jobs"))
            or (parent == os.path.join(home, "mirrors") and here.endswith(".git")))


def git_argv(*args: str, cwd: Path | str | None = None, trusted: bool | None = None) -> list[str]:
    """The command line for host-side git: the fixed options, then ``safe.directory`` for ``cwd`` only when
    it is trusted (``None``: only when it is one of Toren's own repositories, see is_toren_workspace)."""
    if trusted is None:
        trusted = cwd is not None and is_toren_workspace(cwd)
    trust = ["-c", f"safe.directory={os.path.realpath(cwd)}"] if trusted and cwd else []
    return ["git", *SAFE, *trust, *args]


def git_env(env: dict[str, str] | None = None) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if k not in UNSAFE_ENV}
    return {**base, "GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "/bin/false", "GIT_ATTR_NOSYSTEM": "1",
            **(env or {})}


def decode(data: bytes) -> str:
    """git's bytes as text, losslessly (``surrogateescape``)."""
    return data.decode("utf-8", "surrogateescape")


def printable(text: str) -> str:
    """Text from git for people and for the record: undecodable bytes replaced, never a surrogate."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _failure(args: tuple[str, ...], stderr: bytes, stdout: bytes, code: int, cwd, redact) -> GitError:
    text = printable(decode(stderr or stdout)).strip()
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if "dubious ownership" in text:
        return UntrustedRepository(redact(
            f"git refused {os.path.realpath(cwd) if cwd else 'the repository'}: it is owned by another user, and "
            "Toren does not run git in a repository it cannot trust (its config could run commands as you); run "
            "Toren as the repository's owner"))
    return GitError(redact(f"git {args[0]} failed: {failure_detail(lines) or f'exit code {code}'}"))


#: git's line for a ref the other side refused ("! [rejected] x -> x (fetch first)", "! [remote rejected] ...").
_REJECTED = re.compile(r"^\s*!\s*\[(?:rejected|remote rejected)\]")


def failure_detail(lines: list[str]) -> str | None:
    """The line of git's output that says why it failed: a push's ``! [rejected] ... (fetch first)`` line when
    there is one, else the last line that is not a ``hint:`` (advice, never the cause)."""
    for line in lines:
        if _REJECTED.match(line):
            return " ".join(line.split())
    causes = [ln for ln in lines if not ln.lstrip().startswith("hint:")]
    return causes[-1].strip() if causes else None


def git(*args: str, cwd: Path | str | None = None, env: dict[str, str] | None = None,
        redact: Callable[[str], str] = str, trusted: bool | None = None) -> str:
    """Run host-side git; its standard output (see the module docstring for the fixed options and decoding).
    ``trusted``: switch git's ownership check off for ``cwd`` (True only for a repository Toren made itself;
    the default trusts only Toren's job workspaces and mirrors)."""
    proc = subprocess.run(git_argv(*args, cwd=cwd, trusted=trusted), cwd=cwd, env=git_env(env),
                          capture_output=True, check=False)
    if proc.returncode != 0:
        raise _failure(args, proc.stderr, proc.stdout, proc.returncode, cwd, redact)
    return decode(proc.stdout)


class Blobs:
    """Objects' bytes exactly as stored, through one ``git cat-file --batch`` process (no filter, no textconv,
    no attribute applies). ``git_dir`` is an absolute git directory that a :func:`git` call has already
    accepted, so the ownership decision is that call's."""

    #: What a reader leaves unread is drained up to this much; beyond it the process is replaced instead.
    DRAIN_LIMIT = 8 * 1024 * 1024

    def __init__(self, git_dir: str) -> None:
        self._git_dir = git_dir
        self._proc: subprocess.Popen | None = None

    def __enter__(self) -> Blobs:
        return self

    def _process(self) -> subprocess.Popen:
        if self._proc is None:
            self._proc = subprocess.Popen(git_argv("cat-file", "--batch"), cwd=self._git_dir,
                                          env=git_env({"GIT_DIR": self._git_dir}), stdin=subprocess.PIPE,
                                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        return self._proc

    @contextmanager
    def open(self, oid: str, chunk: int = 1 << 20) -> Iterator[tuple[int, Iterator[bytes]]]:
        """(size, chunks) of object ``oid``; what the caller does not read is skipped on exit."""
        proc = self._process()
        assert proc.stdin and proc.stdout
        out = proc.stdout
        proc.stdin.write(oid.encode("ascii") + b"\n")
        proc.stdin.flush()
        header = out.readline().split()
        if len(header) != 3 or not header[2].isdigit():
            self._stop()
            raise GitError(f"git cat-file: cannot read object {oid}")
        left = [int(header[2])]

        def chunks() -> Iterator[bytes]:
            while left[0]:
                data = out.read(min(chunk, left[0]))
                if not data:
                    raise GitError(f"git cat-file: object {oid} ended early")
                left[0] -= len(data)
                yield data

        try:
            yield int(header[2]), chunks()
        finally:
            if left[0] > self.DRAIN_LIMIT:
                self._stop()
            else:
                for _ in chunks():
                    pass
                out.read(1)  # the newline after the content

    def read(self, oid: str) -> bytes:
        with self.open(oid) as (_, chunks):
            return b"".join(chunks)

    def _stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        for stream in (proc.stdin, proc.stdout):
            try:
                if stream:
                    stream.close()
            except OSError:
                pass
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def __exit__(self, *exc: object) -> None:
        self._stop()


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
                  redact: Callable[[str], str] = str, head: str | None = None) -> Path:
    """Create or refresh the bare mirror of ``origin`` (one per repository, shared by all its jobs). ``env``
    carries credentials for the origin (see github.git_auth_env); nothing is stored in the mirror's config.
    ``head``: the origin's default branch when the caller has just read it (the plan's ``git ls-remote``);
    else it is asked."""
    mirror = mirror_path(home, origin)
    with _locked(mirror):
        if (mirror / "HEAD").is_file():
            git("fetch", "--quiet", "--prune", "origin", cwd=mirror, env=env, redact=redact, trusted=True)
            # follow the origin's default branch if it changed
            head = head or _remote_head(origin, env)
            if head and _symbolic_head(mirror) != f"refs/heads/{head}":
                git("symbolic-ref", "HEAD", f"refs/heads/{head}", cwd=mirror, trusted=True)
        else:
            tmp = mirror.with_suffix(".tmp")
            if tmp.exists():
                from toren_action.core.paths import remove_tree

                remove_tree(tmp)
            git("clone", "--mirror", "--quiet", origin, str(tmp), env=env, redact=redact)
            tmp.rename(mirror)
    return mirror


def _symbolic_head(mirror: Path) -> str | None:
    """The ref the mirror's HEAD names (the mirror is Toren's own: its HEAD file is git's one line)."""
    try:
        text = (mirror / "HEAD").read_text("utf-8", errors="replace")
    except OSError:
        return None
    return text[len("ref: "):].strip() if text.startswith("ref: ") else None


def _remote_head(origin: str, env: dict[str, str] | None = None) -> str | None:
    try:
        out = git("ls-remote", "--symref", origin, "HEAD", env=env)
    except GitError:
        return None
    m = re.search(r"^ref: refs/heads/(\S+)\s+HEAD", out, re.M)
    return m.group(1) if m else None


def default_branch(mirror: Path) -> str:
    try:
        return git("symbolic-ref", "--short", "HEAD", cwd=mirror, trusted=True).strip()
    except GitError:
        return "main"


@dataclass(frozen=True)
class RemoteHeads:
    """The origin's branches and the one its HEAD names (None: a detached or missing HEAD), from one call."""

    head: str | None
    branches: dict[str, str]  # name -> commit


def remote_branch_sha(origin: str, branch: str, env: dict[str, str] | None = None,
                      redact: Callable[[str], str] = str) -> str | None:
    """The commit ``branch`` points to in ``origin`` now, or None when it does not exist there (one ref asked).
    git matches a pattern against the end of each ref, so ``refs/heads/x`` also lists ``refs/heads/a/refs/heads/x``
    (sorted first): only the line of the exact ref counts."""
    ref = f"refs/heads/{branch}"
    out = git("ls-remote", "--heads", origin, ref, env=env, redact=redact)
    for line in out.splitlines():
        sha, _, name = line.partition("\t")
        if name == ref:
            return sha
    return None


def remote_heads(origin: str, env: dict[str, str] | None = None, redact: Callable[[str], str] = str) -> RemoteHeads:
    """Every branch of ``origin`` and its default one: one ``git ls-remote``, before any job exists."""
    out = git("ls-remote", "--symref", origin, "HEAD", "refs/heads/*", env=env, redact=redact)
    head, branches = None, {}
    for line in out.splitlines():
        if line.startswith("ref: refs/heads/") and line.endswith("\tHEAD"):
            head = line[len("ref: refs/heads/"):-len("\tHEAD")]
            continue
        sha, _, ref = line.partition("\t")
        if ref.startswith("refs/heads/"):
            branches[ref[len("refs/heads/"):]] = sha
    return RemoteHeads(head, branches)


@dataclass(frozen=True)
class Checkout:
    """What a user's checkout has checked out: the commit, the branch (None: a detached HEAD) and the paths that
    are modified, staged or untracked (not ignored), in git's order."""

    head: str | None
    branch: str | None
    changed: list[str]


def checkout_state(path: str | Path) -> Checkout | None:
    """The checkout at ``path`` from one ``git status`` (porcelain v2 with the branch header, NUL-separated);
    None for a bare repository or one git refuses."""
    try:
        out = git("status", "--porcelain=v2", "--branch", "-z", "--untracked-files=normal", "--no-renames",
                  cwd=path)
    except GitError:
        return None
    head = branch = None
    changed = []
    for entry in out.split("\0"):
        if entry.startswith("# branch.oid "):
            oid = entry[len("# branch.oid "):]
            head = oid if oid != "(initial)" else None
        elif entry.startswith("# branch.head "):
            name = entry[len("# branch.head "):]
            branch = name if name != "(detached)" else None
        elif entry.startswith(("1 ", "u ")):  # ordinary and unmerged: the path is the last field
            changed.append(entry.split(" ", 8 if entry[0] == "1" else 10)[-1])
        elif entry.startswith("? "):
            changed.append(entry[2:])
    return Checkout(head, branch, changed)


@dataclass(frozen=True)
class Workspace:
    path: Path
    base_commit: str
    base_branch: str


def create_clone(mirror: Path, origin: str, dest: Path, base_branch: str | None, branch: str,
                 base_commit: str | None = None, start: str | None = None) -> Workspace:
    """A per-job clone sharing the mirror's objects, on a new branch from the base branch, or from
    ``base_commit`` (--base-ref's commit, fetched into the mirror by its id), or from the commit ``start`` (a
    pull request's head as it was when the round was planned)."""
    base = base_branch or default_branch(mirror)
    if base_commit:
        git("fetch", "--quiet", "--no-tags", "origin", base_commit, cwd=mirror, trusted=True)
    first = start or base_commit
    rev = f"{first}^{{commit}}" if first else f"refs/heads/{base}^{{commit}}"
    try:
        commit = git("rev-parse", "--verify", rev, cwd=mirror, trusted=True).strip()
    except GitError:
        if start:
            raise GitError(f"commit {start[:12]} of {base!r} is not in {origin} any more (was the branch "
                           "force-pushed?); run again") from None
        raise UsageError("--base-branch",
                         f"branch {base!r} does not exist in {origin}; name an existing branch") from None
    git("clone", "--quiet", "--shared", "--no-checkout", str(mirror), str(dest))
    # A relative alternates path resolves both on the host and in the container (see alternates_mount).
    alternates = dest / ".git" / "objects" / "info" / "alternates"
    alternates.write_text(os.path.relpath(mirror / "objects", dest / ".git" / "objects") + "\n")
    git("remote", "set-url", "origin", origin, cwd=dest, trusted=True)
    git("checkout", "--quiet", "-B", branch, commit, cwd=dest, trusted=True)
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


def nested_repositories(root: Path, excluded: tuple[str, ...] = ()) -> list[str]:
    """Paths (relative) of every .git below the top level: a repository the agent made inside the tree.
    Host-side git would enter it and could run its filters or hooks, so Toren refuses to commit such a tree.
    ``excluded``: directories (relative, ending in '/') in the clone's .git/info/exclude, which host-side git never
    enters (the prepared environment's: a setup's ``pip install -e git+...`` leaves a clone in the .venv)."""
    found = []
    skip = {os.path.join(str(root), d.rstrip("/")) for d in excluded if d.endswith("/")}
    for dirpath, dirs, files in os.walk(root):
        if dirpath in skip:
            dirs.clear()
            continue
        if dirpath != str(root) and (".git" in dirs or ".git" in files):
            found.append(os.path.relpath(os.path.join(dirpath, ".git"), root))
        if ".git" in dirs:
            dirs.remove(".git")
    return sorted(found)


def commit_all(ws: Workspace, message: str, author_name: str, author_email: str,
               excluded: tuple[str, ...] = ()) -> Change | None:
    """Commit everything the agent changed; None when the tree is unchanged. ``excluded``: the paths of the
    clone's .git/info/exclude (the prepared environment's), which no nested repository check enters (see
    nested_repositories) and which are never committed, whatever a .gitignore in the tree says (one outranks
    info/exclude: ``!/.venv/`` would re-include them)."""
    nested = nested_repositories(ws.path, excluded)
    if nested:
        raise GitError(f"the agent created a git repository inside the work tree ({', '.join(nested[:3])}); "
                       "Toren does not commit nested repositories, as host-side git could run their config")
    git("add", "--all", cwd=ws.path, trusted=True)
    if excluded:  # an exclude pathspec of `git add` fails on an ignored path: what it added under them goes again
        specs = ws.path / ".git" / "toren-prepared-pathspecs"
        specs.write_bytes(b"".join(f":(top,literal){p}".encode("utf-8", "surrogateescape") + b"\0" for p in excluded))
        git("rm", "-r", "--cached", "--quiet", "--ignore-unmatch", f"--pathspec-from-file={specs}",
            "--pathspec-file-nul", cwd=ws.path, trusted=True)
    if not git("status", "--porcelain", "--untracked-files=no", cwd=ws.path, trusted=True).strip():
        return None
    env = {"GIT_AUTHOR_NAME": author_name, "GIT_AUTHOR_EMAIL": author_email,
           "GIT_COMMITTER_NAME": author_name, "GIT_COMMITTER_EMAIL": author_email}
    msg_file = ws.path / ".git" / "TOREN_COMMIT_MSG"
    msg_file.write_text(message)
    git("commit", "--quiet", "--no-verify", "-F", str(msg_file), cwd=ws.path, env=env, trusted=True)
    commit = git("rev-parse", "HEAD", cwd=ws.path, trusted=True).strip()
    # -z: every path as it is (a tab or newline in a name is not quoted); kept lossless for the checks that
    # open the files; the stat is for people, so it is printable
    files = [f for f in git("diff", "--name-only", "-z", "--no-renames", ws.base_commit, commit, cwd=ws.path,
                            trusted=True).split("\0") if f]
    stat = printable(git("diff", "--stat", "--no-ext-diff", "--no-textconv", ws.base_commit, commit, cwd=ws.path,
                         trusted=True)).rstrip()
    return Change(commit, files, stat)


def push(ws: Workspace, branch: str, force: bool, env: dict[str, str] | None = None,
         redact: Callable[[str], str] = str, lease: str | None = None, commit: str = "HEAD") -> None:
    """Push ``commit`` (the one the checks judged) to ``branch``. ``lease``: overwrite it only if it still points
    to that commit (a pull request branch someone pushed to since the job was planned is left alone)."""
    if lease:
        args = [f"--force-with-lease=refs/heads/{branch}:{lease}", f"{commit}:refs/heads/{branch}"]
    else:
        args = [f"{'+' if force else ''}{commit}:refs/heads/{branch}"]
    git("push", "--quiet", "--no-verify", "origin", *args, cwd=ws.path, env=env, redact=redact, trusted=True)


def replay(ws: Workspace, branch: str, commit: str, onto: str, author_name: str, author_email: str,
           env: dict[str, str] | None = None, redact: Callable[[str], str] = str) -> tuple[Workspace, Change] | None:
    """Fetch ``branch`` from the origin (it moved to ``onto``) and apply ``commit`` on top of it: the new
    workspace (its base the new head) and change, or None when the commit does not apply cleanly."""
    git("fetch", "--quiet", "--no-tags", "origin", f"+refs/heads/{branch}:refs/remotes/origin/{branch}",
        cwd=ws.path, env=env, redact=redact, trusted=True)
    fetched = git("rev-parse", "--verify", f"refs/remotes/origin/{branch}^{{commit}}", cwd=ws.path,
                  trusted=True).strip()
    if fetched != onto:  # it moved again since
        return None
    who = {"GIT_COMMITTER_NAME": author_name, "GIT_COMMITTER_EMAIL": author_email}
    try:
        git("checkout", "--quiet", "--force", "-B", branch, onto, cwd=ws.path, trusted=True)
        git("cherry-pick", "--no-edit", "--allow-empty", commit, cwd=ws.path, env=who, trusted=True)
    except GitError:
        try:
            git("cherry-pick", "--abort", cwd=ws.path, trusted=True)
        except GitError:
            pass
        return None
    new = git("rev-parse", "HEAD", cwd=ws.path, trusted=True).strip()
    files = [f for f in git("diff", "--name-only", "-z", "--no-renames", onto, new, cwd=ws.path,
                            trusted=True).split("\0") if f]
    if not files:  # the branch already had the same change
        return None
    stat = printable(git("diff", "--stat", "--no-ext-diff", "--no-textconv", onto, new, cwd=ws.path,
                         trusted=True)).rstrip()
    return Workspace(ws.path, onto, ws.base_branch), Change(new, files, stat)


def read_agent_summary(ws: Workspace, limit: int = 20_000) -> str | None:
    """The agent's .toren/summary.md: a regular file of text reached through no link, at most ``limit``
    characters (a sparse or endless file costs a few times that, never more)."""
    from toren_action.core.paths import read_bounded

    data = read_bounded(ws.path, f"{TOREN_DIR}/summary.md", limit * 4)
    if data is None or b"\0" in data:  # missing, not a regular file, or not text
        return None
    return data.decode("utf-8", errors="replace")[:limit].strip() or None


def last_patch(ws, commit: str = "HEAD", limit: int = 200_000) -> str:
    """The start of a commit's patch (what the agent changed), for the record and the AI summary: at most
    ``limit`` bytes of git's output are read, however large the change."""
    proc = subprocess.Popen(git_argv("show", "--format=", "--no-color", "--no-ext-diff", "--no-textconv", "--stat",
                                     "--patch", commit, cwd=ws.path, trusted=True),
                            cwd=ws.path, env=git_env(), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdout
    try:
        data = proc.stdout.read(limit)
    finally:
        proc.stdout.close()
        proc.kill()
        proc.wait()
    return printable(decode(data))
