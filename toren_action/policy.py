"""The diff policy: what an agent's commit may not contain, checked on the host before anything is pushed.

Rules (each can be allowed by name with ``allow_policy``; workflow changes also with ``--allow-workflow-changes``):

- ``secret-value``: the value of a credential or ``--secret`` of this job (always on; cannot be allowed).
- ``secret-pattern``: known token formats (GitHub, Anthropic, OpenAI, Google, AWS, Slack, private keys) and
  long high-entropy strings assigned to key/token/secret/password names, in added lines.
- ``workflow``: changes under ``.github/workflows/`` or to ``action.yml``: an agent that edits workflows can
  reach the repository's secrets.
- ``symlink``: a new or changed symlink that points outside the repository.
- ``large-file``: a file over ``max_file_mb``.
- ``binary``: a binary file added or changed.
- ``protected-path``: a file matching ``protected_paths``.
"""

from __future__ import annotations

import fnmatch
import math
import posixpath
import re
from collections.abc import Callable
from dataclasses import dataclass

#: Known credential formats. Kept specific (prefix + length) so that ordinary text never matches.
TOKEN_PATTERNS: dict[str, str] = {
    "GitHub token": r"\b(?:gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{50,255})\b",
    "Anthropic key": r"\bsk-ant-[A-Za-z0-9_-]{20,}",
    "OpenAI key": r"\bsk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{32,}",
    "Google API key": r"\bAIza[0-9A-Za-z_-]{35}\b",
    "AWS access key": r"\b(?:AKIA|ASIA|ABIA|ACCA)[0-9A-Z]{16}\b",
    "Slack token": r"\bxox[abposr]-[A-Za-z0-9-]{10,}",
    "private key": r"-----BEGIN (?:[A-Z]+ )?PRIVATE KEY-----",
}
TOKEN_RE = re.compile("|".join(f"(?:{p})" for p in TOKEN_PATTERNS.values()))
_NAMED = [(name, re.compile(p)) for name, p in TOKEN_PATTERNS.items()]
_ASSIGNED = re.compile(r"""(?i)(?:key|token|secret|passw(?:or)?d|credential)s?["']?\s*[:=]\s*["']([^"'\s]{20,})["']""")
RULES = ("secret-value", "secret-pattern", "workflow", "symlink", "large-file", "binary", "protected-path")
WORKFLOW_PATHS = (".github/workflows/", "action.yml", "action.yaml")


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


def scan_text(path: str, added: list[tuple[int, str]], redact: Callable[[str], str]) -> list[Finding]:
    """Secrets in added lines: the job's own values (via the redactor), known formats, high-entropy assignments."""
    found = []
    for number, line in added:
        if redact(line) != line:
            found.append(Finding("secret-value", path, number, "the value of one of this job's secrets"))
            continue
        for name, pattern in _NAMED:
            if pattern.search(line):
                found.append(Finding("secret-pattern", path, number, f"looks like a {name}: "
                                                                     f"{mask_tokens(line.strip())[:120]}"))
                break
        else:
            m = _ASSIGNED.search(line)
            if m and entropy(m.group(1)) >= 4.0 and not re.fullmatch(r"[a-z_.]+|\$\{?\w+\}?", m.group(1)):
                found.append(Finding("secret-pattern", path, number,
                                     "a high-entropy string assigned to a secret-like name"))
    return found


#: Every token format contains one of these; a line without any is skipped without running the regex.
TOKEN_LITERALS = ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_", "sk-", "AIza", "AKIA", "ASIA", "ABIA", "ACCA",
                  "xox", "PRIVATE KEY")


_LITERAL_RE = re.compile("|".join(re.escape(lit) for lit in TOKEN_LITERALS))


def mask_tokens(text: str) -> str:
    """Mask known token formats. Fast on ordinary text (one literal search; see bench/bench_redact.py): the
    token regex runs only on the lines that hold a token's literal."""
    if _LITERAL_RE.search(text) is None:
        return text
    if len(text) < 4096:
        return TOKEN_RE.sub("***", text)
    out, pos = [], 0
    for m in _LITERAL_RE.finditer(text):
        if m.start() < pos:
            continue
        start = text.rfind("\n", 0, m.start()) + 1
        end = text.find("\n", m.end())
        end = len(text) if end < 0 else end
        out += [text[pos:start], TOKEN_RE.sub("***", text[start:end])]
        pos = end
    out.append(text[pos:])
    return "".join(out)


def check(git: Callable[..., str], base: str, head: str | None, workdir: str, policy: Policy,
          redact: Callable[[str], str]) -> list[Finding]:
    """Every finding in the change base..head of the repository at ``workdir`` (``git`` runs git there);
    ``head`` None means what is staged in the index (a pre-commit hook)."""
    findings: list[Finding] = []
    revs = ["--cached", base] if head is None else [f"{base}..{head}"]
    blob = (lambda path: f":{path}") if head is None else (lambda path: f"{head}:{path}")
    raw = git("diff", "--raw", "-z", "--no-renames", *revs)
    parts = raw.split("\0")
    changed: list[tuple[str, str, str]] = []  # (status, new mode, path)
    for i in range(0, len(parts) - 1, 2):
        meta, path = parts[i], parts[i + 1]
        fields = meta.lstrip(":").split()
        if len(fields) >= 5:
            changed.append((fields[4], fields[1], path))
    numstat = {}
    for line in git("diff", "--numstat", "-z", "--no-renames", *revs).split("\0"):
        bits = line.split("\t")
        if len(bits) == 3:
            numstat[bits[2]] = (bits[0], bits[1])
    for status, mode, path in changed:
        if path.startswith(WORKFLOW_PATHS[0]) or path in WORKFLOW_PATHS[1:]:
            findings.append(Finding("workflow", path, None, "changes a GitHub Actions workflow or action"))
        if any(fnmatch.fnmatch(path, pat) for pat in policy.protected_paths):
            findings.append(Finding("protected-path", path, None, "matches protected_paths"))
        if status == "D":
            continue
        if mode == "120000":
            target = git("cat-file", "-p", blob(path))
            resolved = posixpath.normpath(posixpath.join(posixpath.dirname(path), target))
            if target.startswith("/") or resolved == ".." or resolved.startswith("../"):
                findings.append(Finding("symlink", path, None, f"a symlink to {target!r}, outside the repository"))
            continue
        size = int(git("cat-file", "-s", blob(path)).strip() or 0)
        if size > policy.max_file_bytes:
            findings.append(Finding("large-file", path, None, f"{size / 1e6:.1f} MB, over the "
                                                              f"{policy.max_file_bytes / 1e6:.0f} MB cap"))
        if numstat.get(path) == ("-", "-"):
            findings.append(Finding("binary", path, None, f"a binary file ({size} bytes)"))
    findings += _added_line_findings(git, revs, redact)
    return [f for f in findings if f.rule == "secret-value" or f.rule not in policy.allow]


def _added_line_findings(git, revs: list[str], redact) -> list[Finding]:
    # quotePath off: a file with a non-ASCII name is named as it is, not quoted (and so not skipped)
    patch = git("-c", "core.quotePath=false", "diff", "-U0", "--no-color", "--no-ext-diff", "--no-renames", *revs)
    findings, path, number, added = [], None, 0, []
    for line in patch.splitlines():
        if line.startswith("+++ "):
            if path and added:
                findings += scan_text(path, added, redact)
            path = line[6:] if line.startswith("+++ b/") else None
            added = []
        elif line.startswith("@@"):
            m = re.search(r"\+(\d+)", line)
            number = int(m.group(1)) if m else 0
        elif line.startswith("+") and path:
            added.append((number, line[1:]))
            number += 1
    if path and added:
        findings += scan_text(path, added, redact)
    return findings


def describe(findings: list[Finding]) -> str:
    rules = sorted({f.rule for f in findings})
    first = findings[0]
    more = f" and {len(findings) - 1} more" if len(findings) > 1 else ""
    return (f"the diff policy blocked the change ({', '.join(rules)}): {first}{more}; nothing was pushed "
            f"(allow a rule with --allow-policy RULE" + (", workflows with --allow-workflow-changes"
                                                          if "workflow" in rules else "") + ")")

