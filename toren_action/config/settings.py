"""One typed, frozen settings object, merged from four layers and checked against a JSON schema.

Precedence (later wins): built-in defaults < ``toren.toml`` (or ``[tool.toren]`` in ``pyproject.toml``)
< ``TOREN_*`` environment variables < command-line flags. Each layer is validated on its own so an error
names where the bad value came from.

Each setting is declared once, as a field of ``Settings``: its type and default are the field's, and
``setting(...)`` adds what else Toren knows about it (its flag of ``toren run`` and help, whether a repository's
own file may set it, the GitHub Action's input). ``DEFAULTS``, ``REPOSITORY_KEYS``, ``HOST_ONLY_KEYS``,
``flag_name``, the conversions to and from the job record, the ``toren run`` flags (cli) and the Action's inputs
(action) are all read from that declaration (``SETTINGS``). The JSON schema (``schema/settings.schema.json``) says
which values are valid; tests/unit/test_settings_declaration.py checks that it, the declaration, ``toren run``
and action.yml agree.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from toren_action.core.errors import ConfigError, UsageError
from toren_action.core.patterns import LazyPattern, lazy

#: The sections of ``toren run --help`` that settings' flags go in, in the order shown (cli adds "execution",
#: the flags that are not settings, after them).
GROUPS = ("task and repository", "agent", "container", "GitHub", "diff policy", "result", "race")
#: What a field's type makes of a setting: a scalar, a list (``tuple[str, ...]``, from a JSON array), or a map
#: (a sorted tuple of pairs, from a JSON object: ``env``, ``prices``).
KINDS = ("str", "int", "float", "bool", "list", "map")


@dataclass(frozen=True)
class Setting:
    """What Toren knows about one setting besides its type and default (the dataclass field's own)."""

    #: The help of its flag in ``toren run --help``; ``{default}`` is replaced by the default, and a help that does
    #: not say its default gets "(default X)" at its end. None: no flag.
    help: str | None = None
    #: Its flag and aliases; default ``--`` + the name with '-' for '_' (only with ``help``).
    flags: tuple[str, ...] = ()
    metavar: str | None = None
    #: The values argparse accepts (the schema's enum).
    choices: tuple[str, ...] | None = None
    #: Its section of ``toren run --help`` (one of GROUPS).
    group: str | None = None
    #: Why a file found in the repository may set it (REPOSITORY_KEYS); None: host-only.
    repository: str | None = None
    #: The GitHub Action's input (action.yml) that maps one to one onto it, by its kind: a string, a boolean
    #: (true/false), a number, lines (a list) or KEY=VALUE lines (a map).
    action_input: str | None = None
    # Filled in from the field (_declare):
    name: str = ""
    kind: str = ""
    nullable: bool = False
    default: Any = None

    @property
    def layer_default(self) -> Any:
        """The default as a layer holds it (plain JSON: a list, a map)."""
        return _thawed(self.kind, self.default) if self.kind in ("list", "map") else self.default

    @property
    def host_only(self) -> bool:
        return self.repository is None


def setting(default: Any = None, **spec: Any) -> Any:
    """A field of ``Settings``: its default, and the rest of its declaration (``Setting``'s fields)."""
    return field(default=default, metadata={"toren": Setting(**spec)})


def _task(default: Any = None, **spec: Any) -> Any:
    return setting(default, group="task and repository", **spec)


def _agent(default: Any = None, **spec: Any) -> Any:
    return setting(default, group="agent", **spec)


def _result(default: Any = None, **spec: Any) -> Any:
    return setting(default, group="result", **spec)


def _policy(default: Any = None, **spec: Any) -> Any:
    return setting(default, group="diff policy", **spec)


def _container(default: Any = None, **spec: Any) -> Any:
    return setting(default, group="container", **spec)


def _github(default: Any = None, **spec: Any) -> Any:
    return setting(default, group="GitHub", **spec)


def _race(default: Any = None, **spec: Any) -> Any:
    return setting(default, group="race", **spec)


@dataclass(frozen=True)
class Settings:
    # The settings, by section of `toren run --help`. The order of the repository's keys here is the order the
    # refusal of a host-only key lists them in (REPOSITORY_KEYS); a flag's place in its section is its place here.
    #
    # A repository's own file (toren.toml, [tool.toren]) may set only the keys with a `repository` reason. Such a
    # file is the repository's: whoever can push to the repository wrote it, an earlier agent included. It may
    # shape the task the agent works on inside its sandbox and nothing else: not where the result goes
    # (repository, branch, base branch, force-push, pull request, reviewers, labels, assignees, draft), not which
    # CLI or credential is used, not the image or its pull policy, not the limits (time, cost, memory, processes,
    # CPUs, sizes), not the author, not secrets, mounts, network, key proxy or egress, not the diff policy or the
    # code scan, not who may start a job, not what leaves the host (AI summary). Every other key is host-only
    # (HOST_ONLY_KEYS): a flag, TOREN_*, or a file named by --config/TOREN_CONFIG. A new setting is host-only until
    # it is given its reason. Host-only on purpose, although they look harmless:
    # - agent: picks the CLI and so which of the host's credentials is used and which provider gets the task;
    # - command: the shell agent's whole task, the user's to give (like spec, issue);
    # - agent_version: could pin an old CLI release with a known flaw;
    # - prices: a zero price switches off max_cost_usd;
    # - fail_on, push_partial, on_failure, draft, no_pr: what happens to the result is the user's decision.

    # -- task and repository
    repo: str = _task(".", help="local path, git URL or owner/name (default: the current directory)")
    spec: str | None = _task(metavar="FILE", help="markdown file holding the task")
    issue: str | None = _task(metavar="URL", help="GitHub issue holding the task (URL or owner/name#N)")
    # Host-only: which pull request Toren commits to and pushes (its head branch) is the user's to give.
    pr: str | None = _task(metavar="URL", help="a pull request to iterate on: its head branch gets a new commit "
                                                "addressing its unresolved review threads (URL or owner/name#N)")
    instruction: str | None = _task(metavar="TEXT", help="with --pr: a new instruction for this round (at most "
                                                         "20 KB)")
    branch: str | None = _task(help="branch to create (default: toren/<job id>)", action_input="branch")
    base_branch: str | None = _task(help="branch to start from (default: the repository's default branch)",
                                    action_input="base-branch")
    #: A commit of the local --repo to start from (HEAD: the checked-out one, detached or not), resolved when planned.
    base_ref: str | None = _task(metavar="REF", help="commit to start from instead of the base branch's tip, e.g. "
                                                     "HEAD (the commit checked out in a local --repo)")
    force_branch: bool = _task(False, help="overwrite the branch if it already exists upstream")

    # -- agent
    agent: str = _agent("claude", flags=("--agent", "--cli-type"), action_input="agent",
                        help="claude (default), gemini, codex, qwen or shell")
    command: str | None = _agent(help="command the shell agent runs with /bin/sh -c", action_input="command")
    # A name passed to the CLI as one argument (a leading '-' is refused, see _check_repository_values). It cannot
    # pick the CLI, the credential or the endpoint; the cost it causes is bounded by the host's max_cost_usd and
    # timeout_minutes, which the repository cannot set.
    model: str | None = _agent(help="model name for the agent CLI", repository="the model the agent's CLI asks for",
                               action_input="model")
    agent_version: str | None = _agent(metavar="VERSION", action_input="agent-version",
                                       help="version of the agent CLI's npm package (default: pinned)")
    max_cost_usd: float | None = _agent(metavar="USD", help="stop the agent when its cost passes this",
                                        action_input="max-cost-usd")
    # 1..10000 by the schema; the host's timeout and cost limit still bound the run.
    max_turns: int | None = _agent(metavar="N", help="stop the agent after N model turns",
                                   repository="how many model turns the task may take", action_input="max-turns")
    push_partial: bool = _agent(False, help="deprecated: --on-failure branch, for budget stops only",
                                action_input="push-partial")
    # The CLI's own permissions inside the container: the container, not the CLI, is the sandbox.
    allowed_tools: tuple[str, ...] = _agent(
        (), metavar="TOOL", help="tool the agent may use (repeatable; Claude Code syntax, e.g. 'Bash(git diff:*)')",
        repository="tools the agent may use inside its sandbox")
    disallowed_tools: tuple[str, ...] = _agent((), metavar="TOOL", help="tool the agent may not use (repeatable)",
                                               repository="tools the agent may not use inside its sandbox")
    # Text the repository could equally put in its instruction files (CLAUDE.md, AGENTS.md), which the agent reads.
    append_system_prompt: str | None = _agent(metavar="TEXT", help="text appended to the agent's system prompt",
                                              repository="more instructions for the agent")
    timeout_minutes: float = _agent(60, flags=("--timeout",), metavar="MINUTES",
                                    help="stop the agent after this many minutes (default {default})",
                                    action_input="timeout-minutes")

    # -- result
    # Runs in the agent's image without the job's secrets or sockets; the repository controls its own tests anyway.
    # A verify the user gives (flag, TOREN_VERIFY, --config) replaces it.
    verify: str | None = _result(metavar="CMD", help="command that must pass on the change before it is pushed",
                                 repository="the repository's own check of the change", action_input="verify")
    # Where the repository's own tests write their JUnit XML (read from the verification's tree, bounded, only files
    # the run wrote): it names results, and cannot make a failing command pass.
    verify_junit: str | None = _result(metavar="GLOB", action_input="verify-junit",
                                       help="JUnit XML files --verify writes, relative to the repository (default: "
                                            "asked of pytest when the command runs it)",
                                       repository="where the repository's tests write their JUnit XML")
    # Host-only, the four below: a second run of the tests doubles the check's time (a limit), accepting tests that
    # already failed weakens the user's own --verify, and the timeout and the retries are limits and cost.
    verify_baseline: bool = _result(False, action_input="verify-baseline",
                                    help="run --verify on the base commit first and judge the change by the tests "
                                         "it fixes and breaks")
    verify_allow_preexisting: bool = _result(False, action_input="verify-allow-preexisting",
                                             help="with --verify-baseline, pass when the only failing tests already "
                                                  "failed on the base commit")
    verify_timeout: float | None = _result(metavar="MINUTES", action_input="verify-timeout",
                                           help="stop each run of --verify after this many minutes "
                                                "(default: --timeout)")
    verify_retries: int = _result(0, metavar="N", action_input="verify-retries",
                                  help="when --verify fails, give the agent up to N more turns (at most 5) with the "
                                       "failing tests, within the same budget and timeout (default {default})")
    # Host-only: where a failed job's change goes (a branch, a draft pull request) is the user's decision.
    on_failure: str = _result("discard", choices=("discard", "branch", "draft"), action_input="on-failure",
                                     help="when the job fails after the agent changed something (verification, "
                                          "budget, turns, timeout; never the diff policy): discard it, push it to the "
                                          "branch, or push it and open a draft pull request saying why (default "
                                          "{default}; draft with --issue and in the Action)")
    draft: bool = _result(False, help="open the pull request as a draft", action_input="draft")
    no_pr: bool = _result(False, help="push the branch only", action_input="no-pr")

    # -- diff policy: rules to allow (policy.RULES; never secret-value), workflow edits, protected globs, sizes, scan
    allow_workflow_changes: bool = _policy(False, help="let the change touch .github/, an action.yml/action.yaml, "
                                           ".toren/setup.sh or toren.toml", action_input="allow-workflow-changes")
    allow_policy: tuple[str, ...] = _policy(
        (), metavar="RULE", help="a diff-policy rule that may not block the push (repeatable): secret-pattern, "
                                 "workflow, symlink, large-file, binary, protected-path")
    # Can only add protection: files the change may not touch.
    protected_paths: tuple[str, ...] = _policy((), flags=("--protected-path",), metavar="GLOB",
                                               help="files the change may not touch (repeatable)",
                                               repository="files the change may not touch",
                                               action_input="protected-paths")
    max_file_mb: float = _policy(5, metavar="MB", help="largest file the change may add (default {default})")
    #: Largest total size of the change the agent may commit, in MB (the sum of the changed files' new sizes).
    max_change_mb: float = _policy(50, metavar="MB",
                                   help="largest total size of the change the agent may commit (default {default})")
    #: Block the push on code-scan findings at or above this severity: none, medium, high.
    fail_on: str = _policy("none", choices=("none", "medium", "high"), action_input="fail-on",
                           help="block the push on code-scan (bandit) findings at or above this severity "
                                "(default {default})")

    # -- container
    base_image: str = _container("python:3.11", metavar="IMAGE", action_input="base-image",
                                 help="image the agent image is built on (default {default})")
    pull: str = _container("missing", choices=("missing", "always", "never"), help="when to pull the base image",
                           action_input="pull")
    # Variables of the agent's container, each name through repository_env_refusal() when from a repository; values
    # through the same checks as --env (validate.env_entry, the profile's reserved names, credential-looking names)
    # in the pipeline.
    env: tuple[tuple[str, str], ...] = _container(
        (), metavar="KEY=VALUE", help="environment variable (repeatable)",
        repository="plain application variables for the agent's container", action_input="env")
    secrets: tuple[str, ...] = _container(
        (), flags=("--secret",), metavar="NAME",
        help="host variable passed as the read-only file /run/toren/secrets/NAME (repeatable)")
    volumes: tuple[str, ...] = _container((), flags=("--volume",), metavar="SRC:DST[:ro|rw]",
                                          help="bind mount (repeatable)", action_input="volumes")
    gpus: str | None = _container(help="all, a count, or device=0,1", action_input="gpus")
    network: str | None = _container(help="bridge, host, none or a network name (default: the agent's)",
                                     action_input="network")
    #: "allow=HOST,HOST": no network for the agent except these hosts, through a filtering proxy on the host.
    egress: str | None = _container(metavar="allow=HOST,...", action_input="egress",
                                    help="no network except these hosts (through a filtering proxy on the host; "
                                         "*.domain for subdomains)")
    #: Keep the model API key on the host behind a socket proxy: auto (wherever the profile allows), on, off.
    key_proxy: str = _container("auto", choices=("auto", "on", "off"), action_input="key-proxy",
                                help="keep the model API key on the host behind a proxy (default {default}: for every "
                                     "CLI whose credential is its API key)")
    memory: str = _container("4g", help="memory limit (default {default})")
    pids_limit: int = _container(1024, metavar="N", help="process limit (default {default})")
    #: CPUs of the agent's container (Docker's --cpus).
    cpus: float = _container(2.0, metavar="N", help="CPUs of the agent's container (default {default})")
    # The repository's environment, prepared before the agent and cached by content (job/setup.py, docs/setup.md).
    # From a repository's file as the [setup] table (run, cache_key); the network, the version and the secrets
    # it gets are the host's.
    setup: str | None = _container(metavar="CMD", action_input="setup",
                                   help="command that prepares the repository before the agent (with the network; "
                                        "cached by content; default: [setup] run, else .toren/setup.sh)",
                                   repository="how the repository's environment is prepared (runs in the agent "
                                              "image without the agent's secrets, cached)")
    setup_cache_key: tuple[str, ...] = _container(
        (), metavar="GLOB", help="file whose content decides when the setup is redone (repeatable; a glob in the "
                                 "repository)", repository="files whose content decides when the setup is redone")
    setup_network: str | None = _container(metavar="NAME", help="network of the setup's container (default: "
                                                                "Docker's default bridge)")
    setup_version: str | None = _container(metavar="TEXT", help="any text: changing it redoes the cached setup")
    no_setup_cache: bool = _container(False, help="run the setup afresh, neither reusing nor keeping a prepared "
                                                  "environment")
    secret_for: tuple[str, ...] = _container(
        (), metavar="[NAME=]setup", help="give a --secret to the setup only, never to the agent (repeatable; 'setup' "
                                         "alone: every --secret)")
    ca_bundle: str | None = _container(metavar="PATH",
                                       help="extra CA bundle to trust in the image (default: SSL_CERT_FILE, "
                                            "REQUESTS_CA_BUNDLE or NODE_EXTRA_CA_CERTS when set)")

    # -- GitHub
    github_token_file: str | None = _github(metavar="PATH", help="file holding the GitHub token "
                                                                 "(default: GITHUB_TOKEN or GH_TOKEN)")
    #: The GitHub login that triggered the job: it must have write access (or be in allow_actors).
    actor: str | None = _github(metavar="LOGIN", help="GitHub user who triggered the job; must have write access")
    allow_actors: tuple[str, ...] = _github(
        (), flags=("--allow-actor",), metavar="LOGIN",
        help="trust this GitHub login to start jobs whatever its permission (repeatable)")
    allow_fork: bool = _github(False, help="allow --repo to be a fork of the issue's repository")
    #: Host-only: a repository's own file can never widen which pull requests Toren may push to.
    allow_any_pr: bool = _github(False, help="with --pr: take a same-repository pull request Toren did not open")
    labels: tuple[str, ...] = _github((), flags=("--label",), metavar="LABEL", help="label for the PR (repeatable)",
                                      action_input="labels")
    reviewers: tuple[str, ...] = _github((), flags=("--reviewer",), metavar="LOGIN",
                                         help="reviewer for the PR (repeatable)", action_input="reviewers")
    assignees: tuple[str, ...] = _github((), flags=("--assignee",), metavar="LOGIN",
                                         help="assignee for the PR (repeatable)")

    # -- race (docs/race.md): several attempts on one task, one pull request from the best. All host-only: how many
    # agents run, which CLIs and what they may spend are the user's, like the agent and max_cost_usd.
    attempts: int | None = _race(metavar="N", action_input="attempts",
                                 help="race N attempts of the task per agent (1 to 16) and open one pull request "
                                      "from the best (with --max-cost-usd as the race's shared budget)")
    agents: str | None = _race(metavar="A,B[:MODEL]", action_input="agents",
                               help="race these agents, comma-separated (agent:model picks a model), each "
                                    "--attempts times")
    max_cost_usd_per_attempt: float | None = _race(metavar="USD", help="stop one attempt of a race when its cost "
                                                                       "passes this")
    first_verified: bool = _race(False, help="stop the other attempts as soon as one passes --verify and the policy")
    keep_attempts: bool = _race(False, help="keep the branches of the attempts that did not win")
    judge: str | None = _race(metavar="MODEL", help="ask this model (Anthropic API, key from ANTHROPIC_API_KEY) to "
                                                    "break a tie between attempts equal on every rule")
    race_attempt: int | None = _race(metavar="N", help="run attempt N of a race spread over a runner fleet: push "
                                                       "its branch, open no pull request, write its result record")
    race_record: str | None = _race(metavar="FILE", help="where --race-attempt writes its result record (default "
                                                         "toren-attempt-N.json)")

    # -- no flag: files and TOREN_* only
    #: Price overrides per model: {model: {"input": USD/Mtok, "output": ..., "cache_read": ..., "cache_write": ...}}
    prices: tuple[tuple[str, tuple[tuple[str, float], ...]], ...] = setting(())
    #: Model for AI summaries (default claude-haiku-4-5), and when the pull request body gets one: "auto" (the
    #: agent left none, the agent is claude and an Anthropic key is set), "always" (any agent), "never".
    summary_model: str | None = setting()
    ai_summary: str = setting("auto")
    author_name: str = setting("toren[bot]")
    author_email: str = setting("toren[bot]@users.noreply.github.com")
    allow_mounts: tuple[str, ...] = setting(())
    agent_uid: int | None = setting()

    #: Where each non-default value came from (key -> "toren.toml", "TOREN_AGENT", "--agent", ...).
    sources: tuple[tuple[str, str], ...] = field(default=(), compare=False, repr=False)

    def source_of(self, key: str) -> str:
        """The option name to blame in an error about ``key``: the flag, variable or file that set it."""
        return dict(self.sources).get(key, flag_name(key))

    def to_record(self) -> dict[str, Any]:
        """The inputs as stored with a job: plain JSON, secret values never included (only their names)."""
        data = dataclasses.asdict(self)
        data.pop("sources")
        for key, spec in SETTINGS.items():
            if spec.kind == "map":
                data[key] = _thawed("map", getattr(self, key))
        return data

    def price_overrides(self) -> dict[str, dict[str, float]]:
        return _thawed("map", self.prices)

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
                if SETTINGS[key].kind == "map" and isinstance(value, dict):  # maps merge key by key
                    merged[key] = {**merged[key], **value}
                else:
                    merged[key] = value
                if origin == "env":
                    sources[key] = "TOREN_" + key.upper()
                elif origin == "flags":
                    sources[key] = flag_name(key)
                else:
                    sources[key] = f"{origin}: {key}"

        if "on_failure" not in sources and merged.get("issue"):
            merged["on_failure"] = "draft"  # a job on an issue: a failed change becomes a draft unless told otherwise

        if not merged.get("ca_bundle"):
            for var in CA_BUNDLE_VARIABLES:
                if environ.get(var):
                    merged["ca_bundle"] = environ[var]
                    sources["ca_bundle"] = var
                    break

        return cls(**{key: _frozen(SETTINGS[key].kind, value) for key, value in merged.items()},
                   sources=tuple(sorted(sources.items())))


def _declare(cls: type) -> dict[str, Setting]:
    """Each field's declaration, completed from the field: its name, kind (from its type), default and flags."""
    declared: dict[str, Setting] = {}
    for f in dataclasses.fields(cls):
        spec = f.metadata.get("toren")
        if spec is None:  # sources
            continue
        type_ = str(f.type)
        base = type_.removesuffix(" | None")
        kind = "map" if base.startswith("tuple[tuple[") else "list" if base.startswith("tuple[") else base
        if kind not in KINDS:
            raise TypeError(f"setting {f.name}: type {type_} is none of {KINDS}")
        flags = spec.flags or (("--" + f.name.replace("_", "-"),) if spec.help else ())
        if flags and (spec.help is None or spec.group not in GROUPS):
            raise ValueError(f"setting {f.name}: a flag needs its help and one of the groups {GROUPS}")
        shown = f"{f.default:g}" if isinstance(f.default, (int, float)) and not isinstance(f.default, bool) \
            else str(f.default)
        text = spec.help.replace("{default}", shown) if spec.help else None
        if text and "default" not in text and f.default not in (None, False, (), ""):  # `toren run --help` shows it
            text += f" (default {shown})"
        declared[f.name] = dataclasses.replace(
            spec, name=f.name, kind=kind, nullable=type_ != base, default=f.default, flags=flags, help=text)
    return declared


def _frozen(kind: str, value: Any) -> Any:
    """A value as a layer holds it (JSON), as the frozen Settings holds it: a list as a tuple, a map (of values or
    of maps) as a sorted tuple of pairs."""
    if kind == "list":
        return tuple(value)
    if kind == "map":
        return tuple(sorted((k, tuple(sorted(v.items())) if isinstance(v, dict) else v)
                            for k, v in dict(value).items()))
    return value


def _thawed(kind: str, value: Any) -> Any:
    """The inverse of _frozen: a tuple as a list, a map as a dict (of values or of dicts)."""
    if kind == "list":
        return list(value)
    if kind == "map":
        return {k: dict(v) if isinstance(v, tuple) else v for k, v in value}
    return value


#: Every setting's declaration, in the order of the fields.
SETTINGS: dict[str, Setting] = _declare(Settings)
#: The defaults, as a layer holds them.
DEFAULTS: dict[str, Any] = {key: spec.layer_default for key, spec in SETTINGS.items()}
#: The only settings that a file Toren finds on its own (``toren.toml``, or ``[tool.toren]`` in ``pyproject.toml``,
#: in the repository or the current directory) may set, each with its reason (see the comment in ``Settings``).
REPOSITORY_KEYS: dict[str, str] = {key: spec.repository for key, spec in SETTINGS.items() if spec.repository}
#: Everything a file found in the repository may not set.
HOST_ONLY_KEYS = frozenset(key for key, spec in SETTINGS.items() if spec.host_only)

#: The shape of a variable name that a repository's ``[env]`` may set: upper-case words of letters and digits joined
#: by single '_', starting with a letter, at most 64 characters (DATABASE_URL, DJANGO_SETTINGS_MODULE, LC_ALL). This
#: leaves out lower-case names (http_proxy, npm_config_*), a leading '_' (_JAVA_OPTIONS) and exported shell
#: functions (BASH_FUNC_x%%). A name of that shape must still be in none of the families below.
REPOSITORY_ENV_SHAPE = lazy(r"^[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)*$")
REPOSITORY_ENV_MAX = 64
#: Families of variables that reach past the task: they route or intercept the CLI's traffic (and with it a
#: subscription token), load code into every process, change what a program or shell runs at start-up, or point
#: the CLI, git or a credential somewhere else. A repository may set none of them; the user may (--env).
REPOSITORY_ENV_FAMILIES: tuple[tuple[str, LazyPattern], ...] = (
    ("a proxy setting", lazy(r"PROXY")),  # HTTPS_PROXY, ALL_PROXY, NO_PROXY, GOPROXY, ...
    ("a TLS or CA setting", lazy(r"SSL|TLS|CERT|(?:^|_)CA(?:_|$)|CAFILE|CAPATH|CAINFO|CABUNDLE|INSECURE|"
                                       r"(?:^|_)NO_VERIFY(?:_|$)")),
    ("a dynamic loader or C library setting",
     lazy(r"^(?:LD|DYLD|GCONV|GLIBC|MALLOC)_|^(?:LOCPATH|NLSPATH|HOSTALIASES|RES_OPTIONS|LOCALDOMAIN|"
                r"RESOLV_HOST_CONF|GETCONF_DIR|TZDIR)$")),
    ("a language or tool start-up setting",
     lazy(r"^(?:NODE|NPM|YARN|PNPM|COREPACK|BUN|DENO|PIP|UV|PIPX|POETRY|CONDA|VIRTUAL|JAVA|JDK|MAVEN|GRADLE|"
                r"LUA|DOTNET|CORECLR|COMPLUS|GIT|BASH|ZSH|SSH|GNUPG|GPG|DOCKER|KUBE|XDG|SUDO|LESS|GEM|BUNDLE)_|"
                r"^(?:PYTHON|PERL|RUBY)|_OPTIONS$|_OPTS$|"
                r"^(?:ENV|PROMPT_COMMAND|PS[0-9]|IFS|CDPATH|GLOBIGNORE|SHELLOPTS|BASHOPTS|ZDOTDIR|INPUTRC|"
                r"HISTFILE|CLASSPATH|PHPRC|PHP_INI_SCAN_DIR|TCLLIBPATH|EDITOR|VISUAL|PAGER|MANPAGER|BROWSER|"
                r"LESSOPEN|LESSCLOSE|TERMINFO|TERMCAP|KUBECONFIG|NETRC|CURL_HOME|WGETRC)$")),
    ("a compiler, build or archive tool setting",
     lazy(r"^(?:GNUPG|GPG|TERMINFO|RIPGREP|RUSTUP|RUSTFLAGS|RUSTC|RUSTDOC|CARGO|CMAKE|PKG_CONFIG|XZ|ZSTD|BZIP|GZIP|LZ4|ZIP|UNZIP)|"
                r"^(?:GO[A-Z]+|CC|CXX|CPP|LD|AR|AS|NM|RANLIB|STRIP|CFLAGS|CXXFLAGS|CPPFLAGS|LDFLAGS|LDLIBS|MAKEFLAGS|"
                r"MFLAGS|MAKEFILES|LIBRARY_PATH|CPATH|C_INCLUDE_PATH|CPLUS_INCLUDE_PATH|OBJC_INCLUDE_PATH|MAGIC)$")),
    ("a system setting", lazy(r"^(?:PATH|HOME|USER|LOGNAME|SHELL|PWD|OLDPWD|TMPDIR|TMP|TEMP|HOSTNAME|MAIL|"
                                    r"DISPLAY|XAUTHORITY|DBUS_SESSION_BUS_ADDRESS)$")),
    ("an agent, model API, cloud or GitHub setting",
     lazy(r"^(?:ANTHROPIC|CLAUDE|OPENAI|CODEX|GEMINI|GOOGLE|GCLOUD|CLOUDSDK|VERTEX|QWEN|DASHSCOPE|OPENROUTER|"
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


def flag_name(key: str) -> str:
    """The flag of ``toren run`` that sets ``key`` (its first), or the flag it would have."""
    spec = SETTINGS.get(key)
    return spec.flags[0] if spec and spec.flags else "--" + key.replace("_", "-")


@lru_cache(maxsize=1)
def schema() -> dict[str, Any]:
    from importlib import resources

    text = resources.files("toren_action.config").joinpath("schema/settings.schema.json").read_text("utf-8")
    return json.loads(text)


def check_layer(layer: dict[str, Any], origin: str) -> None:
    """Validate one layer against the schema; raise a one-line error naming the key and the fix. A layer that
    ``conforms`` needs nothing more; any other goes to jsonschema, which names the first error (and has the
    last word: a layer it accepts passes)."""
    if conforms(layer, schema()):
        _check_finite(layer, origin)
        return
    import jsonschema  # lazy: a valid layer never loads it (about 50 ms of every start)

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
        msg = _in_words(err, path.split(".")[0])
    if origin == "flags":
        raise UsageError(flag_name(path.split(".")[0]), msg)
    if origin == "env":
        raise UsageError("TOREN_" + path.split(".")[0].upper(), msg)
    raise ConfigError(f"{origin}: {path}: {msg}; fix the value or remove it")


def shown(value: Any, limit: int = 60) -> str:
    """A value as an error quotes it: at most ``limit`` characters, and how many more there were."""
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    if len(text) <= limit:
        return repr(text) if isinstance(value, str) else text
    return f"{text[:limit]!r}… ({len(text) - limit} more characters)"


_TYPE_WORDS = {"string": "a string", "boolean": "true or false", "integer": "a whole number", "number": "a number",
               "array": "a list", "object": "a table", "null": "empty"}


def _in_words(err: Any, key: str) -> str:
    """A schema error as a user reads it: what is wrong with the value and what to give instead; the value
    quoted shortly (never a 20,000-character text whole), no schema jargon."""
    value, rule = err.instance, err.validator_value
    if err.validator == "pattern" and key == "memory":
        return f"{shown(value).strip(chr(39))} is not a size; use a number with b, k, m or g, e.g. 4g"
    number = f"{value:g}" if isinstance(value, (int, float)) and not isinstance(value, bool) else shown(value)
    if err.validator == "exclusiveMinimum":
        return f"{number} must be greater than {rule:g}"
    if err.validator == "minimum":
        return f"{number} must be at least {rule:g}"
    if err.validator == "maximum":
        return f"{number} must be at most {rule:g}"
    if err.validator == "enum":
        if key == "allow_policy" and value == "secret-value":
            return "secret-value findings can never be allowed (a real secret is never pushed)"
        return f"{shown(value)} is not one of {', '.join(str(v) for v in rule)}"
    if err.validator == "type":
        names = rule if isinstance(rule, list) else [rule]
        return f"{shown(value)} is not {' or '.join(_TYPE_WORDS.get(n) or str(n) for n in names)}"
    if err.validator == "minLength":
        return "is empty; give a value or leave it out" if rule <= 1 else f"is shorter than {rule} characters"
    if err.validator == "maxLength":
        return f"is {len(value)} characters long; at most {rule} are allowed"
    if err.validator == "uniqueItems":
        return "names the same value twice"
    if err.validator == "pattern":
        about = schema()["properties"].get(key, {}).get("description", "")
        return f"{shown(value)} is not a valid value" + (f" ({about.rstrip('.')})" if about else "")
    return " ".join(err.message.split())[:200]


_JSON_TYPES: dict[str, Any] = {
    "string": lambda v: isinstance(v, str), "boolean": lambda v: isinstance(v, bool), "null": lambda v: v is None,
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "array": lambda v: isinstance(v, list), "object": lambda v: isinstance(v, dict),
}
#: The keywords ``conforms`` checks; a schema holding any other is left to jsonschema.
_KEYWORDS = frozenset({"type", "enum", "minLength", "maxLength", "minimum", "maximum", "exclusiveMinimum", "pattern",
                       "items", "properties", "additionalProperties", "required", "uniqueItems", "description",
                       "$schema", "$id", "title"})


def conforms(value: Any, rule: dict[str, Any]) -> bool:
    """True when ``value`` certainly satisfies ``rule``, for the part of JSON Schema the settings schema uses
    (types, enums, lengths, bounds, patterns, items, properties, required, unique items). False means "not
    sure": the caller asks jsonschema. Never True where jsonschema would find an error (a property test
    compares the two)."""
    if not _KEYWORDS.issuperset(rule):
        return False
    types = rule.get("type")
    if types is not None:
        names = types if isinstance(types, list) else [types]
        if not any(_JSON_TYPES[t](value) for t in names if t in _JSON_TYPES):
            return False
        if isinstance(value, float) and "integer" in names and "number" not in names:
            return False  # 1.0 is an integer to JSON Schema; leave such cases to jsonschema
    if "enum" in rule and not any(value == e and type(value) is type(e) for e in rule["enum"]):
        return False
    if isinstance(value, str):
        if len(value) < rule.get("minLength", 0) or len(value) > rule.get("maxLength", len(value)):
            return False
        if "pattern" in rule and re.search(rule["pattern"], value) is None:
            return False
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value):
            return False
        if ("minimum" in rule and value < rule["minimum"]) or ("maximum" in rule and value > rule["maximum"]) \
                or ("exclusiveMinimum" in rule and value <= rule["exclusiveMinimum"]):
            return False
    if isinstance(value, list):
        if "items" in rule and not all(conforms(v, rule["items"]) for v in value):
            return False
        if rule.get("uniqueItems") and not (all(isinstance(v, str) for v in value) and len(set(value)) == len(value)):
            return False
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value) or not all(k in value for k in rule.get("required", ())):
            return False
        props, extra = rule.get("properties", {}), rule.get("additionalProperties", True)
        for key, item in value.items():
            if key in props:
                if not conforms(item, props[key]):
                    return False
            elif extra is False or (isinstance(extra, dict) and not conforms(item, extra)):
                return False
    return True


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


def parse_bool(text: str) -> bool | None:
    """A boolean as a variable or an Action input writes it: 1, true, yes, on or 0, false, no, off, empty (any case,
    surrounding white space ignored); None for anything else (the caller names the option in its error)."""
    low = text.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off", ""):
        return False
    return None


#: The TOREN_ variables that are not settings, each read somewhere on purpose (the rest of TOREN_* must be a
#: setting's TOREN_<KEY>: any other is refused, with the closest name). Keep this list to what the code reads.
OTHER_VARIABLES: dict[str, str] = {
    "TOREN_HOME": "where Toren keeps its state (core/paths.py)",
    "TOREN_CONFIG": "the settings file, like --config",
    "TOREN_MAX_JOBS": "how many background jobs run at once (jobs/worker.py)",
    "TOREN_WORKER_IDLE_S": "how long an idle background worker stays (jobs/worker.py)",
    "TOREN_CACHE_DIR": "the Node runtimes' cache (sandbox/toolchain.py)",
    "TOREN_NODE_WHEEL": "a downloaded Node wheel (sandbox/toolchain.py)",
    "TOREN_PYPI_URL": "the package index Node is fetched from (sandbox/toolchain.py)",
    "TOREN_SEMGREP_CONFIG": "semgrep's rules for the code scan (guard/codescan.py)",
    "TOREN_ARTIFACTS": "where the Action writes its artifacts (action.py)",
    "TOREN_SOURCE": "what the Action installs Toren from (action.yml)",
    "TOREN_PLAIN": "plain output, no spinner (cli/ui.py)",
    "TOREN_PYTHON_IMAGE": "the tag scripts/build-python-image.sh builds (the tests' Python base image)",
    "TOREN_ATTEMPT": "the attempt of a job that is run again",
    "TOREN_RACE_ID": "the race a job belongs to",
    "TOREN_JOB_ID": "set by Toren in the agent's container",
    "TOREN_TASK_FILE": "set by Toren in the agent's container",
    "TOREN_SECRETS_DIR": "set by Toren in the agent's container",
    "TOREN_DEMO_DIR": "scripts/demo.sh",
    "TOREN_DOCKERD_LOG": "scripts/setup-docker.sh",
    "TOREN_DOCKERD_WAIT": "scripts/setup-docker.sh",
    "TOREN_DEBIAN_MIRROR": "scripts/build-base-image.sh",
    "TOREN_BASE_SUITE": "scripts/build-base-image.sh",
}
#: Variables of Toren's own test suite (TOREN_TEST_BASE_IMAGE, ...).
TEST_VARIABLE_PREFIX = "TOREN_TEST_"


def check_variables(environ: dict[str, str]) -> None:
    """Refuse a TOREN_ variable that is neither a setting's nor one Toren reads otherwise (a typo would be
    ignored), naming the closest one; and a map's, which is never read from a variable."""
    import difflib

    settings_vars = {"TOREN_" + key.upper(): key for key in SETTINGS}
    for var in sorted(v for v in environ if v.startswith("TOREN_")):
        if var in OTHER_VARIABLES or var.startswith(TEST_VARIABLE_PREFIX):
            continue
        key = settings_vars.get(var)
        if key is not None:
            if SETTINGS[key].kind == "map":
                where = f"{flag_name(key)} or " if SETTINGS[key].flags else ""
                raise UsageError(var, f"{key} is not read from a variable; set it with {where}a file named by "
                                      "--config, and unset " + var)
            continue
        known = [v for v in settings_vars if SETTINGS[settings_vars[v]].kind != "map"] + list(OTHER_VARIABLES)
        shown = var if len(var) <= 60 else var[:60] + "…"
        # a near twin first (a missing plural s), then a longer name it begins (the timeout's without _MINUTES),
        # then anything close
        longer = sorted(v for v in known if v.startswith(var + "_"))
        close = (difflib.get_close_matches(var, known, n=1, cutoff=0.9) or longer[:1]
                 or difflib.get_close_matches(var, known, n=1, cutoff=0.6))
        hint = f"did you mean {close[0]}?" if close else "unset it (docs/configuration.md lists the variables)"
        raise UsageError(shown, f"not a Toren setting or variable; {hint}")


def _env_layer(environ: dict[str, str]) -> dict[str, Any]:
    """Scalar settings from TOREN_<KEY> variables, converted to the schema's type (an unknown TOREN_ variable
    refused first: check_variables)."""
    check_variables(environ)
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
            value = parse_bool(raw)
            if value is None:
                raise UsageError(var, f"{raw!r} is not a boolean; use 1 or 0")
            layer[key] = value
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
        from toren_action.config.validate import repo_top_level

        base = repo_top_level(base) or base  # from a subdirectory: the repository's own file, at its top
        candidates = [base / "toren.toml", base / "pyproject.toml"]
    for path in candidates:
        if not path.is_file():
            continue
        data: Any = _read_toml(path)
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
        data = _setup_table({str(k).replace("-", "_"): v for k, v in data.items()}, name)
        if not explicit:
            # A file found in the repository is the repository's, possibly written by an earlier agent: before
            # anything else (even a bad value), it may set only the task-shaping keys.
            _check_repository_keys(data, name)
        check_layer(data, name)
        if not explicit:
            _check_repository_values(data, name)
        return data, name
    return {}, ""


#: The keys of a settings file's ``[setup]`` table, and the settings they are.
SETUP_TABLE = {"run": "setup", "cache_key": "setup_cache_key"}


def _setup_table(data: dict[str, Any], name: str) -> dict[str, Any]:
    """A file's ``[setup]`` table (run, cache_key) as the flat settings ``setup`` and ``setup_cache_key``; a
    plain ``setup = "CMD"`` is the command. Any other key of the table is refused (a typo would otherwise leave a
    setup unsafe or never redone)."""
    table = data.get("setup")
    if not isinstance(table, dict):
        return data
    unknown = sorted(str(k) for k in table if str(k).replace("-", "_") not in SETUP_TABLE)
    if unknown:
        raise ConfigError(f"{name}: setup.{unknown[0]}: unknown key of [setup] (it takes only "
                          f"{', '.join(SETUP_TABLE)}); fix or remove it")
    flat = {k: v for k, v in data.items() if k != "setup"}
    for key, value in table.items():
        target = SETUP_TABLE[str(key).replace("-", "_")]
        if target in flat:
            raise ConfigError(f"{name}: setup.{key}: also set as {target}; keep one of them")
        flat[target] = value
    return flat


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
    where = []
    if SETTINGS[key].flags:
        where.append(flag_name(key))
    if SETTINGS[key].kind != "map":  # maps are not read from variables
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
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
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
    data = {k: v for k, v in record.items() if k in SETTINGS}
    for key, spec in SETTINGS.items():
        if spec.kind in ("list", "map"):
            data[key] = _frozen(spec.kind, data.get(key) or ())
    return Settings(**data)
