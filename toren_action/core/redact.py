"""Secret values as a type, the known token formats, and the one redactor every output path goes through."""

from __future__ import annotations

import re
from collections.abc import Iterable

MASK = "***"
#: Values shorter than this are not masked: they would mask ordinary words and digits.
MIN_SECRET_LENGTH = 4


class Secret:
    """A secret value whose repr/str never show it. Call ``reveal()`` where the value is really needed."""

    __slots__ = ("name", "_value")

    def __init__(self, name: str, value: str) -> None:
        self.name = name
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret({self.name!r}, {MASK!r})"

    __str__ = __repr__

    def __reduce__(self):  # never pickled by accident
        raise TypeError("Secret values cannot be pickled")


class Redactor:
    """Replaces every known secret value (and simple encodings of it) with ``***``."""

    def __init__(self, secrets: Iterable[Secret | str] = ()) -> None:
        values: set[str] = set()
        for s in secrets:
            value = s.reveal() if isinstance(s, Secret) else s
            if value and len(value) >= MIN_SECRET_LENGTH:
                values.add(value)
                values.update(line for line in value.splitlines() if len(line.strip()) >= 8)
                values.update(_json_strings(value))
        ordered = sorted(values, key=len, reverse=True)
        self._pattern = re.compile("|".join(re.escape(v) for v in ordered)) if ordered else None

    def mask_values(self, text: str) -> str:
        """Only this job's secret values (not the token formats)."""
        return self._pattern.sub(MASK, text) if self._pattern is not None and text else text

    def __call__(self, text: str) -> str:
        """The text with every known secret value masked, and every string in a known token format too."""
        if not text:
            return text
        if self._pattern is not None:
            text = self._pattern.sub(MASK, text)
        return mask_tokens(text)

    def bytes(self, data: bytes) -> bytes:
        return self(data.decode("utf-8", errors="replace")).encode("utf-8")


def redact_data(item, redact):
    """Every string in a JSON-like structure (dicts, lists) passed through ``redact``; keys too."""
    if isinstance(item, str):
        return redact(item)
    if isinstance(item, dict):
        return {redact(k) if isinstance(k, str) else k: redact_data(v, redact) for k, v in item.items()}
    if isinstance(item, (list, tuple)):
        return [redact_data(v, redact) for v in item]
    return item


def _json_strings(value: str) -> set[str]:
    """Long string leaves of a JSON secret (a credentials file): each is masked on its own too."""
    if not value.lstrip().startswith(("{", "[")):
        return set()
    import json

    try:
        data = json.loads(value)
    except ValueError:
        return set()
    found: set[str] = set()
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str) and len(item) >= 16:
            found.add(item)
    return found


#: Known credential formats. Formats with a distinctive prefix match anywhere, even inside a longer word
#: (``x`` + a token + ``_`` is still the token): no word boundary to slip past. Only the generic ``sk-`` form
#: keeps one, since ``-sk-`` runs occur in ordinary names ("disk-usage-report-...").
TOKEN_PATTERNS: dict[str, str] = {
    "GitHub token": r"gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{50,}",
    "Anthropic key": r"sk-ant-[A-Za-z0-9_-]{20,}",
    "OpenAI key": r"sk-(?:proj|svcacct|admin)-[A-Za-z0-9_-]{20,}|sk-[A-Za-z0-9]{48,}|\bsk-[A-Za-z0-9_-]{32,}",
    "Google API key": r"AIza[0-9A-Za-z_-]{35,}",
    "AWS access key": r"(?:AKIA|ASIA|ABIA|ACCA)[0-9A-Z]{16,}",
    "Slack token": r"xox[abposr]-[A-Za-z0-9-]{10,}",
    "private key": r"-----BEGIN (?:[A-Z]+ )?PRIVATE KEY-----",
}
TOKEN_RE = re.compile("|".join(f"(?:{p})" for p in TOKEN_PATTERNS.values()))
#: Every token format contains one of these; a line without any is skipped without running the regex.
TOKEN_LITERALS = ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_", "sk-", "AIza", "AKIA", "ASIA", "ABIA", "ACCA",
                  "xox", "PRIVATE KEY")


LITERAL_RE = re.compile("|".join(re.escape(lit) for lit in TOKEN_LITERALS))
#: A variable name that says it holds a credential (ANTHROPIC_API_KEY, GH_TOKEN, DB_PASSWORD, AWS_CREDENTIALS):
#: refused in --env, reported in an image's environment.
CREDENTIAL_NAME = re.compile(r"(?:^|_)(?:API_?KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIALS?)$", re.I)


def mask_tokens(text: str) -> str:
    """Mask known token formats. Fast on ordinary text (one literal search; see bench/bench_redact.py): the
    token regex runs only on the lines that hold a token's literal."""
    if LITERAL_RE.search(text) is None:
        return text
    if len(text) < 4096:
        return TOKEN_RE.sub("***", text)
    out, pos = [], 0
    for m in LITERAL_RE.finditer(text):
        if m.start() < pos:
            continue
        start = text.rfind("\n", 0, m.start()) + 1
        end = text.find("\n", m.end())
        end = len(text) if end < 0 else end
        out += [text[pos:start], TOKEN_RE.sub("***", text[start:end])]
        pos = end
    out.append(text[pos:])
    return "".join(out)
