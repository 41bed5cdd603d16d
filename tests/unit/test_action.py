"""The Action's entry point without a runner: triggers, inputs, masks first, outputs in the runner's format."""

from __future__ import annotations

import json
import re

import pytest

from toren_action import action
from toren_action.core.errors import UsageError


def comment_event(body, user="alice", user_type="User", pr=False, act="created"):
    issue = {"number": 42, **({"pull_request": {"url": "x"}} if pr else {})}
    return {"action": act, "issue": issue, "comment": {"body": body, "user": {"login": user, "type": user_type}},
            "sender": {"login": user}}


def test_triggers():
    t = action.read_trigger("issue_comment", comment_event("/toren please add tests"), "/toren", "toren")
    assert t == action.Trigger("comment", "alice", 42, "please add tests")
    labeled = {"action": "labeled", "label": {"name": "toren"}, "issue": {"number": 7}, "sender": {"login": "bob"}}
    assert action.read_trigger("issues", labeled, "/toren", "toren") == action.Trigger("label", "bob", 7)
    assert action.read_trigger("workflow_dispatch", {"sender": {"login": "c"}}, "/toren", "toren").kind == "dispatch"
    # not triggers: a reason, never a run
    for name, event in [
        ("issue_comment", comment_event("looks good")),
        ("issue_comment", comment_event("/toren go", user="toren-bot[bot]", user_type="Bot")),
        ("issue_comment", comment_event("<!-- toren:progress -->\n/toren")),  # Toren's own comment
        ("issue_comment", comment_event("please /toren go", pr=True)),  # not at the start
        ("issue_comment", comment_event("/torenate", pr=True)),
        ("issue_comment", comment_event("/torenate")),  # on an issue as on a pull request: the phrase as a word
        ("issue_comment", comment_event("/toren-evil do it")),
        ("issue_comment", comment_event("/toren go", pr=True, act="edited")),
        ("issue_comment", comment_event("/toren go", pr=True, user="ci[bot]", user_type="Bot")),
        ("issue_comment", comment_event("/toren go", act="edited")),
        ("issues", {**labeled, "label": {"name": "bug"}}),
        ("issues", {**labeled, "action": "opened"}),
        ("push", {}),
    ]:
        assert isinstance(action.read_trigger(name, event, "/toren", "toren"), str), (name, event)


def pr_event(kind, body, user="alice", user_type="User", act=None, head="acme/widget"):
    item = {"id": 9, "body": body, "user": {"login": user, "type": user_type}, "author_association": "MEMBER"}
    if kind == "pull_request_review_comment":
        item.update(path="src/a.py", line=3, diff_hunk="@@ -1 +1 @@", commit_id="a" * 40)
    pull = {"number": 57, "head": {"ref": "toren/x", "sha": "b" * 40, "repo": {"full_name": head}},
            "base": {"ref": "main", "repo": {"full_name": "acme/widget"}}}
    key = "review" if kind == "pull_request_review" else "comment"
    default = "submitted" if kind == "pull_request_review" else "created"
    return {"action": act or default, key: item, "pull_request": pull, "sender": {"login": user}}


def test_pull_request_triggers_start_a_review_round():
    t = action.read_trigger("issue_comment", comment_event("/toren add a test", pr=True), "/toren", "toren")
    assert t == action.Trigger("pr_comment", "alice", None, "add a test", 42)
    for kind, name in (("pull_request_review", "pr_review"), ("pull_request_review_comment", "pr_review_comment")):
        t = action.read_trigger(kind, pr_event(kind, "  /toren\nrename it"), "/toren", "toren")
        assert t == action.Trigger(name, "alice", None, "rename it", 57)
        assert action.read_trigger(kind, pr_event(kind, "/toren"), "/toren", "toren").instruction == ""
        for event in (pr_event(kind, "/toren go", act="edited"), pr_event(kind, "/toren go", act="deleted"),
                      pr_event(kind, "/toren go", act="dismissed"),
                      pr_event(kind, "nice; /toren go"), pr_event(kind, ""),
                      pr_event(kind, "/toren go", user="toren[bot]", user_type="Bot"),
                      pr_event(kind, "/toren go", user="sneaky[bot]"),
                      pr_event(kind, "<!-- toren:reply -->\n/toren go"),
                      pr_event(kind, "/toren go", head="eve/widget"), pr_event(kind, "/toren go", head=None)):
            reason = action.read_trigger(kind, event, "/toren", "toren")
            assert isinstance(reason, str), event
    assert "fork" in action.read_trigger("pull_request_review", pr_event("pull_request_review", "/toren go",
                                                                           head="eve/widget"), "/toren", "toren")
    assert "edited comment never" in action.read_trigger(
        "pull_request_review_comment", pr_event("pull_request_review_comment", "/toren", act="edited"), "/toren",
        "toren")


def test_inputs(monkeypatch):
    monkeypatch.setenv("INPUT_VOLUMES", "/data/models:/workspace/models:ro\n\n# a comment\n/cache:/cache\n")
    assert action.get_lines("volumes") == ["/data/models:/workspace/models:ro", "/cache:/cache"]
    monkeypatch.setenv("INPUT_DRAFT", "true")
    assert action.get_bool("draft") is True
    monkeypatch.setenv("INPUT_DRAFT", "maybe")
    with pytest.raises(UsageError, match="input draft"):
        action.get_bool("draft")


def test_secrets_are_masked_before_anything_else_and_outputs_use_delimiters(monkeypatch, tmp_path, capsys):
    key = "sk-ant-masked-0123456789"
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"action": "opened", "issue": {"number": 1}}))
    out_file, summary = tmp_path / "output", tmp_path / "summary"
    out_file.touch()  # the runner creates it
    monkeypatch.setenv("INPUT_ANTHROPIC_API_KEY", key)
    monkeypatch.setenv("INPUT_CLAUDE_CREDENTIALS", '{"claudeAiOauth": {\n "accessToken": "sk-ant-oat-abcdefgh"}}')
    monkeypatch.setenv("GITHUB_EVENT_NAME", "issues")
    monkeypatch.setenv("GITHUB_EVENT_PATH", str(event))
    monkeypatch.setenv("GITHUB_OUTPUT", str(out_file))
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    assert action.run() == 0  # not a trigger: green, with a notice
    out = capsys.readouterr().out.splitlines()
    masks = [i for i, ln in enumerate(out) if ln.startswith("::add-mask::")]
    assert out[0] == f"::add-mask::{key}" and masks == list(range(len(masks)))  # masks come first
    assert any("accessToken" in out[i] for i in masks)
    assert any(ln.startswith("::notice::") and "not a trigger" in ln for ln in out)
    assert "status<<" in out_file.read_text() and "skipped" in out_file.read_text()


def test_a_refused_actor_gets_a_comment_and_the_step_fails(monkeypatch, tmp_path, capsys):
    from tests.fakes.github import FakeGitHub

    with FakeGitHub(tmp_path / "gh") as gh:
        gh.add_repo("acme/widget", files={"a.txt": "a\n"})
        gh.add_issue("acme/widget", 42, "Do it", "Please.", author="rita")
        gh.set_permission("acme/widget", "rita", "read")
        event = tmp_path / "event.json"
        event.write_text(json.dumps(comment_event("/toren go", user="rita")))
        out_file = tmp_path / "output"
        out_file.touch()
        for k, v in {"GITHUB_EVENT_NAME": "issue_comment", "GITHUB_EVENT_PATH": str(event),
                     "GITHUB_OUTPUT": str(out_file), "GITHUB_REPOSITORY": "acme/widget",
                     "GITHUB_API_URL": gh.api_url, "GITHUB_SERVER_URL": gh.server_url,
                     "INPUT_GITHUB_TOKEN": gh.token, "TOREN_HOME": str(tmp_path / "h"),
                     "RUNNER_TEMP": str(tmp_path)}.items():
            monkeypatch.setenv(k, v)
        monkeypatch.delenv("GITHUB_TOKEN", raising=False)
        code = action.run()
        out = capsys.readouterr().out
        assert code == 20, out
        assert "::error::" in out and "rita has read permission" in out
        assert "refused" in out_file.read_text()
        (comment,) = gh.comments("acme/widget", 42)
        # the refused person is named, never @-mentioned: a refusal is no way to notify anyone
        assert "Toren did not start" in comment["body"] and "rita has read permission" in comment["body"]
        assert not re.search(r"@[A-Za-z0-9]", comment["body"])


@pytest.mark.parametrize("kind", ["issue_comment", "pull_request_review", "pull_request_review_comment"])
@pytest.mark.parametrize("who", ["read-only", "bot"])
def test_a_read_only_users_or_a_bots_pull_request_comment_starts_nothing(monkeypatch, tmp_path, capsys, kind, who):
    from tests.fakes.github import FakeGitHub

    with FakeGitHub(tmp_path / "gh") as gh:
        gh.add_repo("acme/widget", files={"a.txt": "a\n"})
        number = gh.add_pull("acme/widget", "toren/x", {"a.txt": "b\n"}, body="<!-- toren:pull-request -->")
        gh.set_permission("acme/widget", "rita", "read")
        user, user_type = ("rita", "User") if who == "read-only" else ("helper[bot]", "Bot")
        if kind == "issue_comment":
            payload = comment_event("/toren go", user=user, user_type=user_type, pr=True)
            payload["issue"]["number"] = number
        else:
            payload = pr_event(kind, "/toren go", user=user, user_type=user_type)
            payload["pull_request"]["number"] = number
        event = tmp_path / "event.json"
        event.write_text(json.dumps(payload))
        out_file = tmp_path / "output"
        out_file.touch()
        for k, v in {"GITHUB_EVENT_NAME": kind, "GITHUB_EVENT_PATH": str(event), "GITHUB_OUTPUT": str(out_file),
                     "GITHUB_REPOSITORY": "acme/widget", "GITHUB_API_URL": gh.api_url,
                     "GITHUB_SERVER_URL": gh.server_url, "INPUT_GITHUB_TOKEN": gh.token,
                     "TOREN_HOME": str(tmp_path / "h"), "RUNNER_TEMP": str(tmp_path)}.items():
            monkeypatch.setenv(k, v)
        monkeypatch.delenv("GITHUB_TOKEN", raising=False)
        code = action.run()
        out = capsys.readouterr().out
        if who == "bot":  # not a trigger at all: green, skipped, not a single API call
            assert code == 0 and "skipped" in out_file.read_text() and "from a bot" in out
            assert not gh.requests
        else:  # refused before any build: the permission check is the only thing that happened
            assert code == 20 and "rita has read permission" in out and "refused" in out_file.read_text()
            assert not gh.git_requests()
            (comment,) = gh.comments("acme/widget", number)
            assert "Toren did not start" in comment["body"] and not re.search(r"@[A-Za-z0-9]", comment["body"])
        assert not (tmp_path / "h" / "jobs").exists()
        assert gh.branch_sha("acme/widget", "toren/x") == gh.pulls("acme/widget")[0]["head"]["sha"]


def runner_commands(out: str) -> list[str]:
    """The workflow commands a GitHub runner would act on in this output, by its rules: a line that starts, past
    white space, with ``::name`` is one; after ``::stop-commands::TOKEN`` only ``::TOKEN::`` is; ``##[name``
    anywhere in a line is the legacy form."""
    acted, stopped = [], None
    for line in out.split("\n"):
        s = line.lstrip()
        if stopped is not None:
            if s.rstrip() == f"::{stopped}::":
                acted.append("resume")
                stopped = None
            continue
        m = re.match(r"::([A-Za-z-]+)", s)
        if m:
            acted.append(m.group(1))
            if m.group(1) == "stop-commands":
                stopped = s.split("::", 2)[2].rstrip()
        elif "##[" in line:
            acted.append("legacy")
    return acted


AGENT_LINES = [
    "::add-mask::ghp_0123456789abcdef",
    "::stop-commands::x",
    "::x::",
    "::error file=src/a.py,line=1::All checks passed",
    "   ::warning::indented",
    "\u3000::notice::after an ideographic space",
    "progress ##[error]legacy form",
    "\x1b[2Kerased line\x1b]52;c;ZXZpbA==\x07\x9b2J",
    "ok\rFAILED",
    "two\n::add-mask::lines",
    "::endgroup::",
]


def test_the_agents_output_cannot_issue_workflow_commands(capsys):
    reporter = action.ActionsReporter()
    reporter.stage("running", "the agent")
    for line in AGENT_LINES:
        reporter.line(line)
    reporter.stage("verifying", "make test")
    reporter.line("::set-output name=status::succeeded")
    reporter.close()
    out = capsys.readouterr().out
    assert runner_commands(out) == ["group", "stop-commands", "resume", "endgroup", "group", "stop-commands",
                                    "resume", "endgroup"], out
    tokens = re.findall(r"^::stop-commands::(\S+)$", out, re.M)
    assert len(set(tokens)) == 2 and all(len(t) >= 32 for t in tokens)  # a fresh random token each time
    body = [ln for ln in out.split("\n") if not re.match(r"::(group|endgroup|stop-commands|toren-[0-9a-f]+)::", ln)]
    for ln in body:  # belt and braces: even without the stop, no line of the agent's is a command
        assert not ln.lstrip().startswith("::") and "##[" not in ln, ln
        assert not re.search("[\x00-\x08\x0b-\x1f\x7f-\x9f]", ln), ln
    assert "\\x1b[2Kerased" in out and "ok\\rFAILED" in out  # shown, not acted on


def test_the_step_summary_holds_hostile_names_and_messages_as_text():
    from types import SimpleNamespace

    markdown_it = pytest.importorskip("markdown_it")
    files = ["fixes #1 and cc @octocat.py", "a\n## Reviewed and approved by @octocat", "x```y", "<img src=x>.md",
             "pipe|name.py", "e\x1b[2K\u202egnp.exe"]
    outcome = SimpleNamespace(
        state="failed", pr_url="https://github.com/acme/widget/pull/5", branch="toren/x`|<b>@octocat",
        files=files, commit="abc", usage={"turns": 3}, cost_usd=0.5, duration_s=3.0,
        message="cannot push: a\n## Approved\nCloses #7, thanks @acme/security-team <img src=x>")
    job = SimpleNamespace(inputs={"verify": "make test | tee `log`"})
    md = "\n".join(action._summary_lines(outcome, job))
    html = markdown_it.MarkdownIt("commonmark").enable("table").render(md)
    assert html.count("<h2>") == 1 and "<img" not in html and "<b>" not in html, html
    assert len(re.findall(r"<tr>", html)) == 8  # the header and seven rows: no name or command split a row
    text = re.sub(r"<code>.*?</code>", "", html, flags=re.S)
    assert not re.search(r"@[A-Za-z0-9]|#[0-9]|(?i:closes)\s*#", text.replace("/pull/5", "")), text
    assert "\x1b" not in md and "\u202e" not in md and "\n## " not in md.replace("\n## Toren", "")


def test_the_command_input_reaches_the_shell_agent(monkeypatch):
    monkeypatch.setenv("INPUT_AGENT", "shell")
    monkeypatch.setenv("INPUT_COMMAND", "  make fmt && git add -A  ")
    flags = action.setting_inputs()
    assert flags["agent"] == "shell" and flags["command"] == "make fmt && git add -A"


@pytest.mark.parametrize("agent,command,words", [
    ("shell", "", "input command: the shell agent needs a command; e.g. `command: make fmt`"),
    ("claude", "make fmt", "input command: only the shell agent takes input command; drop it or use `agent: shell`"),
])
def test_a_shell_agent_mistake_names_the_workflow_inputs(monkeypatch, tmp_path, capsys, agent, command, words):
    """A workflow author is told about the inputs they can set, not about `toren run`'s flags."""
    from tests.fakes.github import FakeGitHub

    with FakeGitHub(tmp_path / "gh") as gh:
        gh.add_repo("acme/widget", files={"a.txt": "a\n"})
        event = tmp_path / "event.json"
        event.write_text(json.dumps({"sender": {"login": "alice"}}))
        out_file = tmp_path / "output"
        out_file.touch()
        for k, v in {"GITHUB_EVENT_NAME": "workflow_dispatch", "GITHUB_EVENT_PATH": str(event),
                     "GITHUB_OUTPUT": str(out_file), "GITHUB_REPOSITORY": "acme/widget",
                     "GITHUB_API_URL": gh.api_url, "GITHUB_SERVER_URL": gh.server_url,
                     "INPUT_GITHUB_TOKEN": gh.token, "TOREN_HOME": str(tmp_path / "h"),
                     "RUNNER_TEMP": str(tmp_path), "INPUT_SPEC": "Format the code.", "INPUT_AGENT": agent,
                     "INPUT_COMMAND": command, "ANTHROPIC_API_KEY": "sk-ant-test-0123456789",
                     # were the mistake missed, the job would fail at once on this image, pulling nothing
                     "INPUT_BASE_IMAGE": "toren-test/absent:1", "INPUT_PULL": "never"}.items():
            monkeypatch.setenv(k, v)
        monkeypatch.delenv("GITHUB_TOKEN", raising=False)
        code = action.main()
        out = capsys.readouterr().out
        assert code == 2, out
        (error,) = [ln for ln in out.splitlines() if ln.startswith("::error")]
        assert error.endswith(f"Toren: {words}"), error
        assert "--" not in error


def test_only_flags_of_settings_with_an_input_are_renamed():
    err = UsageError("--spec", "give either --spec or --issue, not --max-turns '3' with --no-pr or --no-pr-x")
    assert action.in_workflow_words(err) == (
        "--spec: give either --spec or --issue, not `max-turns: 3` with input no-pr or --no-pr-x")
    assert action.in_workflow_words(UsageError("--base-branch", "'nosuch' does not exist")) == (
        "input base-branch: 'nosuch' does not exist")


def test_the_step_summary_and_outputs_hold_the_verification():
    from types import SimpleNamespace

    from toren_action.job import verify

    markdown_it = pytest.importorskip("markdown_it")
    hostile = "test_x[@octocat Closes #7 <img src=x> | ## H]"
    base = verify.TestRun(exit_code=1, duration_s=1.0, source="junit", cases={hostile: "passed", "t.fixed": "failed"})
    now = verify.TestRun(exit_code=1, duration_s=1.0, source="junit", cases={hostile: "failed", "t.fixed": "passed"})
    for run in (base, now):
        run.counts = {"passed": 1, "failed": 1, "skipped": 0, "total": 2}
        run.complete = True
    rec = verify.record("pytest -q", now, base, verify.judge(now, base, False), [])
    outcome = SimpleNamespace(state="verification_failed", pr_url=None, branch="toren/x", files=["a.py"],
                              commit="abc", usage=None, cost_usd=None, duration_s=3.0, message="--verify broke it")
    job = SimpleNamespace(inputs={"verify": "pytest -q"}, verification=rec)
    md = "\n".join(action._summary_lines(outcome, job))
    html = markdown_it.MarkdownIt("commonmark").enable("table").render(md)
    assert "1 fixed, 1 broken" in md and "<img" not in html and html.count("<h2>") == 1
    text = re.sub(r"<code>.*?</code>", "", html, flags=re.S)
    assert not re.search(r"@[A-Za-z0-9]|(?i:closes)\s*#", text), text
    assert action.verification_outputs(rec) == {"verify-outcome": "failed", "tests-fixed": "1", "tests-broken": "1"}
    assert action.verification_outputs(None) == {"verify-outcome": "", "tests-fixed": "", "tests-broken": ""}
    no_base = verify.record("pytest -q", now, None, verify.judge(now, None, False), [])
    assert action.verification_outputs(no_base) == {"verify-outcome": "failed", "tests-fixed": "", "tests-broken": ""}


@pytest.mark.parametrize("given, expected", [("", "draft"), ("discard", "discard"), ("branch", "branch")])
def test_the_action_defaults_on_failure_to_draft(monkeypatch, tmp_path, capsys, given, expected):
    from toren_action.core.errors import UsageError
    from toren_action.job import submit

    seen = {}

    def fake_submit(settings, background):
        seen["on_failure"], seen["source"] = settings.on_failure, settings.source_of("on_failure")
        raise UsageError("test", "stop here")

    event = tmp_path / "event.json"
    event.write_text(json.dumps({"sender": {"login": "alice"}}))
    (tmp_path / "output").touch()  # the runner creates it
    for k, v in {"GITHUB_EVENT_NAME": "workflow_dispatch", "GITHUB_EVENT_PATH": str(event),
                 "GITHUB_OUTPUT": str(tmp_path / "output"), "GITHUB_REPOSITORY": "acme/widget",
                 "INPUT_SPEC": "Do it.", "INPUT_ON_FAILURE": given, "RUNNER_TEMP": str(tmp_path),
                 "TOREN_HOME": str(tmp_path / "h")}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setattr(submit, "submit", fake_submit)
    assert action.run() == 2
    assert seen == {"on_failure": expected, "source": "--on-failure"}
