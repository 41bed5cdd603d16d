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
from pathlib import Path

from toren_action.core.errors import GitError

_MODES = {"100644": 0o644, "100755": 0o755}


def tree_entries(repo: Path, commit: str, paths: list[str] | None = None) -> list[tuple[str, str, str]]:
    """(mode, object id, path) for every blob and link in ``commit`` (or those of ``paths``)."""
    from toren_action.git.workspace import git

    wanted = None if paths is None else set(paths)
    entries = []
    for record in git("ls-tree", "-r", "-z", "--full-tree", commit, cwd=repo, trusted=True).split("\0"):
        meta, _, path = record.partition("\t")
        if not path:
            continue
        mode, kind, oid = meta.split(" ")
        if kind == "blob" and (wanted is None or path in wanted):  # a submodule (commit) has no content here
            entries.append((mode, oid, path))
    return entries


def export_commit(repo: Path, commit: str, dest: Path, paths: list[str] | None = None) -> int:
    """Write ``commit``'s tree (or only ``paths`` of it) into the new directory ``dest``; the number of entries.
    Links are written last, so no file is ever written through one."""
    from toren_action.git.workspace import Blobs

    entries = tree_entries(repo, commit, paths)
    dest.mkdir(mode=0o755)
    links = []
    with Blobs(str(Path(repo, ".git").resolve())) as blobs:
        for mode, oid, path in entries:
            target = _place(dest, path)
            if mode == "120000":
                links.append((target, os.fsdecode(blobs.read(oid))))
                continue
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, _MODES.get(mode, 0o644))
            with os.fdopen(fd, "wb") as fh, blobs.open(oid) as (_, chunks):
                for chunk in chunks:
                    fh.write(chunk)
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
