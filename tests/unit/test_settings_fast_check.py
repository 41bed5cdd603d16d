"""The fast schema check (settings.conforms) that spares a valid start the jsonschema import: it never passes a
layer jsonschema rejects, and it passes the layers real use gives, so the fast path is taken."""

from __future__ import annotations

import jsonschema
from hypothesis import given, settings
from hypothesis import strategies as st

from toren_action.config.settings import DEFAULTS, conforms, schema

SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
                    st.sampled_from(["", "-x", "main", "toren/a", "claude", "none", "auto", "on", "off", "4g",
                                     "1.5", "medium", "high", "python:3.11", "A=b", "allow=pypi.org"]))
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(st.text(max_size=8), inner, max_size=3)),
                      max_leaves=8)
KEYS = st.sampled_from(sorted(schema()["properties"]) + ["nope", "agent-version"])


@settings(max_examples=600, deadline=None)
@given(st.dictionaries(KEYS, VALUES, max_size=5))
def test_the_fast_check_never_passes_what_jsonschema_rejects(layer):
    if conforms(layer, schema()):
        assert jsonschema.Draft202012Validator(schema()).is_valid(layer), layer


def test_the_defaults_and_usual_flags_take_the_fast_path():
    usual = {"repo": "./lib", "spec": "task.md", "branch": "toren/fix", "agent": "shell", "command": "make fmt",
             "base_image": "python:3.11", "timeout_minutes": 30, "max_cost_usd": 2.5, "env": {"FOO": "bar"},
             "secrets": ["MY_TOKEN"], "volumes": ["/data:/data:ro"], "protected_paths": ["@ci"], "verify": "pytest"}
    for layer in ({k: v for k, v in DEFAULTS.items() if v is not None}, usual):
        assert jsonschema.Draft202012Validator(schema()).is_valid(layer)
        assert conforms(layer, schema()), layer


def test_loading_valid_settings_does_not_import_jsonschema(tmp_path):
    import subprocess
    import sys

    from tests.conftest import subprocess_env

    code = ("import sys; from toren_action.config.settings import Settings; "
            "s = Settings.load({'repo': '.', 'spec': 'task.md', 'agent': 'shell', 'command': 'true'}, environ={}); "
            "print('jsonschema' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=subprocess_env(), capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
