"""Stream parsers on recorded event shapes, the parts test_agent_profiles.py leaves out: Qwen Code's own
events (its init line, hidden stream deltas, errors read from the message, no reported cost), Claude Code's
init and retry lines, usage repeated across the events of one message counted once, the budget verdict and the
final text."""

from __future__ import annotations

import json

from toren_action.agents.claude import ClaudeStream
from toren_action.agents.qwen import QwenStream


def feed(parser, *events) -> list[str]:
    out = []
    for e in events:
        out += parser.feed(e if isinstance(e, str) else json.dumps(e))
    return out


def test_claude_init_and_retry_lines():
    p = ClaudeStream()
    lines = feed(p, {"type": "system", "subtype": "init", "claude_code_version": "2.0.1", "model": "claude-opus-4",
                     "tools": ["Bash", "Edit", "Read"]},
                 {"type": "system", "subtype": "api_retry", "attempt": 2, "max_retries": 10, "error_status": 529,
                  "error": "overloaded_error", "retry_delay_ms": 1500})
    assert lines == ["claude 2.0.1 · model claude-opus-4 · 3 tools",
                     "… API error 529 (overloaded_error), retry 2/10 in 1.5s"]
    assert p.usage.model == "claude-opus-4" and p.stop is None  # an overload is retried, not a stop
    assert ("retry", {"status": 529, "attempt": 2, "error": "overloaded_error"}) in p.events
    assert feed(ClaudeStream(), {"type": "system", "subtype": "init"}) == ["claude · model ? · 0 tools"]


def test_claude_counts_usage_repeated_across_one_messages_events_once():
    p = ClaudeStream()
    usage = {"input_tokens": 100, "output_tokens": 5, "cache_read_input_tokens": 1000,
             "cache_creation_input_tokens": 50}
    for content in ([{"type": "text", "text": "a"}], [{"type": "tool_use", "name": "Read", "input": {}}]):
        feed(p, {"type": "assistant", "message": {"id": "m1", "content": content, "usage": usage}})
    feed(p, {"type": "assistant", "message": {"id": "m1", "content": [], "usage": {**usage, "output_tokens": 40}}})
    feed(p, {"type": "assistant", "message": {"id": "m1", "content": [], "usage": {"output_tokens": 3}}})  # a partial
    u = p.usage
    assert (u.turns, u.input_tokens, u.output_tokens, u.cache_read_tokens, u.cache_write_tokens) == (1, 100, 40,
                                                                                                     1000, 50)


def test_claude_budget_stop_and_final_text():
    p = ClaudeStream()
    lines = feed(p, {"type": "result", "subtype": "error_max_budget_usd", "num_turns": 4, "is_error": True,
                     "result": "stopped", "modelUsage": {"claude-haiku-4": {}}})
    assert lines == ["■ error_max_budget_usd after 4 turn(s)"]
    assert p.verdict.kind == "budget" and p.finished and p.final_text == "stopped"
    assert p.usage.model == "claude-haiku-4"
    p = ClaudeStream()
    feed(p, {"type": "result", "subtype": "success", "is_error": True, "api_error_status": 401, "result": "bad key"})
    assert p.verdict.kind == "auth"


def test_qwen_init_hides_stream_deltas_and_keeps_claudes_shapes():
    p = QwenStream()
    lines = feed(p, {"type": "system", "subtype": "init", "qwen_code_version": "0.1.0", "model": "qwen3-coder",
                     "tools": ["run_shell_command"]},
                 {"type": "stream_event", "event": {"type": "content_block_delta", "delta": {"text": "he"}}},
                 {"type": "assistant", "message": {"id": "q1", "content": [
                     {"type": "text", "text": "Running tests."},
                     {"type": "tool_use", "name": "run_shell_command", "input": {"command": "pytest -q"}}],
                     "usage": {"input_tokens": 900, "output_tokens": 20, "cache_read_input_tokens": 800}}})
    assert lines == ["qwen 0.1.0 · model qwen3-coder · 1 tools", "Running tests.", "→ run_shell_command pytest -q"]
    assert p.usage.cache_read_in_input  # Qwen counts cached tokens inside input_tokens
    assert (p.usage.turns, p.usage.tool_calls, p.usage.cache_read_tokens) == (1, 1, 800)


def test_qwen_result_has_no_reported_cost_and_reads_the_status_from_its_message():
    p = QwenStream()
    feed(p, {"type": "result", "subtype": "success", "num_turns": 2, "total_cost_usd": 1.5, "result": "ok"})
    assert p.usage.reported_cost_usd is None and p.verdict is None and p.usage.turns == 2
    for message, kind in [("[API Error: 401 invalid api key]", "auth"), ("API Error: 429 throttled", "rate_limit"),
                          ("API Error: 503 unavailable", "rate_limit"), ("tool crashed", "error")]:
        p = QwenStream()
        feed(p, {"type": "result", "subtype": "error_during_execution", "is_error": True,
                 "error": {"message": message}})
        assert p.verdict.kind == kind, message
    p = QwenStream()
    feed(p, {"type": "result", "is_error": True, "result": "API Error: 403 forbidden"})  # no error object
    assert p.verdict.kind == "auth"
