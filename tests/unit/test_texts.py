"""texts.py: what GitHub and terminals get from hostile text. Each test is an attack; the checks are what GitHub
(mentions, references, closing keywords, Markdown, HTML) or a terminal (escape sequences) would act on."""

from __future__ import annotations

import re

import pytest

from toren_action.core import texts
from toren_action.core.texts import ZWSP

markdown_it = pytest.importorskip("markdown_it")
MD = markdown_it.MarkdownIt("commonmark").enable("table")

#: What GitHub acts on, as an attacker would model it (wider than GitHub's own rules, never narrower).
MENTION = re.compile(r"[@\uff20\ufe6b][A-Za-z0-9\uff10-\uff19\uff21-\uff3a\uff41-\uff5a]")
REFERENCE = re.compile(r"[#\uff03\ufe5f][0-9\uff10-\uff19]|(?<![A-Za-z0-9])GH-[0-9]|/(issues|pulls?|discussions)/[0-9]",
                       re.I)
CLOSING = re.compile(r"(?<!\w)(close[sd]?|fix(e[sd])?|resolve[sd]?)(?!\w)[\s:*_~`\[(\\]*"
                     r"(#|GH-|https?://|[\w.-]+/[\w.-]+#)", re.I)
CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\u200e\u200f\u2028\u2029]")

HOSTILE = [
    "@octocat",
    "cc @acme/security-team please",
    "\uff20octocat and \ufe6bteam",  # fullwidth and small commercial at: lookalikes, defused alike
    "Typo, fixes #1 cc @acme/security-team",
    "Fixes: #1",
    "FIXED  #1",
    "closes owner/repo#2",
    "resolves https://github.com/o/r/issues/3",
    "Closes https://ghe.corp/o/r/pull/4",
    "fix GH-5 and gh-6",
    "resolved **#7**",
    "Fixes [the bug](https://github.com/o/r/issues/8)",
    "fixes \uff039 and \uff03\uff11",  # fullwidth number sign and digit
    "see o/r#10 and #11",
]


@pytest.mark.parametrize("text", HOSTILE)
@pytest.mark.parametrize("fn", [texts.defuse, texts.plain, texts.title, texts.inline], ids=lambda f: f.__name__)
def test_no_mention_reference_or_closing_keyword_survives(fn, text):
    out = fn(text)
    assert not MENTION.search(out), out
    assert not REFERENCE.search(out), out
    assert not CLOSING.search(out), out


@pytest.mark.parametrize("text", HOSTILE)
def test_defused_text_reads_the_same_and_defusing_again_changes_nothing(text):
    out = texts.defuse(text)
    assert out.replace(ZWSP, "") == text
    assert texts.defuse(out) == out
    assert texts.title(texts.title(text)) == texts.title(text)


def test_ordinary_words_are_left_alone():
    for text in ("This fixes the flaky test", "closed over a variable", "user at example", "C# and F#", "100%"):
        assert texts.defuse(text) == text


@pytest.mark.parametrize("text", [
    "Title\n## Reviewed and approved by @octocat",
    "a\r\n# Heading\n- [x] approved",
    "x\u2028## Heading",
])
def test_a_one_line_field_cannot_forge_a_heading_or_a_list(text):
    for fn in (texts.inline, texts.title, texts.one_line):
        out = fn(text)
        assert "\n" not in out and "\r" not in out and "\u2028" not in out
    html = MD.render("- item: " + texts.inline(text))
    assert "<h" not in html and html.count("<li>") == 1, html


@pytest.mark.parametrize("text", [
    "<img src=https://evil.example/x.png>",
    "<!-- toren:pull-request -->",
    "<details><summary>ok</summary>hidden</details>",
    "[click](https://evil.example) ![x](https://evil.example/p.png)",
    "**bold** _it_ ~~s~~ `code` $x$ | cell | &#64;octocat &commat;team",
])
def test_inline_renders_as_the_same_characters_and_nothing_else(text):
    html = MD.render(texts.inline(text))
    assert re.sub(r"<p>|</p>\n", "", html).replace(ZWSP, "") == (
        text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")), html


@pytest.mark.parametrize("path", [
    "src/app.py", "a`b", "```", "``x``", "`", " lead", "trail ", "`x`", "a\n## Reviewed by @octocat",
    "fixes #1 and cc @octocat.py", "<img src=x>.md", "pipe|name", "back\\|slash", "two\\\\|backslashes",
    "dir/\u202egnp.exe",
])
def test_a_path_stays_inside_its_code_span(path):
    for table in (False, True):
        span = texts.code(path, table=table)
        doc = f"| f |\n|---|\n| {span} |" if table else f"x {span} y"
        html = MD.render(doc)
        codes = re.findall(r"<code>(.*?)</code>", html, re.S)
        assert len(codes) == 1, (span, html)
        outside = re.sub(r"<code>.*?</code>", "", html, flags=re.S)
        assert "<img" not in outside and "<h" not in outside.replace("<hr", "") and "@" not in outside
        shown = (codes[0].replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", '"')
                 .replace(ZWSP, ""))
        expected = texts.one_line(path)
        if table:  # in a table cell a backslash before a pipe escapes it: `\|` is shown as `|` (nothing worse)
            expected = re.sub(r"(?<!\\)((?:\\\\)*)\\\|", r"\1|", expected)
        assert shown == expected, (path, span, shown)
    assert "\n" not in texts.code(path)


def test_a_fenced_block_holds_any_backticks():
    body = "x\n````\n## out\n```"
    html = MD.render(texts.fence(body) + "\nafter")
    assert "<h2>" not in html and html.count("<pre>") == 1 and "<p>after</p>" in html


def test_the_agents_markdown_keeps_its_formatting_but_no_html_or_reference_acts():
    summary = ("# Add a cache\n\nThis **fixes** the bug, closes #12, thanks @octocat.\n\n"
               "<img src=https://evil.example/t.png>\n<!-- toren:progress -->\n&#x40;team\n\n"
               "- item\n  ```\n<details>hidden</details>\n  ```\n\n`<b>` and \\`<i>`\n\n"
               "```python\nif a < b: pass  # <keep>\n```\n\x1b[2Kdone\u202e")
    out = texts.block(summary)
    html = MD.render(out)
    text_html = re.sub(r"<code>.*?</code>|<pre>.*?</pre>", "", html, flags=re.S)
    assert "<h1>Add a cache</h1>" in html and "<strong>fixes</strong>" in html
    assert not re.search(r"<(img|details|i|b)\b|<!--", text_html), html
    assert "&amp;#x40;team" in html  # the character reference is shown, not decoded into an @
    shown = html.replace(ZWSP, "")  # code reads as written (a zero-width space after a tag-like `<`)
    assert "<code>&lt;b&gt;</code>" in shown and "if a &lt; b: pass  # &lt;keep&gt;" in shown
    assert not MENTION.search(out) and not CLOSING.search(out) and not REFERENCE.search(out)
    assert "\x1b" not in out and "\u202e" not in out and "\\x1b[2K" in out


@pytest.mark.parametrize("raw, shown", [
    ("\x1b[2Kerased", "\\x1b[2Kerased"),
    ("\x1b]52;c;ZXZpbA==\x07", "\\x1b]52;c;ZXZpbA==\\x07"),  # OSC 52: set the clipboard
    ("\x9b2J", "\\x9b2J"),  # C1 CSI
    ("ok\rFAILED", "ok\\rFAILED"),  # overwrite the line
    ("a\x08\x08b\x7f", "a\\x08\\x08b\\x7f"),
    ("file\u202egnp.exe", "file\\u202egnp.exe"),  # RTL override
    ("\u2066iso\u2069\u200f", "\\u2066iso\\u2069\\u200f"),
    ("bad\udcff", "bad\\udcff"),  # a lone surrogate (surrogateescape)
    ("tab\tkept\nand newline", "tab\tkept\nand newline"),
    ("crlf\r\n", "crlf\n"),
    ("progress 10%\r", "progress 10%\\r"),
])
def test_control_characters_are_shown_not_sent(raw, shown):
    assert texts.terminal(raw) == shown
    assert not CONTROL.search(texts.terminal(raw).replace("\t", "").replace("\n", ""))
    assert "\n" not in texts.one_line(raw)
    assert texts.terminal(texts.terminal(raw)) == texts.terminal(raw)


@pytest.mark.parametrize("line", [
    "::add-mask::ghp_x", "  ::stop-commands::x", "::error file=a::All checks passed", "\t::warning::w",
    "\u3000::notice::wide space", "x ##[error]legacy", "##[set-output name=a]b", "::group::\x1b[2Kg",
])
def test_workflow_safe_lines_are_no_commands(line):
    out = texts.workflow_safe(line)
    assert not out.strip().startswith("::") and "##[" not in out and "\x1b" not in out and "\n" not in out
    assert out.replace("\u203a ", "").replace(ZWSP, "").replace("\\x1b", "\x1b") == line


def test_the_halves_of_defuse():
    assert texts.defuse_mentions("Closes #4, cc @octocat") == "Closes #4, cc @" + ZWSP + "octocat"
    assert texts.defuse_references("Closes #4, cc @octocat") == "C" + ZWSP + "loses #" + ZWSP + "4, cc @octocat"


ESCAPES = ["\x1b[2K\x1b[1Aerased", "\x1b]52;c;ZXZpbA==\x07clip", "\x9b2Jc1", "ok\rFAILED", "rtl\u202eexe.txt"]


def test_the_console_shows_the_agents_control_characters():
    import io
    from types import SimpleNamespace

    from toren_action.cli.ui import ConsoleReporter, print_outcome

    stream = io.StringIO()
    reporter = ConsoleReporter(stream)
    reporter.stage("running", "detail\x1b[2K\nforged")
    for line in ESCAPES:
        reporter.line(line)
    reporter.line('{"tool": "Bash", "input": {"command": "printf \\u001b[2K"}}' + "\x1b[2K")  # a tool call's args
    outcome = SimpleNamespace(state="succeeded", duration_s=1.0, branch="b\x1b[2K", pushed_to="o\x9b", commit="c",
                              files=["a\x1b]52;c;x\x07.py", "n\nl"], pr_url="https://x/pull/1\x1b[2K", usage=None,
                              cost_usd=None, cost_source=None, job_id="j1", message="")
    print_outcome(outcome, None, stream)
    print_outcome(SimpleNamespace(**{**vars(outcome), "state": "failed", "message": "m\x1b[2K\rX"}), None, stream)
    out = stream.getvalue()
    assert not re.search("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202e]", out), repr(out)
    assert "\\x1b[2K" in out and "\\x9b2J" in out and "ok\\rFAILED" in out and "\\u202e" in out
    assert "detail\\x1b[2K\\nforged" in out


def test_toren_logs_shows_the_control_characters_in_the_log(tmp_path, monkeypatch, capsys):
    from argparse import Namespace

    from toren_action.cli.commands import cmd_logs
    from toren_action.core.paths import log_path
    from toren_action.jobs.store import Store

    monkeypatch.setenv("TOREN_HOME", str(tmp_path / "home"))
    from toren_action.core.paths import toren_home

    store = Store(toren_home())
    job_id = store.create_job(repo="/r", branch="b", agent="shell", model=None, base_image="i", inputs={})
    path = log_path(toren_home(), job_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(ESCAPES) + "\ntab\tkept\n", "utf-8")
    assert cmd_logs(Namespace(job=job_id, tail=None, follow=False)) == 0
    out = capsys.readouterr().out
    assert not re.search("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202e]", out), repr(out)
    assert "\\x1b]52;c;ZXZpbA==\\x07clip" in out and "ok\\rFAILED" in out and "tab\tkept\n" in out
    assert out.count("\n") == len(ESCAPES) + 1


@pytest.mark.parametrize("summary", [
    "Done. x `a\nb` <img src=https://evil.example/p.png> <a href=\"https://evil.example\">Approved</a> `c` ok",
    "x `a\nb` <!-- toren:progress --> `c`",
    "x ``a\nb`` <b>bold</b> `` c `` &#64;octocat",
    "```\n<img src=x>\n",  # an unclosed fence
    "~~~\n<a href=x>y</a>\n```\n<b>still fenced for us</b>",
], ids=["span-across-lines", "comment-across-lines", "double-backticks", "open-fence", "tilde-fence"])
def test_the_agents_markdown_cannot_hide_html_or_swallow_what_follows(summary):
    body = texts.block(summary) + "\n\n- Verification: not configured\n<!-- toren:pull-request -->\n"
    html = markdown_it.MarkdownIt("commonmark", {"html": True}).render(body)
    for tag in ("<img", "<a ", "<b>", "<!-- toren:progress"):
        assert tag not in html, (tag, html)
    assert "<li>Verification: not configured</li>" in html  # Toren's own lines are outside any code block
    assert html.rstrip().endswith("<!-- toren:pull-request -->")
