"""A job's plan: every input validated, the credentials resolved, nothing started. `make_plan` reads the
environment and the working directory it is given (the process's by default) and raises UsageError (exit 2), or
MissingCredentials, on the first problem; each check is a function named for what it checks."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from toren_action.agents import get_profile
from toren_action.agents.base import AgentProfile, RunContext
from toren_action.config import validate
from toren_action.config.settings import Settings
from toren_action.config.task import Task, from_spec, title_of
from toren_action.config.validate import IssueRef, Mount, RepoRef
from toren_action.core.errors import ActorNotAllowed, MissingCredentials, UsageError
from toren_action.core.patterns import lazy
from toren_action.core.redact import CREDENTIAL_NAME, Redactor, Secret

if TYPE_CHECKING:
    from toren_action.git.github import Endpoints, GitHub
    from toren_action.git.review import PullRequest
    from toren_action.git.workspace import RemoteHeads

CONTAINER_SECRETS = "/run/toren/secrets"
CONTAINER_TASK = "/run/toren/task"
CONTAINER_SOCKETS = "/run/toren/sockets"
#: The repository's setup script, used when no setup command is given (job/setup.py).
SETUP_SCRIPT = ".toren/setup.sh"
_LOOPBACK = lazy(r"^[a-z][a-z0-9+.-]*://(?:[^/@]*@)?(?:localhost|127\.[0-9.]+|\[::1\])(?:[:/]|$)", re.I)


@dataclass(frozen=True, kw_only=True)
class Plan:
    """Everything a job needs, validated. Built before the job exists; nothing has started yet."""

    settings: Settings
    repo: RepoRef
    origin: str
    task: Task
    profile: AgentProfile
    branch: str
    mounts: tuple[Mount, ...]
    env: dict[str, str]
    secrets: tuple[Secret, ...]
    network: str
    ca_bundle: Path | None
    timeout_s: float
    uid: int
    gid: int
    #: Names of the credential secrets the agent CLI authenticates with.
    credentials: tuple[str, ...] = ()
    #: Non-secret host variables for the CLI (base URLs; unix sockets rewritten to their mount point).
    passthrough: tuple[tuple[str, str], ...] = ()
    github: GitHubPlan | None = None
    #: Overwrite the branch (--force-branch).
    force_push: bool = False
    #: The commit the branch of an open Toren pull request pointed to when planned: the push replaces it only
    #: if it still does.
    push_lease: str | None = None
    #: The model-API key held by the host-side key proxy (keyproxy.py); None when the agent holds its key.
    proxy_key: Secret | None = None
    #: The API origin the key proxy forwards to (the profile's base-URL variable, or its default); set exactly
    #: when ``proxy_key`` is.
    key_proxy_upstream: str | None = None
    #: --egress: the only hosts the agent may reach, through the host's filtering proxy (egress.py).
    egress_hosts: tuple[str, ...] = ()
    #: The branch the job starts from: --base-branch, else the origin's default branch (checked to exist).
    base_branch: str | None = None
    #: The origin's default branch as its HEAD named it when planned (None: detached); the mirror follows it.
    origin_head: str | None = None
    #: --base-ref's commit in the local repository (the job starts from it instead of the base branch's tip).
    base_commit: str | None = None
    #: What the user should know before the job starts (uncommitted work left out, a detached HEAD): one line each.
    warnings: tuple[str, ...] = ()
    #: What a failed job's change becomes: discard, branch or draft (--on-failure; Settings.load makes draft the
    #: default with --issue, so a background job's stored settings keep it).
    on_failure: str = "discard"
    #: --secret-for setup: the secrets the setup gets (as files) and the agent never does.
    setup_secrets: tuple[Secret, ...] = ()
    #: --pr: the pull request this round commits to (its head branch), as read when planned.
    pull: PullRequest | None = None
    #: --pr: this round's number (1 for the first round after the pull request was opened) and the job of the
    #: round before, when this host ran it.
    round: int | None = None
    parent_job: str | None = None

    @property
    def redactor(self) -> Redactor:
        """Masks the agent's secrets, the setup's and the host-only ones (the GitHub token)."""
        return Redactor(self.secrets + self.setup_secrets + (self.github.host_secrets if self.github else ())
                        + ((self.proxy_key,) if self.proxy_key else ()))


@dataclass(frozen=True)
class _Target:
    """Where the job's branch goes: the repository, the URL it is cloned from and pushed to, and GitHub's
    endpoints when the result goes to GitHub."""

    repo: RepoRef
    origin: str
    endpoints: Endpoints | None


@dataclass(frozen=True)
class _ModelAccess:
    """How the agent reaches its model: the credentials found, and either the key proxy (the key stays on the
    host) or the credentials as secret files plus the host variables (and sockets) passed through."""

    credentials: tuple[Secret, ...]
    passthrough: tuple[tuple[str, str], ...]
    proxy_key: Secret | None = None
    upstream: str | None = None
    #: The credentials the agent holds itself (as secret files), when there is no key proxy.
    secrets: tuple[Secret, ...] = ()
    #: Host sockets of the passed-through variables (a model API on a unix socket).
    mounts: tuple[Mount, ...] = ()


def make_plan(s: Settings, job_id: str, environ: dict[str, str] | None = None, cwd: str | None = None) -> Plan:
    """Validate every input (UsageError, exit 2, on the first problem). Changes nothing anywhere; it reads the
    origin's branches (to refuse an existing one) and, for GitHub, the repository, the issue and the actor's
    permission, after every local check has passed."""
    environ = dict(os.environ if environ is None else environ)
    cwd = cwd or os.getcwd()
    home_dir = environ.get("HOME", str(Path.home()))

    s = _branch_names(s)
    profile = _agent_profile(s)
    unused = _unused_by_agent(s, profile)
    pr_ref = _pull_source(s)
    issue, task = _task_source(s, cwd) if pr_ref is None else (None, None)
    target = _target(s, cwd, environ, issue, pr_ref)
    if s.actor and target.endpoints is None:
        raise UsageError(s.source_of("actor"), "only a job whose result goes to GitHub checks who started it; drop "
                                               "--actor for a local repository or a plain git URL")
    branch = _check_values(s, job_id)
    network, egress_hosts = _network(s, profile)
    env = _agent_env(s, profile)
    secrets, setup_secrets = _split_secrets(s, tuple(Secret(n, environ[validate.secret_name(n, environ)])
                                                     for n in s.secrets))
    _check_setup(s, target.repo)
    mounts = tuple(validate.volume_spec(v, cwd, home_dir, s.allow_mounts) for v in s.volumes)
    if profile.package and task is not None:
        _check_agent_limits(profile, s, task)
    access = _model_access(s, profile, environ, home_dir, network, secrets)
    ca_bundle = validate.ca_bundle_file(s.ca_bundle, s.source_of("ca_bundle")) if s.ca_bundle else None
    uid, gid = _agent_ids(s)

    gh = None
    if target.endpoints is not None and not _push_with_host_credentials(s, issue, environ):
        # the only part that talks to GitHub: after every local check
        gh, task = _github_plan(s, target.endpoints, environ, target.repo, issue, task, pr_ref)
        if profile.package and (issue or pr_ref):
            _check_agent_limits(profile, s, task)
    assert task is not None
    heads = _origin_heads(target.origin, gh)
    base = _base_branch(s, target.origin, heads)
    base_commit, warnings = _local_checkout(s, target.repo, base, heads)
    warnings = unused + warnings
    pull = gh.pull if gh else None
    lease: str | None
    if pull is not None:  # the round commits on the pull request's head, and pushes only as a fast-forward of it
        branch = validate.branch_name(pull.head_branch, "--pr")
        lease = pull.head_sha
    else:
        lease = _push_lease(s, target.origin, branch, gh, heads.branches.get(branch))
    return Plan(settings=s, repo=target.repo, origin=target.origin, task=task, profile=profile, branch=branch,
                mounts=mounts + access.mounts, env=env, secrets=secrets + access.secrets, network=network,
                ca_bundle=ca_bundle, timeout_s=s.timeout_minutes * 60, uid=uid, gid=gid,
                credentials=tuple(c.name for c in access.credentials), passthrough=access.passthrough, github=gh,
                force_push=s.force_branch, push_lease=lease, proxy_key=access.proxy_key,
                key_proxy_upstream=access.upstream, egress_hosts=egress_hosts, base_branch=base, origin_head=heads.head,
                base_commit=base_commit, warnings=warnings, on_failure=s.on_failure,
                setup_secrets=setup_secrets, pull=pull, round=pull.rounds + 1 if pull else None,
                parent_job=pull.source_job if pull else None)


#: Networks every Docker engine has; any other name in --network is looked up (one call) before the job exists.
BUILTIN_NETWORKS = ("bridge", "host", "none", "default")


def check_engine(plan: Plan, docker_client) -> None:
    """What only the engine knows, checked once it answers and before the job exists: that --network names a
    network it has, that --gpus has its NVIDIA runtime. No call at all when neither option is used."""
    from toren_action.sandbox import container

    s = plan.settings
    if plan.network not in BUILTIN_NETWORKS and not container.network_exists(docker_client, plan.network):
        raise UsageError(s.source_of("network"), f"the Docker engine has no network {plan.network!r}; create it "
                                                 f"(docker network create {plan.network}) or use bridge, host or "
                                                 "none")
    if s.gpus and not container.has_gpu_runtime(docker_client.info()):
        raise UsageError(s.source_of("gpus"), "the Docker engine has no NVIDIA runtime, so no GPU can be given to "
                                              "the agent; install the NVIDIA Container Toolkit or drop --gpus "
                                              "(`toren health` shows it)")


def _branch_names(s: Settings) -> Settings:
    """--branch and --base-branch checked as git does, a full ``refs/heads/NAME`` taken as NAME."""
    import dataclasses

    branch = validate.branch_name(s.branch) if s.branch else None
    base = validate.branch_name(s.base_branch, "--base-branch") if s.base_branch else None
    return s if (branch, base) == (s.branch, s.base_branch) else dataclasses.replace(s, branch=branch,
                                                                                      base_branch=base)


def _pull_source(s: Settings) -> IssueRef | None:
    """--pr, alone: not with --spec, --issue or --branch (the pull request's head branch is the branch);
    --instruction and --allow-any-pr only with it."""
    if not s.pr:
        for key in ("instruction", "allow_any_pr"):
            if getattr(s, key):
                raise UsageError(s.source_of(key), "only with --pr; drop it, or name the pull request with --pr")
        return None
    for key in ("spec", "issue", "branch"):
        if getattr(s, key):
            raise UsageError("--pr", f"give --pr without {s.source_of(key)}: the pull request is the task and its "
                                     "head branch is the branch")
    if s.force_branch:
        raise UsageError("--pr", "a round never force-pushes the pull request's branch; drop --force-branch")
    from toren_action.git.review import check_instruction

    check_instruction(s.instruction)
    return validate.pr_ref(s.pr)


def _agent_profile(s: Settings) -> AgentProfile:
    """The agent's profile, and --command exactly when the agent takes one."""
    profile = get_profile(s.agent, s.agent_version)
    if profile.takes_command and not s.command:
        raise UsageError("--command", f"the {s.agent} agent needs a command; e.g. --command 'make fmt'")
    if s.command and not profile.takes_command:
        raise UsageError("--command", "only the shell agent takes --command; drop it or use --agent 'shell'")
    return profile


#: The settings only an agent CLI uses (the shell agent runs its --command and nothing else).
CLI_ONLY_SETTINGS = ("model", "max_turns", "max_cost_usd", "allowed_tools", "disallowed_tools",
                     "append_system_prompt", "agent_version")


def _unused_by_agent(s: Settings, profile: AgentProfile) -> tuple[str, ...]:
    """The shell agent uses no model: a CLI-only setting given as a flag or a TOREN_ variable is refused; one a
    settings file holds (written for the CLI agents too, like a repository's toren.toml) is warned about."""
    from toren_action.config.settings import flag_name

    if profile.package:
        return ()
    warnings = []
    for key in CLI_ONLY_SETTINGS:
        if getattr(s, key) in (None, ()):
            continue
        source = s.source_of(key)
        if source.startswith(("--", "TOREN_")):
            raise UsageError(source, f"the {profile.name} agent runs its --command and uses no model, so "
                                     f"{flag_name(key)} would be ignored; drop it or use a CLI agent")
        warnings.append(f"{source} is ignored: the {profile.name} agent runs its --command and uses no model")
    return tuple(warnings)


def _task_source(s: Settings, cwd: str) -> tuple[IssueRef | None, Task | None]:
    """--spec (read now) or --issue (read from GitHub later), exactly one of them."""
    if s.spec and s.issue:
        raise UsageError("--spec", "give either --spec or --issue, not both")
    if not s.spec and not s.issue:
        raise UsageError("--spec", "no task given; pass --spec FILE (a markdown file) or --issue URL")
    issue = validate.issue_ref(s.issue) if s.issue else None
    task = from_spec(validate.spec_file(s.spec, cwd)) if s.spec else None
    return issue, task


def _target(s: Settings, cwd: str, environ: dict[str, str], issue: IssueRef | None,
            pr_ref: IssueRef | None = None) -> _Target:
    """--repo (or the issue's repository); a URL on the GitHub server is that repository on GitHub (token, pull
    request)."""
    if pr_ref is not None:
        from toren_action.git.github import Endpoints

        pr_endpoints = Endpoints.from_environ(environ)
        if pr_ref.host and pr_ref.host != urlsplit(pr_endpoints.server_url).netloc:
            raise UsageError("--pr", f"the pull request is on {pr_ref.host} but GITHUB_SERVER_URL is "
                                     f"{pr_endpoints.server_url}; set GITHUB_SERVER_URL and GITHUB_API_URL for that "
                                     "server")
        if s.repo not in (".", pr_ref.repo):
            raise UsageError("--repo", "with --pr the repository is the pull request's; leave --repo out")
        return _Target(RepoRef("github", pr_ref.repo), pr_endpoints.clone_url(pr_ref.repo), pr_endpoints)
    if issue and s.repo == ".":  # --repo defaults to the issue's repository
        repo = RepoRef("github", issue.repo)
    else:
        repo = validate.repo_spec(s.repo, cwd)
    endpoints = None
    origin = repo.location
    if repo.kind == "url":
        from toren_action.git.github import Endpoints

        m = re.match(re.escape(Endpoints.from_environ(environ).server_url) + r"/([\w.-]+/[\w.-]+?)(?:\.git)?/?$",
                     repo.location)
        if m:
            repo = RepoRef("github", m.group(1))
    if repo.kind == "github" or issue:
        from toren_action.git.github import Endpoints

        endpoints = Endpoints.from_environ(environ)
        if issue and issue.host and issue.host != urlsplit(endpoints.server_url).netloc:
            raise UsageError("--issue", f"the issue is on {issue.host} but GITHUB_SERVER_URL is "
                                        f"{endpoints.server_url}; set GITHUB_SERVER_URL and GITHUB_API_URL for "
                                        "that server")
        if repo.kind == "github":
            origin = endpoints.clone_url(repo.location)
        elif issue:
            raise UsageError("--repo", "with --issue the result goes to GitHub: leave --repo out (it defaults to "
                                       "the issue's repository) or give OWNER/NAME")
    return _Target(repo, origin, endpoints)


def _check_values(s: Settings, job_id: str) -> str:
    """The branch names, the base image, the timeout, the cost cap and the GPUs; returns the job's branch."""
    branch = validate.branch_name(s.branch or f"toren/{job_id}")
    validate.memory_size(s.memory, s.source_of("memory"))
    validate.image_ref(s.base_image)
    validate.positive_number(s.timeout_minutes, "--timeout", 10080)
    if s.max_cost_usd is not None:
        validate.positive_number(s.max_cost_usd, "--max-cost-usd")
    if s.gpus:
        validate.gpus_spec(s.gpus)
    _check_verify(s)
    return branch


#: The settings that only mean something with --verify.
VERIFY_OPTIONS = ("verify_junit", "verify_baseline", "verify_allow_preexisting", "verify_timeout", "verify_retries")


def _check_verify(s: Settings) -> None:
    """--verify-junit, --verify-baseline, ... need --verify; the glob stays in the repository; --verify-allow-
    preexisting needs a baseline to compare with."""
    if not s.verify:
        for key in VERIFY_OPTIONS:
            if getattr(s, key):
                raise UsageError(s.source_of(key), "needs --verify (the command whose results it is about); "
                                                   "add --verify CMD or drop it")
        return
    if s.verify_junit:  # the verification's module (and its XML parsers) only when there is one to check
        from toren_action.job.verify import check_junit_glob

        check_junit_glob(s.verify_junit, s.source_of("verify_junit"))
    if s.verify_allow_preexisting and not s.verify_baseline:
        raise UsageError(s.source_of("verify_allow_preexisting"), "needs --verify-baseline (the base commit's "
                                                                  "failures are what it allows); add it or drop this")
def _split_secrets(s: Settings, secrets: tuple[Secret, ...]) -> tuple[tuple[Secret, ...], tuple[Secret, ...]]:
    """--secret-for: (the agent's secrets, the setup's). ``NAME=setup`` gives that --secret to the setup only;
    ``setup`` alone gives it every --secret."""
    if not s.secret_for:
        return secrets, ()
    option = s.source_of("secret_for")
    if not secrets:
        raise UsageError(option, "there is no --secret to give to the setup; add --secret NAME")
    if "setup" in s.secret_for:
        return (), secrets
    names = {entry.split("=", 1)[0] for entry in s.secret_for}
    missing = sorted(names - {x.name for x in secrets})
    if missing:
        raise UsageError(option, f"{missing[0]}=setup names no --secret; add --secret {missing[0]} or drop it")
    return tuple(x for x in secrets if x.name not in names), tuple(x for x in secrets if x.name in names)


def _check_setup(s: Settings, repo: RepoRef) -> None:
    """The setup's cache-key globs stay inside the repository, its network is a network, and a local
    repository's setup script is no symlink out of it."""
    for pattern in s.setup_cache_key:
        validate.cache_key_pattern(pattern, s.source_of("setup_cache_key"))
    if s.setup_network:
        try:
            validate.network_spec(s.setup_network)
        except UsageError as exc:
            raise UsageError(s.source_of("setup_network"), str(exc).removeprefix("--network: ")) from None
    if repo.kind == "local" and not s.setup:
        validate.setup_script_in_repo(Path(repo.location), SETUP_SCRIPT)


def _network(s: Settings, profile: AgentProfile) -> tuple[str, tuple[str, ...]]:
    """The container's network, and --egress's allow-list (then the network is none, the proxy the only way)."""
    network = validate.network_spec(s.network or profile.default_network)
    if not s.egress:
        return network, ()
    from toren_action.sandbox import egress

    egress_hosts = egress.parse(s.egress)
    if not profile.package:
        raise UsageError("--egress", f"the {profile.name} agent's image has no Node for the egress relay; use "
                                     "--network none, or a CLI agent")
    if s.network and s.network != "none":
        raise UsageError("--egress", f"--egress runs the agent with no network of its own; drop --network "
                                     f"{s.network}")
    return "none", egress_hosts


def _agent_env(s: Settings, profile: AgentProfile) -> dict[str, str]:
    """--env: no name the profile sets, no name that looks like a credential (those go as --secret)."""
    env: dict[str, str] = {}
    reserved = set(profile.passthrough_env) | set(profile.environment(RunContext("", None, None, "")))
    for key, value in s.env:
        validate.env_entry(key, value)
        if key in reserved:
            raise UsageError(s.source_of("env"), f"{key} is set by the {profile.name} profile; export it on the host "
                                                 "instead (Toren passes it through and checks it)")
        if CREDENTIAL_NAME.search(key):
            raise UsageError("--env", f"{key} looks like a credential; pass it with --secret {key} so it reaches "
                                      "the container as a read-only file, not an environment variable")
        env[key] = value
    return env


def _model_access(s: Settings, profile: AgentProfile, environ: dict[str, str], home_dir: str, network: str,
                  secrets: tuple[Secret, ...]) -> _ModelAccess:
    """The agent's credentials, and whether its key stays on the host behind the key proxy."""
    credentials = resolve_credentials(profile, environ, home_dir)
    if not _use_key_proxy(s, profile, credentials, environ):
        passthrough, socket_mounts = _passthrough(profile, environ, network)
        return _ModelAccess(credentials, tuple(passthrough.items()),
                            secrets=tuple(c for c in credentials if c.name not in {x.name for x in secrets}),
                            mounts=socket_mounts)
    kp = profile.key_proxy
    assert kp is not None  # _use_key_proxy is False without one
    passthrough = {v: environ[v] for v in profile.passthrough_env  # the rest (a model name) still passes
                   if environ.get(v) and v != kp.base_url_env and not v.endswith("_UNIX_SOCKET")}
    upstream = environ.get(kp.base_url_env) or kp.default_url
    if re.match(r"^[a-z][a-z0-9+.-]*://[^/]*@", upstream, re.I):
        raise UsageError(kp.base_url_env, "the URL carries a user or password; give the gateway's credentials "
                                          "another way")
    if not re.match(r"^https?://[^/\s]+(/\S*)?$", upstream):
        raise UsageError(kp.base_url_env, f"{upstream!r} is not an http(s) URL")
    return _ModelAccess(credentials, tuple(passthrough.items()), proxy_key=credentials[0], upstream=upstream)


def _agent_ids(s: Settings) -> tuple[int, int]:
    """The uid and gid the agent runs as: ours, --agent-uid (root only), or an unused id when we are root."""
    uid, gid = os.getuid(), os.getgid()
    if s.agent_uid and s.agent_uid != uid and os.geteuid() != 0:
        raise UsageError(s.source_of("agent_uid"), f"only root can run the agent as another uid ({s.agent_uid}); "
                                                   "drop the setting or run Toren as root")
    if s.agent_uid:
        return s.agent_uid, s.agent_uid
    if uid == 0:
        uid = gid = unused_host_id()
    return uid, gid


def _origin_heads(origin: str, gh: GitHubPlan | None) -> RemoteHeads:
    """The origin's branches and default branch, read once (one ``git ls-remote``); an origin with none has no
    commit to start from."""
    from toren_action.git import workspace

    heads = workspace.remote_heads(origin, env=gh.git_env if gh else {}, redact=Redactor(gh.host_secrets if gh
                                                                                       else ()))
    if not heads.branches:
        raise UsageError("--repo", f"{origin} has no commits yet; commit something first (a job starts from a "
                                   "commit of a branch)")
    return heads


def _base_branch(s: Settings, origin: str, heads: RemoteHeads) -> str:
    """--base-branch, else the origin's default branch (its HEAD; main or master when HEAD is detached), which
    must be one of the origin's branches."""
    base = s.base_branch or heads.head or next((b for b in ("main", "master") if b in heads.branches), None)
    if base in heads.branches:
        return base
    names = sorted(heads.branches)
    listed = ", ".join(names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else "")
    if s.base_branch:
        raise UsageError(s.source_of("base_branch"), f"branch {base!r} does not exist in {origin}; its branches "
                                                     f"are {listed}")
    why = f"its default branch {base!r} does not exist" if base else "its HEAD names no branch"
    raise UsageError("--base-branch", f"{origin}: {why}; name the branch to start from with --base-branch (its "
                                      f"branches are {listed})")


#: How many of the user's uncommitted paths a warning names (then a count of the rest).
MAX_LISTED_PATHS = 5


def _local_checkout(s: Settings, repo: RepoRef, base: str, heads: RemoteHeads) -> tuple[str | None, tuple[str, ...]]:
    """For a local checkout: --base-ref's commit, and warnings about what the job does not start from (the
    uncommitted work the agent will not see; a checked-out commit that is not the base branch's tip)."""
    from toren_action.config.settings import shown
    from toren_action.core.errors import GitError
    from toren_action.core.texts import one_line
    from toren_action.git import workspace

    if repo.kind != "local":
        if s.base_ref:
            raise UsageError(s.source_of("base_ref"), "only a local --repo has a checked-out commit to start from; "
                                                      "use --base-branch for a remote one")
        return None, ()
    path = repo.location
    base_commit = None
    if s.base_ref:
        ref = s.base_ref
        try:
            if ref.startswith("-"):
                raise GitError(ref)
            base_commit = workspace.git("rev-parse", "--verify", "--quiet", "--end-of-options", f"{ref}^{{commit}}",
                                        cwd=path).strip()
        except GitError:
            raise UsageError(s.source_of("base_ref"), f"{shown(ref)} is not a commit of {path}; give a commit, "
                                                      "a branch or HEAD") from None
    checkout = workspace.checkout_state(path)  # one `git status`: the commit, the branch, what is uncommitted
    head, on = (checkout.head, checkout.branch) if checkout else (None, None)
    start = base_commit or heads.branches[base]
    start_text = f"{base_commit[:10]} (--base-ref {shown(s.base_ref or '')})" if base_commit else \
        f"{base} at {start[:10]}"
    warnings = []
    if head and not base_commit and head != start:
        if not on:
            warnings.append(f"HEAD is detached at {head[:10]}; the job starts from {start_text}, not from HEAD (pass "
                            "--base-ref HEAD to start from the checked-out commit)")
        elif not s.base_branch and on != base:
            warnings.append(f"you are on branch {on}; the job starts from {start_text} (pass --base-branch {on}, "
                            "or --base-ref HEAD for the checked-out commit)")
    left = [one_line(name)[:100] for name in checkout.changed] if checkout else []
    if left:
        names = ", ".join(left[:MAX_LISTED_PATHS]) + (f" and {len(left) - MAX_LISTED_PATHS} more"
                                                      if len(left) > MAX_LISTED_PATHS else "")
        warnings.append(f"{len(left)} uncommitted path(s) in {path} are left out (the agent sees only commits): "
                        f"{names}; the job starts from {start_text}")
    return base_commit, tuple(warnings)


def _push_lease(s: Settings, origin: str, branch: str, gh: GitHubPlan | None, existing: str | None) -> str | None:
    """Refuse a branch that exists at the origin, unless --force-branch or it is the branch of an open pull
    request Toren opened: then the commit it points to now, which the push may replace only if it still does."""
    if s.force_branch or not existing:
        return None
    if gh and gh.open_pr_from(branch):
        return existing  # the branch of a pull request Toren opened: this run updates it, if nobody pushed
    raise UsageError("--branch", f"{branch!r} already exists in {origin}; choose another name or pass "
                                 "--force-branch to overwrite it")


#: When Toren runs as root, the agent runs as the first id of this range that no host user or group has and no
#: subordinate id range (/etc/subuid, /etc/subgid) covers: nobody on the host shares the agent's identity, so
#: no host account can read its secrets through /proc, signal or trace it, or own its files.
AGENT_ID_RANGE = range(2_100_000_000, 2_100_100_000)


def unused_host_id(passwd=None, group=None, subid_files=("/etc/subuid", "/etc/subgid")) -> int:
    """The first id of AGENT_ID_RANGE that is neither a host uid nor a host gid (through NSS) nor subordinate."""
    import grp
    import pwd

    def taken(lookup, n: int) -> bool:
        try:
            lookup(n)
            return True
        except KeyError:
            return False

    ranges = []
    for path in subid_files:
        try:
            lines = Path(path).read_text("utf-8", errors="replace").splitlines()[:10_000]
        except OSError:
            continue
        for line in lines:
            parts = line.strip().split(":")
            if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
                ranges.append(range(int(parts[1]), int(parts[1]) + int(parts[2])))
    for n in AGENT_ID_RANGE:
        if not taken(passwd or pwd.getpwuid, n) and not taken(group or grp.getgrgid, n) \
                and not any(n in r for r in ranges):
            return n
    raise UsageError("TOREN_AGENT_UID", f"every id from {AGENT_ID_RANGE.start} to {AGENT_ID_RANGE.stop - 1} is a host "
                                    "user or group; set TOREN_AGENT_UID to an id no host account has")


@dataclass(frozen=True)
class GitHubPlan:
    """Where the result goes on GitHub, and how Toren authenticates there (on the host only)."""

    api: GitHub  # a GitHub plan always has a token
    endpoints: Endpoints
    token: Secret
    repo: str  # owner/name the branch is pushed to
    base_repo: str  # owner/name the pull request is opened on (the issue's repository)
    issue: IssueRef | None
    #: The pull request's base: --base-branch, else base_repo's default branch (not a fork's)
    pr_base: str | None = None
    #: --pr: the pull request this round works on
    pull: PullRequest | None = None

    @property
    def git_env(self) -> dict[str, str]:
        from toren_action.git.github import git_auth_env

        return git_auth_env(self.endpoints.server_url, self.token)

    @property
    def host_secrets(self) -> tuple[Secret, ...]:
        return (self.token,) if self.token else ()

    def open_pr_from(self, branch: str) -> bool:
        """True when ``branch`` has an open pull request that Toren opened (only those may be force-pushed)."""
        from toren_action.git.github import PR_MARKER, api_errors

        owner = self.repo.split("/")[0]
        with api_errors(f"pull requests of {self.base_repo}"):
            pulls = self.api.repo(self.base_repo).get_pulls(state="open", head=f"{owner}:{branch}")
            return any(PR_MARKER in (pr.body or "") for pr in pulls)


def _push_with_host_credentials(s: Settings, issue: IssueRef | None, environ: dict[str, str]) -> bool:
    """A GitHub repository with --no-pr, no --issue, no --actor and no token: nothing to ask GitHub's API, so the
    repository is a plain git remote and git pushes with the host's own credentials (a credential helper such
    as `gh auth setup-git`, or the git config's), as for any other URL. Never a review round (--pr): it reads
    the pull request through the API."""
    if not s.no_pr or issue or s.actor or s.pr:
        return False
    from toren_action.git.github import read_token

    return read_token(environ, s.github_token_file) is None


def _github_plan(s: Settings, endpoints: Endpoints, environ: dict[str, str], repo: RepoRef, issue: IssueRef | None,
                 task: Task | None, pr_ref: IssueRef | None = None) -> tuple[GitHubPlan, Task]:
    """GitHub's side, with the token (required: it reads the issue, pushes and opens the pull request): a --repo
    that is the issue's repository or an allowed fork of it, the actor's permission, the issue's task, and the
    pull request's base."""
    from toren_action.git.github import GitHub, api_errors, read_token

    token = read_token(environ, s.github_token_file)
    if token is None:
        needs = "read the issue" if issue else "check --actor" if s.actor else "open the pull request"
        raise MissingCredentials(f"GITHUB_TOKEN: GitHub needs a token to {needs} (and to push, unless --no-pr "
                                 "without --issue or --actor lets git use your own credentials); export "
                                 "GITHUB_TOKEN or GH_TOKEN, or pass --github-token-file")
    api = GitHub(endpoints, token)
    base_repo = issue.repo if issue else repo.location
    target = api.repo(repo.location if repo.kind == "github" else base_repo)
    if issue and repo.kind == "github" and repo.location.lower() != issue.repo.lower():
        parent = target.parent.full_name if getattr(target, "fork", False) and target.parent else None
        if parent is None or parent.lower() != issue.repo.lower():
            raise UsageError("--repo", f"{repo.location} is not {issue.repo} or a fork of it; leave --repo "
                                       "out to work on the issue's repository")
        if not s.allow_fork:
            raise ActorNotAllowed(f"--repo: {repo.location} is a fork; running on a fork's code is refused "
                                  "unless --allow-fork")
    if s.actor:
        api.check_actor(base_repo, s.actor, s.allow_actors)
    if pr_ref is not None:
        return _pull_plan(s, api, endpoints, token, pr_ref)
    if issue:
        task = api.issue_task(issue)
    with api_errors(f"repository {base_repo}"):
        pr_base = s.base_branch or api.repo(base_repo).default_branch
    assert task is not None
    return GitHubPlan(api, endpoints, token, repo.location if repo.kind == "github" else base_repo, base_repo,
                      issue, pr_base), task


def _pull_plan(s: Settings, api: GitHub, endpoints: Endpoints, token: Secret,
               ref: IssueRef) -> tuple[GitHubPlan, Task]:
    """--pr: the pull request (refused when closed, merged, from a fork or not Toren's), and the round's task:
    the issue it came from, when Toren opened it for one in the same repository, is its original task."""
    from toren_action.git import review

    pull = review.read_pull(api, ref, s.allow_any_pr)
    original = None
    if pull.toren and pull.source_issue:
        original = api.issue_task(IssueRef(ref.repo, pull.source_issue))
    elif pull.toren and pull.source_job:  # a spec's pull request: the task as its job kept it, on this host
        original = _kept_task(pull.source_job, endpoints.clone_url(ref.repo))
    task = review.pull_task(pull, s.instruction, original, review.earlier_rounds(pull.body))
    return GitHubPlan(api, endpoints, token, ref.repo, ref.repo, None, pull.base_branch, pull), task


def _kept_task(job_id: str, origin: str) -> Task | None:
    """The task a job of this host on ``origin`` ran (its redacted ``task.md``), or None."""
    from toren_action.core.errors import TorenError
    from toren_action.core.paths import job_dir, read_bounded, toren_home
    from toren_action.jobs.store import Store

    home = toren_home()
    if not (home / "toren.db").is_file():
        return None
    store = Store(home)
    try:
        job = store.get(job_id)
    except TorenError:
        return None
    finally:
        store.close()
    data = read_bounded(job_dir(home, job_id), "task.md", 200_000) if job.repo == origin else None
    if not data:
        return None
    body = data.decode("utf-8", errors="replace")
    return Task(title=title_of(body, fallback=f"job {job_id}"), body=body, source=f"the task of job {job_id}")


#: Linux limits one argument to 128 KiB; the prompt is one argument of the CLI.
MAX_PROMPT_BYTES = 100_000


def _check_agent_limits(profile: AgentProfile, s: Settings, task: Task) -> None:
    size = len(task.prompt().encode())
    if size > MAX_PROMPT_BYTES:
        raise UsageError("--spec", f"the task makes a prompt of {size} bytes; agent CLIs take at most "
                                   f"{MAX_PROMPT_BYTES}; shorten it, or commit the details to the repository and "
                                   "point to them")
    if s.max_cost_usd is None:
        return
    if not profile.meters_live:
        raise UsageError("--max-cost-usd", f"the {profile.name} CLI reports its token usage only when it finishes, "
                                           "so Toren cannot stop it on cost; use --max-turns and --timeout")
    from toren_action.agents.pricing import price_for

    model = s.model or profile.default_model
    if not profile.reports_cost and price_for(model, s.price_overrides()) is None:
        raise UsageError("--max-cost-usd", f"no price is known for model {model!r}, so its cost cannot be "
                                           "tracked; add it under `prices` in toren.toml")


def _use_key_proxy(s: Settings, profile: AgentProfile, credentials, environ: dict[str, str]) -> bool:
    """auto: whenever the profile can reach its API through the proxy and the credential is a plain API key."""
    spec = profile.key_proxy
    if s.key_proxy == "off" or spec is None:
        if s.key_proxy == "on" and spec is None:
            raise UsageError("--key-proxy", f"the {profile.name} agent uses no model API, so there is no key to "
                                            "keep; drop --key-proxy")
        return False
    usable = bool(credentials) and credentials[0].name == spec.credential and not any(
        environ.get(v) for v in profile.passthrough_env if v.endswith("_UNIX_SOCKET"))
    if s.key_proxy == "on" and not usable:
        raise UsageError("--key-proxy", f"the key proxy needs {spec.credential} (not a login or a socket of your "
                                        "own); set it, or use --key-proxy off")
    return usable


def resolve_credentials(profile: AgentProfile, environ: dict[str, str], home_dir: str) -> tuple[Secret, ...]:
    """The first credential the profile accepts that the host has: a variable, a file named by a variable,
    or a well-known login file. None found is an error before anything is built."""
    if not profile.credentials:
        return ()
    for cred in profile.credentials:
        if environ.get(cred.name):
            return (Secret(cred.name, environ[cred.name].strip()),)
        for var, path in ((cred.file_var, environ.get(cred.file_var or "")), (None, cred.default_file)):
            if not path:
                continue
            file = Path(path.replace("~", home_dir, 1) if path.startswith("~") else path)
            try:
                value = file.read_text("utf-8").strip()
            except (OSError, UnicodeDecodeError) as exc:
                if var:  # the user named this file: say what is wrong with it
                    raise MissingCredentials(f"{var}: cannot read {path} ({exc.__class__.__name__}); "
                                             "point it at a readable file holding the key") from None
                continue
            if value:
                return (Secret(cred.name, value),)
    first = profile.credentials[0]
    ways = [f"export {first.name}"] + [f"set {c.file_var} to a file holding it" for c in profile.credentials
                                       if c.file_var and c is first]
    others = [c.name for c in profile.credentials[1:] if not c.default_file]
    logins = [c.default_file for c in profile.credentials if c.default_file]
    hint = ", ".join(ways + ([f"or set {' or '.join(others)}"] if others else [])
                     + ([f"or log in so that {logins[0]} exists"] if logins else []))
    raise MissingCredentials(f"{first.name}: the {profile.name} agent needs credentials and none were found; {hint}")


def _engine_sockets(environ: dict[str, str]) -> set[Path]:
    paths = {Path(p) for p in ("/var/run/docker.sock", "/run/docker.sock", "/run/containerd/containerd.sock",
                               "/run/podman/podman.sock")}
    host = environ.get("DOCKER_HOST", "")
    if host.startswith("unix://"):
        paths.add(Path(host.removeprefix("unix://")))
    return {p.resolve() for p in paths} | {p for p in paths}


def _passthrough(profile: AgentProfile, environ: dict[str, str], network: str) -> tuple[dict[str, str],
                                                                                          tuple[Mount, ...]]:
    values: dict[str, str] = {}
    mounts: list[Mount] = []
    on_socket = any(environ.get(v) for v in profile.passthrough_env if v.endswith("_UNIX_SOCKET"))
    for var in profile.passthrough_env:
        value = environ.get(var)
        if not value:
            continue
        if var.endswith("_UNIX_SOCKET"):  # a model API on a host socket: mount it, point the CLI at the mount
            path = Path(value).expanduser()
            if not path.is_socket():
                raise UsageError(var, f"{value} is not a unix socket; start the server first or unset {var}")
            if path.resolve() in _engine_sockets(environ):
                raise UsageError(var, f"{value} is a container engine's socket; it would give the agent the host")
            target = f"{CONTAINER_SOCKETS}/{var.lower()}.sock"
            mounts.append(Mount(str(path.resolve()), target, False))
            value = target
        elif var.endswith("_BASE_URL") and re.match(r"^[a-z][a-z0-9+.-]*://[^/]*@", value, re.I):
            raise UsageError(var, "the URL carries a user or password; give the gateway's credentials another way "
                                  "(they would be visible in the container's configuration)")
        elif var.endswith("_BASE_URL") and _LOOPBACK.match(value) and network != "host" and not on_socket:
            raise UsageError(var, f"{value} is on this machine's loopback, which the container cannot reach on "
                                  f"network {network}; pass --network host (or serve it on a unix socket)")
        values[var] = value
    return values, tuple(mounts)


