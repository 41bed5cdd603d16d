"""A commit's tree written out byte for byte from its blobs: what ``--verify`` and the code scan judge.

The agent's work tree is not what is pushed: it can hold ignored and untracked files (a compiled
``__pycache__`` of the right version, a ``.pth`` file, a local ``conftest.py`` excluded by ``.git/info/exclude``)
that make a check pass and never reach the branch. So the checks run on a fresh directory made from the commit
itself. It is made from the objects, not with ``git checkout`` or ``git archive``: no attribute of the repository
(``export-ignore``, ``eol``, ``filter``, ``working-tree-encoding``) and no config of the host can change what is
written, and no filter command runs.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from toren_action.errors import GitError

_MODES = {"100644": 0o644, "100755": 0o755}


def tree_entries(repo: Path, commit: str, paths: list[str] | None = None) -> list[tuple[str, str, str]]:
    """(mode, object id, path) for every blob and link in ``commit`` (or those under ``paths``)."""
    wanted = None if paths is None else set(paths)
    out = _git(repo, "ls-tree", "-r", "-z", "--full-tree", commit)
    entries = []
    for record in out.split(b"\0"):
        if not record:
            continue
        meta, _, path = record.partition(b"\t")
        mode, kind, oid = meta.decode("ascii").split(" ")
        name = os.fsdecode(path)
        if kind == "blob" and (wanted is None or name in wanted):  # a submodule (commit) has no content here
            entries.append((mode, oid, name))
    return entries


def export_commit(repo: Path, commit: str, dest: Path, paths: list[str] | None = None) -> int:
    """Write ``commit``'s tree (or only ``paths`` of it) into the new directory ``dest``; the number of entries.
    Links are written last, so no file is ever written through one."""
    entries = tree_entries(repo, commit, paths)
    dest.mkdir(mode=0o755)
    links = []
    with _Blobs(repo) as blobs:
        for mode, oid, path in entries:
            target = _place(dest, path)
            data = blobs.read(oid)
            if mode == "120000":
                links.append((target, os.fsdecode(data)))
                continue
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, _MODES.get(mode, 0o644))
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
    for target, link in links:
        os.symlink(link, target)
    return len(entries)


def _place(dest: Path, path: str) -> str:
    """The host path for ``path`` in ``dest``, its parent directories made (never through a link)."""
    parts = path.split("/")
    if path.startswith("/") or any(p in ("", ".", "..", ".git") for p in parts):
        raise GitError(f"the commit holds a path Toren will not write: {path!r}")
    current = str(dest)
    for part in parts[:-1]:
        current = os.path.join(current, part)
        try:
            os.mkdir(current, 0o755)
        except FileExistsError:
            if os.path.islink(current) or not os.path.isdir(current):
                raise GitError(f"the commit holds a path Toren will not write: {path!r}") from None
    return os.path.join(current, parts[-1])


def _git(repo: Path, *args: str) -> bytes:
    from toren_action.workspace import SAFE

    proc = subprocess.run(["git", *SAFE, "-c", f"safe.directory={os.path.realpath(repo)}", *args], cwd=repo,
                          capture_output=True, check=False)
    if proc.returncode != 0:
        detail = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        raise GitError(f"git {args[0]} failed: {detail[-1] if detail else proc.returncode}")
    return proc.stdout


class _Blobs:
    """Blob contents through one ``git cat-file --batch`` process."""

    def __init__(self, repo: Path) -> None:
        self._repo = repo

    def __enter__(self) -> _Blobs:
        from toren_action.workspace import SAFE

        self._proc = subprocess.Popen(
            ["git", *SAFE, "-c", f"safe.directory={os.path.realpath(self._repo)}", "cat-file", "--batch"],
            cwd=self._repo, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        return self

    def read(self, oid: str) -> bytes:
        assert self._proc.stdin and self._proc.stdout
        self._proc.stdin.write(oid.encode() + b"\n")
        self._proc.stdin.flush()
        header = self._proc.stdout.readline().split()
        if len(header) != 3:
            raise GitError(f"git cat-file: no object {oid}")
        size = int(header[2])
        data = self._proc.stdout.read(size)
        self._proc.stdout.read(1)  # the newline after the content
        return data

    def __exit__(self, *exc: object) -> None:
        assert self._proc.stdin
        self._proc.stdin.close()
        self._proc.wait(timeout=30)
        if self._proc.stdout:
            self._proc.stdout.close()
