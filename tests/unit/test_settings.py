import pytest

from toren_action.errors import ConfigError, UsageError
from toren_action.settings import Settings, settings_from_record


def test_defaults(tmp_path):
    s = Settings.load({}, environ={}, cwd=str(tmp_path))
    assert s.agent == "claude" and s.pull == "missing" and s.timeout_minutes == 60 and s.ca_bundle is None


def test_precedence_defaults_file_env_flags(tmp_path):
    (tmp_path / "toren.toml").write_text(
        'agent = "shell"\ncommand = "true"\nbase_image = "from-file:1"\ntimeout_minutes = 5\nmemory = "1g"\n'
        '[env]\nA = "file"\nB = "file"\n'
    )
    environ = {"TOREN_BASE_IMAGE": "from-env:1", "TOREN_TIMEOUT_MINUTES": "7"}
    s = Settings.load({"timeout_minutes": 9.0, "env": {"B": "flag"}}, environ=environ, cwd=str(tmp_path))
    assert s.agent == "shell"  # file over default
    assert s.memory == "1g"
    assert s.base_image == "from-env:1"  # env over file
    assert s.timeout_minutes == 9.0  # flag over env
    assert dict(s.env) == {"A": "file", "B": "flag"}  # maps merge key by key
    assert s.source_of("base_image") == "TOREN_BASE_IMAGE"
    assert s.source_of("timeout_minutes") == "--timeout"


def test_pyproject_tool_table_in_target_repo(tmp_path):
    repo = tmp_path / "proj"
    repo.mkdir()
    (repo / "pyproject.toml").write_text('[project]\nname = "x"\n[tool.toren]\nbase-image = "pytorch/pytorch:latest"\n')
    s = Settings.load({"repo": "proj"}, environ={}, cwd=str(tmp_path))
    assert s.base_image == "pytorch/pytorch:latest"


def test_toren_toml_wins_over_pyproject(tmp_path):
    (tmp_path / "pyproject.toml").write_text('[tool.toren]\nagent = "gemini"\n')
    (tmp_path / "toren.toml").write_text('agent = "codex"\n')
    assert Settings.load({}, environ={}, cwd=str(tmp_path)).agent == "codex"


def test_file_schema_error_names_file_and_key(tmp_path):
    (tmp_path / "toren.toml").write_text('timeout_minutes = "soon"\n')
    with pytest.raises(ConfigError) as exc:
        Settings.load({}, environ={}, cwd=str(tmp_path))
    assert "toren.toml: timeout_minutes:" in str(exc.value)
    assert exc.value.exit_code == 3


def test_unknown_key_in_file(tmp_path):
    (tmp_path / "toren.toml").write_text('agnet = "shell"\n')
    with pytest.raises(ConfigError, match="unknown setting 'agnet'"):
        Settings.load({}, environ={}, cwd=str(tmp_path))


def test_bad_toml(tmp_path):
    (tmp_path / "toren.toml").write_text('agent = \n')
    with pytest.raises(ConfigError, match="cannot read it as TOML"):
        Settings.load({}, environ={}, cwd=str(tmp_path))


def test_env_type_errors_name_the_variable(tmp_path):
    with pytest.raises(UsageError, match="^TOREN_TIMEOUT_MINUTES: "):
        Settings.load({}, environ={"TOREN_TIMEOUT_MINUTES": "abc"}, cwd=str(tmp_path))
    with pytest.raises(UsageError, match="^TOREN_PULL: "):
        Settings.load({}, environ={"TOREN_PULL": "sometimes"}, cwd=str(tmp_path))
    with pytest.raises(UsageError, match="^TOREN_DRAFT: "):
        Settings.load({}, environ={"TOREN_DRAFT": "maybe"}, cwd=str(tmp_path))


def test_flag_schema_error(tmp_path):
    with pytest.raises(UsageError, match="^--memory: "):
        Settings.load({"memory": "lots"}, environ={}, cwd=str(tmp_path))


def test_ca_bundle_autodetect_order(tmp_path):
    env = {"REQUESTS_CA_BUNDLE": "/b.pem", "NODE_EXTRA_CA_CERTS": "/c.pem"}
    s = Settings.load({}, environ=env, cwd=str(tmp_path))
    assert s.ca_bundle == "/b.pem" and s.source_of("ca_bundle") == "REQUESTS_CA_BUNDLE"
    s = Settings.load({"ca_bundle": "/x.pem"}, environ=env, cwd=str(tmp_path))
    assert s.ca_bundle == "/x.pem"


def test_settings_are_frozen_and_round_trip(tmp_path):
    s = Settings.load({"env": {"K": "v"}, "volumes": ["/a:/b"], "secrets": ["TOKEN"]}, environ={}, cwd=str(tmp_path))
    with pytest.raises(AttributeError):
        s.agent = "x"  # type: ignore[misc]
    record = s.to_record()
    assert record["env"] == {"K": "v"} and record["secrets"] == ("TOKEN",)
    assert settings_from_record(record) == s
