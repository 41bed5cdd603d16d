"""One typed, frozen settings object, merged from four layers and checked against a JSON schema.

Precedence (later wins): built-in defaults < ``toren.toml`` (or ``[tool.toren]`` in ``pyproject.toml``)
< ``TOREN_*`` environment variables < command-line flags. Each layer is validated on its own so an error
names where the bad value came from.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from toren_action.core.errors import ConfigError, UsageError

DEFAULTS: dict[str, Any] = {
    "repo": ".",
    "spec": None,
    "issue": None,
    "branch": None,
    "base_branch": None,
    "force_branch": False,
    "base_image": "python:3.11",
    "pull": "missing",
    "agent": "claude",
    "command": None,
    "model": None,
    "agent_version": None,
    "max_turns": None,
    "allowed_tools": [],
    "disallowed_tools": [],
    "append_system_prompt": None,
    "push_partial": False,
    "prices": {},
    "key_proxy": "auto",
    "egress": None,
    "fail_on": "none",
    "allow_policy": [],
    "allow_workflow_changes": False,
    "protected_paths": [],
    "max_file_mb": 5,
    "max_change_mb": 50,
    "summary_model": None,
    "ai_summary": "auto",
    "github_token_file": None,
    "actor": None,
    "allow_actors": [],
    "allow_fork": False,
    "labels": [],
    "reviewers": [],
    "assignees": [],
    "env": {},
    "secrets": [],
    "volumes": [],
    "gpus": None,
    "network": None,
    "timeout_minutes": 60,
    "max_cost_usd": None,
    "ca_bundle": None,
    "draft": False,
    "no_pr": False,
    "verify": None,
    "memory": "4g",
    "pids_limit": 1024,
    "cpus": 2.0,
    "author_name": "toren[bot]",
    "author_email": "toren[bot]@users.noreply.github.com",
    "allow_mounts": [],
    "agent_uid": None,
}

#: The only settings that a file Toren finds on its own (``toren.toml``, or ``[tool.toren]`` in ``pyproject.toml``,
#: in the repository or the current directory) may set. Such a file is the repository's: whoever can push to the
#: repository wrote it, an earlier agent included. It may shape the task the agent works on inside its sandbox and
#: nothing else: not where the result goes (repository, branch, base branch, force-push, pull request, reviewers,
#: labels, assignees, draft), not which CLI or credential is used, not the image or its pull policy, not the limits
#: (time, cost, memory, processes, CPUs, sizes), not the author, not secrets, mounts, network, key proxy or egress,
#: not the diff policy or the code scan, not who may start a job, not what leaves the host (AI summary).
#: Every other key is host-only (``HOST_ONLY_KEYS``): a flag, ``TOREN_*``, or a file named by --config/TOREN_CONFIG.
#: A key added to the schema is host-only until it is listed here, with its reason.
REPOSITORY_KEYS: dict[str, str] = {
    # A name passed to the CLI as one argument (a leading '-' is refused, see _check_repository_values). It cannot
    # pick the CLI, the credential or the endpoint; the cost it causes is bounded by the host's max_cost_usd and
    # timeout_minutes, which the repository cannot set.
    "model": "the model the agent's CLI asks for",
    # 1..10000 by the schema; the host's timeout and cost limit still bound the run.
    "max_turns": "how many model turns the task may take",
    # The CLI's own permissions inside the container: the container, not the CLI, is the sandbox.
    "allowed_tools": "tools the agent may use inside its sandbox",
    "disallowed_tools": "tools the agent may not use inside its sandbox",
    # Text the repository could equally put in its instruction files (CLAUDE.md, AGENTS.md), which the agent reads.
    "append_system_prompt": "more instructions for the agent",
    # Runs in the agent's image without the job's secrets or sockets; the repository controls its own tests anyway.
    # A verify the user gives (flag, TOREN_VERIFY, --config) replaces it.
    "verify": "the repository's own check of the change",
    # Can only add protection: files the change may not touch.
    "protected_paths": "files the change may not touch",
    # Variables of the agent's container, each name through repository_env_refusal(); values through the same
    # checks as --env (validate.env_entry, the profile's reserved names, credential-looking names) in the pipeline.
    "env": "plain application variables for the agent's container",
}
# Host-only on purpose, although they look harmless:
# - agent: picks the CLI and so which of the host's credentials is used and which provider gets the task;
# - command: the shell agent's whole task, the user's to give (like spec, issue);
# - agent_version: could pin an old CLI release with a known flaw;
# - prices: a zero price switches off max_cost_usd;
# - fail_on, push_partial, draft, no_pr: what happens to the result is the user's decision.

#: Everything a file found in the repository may not set.
HOST_ONLY_KEYS = frozenset(DEFAULTS) - frozenset(REPOSITORY_KEYS)

#: The shape of a variable name that a repository's ``[env]`` may set: upper-case words of letters and digits joined
#: by single '_', starting with a letter, at most 64 characters (DATABASE_URL, DJANGO_SETTINGS_MODULE, LC_ALL). This
#: leaves out lower-case names (http_proxy, npm_config_*), a leading '_' (_JAVA_OPTIONS) and exported shell
#: functions (BASH_FUNC_x%%). A name of that shape must still be in none of the families below.
REPOSITORY_ENV_SHAPE = re.compile(r"^[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)*$")
REPOSITORY_ENV_MAX = 64
#: Families of variables that reach past the task: they route or intercept the CLI's traffic (and with it a
#: subscription token), load code into every process, change what a program or shell runs at start-up, or point
#: the CLI, git or a credential somewhere else. A repository may set none of them; the user may (--env).
REPOSITORY_ENV_FAMILIES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("a proxy setting", re.compile(r"PROXY")),  # HTTPS_PROXY, ALL_PROXY, NO_PROXY, GOPROXY, ...
    ("a TLS or CA setting", re.compile(r"SSL|TLS|CERT|(?:^|_)CA(?:_|$)|CAFILE|CAPATH|CAINFO|CABUNDLE|INSECURE|"
                                       r"(?:^|_)NO_VERIFY(?:_|$)")),
    ("a dynamic loader or C library setting",
     re.compile(r"^(?:LD|DYLD|GCONV|GLIBC|MALLOC)_|^(?:LOCPATH|NLSPATH|HOSTALIASES|RES_OPTIONS|LOCALDOMAIN|"
                r"RESOLV_HOST_CONF|GETCONF_DIR|TZDIR)$")),
    ("a language or tool start-up setting",
     re.compile(r"^(?:NODE|NPM|YARN|PNPM|COREPACK|BUN|DENO|PIP|UV|PIPX|POETRY|CONDA|VIRTUAL|JAVA|JDK|MAVEN|GRADLE|"
                r"LUA|DOTNET|CORECLR|COMPLUS|GIT|BASH|ZSH|SSH|GNUPG|GPG|DOCKER|KUBE|XDG|SUDO|LESS|GEM|BUNDLE)_|"
                r"^(?:PYTHON|PERL|RUBY)|_OPTIONS$|_OPTS$|"
                r"^(?:ENV|PROMPT_COMMAND|PS[0-9]|IFS|CDPATH|GLOBIGNORE|SHELLOPTS|BASHOPTS|ZDOTDIR|INPUTRC|"
                r"HISTFILE|CLASSPATH|PHPRC|PHP_INI_SCAN_DIR|TCLLIBPATH|EDITOR|VISUAL|PAGER|MANPAGER|BROWSER|"
                r"LESSOPEN|LESSCLOSE|TERMINFO|TERMCAP|KUBECONFIG|NETRC|CURL_HOME|WGETRC)$")),
    ("a compiler, build or archive tool setting",
     re.compile(r"^(?:GNUPG|GPG|TERMINFO|RIPGREP|RUSTUP|RUSTFLAGS|RUSTC|RUSTDOC|CARGO|CMAKE|PKG_CONFIG|XZ|ZSTD|BZIP|GZIP|LZ4|ZIP|UNZIP)|"
                r"^(?:GO[A-Z]+|CC|CXX|CPP|LD|AR|AS|NM|RANLIB|STRIP|CFLAGS|CXXFLAGS|CPPFLAGS|LDFLAGS|LDLIBS|MAKEFLAGS|"
                r"MFLAGS|MAKEFILES|LIBRARY_PATH|CPATH|C_INCLUDE_PATH|CPLUS_INCLUDE_PATH|OBJC_INCLUDE_PATH|MAGIC)$")),
    ("a system setting", re.compile(r"^(?:PATH|HOME|USER|LOGNAME|SHELL|PWD|OLDPWD|TMPDIR|TMP|TEMP|HOSTNAME|MAIL|"
                                    r"DISPLAY|XAUTHORITY|DBUS_SESSION_BUS_ADDRESS)$")),
    ("an agent, model API, cloud or GitHub setting",
     re.compile(r"^(?:ANTHROPIC|CLAUDE|OPENAI|CODEX|GEMINI|GOOGLE|GCLOUD|CLOUDSDK|VERTEX|QWEN|DASHSCOPE|OPENROUTER|"
                r"OLLAMA|MCP|AWS|AZURE|GITHUB|GH|TOREN)_")),
)


def repository_env_refusal(name: str) -> str | None:
    """Why a repository's settings file may not set the variable ``name`` in the agent's container, or None."""
    if len(name) > REPOSITORY_ENV_MAX or not REPOSITORY_ENV_SHAPE.fullmatch(name):  # '$' allows a '\n'
        return (f"only names of upper-case letters, digits and single '_', starting with a letter, at most "
                f"{REPOSITORY_ENV_MAX} characters")
    for family, pattern in REPOSITORY_ENV_FAMILIES:
        if pattern.search(name):
            return family
    return None


#: Largest settings file Toren reads.
MAX_SETTINGS_FILE_BYTES = 1_000_000

#: Variables that point at a CA bundle on the host; the first one set is used when --ca-bundle is not given.
CA_BUNDLE_VARIABLES = ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "NODE_EXTRA_CA_CERTS")


@dataclass(frozen=True)
class Settings:
    repo: str = DEFAULTS["repo"]
    spec: str | None = None
    issue: str | None = None
    branch: str | None = None
    base_branch: str | None = None
    force_branch: bool = False
    base_image: str = DEFAULTS["base_image"]
    pull: str = DEFAULTS["pull"]
    agent: str = DEFAULTS["agent"]
    command: str | None = None
    model: str | None = None
    agent_version: str | None = None
    max_turns: int | None = None
    allowed_tools: tuple[str, ...] = ()
    disallowed_tools: tuple[str, ...] = ()
    append_system_prompt: str | None = None
    push_partial: bool = False
    #: Price overrides per model: {model: {"input": USD/Mtok, "output": ..., "cache_read": ..., "cache_write": ...}}
    prices: tuple[tuple[str, tuple[tuple[str, float], ...]], ...] = ()
    #: Diff-policy rules to allow (policy.RULES; never secret-value), workflow edits, protected globs, size cap.
    #: Keep the model API key on the host behind a socket proxy: auto (wherever the profile allows), on, off.
    key_proxy: str = "auto"
    #: "allow=HOST,HOST": no network for the agent except these hosts, through a filtering proxy on the host.
    egress: str | None = None
    #: Block the push on code-scan findings at or above this severity: none, medium, high.
    fail_on: str = "none"
    allow_policy: tuple[str, ...] = ()
    allow_workflow_changes: bool = False
    protected_paths: tuple[str, ...] = ()
    max_file_mb: float = 5
    #: Largest total size of the change the agent may commit, in MB (the sum of the changed files' new sizes).
    max_change_mb: float = DEFAULTS["max_change_mb"]
    #: Model for AI summaries (default claude-haiku-4-5), and when the pull request body gets one: "auto" (the
    #: agent left none, the agent is claude and an Anthropic key is set), "always" (any agent), "never".
    summary_model: str | None = None
    ai_summary: str = "auto"
    github_token_file: str | None = None
    #: The GitHub login that triggered the job: it must have write access (or be in allow_actors).
    actor: str | None = None
    allow_actors: tuple[str, ...] = ()
    allow_fork: bool = False
    labels: tuple[str, ...] = ()
    reviewers: tuple[str, ...] = ()
    assignees: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    secrets: tuple[str, ...] = ()
    volumes: tuple[str, ...] = ()
    gpus: str | None = None
    network: str | None = None
    timeout_minutes: float = DEFAULTS["timeout_minutes"]
    max_cost_usd: float | None = None
    ca_bundle: str | None = None
    draft: bool = False
    no_pr: bool = False
    verify: str | None = None
    memory: str = DEFAULTS["memory"]
    pids_limit: int = DEFAULTS["pids_limit"]
    #: CPUs of the agent's container (Docker's --cpus).
    cpus: float = DEFAULTS["cpus"]
    author_name: str = DEFAULTS["author_name"]
    author_email: str = DEFAULTS["author_email"]
    allow_mounts: tuple[str, ...] = ()
    agent_uid: int | None = None
    #: Where each non-default value came from (key -> "toren.toml", "TOREN_AGENT", "--agent", ...).
    sources: tuple[tuple[str, str], ...] = field(default=(), compare=False, repr=False)

    def source_of(self, key: str) -> str:
        """The option name to blame in an error about ``key``: the flag, variable or file that set it."""
        return dict(self.sources).get(key, flag_name(key))

    def to_record(self) -> dict[str, Any]:
        """The inputs as stored with a job: plain JSON, secret values never included (only their names)."""
        data = dataclasses.asdict(self)
        data.pop("sources")
        data["env"] = dict(self.env)
        data["prices"] = self.price_overrides()
        return data

    def price_overrides(self) -> dict[str, dict[str, float]]:
        return {model: dict(p) for model, p in self.prices}

    @classmethod
    def load(
        cls,
        flags: dict[str, Any] | None = None,
        environ: dict[str, str] | None = None,
        config_file: str | None = None,
        cwd: str | None = None,
    ) -> Settings:
        environ = dict(os.environ if environ is None else environ)
        flags = {k: v for k, v in (flags or {}).items() if v is not None}
        check_layer(flags, "flags")
        cwd = cwd or os.getcwd()

        env_layer = _env_layer(environ)
        repo_hint = flags.get("repo") or env_layer.get("repo") or "."
        file_layer, file_name = _file_layer(config_file or environ.get("TOREN_CONFIG"), repo_hint, cwd)

        merged: dict[str, Any] = dict(DEFAULTS)
        sources: dict[str, str] = {}
        for layer, origin in ((file_layer, file_name), (env_layer, "env"), (flags, "flags")):
            for key, value in layer.items():
                if key in ("env", "prices") and isinstance(value, dict):
                    merged[key] = {**merged[key], **value}
                else:
                    merged[key] = value
                if origin == "env":
                    sources[key] = "TOREN_" + key.upper()
                elif origin == "flags":
                    sources[key] = flag_name(key)
                else:
                    sources[key] = f"{origin}: {key}"

        if not merged.get("ca_bundle"):
            for var in CA_BUNDLE_VARIABLES:
                if environ.get(var):
                    merged["ca_bundle"] = environ[var]
                    sources["ca_bundle"] = var
                    break

        return cls(
            **{
                **merged,
                "env": tuple(sorted(merged["env"].items())),
                "secrets": tuple(merged["secrets"]),
                "volumes": tuple(merged["volumes"]),
                "allow_mounts": tuple(merged["allow_mounts"]),
                "allowed_tools": tuple(merged["allowed_tools"]),
                **{k: tuple(merged[k]) for k in ("allow_actors", "labels", "reviewers", "assignees", "allow_policy",
                                                 "protected_paths")},
                "disallowed_tools": tuple(merged["disallowed_tools"]),
                "prices": _price_tuple(merged["prices"]),
                "sources": tuple(sorted(sources.items())),
            }
        )


def flag_name(key: str) -> str:
    flags = {"timeout_minutes": "timeout", "volumes": "volume", "secrets": "secret", "allow_actors": "allow_actor",
             "labels": "label", "reviewers": "reviewer", "assignees": "assignee", "protected_paths": "protected_path"}
    return "--" + flags.get(key, key).replace("_", "-")


@lru_cache(maxsize=1)
def schema() -> dict[str, Any]:
    text = resources.files("toren_action.config").joinpath("schema/settings.schema.json").read_text("utf-8")
    return json.loads(text)


def check_layer(layer: dict[str, Any], origin: str) -> None:
    """Validate one layer against the schema; raise a one-line error naming the key and the fix."""
    import jsonschema  # lazy: keeps `toren --help` fast

    validator = jsonschema.Draft202012Validator(schema())
    errors = sorted(validator.iter_errors(layer), key=lambda e: list(e.absolute_path))
    if not errors:
        _check_finite(layer, origin)
        return
    err = errors[0]
    path = ".".join(str(p) for p in err.absolute_path)
    if err.validator == "additionalProperties" and not path:
        unknown = sorted(set(layer) - set(schema()["properties"]))
        known = ", ".join(sorted(schema()["properties"]))
        msg = f"unknown setting {unknown[0]!r}; known settings are: {known}"
        path = unknown[0]
    else:
        msg = err.message
    if origin == "flags":
        raise UsageError(flag_name(path.split(".")[0]), msg)
    if origin == "env":
        raise UsageError("TOREN_" + path.split(".")[0].upper(), msg)
    raise ConfigError(f"{origin}: {path}: {msg}; fix the value or remove it")


def _check_finite(layer: dict[str, Any], origin: str) -> None:
    """nan and inf pass every minimum and maximum of the schema (TOML, float() and argparse all accept them)."""
    def walk(value: Any, path: str) -> None:
        if isinstance(value, float) and not math.isfinite(value):
            if origin == "flags":
                raise UsageError(flag_name(path.split(".")[0]), f"{value!r} is not a finite number")
            if origin == "env":
                raise UsageError("TOREN_" + path.split(".")[0].upper(), f"{value!r} is not a finite number")
            raise ConfigError(f"{origin}: {path}: {value!r} is not a finite number; fix the value or remove it")
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, f"{path}.{k}" if path else str(k))

    walk(layer, "")


_BOOL_TRUE = {"1", "true", "yes", "on"}
_BOOL_FALSE = {"0", "false", "no", "off", ""}


def _env_layer(environ: dict[str, str]) -> dict[str, Any]:
    """Scalar settings from TOREN_<KEY> variables, converted to the schema's type."""
    layer: dict[str, Any] = {}
    props = schema()["properties"]
    for key, prop in props.items():
        var = "TOREN_" + key.upper()
        if var not in environ:
            continue
        raw = environ[var]
        types = prop.get("type", "string")
        types = types if isinstance(types, list) else [types]
        if "boolean" in types:
            low = raw.strip().lower()
            if low not in _BOOL_TRUE | _BOOL_FALSE:
                raise UsageError(var, f"{raw!r} is not a boolean; use 1 or 0")
            layer[key] = low in _BOOL_TRUE
        elif "integer" in types or "number" in types:
            try:
                layer[key] = int(raw) if "integer" in types else float(raw)
            except ValueError:
                raise UsageError(var, f"{raw!r} is not a number") from None
        elif "array" in types:
            layer[key] = [item.strip() for item in raw.split(",") if item.strip()]
        elif "object" in types:
            continue  # maps only come from files and flags
        else:
            layer[key] = raw
    check_layer(layer, "env")
    return layer


def _file_layer(explicit: str | None, repo_hint: str, cwd: str) -> tuple[dict[str, Any], str]:
    """Read toren.toml, or [tool.toren] in pyproject.toml, from the target repository (local) or cwd."""
    candidates: list[Path] = []
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise UsageError("--config", f"{explicit} is not a file; give the path of a toren.toml")
        candidates = [path]
    else:
        try:
            hinted = Path(cwd, Path(repo_hint).expanduser())
            base = hinted if hinted.is_dir() else Path(cwd)
        except OSError:  # an impossible --repo path: validation reports it
            base = Path(cwd)
        candidates = [base / "toren.toml", base / "pyproject.toml"]
    for path in candidates:
        if not path.is_file():
            continue
        data = _read_toml(path)
        if path.name == "pyproject.toml" and not explicit:
            tool = data.get("tool")
            data = tool.get("toren") if isinstance(tool, dict) else None
            if data is None:
                continue
            name = f"{path} [tool.toren]"
        else:
            name = str(path)
        if not isinstance(data, dict):
            raise ConfigError(f"{name}: expected a table of settings")
        data = {str(k).replace("-", "_"): v for k, v in data.items()}
        if not explicit:
            # A file found in the repository is the repository's, possibly written by an earlier agent: before
            # anything else (even a bad value), it may set only the task-shaping keys.
            _check_repository_keys(data, name)
        check_layer(data, name)
        if not explicit:
            _check_repository_values(data, name)
        return data, name
    return {}, ""


def _check_repository_keys(data: dict[str, Any], name: str) -> None:
    known = set(schema()["properties"])
    host_only = sorted(k for k in data if k in known and k not in REPOSITORY_KEYS)
    if host_only:
        key, more = host_only[0], host_only[1:]
        also = f"; also host-only here: {', '.join(more)}" if more else ""
        raise ConfigError(f"{name}: {key}: a settings file found in the repository may not set {key} (it may set "
                          f"only {', '.join(REPOSITORY_KEYS)}); {_host_fix(key)}{also}")


def _host_fix(key: str) -> str:
    """Where the user sets a host-only key instead."""
    from toren_action.cli import RUN_SETTING_FLAGS  # cli imports nothing heavy

    where = []
    if key in RUN_SETTING_FLAGS:
        where.append(flag_name(key))
    if schema()["properties"][key].get("type") != "object":
        where.append(f"TOREN_{key.upper()}")
    where.append("a file named by --config")
    return "set it with " + (", ".join(where[:-1]) + " or " + where[-1] if len(where) > 1 else where[0])


def _check_repository_values(data: dict[str, Any], name: str) -> None:
    """The values of a repository's task-shaping keys: no option for the CLI, no variable that reaches past the task."""
    for key in ("model", "append_system_prompt", "verify"):
        if isinstance(data.get(key), str) and data[key].startswith("-"):
            raise ConfigError(f"{name}: {key}: a value from the repository may not start with '-' (the agent's CLI "
                              "could take it for an option); fix the value or remove it")
    for key in ("allowed_tools", "disallowed_tools"):
        for item in data.get(key) or ():
            if item.startswith("-"):
                raise ConfigError(f"{name}: {key}: {item!r}: a value from the repository may not start with '-' "
                                  "(the agent's CLI could take it for an option); fix the value or remove it")
    for var in sorted(data.get("env") or {}):
        why = repository_env_refusal(var)
        if why:
            raise ConfigError(f"{name}: env.{var}: a settings file found in the repository may not set {var!r} in "
                              f"the agent's container ({why}); pass it with --env {var}=VALUE or in a file named by "
                              "--config")


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        import tomllib  # type: ignore[import-not-found]
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_SETTINGS_FILE_BYTES + 1)
        if len(raw) > MAX_SETTINGS_FILE_BYTES:
            raise ConfigError(f"{path}: larger than {MAX_SETTINGS_FILE_BYTES} bytes; a settings file is small")
        return tomllib.loads(raw.decode("utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read it as TOML ({exc}); fix the syntax") from None


def settings_from_record(record: dict[str, Any]) -> Settings:
    """Rebuild the settings stored with a job (for a background worker)."""
    data = {k: v for k, v in record.items() if k in Settings.__dataclass_fields__ and k != "sources"}
    data["env"] = tuple(sorted(dict(data.get("env") or {}).items()))
    for key in ("secrets", "volumes", "allow_mounts", "allowed_tools", "disallowed_tools", "allow_actors", "labels",
                "reviewers", "assignees", "allow_policy", "protected_paths"):
        data[key] = tuple(data.get(key) or ())
    data["prices"] = _price_tuple(data.get("prices") or {})
    return Settings(**data)


def _price_tuple(prices: dict[str, dict[str, float]]) -> tuple[tuple[str, tuple[tuple[str, float], ...]], ...]:
    return tuple(sorted((model, tuple(sorted(p.items()))) for model, p in prices.items()))
