"""OpenAI Codex CLI (`@openai/codex`): a static native binary inside its npm package; Node is not needed to run it.

Headless: ``codex exec --json``. Codex ignores OPENAI_BASE_URL, so Toren always defines its own model provider
(``-c model_providers.toren.base_url=...``): the vendor's URL by default, the user's OPENAI_BASE_URL when set.
Codex's own sandbox is turned off: the container is the sandbox. Plugins sync, analytics and OpenTelemetry
metrics are switched off, which leaves only the model calls.
"""

from __future__ import annotations

import json
import re
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

DEFAULT_BASE_URL = "https://api.openai.com/v1"
_STATUS = re.compile(r"\b(?:status|last status:)\s*(\d{3})\b|\b(\d{3}) (?:Unauthorized|Forbidden|Too Many Requests)")


class CodexProfile(AgentProfile):
    name = "codex"
    package = "@openai/codex"
    version = "0.169.0"
    meters_live = False  # tokens arrive only with turn.completed, at the end
    resumes_sessions = True
    credentials = (Credential("OPENAI_API_KEY", "OpenAI API key", file_var="OPENAI_API_KEY_FILE"),)
    passthrough_env = ("OPENAI_BASE_URL",)
    key_proxy = KeyProxySpec("OPENAI_API_KEY", None, "OPENAI_BASE_URL", DEFAULT_BASE_URL, header="Authorization",
                             value="Bearer {key}")

    def command(self, ctx: RunContext) -> list[str]:
        base_url = ctx.key_proxy_url or ctx.passthrough.get("OPENAI_BASE_URL", DEFAULT_BASE_URL)
        argv = [f"{CLI_PREFIX}/bin/codex", "exec", "--json", "--skip-git-repo-check",
                *([] if ctx.session_dir else ["--ephemeral"]),
                "--dangerously-bypass-approvals-and-sandbox", "--disable", "plugins",
                "-c", "model_provider=toren",
                "-c", 'model_providers.toren.name="toren"',
                "-c", f"model_providers.toren.base_url={json.dumps(base_url)}",
                "-c", 'model_providers.toren.wire_api="responses"',
                "-c", 'model_providers.toren.env_key="OPENAI_API_KEY"',
                "-c", "analytics.enabled=false", "-c", 'otel.metrics_exporter="none"',
                "-c", "check_for_update_on_startup=false", "-c", "feedback.enabled=false"]
        if ctx.model:
            argv += ["-m", ctx.model]
        if ctx.session_dir and ctx.resume_session and SESSION_ID.fullmatch(ctx.resume_session):
            argv += ["resume", ctx.resume_session]  # the thread of the round before, then this round's prompt
        argv.append(PROMPT_ARG)
        if ctx.session_dir:  # the threads (~/.codex/sessions) live in the job's directory, for a later round
            return ["/bin/sh", "-c", session_link(ctx.session_dir, ".codex/sessions") + 'exec "$@"', "codex", *argv]
        return argv

    def parser(self) -> StreamParser:
        return CodexStream()


class CodexStream(StreamParser):
    """`codex exec --json`: thread/turn/item events; usage only in turn.completed."""

    cache_read_in_input = True

    def on_event(self, event: dict[str, Any]) -> list[str] | None:
        kind = event.get("type")
        item = event.get("item") or {}
        itype = item.get("type")
        if kind == "thread.started":
            if isinstance(event.get("thread_id"), str) and SESSION_ID.fullmatch(event["thread_id"]):
                self.session_id = event["thread_id"]
            return [f"codex thread {event.get('thread_id', '')}"]
        if kind == "turn.started":
            return []
        if kind == "item.started" and itype == "command_execution":
            self.usage.turns += 1
            return [self.tool("exec", item.get("command", ""))]
        if kind == "item.completed" and itype == "command_execution":
            code = item.get("exit_code")
            if code not in (0, None):
                out = " ".join(str(item.get("aggregated_output", "")).split())[:300]
                return [self.error(f"command exited {code}" + (f": {out}" if out else ""))]
            return []
        if kind == "item.completed" and itype == "agent_message":
            self.usage.turns += 1
            self.final_text = item.get("text")
            return [str(item.get("text", "")).strip()]
        if kind == "item.completed" and itype == "file_change":
            return [self.tool("edit", ", ".join(c.get("path", "") for c in item.get("changes") or []))]
        if kind == "item.completed" and itype == "error":
            return [f"! {item.get('message', '')}"]
        if kind == "turn.completed":
            self.finished = True
            u = event.get("usage") or {}
            self.usage.input_tokens += int(u.get("input_tokens") or 0)
            self.usage.cache_read_tokens += int(u.get("cached_input_tokens") or 0)
            self.usage.cache_write_tokens += int(u.get("cache_write_input_tokens") or 0)
            self.usage.output_tokens += int(u.get("output_tokens") or 0)
            self.events.append(("result", {"subtype": "success", "turns": self.usage.turns}))
            return [f"■ done after {self.usage.turns} step(s)"]
        if kind == "error":
            return self._api_error(str(event.get("message", "")), final=False)
        if kind == "turn.failed":
            self.finished = True
            return self._api_error(str((event.get("error") or {}).get("message", "")), final=True)
        return []

    def _api_error(self, message: str, final: bool) -> list[str]:
        m = _STATUS.search(message)
        status = int(m.group(1) or m.group(2)) if m else None
        text = " ".join(message.split())[:300]
        if not final:
            self.events.append(("retry", {"status": status, "message": text}))
            if status in (401, 403):
                self.stop = Verdict("auth", f"the model API refused the credentials (HTTP {status})")
            return [f"… {text}"]
        self.verdict = api_verdict(status, message, "Codex", busy="high demand" in message)
        return [self.error(text)]
