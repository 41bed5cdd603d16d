"""Every text Toren writes from untrusted input (the agent's output and files, the repository's file names, an
issue's title and body, error messages that carry them) goes through one of these functions on its way to
GitHub (a pull request, a comment, a commit message, the Action's step summary) or to a terminal.

What each one guarantees:

- ``terminal(text)``: no control character acts: C0 and C1 controls (except tab and newline), DEL, the
  bidirectional overrides and isolates (U+202A-U+202E, U+2066-U+2069, U+200E, U+200F, U+061C), the Unicode
  line and paragraph separators and lone surrogates are shown as visible escapes (``\\x1b``, ``\\r``,
  ``\\u202e``). A CRLF line end becomes a newline. For the console, the job log and ``toren logs``.
- ``one_line(text)``: ``terminal`` and the newline made visible too (``\\n``): for a field that must stay on
  its line (a title, a table cell, a list item).
- ``defuse(text)``: no @mention (``@user``, ``@org/team``), no issue or pull-request reference (``#7``,
  ``owner/repo#7``, ``GH-7``, ``https://…/issues/7``) and no closing keyword (``fixes #7``) can act: a
  zero-width space breaks each, so the text reads the same. Fullwidth ``＠``/``＃`` are treated alike.
  Idempotent.
- ``defuse_mentions(text)``, ``defuse_references(text)``: each half of ``defuse`` alone (the last guard of a
  whole text that also holds Toren's own ``Closes #N`` or pull request link).
- ``plain(text)``: ``defuse`` and ``terminal``, newlines kept: for plain text GitHub linkifies (a commit
  message body).
- ``title(text)``: ``plain`` on one line: a pull request title, a commit subject.
- ``inline(text)``: a Markdown inline field: ``one_line``, ``defuse`` and every Markdown or HTML character
  backslash-escaped, so it renders as the same characters and nothing else (no link, image, HTML, heading,
  table cell break, emphasis or math).
- ``code(text, table=False)``: a code span (for paths, branches, commands) whose backtick fence is longer than
  any backtick run inside, on one line; ``table=True`` escapes ``|`` for a GFM table cell.
- ``fence(text)``: a fenced code block whose fence is longer than any backtick run inside.
- ``block(text)``: multi-line Markdown written by the agent (its summary): ``terminal``, ``defuse``, and raw
  HTML (tags, comments such as a forged ``<!-- toren:`` marker) and character references (``&#64;``) shown
  as text; Markdown formatting stays.
- ``workflow_safe(text)``: a line for a GitHub Actions log: ``terminal`` on one line, and a line that would
  be a workflow command (``::name::``, ``##[name]``) shown with a mark so the runner does not read it.
"""

from __future__ import annotations

import re

from toren_action.core.patterns import lazy

ZWSP = "\u200b"

_CONTROL = lazy("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069"
                      "\ud800-\udfff]")
_NAMED = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _visible(match: re.Match) -> str:
    ch = match.group(0)
    if ch in _NAMED:
        return _NAMED[ch]
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def terminal(text: str) -> str:
    """Control characters shown as visible escapes; tab and newline kept (see the module's docstring)."""
    return _CONTROL.sub(_visible, str(text).replace("\r\n", "\n"))


def one_line(text: str) -> str:
    """``terminal`` with the newline shown as ``\\n``: the text stays on one line."""
    return terminal(text).replace("\n", "\\n")


_AT = "@\uff20\ufe6b"
_HASH = "#\uff03\ufe5f"
_ALNUM = "A-Za-z0-9\uff10-\uff19\uff21-\uff3a\uff41-\uff5a"
_DIGIT = "0-9\uff10-\uff19"
_MENTION = lazy(f"([{_AT}])(?=[{_ALNUM}])")
_REFERENCE = lazy(f"([{_HASH}])(?=[{_DIGIT}])")
_GH_REFERENCE = lazy(f"(?<![{_ALNUM}])(GH-)(?=[{_DIGIT}])", re.I)
_URL_REFERENCE = lazy(f"(/(?:issues|pull|pulls|discussions)/)(?=[{_DIGIT}])", re.I)
#: A closing keyword (close, closes, closed, fix, fixes, fixed, resolve, resolves, resolved) ...
_KEYWORD = lazy(r"(?<!\w)(?:close[sd]?|fix(?:e[sd])?|resolve[sd]?)(?!\w)", re.I)
#: ... followed, past any colon, space or Markdown around it, by something that could be a reference.
_KEYWORD_NEXT = lazy(f"[\\s:*_~`\\[(\\\\{ZWSP}]*(?:[{_HASH}]|GH-|https?://|[\\w.-]+/[\\w.-]+[{_HASH}]"
                           f"|[\\w.-]+[{_HASH}])", re.I)


def _keyword(match: re.Match) -> str:
    word = match.group(0)
    if _KEYWORD_NEXT.match(match.string, match.end()):
        return word[0] + ZWSP + word[1:]
    return word


def defuse_references(text: str) -> str:
    """Closing keywords and issue references broken by a zero-width space; mentions left as they are."""
    text = _KEYWORD.sub(_keyword, text)
    text = _REFERENCE.sub(lambda m: m.group(1) + ZWSP, text)
    text = _GH_REFERENCE.sub(lambda m: m.group(1) + ZWSP, text)
    return _URL_REFERENCE.sub(lambda m: m.group(1) + ZWSP, text)


def defuse_mentions(text: str) -> str:
    """No @mention can act; references left as they are (for a text that carries Toren's own ``Closes #N``)."""
    return _MENTION.sub(lambda m: m.group(1) + ZWSP, str(text))


def defuse(text: str) -> str:
    """No mention, reference or closing keyword can act (see the module's docstring). Idempotent."""
    return defuse_mentions(defuse_references(str(text)))


def plain(text: str) -> str:
    """Plain text that GitHub linkifies (a commit message): defused, control characters visible."""
    return defuse(terminal(text))


def title(text: str) -> str:
    """A pull request title or a commit subject: plain, on one line, stripped."""
    return one_line(defuse(text)).strip()


_MARKDOWN = lazy(r"([\\`*_{}\[\]()<>#!|~&$])")


def inline(text: str) -> str:
    """A Markdown inline field: renders as exactly these characters, on one line, and cannot act."""
    return _MARKDOWN.sub(r"\\\1", one_line(defuse(text)))


def _longest_run(text: str, char: str = "`") -> int:
    return max((len(m) for m in re.findall(f"{re.escape(char)}+", text)), default=0)


def code(text: str, table: bool = False) -> str:
    """A code span holding ``text`` on one line, whatever backticks it holds; ``table`` for a GFM table cell."""
    body = one_line(defuse_references(str(text)))
    if table:  # a GFM table splits its cells at a pipe that an odd run of backslashes does not escape
        body = re.sub(r"(\\*)\|", lambda m: m.group(1) + ("" if len(m.group(1)) % 2 else "\\") + "|", body)
    if not body.strip():  # only spaces (or nothing): kept as they are, no backtick inside
        return f"`{body or ' '}`"
    fence_ = "`" * (_longest_run(body) + 1)
    if body[0] in "` " or body[-1] in "` ":  # one space each side is stripped when rendered
        body = f" {body} "
    return f"{fence_}{body}{fence_}"


def fence(text: str, info: str = "") -> str:
    """A fenced code block holding ``text``: its fence is longer than any backtick run inside."""
    body = defuse_references(terminal(text)).rstrip("\n")
    fence_ = "`" * max(3, _longest_run(body) + 1)
    return f"{fence_}{one_line(info).replace('`', '')}\n{body}\n{fence_}"


_FENCE_LINE = lazy(r"^ {0,3}(`{3,}|~{3,})(.*)$")
#: A code span: a backtick run (not after a backslash, which would make it a literal backtick) up to the next
#: run of the same length. Anything this misses is escaped as text, the safe direction.
_CODE_SPAN = lazy(r"(?<![`\\])(`+)(?!`)(.+?)(?<!`)\1(?!`)")
_HTML = lazy(r"<(?=[A-Za-z/!?])")
_ENTITY = lazy(r"&(?=#[0-9]+;|#[xX][0-9A-Fa-f]+;|[A-Za-z][A-Za-z0-9]*;)")


def _text_part(part: str) -> str:
    return _HTML.sub("&lt;", _ENTITY.sub("&amp;", part))


def _code_part(part: str) -> str:
    """Code kept as written, except that a ``<`` that could open a tag and a ``&`` that could start a character
    reference get a zero-width space after them: invisible in code, and inert should GitHub not see code there
    (a code span that opened on an earlier line, a fence it ended sooner)."""
    return _HTML.sub("<" + ZWSP, _ENTITY.sub("&" + ZWSP, part))


def block(text: str) -> str:
    """Multi-line Markdown from the agent: its formatting kept, but no control character, mention, reference,
    closing keyword, raw HTML or character reference acts. Code spans and fenced blocks keep their ``<``; a
    fence's opening and closing lines are moved to the first column, so that the block ends where GitHub
    ends it (an indented fence inside a list item would end with the item, and what follows would be HTML)."""
    out, fenced = [], ""
    for line in defuse(terminal(text)).split("\n"):
        m = _FENCE_LINE.match(line)
        if fenced:
            if m and m.group(1)[0] == fenced[0] and len(m.group(1)) >= len(fenced) and not m.group(2).strip():
                fenced, line = "", m.group(1)
            out.append(_code_part(line))
        elif m and not (m.group(1)[0] == "`" and "`" in m.group(2)):
            fenced = m.group(1)
            out.append(fenced + _code_part(m.group(2)))
        else:
            parts, last = [], 0
            for span in _CODE_SPAN.finditer(line):
                parts += [_text_part(line[last:span.start()]), _code_part(span.group(0))]
                last = span.end()
            out.append("".join([*parts, _text_part(line[last:])]))
    if fenced:  # an unclosed fence would swallow whatever follows the agent's text (Toren's own lines)
        out.append(fenced)
    return "\n".join(out)


_WORKFLOW_COMMAND = lazy(r"^(\s*)(::)")


def workflow_safe(text: str) -> str:
    """One line for a GitHub Actions log that the runner cannot take for a workflow command."""
    line = one_line(text).replace("##[", "#" + ZWSP + "#[")
    return _WORKFLOW_COMMAND.sub(lambda m: m.group(1) + "\u203a ::", line, count=1)
