"""A fake Gemini API (generativelanguage.googleapis.com, v1beta) for the real Gemini CLI.

Point the CLI at it with GOOGLE_GEMINI_BASE_URL=<fake.url> and GEMINI_API_KEY=<script.api_key>.

Endpoints:
  POST /v1beta/models/{model}:streamGenerateContent?alt=sse  -- the agent loop (SSE)
  POST /v1beta/models/{model}:generateContent                 -- helper calls (routing, next-speaker,
                                                                 loop detection, summaries, ...)
  POST /v1beta/models/{model}:countTokens
  POST /v1beta/models/{model}:embedContent / :batchEmbedContents
  GET  /v1beta/models[/{model}]
Anything else gets a Google-style 404.

Script behaviour (mode "ok"): the first agent turn calls write_file(file_path, content) once; once a
functionResponse has arrived it answers script.final_text and stops.  mode "loop": every agent turn
calls write_file on a new file (<stem>-<n><suffix>) forever.  mode "unauthorized": every call gets
Google's bad-API-key error.  A request whose x-goog-api-key header / key query parameter /
Bearer token differs from script.api_key also gets that error.

script.extra knobs (all optional):
  "unauthorized_status": 400 (default; what Google really sends for a bad key: INVALID_ARGUMENT /
                         API_KEY_INVALID), 401 (UNAUTHENTICATED) or 403 (PERMISSION_DENIED).
  "fail_first": [status, ...]  -- answer the first len(list) agent (streamGenerateContent) calls with
                                  these statuses (429 RESOURCE_EXHAUSTED, 503 UNAVAILABLE, 500 ...)
                                  before following the script; used to observe CLI retries.
  "model_version": the modelVersion reported in responses (default: the model in the URL).
  "loop_same_file": True makes mode "loop" repeat the identical write_file call (trips the CLI's own
                    loop detection instead of running forever).
  "helper_usage": True to put a small usageMetadata on helper (generateContent) answers too; by
                  default they carry none, so the CLI's result stats count only agent turns.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import threading
from urllib.parse import parse_qs, urlsplit

from .base import FakeServer, Recorded, Script

WRITE_TOOL = "write_file"

_STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}

_ROUTE = re.compile(r"^/(?P<ver>v1(?:alpha|beta\d*)?)/models/(?P<model>[^:/]+)(?::(?P<method>[A-Za-z]+))?$")


def google_error(status: int, message: str, reason: str | None = None, extra_details=None) -> dict:
    details = []
    if reason:
        details.append(
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": reason,
                "domain": "googleapis.com",
                "metadata": {"service": "generativelanguage.googleapis.com"},
            }
        )
    details.extend(extra_details or [])
    err = {"code": status, "message": message, "status": _STATUS_NAMES.get(status, "UNKNOWN")}
    if details:
        err["details"] = details
    return {"error": err}


def bad_key_error(status: int = 400) -> dict:
    if status == 401:
        return google_error(
            401,
            "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie "
            "or other valid authentication credential. See "
            "https://developers.google.com/identity/sign-in/web/devconsole-project.",
            "ACCESS_TOKEN_TYPE_UNSUPPORTED",
        )
    if status == 403:
        return google_error(
            403,
            "Method doesn't allow unregistered callers (callers without established identity). "
            "Please use API Key or other form of API consumer identity to call this API.",
            "API_KEY_SERVICE_BLOCKED",
        )
    return google_error(
        400,
        "API key not valid. Please pass a valid API key.",
        "API_KEY_INVALID",
        [
            {
                "@type": "type.googleapis.com/google.rpc.LocalizedMessage",
                "locale": "en-US",
                "message": "API key not valid. Please pass a valid API key.",
            }
        ],
    )


class FakeGemini(FakeServer):
    def __init__(self, script: Script | None = None, **kwargs):
        super().__init__(script, **kwargs)  # kwargs: whatever FakeServer takes (e.g. unix_socket)
        self._state_lock = threading.Lock()
        self._agent_calls = 0
        self._loop_counter = itertools.count(1)
        self._response_ids = itertools.count(1)
        self._fail_first = list(self.script.extra.get("fail_first", []))

    # ------------------------------------------------------------------ helpers for tests
    def paths(self) -> list[str]:
        return [f"{r.method} {r.path}" for r in self.requests]

    def agent_requests(self) -> list[Recorded]:
        return [r for r in self.requests if ":streamGenerateContent" in r.path]

    # ------------------------------------------------------------------ plumbing
    def _key_ok(self, req: Recorded) -> bool:
        key = req.headers.get("x-goog-api-key")
        if not key:
            q = parse_qs(urlsplit(req.path).query)
            if "key" in q:
                key = q["key"][0]
        if not key:
            auth = req.headers.get("authorization", "")
            if auth.lower().startswith("bearer "):
                key = auth[7:].strip()
        return key == self.script.api_key

    def _usage(self, prompt_tokens: int | None = None, output_tokens: int | None = None) -> dict:
        p = self.script.input_tokens if prompt_tokens is None else prompt_tokens
        c = self.script.output_tokens if output_tokens is None else output_tokens
        return {
            "promptTokenCount": p,
            "candidatesTokenCount": c,
            "totalTokenCount": p + c,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": p}],
        }

    def _envelope(self, parts: list[dict], finish: str | None, usage: dict | None, model: str | None = None) -> dict:
        cand: dict = {"content": {"parts": parts, "role": "model"}, "index": 0}
        if finish:
            cand["finishReason"] = finish
        out: dict = {
            "candidates": [cand],
            "modelVersion": self.script.extra.get("model_version") or model or "gemini-2.5-flash",
            "responseId": f"fake-resp-{next(self._response_ids)}",
        }
        if usage is not None:
            out["usageMetadata"] = usage
        return out

    # ------------------------------------------------------------------ dispatch
    def handle(self, req: Recorded, respond) -> None:
        split = urlsplit(req.path)
        path = split.path
        if self.script.mode == "unauthorized" or not self._key_ok(req):
            status = int(self.script.extra.get("unauthorized_status", 400))
            return self.json_response(respond, status, bad_key_error(status))

        m = _ROUTE.match(path)
        if path.rstrip("/").endswith("/models") and req.method == "GET":
            return self.json_response(respond, 200, {"models": [self._model_info("gemini-2.5-flash")]})
        if not m:
            return self.json_response(respond, 404, google_error(404, f"Unknown path {path}"))
        model, method = m.group("model"), m.group("method")
        if method is None and req.method == "GET":
            return self.json_response(respond, 200, self._model_info(model))
        try:
            body = req.json() or {}
        except ValueError:
            return self.json_response(respond, 400, google_error(400, "Invalid JSON payload received."))

        if method == "streamGenerateContent":
            return self._stream(model, body, respond)
        if method == "generateContent":
            return self.json_response(respond, 200, self._helper(model, body))
        if method == "countTokens":
            return self.json_response(respond, 200, {"totalTokens": self._estimate_tokens(body)})
        if method == "embedContent":
            return self.json_response(respond, 200, {"embedding": {"values": [0.0] * 8}})
        if method == "batchEmbedContents":
            n = len(body.get("requests", []))
            return self.json_response(respond, 200, {"embeddings": [{"values": [0.0] * 8}] * n})
        return self.json_response(respond, 404, google_error(404, f"Method {method} not found"))

    @staticmethod
    def _model_info(model: str) -> dict:
        return {
            "name": f"models/{model}",
            "displayName": model,
            "inputTokenLimit": 1048576,
            "outputTokenLimit": 65536,
            "supportedGenerationMethods": ["generateContent", "countTokens", "streamGenerateContent"],
        }

    @staticmethod
    def _estimate_tokens(body: dict) -> int:
        return max(1, len(json.dumps(body)) // 4)

    # ------------------------------------------------------------------ agent turns
    @staticmethod
    def _function_responses(body: dict) -> int:
        n = 0
        for content in body.get("contents", []):
            for part in content.get("parts", []) or []:
                if "functionResponse" in part:
                    n += 1
        return n

    def _next_path(self) -> str:
        if self.script.mode != "loop" or self.script.extra.get("loop_same_file"):
            return self.script.file_path
        stem, suffix = os.path.splitext(self.script.file_path)
        return f"{stem}-{next(self._loop_counter)}{suffix}"

    def _stream(self, model: str, body: dict, respond) -> None:
        with self._state_lock:
            self._agent_calls += 1
            if self._fail_first:
                status = int(self._fail_first.pop(0))
                msg = {
                    429: "Resource has been exhausted (e.g. check quota).",
                    503: "The model is overloaded. Please try again later.",
                }.get(status, "Internal error encountered.")
                return self.json_response(respond, status, google_error(status, msg))

        done = self._function_responses(body)
        if self.script.mode == "loop" or done == 0:
            args = {"file_path": self._next_path(), "content": self.script.content}
            events = [
                self._envelope([{"text": "I'll write the file now."}], None, None, model),
                self._envelope([{"functionCall": {"name": WRITE_TOOL, "args": args}}], "STOP", self._usage(), model),
            ]
        else:
            text = self.script.final_text
            half = max(1, len(text) // 2)
            events = [
                self._envelope([{"text": text[:half]}], None, None, model),
                self._envelope([{"text": text[half:]}], "STOP", self._usage(), model),
            ]
        respond(200, {"Content-Type": "text/event-stream"}, self.sse((None, e) for e in events))

    # ------------------------------------------------------------------ helper calls (generateContent)
    def _helper(self, model: str, body: dict) -> dict:
        """Answer the CLI's non-streaming side calls.

        These ask for JSON (generationConfig.responseMimeType == application/json, often with a
        responseJsonSchema); produce an object satisfying the common schemas, otherwise plain text."""
        gen = body.get("generationConfig") or body.get("config") or {}
        schema = gen.get("responseJsonSchema") or gen.get("responseSchema")
        # No usageMetadata by default, so the CLI's result stats only count the scripted agent turns.
        usage = self._usage(prompt_tokens=10, output_tokens=5) if self.script.extra.get("helper_usage") else None
        if gen.get("responseMimeType") == "application/json" or schema:
            obj = self._fill_schema(schema or {})
            return self._envelope([{"text": json.dumps(obj)}], "STOP", usage, model)
        return self._envelope([{"text": "OK"}], "STOP", usage, model)

    def _fill_schema(self, schema: dict):
        t = str(schema.get("type", "object")).lower()
        props = schema.get("properties") or {}
        if t == "object":
            out = {}
            for name, sub in props.items():
                out[name] = self._field_value(name, sub)
            return out
        return self._field_value("", schema)

    def _field_value(self, name: str, sub: dict):
        enum = sub.get("enum")
        if name == "next_speaker":
            return "user"  # never make the CLI continue on its own
        if name == "model_choice":
            return "flash" if not enum or "flash" in enum else enum[0]
        if name.endswith("score"):
            return 10  # routing: NumericalClassifierStrategy wants complexity_score in 1..100
        if enum:
            return enum[0]
        t = str(sub.get("type", "string")).lower()
        if t in ("number", "integer"):
            return 0
        if t == "boolean":
            return False
        if t == "array":
            return []
        if t == "object":
            return self._fill_schema(sub)
        return "fake"
