"""Checks on user input, run before anything starts. Pure functions: each raises UsageError (exit 2)
naming the option and the fix, or returns the parsed value."""

from __future__ import annotations

import os
import posixpath
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from toren_action.core.errors import UsageError
from toren_action.core.patterns import lazy

MAX_BRANCH_LENGTH = 200
MAX_SPEC_BYTES = 1_000_000

_BRANCH_FORBIDDEN = lazy(r"[\x00-\x20\x7f~^:?*\[\\]")
_ENV_NAME = lazy(r"^[A-Za-z_][A-Za-z0-9_]*$")
_GITHUB_NAME = lazy(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})/[A-Za-z0-9._-]{1,100}$")
_GIT_URL = lazy(r"^(?:(?:https?|ssh|git|file)://\S+|[A-Za-z0-9._-]+@[A-Za-z0-9.-]+:\S+)$")
_ISSUE_URL = lazy(
    r"^https?://([^/\s@]+)/(?:api/v3/repos/)?([A-Za-z0-9-]+/[A-Za-z0-9._-]+)/issues/([1-9][0-9]*)/?$")
_ISSUE_SHORT = lazy(r"^([A-Za-z0-9-]+/[A-Za-z0-9._-]+)#([1-9][0-9]*)$")
_NAME_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_IMAGE_REF = lazy(
    r"^(?:(?:localhost(?::[0-9]+)?|[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+(?::[0-9]+)?|[A-Za-z0-9-]+:[0-9]+)/)?"  # registry
    rf"{_NAME_COMPONENT}(?:/{_NAME_COMPONENT})*"  # path
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?"  # tag
    r"(?:@sha256:[a-f0-9]{64})?$"  # digest
)
_IMAGE_ID = lazy(r"^(?:sha256:)?[a-f0-9]{12,64}$")
_NETWORK = lazy(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_GPU_DEVICE = lazy(r"^device=(?:[0-9]+|GPU-[0-9a-fA-F-]+)(?:,(?:[0-9]+|GPU-[0-9a-fA-F-]+))*$")

#: Places inside the container that Toren owns; user volumes may not cover them.
RESERVED_CONTAINER_PATHS = ("/workspace", "/run/toren")
DOCKER_SOCKETS = ("/var/run/docker.sock", "/run/docker.sock")
#: Credential locations under $HOME that are never mounted unless listed in `allow_mounts`.
CREDENTIAL_DIRS = (
    ".ssh", ".aws", ".gnupg", ".docker", ".kube", ".azure", ".netrc", ".git-credentials",
    ".config/gh", ".config/gcloud", ".claude", ".claude.json", ".codex", ".gemini", ".npmrc", ".pypirc",
)


def user_path(text: str, cwd: str) -> Path:
    """A path as the user wrote it: ~ expanded, relative to cwd."""
    return Path(cwd, Path(text).expanduser())


def _stat_kind(path: Path, option: str) -> str | None:
    """'dir', 'file', 'other' or None (absent), or a UsageError for a path that cannot even be looked at."""
    try:
        if path.is_dir():
            return "dir"
        if path.is_file():
            return "file"
        return "other" if path.exists() else None
    except OSError as exc:
        raise UsageError(option, f"cannot look at {str(path)[:80]} ({exc.strerror}); give a shorter or "
                                 "accessible path") from None


def branch_name(name: str, option: str = "--branch") -> str:
    """git check-ref-format rules for a branch (``git check-ref-format --branch``), plus a length cap; a full
    ``refs/heads/NAME`` is understood as NAME, any other ``refs/`` name refused. Returns the branch's name."""
    problem = None
    if name.startswith("refs/heads/"):
        name = name[len("refs/heads/"):]
    if name == "HEAD" and "BASE" in option.upper():
        raise UsageError(option, "HEAD is not a branch; to start from the checked-out commit pass --base-ref HEAD")
    if name.startswith("refs/"):
        problem = "is a ref other than a branch (refs/heads/NAME or plain NAME)"
    elif not name:
        problem = "is empty"
    elif len(name) > MAX_BRANCH_LENGTH:
        problem = f"is longer than {MAX_BRANCH_LENGTH} characters"
    elif _BRANCH_FORBIDDEN.search(name):
        problem = "contains a space, a control character or one of ~ ^ : ? * [ \\"
    elif name.startswith("-"):
        problem = "starts with '-'"
    elif name in ("@", "HEAD") or "@{" in name:
        problem = "is HEAD, '@' or contains '@{'"
    elif ".." in name:
        problem = "contains '..'"
    elif name.startswith("/") or name.endswith("/") or "//" in name:
        problem = "has an empty path component ('/' at an end or '//')"
    elif name.endswith("."):
        problem = "ends with '.'"
    elif any(part.startswith(".") or part.endswith(".lock") for part in name.split("/")):
        problem = "has a component starting with '.' or ending with '.lock'"
    if problem:
        shown = repr(name) if len(name) <= 60 else f"{name[:60]!r}… ({len(name) - 60} more characters)"
        raise UsageError(option, f"branch name {shown} {problem}; use a name like toren/fix-parser")
    return name


@dataclass(frozen=True)
class RepoRef:
    kind: str  # "local" | "url" | "github"
    location: str  # absolute path, URL, or owner/name


def repo_spec(spec: str, cwd: str) -> RepoRef:
    """A local path (must be a git work tree or bare repo), a git URL, or owner/name on GitHub."""
    if not spec or "\n" in spec or "\x00" in spec:
        raise UsageError("--repo", "is empty or has a newline; give a path, a git URL or owner/name")
    path = user_path(spec, cwd)
    kind = _stat_kind(path, "--repo")
    if kind is not None:
        if kind != "dir":
            raise UsageError("--repo", f"{spec} is a file, not a repository directory")
        top = repo_top_level(path)
        if top is None:
            raise UsageError("--repo", f"{spec} is not a git repository (nor inside one); run `git init` there or "
                                       "pick another path")
        return RepoRef("local", str(top))
    if _GIT_URL.match(spec):
        if re.match(r"^[a-z]+://[^/@]*:[^/@]*@", spec) or re.match(r"^https?://[^/@]+@", spec):
            raise UsageError("--repo", "the URL carries a credential; remove it and let a git credential helper "
                                       "supply it, so it never reaches the job's files, logs or records")
        return RepoRef("url", spec)
    if _GITHUB_NAME.match(spec) and not spec.startswith((".", "/")):
        return RepoRef("github", spec)
    raise UsageError("--repo", f"{spec!r} is neither an existing directory, a git URL nor owner/name")


def _is_repository(path: Path) -> bool:
    """A work tree's top level (``.git``, a directory or a worktree's file) or a bare repository."""
    try:
        return (path / ".git").exists() or ((path / "HEAD").is_file() and (path / "objects").is_dir())
    except OSError:
        return False


def repo_top_level(path: Path) -> Path | None:
    """The repository ``path`` is in, as git finds it: ``path`` itself or the nearest parent holding ``.git``
    (a subdirectory of a checkout is that checkout), not crossing into another file system (git's default).
    None when there is none."""
    try:
        here = path.resolve()
        device = here.stat().st_dev
    except OSError:
        return None
    for candidate in (here, *here.parents):
        try:
            if candidate.stat().st_dev != device:
                return None
        except OSError:
            return None
        if _is_repository(candidate):
            return candidate
    return None


@dataclass(frozen=True)
class IssueRef:
    repo: str  # owner/name
    number: int
    host: str | None = None  # the server's host for a URL (None for OWNER/NAME#N)


def issue_ref(text: str) -> IssueRef:
    m = _ISSUE_URL.match(text.strip())
    if m:
        return IssueRef(m.group(2), int(m.group(3)), m.group(1))
    m = _ISSUE_SHORT.match(text.strip())
    if m:
        return IssueRef(m.group(1), int(m.group(2)))
    raise UsageError("--issue",
                     f"{text!r} is not an issue; use https://github.com/OWNER/NAME/issues/N or OWNER/NAME#N")


_PR_URL = lazy(
    r"^https?://([^/\s@]+)/([A-Za-z0-9-]+/[A-Za-z0-9._-]+)/pulls?/([1-9][0-9]*)(?:/(?:files|commits|checks))?/?"
    r"(?:#[\w-]*)?$")


def pr_ref(text: str) -> IssueRef:
    """A pull request: its URL (``https://HOST/OWNER/NAME/pull/N``) or ``OWNER/NAME#N``."""
    m = _PR_URL.match(text.strip())
    if m:
        return IssueRef(m.group(2), int(m.group(3)), m.group(1))
    m = _ISSUE_SHORT.match(text.strip())
    if m:
        return IssueRef(m.group(1), int(m.group(2)))
    raise UsageError("--pr", f"{text!r} is not a pull request; use https://github.com/OWNER/NAME/pull/N or "
                             "OWNER/NAME#N")


def image_ref(ref: str, option: str = "--base-image") -> str:
    if not ref or len(ref) > 512 or not (_IMAGE_REF.match(ref) or _IMAGE_ID.match(ref)):
        raise UsageError(option,
                         f"{ref!r} is not an image reference; use a name like python:3.11 or ghcr.io/org/img:tag")
    return ref


def env_pair(text: str, option: str = "--env") -> tuple[str, str]:
    if "=" not in text:
        raise UsageError(option, f"{text!r} has no '='; use KEY=VALUE")
    key, value = text.split("=", 1)
    return env_entry(key, value, option)


def env_entry(key: str, value: str, option: str = "--env") -> tuple[str, str]:
    if not _ENV_NAME.fullmatch(key):  # not match(): its '$' also matches before a final newline
        raise UsageError(option, f"{key!r} is not a valid variable name; use letters, digits and '_'")
    if any(c in value for c in "\n\r\x00"):
        raise UsageError(option, f"the value of {key} contains a newline or NUL byte; pass multi-line data as a file")
    return key, value


@dataclass(frozen=True)
class Mount:
    source: str  # absolute host path
    target: str  # absolute container path
    read_only: bool


def volume_spec(spec: str, cwd: str, home: str, allowed: tuple[str, ...] = ()) -> Mount:
    """SRC:DST[:ro|rw] with an existing host SRC; sensitive host paths refused unless allowed."""
    parts = spec.split(":")
    if len(parts) not in (2, 3) or not parts[0] or not parts[1]:
        raise UsageError("--volume", f"{spec!r} is not SRC:DST[:ro|rw]; e.g. /data/models:/workspace/models:ro")
    src, dst = parts[0], parts[1]
    mode = parts[2] if len(parts) == 3 else "rw"
    if mode not in ("ro", "rw"):
        raise UsageError("--volume", f"mode {mode!r} in {spec!r} must be ro or rw")
    if ".." in PurePosixPath(src).parts or ".." in PurePosixPath(dst).parts:
        raise UsageError("--volume", f"{spec!r} contains '..'; give the paths without it")
    if dst.startswith("/"):
        dst = re.sub("/+", "/", posixpath.normpath(dst))
    if not dst.startswith("/") or dst == "/":
        raise UsageError("--volume", f"container path {dst!r} must be absolute and not '/'")
    for reserved in RESERVED_CONTAINER_PATHS:
        if dst == reserved or (reserved == "/run/toren" and dst.startswith(reserved + "/")):
            raise UsageError("--volume", f"container path {dst} is Toren's own; mount somewhere else")
    host = user_path(src, cwd)
    if _stat_kind(host, "--volume") is None:
        raise UsageError("--volume", f"host path {src} does not exist; create it or fix the path")
    real = os.path.realpath(host)
    allowed_real = {os.path.realpath(user_path(a, cwd)) for a in allowed}
    if real not in allowed_real:
        reason = _sensitive_reason(real, os.path.realpath(home))
        if reason:
            raise UsageError(
                "--volume", f"refusing to mount {real} ({reason}); list it in allow_mounts (TOREN_ALLOW_MOUNTS or a "
                            "--config file) if you mean it"
            )
    return Mount(real, dst, mode == "ro")


def _sensitive_reason(real: str, home: str) -> str | None:
    if real == "/":
        return "the host's root"
    if real in DOCKER_SOCKETS or real.endswith("/docker.sock"):
        return "the Docker socket gives root on the host"
    if real == home:
        return "your whole home directory"
    for name in CREDENTIAL_DIRS:
        cred = os.path.join(home, name)
        if real == cred or real.startswith(cred + "/") or cred.startswith(real + "/"):
            return f"it holds or contains credentials ({cred})"
    if real in ("/etc", "/root", "/var/run", "/run", "/proc", "/sys", "/dev", "/boot"):
        return "a system directory"
    return None


def gpus_spec(text: str) -> str:
    if text == "all" or _GPU_DEVICE.match(text) or (text.isdigit() and int(text) > 0):
        return text
    raise UsageError("--gpus", f"{text!r} is not a GPU request; use all, a count like 2, or device=0,1")


def network_spec(text: str) -> str:
    if _NETWORK.match(text) and not text.startswith("container"):
        return text
    raise UsageError("--network", f"{text!r} is not a network; use bridge, host, none or a network name")


#: Docker's smallest memory limit for a container (its daemon refuses less when the container is created).
MIN_MEMORY_BYTES = 6 * 1024 * 1024
_SIZE = lazy(r"^([0-9]+)([bkmg]?)$", re.I)


def memory_size(text: str, option: str = "--memory") -> int:
    """A Docker memory size (4g, 512m, 1073741824) in bytes, at least Docker's minimum of 6 MB."""
    m = _SIZE.match(text)
    if not m:
        raise UsageError(option, f"{text[:40]} is not a size; use a number with b, k, m or g, e.g. 4g")
    size = int(m.group(1)) * 1024 ** " kmg".index(m.group(2).lower() or " ") if m.group(2).lower() != "b" \
        else int(m.group(1))
    if size < MIN_MEMORY_BYTES:
        raise UsageError(option, f"{text} is below Docker's minimum of 6m; give at least 6m (e.g. 4g)")
    return size


def positive_number(value: float, option: str, maximum: float | None = None) -> float:
    if not value > 0 or (maximum is not None and value > maximum):
        bound = f" and at most {maximum:g}" if maximum is not None else ""
        raise UsageError(option, f"{value!r} must be greater than 0{bound}")
    return value


def spec_file(path: str, cwd: str) -> Path:
    p = user_path(path, cwd)
    if _stat_kind(p, "--spec") != "file":
        raise UsageError("--spec", f"{path} is not a file; give the path of a markdown file holding the task")
    size = p.stat().st_size
    if size == 0:
        raise UsageError("--spec", f"{path} is empty; write the task in it")
    if size > MAX_SPEC_BYTES:
        raise UsageError("--spec", f"{path} is larger than {MAX_SPEC_BYTES} bytes; shorten the task")
    try:
        text = p.read_text("utf-8")
    except (UnicodeDecodeError, OSError) as exc:
        raise UsageError("--spec", f"{path} cannot be read as UTF-8 text ({exc.__class__.__name__})") from None
    if not text.translate(_INVISIBLE).strip():  # white space, a BOM, zero-width characters: no task either
        raise UsageError("--spec", f"{path} holds only white space; write the task in it")
    return p.resolve()


#: Characters that show nothing and that str.strip() keeps: a spec of only these is as empty as a blank one.
_INVISIBLE = dict.fromkeys(map(ord, "\ufeff\u200b\u200c\u200d\u2060\u00ad"))


def ca_bundle_file(path: str, origin: str) -> Path:
    p = Path(path).expanduser()
    if _stat_kind(p, origin) != "file":
        raise UsageError(origin, f"CA bundle {path} is not a file; give a PEM file or unset {origin}")
    try:
        text = p.read_text("utf-8", errors="replace")
    except OSError as exc:
        raise UsageError(origin, f"cannot read CA bundle {path} ({exc.strerror})") from None
    if "-----BEGIN CERTIFICATE-----" not in text:
        raise UsageError(origin, f"{path} holds no PEM certificate; give a PEM CA bundle")
    return p.resolve()


def secret_name(name: str, environ: dict[str, str]) -> str:
    if not _ENV_NAME.match(name):
        raise UsageError("--secret", f"{name!r} is not a variable name; name a host environment variable")
    if not environ.get(name):
        raise UsageError("--secret", f"{name} is not set in your environment; export it first")
    return name


#: The most files one cache-key pattern set may select (each file's blob id goes into the setup's key).
MAX_CACHE_KEY_FILES = 10_000


def cache_key_pattern(pattern: str, option: str = "--setup-cache-key") -> str:
    """A glob of files in the repository (``requirements*.txt``, ``**/package.json``): relative to its root, with
    no ``..`` and no empty part; anything else points outside the repository or at nothing."""
    parts = pattern.split("/")
    if (not pattern or pattern.startswith(("/", "~")) or "\\" in pattern or "\0" in pattern
            or any(p in ("", ".", "..") for p in parts)):
        raise UsageError(option, f"{pattern!r} is not a pattern inside the repository; give a glob relative to its "
                                 "root without '..' (e.g. requirements*.txt or **/package.json)")
    return pattern


def cache_key_regex(pattern: str) -> re.Pattern[str]:
    """A cache-key glob as a regular expression over a repository path: ``*`` and ``?`` within one part, ``[...]``
    a class, ``**/`` any number of directories, ``/**`` everything below."""
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:[^/]+/)*")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[" and "]" in pattern[i + 2:]:
            end = pattern.index("]", i + 2)
            body = pattern[i + 1:end]
            out.append("[" + ("^" + re.escape(body[1:]) if body.startswith("!") else re.escape(body)) + "]")
            i = end + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"\Z", re.S)


def setup_script_in_repo(repo_root: Path, relpath: str) -> None:
    """The setup script of a local repository (``.toren/setup.sh``): when it is a symlink, it must resolve inside
    the repository (UsageError, exit 2, otherwise: nothing is started)."""
    path = repo_root / relpath
    if not path.is_symlink() and not (path.parent.is_symlink()):
        return
    real, root = os.path.realpath(path), os.path.realpath(repo_root)
    if not (real == root or real.startswith(root.rstrip("/") + "/")):
        raise UsageError(relpath, f"is a symlink out of the repository (to {real}); Toren runs a setup script only "
                                  "from inside the repository: make it a regular file")
