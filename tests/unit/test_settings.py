import pytest

from toren_action.config.settings import Settings, settings_from_record
from toren_action.core.errors import ConfigError, UsageError


def test_defaults(tmp_path):
    s = Settings.load({}, environ={}, cwd=str(tmp_path))
    assert s.agent == "claude" and s.pull == "missing" and s.timeout_minutes == 60 and s.ca_bundle is None


def test_precedence_defaults_file_env_flags(tmp_path):
    # the user's own file (--config), which may set every key; a found file may set only the task (see
    # test_settings_repository.py)
    (tmp_path / "mine.toml").write_text(
        'agent = "shell"\ncommand = "true"\nbase_image = "from-file:1"\ntimeout_minutes = 5\nmemory = "1g"\n'
        '[env]\nA = "file"\nB = "file"\n'
    )
    environ = {"TOREN_BASE_IMAGE": "from-env:1", "TOREN_TIMEOUT_MINUTES": "7"}
    s = Settings.load({"timeout_minutes": 9.0, "env": {"B": "flag"}}, environ=environ,
                      config_file=str(tmp_path / "mine.toml"), cwd=str(tmp_path))
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
    (repo / "pyproject.toml").write_text('[project]\nname = "x"\n[tool.toren]\nmax-turns = 12\n'
                                         'append-system-prompt = "Keep the public API."\n')
    s = Settings.load({"repo": "proj"}, environ={}, cwd=str(tmp_path))
    assert s.max_turns == 12 and s.append_system_prompt == "Keep the public API."


def test_toren_toml_wins_over_pyproject(tmp_path):
    (tmp_path / "pyproject.toml").write_text('[tool.toren]\nmodel = "from-pyproject"\n')
    (tmp_path / "toren.toml").write_text('model = "from-toren-toml"\n')
    assert Settings.load({}, environ={}, cwd=str(tmp_path)).model == "from-toren-toml"


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


# cpus and max_change_mb (issue 12): the agent container's CPUs and the largest change it may commit


def test_cpus_and_max_change_mb_defaults(tmp_path):
    s = Settings.load({}, environ={}, cwd=str(tmp_path))
    assert s.cpus == 2 and s.max_change_mb == 50
    assert Settings().cpus == 2 and Settings().max_change_mb == 50


def test_cpus_and_max_change_mb_from_every_layer(tmp_path):
    (tmp_path / "mine.toml").write_text("cpus = 1.5\nmax-change-mb = 20\n")
    s = Settings.load({}, environ={}, config_file=str(tmp_path / "mine.toml"), cwd=str(tmp_path))
    assert (s.cpus, s.max_change_mb) == (1.5, 20)
    s = Settings.load({}, environ={"TOREN_CPUS": "4", "TOREN_MAX_CHANGE_MB": "0.5"}, cwd=str(tmp_path))
    assert (s.cpus, s.max_change_mb) == (4.0, 0.5)
    assert s.source_of("cpus") == "TOREN_CPUS"
    s = Settings.load({"cpus": 8.0, "max_change_mb": 200.0}, environ={"TOREN_CPUS": "4"}, cwd=str(tmp_path))
    assert (s.cpus, s.max_change_mb) == (8.0, 200.0) and s.source_of("max_change_mb") == "--max-change-mb"


@pytest.mark.parametrize("key,value", [
    ("cpus", 0.0), ("cpus", -1.0), ("cpus", 0.001), ("cpus", 4096.0), ("cpus", float("nan")), ("cpus", float("inf")),
    ("max_change_mb", 0.0), ("max_change_mb", -5.0), ("max_change_mb", 10.0 ** 9), ("max_change_mb", float("nan")),
    ("max_change_mb", float("inf")),
])
def test_cpus_and_max_change_mb_bounds(tmp_path, key, value):
    option = "--" + key.replace("_", "-")
    with pytest.raises(UsageError, match=f"^{option}: "):
        Settings.load({key: value}, environ={}, cwd=str(tmp_path))
    with pytest.raises(UsageError, match=f"^TOREN_{key.upper()}: "):
        Settings.load({}, environ={f"TOREN_{key.upper()}": repr(value)}, cwd=str(tmp_path))
    toml_value = {"nan": "nan", "inf": "inf"}.get(repr(value), repr(value))
    (tmp_path / "mine.toml").write_text(f"{key} = {toml_value}\n")
    with pytest.raises(ConfigError, match=f"mine.toml: {key}: "):
        Settings.load({}, environ={}, config_file=str(tmp_path / "mine.toml"), cwd=str(tmp_path))


@pytest.mark.parametrize("raw", ["two", "", "1,5", "true"])
def test_cpus_variable_must_be_a_number(tmp_path, raw):
    with pytest.raises(UsageError, match="^TOREN_CPUS: "):
        Settings.load({}, environ={"TOREN_CPUS": raw}, cwd=str(tmp_path))


def test_cpus_and_max_change_mb_are_flags_of_toren_run():
    from toren_action.cli import RUN_SETTING_FLAGS, build_parser, run_flags

    args = build_parser().parse_args(["run", "--cpus", "0.5", "--max-change-mb", "12.5"])
    flags = run_flags(args)
    assert flags["cpus"] == 0.5 and flags["max_change_mb"] == 12.5
    assert {"cpus", "max_change_mb"} <= set(RUN_SETTING_FLAGS)


@pytest.mark.parametrize("line", ["cpus = 64", "max_change_mb = 100000", "max-change-mb = 1"])
def test_cpus_and_max_change_mb_are_not_the_repositorys(tmp_path, line):
    (tmp_path / "toren.toml").write_text(line + "\n")
    with pytest.raises(ConfigError, match="may not set (cpus|max_change_mb)"):
        Settings.load({}, environ={}, cwd=str(tmp_path))


def test_cpus_and_max_change_mb_round_trip_through_the_job_record(tmp_path):
    s = Settings.load({"cpus": 3.0, "max_change_mb": 7.0}, environ={}, cwd=str(tmp_path))
    assert settings_from_record(s.to_record()) == s
    assert s.to_record()["cpus"] == 3.0 and s.to_record()["max_change_mb"] == 7.0


def test_on_failure_is_draft_for_an_issue_unless_given_and_survives_the_job_record():
    from toren_action.config.settings import Settings, settings_from_record

    assert Settings.load({}, environ={}).on_failure == "discard"
    on_issue = Settings.load({"issue": "acme/widget#1"}, environ={})
    assert on_issue.on_failure == "draft"
    given = Settings.load({"issue": "acme/widget#1", "on_failure": "discard"}, environ={})
    assert given.on_failure == "discard"
    assert Settings.load({"issue": "acme/widget#1"}, environ={"TOREN_ON_FAILURE": "branch"}).on_failure == "branch"
    # a background job plans again from its stored settings: the choice made at submission is kept
    assert settings_from_record(given.to_record()).on_failure == "discard"
    assert settings_from_record(on_issue.to_record()).on_failure == "draft"
