"""Qwen Code (`@qwen-code/qwen-code`): a Node program (Node 22+), speaking any OpenAI-compatible API.

Headless: ``qwen PROMPT --output-format stream-json --yolo`` (without --yolo a headless run silently drops its
write tools). Its stream has the same shape as Claude Code's, with no cost figure: Toren prices the tokens.
Usage statistics (on by default), auto-update and the background memory agent are switched off in the
settings file Toren writes into the agent's home.
"""

from __future__ import annotations

import json
import re
from typing import Any

from toren_action.agents.base import (
    CLI_PREFIX,
    PROMPT_ARG,
    AgentProfile,
    Credential,
    KeyProxySpec,
    RunContext,
    StreamParser,
    Verdict,
    api_verdict,
)
from toren_action.agents.claude import ClaudeStream

SETTINGS = {
    "security": {"auth": {"selectedType": "openai"}},
    "privacy": {"usageStatisticsEnabled": False},
    "telemetry": {"enabled": False},
    "general": {"enableAutoUpdate": False},
    "memory": {"enableManagedAutoMemory": False, "enableManagedAutoDream": False},
}
DEFAULT_BASE_URL = "https://api.openai.com/v1"
_API_ERROR = re.compile(r"API Error: (\d{3})")
#: qwen's exit codes for its own limits
EXIT_MAX_TURNS = 53


class QwenProfile(AgentProfile):
    name = "qwen"
    package = "@qwen-code/qwen-code"
    version = "0.24.4"
    node_runtime = True
    default_model = "qwen3-coder-plus"
    enforces_max_turns = True
    credentials = (Credential("OPENAI_API_KEY", "API key of the OpenAI-compatible endpoint (DashScope, OpenRouter…)",
                              file_var="OPENAI_API_KEY_FILE"),)
    passthrough_env = ("OPENAI_BASE_URL", "OPENAI_MODEL")
    key_proxy = KeyProxySpec("OPENAI_API_KEY", None, "OPENAI_BASE_URL", DEFAULT_BASE_URL, header="Authorization",
                             value="Bearer {key}")

    def post_install(self) -> str:
        # the bundled ripgrep ships without its execute bit
        return f"(chmod +x {CLI_PREFIX}/lib/node_modules/{self.package}/vendor/ripgrep/*/rg 2>/dev/null || true) && "

    def command(self, ctx: RunContext) -> list[str]:
        # the base URL is always given on the command line: it beats a repository's .qwen/settings.json or .env,
        # which could otherwise send the key elsewhere
        base_url = ctx.key_proxy_url or ctx.passthrough.get("OPENAI_BASE_URL", DEFAULT_BASE_URL)
        argv = [f"{CLI_PREFIX}/bin/qwen", PROMPT_ARG, "--output-format", "stream-json", "--yolo",
                "--openai-base-url", base_url]
        if ctx.model:
            argv += ["-m", ctx.model]
        if ctx.max_turns:
            argv += ["--max-session-turns", str(ctx.max_turns)]
        if ctx.append_system_prompt:
            argv += ["--append-system-prompt", ctx.append_system_prompt]
        settings = json.dumps(SETTINGS)
        setup = f"mkdir -p \"$HOME/.qwen\" && printf '%s' '{settings}' > \"$HOME/.qwen/settings.json\" && "
        return ["/bin/sh", "-c", setup + 'exec "$@"', "qwen", *argv]

    def environment(self, ctx: RunContext) -> dict[str, str]:
        env = {"QWEN_USAGE_STATISTICS_ENABLED": "false", "QWEN_CODE_SUPPRESS_YOLO_WARNING": "1",
               "QWEN_CODE_SKIP_UPDATE_CHECK_ONCE": "true", **ctx.passthrough}
        if ctx.key_proxy:
            env.update(self.stand_in_environment(ctx), OPENAI_BASE_URL=ctx.key_proxy_url or "")
        return env

    def exit_verdict(self, exit_code: int) -> Verdict | None:
        if exit_code == EXIT_MAX_TURNS:
            return Verdict("max_turns", "the agent used all the turns allowed (--max-turns)")
        return None

    def parser(self) -> StreamParser:
        return QwenStream()


class QwenStream(ClaudeStream):
    cache_read_in_input = True

    def on_event(self, event: dict[str, Any]) -> list[str]:
        kind, sub = event.get("type"), event.get("subtype")
        if kind == "system" and sub == "init":
            self.usage.model = event.get("model") or self.usage.model
            return [f"qwen {event.get('qwen_code_version', '')} · model {event.get('model', '?')} · "
                    f"{len(event.get('tools') or [])} tools"]
        if kind == "stream_event":
            return []
        if kind == "result":
            lines = super().on_event(event)
            self.usage.reported_cost_usd = None
            if event.get("is_error"):
                message = str((event.get("error") or {}).get("message") or event.get("result") or "error")
                m = _API_ERROR.search(message)
                status = int(m.group(1)) if m else None
                self.verdict = api_verdict(status, message, "Qwen Code")
            return lines
        return super().on_event(event)
