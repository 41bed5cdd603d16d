"""The egress allow-list's parsing and matching (the proxy itself runs in tests/integration/test_agents.py)."""

from __future__ import annotations

import pytest

from toren_action.egress import allowed, parse
from toren_action.errors import UsageError


def test_parse_and_match():
    hosts = parse("allow=api.anthropic.com, *.pypi.org,files.pythonhosted.org")
    assert hosts == ("api.anthropic.com", "*.pypi.org", "files.pythonhosted.org")
    assert allowed("api.anthropic.com", hosts) and allowed("API.Anthropic.com.", hosts)
    assert allowed("upload.pypi.org", hosts) and not allowed("pypi.org.evil.com", hosts)
    assert not allowed("anthropic.com", hosts) and not allowed("example.com", hosts)
    for bad in ("api.anthropic.com", "allow=", "allow=bad host", "allow=a/b"):
        with pytest.raises(UsageError, match="--egress"):
            parse(bad)
