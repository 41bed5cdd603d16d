"""The one way Toren writes a job's usage and cost (the log, the pull request, the progress comment, the
terminal and the Action's step summary). Imports nothing: `toren status` and the console use it."""

from __future__ import annotations


def usage_parts(usage: dict | None, cost_usd: float | None, cost_source: str | None = None, *,
                tokens: bool = True) -> tuple[str, str]:
    """A job's usage and its cost, the one way Toren writes them: ``("2 turns, 1 tool calls, 2400 tokens in
    (0 cached), 160 out", "$0.0123 (price table)")``; without the token counts when ``tokens`` is False."""
    u = usage or {}
    parts = []
    if "turns" in u:
        parts.append(f"{u['turns']} turns")
    if "tool_calls" in u:
        parts.append(f"{u['tool_calls']} tool calls")
    if tokens and "input_tokens" in u:
        parts.append(f"{u['input_tokens']} tokens in ({u.get('cache_read_tokens', 0)} cached), "
                     f"{u.get('output_tokens', 0)} out")
    if cost_usd is None:
        cost = "cost unknown (no price for this model; set `prices` in the config)"
    else:
        cost = f"${cost_usd:.4f}" + (" (price table)" if cost_source == "price-table" else "")
    return ", ".join(parts), cost


def usage_text(usage: dict | None, cost_usd: float | None, cost_source: str | None = None, *,
               tokens: bool = True) -> str:
    """``usage_parts`` on one line; empty for a job that used no model (the shell agent)."""
    if not usage:
        return ""
    return ", ".join(p for p in usage_parts(usage, cost_usd, cost_source, tokens=tokens) if p)
