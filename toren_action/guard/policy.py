"""The diff policy: what an agent's commit may not contain, checked on the host before anything is pushed.

Rules (each can be allowed by name with ``allow_policy``; workflow changes also with ``--allow-workflow-changes``):

- ``secret-value``: the value of a credential or ``--secret`` of this job, in any changed file (text or binary,
  whatever its attributes) or symlink target (always on; cannot be allowed).
- ``secret-pattern``: known token formats (GitHub, Anthropic, OpenAI, Google, AWS, Slack, private keys) and
  long high-entropy strings assigned to key/token/secret/password names, in added lines.
- ``workflow``: any change under ``.github/`` or to an ``action.yml``/``action.yaml`` at any depth: an agent that
  edits workflows or the actions they run can reach the repository's secrets; and to Toren's own
  ``.toren/setup.sh`` or ``toren.toml`` (SETUP_FILES), whose setup a later job runs with the network and the
  setup's secrets.
- ``symlink``: a symlink of the new tree that resolves outside the repository or into its ``.git``, followed
  through every other link of that tree (chains, ``..`` through a directory link), or that does not resolve.
- ``large-file``: a file over ``max_file_mb``.
- ``binary``: a binary file (a NUL byte in its first 8000 bytes) added or changed.
- ``protected-path``: a file matching ``protected_paths``; ``@ci`` there stands for the files CI runs (PRESETS).

How it reads the change: it never parses patch text. The changed paths come from ``git diff-tree``/``diff-index
--raw -z`` (NUL-separated, nothing quoted); each new blob's bytes come from ``git cat-file --batch`` exactly as
stored, so no ``.gitattributes`` (``-diff``, ``binary``, ``diff=…``, textconv) and no config of the host
(prefixes, quoting, external diff) can change what is judged. Lines are split on ``\n`` only; a line is
"added" when the old blob of the same path has no identical line (line numbers are the new blob's). Bounds:
blobs up to ``DIFF_LIMIT`` are compared with the old blob; bigger ones (already ``large-file``) are streamed in
chunks, every line counted as added, very long lines in overlapping windows, so a secret cannot hide past a
cap; a blob over ``SCAN_LIMIT`` (far above GitHub's 100 MiB file limit) is not read at all and is a
``secret-value`` finding, so it can never be pushed.
"""

from __future__ import annotations

import fnmatch
import math
import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from toren_action.core.errors import GitError, UsageError
from toren_action.core.patterns import lazy
from toren_action.core.redact import LITERAL_RE, TOKEN_PATTERNS, mask_tokens
from toren_action.git import workspace

_NAMED = [(name, lazy(p)) for name, p in TOKEN_PATTERNS.items()]
_ASSIGNED = lazy(r"""(?i)(?:key|token|secret|passw(?:or)?d|credential)s?["']?\s*[:=]\s*["']([^"'\s]{20,})["']""")
RULES = ("secret-value", "secret-pattern", "workflow", "symlink", "large-file", "binary", "protected-path")
#: Everything under this directory counts as a workflow change (workflows, composite actions, dependabot...).
WORKFLOW_DIR = ".github/"
#: A file with one of these names, at any depth, is an action a workflow can run with the repository's secrets.
ACTION_FILES = ("action.yml", "action.yaml")
#: Toren's own files in the repository: the setup script and the settings (its ``[setup] run``, ``verify``). A
#: later job whose base holds the change (a review round of its pull request, ``--base-branch``) runs that setup
#: with the network and the setup's secrets: a workflow change, as an agent that edits them reaches both.
SETUP_FILES = (".toren/setup.sh", "toren.toml")
#: ``@name`` in protected_paths stands for these globs. ``ci``: files that CI, build tools or test runners run.
PRESETS: dict[str, tuple[str, ...]] = {
    "ci": ("Makefile", "makefile", "GNUmakefile", "*.mk", "conftest.py", "pytest.ini", "setup.py", "setup.cfg",
           "pyproject.toml", "tox.ini", "noxfile.py", ".pre-commit-config.yaml", ".pre-commit-hooks.yaml",
           "package.json", ".npmrc", ".yarnrc", ".yarnrc.yml", "Gruntfile.js", "gulpfile.js", "Rakefile",
           "Gemfile", "build.gradle", "build.gradle.kts", "settings.gradle", "settings.gradle.kts", "gradlew",
           "pom.xml", "build.sbt", "build.rs", "Cargo.toml", "Justfile", "justfile", "Taskfile.yml",
           "Dockerfile", "docker-compose.yml", "compose.yaml", ".gitlab-ci.yml", ".travis.yml",
           "azure-pipelines.yml", "Jenkinsfile", "bitbucket-pipelines.yml", ".circleci/*", ".buildkite/*",
           ".devcontainer/*", ".vscode/*", ".envrc", ".gitmodules", "gradle/wrapper/*", "gradlew.bat",
           ".mvn/*", "mvnw", "mvnw.cmd", ".cargo/config", ".cargo/config.toml", "rust-toolchain",
           "rust-toolchain.toml", "CMakeLists.txt", "*.cmake", "meson.build", "BUILD", "BUILD.bazel", "WORKSPACE",
           "MODULE.bazel", ".bazelrc", ".husky/*", "lefthook.yml", ".lintstagedrc*", "go.mod", "Pipfile",
           "requirements*.txt", "uv.lock", "poetry.lock", "package-lock.json", "yarn.lock", "pnpm-lock.yaml"),
}
#: git's own test: a NUL byte in the first 8000 bytes makes a file binary (here whatever its attributes say).
BINARY_PROBE = 8000
#: Blobs up to this size are compared line by line with the old blob; bigger ones are streamed, all added.
DIFF_LIMIT = 32 * 1024 * 1024
#: Blobs over this size are not read: a ``secret-value`` finding (they cannot be scanned, so never pushed).
SCAN_LIMIT = 256 * 1024 * 1024
#: Lines longer than LINE_WINDOW are scanned in windows of LINE_WINDOW + LINE_OVERLAP bytes.
LINE_WINDOW = 1024 * 1024
LINE_OVERLAP = 64 * 1024
#: At most this many findings per file (the first ones; the file is named either way).
MAX_FINDINGS_PER_FILE = 50
#: The longest chain of symlinks followed (Linux's limit).
MAX_LINK_HOPS = 40
_NULL_OID = lazy(r"0+")
_RAW = lazy(r":(\d{6}) (\d{6}) ([0-9a-f]{40,64}) ([0-9a-f]{40,64}) ([A-Z])\d*")


@dataclass(frozen=True)
class Finding:
    rule: str
    path: str
    line: int | None
    detail: str

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else self.path
        return f"{self.rule}: {where}: {self.detail}"

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass(frozen=True)
class Policy:
    allow: frozenset[str] = frozenset()
    protected_paths: tuple[str, ...] = ()
    max_file_bytes: int = 5 * 1024 * 1024


def entropy(text: str) -> float:
    counts = {c: text.count(c) for c in set(text)}
    return -sum(n / len(text) * math.log2(n / len(text)) for n in counts.values())


def scan_text(path: str, added: list[tuple[int, str]], redact: Callable[[str], str],
              entropy_check: bool = True) -> list[Finding]:
    """Secrets in added lines: the job's own values (via the redactor), known formats, high-entropy assignments
    (``entropy_check``; off for binary files). Line number 0: not a line (a symlink target)."""
    found = []
    for number, line in added:
        where = number or None
        if redact(line) != line:
            found.append(Finding("secret-value", path, where, "the value of one of this job's secrets"))
            continue
        if LITERAL_RE.search(line):
            name = next((name for name, pattern in _NAMED if pattern.search(line)), None)
            if name:
                snippet = _printable_path(mask_tokens(line.strip())[:120])
                found.append(Finding("secret-pattern", path, where, f"looks like a {name}: {snippet}"))
                continue
        if entropy_check:
            m = _ASSIGNED.search(line)
            if m and entropy(m.group(1)) >= 4.0 and not re.fullmatch(r"[a-z_.]+|\$\{?\w+\}?", m.group(1)):
                found.append(Finding("secret-pattern", path, where,
                                     "a high-entropy string assigned to a secret-like name"))
    return found


def check(git: Callable[..., str], base: str, head: str | None, workdir: str, policy: Policy,
          redact: Callable[[str], str]) -> list[Finding]:
    """Every finding in the change base..head of the repository at ``workdir`` (``git`` runs host-side git
    there, as workspace.git does: fixed options, output decoded with surrogateescape); ``head`` None means what
    is staged in the index (a pre-commit hook). Blob contents are read from the git directory ``git`` reports,
    so the ownership decision is the one ``git`` made."""
    changes = _changes(git, base, head)
    protected = protected_patterns(policy.protected_paths)
    findings: list[Finding] = []
    for change in changes:
        findings += _path_findings(change, protected, redact)
    git_dir = git("rev-parse", "--absolute-git-dir").rstrip("\n")
    with workspace.Blobs(git_dir) as blobs:
        findings += _symlink_findings(git, base, changes, blobs, redact)
        for change in changes:
            if change.status != "D" and change.new_mode in ("100644", "100755") \
                    and not _NULL_OID.fullmatch(change.new_oid):
                findings += _content_findings(change, blobs, policy, redact)
    return [f for f in findings if f.rule == "secret-value" or f.rule not in policy.allow]


@dataclass(frozen=True)
class _Change:
    status: str
    old_mode: str
    new_mode: str
    old_oid: str
    new_oid: str
    path: str  # git's bytes, decoded with surrogateescape


def _changes(git: Callable[..., str], base: str, head: str | None) -> list[_Change]:
    """The changed entries, from plumbing in raw NUL-separated form: one metadata record, one path, and so on
    (no renames or copies, so exactly one path each); anything else is refused rather than guessed at."""
    opts = ("-r", "-z", "--raw", "--no-renames", "--no-abbrev", "--ignore-submodules=none")
    if head is None:
        raw = git("diff-index", "--cached", *opts, base, "--")
    else:
        raw = git("diff-tree", *opts, base, head, "--")
    parts = raw.split("\0")
    if parts and parts[-1] == "":
        parts.pop()
    if len(parts) % 2:
        raise GitError("the diff policy could not read git's list of changed files")
    changes = []
    for meta, path in zip(parts[0::2], parts[1::2], strict=True):
        m = _RAW.fullmatch(meta)
        if not m or not path:
            raise GitError("the diff policy could not read git's list of changed files")
        old_mode, new_mode, old_oid, new_oid, status = m.groups()
        changes.append(_Change(status, old_mode, new_mode, old_oid, new_oid, path))
    return changes


def protected_patterns(patterns: Iterable[str]) -> tuple[str, ...]:
    """The globs of ``protected_paths`` with every ``@preset`` expanded (see PRESETS); each preset name
    matches at any depth (``Makefile`` and ``*/Makefile``)."""
    out: list[str] = []
    for pattern in patterns:
        if pattern.startswith("@"):
            names = PRESETS.get(pattern[1:])
            if names is None:
                raise UsageError("--protected-path", f"no preset {pattern!r}; presets: "
                                 + ", ".join(f"@{name}" for name in sorted(PRESETS)))
            out += [g for name in names for g in (name, f"*/{name}")]
        else:
            out.append(pattern)
    return tuple(out)


def is_workflow_path(path: str) -> bool:
    """Anything under .github/ and every action.yml/action.yaml (compared case-insensitively: a runner on a
    case-insensitive file system finds ``Action.YML`` too)."""
    folded = path.casefold()
    return folded.startswith(WORKFLOW_DIR) or folded.rsplit("/", 1)[-1] in ACTION_FILES


def _path_findings(change: _Change, protected: tuple[str, ...], redact: Callable[[str], str]) -> list[Finding]:
    """Rules on the path itself. A file or directory name is data that reaches the branch like any line: it is
    scanned for the job's secret values and for token formats, and the report shows it masked."""
    found = []
    masked = mask_tokens(redact(change.path))
    shown = _printable_path(masked)
    if masked != change.path and change.status != "D":
        rule = "secret-value" if redact(change.path) != change.path else "secret-pattern"
        found.append(Finding(rule, shown, None, "the file's path holds " + (
            "the value of one of this job's secrets" if rule == "secret-value" else "a known token format")))
    if is_workflow_path(change.path):
        found.append(Finding("workflow", shown, None, "changes a GitHub Actions workflow, action or .github file"))
    elif change.path.casefold() in SETUP_FILES:
        found.append(Finding("workflow", shown, None, "changes Toren's setup or settings for this repository (a "
                             "later job runs its setup with the network and the setup's secrets)"))
    if any(fnmatch.fnmatchcase(change.path, pat) for pat in protected):
        found.append(Finding("protected-path", shown, None, "matches protected_paths"))
    return found


def _printable_path(path: str) -> str:
    """A path for the report: undecodable bytes replaced, token formats masked, control characters escaped (a
    newline or an escape sequence in a file name cannot forge or hide report lines)."""
    text = mask_tokens(path.encode("utf-8", "surrogateescape").decode("utf-8", "replace"))
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" if ord(c) < 256 else f"\\u{ord(c):04x}"
                   for c in text)


def _printable(data: bytes) -> str:
    return data.decode("utf-8", "replace")


# -- contents -------------------------------------------------------------------------------------------------

def _content_findings(change: _Change, blobs, policy: Policy, redact: Callable[[str], str]) -> list[Finding]:
    path = _printable_path(change.path)
    found: list[Finding] = []
    with blobs.open(change.new_oid) as (size, chunks):
        if size > policy.max_file_bytes:
            found.append(Finding("large-file", path, None, f"{size / 1e6:.1f} MB, over the "
                                                           f"{policy.max_file_bytes / 1e6:.0f} MB cap"))
        if size > SCAN_LIMIT:
            found.append(Finding("secret-value", path, None, f"{size / 1e6:.0f} MB, too large to scan for this "
                                                             f"job's secrets (over {SCAN_LIMIT >> 20} MiB)"))
            return found
        if size <= DIFF_LIMIT:
            whole = b"".join(chunks)
            data: bytes | None = whole
            first = whole
        else:  # streamed while the object is open; every line counts as added
            data, first = None, next(chunks, b"")
        binary = b"\0" in first[:BINARY_PROBE]
        if binary:
            found.append(Finding("binary", path, None, f"a binary file ({size} bytes)"))
        if data is None:
            found += _scan_lines(path, _lines(_chain(first, chunks)), set(), redact, binary, len(found))
    if data is not None:
        found += _scan_lines(path, _lines(_pieces(data)), _old_lines(change, blobs), redact, binary, len(found))
    return found


def _pieces(data: bytes, size: int = 1 << 20) -> Iterator[bytes]:
    """``data`` in chunks, so that _lines keeps a small buffer even for one long line."""
    for start in range(0, len(data), size):
        yield data[start:start + size]


def _chain(first: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    yield first
    yield from rest


def _old_lines(change: _Change, blobs) -> set[bytes]:
    """The old blob's lines (windows), when there is an old blob of a regular file small enough to compare."""
    if change.old_mode not in ("100644", "100755") or _NULL_OID.fullmatch(change.old_oid):
        return set()
    with blobs.open(change.old_oid) as (size, chunks):
        if size > DIFF_LIMIT:
            return set()
        return {piece for _, piece in _lines(_pieces(b"".join(chunks)))}


def _lines(chunks: Iterable[bytes]) -> Iterator[tuple[int, bytes]]:
    """(line number, bytes) split on ``\\n`` only (never on ``\\r``, a form feed or a Unicode line separator);
    a line longer than LINE_WINDOW comes as overlapping windows with the same number."""
    number, buf = 1, b""
    for chunk in chunks:
        buf = buf + chunk if buf else chunk
        start = 0
        while True:
            end = buf.find(b"\n", start)
            if end < 0:
                break
            yield from _windows(number, buf[start:end])
            number += 1
            start = end + 1
        buf = buf[start:]
        while len(buf) > LINE_WINDOW + LINE_OVERLAP:  # a long line still going on: its windows so far
            yield number, buf[:LINE_WINDOW + LINE_OVERLAP]
            buf = buf[LINE_WINDOW:]
    if buf:
        yield from _windows(number, buf)


def _windows(number: int, line: bytes) -> Iterator[tuple[int, bytes]]:
    if len(line) <= LINE_WINDOW + LINE_OVERLAP:
        yield number, line
        return
    for start in range(0, len(line) - LINE_OVERLAP, LINE_WINDOW):
        yield number, line[start:start + LINE_WINDOW + LINE_OVERLAP]


def _scan_lines(path: str, lines: Iterable[tuple[int, bytes]], old: set[bytes], redact: Callable[[str], str],
                binary: bool, so_far: int) -> list[Finding]:
    """Secrets in the lines not in ``old``: this job's values everywhere; token formats and high-entropy
    assignments in text files, and token formats in binary ones too."""
    found: list[Finding] = []
    budget, have_value = MAX_FINDINGS_PER_FILE - so_far, False
    for number, piece in lines:
        if piece in old or not piece.strip():
            continue
        full = len(found) >= budget  # past the budget only a secret value is still looked for (never allowed)
        if full and have_value:
            break
        for finding in scan_text(path, [(number, _printable(piece))], redact, entropy_check=not binary):
            if full and finding.rule != "secret-value":
                continue
            have_value = have_value or finding.rule == "secret-value"
            if not any(f.rule == finding.rule and f.line == finding.line for f in found):
                found.append(finding)
    return found


# -- symlinks -------------------------------------------------------------------------------------------------

_IGNORABLE = dict.fromkeys(map(ord, "\u200c\u200d\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u206a\u206b\u206c"
                                    "\u206d\u206e\u206f\ufeff"))


def _is_dot_git(component: str) -> bool:
    """``.git`` as file systems may read it: any case, HFS+'s ignorable characters, NTFS's short name,
    trailing dots and spaces."""
    name = unicodedata.normalize("NFC", component.translate(_IGNORABLE)).casefold().rstrip(". ")
    return name in (".git", "git~1")


def _tree(git: Callable[..., str], rev: str) -> dict[str, tuple[str, str]]:
    """path -> (mode, object id) for every entry of ``rev``'s whole tree."""
    entries = {}
    for record in git("ls-tree", "-r", "-z", "--full-tree", rev, "--").split("\0"):
        if not record:
            continue
        meta, sep, path = record.partition("\t")
        fields = meta.split(" ")
        if not sep or len(fields) != 3:
            raise GitError("the diff policy could not read git's tree listing")
        entries[path] = (fields[0], fields[2])
    return entries


class _Links:
    """The symlinks of one tree, their targets read on demand, resolved through each other."""

    def __init__(self, entries: dict[str, tuple[str, str]], blobs) -> None:
        self._oids = {path: oid for path, (mode, oid) in entries.items() if mode == "120000"}
        self._folded = {path.casefold(): path for path in self._oids}
        self._blobs = blobs
        self._targets: dict[str, bytes] = {}

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._oids))

    def __contains__(self, path: str) -> bool:
        return path in self._oids

    def target(self, path: str) -> bytes:
        if path not in self._targets:
            self._targets[path] = self._blobs.read(self._oids[path])
        return self._targets[path]

    def _find(self, path: str) -> str | None:
        """The link at ``path``; on a case-insensitive file system a differently cased name reaches it too."""
        return path if path in self._oids else self._folded.get(path.casefold())

    def resolve(self, path: str) -> tuple[str | None, str | None]:
        """(why it is outside, the link it went through) for the link at ``path``, or (None, None) when it
        stays inside the repository. Each link's target is walked component by component from the link's
        directory, every link met on the way followed in turn; a component that is not a link counts as a
        directory (a missing one might be created later), so the answer is never "inside" by mistake."""
        stack = path.split("/")[:-1]
        pending = _components(self.target(path))
        if pending is None:
            return "absolute", None
        via = None
        hops = 1
        while pending:
            part = pending.pop(0)
            if part in ("", "."):
                continue
            if part == "..":
                if not stack:
                    return "outside", via
                stack.pop()
                continue
            if _is_dot_git(part):
                return ".git", via
            stack.append(part)
            link = self._find("/".join(stack))
            if link is None:
                continue
            hops += 1
            if hops > MAX_LINK_HOPS:
                return "loop", link
            via = via or link
            stack.pop()
            more = _components(self.target(link))
            if more is None:
                return "absolute", link
            pending[:0] = more
        return None, None


def _components(target: bytes) -> list[str] | None:
    """A link target's components; None for an absolute target (or a Windows drive or UNC path)."""
    text = target.decode("utf-8", "surrogateescape")
    if text.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", text):
        return None
    return re.split(r"[/\\]", text)


def _symlink_findings(git, base: str, changes: list[_Change], blobs, redact) -> list[Finding]:
    """Every link of the new tree that escapes, when the change touches any link: a changed link that
    resolves outside, and an unchanged one that did not escape before but does now."""
    if not any("120000" in (c.old_mode, c.new_mode) for c in changes):
        return []
    base_entries = _tree(git, base)
    new_entries = dict(base_entries)
    for c in changes:
        if c.status == "D":
            new_entries.pop(c.path, None)
        else:
            new_entries[c.path] = (c.new_mode, c.new_oid)
    new = _Links(new_entries, blobs)
    old: _Links | None = None
    changed = {c.path for c in changes if c.status != "D" and c.new_mode == "120000"}
    found = []
    for path in new:
        shown = _printable_path(path)
        target = new.target(path)
        if path in changed:
            found += scan_text(shown, [(0, _printable(target))], redact)
        why, via = new.resolve(path)
        if why is None:
            continue
        if path not in changed:
            old = old or _Links(base_entries, blobs)
            if path in old and old.resolve(path)[0] is not None:
                continue  # it escaped before this change too: not this change's doing
        text = _printable(target)
        if why == "absolute" and via is None:
            detail = f"a symlink to {text!r}, outside the repository"
        elif why == "loop":
            detail = f"a symlink to {text!r} that does not resolve (a loop, or over {MAX_LINK_HOPS} links)"
        elif why == ".git":
            detail = f"a symlink to {text!r}, into the repository's .git"
        else:
            detail = f"a symlink to {text!r}, outside the repository"
        if via is not None:
            detail += f" (through the symlink {_printable_path(via)})"
        if path not in changed:
            detail += "; it stays as it was, but a changed symlink now takes it there"
        found.append(Finding("symlink", shown, None, detail))
    return found

def describe(findings: list[Finding]) -> str:
    rules = sorted({f.rule for f in findings})
    first = findings[0]
    more = f" and {len(findings) - 1} more" if len(findings) > 1 else ""
    return (f"the diff policy blocked the change ({', '.join(rules)}): {first}{more}; nothing was pushed "
            f"(allow a rule with --allow-policy RULE" + (", workflows with --allow-workflow-changes"
                                                          if "workflow" in rules else "") + ")")

