"""A fake Anthropic Messages API (POST /v1/messages, streaming SSE) for the real Claude Code CLI."""

from __future__ import annotations

import json
import uuid

from tests.fakes.base import FakeServer, Recorded


class FakeAnthropic(FakeServer):
    model = "claude-sonnet-4-5-20250929"

    def handle(self, req: Recorded, respond) -> None:
        s = self.script
        path = req.path.split("?")[0]
        if req.method != "POST" or not path.endswith("/v1/messages"):
            if path.endswith("/v1/messages/count_tokens"):
                return self.json_response(respond, 200, {"input_tokens": s.input_tokens})
            return self.json_response(respond, 404, {"type": "error", "error": {"type": "not_found_error",
                                                                                 "message": f"no route {path}"}})
        keyed = req.headers.get("x-api-key") == s.api_key or req.headers.get("authorization") == f"Bearer {s.api_key}"
        if s.mode == "unauthorized" or not keyed:
            return self.json_response(respond, 401, {"type": "error", "error": {
                "type": "authentication_error", "message": "invalid x-api-key"}})
        failures = s.extra.setdefault("fail_statuses", [])
        if failures:  # scripted API errors for the first calls (rate limit 429, overloaded 529, 5xx)
            status = failures.pop(0)
            kind = {429: "rate_limit_error", 529: "overloaded_error"}.get(status, "api_error")
            return self.json_response(respond, status, {"type": "error", "error": {"type": kind,
                                                                                   "message": f"scripted {status}"}})
        body = req.json()
        messages = body.get("messages", [])
        turn = sum(1 for m in messages if m.get("role") == "assistant")
        last = messages[-1] if messages else {}
        answered_tool = isinstance(last.get("content"), list) and any(
            isinstance(b, dict) and b.get("type") == "tool_result" for b in last["content"])
        tools = {t.get("name") for t in body.get("tools", [])}
        if not body.get("stream"):  # a plain request (the anthropic SDK's messages.create): one JSON message
            return self.json_response(respond, 200, {
                "id": f"msg_{uuid.uuid4().hex[:24]}", "type": "message", "role": "assistant",
                "model": body.get("model", self.model), "stop_reason": "end_turn", "stop_sequence": None,
                "content": [{"type": "text", "text": s.extra.get("summary_text", s.final_text)}],
                "usage": {"input_tokens": s.input_tokens, "output_tokens": s.output_tokens}})
        if "Write" not in tools:  # a side request (titles, summaries): answer briefly
            return respond(200, {"Content-Type": "text/event-stream"}, self._text("ok", body, s))
        if answered_tool and s.mode != "loop":
            return respond(200, {"Content-Type": "text/event-stream"}, self._text(s.final_text, body, s))
        file_path = s.file_path if s.mode != "loop" else s.file_path.replace(".txt", f"-{turn}.txt")
        return respond(200, {"Content-Type": "text/event-stream"},
                       self._tool(body, s, "Write", {"file_path": file_path, "content": s.content}))

    def _start(self, body, s) -> tuple[str, dict]:
        return "message_start", {"type": "message_start", "message": {
            "id": f"msg_{uuid.uuid4().hex[:24]}", "type": "message", "role": "assistant",
            "model": body.get("model", self.model), "content": [], "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": s.input_tokens, "output_tokens": 1, "cache_creation_input_tokens": 0,
                      "cache_read_input_tokens": 0}}}

    def _end(self, stop_reason: str, s) -> list[tuple[str, dict]]:
        return [
            ("message_delta", {"type": "message_delta", "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                               "usage": {"output_tokens": s.output_tokens}}),
            ("message_stop", {"type": "message_stop"}),
        ]

    def _text(self, text: str, body, s) -> list[str]:
        return self.sse([
            self._start(body, s),
            ("content_block_start", {"type": "content_block_start", "index": 0,
                                     "content_block": {"type": "text", "text": ""}}),
            ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                     "delta": {"type": "text_delta", "text": text}}),
            ("content_block_stop", {"type": "content_block_stop", "index": 0}),
            *self._end("end_turn", s),
        ])

    def _tool(self, body, s, name: str, args: dict) -> list[str]:
        return self.sse([
            self._start(body, s),
            ("content_block_start", {"type": "content_block_start", "index": 0,
                                     "content_block": {"type": "text", "text": ""}}),
            ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                     "delta": {"type": "text_delta", "text": "I'll write the file."}}),
            ("content_block_stop", {"type": "content_block_stop", "index": 0}),
            ("content_block_start", {"type": "content_block_start", "index": 1, "content_block": {
                "type": "tool_use", "id": f"toolu_{uuid.uuid4().hex[:24]}", "name": name, "input": {}}}),
            ("content_block_delta", {"type": "content_block_delta", "index": 1,
                                     "delta": {"type": "input_json_delta", "partial_json": json.dumps(args)}}),
            ("content_block_stop", {"type": "content_block_stop", "index": 1}),
            *self._end("tool_use", s),
        ])
