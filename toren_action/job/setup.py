"""The repository's setup: its environment prepared before the agent runs, kept and reused by content.

The setup command (``--setup``, the repository's ``[setup] run``, else its ``.toren/setup.sh``) runs once in a
container of the agent image, as the agent's user, in the job's checkout at the base commit, with Docker's default
network (or ``--setup-network``) and the CA bundle of the image, and never with the model key, the key proxy, the
GitHub token or a secret of the agent's (``--secret-for setup`` gives it secrets of its own, as files).

What it leaves is the *prepared environment*, in two parts, both named by one content key (a hash of the agent
image's id, the setup command or script, the ``cache_key`` files' blob ids at the base commit,
``--setup-version``, and ``lineage``: the origin and the branch whose code the setup runs):

- outside the workspace (``~/.local``, ``~/.cache``, anything the user may write in the image): the setup's
  container committed as the image ``toren/prepared:<hash of key and TOREN_HOME>`` (``prepared_tag``), which
  the agent, and the verification, then run in;
- inside the workspace (a ``.venv``, ``node_modules``, ``src/*.egg-info``): the untracked and ignored files it
  wrote, copied to ``TOREN_HOME/setup/<key>/tree`` (a bind mount is not part of a committed image), with their
  paths (git's ``--others --directory`` form) in ``meta.json``.

A later job with the same key does not run the setup: it starts its agent in that image and copies the tree's
files into its fresh clone (``cp -a --reflink=auto``: a copy, so what an agent does to them never reaches the
cache, and a reflink where the file system has them). The paths go into the clone's ``.git/info/exclude``, which
the agent cannot write (``.git`` is read-only in its container): whatever happens to them, they are never part of
the commit, which holds only what the agent changed relative to the prepared tree; files the repository ignores
never enter it either (``git add --all`` honours ``.gitignore``). The verification's tree is the commit's files
plus the same files copied again from the cache, as the setup left them, and nothing else of the agent's.

Everything the setup wrote is the repository's (hostile): it is copied, never followed; a copy never goes through
a symlink of the destination, and a path the new commit tracks is left as the commit has it.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import posixpath
import re
import shutil
import stat
import subprocess
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from toren_action.config import validate
from toren_action.config.validate import Mount
from toren_action.core.errors import DockerError, SetupFailed
from toren_action.core.paths import remove_tree, write_private
from toren_action.job.plan import CONTAINER_SECRETS, CONTAINER_TASK, SETUP_SCRIPT, Plan
from toren_action.sandbox.container import first_line
from toren_action.sandbox.engine import Engine, EngineError
from toren_action.sandbox.image import labels

#: The repository of the prepared images; their tag: prepared_tag (job-<id> without a cache).
PREPARED_REPOSITORY = "toren/prepared"
#: The prepared image's label: its full key (``toren cleanup`` finds them by it).
LABEL_PREPARED = "toren.prepared"
#: In TOREN_HOME: one directory per prepared environment, named by its key.
SETUP_DIR = "setup"
#: Bump when what a key stands for changes, so that old prepared environments are not reused.
KEY_VERSION = "2"
#: Files host-side git reads in the work tree: never kept from a setup (keep_workspace_files).
GIT_FILES = (".gitignore", ".gitattributes", ".gitmodules")
#: The lines of the setup's output the error of a failing setup ends with.
TAIL_LINES = 15


@dataclass(frozen=True)
class SetupCommand:
    """What runs (with ``/bin/sh -c``), where it came from, and the blob ids of the script it runs, if any."""

    command: str
    source: str
    script_blobs: tuple[str, ...] = ()


@dataclass
class PreparedEnv:
    """A prepared environment a job runs in: the image, the files of the workspace and their paths."""

    image: str
    key: str
    cache: str  # "hit", "miss" or "off" (--no-setup-cache)
    tree: Path
    paths: tuple[str, ...]
    duration_s: float  # the whole setup stage: finding the key, reusing or running, commit, keeping, linking
    docker: Engine | None = field(repr=False, default=None)
    #: Made for this job alone (--no-setup-cache): release() removes the image and the files.
    scratch: bool = False
    #: The paths put in place in the job's clone, and so in its .git/info/exclude (those its commit does not have).
    excluded: tuple[str, ...] = ()
    #: Its files are root's and read-only (keep_workspace_files ``seal``): jobs get hard links, not copies.
    sealed: bool = False
    #: How long the setup's container ran, from its creation to its exit (None when the setup did not run).
    command_s: float | None = None

    def record(self) -> dict:
        record = {"cache": self.cache, "key": self.key, "image": self.image, "duration_s": round(self.duration_s, 3)}
        if self.command_s is not None:
            record["command_s"] = round(self.command_s, 3)
        return record

    def release(self) -> None:
        if not self.scratch:
            return
        remove_tree(self.tree.parent)
        try:
            if self.docker is not None:
                self.docker.remove_image(self.image, force=True)
        except Exception:  # noqa: BLE001,S110 - already gone, or the engine went away: cleanup prunes it
            pass


# -- what runs, and its key ----------------------------------------------------------------------------------------

def _tree_entries(ws_path: Path, commit: str) -> dict[str, tuple[str, str]]:
    """Every path of the commit's tree: (mode, blob id), from git's -z listing."""
    from toren_action.git import workspace

    out = workspace.git("ls-tree", "-r", "-z", "--full-tree", commit, cwd=ws_path, trusted=True)
    entries = {}
    for item in out.split("\0"):
        if "\t" not in item:
            continue
        meta, path = item.split("\t", 1)
        mode, _, oid = meta.split(" ")
        entries[path] = (mode, oid)
    return entries


def setup_command(plan: Plan, ws_path: Path, entries: dict[str, tuple[str, str]]) -> SetupCommand | None:
    """--setup or [setup] run; else the repository's .toren/setup.sh at the base commit; else None. A script that
    is a symlink out of the repository, or to no file of it, ends the job setup_failed."""
    s = plan.settings
    if s.setup:
        return SetupCommand(s.setup, s.source_of("setup"))
    entry = entries.get(SETUP_SCRIPT)
    if entry is None:
        return None
    mode, oid = entry
    blobs = [oid]
    if mode == "120000":
        from toren_action.git import workspace

        target = workspace.git("cat-file", "blob", oid, cwd=ws_path, trusted=True)
        resolved = posixpath.normpath(posixpath.join(posixpath.dirname(SETUP_SCRIPT), target))
        if target.startswith("/") or resolved == ".." or resolved.startswith("../"):
            raise SetupFailed(f"{SETUP_SCRIPT} is a symlink out of the repository (to {target[:200]!r}); Toren "
                              "runs a setup script only from inside the repository: make it a regular file")
        if entries.get(resolved, ("",))[0] not in ("100644", "100755"):
            raise SetupFailed(f"{SETUP_SCRIPT} is a symlink to {resolved[:200]!r}, which is no file of the "
                              "repository; make it a regular file")
        mode, target_oid = entries[resolved]
        blobs.append(target_oid)
    run = f"./{SETUP_SCRIPT}" if mode == "100755" else f"/bin/sh ./{SETUP_SCRIPT}"
    return SetupCommand(f"exec {run}", SETUP_SCRIPT, tuple(blobs))


def cache_key_files(patterns: tuple[str, ...], entries: dict[str, tuple[str, str]]) -> list[tuple[str, str]]:
    """(path, blob id) of every file of the commit that a cache-key glob selects, sorted."""
    regexes = [validate.cache_key_regex(validate.cache_key_pattern(p)) for p in patterns]
    chosen = sorted((path, oid) for path, (_, oid) in entries.items() if any(r.match(path) for r in regexes))
    if len(chosen) > validate.MAX_CACHE_KEY_FILES:
        raise SetupFailed(f"the setup's cache_key selects {len(chosen)} files (at most "
                          f"{validate.MAX_CACHE_KEY_FILES}); name the files that decide the setup")
    return chosen


def lineage(plan: Plan) -> dict[str, str | None]:
    """Whose code the setup runs: the repository (its origin, without credentials) and the line of history the
    job starts from (the base branch, a review round's pull request branch, a --base-ref's commit). A setup runs
    the repository's code (``pip install -e .`` runs its build backend), which the cache key does not name: an
    environment made by one repository, or by an unmerged branch (an earlier agent's), never serves another."""
    origin = re.sub(r"^([a-z][a-z0-9+.-]*://)[^/@]*@", r"\1", plan.origin, flags=re.I)  # no user or token
    branch = plan.pull.head_branch if plan.pull is not None else plan.base_branch or plan.settings.base_branch
    return {"origin": origin, "branch": branch, "commit": plan.base_commit}


def cache_key(plan: Plan, image_id: str, command: SetupCommand, files: list[tuple[str, str]]) -> str:
    """The prepared environment's name: what decides what the setup makes, and whose code it runs, as a hash."""
    s = plan.settings
    facts = {"v": KEY_VERSION, "image": image_id, "command": command.command, "script": list(command.script_blobs),
             "files": [list(f) for f in files], "version": s.setup_version,
             "secrets": sorted(x.name for x in plan.setup_secrets), "lineage": lineage(plan)}
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()


# -- running it ----------------------------------------------------------------------------------------------------

def prepare(plan: Plan, docker, ws_path: Path, base_commit: str, agent_tag: str, home: Path, jdir: Path,
            job_id: str, line: Callable[[str], None],
            on_run: Callable[[SetupCommand], None] | None = None) -> PreparedEnv | None:
    """The job's prepared environment: reused when its key is kept, else made by running the setup in the
    job's clone; None when the repository has no setup. ``on_run`` is told before the setup really runs."""
    started = time.monotonic()
    entries = _tree_entries(ws_path, base_commit)
    command = setup_command(plan, ws_path, entries)
    if command is None:
        return None
    try:
        image = docker.image(agent_tag)
    except (EngineError, OSError) as exc:
        raise DockerError(f"Docker cannot read the agent image {agent_tag}: {first_line(exc)}") from None
    if image is None:
        raise SetupFailed(f"the agent image {agent_tag} is gone (removed while the job started); run the job again")
    key = cache_key(plan, image["Id"], command, cache_key_files(plan.settings.setup_cache_key, entries))
    if plan.settings.no_setup_cache:
        if on_run:
            on_run(command)
        scratch = jdir / "setup-cache"
        env = _make(plan, docker, ws_path, agent_tag, f"{PREPARED_REPOSITORY}:job-{job_id}", key, scratch, jdir,
                    job_id, line, command, home)
        env.cache, env.scratch = "off", True
        env.duration_s = time.monotonic() - started
        return env
    root = home / SETUP_DIR
    with _locked(root / f"{key}.lock"):  # two jobs with one key: the second waits and reuses
        kept = _kept(docker, root / key, key)
        if kept is not None:
            copy_in(kept, ws_path, line)
            os.utime(kept.tree.parent / "meta.json")  # last used: `toren cleanup --older-than` keeps it
            kept.duration_s = time.monotonic() - started
            kept.docker = docker
            return kept
        if on_run:
            on_run(command)
        env = _make(plan, docker, ws_path, agent_tag, prepared_tag(home, key), key, root / key, jdir, job_id, line,
                    command, home)
        env.duration_s = time.monotonic() - started
        return env


def prepared_tag(home: Path, key: str) -> str:
    """The prepared image's tag: named by the key and by the TOREN_HOME that keeps its files, so that two homes
    (two users, two test runs) never reuse or prune each other's."""
    digest = hashlib.sha256(f"{os.path.realpath(home)}\0{key}".encode()).hexdigest()
    return f"{PREPARED_REPOSITORY}:{digest[:32]}"


def _kept(docker, where: Path, key: str) -> PreparedEnv | None:
    """The prepared environment of this key when both its image and its files are still there."""
    try:
        meta = json.loads((where / "meta.json").read_text("utf-8"))
        image = docker.image(meta["image"])
    except (OSError, ValueError, KeyError, TypeError, EngineError):  # unreadable: made again (or the engine says)
        return None
    if image is None or labels(image).get(LABEL_PREPARED) != key or not (where / "tree").is_dir():
        return None
    sealed = bool(meta.get("sealed"))
    if sealed and not sealed_intact(where / "tree"):  # changed since (a chown through a hard link): redo it
        return None
    return PreparedEnv(meta["image"], key, "hit", where / "tree", tuple(meta["paths"]), 0.0, docker, sealed=sealed)


def _make(plan: Plan, docker, ws_path: Path, agent_tag: str, tag: str, key: str, where: Path, jdir: Path,
          job_id: str, line: Callable[[str], None], command: SetupCommand, home: Path) -> PreparedEnv:
    """Run the setup in the clone; commit its container as ``tag``; keep what it wrote in the workspace in
    ``where``. A failing setup raises SetupFailed with the tail of its output."""
    from toren_action.sandbox import container, image

    s = plan.settings
    tail: deque[str] = deque(maxlen=TAIL_LINES)

    def show(text: str) -> bool:
        line(text)
        tail.append(text)
        return False

    committed: list[str] = []
    exited: list[float] = []

    def commit(container_id: str, code: int) -> None:
        exited.append(time.monotonic())
        if code != 0:
            return
        try:
            config = (docker.image(agent_tag) or {}).get("Config") or {}
            changes = [f"LABEL {LABEL_PREPARED}={key}", f"LABEL {image.LABEL_MANAGED}=1"]
            if config.get("Cmd"):
                changes.append("CMD " + json.dumps(config["Cmd"]))
            repo, _, name = tag.rpartition(":")
            committed.append(docker.commit(container_id, repo, name, changes))
        except (EngineError, OSError) as exc:
            raise SetupFailed(f"the setup ran, but Docker could not keep its container as {tag}: "
                              f"{first_line(exc)}; run the job again") from None

    secrets_dir = jdir / "setup-secrets"
    mounts = [Mount(str(ws_path), "/workspace", False), Mount(str(ws_path / ".git"), "/workspace/.git", True)]
    from toren_action.git import workspace

    shared = workspace.alternates_mount(ws_path)
    if shared:
        mounts.append(Mount(shared[0], shared[1], True))
    # The command goes in a file, not in the container's command line: a committed image keeps its container's
    # configuration, and the prepared image's record should say nothing of the setup (a secret's name).
    task_dir = jdir / "setup-task"
    remove_tree(task_dir)
    task_dir.mkdir(mode=0o755)
    prologue = f"TOREN_SECRETS_DIR={CONTAINER_SECRETS}; export TOREN_SECRETS_DIR\n" if plan.setup_secrets else ""
    (task_dir / "setup.sh").write_text(f"{prologue}{command.command}\n", "utf-8")
    (task_dir / "setup.sh").chmod(0o444)
    mounts.append(Mount(str(task_dir), CONTAINER_TASK, True))
    if plan.setup_secrets:
        mounts.append(Mount(str(secrets_dir), CONTAINER_SECRETS, True))
    spec = container.ContainerSpec(
        image=agent_tag, command=["/bin/sh", f"{CONTAINER_TASK}/setup.sh"], job_id=job_id,
        user=f"{plan.uid}:{plan.gid}", mounts=mounts, environment={}, network=s.setup_network or "bridge",
        memory=s.memory, cpus=s.cpus, pids_limit=s.pids_limit, timeout_s=plan.timeout_s,
        name=f"toren-{job_id}-setup", role="setup")
    try:
        _write_setup_secrets(plan, secrets_dir)
        run_started = time.monotonic()
        result = container.run(docker, spec, show, on_exit=commit)
    finally:
        remove_tree(secrets_dir)
        remove_tree(task_dir)
    if result.exit_code != 0:
        last = " | ".join(t.strip() for t in tail if t.strip())[-1500:]
        raise SetupFailed(f"the setup ({command.source}) exited with code {result.exit_code}; nothing was pushed"
                          + (f"; its output ended: {last}" if last else ""))
    command_s = exited[0] - run_started
    image.record_built(committed[0], home)
    seal = can_seal(plan)
    paths = keep_workspace_files(ws_path, where, line, seal)
    meta = {"image": tag, "key": key, "paths": list(paths), "command": command.command, "source": command.source,
            "created_at": time.time(), "command_s": command_s, "sealed": seal}
    write_private(where / "meta.json", json.dumps(meta, indent=2))
    env = PreparedEnv(tag, key, "miss", where / "tree", paths, 0.0, docker, sealed=seal, command_s=command_s)
    copy_in(env, ws_path, line)  # back into this job's clone, as every later job gets them
    return env


def _write_setup_secrets(plan: Plan, secrets_dir: Path) -> None:
    """The setup's own secrets, as read-only files of the setup's user (removed as soon as the setup ends)."""
    if not plan.setup_secrets:
        return
    secrets_dir.mkdir(mode=0o700, exist_ok=True)
    owner = (plan.uid, plan.gid) if os.geteuid() == 0 else None
    for secret in plan.setup_secrets:
        write_private(secrets_dir / secret.name, secret.reveal(), 0o400, owner)
    if owner:
        os.chown(secrets_dir, *owner)
    secrets_dir.chmod(0o500)


# -- the workspace's files -----------------------------------------------------------------------------------------

def can_seal(plan: Plan) -> bool:
    """Whether the kept files can be sealed (owned by root, read-only) so that jobs may share them as hard links:
    only when Toren runs as root and the agent does not (an owner could make them writable again)."""
    return os.geteuid() == 0 and plan.uid != 0


def keep_workspace_files(ws_path: Path, where: Path, line: Callable[[str], None],
                         seal: bool = False) -> tuple[str, ...]:
    """After a setup: put back the tracked files it changed (the agent starts from the base commit), and move
    the untracked and ignored files it wrote to ``where``/tree (``seal``: their files then owned by root and
    read-only). Returns their paths (a directory ends in '/')."""
    from toren_action.git import workspace

    changed = [e[3:] for e in workspace.git("status", "--porcelain=v1", "-z", "--untracked-files=no",
                                            "--no-renames", cwd=ws_path, trusted=True).split("\0") if len(e) > 3]
    if changed:
        line(f"setup: it changed {len(changed)} tracked file(s) ({', '.join(changed[:5])}); they are put back as "
             "the base commit has them: a setup prepares the environment, the agent changes the code")
        workspace.git("reset", "--quiet", "--hard", "HEAD", cwd=ws_path, trusted=True)
    listed = [p for p in workspace.git("ls-files", "-z", "--others", "--directory", cwd=ws_path,
                                       trusted=True).split("\0") if p]
    for p in listed:  # Toren's own directory is the agent's (its summary): nothing of the setup's stays there
        if (p + "/").startswith(workspace.TOREN_DIR + "/"):
            target = ws_path / p.rstrip("/")
            if target.is_dir() and not target.is_symlink():
                remove_tree(target)
            else:
                target.unlink(missing_ok=True)
    listed = [p for p in listed if not (p + "/").startswith(workspace.TOREN_DIR + "/")]
    # A .gitignore or .gitattributes of the setup's would be read by host-side git in every later clone (a nested
    # .gitignore outranks .git/info/exclude: `!*.env` would commit files the repository ignores): dropped.
    git_files = [p for p in listed if posixpath.basename(p.rstrip("/")) in GIT_FILES]
    for p in git_files:
        target = ws_path / p.rstrip("/")
        if target.is_dir() and not target.is_symlink():
            remove_tree(target)
        else:
            target.unlink(missing_ok=True)
    if git_files:
        line(f"setup: {', '.join(git_files[:5])} not kept: git's own files in the tree are the commit's to set")
    paths = tuple(sorted(p for p in listed if p not in git_files))
    for p in paths:
        if "\n" in p:
            raise SetupFailed(f"the setup wrote a file whose name holds a line break ({p[:100]!r}); Toren cannot "
                              "keep it out of the commit")
    tmp = where.with_name(where.name + f".tmp{os.getpid()}")
    remove_tree(tmp)
    (tmp / "tree").mkdir(parents=True, mode=0o700)
    for p in paths:
        _move(ws_path, p.rstrip("/"), tmp / "tree")
    _unshare(tmp / "tree")
    if seal:
        _seal(tmp / "tree")
    remove_tree(where)
    tmp.rename(where)
    return paths


def _move(src_root: Path, rel: str, dest_root: Path) -> None:
    """``rel`` from ``src_root`` to the same place under ``dest_root``, its parents made as the source has them
    (git listed it: no parent is a link). A rename; a copy where the two are on different file systems."""
    parent = dest_root
    for part in rel.split("/")[:-1]:
        parent = parent / part
        if not parent.exists():
            st = os.lstat(src_root / parent.relative_to(dest_root))
            parent.mkdir(mode=0o700)
            parent.chmod(stat.S_IMODE(st.st_mode) & 0o755)
            if os.geteuid() == 0:
                os.chown(parent, st.st_uid, st.st_gid)
    try:
        os.rename(src_root / rel, dest_root / rel)
    except OSError:  # another file system: copy, then take it out of the clone as a rename would
        _copy(src_root, [rel], dest_root)
        source = src_root / rel
        if source.is_dir() and not source.is_symlink():
            remove_tree(source)
        else:
            source.unlink(missing_ok=True)


def _unshare(tree: Path) -> None:
    """Every regular file under ``tree`` with other hard links (the setup linked it to a tracked file of the
    clone, say) replaced by a copy of its own, sealed or not: the job's agent may write the clone's file in
    place, and that must never change what the next job gets."""
    for root, _dirs, files in os.walk(tree):
        for name in files:
            path = os.path.join(root, name)
            st = os.lstat(path)
            if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:  # a new name of its own (O_EXCL): never written through
                fd, tmp = tempfile.mkstemp(dir=root, prefix=".toren-unshare-")
                with os.fdopen(fd, "wb") as out, open(os.open(path, os.O_RDONLY | os.O_NOFOLLOW), "rb") as src:
                    shutil.copyfileobj(src, out)
                shutil.copystat(path, tmp, follow_symlinks=False)
                os.replace(tmp, path)


def _seal(tree: Path) -> None:
    """Every regular file under ``tree`` (no other hard link: _unshare) owned by root and read-only, no set-id
    bit: an agent (not root, without capabilities) can replace such a file in its own directory, never change
    it in place."""
    for root, _dirs, files in os.walk(tree):
        for name in files:
            path = os.path.join(root, name)
            st = os.lstat(path)
            if not stat.S_ISREG(st.st_mode):
                continue
            os.chown(path, 0, 0)
            os.chmod(path, stat.S_IMODE(st.st_mode) & 0o555)


def sealed_intact(tree: Path) -> bool:
    """Whether every regular file of a sealed tree is still root's and read-only (else nothing of it is shared).
    One ``find`` (a walk in Python costs several times as much on a .venv's thousands of files)."""
    proc = subprocess.run(["find", str(tree), "-type", "f", "(", "!", "-uid", "0", "-o", "-perm", "/7222", ")",
                           "-print", "-quit"], capture_output=True, check=False)
    return proc.returncode == 0 and not proc.stdout


def copy_in(env: PreparedEnv, dest: Path, line: Callable[[str], None] = lambda _: None) -> None:
    """The prepared files into a fresh tree (a job's clone, the verification's tree), as the setup left them,
    then out of that clone's commits. A path whose place the tree already holds (the commit tracks it now) or
    that would go through one of its symlinks is left out. Sealed files come as hard links (no copy): call this
    after any chown of the tree (give_tree_to), which would otherwise reach the kept files."""
    fit = []
    for p in env.paths:
        rel = p.rstrip("/")
        if _blocked(dest, rel):
            line(f"setup: {rel} of the prepared environment is not put in place: the commit has that path")
            continue
        fit.append(p)
    rels = [p.rstrip("/") for p in fit]
    try:
        _copy(env.tree, rels, dest, link=env.sealed)
    except SetupFailed:
        if not env.sealed:
            raise
        for rel in rels:  # no hard links across file systems: what was linked goes, then a copy
            if (dest / rel).is_dir() and not (dest / rel).is_symlink():
                remove_tree(dest / rel)
            else:
                (dest / rel).unlink(missing_ok=True)
        _copy(env.tree, rels, dest)
    if (dest / ".git").is_dir():
        exclude_paths(dest, tuple(fit))
        env.excluded = tuple(fit)


def _blocked(root: Path, rel: str) -> bool:
    """Whether ``rel`` exists under ``root``, or one of its parents there is not a real directory."""
    parts = rel.split("/")
    here = root
    for part in parts[:-1]:
        here = here / part
        try:
            st = os.lstat(here)
        except FileNotFoundError:
            return False  # made by the copy, as a real directory
        if not stat.S_ISDIR(st.st_mode):
            return True
    return os.path.lexists(here / parts[-1])


def _copy(src_root: Path, rels: list[str], dest_root: Path, link: bool = False) -> None:
    """``cp -a --parents`` of each path, run in ``src_root``: links are copied as links, never followed;
    ``link``: files as hard links."""
    if not rels:
        return
    how = ["-l"] if link else ["--reflink=auto"]
    for i in range(0, len(rels), 500):
        proc = subprocess.run(["cp", "-a", "--parents", *how, "--no-dereference", "--", *rels[i:i + 500],
                               str(dest_root)], cwd=src_root, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise SetupFailed(f"could not copy the prepared environment's files: {proc.stderr.strip()[:300]}")


def exclude_paths(ws_path: Path, paths: tuple[str, ...]) -> None:
    """Each prepared path as an anchored pattern in the clone's .git/info/exclude (the agent cannot write it)."""
    if not paths:
        return
    lines = ["# the prepared environment's files (toren setup): never part of the commit"]
    lines += ["/" + _escape(p) for p in paths]
    with open(ws_path / ".git" / "info" / "exclude", "a", encoding="utf-8", errors="surrogateescape") as fh:
        fh.write("\n" + "\n".join(lines) + "\n")


def _escape(path: str) -> str:
    """A path as a gitignore pattern that matches it alone: glob characters escaped, trailing spaces kept."""
    out = "".join("\\" + c if c in "\\*?[" else c for c in path)
    stripped = out.rstrip(" ")
    return stripped + "\\ " * (len(out) - len(stripped))


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# -- cleanup -------------------------------------------------------------------------------------------------------

def prune(docker, home: Path, min_age_s: float | None, dry_run: bool) -> list[str]:
    """The prepared environments not used for ``min_age_s`` (all of them when None): their image and files.
    Returns what was (or would be) removed, one line each."""
    root = home / SETUP_DIR
    if not root.is_dir():
        return []
    done = []
    now = time.time()
    for where in sorted(p for p in root.iterdir() if p.is_dir() and len(p.name) == 64):
        meta_path = where / "meta.json"
        try:
            used = meta_path.stat().st_mtime
            tag = json.loads(meta_path.read_text("utf-8"))["image"]
        except (OSError, ValueError, KeyError):
            used, tag = 0.0, None
        if min_age_s is not None and now - used < min_age_s:
            continue
        done.append(f"prepared environment {where.name[:12]}" + (f" ({tag})" if tag else ""))
        if dry_run:
            continue
        with _locked(root / f"{where.name}.lock"):
            if tag and docker is not None:
                try:
                    img = docker.image(tag)
                    if img is not None and labels(img).get(LABEL_PREPARED) == where.name:
                        docker.remove_image(tag)
                except Exception:  # noqa: BLE001,S110 - gone already, or used by a container: the next cleanup
                    pass
            remove_tree(where)
        (root / f"{where.name}.lock").unlink(missing_ok=True)
    return done
