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
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from toren_action.errors import ConfigError, UsageError

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

#: Settings that reach host secrets, host paths or the host network: never taken from a file that was found in
#: the repository (only from flags, TOREN_* or an explicit --config file).
HOST_REACHING_KEYS = frozenset({"secrets", "volumes", "allow_mounts", "ca_bundle", "network", "agent_uid", "gpus",
                                "github_token_file", "actor", "allow_actors", "allow_fork",
                                # these send the job's diff to a third party
                                "ai_summary", "summary_model",
                                # these loosen the diff policy
                                "allow_policy", "allow_workflow_changes", "max_file_mb", "max_change_mb",
                                # the agent container's limits
                                "cpus",
                                # off puts the key into the container
                                "key_proxy", "egress"})

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
    flags = {"timeout_minutes": "timeout", "volumes": "volume", "secrets": "secret"}
    return "--" + flags.get(key, key).replace("_", "-")


@lru_cache(maxsize=1)
def schema() -> dict[str, Any]:
    text = resources.files("toren_action").joinpath("schema/settings.schema.json").read_text("utf-8")
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
            data = data.get("tool", {}).get("toren")
            if data is None:
                continue
            name = f"{path} [tool.toren]"
        else:
            name = str(path)
        if not isinstance(data, dict):
            raise ConfigError(f"{name}: expected a table of settings")
        data = {k.replace("-", "_"): v for k, v in data.items()}
        check_layer(data, name)
        if not explicit:
            # A file found in the repository is the repository's, possibly written by an earlier agent: it may not
            # reach host secrets, host paths or the host network.
            forbidden = sorted(set(data) & HOST_REACHING_KEYS)
            if forbidden:
                key = forbidden[0]
                raise ConfigError(f"{name}: {key}: a settings file found in the repository may not set {key}; "
                                  f"set TOREN_{key.upper()}, a flag, or put it in a file named by --config")
        return data, name
    return {}, ""


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        import tomllib  # type: ignore[import-not-found]
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
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
