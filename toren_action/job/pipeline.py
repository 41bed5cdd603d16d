"""The path of one job, stage by stage: plan (validate) -> workspace -> image -> agent -> verify -> commit
-> push. Progress leaves as events through a Reporter; the CLI (or the Action) decides how to show them."""

from __future__ import annotations

import os
import re
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

from toren_action.agents import get_profile
from toren_action.agents.base import AgentProfile, RunContext, Verdict, launch_command
from toren_action.config import validate
from toren_action.config.settings import Settings
from toren_action.config.task import Task, from_spec
from toren_action.config.validate import IssueRef, Mount, RepoRef
from toren_action.core import texts
from toren_action.core.errors import (
    ERROR_STATES,
    ActorNotAllowed,
    AgentAuthFailed,
    AgentFailed,
    AgentRateLimited,
    BudgetExceeded,
    Interrupted,
    MaxTurnsReached,
    MissingCredentials,
    TorenError,
    UsageError,
    VerificationFailed,
)
from toren_action.core.paths import job_dir, log_path, remove_tree, write_private
from toren_action.core.redact import Redactor, Secret, mask_tokens, redact_data
from toren_action.jobs.store import Store

CONTAINER_SECRETS = "/run/toren/secrets"
#: KeyboardInterrupt's text when a job's process is stopped because its worker died.
WORKER_LOST = "worker lost"
CONTAINER_TASK = "/run/toren/task"
CONTAINER_SOCKETS = "/run/toren/sockets"
_LOOPBACK = re.compile(r"^[a-z][a-z0-9+.-]*://(?:[^/@]*@)?(?:localhost|127\.[0-9.]+|\[::1\])(?:[:/]|$)", re.I)
#: How each verdict from an agent's stream ends the job.
VERDICT_ERRORS = {"auth": AgentAuthFailed, "rate_limit": AgentRateLimited, "max_turns": MaxTurnsReached,
                  "budget": BudgetExceeded, "error": AgentFailed}
_CREDENTIAL_NAME = re.compile(r"(?:^|_)(?:API_?KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIALS?)$|^GH_TOKEN$", re.I)


class Reporter(Protocol):
    def stage(self, state: str, detail: str) -> None: ...
    def line(self, text: str) -> None: ...


class NullReporter:
    def stage(self, state: str, detail: str) -> None:
        pass

    def line(self, text: str) -> None:
        pass


@dataclass(frozen=True)
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
    #: --egress: the only hosts the agent may reach, through the host's filtering proxy (egress.py).
    egress_hosts: tuple[str, ...] = ()

    @property
    def redactor(self) -> Redactor:
        """Masks the agent's secrets and the host-only ones (the GitHub token)."""
        return Redactor(self.secrets + (self.github.host_secrets if self.github else ())
                        + ((self.proxy_key,) if self.proxy_key else ()))


def make_plan(s: Settings, job_id: str, environ: dict[str, str] | None = None, cwd: str | None = None) -> Plan:
    """Validate every input (UsageError, exit 2, on the first problem). Changes nothing anywhere; it reads the
    origin's branches (to refuse an existing one) and, for GitHub, the repository, the issue and the actor's
    permission, after every local check has passed."""
    environ = dict(os.environ if environ is None else environ)
    cwd = cwd or os.getcwd()
    home_dir = environ.get("HOME", str(Path.home()))

    profile = get_profile(s.agent, s.agent_version)
    if profile.takes_command and not s.command:
        raise UsageError("--command", f"the {s.agent} agent needs a command; e.g. --command 'make fmt'")
    if s.command and not profile.takes_command:
        raise UsageError("--command", "only the shell agent takes --command; drop it or use --agent shell")

    if s.spec and s.issue:
        raise UsageError("--spec", "give either --spec or --issue, not both")
    if not s.spec and not s.issue:
        raise UsageError("--spec", "no task given; pass --spec FILE (a markdown file) or --issue URL")
    issue = validate.issue_ref(s.issue) if s.issue else None
    task = from_spec(validate.spec_file(s.spec, cwd)) if s.spec else None

    if issue and s.repo == "." :  # --repo defaults to the issue's repository
        repo = RepoRef("github", issue.repo)
    else:
        repo = validate.repo_spec(s.repo, cwd)
    endpoints = None
    origin = repo.location
    if repo.kind == "url":  # a URL on the GitHub server is that repository on GitHub (token, pull request)
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

    branch = validate.branch_name(s.branch or f"toren/{job_id}")
    if s.base_branch:
        validate.branch_name(s.base_branch, "--base-branch")
    validate.image_ref(s.base_image)
    validate.positive_number(s.timeout_minutes, "--timeout", 10080)
    if s.max_cost_usd is not None:
        validate.positive_number(s.max_cost_usd, "--max-cost-usd")
    if s.gpus:
        validate.gpus_spec(s.gpus)
    network = validate.network_spec(s.network or profile.default_network)
    egress_hosts: tuple[str, ...] = ()
    if s.egress:
        from toren_action.sandbox import egress

        egress_hosts = egress.parse(s.egress)
        if not profile.package:
            raise UsageError("--egress", f"the {profile.name} agent's image has no Node for the egress relay; use "
                                         "--network none, or a CLI agent")
        if s.network and s.network != "none":
            raise UsageError("--egress", f"--egress runs the agent with no network of its own; drop --network "
                                         f"{s.network}")
        network = "none"

    env: dict[str, str] = {}
    reserved = set(profile.passthrough_env) | set(profile.environment(RunContext("", None, None, "")))
    for key, value in s.env:
        validate.env_entry(key, value)
        if key in reserved:
            raise UsageError(s.source_of("env"), f"{key} is set by the {profile.name} profile; export it on the host "
                                                 "instead (Toren passes it through and checks it)")
        if _CREDENTIAL_NAME.search(key):
            raise UsageError("--env", f"{key} looks like a credential; pass it with --secret {key} so it reaches "
                                      "the container as a read-only file, not an environment variable")
        env[key] = value
    secrets = tuple(Secret(n, environ[validate.secret_name(n, environ)]) for n in s.secrets)
    mounts = tuple(validate.volume_spec(v, cwd, home_dir, s.allow_mounts) for v in s.volumes)
    if profile.package and task is not None:
        _check_agent_limits(profile, s, task)
    credentials = resolve_credentials(profile, environ, home_dir)
    proxy_key = None
    if _use_key_proxy(s, profile, credentials, environ):  # the key stays on the host, behind a socket
        proxy_key = credentials[0]
        passthrough = {v: environ[v] for v in profile.passthrough_env  # the rest (a model name) still passes
                       if environ.get(v) and v != profile.key_proxy.base_url_env and not v.endswith("_UNIX_SOCKET")}
        upstream = environ.get(profile.key_proxy.base_url_env) or profile.key_proxy.default_url
        if re.match(r"^[a-z][a-z0-9+.-]*://[^/]*@", upstream, re.I):
            raise UsageError(profile.key_proxy.base_url_env, "the URL carries a user or password; give the "
                                                             "gateway's credentials another way")
        if not re.match(r"^https?://[^/\s]+(/\S*)?$", upstream):
            raise UsageError(profile.key_proxy.base_url_env, f"{upstream!r} is not an http(s) URL")
        passthrough_items = (*passthrough.items(), ("_KEY_PROXY_UPSTREAM", upstream))
    else:
        secrets += tuple(c for c in credentials if c.name not in {x.name for x in secrets})
        passthrough, socket_mounts = _passthrough(profile, environ, network)
        mounts += socket_mounts
        passthrough_items = tuple(passthrough.items())

    ca_bundle = None
    if s.ca_bundle:
        ca_bundle = validate.ca_bundle_file(s.ca_bundle, s.source_of("ca_bundle"))

    uid, gid = os.getuid(), os.getgid()
    if s.agent_uid and s.agent_uid != uid and os.geteuid() != 0:
        raise UsageError(s.source_of("agent_uid"), f"only root can run the agent as another uid ({s.agent_uid}); "
                                                   "drop the setting or run Toren as root")
    if s.agent_uid:
        uid = gid = s.agent_uid
    elif uid == 0:
        uid = gid = unused_host_id()

    gh = None
    if endpoints is not None:  # the only part that talks to GitHub: after every local check
        gh, task = _github_plan(s, endpoints, environ, repo, issue, task)
        if profile.package and issue:
            _check_agent_limits(profile, s, task)
    assert task is not None

    from toren_action.git import workspace

    force, lease = s.force_branch, None
    git_env = gh.git_env if gh else {}
    existing = None if force else workspace.remote_branch_sha(origin, branch, env=git_env,
                                                               redact=Redactor(gh.host_secrets if gh else ()))
    if existing:
        if gh and gh.token and gh.open_pr_from(branch):
            lease = existing  # the branch of a pull request Toren opened: this run updates it, if nobody pushed
        else:
            raise UsageError("--branch", f"{branch!r} already exists in {origin}; choose another name or pass "
                                         "--force-branch to overwrite it")
    return Plan(s, repo, origin, task, profile, branch, mounts, env, secrets, network, ca_bundle,
                s.timeout_minutes * 60, uid, gid, tuple(c.name for c in credentials), passthrough_items,
                gh, force, lease, proxy_key, egress_hosts)


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

    api: object  # github.GitHub, or None without a token
    endpoints: object
    token: Secret | None
    repo: str  # owner/name the branch is pushed to
    base_repo: str  # owner/name the pull request is opened on (the issue's repository)
    issue: IssueRef | None
    #: The pull request's base: --base-branch, else base_repo's default branch (not a fork's)
    pr_base: str | None = None

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


def _github_plan(s: Settings, endpoints, environ: dict[str, str], repo: RepoRef, issue: IssueRef | None,
                 task: Task | None) -> tuple[GitHubPlan, Task]:
    from toren_action.git.github import GitHub, api_errors, read_token

    token = read_token(environ, s.github_token_file)
    if token is None:
        raise MissingCredentials("GITHUB_TOKEN: GitHub needs a token to read the issue, push and open the pull "
                                 "request; export GITHUB_TOKEN or GH_TOKEN, or pass --github-token-file")
    api = GitHub(endpoints, token) if token else None
    base_repo = issue.repo if issue else repo.location
    if api is not None:
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
        if issue:
            task = api.issue_task(issue)
        with api_errors(f"repository {base_repo}"):
            pr_base = s.base_branch or api.repo(base_repo).default_branch
    elif s.actor:
        raise MissingCredentials("GITHUB_TOKEN: checking --actor's permission needs a token")
    assert task is not None
    return GitHubPlan(api, endpoints, token, repo.location if repo.kind == "github" else base_repo, base_repo,
                      issue, pr_base), task


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


@dataclass
class Outcome:
    job_id: str
    state: str
    exit_code: int
    message: str = ""
    branch: str | None = None
    commit: str | None = None
    files: list[str] = field(default_factory=list)
    diffstat: str = ""
    duration_s: float = 0.0
    image_built: bool = False
    pushed_to: str | None = None
    usage: dict | None = None
    cost_usd: float | None = None
    cost_source: str | None = None
    pr_url: str | None = None


class _Tee:
    """The console (or the Action's) reporter, plus the progress comment on the issue (stages only)."""

    def __init__(self, reporter: Reporter, progress) -> None:
        self._reporter = reporter
        self._progress = progress

    def stage(self, state: str, detail: str) -> None:
        self._reporter.stage(state, detail)
        self._progress.stage(state, detail)

    def line(self, text: str) -> None:
        self._reporter.line(text)


def _progress_lines(outcome: Outcome, job_id: str) -> list[str]:
    from toren_action.git.github import html_log_hint

    lines = []
    if outcome.pr_url:
        lines.append(f"Pull request: {outcome.pr_url}")
    elif outcome.state == "succeeded" and outcome.pushed_to:
        lines.append(f"Branch {texts.code(outcome.branch or '')} pushed (no pull request: `--no-pr`).")
    if outcome.state not in ("succeeded", "no_changes"):
        # the issue may be public: no host paths
        lines.append("Reason: " + texts.inline(re.sub(r"(?:/[^\s;:,'\"()`]+){2,}", "<path>", outcome.message)))
        lines.append(html_log_hint(job_id))
    elif outcome.state == "no_changes":
        lines.append("The agent changed nothing; no pull request.")
    facts = [f"took {outcome.duration_s:.0f}s"]
    if outcome.usage:
        facts.append(f"{outcome.usage['turns']} turns")
    if outcome.cost_usd is not None:
        facts.append(f"cost ${outcome.cost_usd:.4f}")
    lines.append("_" + ", ".join(facts) + "._")
    return lines


#: The most files one change may add or modify (a flood of empty files passes any size cap).
MAX_CHANGE_FILES = 10_000


def _check_change_size(ws, max_mb: float) -> None:
    """Refuse, before git reads a byte of it, a change larger than ``max_mb`` MiB in all (the sizes of every file
    the commit would take: changed, added, untracked and not ignored; sparse files at their full length) or of
    more than MAX_CHANGE_FILES files."""
    from toren_action.core.errors import PolicyBlocked
    from toren_action.git import workspace

    limit = max_mb * 1024 * 1024
    out = workspace.git("status", "--porcelain=v1", "-z", "--untracked-files=all", "--no-renames",
                        "--ignore-submodules=all", cwd=ws.path, trusted=True)
    total, biggest, count = 0, ("", 0), 0
    for entry in out.split("\0"):
        if len(entry) < 4 or "D" in entry[:2]:
            continue
        count += 1
        if count > MAX_CHANGE_FILES:
            raise PolicyBlocked(f"the change touches more than {MAX_CHANGE_FILES} files; nothing was committed or "
                                f"pushed (the work tree is kept in {ws.path})")
        try:
            info = os.lstat(os.path.join(ws.path, entry[3:]))
        except OSError:
            continue
        total += info.st_size
        biggest = max(biggest, (entry[3:], info.st_size), key=lambda b: b[1])
        if total > limit:
            raise PolicyBlocked(f"the change is over {max_mb:g} MiB (--max-change-mb; {biggest[0]!r} alone is "
                                f"{biggest[1] / (1 << 20):.1f} MiB); nothing was committed or pushed "
                                f"(the work tree is kept in {ws.path})")


def _committed_tree(jdir: Path, ws, change, name: str, paths: list[str] | None = None) -> Path:
    """A fresh directory holding the commit's tree (or ``paths`` of it), written from its objects."""
    from toren_action.git import snapshot

    dest = jdir / name
    remove_tree(dest)
    snapshot.export_commit(ws.path, change.commit, dest, paths)
    return dest


def _verify(plan: Plan, store: Store, job_id: str, jdir: Path, ws, change, spec, docker, enter, log) -> None:
    """--verify in a container like the agent's, on a clean copy of exactly the commit about to be pushed (no
    ignored or untracked file of the agent's counts), without the agent's secrets and sockets."""
    from toren_action.git import workspace
    from toren_action.sandbox import container

    s = plan.settings
    enter("verifying", s.verify)
    tree = _committed_tree(jdir, ws, change, "verify-tree")
    workspace.give_tree_to(tree, plan.uid, plan.gid)
    # the user's own volumes read-only: what the agent wrote there (a .pth, a cache) cannot sway the check either
    mounts = [Mount(str(tree), m.target, m.read_only) if m.target == "/workspace"
              else Mount(m.source, m.target, True) if m in plan.mounts else m for m in spec.mounts
              if m.target != CONTAINER_SECRETS and not m.target.startswith(CONTAINER_SOCKETS + "/")]
    vspec = container.ContainerSpec(**{
        **spec.__dict__, "command": ["/bin/sh", "-c", s.verify], "name": f"toren-{job_id}-verify",
        "role": "verification", "mounts": mounts,
        "environment": {k: v for k, v in spec.environment.items() if k != "TOREN_SECRETS_DIR"}})
    try:
        vres = container.run(docker, vspec, log.line)
    finally:
        remove_tree(tree)
    store.add_event(job_id, "verify", {"command": s.verify, "exit_code": vres.exit_code, "commit": change.commit})
    if vres.exit_code != 0:
        raise VerificationFailed(f"--verify exited with code {vres.exit_code} on commit {change.commit[:10]}; "
                                 f"nothing was pushed (the change is kept in {ws.path})")


def _code_scan(plan: Plan, store: Store, job_id: str, jdir: Path, ws, change, log) -> list:
    from toren_action.core.errors import PolicyBlocked
    from toren_action.guard import codescan

    tree = _committed_tree(jdir, ws, change, "scan-tree", change.files)
    try:
        findings, what = codescan.scan(tree, change.files)
    finally:
        remove_tree(tree)
    log.line(f"code scan: {what}")
    for f in findings:
        log.line(f"code scan: {plan.redactor(str(f))}")
    if findings:
        store.add_events(job_id, [("code_scan", {"tool": f.tool, "severity": f.severity, "path": f.path,
                                                 "line": f.line, "test": f.test}) for f in findings])
    blocked = codescan.blocking(findings, plan.settings.fail_on)
    if blocked:
        raise PolicyBlocked(f"the code scan found {len(blocked)} finding(s) at or above {plan.settings.fail_on} "
                            f"(--fail-on): {plan.redactor(str(blocked[0]))}; nothing was pushed")
    return findings


def _enforce_policy(plan: Plan, store: Store, job_id: str, jdir: Path, ws, change, log) -> None:
    """The diff policy, on the host, on the commit about to be pushed (see policy.py)."""
    import json as _json

    from toren_action.core.errors import PolicyBlocked
    from toren_action.git import workspace
    from toren_action.guard import policy

    s = plan.settings
    allow = set(s.allow_policy) | ({"workflow"} if s.allow_workflow_changes else set())
    rules = policy.Policy(frozenset(allow), s.protected_paths, int(s.max_file_mb * 1024 * 1024))
    findings = policy.check(lambda *a: workspace.git(*a, cwd=ws.path, trusted=True), ws.base_commit, change.commit,
                            str(ws.path), rules, plan.redactor.mask_values)
    if not findings:
        return
    report = [plan.redactor(mask_tokens(str(f))) for f in findings]
    (jdir / "policy.json").write_text(_json.dumps([{**f.to_dict(), "detail": plan.redactor(
        mask_tokens(f.detail))} for f in findings], indent=2), "utf-8")
    store.add_events(job_id, [("policy", {"rule": f.rule, "path": plan.redactor(f.path), "line": f.line})
                              for f in findings])
    for line in report:
        log.line(f"policy: {line}")
    raise PolicyBlocked(plan.redactor(mask_tokens(policy.describe(findings)))
                        + f"; the change is kept in {ws.path}")


def _wants_ai_summary(plan: Plan) -> bool:
    from toren_action.job import summary

    mode = plan.settings.ai_summary
    return mode == "always" or (mode == "auto" and plan.profile.name == "claude" and summary.available())


def _pr_ai_summary(plan: Plan, store: Store, job_id: str, jdir: Path, change, log) -> str | None:
    """An AI summary of the change for the pull request body, when the agent left none."""
    from toren_action.job import summary

    facts = {"task": plan.task.title, "task_source": plan.task.source, "files_changed": change.files,
             "diffstat": change.diffstat, "verify": plan.settings.verify}
    diff = (jdir / "change.diff").read_text("utf-8")
    try:
        made = summary.ai_summary(facts, store.events(job_id), diff, plan.settings.summary_model,
                                  prices=plan.settings.price_overrides())
    except Exception as exc:  # noqa: BLE001 - a summary is never worth failing a finished job
        log.line(f"toren: no AI summary for the pull request: {exc}")
        return None
    store.add_event(job_id, "summary", {"model": made.model, "cost_usd": made.cost_usd, "for": "pull request"})
    return plan.redactor(made.text) + f"\n\n_(Summary written by {made.model}; the agent left none.)_"


def _pr_title(plan: Plan, agent_summary: str | None) -> str:
    first = (agent_summary or "").strip().splitlines()[:1]
    if first and first[0].startswith("# ") and len(first[0]) > 3:
        return texts.title(plan.redactor(first[0][2:].strip()[:120]))
    return texts.title(plan.task.title)


#: The most a job's log keeps of its lines (the agent's output, mostly); stages are always kept.
MAX_LOG_BYTES = 50 * 1024 * 1024


class _JobLog:
    """The job's log file: every line redacted, then its control characters made visible, before it is written
    or shown. Past ``max_bytes`` of lines, one
    marker says where the log was cut and further lines are dropped (from the file and the reporter); stages
    and the end state are still written, so an agent printing without end cannot fill the disk."""

    def __init__(self, path: Path, redact: Redactor, reporter: Reporter, started: float,
                 max_bytes: int | None = None) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115 - closed in close()
        self._redact = redact
        self._reporter = reporter
        self._started = started
        self._max = self._left = MAX_LOG_BYTES if max_bytes is None else max_bytes

    def stage(self, state: str, detail: str) -> None:
        detail = texts.one_line(self._redact(detail))  # redacted first: an escape could hide a secret's value
        self._fh.write(f"[{time.monotonic() - self._started:7.2f}s] == {state}: {detail}\n")
        self._reporter.stage(state, detail)

    def line(self, text: str) -> None:
        if self._left <= 0:
            return
        text = texts.terminal(self._redact(text))  # no control sequence reaches a terminal that shows the log
        self._left -= len(text.encode("utf-8", "replace")) + 1
        if self._left <= 0:
            text = (f"toren: the log reached its cap of {self._max // (1024 * 1024)} MiB here; the rest of the "
                    "agent's output is not kept (stages and the outcome still are)")
        self._fh.write(text + "\n")
        self._reporter.line(text)

    def close(self) -> None:
        self._fh.close()


def run_job(plan: Plan, store: Store, home: Path, job_id: str, reporter: Reporter | None = None,
            docker=None) -> Outcome:
    """Run one job to its end state; never leaves a container behind or a job in a running state.
    ``docker`` is a client the caller already has (one is made when it is None)."""
    from toren_action.git import workspace
    from toren_action.sandbox import container, image

    s = plan.settings
    started = time.monotonic()
    jdir = job_dir(home, job_id)
    jdir.mkdir(parents=True, exist_ok=True, mode=0o700)
    gh = plan.github
    progress = None
    if gh and gh.api and gh.issue:  # one comment on the issue, edited at each stage
        progress = gh.api.progress(gh.base_repo, gh.issue.number, job_id)
        reporter = _Tee(reporter or NullReporter(), progress)
    git_env = gh.git_env if gh else {}
    log = _JobLog(log_path(home, job_id), plan.redactor, reporter or NullReporter(), started)
    secrets_dir = jdir / "secrets"
    outcome = Outcome(job_id, "failed", 1, branch=plan.branch)
    store.update(job_id, started_at=time.time(), pid=os.getpid())
    state = "queued"

    def enter(new_state: str, detail: str) -> None:
        nonlocal state
        state = new_state
        store.set_state(job_id, new_state)
        log.stage(new_state, detail)

    try:
        if progress:
            progress.stage("queued", "")
        enter("preparing", f"cloning {plan.origin} into the job workspace")
        mirror = workspace.update_mirror(home, plan.origin, env=git_env, redact=plan.redactor)
        ws = workspace.create_clone(mirror, plan.origin, jdir / "workspace", s.base_branch, plan.branch)
        store.update(job_id, base_commit=ws.base_commit)
        log.stage("preparing", f"branch {plan.branch} from {ws.base_branch} at {ws.base_commit[:10]}")
        workspace.give_tree_to(ws.path, plan.uid, plan.gid)
        mounts = _job_mounts(plan, jdir, ws.path, secrets_dir)

        enter("building", f"agent image on {s.base_image}")
        docker = docker or container.client()
        base_id, arch = image.resolve_base(docker, s.base_image, s.pull, log.line)
        node_dir, node_label = None, ""
        if plan.profile.package:
            from toren_action.sandbox import toolchain

            node_arch = toolchain.wheel_arch(arch)
            node_dir = toolchain.node_runtime(node_arch, log.line)
            node_label = f"{toolchain.NODE_VERSION}-{node_arch}"
        recipe = image.ImageRecipe(base_id, plan.profile, plan.uid, plan.gid, image.read_ca_bundle(plan.ca_bundle),
                                   node_dir, node_label)
        tag, built = image.ensure_image(docker, recipe, log.line)
        outcome.image_built = built
        store.update(job_id, image=tag)
        log.stage("building", f"{'built' if built else 'reusing'} {tag}")

        from toren_action.agents.base import KEY_RELAY_PORT

        proxy = None
        passthrough = dict(plan.passthrough)
        relays: list[tuple[int, str]] = []  # (loopback port in the container, mounted socket) for the Node relay
        key_proxy_url = None
        if plan.proxy_key is not None:
            from urllib.parse import urlsplit

            from toren_action.sandbox.keyproxy import KeyProxy

            kp = plan.profile.key_proxy
            upstream = passthrough.pop("_KEY_PROXY_UPSTREAM")
            proxy = KeyProxy(upstream, plan.proxy_key, kp.header, owner=(plan.uid, plan.gid), value=kp.value,
                             keep_path=kp.socket_env is not None).start()
            target = f"{CONTAINER_SOCKETS}/model-api.sock"
            mounts.append(Mount(str(proxy.socket_path), target, False))
            if kp.socket_env:  # the CLI speaks HTTP over the socket itself
                passthrough[kp.socket_env] = target
            else:  # a TCP-only CLI: its base URL is a relay on the container's loopback
                relays.append((KEY_RELAY_PORT, target))
                key_proxy_url = f"http://localhost:{KEY_RELAY_PORT}{urlsplit(upstream).path.rstrip('/')}"
            log.stage("building", f"model API key kept on the host: the agent reaches {upstream} through Toren's "
                                  "key proxy")
        ctx = RunContext(f"{CONTAINER_TASK}/prompt.md", s.model, s.command, CONTAINER_SECRETS, plan.credentials,
                         s.max_turns, s.max_cost_usd, s.allowed_tools, s.disallowed_tools, s.append_system_prompt,
                         passthrough, key_proxy=proxy is not None, key_proxy_url=key_proxy_url)
        env = {**plan.env, **plan.profile.environment(ctx), "TOREN_JOB_ID": job_id, "TOREN_TASK_FILE": ctx.prompt_file}
        if plan.secrets:
            env["TOREN_SECRETS_DIR"] = CONTAINER_SECRETS
        for name, content in plan.profile.task_files(ctx).items():
            path = jdir / "task" / name
            path.write_text(content, "utf-8")
            path.chmod(0o444)
        command = plan.profile.command(ctx)
        if plan.profile.package:  # a CLI: the launcher fills its secret variables and the prompt argument
            command = launch_command(command, plan.profile.secret_environment(ctx))
        egress_proxy = None
        if plan.egress_hosts:
            from toren_action.sandbox import egress

            egress_proxy = egress.EgressProxy(plan.egress_hosts, owner=(plan.uid, plan.gid)).start()
            target = f"{CONTAINER_SOCKETS}/egress.sock"
            mounts.append(Mount(str(egress_proxy.socket_path), target, False))
            relays.append((egress.RELAY_PORT, target))
            proxy_url = f"http://127.0.0.1:{egress.RELAY_PORT}"
            env.update(HTTPS_PROXY=proxy_url, HTTP_PROXY=proxy_url, https_proxy=proxy_url, http_proxy=proxy_url,
                       NO_PROXY="localhost", no_proxy="localhost")
            log.stage("building", f"egress: only {', '.join(plan.egress_hosts)} through the host's proxy")
        if relays:  # loopback ports in the container that lead to the host's proxies (a few lines of Node)
            from toren_action.agents.base import NODE_PREFIX
            from toren_action.sandbox import egress

            relay = jdir / "task" / "relay.js"
            relay.write_text(egress.RELAY_JS, "utf-8")
            relay.chmod(0o444)
            starts = "".join(f"{NODE_PREFIX}/bin/node {CONTAINER_TASK}/relay.js {port} {target} & "
                             for port, target in relays)
            command = ["/bin/sh", "-c", starts + 'sleep 0.3; exec "$@"', "toren-relay", *command]
        spec = container.ContainerSpec(
            image=tag, command=command, job_id=job_id, user=f"{plan.uid}:{plan.gid}",
            mounts=mounts, environment=env, network=plan.network, gpus=s.gpus, memory=s.memory, cpus=s.cpus,
            pids_limit=s.pids_limit, timeout_s=plan.timeout_s, name=f"toren-{job_id}",
        )
        enter("running", f"{plan.profile.name} agent in {tag} (network {plan.network})")

        parser = plan.profile.parser()
        stopped: list[Verdict] = []
        prices = s.price_overrides()

        def show(line: str) -> bool:
            """One line of the agent's output: log it readably; True stops the container."""
            try:
                for text in parser.feed(line):
                    log.line(text)
            except Exception as exc:  # noqa: BLE001 - keep reading (and enforcing budgets) whatever one line does
                log.line(f"toren: could not read a line of agent output ({exc.__class__.__name__}): {line[:300]}")
            if stopped:
                return False
            verdict = parser.stop or (None if parser.finished else _budget_verdict(plan, parser, prices))
            if progress:
                progress.turns(parser.usage.turns)
            if verdict:
                stopped.append(verdict)
                log.line(f"toren: stopping the agent: {verdict.message}")
                return True
            return False

        try:
            _write_secrets(plan, secrets_dir)
            result = container.run(docker, spec, show, on_start=lambda cid: store.update(job_id, container_id=cid))
        finally:
            remove_tree(secrets_dir)  # 0500 while the agent ran: remove_tree makes it writable first
            if proxy is not None:
                proxy.stop()
            if egress_proxy is not None:
                egress_proxy.stop()
                for host in sorted(set(egress_proxy.refused)):
                    log.line(f"egress: refused {host} (a host, port or Host header off the allow-list)")
                if egress_proxy.refused:
                    store.add_event(job_id, "egress", {"refused": sorted(set(egress_proxy.refused)),
                                                       "passed": sorted(set(egress_proxy.passed))})
            outcome.usage, outcome.cost_usd, outcome.cost_source = _record_usage(
                store, job_id, plan, parser, prices, log)
        store.update(job_id, exit_code=result.exit_code)
        verdict = stopped[0] if stopped else parser.verdict
        if verdict is None and result.exit_code != 0:
            verdict = plan.profile.exit_verdict(result.exit_code)
        partial = False
        if verdict is not None:
            error = VERDICT_ERRORS[verdict.kind](verdict.message + f"; see `toren logs {job_id}`")
            if not (s.push_partial and verdict.kind in ("budget", "max_turns")):
                raise error
            partial = error
            log.stage(ERROR_STATES[type(error)], f"{verdict.message}; --push-partial: delivering the work so far")
        elif result.exit_code != 0:
            raise AgentFailed(f"the {plan.profile.name} agent exited with code {result.exit_code}; "
                              f"see `toren logs {job_id}`")

        agent_summary = workspace.read_agent_summary(ws)
        _check_change_size(ws, s.max_change_mb)
        change = workspace.commit_all(ws, _commit_message(plan, job_id), s.author_name, s.author_email)
        if change is not None:
            (jdir / "change.diff").write_text(plan.redactor(workspace.last_patch(ws, change.commit)), "utf-8")
        if change is None and partial:
            _fail(store, log, job_id, ERROR_STATES[type(partial)], f"{partial}; it had changed nothing, so nothing "
                  "was pushed", outcome, partial.exit_code)
            remove_tree(ws.path)
            return outcome
        if change is None:
            enter("no_changes", "the agent left the tree unchanged; nothing to commit")
            outcome.state, outcome.exit_code, outcome.message = "no_changes", 0, "the agent changed nothing"
            remove_tree(ws.path)
            return outcome

        # From here on every check judges the commit, never the agent's work tree, and the push sends that commit.
        _enforce_policy(plan, store, job_id, jdir, ws, change, log)
        code_findings = _code_scan(plan, store, job_id, jdir, ws, change, log)
        if s.verify:
            _verify(plan, store, job_id, jdir, ws, change, spec, docker, enter, log)
        outcome.commit, outcome.files = change.commit, redact_data(change.files, plan.redactor)
        outcome.diffstat = plan.redactor(change.diffstat)
        title_summary = agent_summary  # the pull request's title comes from the agent, never from a model's summary
        if agent_summary is None and _wants_ai_summary(plan):
            agent_summary = _pr_ai_summary(plan, store, job_id, jdir, change, log)
        store.update(job_id, result_commit=change.commit, files_changed=redact_data(change.files, plan.redactor),
                     diffstat=plan.redactor(change.diffstat))  # a file's name is the agent's text too
        pr_body = plan.redactor(_pr_body(plan, job_id, change, agent_summary, outcome, code_findings))
        (jdir / "pr.md").write_text(pr_body, "utf-8")

        enter("pushing", f"{plan.branch} to {plan.origin}")
        workspace.push(ws, plan.branch, plan.force_push, env=git_env, redact=plan.redactor, lease=plan.push_lease,
                       commit=change.commit)
        outcome.pushed_to = plan.origin
        if gh and gh.api and not s.no_pr and not partial:
            enter("pull_request", f"on {gh.base_repo} from {plan.branch} into {ws.base_branch}")
            outcome.pr_url, number, created = gh.api.open_or_update_pr(
                gh.base_repo, gh.repo, plan.branch, gh.pr_base or ws.base_branch,
                plan.redactor(_pr_title(plan, title_summary)), pr_body, s.draft, s.labels, s.reviewers, s.assignees)
            store.update(job_id, pr_url=outcome.pr_url)
            for warning in gh.api.warnings:
                log.line(f"toren: warning: {warning}")
            log.stage("pull_request", f"{'opened' if created else 'updated'} #{number}: {outcome.pr_url}")
        if partial:
            message = f"{partial}; the work so far was pushed to {plan.branch} at {change.commit[:10]}"
            _fail(store, log, job_id, ERROR_STATES[type(partial)], message, outcome, partial.exit_code)
            remove_tree(ws.path)
            return outcome
        enter("succeeded", f"{plan.branch} at {change.commit[:10]}, {len(change.files)} file(s) changed")
        outcome.state, outcome.exit_code = "succeeded", 0
        remove_tree(ws.path)
        return outcome
    except KeyboardInterrupt as exc:
        if str(exc) == WORKER_LOST:
            _fail(store, log, job_id, "failed", "worker lost: the background worker died; the container was "
                                                "removed", outcome, 1)
        else:
            _fail(store, log, job_id, "cancelled",
                  "interrupted (Ctrl-C or a termination signal); the container was removed", outcome,
                  Interrupted.exit_code)
        raise Interrupted("interrupted; the container was removed and the job marked cancelled") from None
    except tuple(ERROR_STATES) as exc:  # the agent's own end: timed out, budget, bad key, rate limit, max turns
        _fail(store, log, job_id, ERROR_STATES[type(exc)], str(exc), outcome, exc.exit_code)
        return outcome
    except TorenError as exc:
        _fail(store, log, job_id, "failed", f"{state}: {exc}", outcome, exc.exit_code)
        return outcome
    except Exception as exc:  # a bug: keep the traceback in the log, one line for the user
        log.line(traceback.format_exc())
        _fail(store, log, job_id, "failed", f"{state}: internal error: {exc.__class__.__name__}: {exc}", outcome, 1)
        return outcome
    finally:
        outcome.duration_s = time.monotonic() - started
        if progress:
            progress.finish(outcome.state, [plan.redactor(x) for x in _progress_lines(outcome, job_id)])
        log.close()


def _budget_verdict(plan: Plan, parser, prices) -> Verdict | None:
    s = plan.settings
    if s.max_cost_usd:
        from toren_action.agents.pricing import cost_usd

        cost, _ = cost_usd(_with_model(parser.usage, plan), prices)
        if cost is not None and cost > s.max_cost_usd:
            return Verdict("budget", f"the agent's cost ${cost:.4f} passed --max-cost-usd {s.max_cost_usd:g}")
    if s.max_turns and not plan.profile.enforces_max_turns and parser.usage.turns > s.max_turns:
        return Verdict("max_turns", f"the agent started turn {parser.usage.turns}, past --max-turns {s.max_turns}")
    return None


def _with_model(usage, plan: Plan):
    if not usage.model:
        usage.model = plan.settings.model or plan.profile.default_model
    return usage


def _record_usage(store: Store, job_id: str, plan: Plan, parser, prices, log: _JobLog):
    """Store the turns, tokens, cost and the parsed events; log one line about them."""
    from toren_action.agents.pricing import cost_usd

    if not plan.profile.package:  # the shell agent uses no model
        return None, None, None
    usage = _with_model(parser.usage, plan)
    cost, source = cost_usd(usage, prices)
    data = usage.to_dict()
    store.update(job_id, usage=data, turns=usage.turns, cost_usd=cost, cost_source=source)
    redact = plan.redactor
    store.add_events(job_id, [(kind, redact_data(item, redact)) for kind, item in parser.events])
    money = f"${cost:.4f}" + (" (estimated from the price table)" if source == "price-table" else "") \
        if cost is not None else "cost unknown (no price for this model; set `prices` in the config)"
    log.stage("running", f"{usage.turns} turn(s), {usage.tool_calls} tool call(s), {usage.input_tokens} tokens in "
                         f"({usage.cache_read_tokens} cached), {usage.output_tokens} out, {money}")
    return data, cost, source


def _fail(store: Store, log: _JobLog, job_id: str, state: str, message: str, outcome: Outcome, code: int) -> None:
    log.stage(state, message)
    store.set_state(job_id, state, error=log._redact(message))
    outcome.state, outcome.exit_code, outcome.message = state, code, log._redact(message)


def _job_mounts(plan: Plan, jdir: Path, ws_path: Path, secrets_dir: Path) -> list[Mount]:
    from toren_action.git import workspace

    task_dir = jdir / "task"
    task_dir.mkdir(exist_ok=True)
    prompt = task_dir / "prompt.md"
    prompt.write_text(plan.task.prompt(_repo_instructions(ws_path)), "utf-8")
    prompt.chmod(0o444)
    mounts = [
        Mount(str(ws_path), "/workspace", False),
        # the agent may read .git (status, diff, log) but never write it: no hooks, no config
        Mount(str(ws_path / ".git"), "/workspace/.git", True),
        Mount(str(task_dir), CONTAINER_TASK, True),
    ]
    shared = workspace.alternates_mount(ws_path)
    if shared:
        mounts.append(Mount(shared[0], shared[1], True))
    if plan.secrets:  # written by _write_secrets just before the agent starts, removed as soon as it ends
        mounts.append(Mount(str(secrets_dir), CONTAINER_SECRETS, True))
    return mounts + list(plan.mounts)


def _write_secrets(plan: Plan, secrets_dir: Path) -> None:
    """The agent's secrets as read-only files for its container; run_job removes them when the container is gone,
    before any end state is written (so a crash after that leaves none on disk)."""
    if not plan.secrets:
        return
    secrets_dir.mkdir(mode=0o700, exist_ok=True)
    for secret in plan.secrets:
        write_private(secrets_dir / secret.name, secret.reveal(), 0o400,
                      (plan.uid, plan.gid) if os.geteuid() == 0 else None)
    if os.geteuid() == 0:
        os.chown(secrets_dir, plan.uid, plan.gid)
    secrets_dir.chmod(0o500)


def _repo_instructions(ws_path: Path) -> str | None:
    """AGENTS.md, CLAUDE.md and GEMINI.md from the repository's root, those present, 20 000 characters at most."""
    from toren_action.core.paths import read_bounded

    parts = []
    for name in ("AGENTS.md", "CLAUDE.md", "GEMINI.md"):
        data = read_bounded(ws_path, name, 80_000)  # a regular file, no link; a huge or sparse one costs 80 kB
        if data is not None:
            parts.append(f"From {name}:\n\n" + data.decode("utf-8", errors="replace").strip())
    return "\n\n".join(parts)[:20_000] or None


def _commit_message(plan: Plan, job_id: str) -> str:
    # the subject on one line (no forged trailer), nothing in it or the task's source that GitHub would act on
    return (f"{texts.title(plan.task.title)}\n\nTask: {texts.plain(texts.one_line(plan.task.source))}\n"
            f"Agent: {plan.profile.name}"
            + (f" ({plan.settings.model})" if plan.settings.model else "")
            + f"\nToren-Job: {job_id}\n")


def _short_stat(diffstat: str, lines: int = 60) -> str:
    """A diffstat of at most ``lines`` files, with git's closing total line."""
    rows = diffstat.splitlines()
    if len(rows) <= lines + 1:
        return diffstat
    return "\n".join([*rows[:lines], f" ... and {len(rows) - 1 - lines} more file(s)", rows[-1]])


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + "\n\n_(cut: the summary was longer)_"


def _pr_body(plan: Plan, job_id: str, change, agent_summary: str | None, outcome: Outcome,
             code_findings: list | None = None) -> str:
    """The pull request's body. Every text that comes from the task, the repository or the agent is redacted and
    then made inert (texts.py): it renders as written and cannot mention, close or forge anything."""
    from toren_action.git.github import PR_MARKER

    r = plan.redactor
    verify = f"{texts.code(r(plan.settings.verify))} passed" if plan.settings.verify else \
        "not configured (`--verify`)"
    gh = plan.github
    closes = [f"Closes #{gh.issue.number}", ""] if gh and gh.issue and gh.issue.repo == gh.base_repo else []
    usage = outcome.usage
    cost = ""
    if usage:
        money = f"${outcome.cost_usd:.4f}" if outcome.cost_usd is not None else "unknown cost"
        cost = f"- Usage: {usage['turns']} turns, {usage['tool_calls']} tool calls, {money}"
    model = (usage or {}).get("model") or plan.settings.model
    findings = [f"- {texts.code(r(f'{f.path}:{f.line}'))} {texts.inline(r(f'{f.severity.lower()} {f.test}: {f.text}'))}"
                for f in (code_findings or [])[:20]]
    return "\n".join([
        f"# {texts.inline(r(plan.task.title))}",
        "",
        *closes,
        "## Summary",
        texts.block(_cut(r(agent_summary), 12_000)) if agent_summary else "_The agent left no summary._",
        "",
        "## Changes",
        texts.fence(r(_short_stat(change.diffstat))),
        "",
        *(["## Security scan", "", *findings, ""] if findings else []),
        f"- Task: {texts.inline(r(plan.task.source))}",
        f"- Verification: {verify}",
        f"- Agent: {plan.profile.name}" + (f", model {texts.inline(r(model))}" if model else ""),
        *([cost] if cost else []),
        f"- Branch: {texts.code(plan.branch)}, commit `{change.commit[:12]}`",
        "",
        f"_Generated by Toren (job `{job_id}`). Review it as you would any contributor's change._",
        PR_MARKER,
        "",
    ])
