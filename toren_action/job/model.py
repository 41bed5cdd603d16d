"""One question to a model from the host, through the anthropic SDK: what the AI summary (``summary.py``) and
a race's judge (``judge.py``) share. The key comes from the environment (ANTHROPIC_API_KEY, or the file
ANTHROPIC_API_KEY_FILE names); errors become one-line TorenErrors that never carry the key; the cost comes from
the reply's usage and the price table (``agents.pricing``).

The SDK is imported only here and only when a model is asked (it takes a second to import). It honours
ANTHROPIC_BASE_URL, and Toren adds ANTHROPIC_UNIX_SOCKET (a model API on a local socket), like Claude Code.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from toren_action.agents.base import Usage
from toren_action.agents.pricing import cost_usd
from toren_action.core.errors import TorenError

#: The variables a key is read from, in this order.
KEY_VARS = ("ANTHROPIC_API_KEY", "ANTHROPIC_API_KEY_FILE")


@dataclass(frozen=True)
class Reply:
    """The model's text reply, which model answered, its tokens and what it cost (None: no price known)."""

    text: str
    model: str
    input_tokens: int
    output_tokens: int
    cost_usd: float | None


def api_key(environ: dict[str, str]) -> str | None:
    if environ.get("ANTHROPIC_API_KEY", "").strip():
        return environ["ANTHROPIC_API_KEY"].strip()
    path = environ.get("ANTHROPIC_API_KEY_FILE")
    if path:
        try:
            return Path(path).expanduser().read_text("utf-8").strip() or None
        except (OSError, UnicodeDecodeError):
            return None
    return None


def available(environ: dict[str, str] | None = None) -> bool:
    return api_key(dict(os.environ if environ is None else environ)) is not None


def _httpx() -> ModuleType:
    """The HTTP client library the installed SDK is built on."""
    try:
        import httpx2

        return httpx2
    except ImportError:  # pragma: no cover - older SDKs
        import httpx

        return httpx


def ask(system: str, prompt: str, model: str, *, max_tokens: int, purpose: str,
        environ: dict[str, str] | None = None, prices: dict | None = None, timeout: float = 60.0) -> Reply:
    """One user message, one text reply. ``purpose`` names the request in errors ("the AI summary"). Raises
    TorenError with one line when there is no key, or the API refuses or cannot be reached."""
    env = dict(os.environ if environ is None else environ)
    key = api_key(env)
    if key is None:
        raise TorenError(f"no Anthropic key ({' or '.join(KEY_VARS)}) for {purpose}")
    import anthropic

    httpx = _httpx()
    kwargs: dict[str, Any] = {"api_key": key, "max_retries": 2, "timeout": timeout}
    if env.get("ANTHROPIC_UNIX_SOCKET"):
        kwargs["http_client"] = httpx.Client(transport=httpx.HTTPTransport(uds=env["ANTHROPIC_UNIX_SOCKET"]))
        kwargs["base_url"] = env.get("ANTHROPIC_BASE_URL") or "http://localhost"
    elif env.get("ANTHROPIC_BASE_URL"):
        kwargs["base_url"] = env["ANTHROPIC_BASE_URL"]
    try:
        client = anthropic.Anthropic(**kwargs)
        msg = client.messages.create(model=model, max_tokens=max_tokens, system=system,
                                     messages=[{"role": "user", "content": prompt}])
    except anthropic.AuthenticationError:
        raise TorenError(f"the Anthropic API refused the key for {purpose} (401)") from None
    except anthropic.APIStatusError as exc:
        raise TorenError(f"the Anthropic API answered {exc.status_code} to {purpose}") from None
    except anthropic.APIConnectionError as exc:
        raise TorenError(f"cannot reach the Anthropic API for {purpose} ({exc.__class__.__name__})") from None
    text = "".join(b.text for b in msg.content if isinstance(b, anthropic.types.TextBlock)).strip()
    usage = Usage(model=msg.model or model, input_tokens=msg.usage.input_tokens,
                  output_tokens=msg.usage.output_tokens)
    cost, _ = cost_usd(usage, prices)
    return Reply(text, usage.model or model, usage.input_tokens, usage.output_tokens, cost)
