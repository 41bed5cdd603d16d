"""The egress allow-list's parsing and matching (the proxy itself: tests/unit/test_egress_proxy.py and
tests/integration/test_agents.py)."""

from __future__ import annotations

import pytest

from toren_action.core.errors import UsageError
from toren_action.sandbox.egress import allowed, parse


def test_parse_and_match():
    hosts = parse("allow=api.anthropic.com, *.pypi.org,files.pythonhosted.org")
    assert hosts == ("api.anthropic.com", "*.pypi.org", "files.pythonhosted.org")
    assert allowed("api.anthropic.com", 443, hosts) and allowed("API.Anthropic.com.", 443, hosts)
    assert allowed("upload.pypi.org", 443, hosts) and not allowed("pypi.org.evil.com", 443, hosts)
    assert not allowed("anthropic.com", 443, hosts) and not allowed("example.com", 443, hosts)
    for bad in ("api.anthropic.com", "allow=", "allow=bad host", "allow=a/b"):
        with pytest.raises(UsageError, match="--egress"):
            parse(bad)


def test_ports_are_80_and_443_unless_an_entry_names_one():
    hosts = parse("allow=pypi.org,example.com:8443,*.corp.example:8080,10.0.0.5:3128,[::1],[2001:db8::1]:8000")
    assert hosts == ("pypi.org", "example.com:8443", "*.corp.example:8080", "10.0.0.5:3128", "[::1]",
                     "[2001:db8::1]:8000")
    assert allowed("pypi.org", 443, hosts) and allowed("pypi.org", 80, hosts)
    assert not allowed("pypi.org", 22, hosts) and not allowed("pypi.org", 8443, hosts)
    assert allowed("example.com", 8443, hosts) and not allowed("example.com", 443, hosts)
    assert allowed("git.corp.example", 8080, hosts) and not allowed("git.corp.example", 443, hosts)
    assert allowed("10.0.0.5", 3128, hosts) and not allowed("10.0.0.5", 80, hosts)
    assert allowed("::1", 443, hosts) and allowed("0:0::0001", 80, hosts) and not allowed("::1", 8000, hosts)
    assert allowed("2001:DB8:0::1", 8000, hosts) and not allowed("2001:db8::2", 8000, hosts)


@pytest.mark.parametrize("spec, message", [
    ("allow=pypi.org:0", "port"), ("allow=pypi.org:65536", "port"), ("allow=pypi.org:http", "port"),
    ("allow=pypi.org:", "port"), ("allow=pypi.org:+80", "port"), ("allow=::1", "brackets"),
    ("allow=[::1", "port"), ("allow=[not-v6]:80", "IPv6"), ("allow=[::1]x", "port"),
    ("allow=*", "two labels"), ("allow=*.com", "two labels"), ("allow=a.*.b", "host name"),
    ("allow=pypi.org:80:81", "brackets"), ("allow=pypı.org", "host name"),
])
def test_bad_entries_are_refused_with_a_reason(spec, message):
    with pytest.raises(UsageError, match=message):
        parse(spec)
