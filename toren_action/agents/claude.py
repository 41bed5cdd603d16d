"""Claude Code (`@anthropic-ai/claude-code`): a native binary shipped inside its npm package.

Headless: ``claude -p PROMPT --output-format stream-json --verbose``. The API key never enters the container's
environment: ``apiKeyHelper`` (passed with ``--settings``) reads it from the read-only secrets mount when the
CLI needs it. A subscription login (``~/.claude/.credentials.json``) is copied into the agent's home instead.
"""

from __future__ import annotations

import json
from typing import Any

from toren_action.agents.base import (
    CLI_PREFIX,
    PROMPT_ARG,
    SESSION_ID,
    AgentProfile,
    Credential,
    KeyProxySpec,
    RunContext,
    StreamParser,
    Verdict,
    api_verdict,
    session_link,
)

CREDENTIALS_FILE = ".credentials.json"


class ClaudeProfile(AgentProfile):
    name = "claude"
    package = "@anthropic-ai/claude-code"
    version = "2.1.332"
    default_model = "claude-sonnet-4-5"
    enforces_max_turns = True
    reports_cost = True
    resumes_sessions = True
    credentials = (
        Credential("ANTHROPIC_API_KEY", "Anthropic API key", file_var="ANTHROPIC_API_KEY_FILE"),
        Credential("CLAUDE_CODE_OAUTH_TOKEN", "Claude subscription token (`claude setup-token`)"),
        Credential("CLAUDE_CREDENTIALS", "Claude subscription login", file_var="CLAUDE_CREDENTIALS_FILE",
                   default_file="~/.claude/.credentials.json"),
    )
    passthrough_env = ("ANTHROPIC_BASE_URL", "ANTHROPIC_UNIX_SOCKET", "ANTHROPIC_SMALL_FAST_MODEL")
    key_proxy = KeyProxySpec("ANTHROPIC_API_KEY", "ANTHROPIC_UNIX_SOCKET", "ANTHROPIC_BASE_URL",
                             "https://api.anthropic.com")

    def command(self, ctx: RunContext) -> list[str]:
        settings: dict[str, Any] = {}
        if ctx.key_proxy:  # the proxy on the host puts the real key in; the CLI only needs a stand-in
            settings["apiKeyHelper"] = "echo toren-key-proxy"
        elif "ANTHROPIC_API_KEY" in ctx.credentials:
            settings["apiKeyHelper"] = f"cat {ctx.secrets_dir}/ANTHROPIC_API_KEY"
        # --setting-sources user: the repository's .claude/settings*.json could otherwise set an `env` that
        # sends the API key to another host, or an apiKeyHelper of its own
        argv = [f"{CLI_PREFIX}/bin/claude", "-p", PROMPT_ARG, "--output-format", "stream-json", "--verbose",
                "--dangerously-skip-permissions", "--setting-sources", "user"]
        if not ctx.session_dir:
            argv.insert(7, "--no-session-persistence")
        if ctx.session_dir and ctx.resume_session and SESSION_ID.fullmatch(ctx.resume_session):
            argv += ["--resume", ctx.resume_session]
        if settings:
            argv += ["--settings", json.dumps(settings)]
        if ctx.model:
            argv += ["--model", ctx.model]
        if ctx.max_turns:
            argv += ["--max-turns", str(ctx.max_turns)]
        if ctx.max_cost_usd:
            argv += ["--max-budget-usd", f"{ctx.max_cost_usd:g}"]
        if ctx.allowed_tools:
            argv += ["--allowed-tools", *ctx.allowed_tools]
        if ctx.disallowed_tools:
            argv += ["--disallowed-tools", *ctx.disallowed_tools]
        if ctx.append_system_prompt:
            argv += ["--append-system-prompt", ctx.append_system_prompt]
        setup = ""
        if "CLAUDE_CREDENTIALS" in ctx.credentials:  # the login file must sit in the agent's own home
            setup = (f'mkdir -p "$HOME/.claude" && cp "{ctx.secrets_dir}/CLAUDE_CREDENTIALS" '
                     f'"$HOME/.claude/{CREDENTIALS_FILE}" && chmod 600 "$HOME/.claude/{CREDENTIALS_FILE}" && ')
        if ctx.session_dir:  # the sessions (~/.claude/projects) live in the job's directory, for a later round
            setup += session_link(ctx.session_dir, ".claude/projects")
        if setup:
            return ["/bin/sh", "-c", setup + 'exec "$@"', "claude", *argv]
        return argv

    def environment(self, ctx: RunContext) -> dict[str, str]:
        extra = {}
        if "ANTHROPIC_UNIX_SOCKET" in ctx.passthrough and "ANTHROPIC_BASE_URL" not in ctx.passthrough:
            extra["ANTHROPIC_BASE_URL"] = "http://localhost"  # the socket carries it; the CLI still wants a URL
        return {**extra,
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",  # only model calls: no telemetry, no update checks
            "DISABLE_AUTOUPDATER": "1",
            "DISABLE_ERROR_REPORTING": "1",
            "DISABLE_TELEMETRY": "1",
            **ctx.passthrough,
        }

    def secret_environment(self, ctx: RunContext) -> dict[str, str]:
        if ctx.key_proxy:
            return {}
        if "ANTHROPIC_API_KEY" not in ctx.credentials and "CLAUDE_CODE_OAUTH_TOKEN" in ctx.credentials:
            return {"CLAUDE_CODE_OAUTH_TOKEN": "CLAUDE_CODE_OAUTH_TOKEN"}
        return {}

    def parser(self) -> StreamParser:
        return ClaudeStream()


class ClaudeStream(StreamParser):
    """Claude Code's stream-json: system/init, assistant (text, tool_use), user (tool_result), result."""

    def __init__(self) -> None:
        super().__init__()
        self._messages: dict[str, dict[str, int]] = {}

    def on_event(self, event: dict[str, Any]) -> list[str]:
        kind, sub = event.get("type"), event.get("subtype")
        if kind == "system" and sub == "init":
            self.usage.model = event.get("model") or self.usage.model
            if isinstance(event.get("session_id"), str) and SESSION_ID.fullmatch(event["session_id"]):
                self.session_id = event["session_id"]
            return [f"claude {event.get('claude_code_version', '')} · model {event.get('model', '?')} · "
                    f"{len(event.get('tools') or [])} tools".replace("claude  ·", "claude ·")]
        if kind == "system" and sub == "api_retry":
            return self._retry(event)
        if kind == "assistant":
            return self._assistant(event.get("message") or {}, str(event.get("uuid") or id(event)))
        if kind == "user":
            return self._tool_results(event.get("message") or {})
        if kind == "result":
            return self._result(event)
        return []

    def _assistant(self, msg: dict[str, Any], event_id: str) -> list[str]:
        mid = msg.get("id") or event_id
        if mid not in self._messages:  # one API response arrives as several events sharing its id
            self.usage.turns += 1
        usage = msg.get("usage") or {}
        seen = self._messages.setdefault(mid, {})
        for ours, theirs in (("input_tokens", "input_tokens"), ("output_tokens", "output_tokens"),
                             ("cache_read_tokens", "cache_read_input_tokens"),
                             ("cache_write_tokens", "cache_creation_input_tokens")):
            value = int(usage.get(theirs) or 0)
            if value > seen.get(ours, 0):
                setattr(self.usage, ours, getattr(self.usage, ours) + value - seen.get(ours, 0))
                seen[ours] = value
        self.usage.model = msg.get("model") or self.usage.model
        out = []
        for block in msg.get("content") or []:
            if block.get("type") == "text" and block.get("text", "").strip():
                out.append(block["text"].strip())
            elif block.get("type") == "tool_use":
                out.append(self.tool(block.get("name", "?"), block.get("input")))
        return out

    def _tool_results(self, msg: dict[str, Any]) -> list[str]:
        out = []
        content = msg.get("content")
        for block in content if isinstance(content, list) else []:
            if isinstance(block, dict) and block.get("type") == "tool_result" and block.get("is_error"):
                text = block.get("content")
                if isinstance(text, list):
                    text = " ".join(b.get("text", "") for b in text if isinstance(b, dict))
                out.append(self.error(f"tool error: {' '.join(str(text).split())[:300]}"))
        return out

    def _retry(self, event: dict[str, Any]) -> list[str]:
        status = event.get("error_status")
        attempt, limit = event.get("attempt"), event.get("max_retries")
        self.events.append(("retry", {"status": status, "attempt": attempt, "error": event.get("error")}))
        if status in (401, 403):
            self.stop = Verdict("auth", f"the model API refused the credentials (HTTP {status}: "
                                        f"{event.get('error', 'authentication failed')})")
        return [f"… API error {status} ({event.get('error', '')}), retry {attempt}/{limit} in "
                f"{(event.get('retry_delay_ms') or 0) / 1000:.1f}s"]

    def _result(self, event: dict[str, Any]) -> list[str]:
        self.finished = True
        usage = event.get("usage") or {}
        self.usage.input_tokens = int(usage.get("input_tokens") or self.usage.input_tokens)
        self.usage.output_tokens = int(usage.get("output_tokens") or self.usage.output_tokens)
        self.usage.cache_read_tokens = int(usage.get("cache_read_input_tokens") or self.usage.cache_read_tokens)
        self.usage.cache_write_tokens = int(usage.get("cache_creation_input_tokens") or self.usage.cache_write_tokens)
        if event.get("num_turns"):
            self.usage.turns = int(event["num_turns"])
        if event.get("total_cost_usd") is not None:
            self.usage.reported_cost_usd = float(event["total_cost_usd"])
        models = list((event.get("modelUsage") or {}).keys())
        if models and not self.usage.model:
            self.usage.model = models[0]
        sub = event.get("subtype", "")
        self.final_text = event.get("result") if isinstance(event.get("result"), str) else None
        self.events.append(("result", {"subtype": sub, "is_error": bool(event.get("is_error")),
                                       "turns": self.usage.turns, "api_error_status": event.get("api_error_status")}))
        if sub == "error_max_turns":
            self.verdict = Verdict("max_turns", f"the agent used all {self.usage.turns} turns allowed (--max-turns)")
        elif sub == "error_max_budget_usd":
            self.verdict = Verdict("budget", "the agent's cost passed --max-cost-usd")
        elif event.get("is_error"):
            status = event.get("api_error_status")
            self.verdict = api_verdict(status if isinstance(status, int) else None,
                                       str(event.get("result") or sub or "error"), "Claude Code")
        return [f"■ {sub or 'done'} after {self.usage.turns} turn(s)"]
