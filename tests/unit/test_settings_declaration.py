"""Each setting is declared once (a field of settings.Settings); the JSON schema, `toren run`, action.yml and the
configuration docs agree with that declaration, and what is derived from it behaves like the hand-written code did."""

from __future__ import annotations

import argparse
import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import pytest

from toren_action.config.settings import (
    DEFAULTS,
    GROUPS,
    HOST_ONLY_KEYS,
    REPOSITORY_KEYS,
    SETTINGS,
    Settings,
    flag_name,
    parse_bool,
    schema,
    settings_from_record,
)

ROOT = Path(__file__).resolve().parents[2]
#: The schema's types for each kind of setting.
SCHEMA_TYPES = {"str": "string", "int": "integer", "float": "number", "bool": "boolean", "list": "array",
                "map": "object"}
#: The flags of `toren run` that are not settings.
NOT_SETTING_FLAGS = {"help", "disable_daemon", "json", "quiet", "config"}
#: The Action's inputs that are not one setting each: credentials, the task, who may trigger, how, and the install.
NOT_SETTING_INPUTS = {"anthropic-api-key", "claude-code-oauth-token", "claude-credentials", "gemini-api-key",
                      "openai-api-key", "github-token", "spec", "spec-file", "allowed-users", "comment-on-refusal",
                      "trigger-phrase", "label-trigger", "toren-source"}


def run_parser() -> argparse.ArgumentParser:
    from toren_action.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices["run"]


def action_yml() -> dict:
    yaml = pytest.importorskip("yaml")
    return yaml.safe_load((ROOT / "action.yml").read_text("utf-8"))


# -- the declaration itself


def test_every_field_is_a_declared_setting():
    names = [f.name for f in dataclasses.fields(Settings)]
    assert names[-1] == "sources" and list(SETTINGS) == names[:-1]
    for key, spec in SETTINGS.items():
        assert spec.name == key and spec.kind
        assert spec.default == getattr(Settings(), key)
        if spec.flags:
            assert spec.group in GROUPS and spec.help and "{default}" not in spec.help, key
        else:
            assert spec.help is None and spec.group is None and spec.choices is None, key


def test_derived_tables():
    assert set(DEFAULTS) == set(SETTINGS)
    assert DEFAULTS["env"] == {} and DEFAULTS["prices"] == {} and DEFAULTS["labels"] == []
    assert DEFAULTS["timeout_minutes"] == 60 and DEFAULTS["cpus"] == 2.0 and DEFAULTS["spec"] is None
    assert list(REPOSITORY_KEYS) == ["model", "max_turns", "allowed_tools", "disallowed_tools",
                                     "append_system_prompt", "verify", "verify_junit", "protected_paths", "env",
                                     "setup", "setup_cache_key"]
    assert HOST_ONLY_KEYS == {k for k, s in SETTINGS.items() if s.host_only} == set(SETTINGS) - set(REPOSITORY_KEYS)
    assert flag_name("timeout_minutes") == "--timeout" and flag_name("agent") == "--agent"
    assert flag_name("protected_paths") == "--protected-path" and flag_name("author_name") == "--author-name"


def test_help_shows_the_declared_default():
    assert SETTINGS["timeout_minutes"].help.endswith("(default 60)")
    assert SETTINGS["cpus"].help.endswith("(default 2)")
    assert SETTINGS["base_image"].help.endswith("(default python:3.11)")
    assert SETTINGS["key_proxy"].help.startswith("keep the model API key on the host behind a proxy (default auto:")


# -- the schema


def test_the_schema_has_exactly_the_declared_settings_with_their_types():
    props = schema()["properties"]
    assert set(props) == set(SETTINGS)
    for key, spec in SETTINGS.items():
        prop = props[key]
        if "enum" in prop:  # a choice of strings
            assert spec.kind == "str" and not spec.nullable, key
            assert all(isinstance(v, str) for v in prop["enum"]), key
            assert spec.choices is None or tuple(prop["enum"]) == spec.choices, key
            assert spec.choices is not None or not spec.flags, f"{key}: its flag needs choices={prop['enum']}"
            continue
        types = prop["type"] if isinstance(prop["type"], list) else [prop["type"]]
        assert types[0] == SCHEMA_TYPES[spec.kind], key
        assert ("null" in types) == spec.nullable, key
        assert len(types) == 1 + spec.nullable, key
        if spec.kind == "list":
            assert prop["items"].get("type", "string") == "string" or "enum" in prop["items"], key
        assert spec.choices is None, key


def test_the_defaults_are_valid_values():
    import jsonschema

    jsonschema.Draft202012Validator(schema()).validate(DEFAULTS)  # every one (None only where null is allowed)
    for key, value in DEFAULTS.items():
        if value is not None:
            jsonschema.Draft202012Validator(schema()["properties"][key]).validate(value)


# -- toren run


def test_every_flag_of_toren_run_is_a_declared_setting_and_back():
    from toren_action.cli import RUN_SETTING_FLAGS

    actions = {a.dest: a for a in run_parser()._actions}
    flagged = {k: s for k, s in SETTINGS.items() if s.flags}
    assert set(actions) - NOT_SETTING_FLAGS == set(flagged)
    assert set(RUN_SETTING_FLAGS) | {k for k, s in flagged.items() if s.kind == "map"} == set(flagged)
    for key, spec in flagged.items():
        action = actions[key]
        assert tuple(action.option_strings) == spec.flags and action.help == spec.help, key
        assert action.default is None, key  # a flag not given does not count, not even a boolean one
        if spec.kind == "bool":
            assert isinstance(action, argparse._StoreTrueAction), key
        elif spec.kind in ("list", "map"):
            assert isinstance(action, argparse._AppendAction), key
        else:
            assert action.type is {"int": int, "float": float}.get(spec.kind), key
        assert action.choices == spec.choices, key


def test_every_setting_flag_is_in_the_help_in_its_section(capsys):
    from toren_action.cli import main

    assert main(["run", "--help"]) == 0
    text = capsys.readouterr().out
    sections = {}
    for title in (*GROUPS, "execution"):
        assert f"\n{title}:\n" in text, title
    for title, body in re.findall(r"\n([A-Za-z ]+):\n(.*?)(?=\n[A-Za-z ]+:\n|\Z)", text, re.S):
        sections[title] = body
    for spec in SETTINGS.values():
        for flag in spec.flags:
            assert re.search(rf"(?m)^\s+(?:--[\w-]+(?: \S+)?, )*{flag}\b", sections[spec.group]), (flag, spec.group)


def test_run_flags_give_every_flagged_setting():
    from toren_action.cli import run_flags

    argv = ["run"]
    for key, spec in SETTINGS.items():
        if spec.flags:
            sample = {"bool": None, "int": "16", "float": "1.5", "list": "x", "map": "K=v"}.get(
                spec.kind, spec.choices[0] if spec.choices else "x")
            argv += [spec.flags[0]] if sample is None else [spec.flags[0], sample]
    flags = run_flags(run_parser().parse_args(argv[1:]))
    assert set(flags) == {k for k, s in SETTINGS.items() if s.flags}
    assert all(v is not None for v in flags.values())
    assert flags["env"] == {"K": "v"} and flags["labels"] == ["x"] and flags["draft"] is True
    assert flags["max_turns"] == 16 and flags["timeout_minutes"] == 1.5


# -- action.yml


def test_the_action_inputs_are_the_declared_ones():
    inputs = action_yml()["inputs"]
    declared = {s.action_input: k for k, s in SETTINGS.items() if s.action_input}
    assert set(declared) <= set(inputs), set(declared) - set(inputs)
    assert set(inputs) - NOT_SETTING_INPUTS == set(declared), set(inputs) - NOT_SETTING_INPUTS - set(declared)
    assert not set(declared) & NOT_SETTING_INPUTS
    for name, key in declared.items():
        assert name == key.replace("_", "-"), (name, key)  # an input is named after its setting
        default = inputs[name].get("default")
        if default is not None:  # what the runner fills in is the setting's own default
            spec = SETTINGS[key]
            assert (parse_bool(default) if spec.kind == "bool" else default) == spec.default, name


def test_every_input_reaches_toren_as_its_variable():
    steps = {s.get("id"): s for s in action_yml()["runs"]["steps"]}
    env = steps["toren"]["env"]
    for name in action_yml()["inputs"]:
        if name != "toren-source":  # the install step's
            assert env.get("INPUT_" + name.upper().replace("-", "_")) == f"${{{{ inputs.{name} }}}}", name


def test_the_action_reads_every_declared_input_by_its_kind(monkeypatch):
    from toren_action import action

    samples = {"bool": "true", "int": "3", "float": "2.5", "list": "a\n# no\nb\n", "map": "K=v\nL=w"}
    for spec in SETTINGS.values():
        if spec.action_input:
            value = samples.get(spec.kind, spec.choices[-1] if spec.choices else "some-value")
            monkeypatch.setenv("INPUT_" + spec.action_input.upper().replace("-", "_"), value)
    flags = action.setting_inputs()
    assert set(flags) == {k for k, s in SETTINGS.items() if s.action_input}
    assert flags["draft"] is True and flags["no_pr"] is True and flags["max_turns"] == 3
    assert flags["timeout_minutes"] == 2.5 and flags["labels"] == ["a", "b"] and flags["env"] == {"K": "v", "L": "w"}
    assert flags["key_proxy"] == "off" and flags["model"] == "some-value"
    for spec in SETTINGS.values():
        if spec.action_input:
            monkeypatch.setenv("INPUT_" + spec.action_input.upper().replace("-", "_"), "")
    assert set(action.setting_inputs().values()) == {None}  # an empty input does not count


@pytest.mark.parametrize("name,raw,message", [
    ("max-turns", "many", "^input max-turns: 'many' is not a number"),
    ("timeout-minutes", "1h", "^input timeout-minutes: '1h' is not a number"),
    ("draft", "Maybe", "^input draft: 'maybe' is not a boolean; use true or false"),
    ("env", "NOVALUE", "^input env: 'NOVALUE' has no '='"),
])
def test_a_bad_input_names_the_input(monkeypatch, name, raw, message):
    from toren_action import action
    from toren_action.core.errors import UsageError

    monkeypatch.setenv("INPUT_" + name.upper().replace("-", "_"), raw)
    with pytest.raises(UsageError, match=message):
        action.setting_inputs()


# -- the docs


def test_the_configuration_table_names_each_settings_flags_and_variable():
    text = (ROOT / "docs" / "configuration.md").read_text("utf-8")
    rows = {m.group(1): (m.group(2), m.group(3))
            for m in re.finditer(r"^\| `([a-z_]+)` \| ((?:[^|\\]|\\.)*) \| ([^|]*) \|", text, re.M)}
    for key, spec in SETTINGS.items():
        flags, variable = rows[key]
        assert tuple(re.findall(r"--[a-z-]+", flags)) == spec.flags, key
        assert variable == ("—" if spec.kind == "map" else f"`TOREN_{key.upper()}`"), key


# -- one boolean parser, conversions, layers


@pytest.mark.parametrize("raw,value", [("1", True), ("true", True), (" YES ", True), ("On", True), ("0", False),
                                       ("false", False), ("No", False), ("off", False), ("", False), ("  ", False),
                                       ("maybe", None), ("2", None), ("t", None)])
def test_parse_bool(raw, value):
    assert parse_bool(raw) is value


def test_every_list_and_map_round_trips_through_the_job_record(tmp_path):
    flags = {k: ["a", "b"] for k, s in SETTINGS.items() if s.kind == "list"}
    flags.update(secret_for=["A=setup", "setup"])
    flags.update(allow_policy=["binary"], secrets=["A", "B"], volumes=[f"{tmp_path}:/data"], env={"Z": "1", "A": "2"})
    mine = tmp_path / "mine.toml"
    mine.write_text('[prices."m-2"]\ninput = 1\noutput = 2\n'
                    '[prices."m-1"]\ninput = 0.5\noutput = 1\ncache_read = 0.1\n')
    s = Settings.load(flags, environ={}, config_file=str(mine), cwd=str(tmp_path))
    assert s.env == (("A", "2"), ("Z", "1")) and s.labels == ("a", "b")
    assert s.prices == (("m-1", (("cache_read", 0.1), ("input", 0.5), ("output", 1))), ("m-2", (("input", 1),
                                                                                                 ("output", 2))))
    record = s.to_record()
    assert record["env"] == {"A": "2", "Z": "1"} and record["prices"]["m-1"] == {"input": 0.5, "output": 1,
                                                                                  "cache_read": 0.1}
    assert settings_from_record(record) == s
    import json

    assert settings_from_record(json.loads(json.dumps(record))) == s  # as the store keeps it
    assert settings_from_record({"labels": None, "env": None, "prices": None}) == Settings()


def test_config_imports_no_cli():
    code = ("import sys, toren_action.config.settings; "
            "print(sorted(m for m in sys.modules if m.startswith('toren_action.') and not "
            "m.startswith(('toren_action.config', 'toren_action.core'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_host_only_fix_comes_from_the_declaration(tmp_path):
    from toren_action.config.settings import _host_fix

    assert _host_fix("timeout_minutes") == "set it with --timeout, TOREN_TIMEOUT_MINUTES or a file named by --config"
    assert _host_fix("prices") == "set it with a file named by --config"
    assert _host_fix("agent_uid") == "set it with TOREN_AGENT_UID or a file named by --config"
