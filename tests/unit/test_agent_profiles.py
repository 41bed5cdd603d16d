"""Agent profiles without Docker: stream parsers on recorded event shapes, prices, the launcher, credentials."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from toren_action.agents import KNOWN_AGENTS, get_profile
from toren_action.agents.base import LAUNCHER, PROMPT_ARG, RunContext, Usage, launch_command
from toren_action.agents.claude import ClaudeStream
from toren_action.agents.codex import CodexStream
from toren_action.agents.gemini import GeminiStream
from toren_action.agents.pricing import cost_usd, price_for
from toren_action.agents.qwen import QwenStream
from toren_action.core.errors import MissingCredentials, UsageError
from toren_action.job.plan import resolve_credentials


def feed(parser, *events) -> list[str]:
    out = []
    for e in events:
        out += parser.feed(e if isinstance(e, str) else json.dumps(e))
    return out


def assistant(mid, content, usage=None):
    return {"type": "assistant", "message": {"id": mid, "model": "claude-sonnet-4-5", "content": content,
                                             "usage": usage or {"input_tokens": 1000, "output_tokens": 1}}}


def test_claude_counts_one_turn_per_message_however_many_events_it_arrives_in():
    p = ClaudeStream()
    lines = feed(p,
                 assistant("m1", [{"type": "text", "text": "Looking."}]),
                 assistant("m1", [{"type": "tool_use", "name": "Bash", "input": {"command": "ls -la"}}]),
                 {"type": "user", "message": {"content": [{"type": "tool_result", "is_error": True,
                                                           "content": "ls: denied"}]}},
                 assistant("m2", [{"type": "text", "text": "Done."}]))
    assert lines == ["Looking.", "→ Bash ls -la", "✗ tool error: ls: denied", "Done."]
    assert (p.usage.turns, p.usage.tool_calls, p.usage.errors, p.usage.input_tokens) == (2, 1, 1, 2000)
    feed(p, {"type": "result", "subtype": "success", "num_turns": 2, "total_cost_usd": 0.0123,
             "usage": {"input_tokens": 2000, "output_tokens": 90, "cache_read_input_tokens": 500}})
    assert p.usage.reported_cost_usd == 0.0123 and p.usage.output_tokens == 90 and p.usage.cache_read_tokens == 500
    assert p.verdict is None


def test_claude_verdicts():
    p = ClaudeStream()
    feed(p, {"type": "system", "subtype": "api_retry", "attempt": 1, "max_retries": 10, "error_status": 401,
             "error": "authentication_failed"})
    assert p.stop and p.stop.kind == "auth"
    p = ClaudeStream()
    feed(p, {"type": "result", "subtype": "error_max_turns", "num_turns": 3})
    assert p.verdict.kind == "max_turns"
    p = ClaudeStream()
    feed(p, {"type": "result", "subtype": "success", "is_error": True, "api_error_status": 529, "result": "Overloaded"})
    assert p.verdict.kind == "rate_limit"


@pytest.mark.parametrize("parser", [ClaudeStream, QwenStream, CodexStream, GeminiStream])
def test_parsers_survive_odd_lines(parser):
    p = parser()
    odd = ["not json", "{broken", "[1, 2]", "null", '{"type": "assistant", "message": {"content": "a string"}}',
           '{"type": "assistant", "message": null}', '{"type": "result", "usage": null, "stats": "x"}',
           '{"type": "item.completed", "item": {"type": "command_execution", "exit_code": 2}}',
           '{"type": "tool_use", "parameters": [1]}', '{"type": "user", "message": {"content": [1, "x"]}}']
    out = feed(p, *odd)
    assert "not json" in out  # plain output is shown as it came


def test_codex_usage_and_failures():
    p = CodexStream()
    lines = feed(p, {"type": "item.started", "item": {"type": "command_execution", "command": "bash -lc 'make test'"}},
                 {"type": "item.completed", "item": {"type": "agent_message", "text": "All green."}},
                 {"type": "turn.completed", "usage": {"input_tokens": 5000, "cached_input_tokens": 4000,
                                                      "output_tokens": 300}})
    assert lines[0] == "→ exec bash -lc 'make test'" and "All green." in lines
    assert (p.usage.input_tokens, p.usage.cache_read_tokens, p.usage.output_tokens) == (5000, 4000, 300)
    p = CodexStream()
    feed(p, {"type": "error", "message": "Reconnecting... 1/5 (unexpected status 401 Unauthorized: bad key)"})
    assert p.stop.kind == "auth"
    p = CodexStream()
    feed(p, {"type": "turn.failed", "error": {"message": "exceeded retry limit, last status: 429 Too Many Requests"}})
    assert p.verdict.kind == "rate_limit"


def test_gemini_joins_text_deltas_and_reads_stats():
    p = GeminiStream()
    lines = feed(p, {"type": "init", "model": "gemini-2.5-pro"},
                 {"type": "message", "role": "assistant", "content": "Wrote he", "delta": True},
                 {"type": "message", "role": "assistant", "content": "llo.txt.", "delta": True},
                 {"type": "result", "status": "success", "stats": {"input_tokens": 10, "output_tokens": 5,
                                                                   "cached": 4}})
    assert "Wrote hello.txt." in lines
    assert (p.usage.input_tokens, p.usage.output_tokens, p.usage.cache_read_tokens) == (10, 5, 4)
    assert feed(GeminiStream(), "Attempt 2 failed with status 429. Retrying with backoff...")[0].startswith("… API")
    p = GeminiStream()
    feed(p, {"type": "result", "status": "error", "error": {"message": '[API Error: {"error":{"code":400,'
                                                                        '"message":"API key not valid."}}]'}})
    assert p.verdict.kind == "auth"


def test_prices_match_the_longest_prefix_and_overrides_win():
    assert price_for("claude-sonnet-4-5-20250929")["input"] == 3.0
    assert price_for("models/gemini-2.5-flash-lite")["input"] == 0.1
    assert price_for("unknown-model") is None
    assert price_for("my-model", {"my-model": {"input": 1, "output": 2}}) == {"input": 1, "output": 2}
    usage = Usage(model="gpt-5", input_tokens=1_000_000, output_tokens=100_000, cache_read_tokens=800_000,
                  cache_read_in_input=True)
    cost, source = cost_usd(usage)
    # 200k fresh input at 1.25, 800k cached at 0.125, 100k out at 10
    assert source == "price-table" and cost == pytest.approx(0.25 + 0.1 + 1.0)
    assert cost_usd(Usage(model="gpt-5", reported_cost_usd=0.5)) == (0.5, "cli")
    assert cost_usd(Usage(model="nobody-knows")) == (None, "unknown")


def test_launcher_passes_secret_variables_and_the_prompt_verbatim(tmp_path):
    secrets_dir = tmp_path / "secrets"
    secrets_dir.mkdir()
    (secrets_dir / "API_KEY").write_text("k3y with spaces 'and' $quotes")
    prompt = tmp_path / "prompt.md"
    text = "--leading dash\nline two with \"quotes\", 'single', $HOME and `ticks`\n"
    prompt.write_text(text)
    probe = "import json, os, sys; print(json.dumps([sys.argv[1:], os.environ.get('MY_KEY')]))"
    argv = launch_command([sys.executable, "-c", probe, "before", PROMPT_ARG, "after"], {"MY_KEY": "API_KEY"})
    assert argv[2] == LAUNCHER and "k3y" not in json.dumps(argv)  # the value is never on the command line
    out = subprocess.run(argv, env={"TOREN_SECRETS_DIR": str(secrets_dir), "TOREN_TASK_FILE": str(prompt),
                                    "PATH": "/usr/bin:/bin"}, capture_output=True, text=True, check=True).stdout
    args, key = json.loads(out)
    assert args == ["before", text.rstrip("\n"), "after"]
    assert key == "k3y with spaces 'and' $quotes"


def ctx(**kw) -> RunContext:
    return RunContext(**{"prompt_file": "/run/toren/task/prompt.md", "model": None, "command": None,
                         "secrets_dir": "/run/toren/secrets", **kw})


def test_claude_reads_its_key_through_api_key_helper_not_the_environment():
    profile = get_profile("claude")
    argv = profile.command(ctx(credentials=("ANTHROPIC_API_KEY",), model="claude-opus-4-5", max_turns=7,
                               max_cost_usd=1.5, allowed_tools=("Read",), append_system_prompt="Be brief."))
    settings = json.loads(argv[argv.index("--settings") + 1])
    assert settings == {"apiKeyHelper": "cat /run/toren/secrets/ANTHROPIC_API_KEY"}
    for flag, value in (("--model", "claude-opus-4-5"), ("--max-turns", "7"), ("--max-budget-usd", "1.5"),
                        ("--allowed-tools", "Read"), ("--append-system-prompt", "Be brief.")):
        assert argv[argv.index(flag) + 1] == value
    assert profile.secret_environment(ctx(credentials=("ANTHROPIC_API_KEY",))) == {}
    env = profile.environment(ctx())
    assert env["CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"] == "1"


def test_every_profile_installs_a_pinned_cli_and_can_be_overridden():
    for name in KNOWN_AGENTS:
        profile = get_profile(name)
        assert (profile.package == "") == (name == "shell")
        if profile.package:
            assert f"{profile.package}@{profile.version}" in profile.install_layer()
    assert "@anthropic-ai/claude-code@2.0.0" in get_profile("claude", "2.0.0").install_layer()
    with pytest.raises(UsageError, match="--agent-version"):
        get_profile("shell", "1.0")


def test_credentials_are_found_in_order_and_missing_ones_are_named(tmp_path):
    claude = get_profile("claude")
    home = str(tmp_path)
    assert resolve_credentials(claude, {"ANTHROPIC_API_KEY": " sk-a \n"}, home)[0].reveal() == "sk-a"
    key_file = tmp_path / "key"
    key_file.write_text("sk-from-file\n")
    found = resolve_credentials(claude, {"ANTHROPIC_API_KEY_FILE": str(key_file)}, home)
    assert (found[0].name, found[0].reveal()) == ("ANTHROPIC_API_KEY", "sk-from-file")
    (tmp_path / ".claude").mkdir()
    (tmp_path / ".claude" / ".credentials.json").write_text('{"claudeAiOauth": {"accessToken": "sk-ant-oat-x"}}')
    assert resolve_credentials(claude, {}, home)[0].name == "CLAUDE_CREDENTIALS"
    with pytest.raises(MissingCredentials, match="ANTHROPIC_API_KEY_FILE: cannot read"):
        resolve_credentials(claude, {"ANTHROPIC_API_KEY_FILE": str(tmp_path / "absent")}, home)
    with pytest.raises(MissingCredentials, match="OPENAI_API_KEY: the codex agent needs credentials"):
        resolve_credentials(get_profile("codex"), {}, home)
    assert resolve_credentials(get_profile("shell"), {}, home) == ()


def test_a_json_credentials_file_has_each_token_masked_on_its_own():
    from toren_action.core.redact import Redactor, Secret

    value = json.dumps({"claudeAiOauth": {"accessToken": "sk-ant-oat01-abcdefghijklmnop",
                                          "refreshToken": "sk-ant-ort01-qrstuvwxyz012345"}})
    redact = Redactor([Secret("CLAUDE_CREDENTIALS", value)])
    assert redact("token sk-ant-ort01-qrstuvwxyz012345 leaked") == "token *** leaked"
    assert "abcdefghijklmnop" not in redact(f"Authorization: Bearer sk-ant-oat01-abcdefghijklmnop; {value}")
