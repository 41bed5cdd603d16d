"""The Action's entry point without a runner: triggers, inputs, masks first, outputs in the runner's format."""

from __future__ import annotations

import json

import pytest

from toren_action import action
from toren_action.errors import UsageError


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
        ("issue_comment", comment_event("/toren go", pr=True)),
        ("issue_comment", comment_event("/toren go", act="edited")),
        ("issues", {**labeled, "label": {"name": "bug"}}),
        ("issues", {**labeled, "action": "opened"}),
        ("push", {}),
    ]:
        assert isinstance(action.read_trigger(name, event, "/toren", "toren"), str), (name, event)


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
        assert "@rita, Toren did not start" in comment["body"]
