"""A settings file found in the repository may only shape the task (issue 11, finding 3).

Every test here writes the file an attacker controls (a checkout's toren.toml or [tool.toren] in its pyproject.toml)
and checks that the key, or the variable, is refused with one line naming the file, the key and the fix, while the
user's own layers (--config, TOREN_*, flags) keep every key.
"""

from __future__ import annotations

import pytest

from toren_action.config.settings import (
    DEFAULTS,
    HOST_ONLY_KEYS,
    REPOSITORY_ENV_MAX,
    REPOSITORY_KEYS,
    Settings,
    repository_env_refusal,
    schema,
)
from toren_action.core.errors import ConfigError

#: One value of the right type for every host-only key, so the refusal cannot hide behind a schema error.
HOST_ONLY_VALUES = {
    "repo": '"/other/private/repo"', "spec": '"/etc/passwd"', "issue": '"acme/other#1"', "branch": '"main"',
    "pr": '"acme/other#2"', "instruction": '"push to main"', "allow_any_pr": "true",
    "base_branch": '"release"', "base_ref": '"HEAD~3"', "force_branch": "true",
    "base_image": '"evil/image:latest"', "pull": '"never"',
    "agent": '"gemini"', "command": '"true"', "agent_version": '"1.0.0"', "push_partial": "true",
    "prices": '{"claude-sonnet-4-5" = {input = 0, output = 0}}', "key_proxy": '"off"', "egress": '"allow=evil.com"',
    "fail_on": '"none"', "allow_policy": '["secret-pattern"]', "allow_workflow_changes": "true",
    "max_file_mb": "100000", "max_change_mb": "100000", "summary_model": '"claude-opus-4-1"',
    "ai_summary": '"always"', "github_token_file": '"/root/.token"', "actor": '"octocat"',
    "allow_actors": '["evil[bot]"]', "allow_fork": "true", "labels": '["auto-merge"]', "reviewers": '["octocat"]',
    "assignees": '["octocat"]', "secrets": '["AWS_SECRET_ACCESS_KEY"]', "volumes": '["/:/host"]', "gpus": '"all"',
    "network": '"host"', "timeout_minutes": "10080", "max_cost_usd": "100000", "ca_bundle": '"/tmp/evil.pem"',
    "draft": "true", "no_pr": "true", "memory": '"512g"', "pids_limit": "100000", "cpus": "1024",
    "author_name": '"Linus Torvalds"', "author_email": '"torvalds@linux-foundation.org"', "allow_mounts": '["/"]',
    "agent_uid": "1", "verify_baseline": "true", "verify_allow_preexisting": "true", "verify_timeout": "1440",
    "verify_retries": "5", "on_failure": '"branch"', "setup_network": '"host"', "setup_version": '"2"',
    "no_setup_cache": "true", "secret_for": '["setup"]',
    "attempts": "16", "agents": '"claude,codex,gemini"', "max_cost_usd_per_attempt": "100000",
    "first_verified": "true", "keep_attempts": "true", "judge": '"claude-opus-4-1"', "race_attempt": "3",
    "race_record": '"/tmp/record.json"',
}


def write(tmp_path, text, where="toren.toml"):
    if where == "pyproject.toml":
        text = '[project]\nname = "x"\n[tool.toren]\n' + text.replace("[env]", "[tool.toren.env]")
    (tmp_path / where).write_text(text)


def load(tmp_path, **kw):
    return Settings.load(kw.pop("flags", {}), environ=kw.pop("environ", {}), cwd=str(tmp_path), **kw)


def refused(tmp_path, text, where="toren.toml") -> str:
    write(tmp_path, text, where)
    with pytest.raises(ConfigError) as exc:
        load(tmp_path)
    msg = str(exc.value)
    assert exc.value.exit_code == 3
    assert "\n" not in msg
    assert where in msg and (where != "pyproject.toml" or "[tool.toren]" in msg)
    return msg


def test_the_allow_list_is_small_and_every_other_key_is_host_only():
    keys = set(schema()["properties"])
    assert keys == set(DEFAULTS) == set(HOST_ONLY_VALUES) | set(REPOSITORY_KEYS)
    assert set(REPOSITORY_KEYS) == {"model", "max_turns", "allowed_tools", "disallowed_tools",
                                    "append_system_prompt", "verify", "verify_junit", "protected_paths", "env",
                                    "setup", "setup_cache_key"}
    assert HOST_ONLY_KEYS == keys - set(REPOSITORY_KEYS)
    # what issue 11 names in particular
    assert {"repo", "spec", "branch", "base_branch", "force_branch", "base_image", "pull", "memory", "pids_limit",
            "timeout_minutes", "author_name", "author_email", "reviewers", "labels", "assignees", "cpus",
            "max_change_mb", "agent", "prices", "key_proxy", "egress", "network", "secrets",
            "volumes"} <= HOST_ONLY_KEYS


@pytest.mark.parametrize("where", ["toren.toml", "pyproject.toml"])
@pytest.mark.parametrize("key", sorted(HOST_ONLY_VALUES))
def test_every_host_only_key_is_refused_from_a_found_file(tmp_path, key, where):
    msg = refused(tmp_path, f"{key} = {HOST_ONLY_VALUES[key]}\n", where)
    assert f": {key}: a settings file found in the repository may not set {key}" in msg
    assert "--config" in msg  # the fix


@pytest.mark.parametrize("where", ["toren.toml", "pyproject.toml"])
@pytest.mark.parametrize("spelling", ["force-branch", "force_branch"])
def test_dashed_spelling_is_the_same_key(tmp_path, spelling, where):
    msg = refused(tmp_path, f'model = "m"\n{spelling} = true\nbranch = "main"\n', where)
    assert "may not set branch" in msg and msg.endswith("; also host-only here: force_branch")  # one line for all


def test_a_bad_value_of_a_host_only_key_is_refused_as_host_only(tmp_path):
    # not "fix the value": no value of it is the repository's to give
    assert "may not set timeout_minutes" in refused(tmp_path, 'timeout_minutes = "soon"\n')
    assert "may not set branch" in refused(tmp_path, "branch = 1\n")


def test_the_fix_names_the_flag_and_variable_where_they_exist(tmp_path):
    msg = refused(tmp_path, "force_branch = true\n")
    assert "--force-branch, TOREN_FORCE_BRANCH or a file named by --config" in msg
    assert "--reviewer, TOREN_REVIEWERS" in refused(tmp_path, 'reviewers = ["x"]\n')
    msg = refused(tmp_path, 'prices = {m = {input = 0, output = 0}}\n')
    assert "set it with a file named by --config" in msg and "TOREN_PRICES" not in msg
    assert "set it with TOREN_AUTHOR_NAME or a file named by --config" in refused(tmp_path, 'author_name = "x"\n')


def test_unknown_keys_are_still_unknown(tmp_path):
    (tmp_path / "toren.toml").write_text('agnet = "shell"\n')
    with pytest.raises(ConfigError, match="unknown setting 'agnet'"):
        load(tmp_path)


def test_the_task_shaping_keys_are_taken(tmp_path):
    write(tmp_path, 'model = "claude-sonnet-4-5"\nmax-turns = 40\nallowed_tools = ["Bash(git diff:*)", "Read"]\n'
                    'disallowed_tools = ["WebFetch"]\nappend_system_prompt = "Keep the API."\n'
                    'verify = "python -m pytest -q"\nprotected_paths = ["migrations/*"]\n'
                    '[env]\nDJANGO_SETTINGS_MODULE = "app.settings"\nLC_ALL = "C.UTF-8"\nRUST_BACKTRACE = "1"\n')
    s = load(tmp_path)
    assert s.model == "claude-sonnet-4-5" and s.max_turns == 40 and s.verify == "python -m pytest -q"
    assert s.allowed_tools == ("Bash(git diff:*)", "Read") and s.disallowed_tools == ("WebFetch",)
    assert s.protected_paths == ("migrations/*",) and s.append_system_prompt == "Keep the API."
    assert dict(s.env) == {"DJANGO_SETTINGS_MODULE": "app.settings", "LC_ALL": "C.UTF-8", "RUST_BACKTRACE": "1"}
    assert s.source_of("model").endswith("toren.toml: model")


def test_the_users_own_file_may_set_everything(tmp_path):
    """--config and TOREN_CONFIG name the user's file: every key, every variable, as before."""
    mine = tmp_path / "mine.toml"
    mine.write_text('branch = "toren/x"\nforce_branch = true\nbase_image = "img:1"\nmemory = "1g"\ncpus = 1\n'
                    'reviewers = ["octocat"]\n[env]\nHTTPS_PROXY = "http://proxy.corp:3128"\nNODE_OPTIONS = "--x"\n')
    for kw in ({"config_file": str(mine)}, {"environ": {"TOREN_CONFIG": str(mine)}}):
        s = load(tmp_path, **kw)
        assert s.branch == "toren/x" and s.force_branch and s.base_image == "img:1" and s.cpus == 1
        assert dict(s.env) == {"HTTPS_PROXY": "http://proxy.corp:3128", "NODE_OPTIONS": "--x"}
    # even when the user's file is the repository's own toren.toml, named explicitly
    (tmp_path / "toren.toml").write_text('branch = "toren/y"\n')
    assert load(tmp_path, config_file=str(tmp_path / "toren.toml")).branch == "toren/y"


def test_the_users_flags_and_variables_are_not_restricted(tmp_path):
    s = load(tmp_path, flags={"branch": "main", "force_branch": True, "env": {"HTTPS_PROXY": "http://p:1"}},
             environ={"TOREN_BASE_IMAGE": "img:2", "TOREN_MEMORY": "2g"})
    assert s.branch == "main" and s.force_branch and s.base_image == "img:2" and dict(s.env) == {"HTTPS_PROXY":
                                                                                                  "http://p:1"}


def test_the_users_layers_win_over_the_repositorys_task_keys(tmp_path):
    write(tmp_path, 'verify = "true"\nmodel = "cheap"\n[env]\nMODE = "repo"\n')
    s = load(tmp_path, flags={"verify": "make test", "env": {"MODE": "mine"}}, environ={"TOREN_MODEL": "good"})
    assert s.verify == "make test" and s.model == "good" and dict(s.env) == {"MODE": "mine"}


def test_a_found_file_in_the_current_directory_is_the_repositorys_too(tmp_path):
    # --repo is a URL (not a directory): the file comes from the current directory, with the same rules
    (tmp_path / "toren.toml").write_text('branch = "main"\n')
    with pytest.raises(ConfigError, match="may not set branch"):
        Settings.load({"repo": "https://example.invalid/a/b.git"}, environ={}, cwd=str(tmp_path))


# Values of the task-shaping keys: nothing the agent's CLI could take for an option.

@pytest.mark.parametrize("text,key", [
    ('model = "--settings={}"\n', "model"),
    ('append_system_prompt = "--openai-base-url=https://evil.example"\n', "append_system_prompt"),
    ('allowed_tools = ["Read", "--setting-sources", "project,user"]\n', "allowed_tools"),
    ('disallowed_tools = ["-x"]\n', "disallowed_tools"),
    ('verify = "-c"\n', "verify"),
])
def test_a_repository_value_may_not_look_like_an_option(tmp_path, text, key):
    msg = refused(tmp_path, text)
    assert f": {key}:" in msg and "may not start with '-'" in msg


def test_the_user_may_still_give_such_a_value(tmp_path):
    (tmp_path / "mine.toml").write_text('append_system_prompt = "- be brief"\n')
    assert load(tmp_path, config_file=str(tmp_path / "mine.toml")).append_system_prompt == "- be brief"


# Variable names from a repository's [env]: an allow-listed shape, and none of the families that reach past the task.

FAMILIES = {
    "a proxy setting": ["HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "NO_PROXY", "FTP_PROXY", "GOPROXY",
                        "SOCKS_PROXY", "PROXY"],
    "a TLS or CA setting": ["SSL_CERT_FILE", "SSL_CERT_DIR", "NODE_EXTRA_CA_CERTS", "NODE_TLS_REJECT_UNAUTHORIZED",
                            "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "GIT_SSL_NO_VERIFY", "GIT_SSL_CAINFO", "PIP_CERT",
                            "AWS_CA_BUNDLE", "CARGO_HTTP_CAINFO", "GRPC_DEFAULT_SSL_ROOTS_FILE_PATH", "MY_CA_FILE",
                            "DENO_CERT", "HTTPLIB_INSECURE", "UV_NATIVE_TLS"],
    "a dynamic loader or C library setting": ["LD_PRELOAD", "LD_LIBRARY_PATH", "LD_AUDIT", "DYLD_INSERT_LIBRARIES",
                                              "GCONV_PATH", "GLIBC_TUNABLES", "MALLOC_CHECK_X", "LOCPATH",
                                              "HOSTALIASES", "RES_OPTIONS"],
    "a language or tool start-up setting": [
        "NODE_OPTIONS", "NODE_PATH", "NODE_REPL_EXTERNAL_MODULE", "NPM_CONFIG_REGISTRY", "PYTHONPATH",
        "PYTHONSTARTUP", "PYTHONHOME", "PYTHONWARNINGS", "PERL5OPT", "PERL5LIB", "PERLLIB", "RUBYOPT", "RUBYLIB",
        "JAVA_TOOL_OPTIONS", "JDK_JAVA_OPTIONS", "MAVEN_OPTS", "CLASSPATH", "BASH_ENV", "ENV", "PROMPT_COMMAND",
        "PS4", "IFS", "SHELLOPTS", "GIT_DIR", "GIT_CONFIG_GLOBAL", "GIT_EXEC_PATH", "GIT_SSH_COMMAND",
        "GIT_ASKPASS", "SSH_AUTH_SOCK", "DOCKER_HOST", "XDG_CONFIG_HOME", "LUA_INIT", "DOTNET_STARTUP_HOOKS",
        "PHPRC", "EDITOR", "PAGER", "LESSOPEN", "KUBECONFIG", "NETRC", "PIP_INDEX_URL", "UV_INDEX_URL"],
    "a system setting": ["PATH", "HOME", "USER", "SHELL", "TMPDIR", "PWD"],
    "an agent, model API, cloud or GitHub setting": [
        "ANTHROPIC_BASE_URL", "ANTHROPIC_CUSTOM_HEADERS", "CLAUDE_CONFIG_DIR", "CLAUDE_CODE_USE_BEDROCK",
        "OPENAI_BASE_URL", "GOOGLE_GEMINI_BASE_URL", "GEMINI_CLI_SYSTEM_SETTINGS_PATH", "CODEX_HOME",
        "QWEN_HOME", "AWS_ENDPOINT_URL", "GITHUB_API_URL", "GH_HOST", "TOREN_SECRETS_DIR", "MCP_TIMEOUT"],
}
BAD_SHAPE = ["http_proxy", "https_proxy", "all_proxy", "npm_config_proxy", "Https_Proxy", "_JAVA_OPTIONS",
             "BASH_FUNC_ls%%", "A__B", "TRAILING_", "1ABC", "WITH-DASH", "WITH.DOT", "WITH SPACE", "",
             "X" * (REPOSITORY_ENV_MAX + 1), "Ä", "NAME\n"]


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_each_env_family_is_refused(family):
    for name in FAMILIES[family]:
        assert repository_env_refusal(name) == family, name


@pytest.mark.parametrize("name", BAD_SHAPE)
def test_names_outside_the_safe_shape_are_refused(name):
    assert "upper-case letters" in repository_env_refusal(name)


@pytest.mark.parametrize("name", ["DJANGO_SETTINGS_MODULE", "DATABASE_URL", "LC_ALL", "LANG", "TZ", "CI", "DEBUG",
                                  "RUST_BACKTRACE", "FORCE_COLOR", "NO_COLOR", "APP_MODE", "X" * REPOSITORY_ENV_MAX,
                                  "CACHE_DIR", "LOCAL_SETTINGS", "PYTEST_TIMEOUT_S"])
def test_plain_application_names_pass(name):
    assert repository_env_refusal(name) is None


@pytest.mark.parametrize("where", ["toren.toml", "pyproject.toml"])
@pytest.mark.parametrize("name", ["HTTPS_PROXY", "https_proxy", "ALL_PROXY", "NODE_OPTIONS", "NODE_EXTRA_CA_CERTS",
                                  "NODE_TLS_REJECT_UNAUTHORIZED", "SSL_CERT_FILE", "LD_PRELOAD", "PYTHONPATH", "PATH",
                                  "HOME", "GIT_SSH_COMMAND", "ANTHROPIC_BASE_URL"])
def test_a_found_file_may_not_set_such_a_variable(tmp_path, name, where):
    msg = refused(tmp_path, f'[env]\nAPP_MODE = "ok"\n"{name}" = "x"\n', where)
    assert f"env.{name}:" in msg and f"--env {name}=VALUE" in msg


def test_every_variable_of_a_found_file_is_checked_not_only_the_first(tmp_path):
    msg = refused(tmp_path, '[env]\nA_OK = "1"\nB_OK = "2"\nZ_PRELOAD = "3"\nLD_PRELOAD = "/x.so"\n')
    assert "LD_PRELOAD" in msg


def test_a_huge_settings_file_is_not_read_whole(tmp_path):
    with (tmp_path / "toren.toml").open("wb") as fh:
        fh.write(b'model = "m"\n')
        fh.truncate(50_000_000)  # sparse: costs no disk
    with pytest.raises(ConfigError, match="larger than"):
        load(tmp_path)


def test_a_non_table_tool_key_in_pyproject_is_no_settings(tmp_path):
    (tmp_path / "pyproject.toml").write_text('tool = 1\n')
    assert load(tmp_path).model is None


@pytest.mark.parametrize("name", ["A\n", "PATH\n", "A\r"])
def test_a_variable_name_with_a_final_newline_is_refused_everywhere(name):
    from toren_action.config import validate
    from toren_action.core.errors import UsageError

    with pytest.raises(UsageError, match="^--env: "):
        validate.env_entry(name, "x")
    assert repository_env_refusal(name) is not None


def test_the_configuration_docs_mark_exactly_the_repositorys_keys():
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "docs" / "configuration.md").read_text("utf-8")
    rows = {m.group(1): m.group(0) for m in re.finditer(r"^\| `([a-z_]+)` \| (?:`--|—).*\|$", text, re.M)}
    assert set(rows) == set(schema()["properties"])
    assert {k for k, row in rows.items() if "From a found file" in row} == set(REPOSITORY_KEYS)
    for key in HOST_ONLY_KEYS:  # the prose lists every host-only key too
        assert f"`{key}`" in text.split("#### Variables from a found file")[0].split("### What a found file may set")[1]


@pytest.mark.parametrize("name", ["GNUPGHOME", "XZ_OPT", "RIPGREP_CONFIG_PATH", "TERMINFO_DIRS", "RUSTFLAGS",
                                  "CARGO_HOME", "GOFLAGS", "GOPATH", "GZIP", "MAKEFLAGS", "CFLAGS", "LDFLAGS", "CC",
                                  "LIBRARY_PATH", "ZSTD_CLEVEL"])
def test_tool_variables_that_change_what_programs_run_are_refused_from_a_repository(name):
    from toren_action.config.settings import repository_env_refusal

    assert repository_env_refusal(name) is not None, name


@pytest.mark.parametrize("name", ["FOO", "APP_MODE", "DATABASE_URL", "LOG_LEVEL", "RUST_BACKTRACE", "CCACHE_DISABLE_X"])
def test_plain_application_variables_are_still_allowed(name):
    from toren_action.config.settings import repository_env_refusal

    assert repository_env_refusal(name) is None, name
