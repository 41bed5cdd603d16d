"""Gemini CLI (`@google/gemini-cli`): a Node program (Node 20+).

Headless: ``gemini -p PROMPT --output-format stream-json --yolo`` (without --yolo a headless run has no write
tools). Toren's settings go in a *system* settings file on the read-only task mount, which a repository's own
``.gemini/settings.json`` cannot override: API-key auth, no usage statistics or telemetry, no auto-update,
repository ``.env`` files ignored (they could otherwise redirect the API base URL and leak the key). The base URL
is always set explicitly for the same reason.
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

DEFAULT_BASE_URL = "https://generativelanguage.googleapis.com"
SETTINGS_FILE = "gemini-settings.json"
#: Gemini CLI exits with its own codes for its limits, and with the HTTP status mod 256 for API errors.
EXIT_MAX_TURNS = 53
_RETRY = re.compile(r"Attempt (\d+) failed(?: with status (\d{3}))?")
_CODE = re.compile(r'"code"\s*:\s*(\d{3})|API Error: (\d{3})|status (\d{3})')


class GeminiProfile(AgentProfile):
    name = "gemini"
    package = "@google/gemini-cli"
    version = "0.61.0"
    node_runtime = True
    default_model = "gemini-2.5-pro"
    enforces_max_turns = True
    meters_live = False  # token counts arrive only with the result, at the end
    credentials = (Credential("GEMINI_API_KEY", "Gemini API key (Google AI Studio)", file_var="GEMINI_API_KEY_FILE"),)
    passthrough_env = ("GOOGLE_GEMINI_BASE_URL",)
    key_proxy = KeyProxySpec("GEMINI_API_KEY", None, "GOOGLE_GEMINI_BASE_URL", DEFAULT_BASE_URL,
                             header="x-goog-api-key")

    def settings(self, ctx: RunContext) -> dict[str, Any]:
        settings: dict[str, Any] = {
            "security": {"auth": {"selectedType": "gemini-api-key"}, "folderTrust": {"enabled": False}},
            "privacy": {"usageStatisticsEnabled": False},
            "telemetry": {"enabled": False},
            "general": {"enableAutoUpdate": False, "enableAutoUpdateNotification": False},
            "advanced": {"ignoreLocalEnv": True},
        }
        if ctx.max_turns:
            settings["model"] = {"maxSessionTurns": ctx.max_turns}
        if ctx.allowed_tools:
            settings.setdefault("tools", {})["allowed"] = list(ctx.allowed_tools)
        if ctx.disallowed_tools:
            settings.setdefault("tools", {})["exclude"] = list(ctx.disallowed_tools)
        return settings

    def task_files(self, ctx: RunContext) -> dict[str, str]:
        return {SETTINGS_FILE: json.dumps(self.settings(ctx), indent=2)}

    def command(self, ctx: RunContext) -> list[str]:
        argv = [f"{CLI_PREFIX}/bin/gemini", "-p", PROMPT_ARG, "--output-format", "stream-json", "--yolo"]
        if ctx.model:
            argv += ["-m", ctx.model]
        return argv

    def environment(self, ctx: RunContext) -> dict[str, str]:
        task_dir = ctx.prompt_file.rsplit("/", 1)[0]
        return {
            "GEMINI_CLI_SYSTEM_SETTINGS_PATH": f"{task_dir}/{SETTINGS_FILE}",
            "GEMINI_CLI_TRUST_WORKSPACE": "true",
            "GOOGLE_GEMINI_BASE_URL": ctx.key_proxy_url or ctx.passthrough.get("GOOGLE_GEMINI_BASE_URL",
                                                                               DEFAULT_BASE_URL),
            **self.stand_in_environment(ctx),
        }

    def exit_verdict(self, exit_code: int) -> Verdict | None:
        if exit_code == EXIT_MAX_TURNS:
            return Verdict("max_turns", "the agent used all the turns allowed (--max-turns)")
        if exit_code in (400 % 256, 401 % 256, 403 % 256):
            return Verdict("auth", f"the model API refused the credentials (HTTP {exit_code + 256})")
        if exit_code in (429 % 256, 500 % 256, 503 % 256):
            return Verdict("rate_limit", f"the model API kept failing (HTTP {exit_code + 256})")
        return None

    def parser(self) -> StreamParser:
        return GeminiStream()


class GeminiStream(StreamParser):
    """stream-json: init, message (assistant text in deltas), tool_use, tool_result, error, result (stats)."""

    cache_read_in_input = True

    def __init__(self) -> None:
        super().__init__()
        self._text: list[str] = []
        self._in_turn = False

    def feed(self, line: str) -> list[str]:
        m = _RETRY.search(line)
        if m and not line.lstrip().startswith("{"):
            status = int(m.group(2)) if m.group(2) else None
            self.events.append(("retry", {"attempt": int(m.group(1)), "status": status}))
            return self._flush() + [f"… API error {status or ''}, retry after attempt {m.group(1)}".replace("  ", " ")]
        return super().feed(line)

    def _flush(self) -> list[str]:
        text = "".join(self._text).strip()
        self._text = []
        return [text] if text else []

    def _turn(self) -> None:
        if not self._in_turn:
            self._in_turn = True
            self.usage.turns += 1

    def on_event(self, event: dict[str, Any]) -> list[str] | None:
        kind = event.get("type")
        if kind == "message":
            if event.get("role") == "assistant":
                self._turn()
                self._text.append(str(event.get("content", "")))
            return []
        out = self._flush()
        if kind == "init":
            self.usage.model = event.get("model") or self.usage.model
            return out + [f"gemini · model {event.get('model', '?')}"]
        if kind == "tool_use":
            self._turn()
            return out + [self.tool(str(event.get("tool_name", "?")), event.get("parameters"))]
        if kind == "tool_result":
            self._in_turn = False  # the next assistant output is a new model turn
            if event.get("status") == "error":
                text = str(event.get("output") or (event.get("error") or {}).get("message") or "failed")
                return out + [self.error(f"tool error: {' '.join(text.split())[:300]}")]
            return out
        if kind == "error":
            self.events.append(("warning", {"message": str(event.get("message", ""))[:300]}))
            return out + [f"! {event.get('message', '')}"]
        if kind == "result":
            return out + self._result(event)
        return out

    def _result(self, event: dict[str, Any]) -> list[str]:
        self.finished = True
        stats = event.get("stats") or {}
        self.usage.input_tokens = int(stats.get("input_tokens") or stats.get("input") or 0)
        self.usage.output_tokens = int(stats.get("output_tokens") or 0)
        self.usage.cache_read_tokens = int(stats.get("cached") or 0)
        models = list((stats.get("models") or {}).keys())
        if models:
            self.usage.model = models[0]
        status = event.get("status")
        self.events.append(("result", {"status": status, "turns": self.usage.turns}))
        if status == "error":
            err = event.get("error") or {}
            message = str(err.get("message") or "error")
            m = _CODE.search(message)
            code = int(next(g for g in m.groups() if g)) if m else None
            text = " ".join(message.split())[:300]
            if err.get("type") == "FatalTurnLimitedError":
                self.verdict = Verdict("max_turns", "the agent used all the turns allowed (--max-turns)")
            else:
                self.verdict = api_verdict(code, message, "Gemini CLI",
                                           auth="API_KEY_INVALID" in message or "API key not valid" in message,
                                           busy="overloaded" in message or "exhausted" in message)
            return [self.error(text)]
        return [f"■ {status or 'done'} after {self.usage.turns} turn(s)"]
