"""A fake OpenAI Chat Completions server (enough of it for Qwen Code and other OpenAI-compatible CLIs).

Endpoints:
  POST */chat/completions   streaming (SSE) and non-streaming
  GET  */models             model list
  anything else             404 in OpenAI's error shape

Main-loop requests (those that offer the write tool) follow the Script:
  - no tool result in the conversation yet -> one call to the write tool
  - a tool result is present               -> script.final_text, finish_reason "stop"
  - mode "loop"                            -> always another tool call (a new file each turn)
  - mode "unauthorized"                    -> 401 invalid_api_key on every request
Helper requests (no write tool offered, or a background side agent such as Qwen Code's managed
memory extractor, recognised by its system prompt) get a short sensible answer and never a tool call.

Script.extra knobs (all optional):
  tool_name:      name of the write tool (default "write_file")
  path_param:     name of its path parameter (default "file_path")
  content_param:  name of its content parameter (default "content")
  fail_statuses:  list of HTTP statuses (e.g. [429, 503]) answered, in order, to the first
                  chat-completion requests before normal behaviour resumes
  retry_after:    value for a Retry-After header on those failures
  model:          model id reported in /models and in responses (default: the requested model)
"""

from __future__ import annotations

import json
import os
import time
import uuid

from .base import FakeServer, Recorded

_ERRORS = {
    401: ("Incorrect API key provided. You can find your API key at https://platform.openai.com/account/api-keys.",
          "invalid_request_error", "invalid_api_key"),
    404: ("Not found.", "invalid_request_error", "not_found"),
    429: ("Rate limit reached for requests. Please try again later.", "rate_limit_exceeded", "rate_limit_exceeded"),
    500: ("The server had an error while processing your request.", "server_error", None),
    503: ("The engine is currently overloaded, please try again later.", "server_error", None),
}


def openai_error(status: int, message: str | None = None) -> dict:
    msg, typ, code = _ERRORS.get(status, ("Error.", "server_error", None))
    return {"error": {"message": message or msg, "type": typ, "param": None, "code": code}}


class FakeChatCompletions(FakeServer):
    def __init__(self, script=None, **kwargs):
        super().__init__(script, **kwargs)  # kwargs pass through (e.g. unix_socket in newer base.py)
        self._fail_queue = list(self.script.extra.get("fail_statuses", []))
        self.tool_calls_made = 0

    # -- helpers ---------------------------------------------------------------------------------
    @property
    def tool_name(self) -> str:
        return self.script.extra.get("tool_name", "write_file")

    def chat_requests(self) -> list[Recorded]:
        return [r for r in self.requests if r.method == "POST" and r.path.split("?")[0].endswith("/chat/completions")]

    def _error(self, respond, status: int, message: str | None = None) -> None:
        headers = {"Content-Type": "application/json"}
        if status in (429, 503) and "retry_after" in self.script.extra:
            headers["Retry-After"] = str(self.script.extra["retry_after"])
        respond(status, headers, json.dumps(openai_error(status, message)))

    def _authorized(self, req: Recorded) -> bool:
        auth = req.headers.get("authorization", "")
        return auth == f"Bearer {self.script.api_key}"

    # -- dispatch --------------------------------------------------------------------------------
    def handle(self, req: Recorded, respond) -> None:
        path = req.path.split("?")[0].rstrip("/")
        if self.script.mode == "unauthorized" or not self._authorized(req):
            return self._error(respond, 401)
        if req.method == "GET" and path.endswith("/models"):
            model = self.script.extra.get("model", "fake-model")
            return self.json_response(respond, 200, {
                "object": "list",
                "data": [{"id": model, "object": "model", "created": 1700000000, "owned_by": "fake"}],
            })
        if req.method == "POST" and path.endswith("/chat/completions"):
            with self._lock:
                status = self._fail_queue.pop(0) if self._fail_queue else None
            if status:
                return self._error(respond, status)
            try:
                body = req.json() or {}
            except ValueError:
                return self._error(respond, 400, "Invalid JSON body.")
            return self._chat(body, respond)
        return self._error(respond, 404)

    # -- chat ------------------------------------------------------------------------------------
    def _offers_tool(self, body: dict) -> bool:
        for t in body.get("tools") or []:
            fn = t.get("function") or {}
            if fn.get("name") == self.tool_name:
                return True
        return False

    @staticmethod
    def _system_text(body: dict) -> str:
        parts = []
        for m in body.get("messages") or []:
            if m.get("role") in ("system", "developer"):
                c = m.get("content")
                parts.append(c if isinstance(c, str) else json.dumps(c))
        return "\n".join(parts)

    _SIDE_AGENT_MARKERS = ("managed memory extraction", "memory consolidation", "You are now acting as the")

    def _is_side_request(self, body: dict) -> bool:
        """Background helpers (e.g. Qwen Code's managed auto-memory extractor) that also offer write_file."""
        system = self._system_text(body)
        return any(marker in system for marker in self._SIDE_AGENT_MARKERS)

    def _decide(self, body: dict):
        """Returns ("tool", name, args) or ("text", text)."""
        messages = body.get("messages") or []
        if not self._offers_tool(body) or self._is_side_request(body):
            return ("text", self._helper_text(body))
        tool_results = sum(1 for m in messages if m.get("role") == "tool")
        if self.script.mode == "loop":
            root, ext = os.path.splitext(self.script.file_path)
            path = self.script.file_path if tool_results == 0 else f"{root}-{tool_results}{ext}"
            return ("tool", self.tool_name, self._tool_args(path, self.script.content))
        if tool_results == 0:
            return ("tool", self.tool_name, self._tool_args(self.script.file_path, self.script.content))
        return ("text", self.script.final_text)

    def _tool_args(self, path: str, content: str) -> dict:
        return {
            self.script.extra.get("path_param", "file_path"): path,
            self.script.extra.get("content_param", "content"): content,
        }

    @staticmethod
    def _helper_text(body: dict) -> str:
        """Answers for side requests that offer no tools (next-speaker checks, titles, summaries...)."""
        rf = body.get("response_format") or {}
        text = json.dumps(body.get("messages") or [])
        if rf.get("type") in ("json_object", "json_schema") or "next_speaker" in text:
            if "next_speaker" in text:
                return json.dumps({"reasoning": "The model finished its turn.", "next_speaker": "user"})
            return json.dumps({})
        return "Done."

    def _usage(self) -> dict:
        i, o = self.script.input_tokens, self.script.output_tokens
        return {
            "prompt_tokens": i,
            "completion_tokens": o,
            "total_tokens": i + o,
            "prompt_tokens_details": {"cached_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0},
        }

    def _chat(self, body: dict, respond) -> None:
        decision = self._decide(body)
        model = self.script.extra.get("model") or body.get("model") or "fake-model"
        cid = "chatcmpl-" + uuid.uuid4().hex[:24]
        created = int(time.time())
        call_id = "call_" + uuid.uuid4().hex[:24]
        if decision[0] == "tool":
            with self._lock:
                self.tool_calls_made += 1

        if not body.get("stream"):
            if decision[0] == "tool":
                message = {"role": "assistant", "content": None, "tool_calls": [{
                    "id": call_id, "type": "function",
                    "function": {"name": decision[1], "arguments": json.dumps(decision[2])}}]}
                finish = "tool_calls"
            else:
                message = {"role": "assistant", "content": decision[1]}
                finish = "stop"
            return self.json_response(respond, 200, {
                "id": cid, "object": "chat.completion", "created": created, "model": model,
                "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
                "usage": self._usage(),
            })

        def chunk(delta=None, finish=None, usage=None, choices=True):
            c = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                 "choices": ([{"index": 0, "delta": delta or {}, "finish_reason": finish, "logprobs": None}]
                             if choices else [])}
            if usage is not None:
                c["usage"] = usage
            return c

        events = [chunk({"role": "assistant", "content": ""})]
        if decision[0] == "tool":
            args = json.dumps(decision[2])
            half = len(args) // 2
            events.append(chunk({"tool_calls": [{"index": 0, "id": call_id, "type": "function",
                                                  "function": {"name": decision[1], "arguments": ""}}]}))
            events.append(chunk({"tool_calls": [{"index": 0, "function": {"arguments": args[:half]}}]}))
            events.append(chunk({"tool_calls": [{"index": 0, "function": {"arguments": args[half:]}}]}))
            events.append(chunk({}, "tool_calls"))
        else:
            text = decision[1]
            half = len(text) // 2
            for piece in (text[:half], text[half:]):
                if piece:
                    events.append(chunk({"content": piece}))
            events.append(chunk({}, "stop"))
        if (body.get("stream_options") or {}).get("include_usage"):
            events.append(chunk(usage=self._usage(), choices=False))
        out = self.sse((None, e) for e in events)
        out.append("data: [DONE]\n\n")
        respond(200, {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}, out)
