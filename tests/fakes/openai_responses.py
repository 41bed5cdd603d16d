"""A fake OpenAI Responses API (the wire protocol the Codex CLI speaks), on 127.0.0.1 only.

Codex is pointed at it with a custom model provider, e.g.::

    codex exec --json ... \\
      -c model_provider=fake \\
      -c 'model_providers.fake.name="fake"' \\
      -c 'model_providers.fake.base_url="http://127.0.0.1:PORT/v1"' \\
      -c 'model_providers.fake.wire_api="responses"' \\
      -c 'model_providers.fake.env_key="OPENAI_API_KEY"'

Endpoints:
  POST /v1/responses   (stream=true) -> SSE: response.created, response.in_progress,
                        response.output_item.added, response.function_call_arguments.delta/done
                        or response.output_text.delta/done, response.output_item.done,
                        response.completed (with usage)
  GET  /v1/models      -> a small model list (Codex does not normally call it for a custom
                        provider, but it is cheap to answer)
  anything else        -> 404 in OpenAI's error shape

The tool call: Codex 0.169 offers the model a function tool `exec_command` whose arguments are
``{"cmd": "<shell command line>"}`` (older Codex builds offered `shell` with
``{"command": ["bash", "-lc", "..."]}`` or `shell_command` with ``{"command": "..."}``).
The fake reads the tools in each request and uses whichever of these is offered, with
exec_command preferred.  The command is ``mkdir -p DIR && printf '%s' 'CONTENT' > FILE`` with
POSIX shell quoting, so arbitrary text (short of NUL bytes) is written byte-for-byte.

Script.extra knobs (all optional):
  fail_statuses: list of HTTP status codes answered, one per request, to the first N
                 POST /v1/responses calls before the script proper (e.g. [429, 503]).
  retry_after:   value for a Retry-After header sent with those failures.
  model:         model id echoed in responses (default: the request's model).
"""

from __future__ import annotations

import json
import os
import shlex
import threading
import time
import uuid

from .base import FakeServer, Recorded, Script

TOOL_PREFERENCE = ("exec_command", "shell_command", "shell")


def _error_body(message: str, type_: str, code: str | None, param=None) -> dict:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def _mask(key: str) -> str:
    if len(key) <= 8:
        return "*" * len(key)
    return f"{key[:3]}{'*' * 8}{key[-4:]}"


class FakeResponses(FakeServer):
    """OpenAI Responses API fake for the Codex CLI."""

    def __init__(self, script: Script | None = None):
        super().__init__(script)
        self._count_lock = threading.Lock()
        self._failures_served = 0
        self.tool_calls = 0  # how many tool calls the fake has emitted

    # ------------------------------------------------------------------ helpers
    @property
    def responses_requests(self) -> list[Recorded]:
        return [r for r in self.requests if r.method == "POST" and r.path.split("?")[0].endswith("/responses")]

    def _authorized(self, req: Recorded) -> bool:
        return req.headers.get("authorization", "") == f"Bearer {self.script.api_key}"

    def _unauthorized(self, req: Recorded, respond) -> None:
        got = req.headers.get("authorization", "")
        key = got[len("Bearer "):] if got.startswith("Bearer ") else got
        if key:
            msg = (
                f"Incorrect API key provided: {_mask(key)}. You can find your API key at "
                "https://platform.openai.com/account/api-keys."
            )
        else:
            msg = (
                "You didn't provide an API key. You need to provide your API key in an "
                "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
            )
        respond(
            401,
            {"Content-Type": "application/json", "x-request-id": f"req_{uuid.uuid4().hex}"},
            json.dumps(_error_body(msg, "invalid_request_error", "invalid_api_key")),
        )

    # ------------------------------------------------------------------ dispatch
    def handle(self, req: Recorded, respond) -> None:
        path = req.path.split("?")[0].rstrip("/")
        if self.script.mode == "unauthorized" or not self._authorized(req):
            self._unauthorized(req, respond)
            return
        if req.method == "POST" and path.endswith("/responses"):
            self._responses(req, respond)
        elif req.method == "GET" and path.endswith("/models"):
            self._models(respond)
        else:
            self.json_response(
                respond,
                404,
                _error_body(f"Invalid URL ({req.method} {req.path})", "invalid_request_error", None),
            )

    def _models(self, respond) -> None:
        model = self.script.extra.get("model", "gpt-5")
        self.json_response(
            respond,
            200,
            {
                "object": "list",
                "data": [{"id": model, "object": "model", "created": 1700000000, "owned_by": "openai"}],
                "models": [],  # the shape Codex's own /models refresh expects
            },
        )

    # ------------------------------------------------------------------ /v1/responses
    def _responses(self, req: Recorded, respond) -> None:
        fails = list(self.script.extra.get("fail_statuses") or [])
        with self._count_lock:
            fail_now = self._failures_served < len(fails)
            status = fails[self._failures_served] if fail_now else None
            if fail_now:
                self._failures_served += 1
        if fail_now:
            self._fail(status, respond)
            return

        try:
            body = req.json() or {}
        except ValueError:
            self.json_response(respond, 400, _error_body("We could not parse the JSON body of your request.",
                                                         "invalid_request_error", None))
            return

        model = self.script.extra.get("model") or body.get("model") or "gpt-5"
        tool = self._pick_tool(body.get("tools") or [])
        tool_done = self._has_tool_output(body.get("input") or [])

        if self.script.mode == "loop" or not tool_done:
            if tool is None:
                # No shell-like tool offered: nothing sensible to do but talk.
                events = self._message_turn(model, "No shell tool was offered to the fake model.")
            else:
                events = self._tool_turn(model, tool)
        else:
            events = self._message_turn(model, self.script.final_text)
        respond(
            200,
            {"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
             "x-request-id": f"req_{uuid.uuid4().hex}"},
            self.sse(events),
        )

    def _fail(self, status: int, respond) -> None:
        headers = {"Content-Type": "application/json", "x-request-id": f"req_{uuid.uuid4().hex}"}
        if self.script.extra.get("retry_after") is not None:
            headers["Retry-After"] = str(self.script.extra["retry_after"])
        if status == 429:
            body = _error_body("Rate limit reached for requests. Please try again in 1s.",
                               "requests", "rate_limit_exceeded")
        elif status == 401:
            body = _error_body("Incorrect API key provided.", "invalid_request_error", "invalid_api_key")
        elif status >= 500:
            body = _error_body("The server is overloaded or not ready yet.", "server_error", None)
        else:
            body = _error_body(f"Error {status}", "invalid_request_error", None)
        respond(status, headers, json.dumps(body))

    @staticmethod
    def _pick_tool(tools: list) -> str | None:
        names = set()
        for t in tools:
            if not isinstance(t, dict):
                continue
            if t.get("type") == "function" and t.get("name"):
                names.add(t["name"])
            for sub in t.get("tools") or []:  # namespaced tools
                if isinstance(sub, dict) and sub.get("name"):
                    names.add(sub["name"])
        for name in TOOL_PREFERENCE:
            if name in names:
                return name
        return None

    @staticmethod
    def _has_tool_output(items: list) -> bool:
        """True when the conversation since the last user message holds a tool result."""
        last_user = -1
        for i, item in enumerate(items):
            if isinstance(item, dict) and item.get("type", "message") == "message" and item.get("role") == "user":
                last_user = i
        return any(
            isinstance(item, dict) and item.get("type") in ("function_call_output", "custom_tool_call_output")
            for item in items[last_user + 1:]
        )

    def _shell_line(self) -> str:
        path = self.script.file_path
        parent = os.path.dirname(path) or "."
        return f"mkdir -p {shlex.quote(parent)} && printf '%s' {shlex.quote(self.script.content)} > {shlex.quote(path)}"

    def _arguments(self, tool: str) -> str:
        line = self._shell_line()
        if tool == "exec_command":
            return json.dumps({"cmd": line})
        if tool == "shell_command":
            return json.dumps({"command": line})
        return json.dumps({"command": ["bash", "-lc", line]})  # legacy `shell`

    def _usage(self) -> dict:
        i, o = self.script.input_tokens, self.script.output_tokens
        return {
            "input_tokens": i,
            "input_tokens_details": {"cached_tokens": int(self.script.extra.get("cached_tokens", 0))},
            "output_tokens": o,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": i + o,
        }

    def _envelope(self, resp_id: str, model: str, status: str, output: list, usage=None) -> dict:
        return {
            "id": resp_id,
            "object": "response",
            "created_at": int(time.time()),
            "status": status,
            "model": model,
            "output": output,
            "usage": usage,
            "error": None,
            "incomplete_details": None,
        }

    def _tool_turn(self, model: str, tool: str) -> list:
        with self._count_lock:
            self.tool_calls += 1
        resp_id = f"resp_{uuid.uuid4().hex}"
        item_id = f"fc_{uuid.uuid4().hex}"
        call_id = f"call_{uuid.uuid4().hex[:24]}"
        args = self._arguments(tool)
        pending = {"type": "function_call", "id": item_id, "call_id": call_id, "name": tool,
                   "arguments": "", "status": "in_progress"}
        done = dict(pending, arguments=args, status="completed")
        seq = iter(range(1_000_000))
        return [
            ("response.created", {"type": "response.created", "sequence_number": next(seq),
                                  "response": self._envelope(resp_id, model, "in_progress", [])}),
            ("response.in_progress", {"type": "response.in_progress", "sequence_number": next(seq),
                                      "response": self._envelope(resp_id, model, "in_progress", [])}),
            ("response.output_item.added", {"type": "response.output_item.added", "sequence_number": next(seq),
                                            "output_index": 0, "item": pending}),
            ("response.function_call_arguments.delta", {"type": "response.function_call_arguments.delta",
                                                        "sequence_number": next(seq), "item_id": item_id,
                                                        "output_index": 0, "delta": args}),
            ("response.function_call_arguments.done", {"type": "response.function_call_arguments.done",
                                                       "sequence_number": next(seq), "item_id": item_id,
                                                       "output_index": 0, "arguments": args}),
            ("response.output_item.done", {"type": "response.output_item.done", "sequence_number": next(seq),
                                           "output_index": 0, "item": done}),
            ("response.completed", {"type": "response.completed", "sequence_number": next(seq),
                                    "response": self._envelope(resp_id, model, "completed", [done], self._usage())}),
        ]

    def _message_turn(self, model: str, text: str) -> list:
        resp_id = f"resp_{uuid.uuid4().hex}"
        item_id = f"msg_{uuid.uuid4().hex}"
        part_empty = {"type": "output_text", "text": "", "annotations": []}
        part = {"type": "output_text", "text": text, "annotations": []}
        pending = {"type": "message", "id": item_id, "role": "assistant", "status": "in_progress", "content": []}
        done = {"type": "message", "id": item_id, "role": "assistant", "status": "completed", "content": [part]}
        seq = iter(range(1_000_000))
        common = {"item_id": item_id, "output_index": 0, "content_index": 0}
        return [
            ("response.created", {"type": "response.created", "sequence_number": next(seq),
                                  "response": self._envelope(resp_id, model, "in_progress", [])}),
            ("response.in_progress", {"type": "response.in_progress", "sequence_number": next(seq),
                                      "response": self._envelope(resp_id, model, "in_progress", [])}),
            ("response.output_item.added", {"type": "response.output_item.added", "sequence_number": next(seq),
                                            "output_index": 0, "item": pending}),
            ("response.content_part.added", {"type": "response.content_part.added", "sequence_number": next(seq),
                                             **common, "part": part_empty}),
            ("response.output_text.delta", {"type": "response.output_text.delta", "sequence_number": next(seq),
                                            **common, "delta": text}),
            ("response.output_text.done", {"type": "response.output_text.done", "sequence_number": next(seq),
                                           **common, "text": text}),
            ("response.content_part.done", {"type": "response.content_part.done", "sequence_number": next(seq),
                                            **common, "part": part}),
            ("response.output_item.done", {"type": "response.output_item.done", "sequence_number": next(seq),
                                           "output_index": 0, "item": done}),
            ("response.completed", {"type": "response.completed", "sequence_number": next(seq),
                                    "response": self._envelope(resp_id, model, "completed", [done], self._usage())}),
        ]


__all__ = ["FakeResponses", "Script"]
