"""Cost in USD: the CLI's own figure when it reports one, otherwise tokens times the price table."""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources

from toren_action.agents.base import Usage


@lru_cache(maxsize=1)
def price_table() -> dict[str, dict[str, float]]:
    return json.loads(resources.files("toren_action.agents").joinpath("prices.json").read_text("utf-8"))["models"]


def price_for(model: str | None, overrides: dict[str, dict[str, float]] | None = None) -> dict[str, float] | None:
    """Prices for a model: an exact or longest-prefix match, overrides first. None when unknown."""
    if not model:
        return None
    model = model.lower().split("/")[-1]  # "models/gemini-2.5-pro", "openai/gpt-5"
    overrides = {k.lower(): v for k, v in (overrides or {}).items()}
    for table in (overrides, price_table()):
        if model in table:
            return table[model]
        best = max((k for k in table if model.startswith(k)), key=len, default=None)
        if best:
            return table[best]
    return None


def cost_usd(usage: Usage, overrides: dict[str, dict[str, float]] | None = None) -> tuple[float | None, str]:
    """(cost, source): source is "cli" (reported by the CLI), "price-table" or "unknown"."""
    if usage.reported_cost_usd is not None:
        return usage.reported_cost_usd, "cli"
    prices = price_for(usage.model, overrides)
    if prices is None:
        return None, "unknown"
    fresh_input = max(usage.input_tokens - usage.cache_read_tokens, 0) if usage.cache_read_in_input else \
        usage.input_tokens
    cost = (fresh_input * prices["input"] + usage.output_tokens * prices["output"]
            + usage.cache_read_tokens * prices.get("cache_read", prices["input"])
            + usage.cache_write_tokens * prices.get("cache_write", prices["input"])) / 1_000_000
    return round(cost, 6), "price-table"
