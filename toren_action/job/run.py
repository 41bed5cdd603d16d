"""One job from its plan to its end state, as stages: prepare the workspace -> build the image -> run the agent
in its sandbox -> decide the outcome -> commit (with the change-size check) -> check the change (policy, code
scan) -> verify -> deliver (push, pull request). Every check after the commit judges that commit, never the
agent's work tree, and the push sends that commit by id. Progress leaves as events through a Reporter; the CLI
(or the Action) decides how to show them."""

from __future__ import annotations

import os
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from toren_action.agents.base import RunContext, Verdict, launch_command
from toren_action.config.validate import Mount
from toren_action.core.errors import (
    AgentAuthFailed,
    AgentFailed,
    AgentRateLimited,
    BudgetExceeded,
    Interrupted,
    MaxTurnsReached,
    PolicyBlocked,
    TorenError,
    VerificationFailed,
    WorkerLost,
)
from toren_action.core.paths import job_dir, log_path, remove_tree, write_private
from toren_action.core.redact import mask_tokens, redact_data
from toren_action.core.states import JobState
from toren_action.guard.codescan import WarmBandit
from toren_action.job import report
from toren_action.job.log import JobLog, NullReporter, Reporter, Tee
from toren_action.job.plan import CONTAINER_SECRETS, CONTAINER_SOCKETS, CONTAINER_TASK, Plan
from toren_action.job.report import Outcome
from toren_action.job.usage import usage_text
from toren_action.jobs import race as races
from toren_action.jobs.store import Store

if TYPE_CHECKING:
    from toren_action.git.github import ProgressComment
    from toren_action.git.workspace import Change, Workspace
    from toren_action.sandbox.container import ContainerResult, ContainerSpec

#: How each verdict from an agent's stream ends the job.
VERDICT_ERRORS = {"auth": AgentAuthFailed, "rate_limit": AgentRateLimited, "max_turns": MaxTurnsReached,
                  "budget": BudgetExceeded, "error": AgentFailed}
#: The most files one change may add or modify (a flood of empty files passes any size cap).
MAX_CHANGE_FILES = 10_000


@dataclass(eq=False)
class JobRun:
    """One job while it runs: its plan, its record, its directory and log, the stage it is in, and the outcome
    so far (a failure still reports what was done before it: the image built, the agent's usage)."""

    plan: Plan
    store: Store
    home: Path
    id: str
    dir: Path
    log: JobLog
    outcome: Outcome
    progress: ProgressComment | None = None  # the comment on the issue, edited at each stage
    state: str = "queued"
    #: bandit loading while the agent runs, for the code scan (codescan.WarmBandit); closed when the job ends
    scanner: WarmBandit | None = None
    #: the race this job is an attempt of (docs/race.md), or None
    race: RaceAttempt | None = None

    @property
    def git_env(self) -> dict[str, str]:
        return self.plan.github.git_env if self.plan.github else {}

    def enter(self, state: str, detail: str) -> None:
        self.state = state
        self.store.set_state(self.id, state)
        self.log.stage(state, detail)

    def end(self, state: str, message: str, code: int) -> None:
        """Write an end state other than success, with its message (redacted) and exit code."""
        self.log.stage(state, message)
        self.store.set_state(self.id, state, error=self.log._redact(message))
        self.outcome.state, self.outcome.exit_code, self.outcome.message = state, code, self.log._redact(message)


@dataclass(frozen=True)
class RaceAttempt:
    """What an attempt of a race shares with the others: the race, its base commit (the mirror was fetched and
    the image built once, for the whole race), the shared budget."""

    race_id: str
    number: int
    base_commit: str | None
    budget_usd: float | None


@dataclass(frozen=True)
class Prepared:
    """The job's clone on its new branch, and what the agent's container mounts (the clone, the task, the
    user's volumes, the secrets directory)."""

    ws: Workspace
    mounts: tuple[Mount, ...]


@dataclass(frozen=True)
class AgentImage:
    tag: str
    built: bool
    docker: object  # the engine's client, which holds the image


@dataclass(frozen=True)
class AgentRun:
    """How the agent's container ended, and the spec it ran with (--verify runs in one like it)."""

    exit_code: int
    verdict: Verdict | None
    spec: ContainerSpec


@dataclass(frozen=True)
class Committed:
    change: Change | None  # None: the agent left the tree unchanged
    agent_summary: str | None  # .toren/summary.md, read before the commit


@dataclass(frozen=True)
class PrText:
    title: str
    body: str


def run_job(plan: Plan, store: Store, home: Path, job_id: str, reporter: Reporter | None = None,
            docker=None) -> Outcome:
    """Run one job to its end state; never leaves a container behind or a job in a running state.
    ``docker`` is a client the caller already has (one is made when it is None)."""
    started = time.monotonic()
    job = _open_job(plan, store, home, job_id, reporter, started)
    outcome = job.outcome
    try:
        if job.progress:
            job.progress.stage("queued", "")
        prepared = prepare_workspace(job)
        image = build_image(job, docker)
        agent = run_agent(job, prepared, image)
        partial = decide_outcome(job, agent)
        committed = commit_change(job, prepared.ws)
        change = committed.change
        if change is None:
            return _nothing_committed(job, prepared.ws, partial)
        # From here on every check judges the commit, never the agent's work tree, and the push sends that commit.
        findings = check_change(job, prepared.ws, change)
        verify_commit(job, image, prepared.ws, change, agent.spec)
        text = describe_change(job, committed, findings)
        deliver(job, prepared.ws, change, text, partial)
        return _delivered(job, prepared.ws, change, partial)
    except KeyboardInterrupt as exc:
        if isinstance(exc, WorkerLost):
            job.end(JobState.FAILED, "worker lost: the background worker died; the container was removed", 1)
        else:
            job.end(JobState.CANCELLED, "interrupted (Ctrl-C or a termination signal); the container was removed",
                    Interrupted.exit_code)
        raise Interrupted("interrupted; the container was removed and the job marked cancelled") from None
    except TorenError as exc:  # an end of its own (timed out, budget, bad key, policy...) or failed at a stage
        if exc.state is JobState.FAILED:
            job.end(JobState.FAILED, f"{job.state}: {exc}", exc.exit_code)
        else:
            job.end(exc.state, str(exc), exc.exit_code)
        return outcome
    except Exception as exc:  # a bug: keep the traceback in the log, one line for the user
        job.log.line(traceback.format_exc())
        job.end(JobState.FAILED, f"{job.state}: internal error: {exc.__class__.__name__}: {exc}", 1)
        return outcome
    finally:
        if job.scanner is not None:
            job.scanner.close()
        outcome.duration_s = time.monotonic() - started
        if job.progress:
            job.progress.finish(outcome.state, [plan.redactor(x) for x in report.progress_lines(outcome, job_id)])
        job.log.close()


def _open_job(plan: Plan, store: Store, home: Path, job_id: str, reporter: Reporter | None,
              started: float) -> JobRun:
    """The job's directory, its log, the progress comment on the issue (one, edited at each stage), its pid."""
    jdir = job_dir(home, job_id)
    jdir.mkdir(parents=True, exist_ok=True, mode=0o700)
    gh = plan.github
    progress = None
    race = _race_of(store, job_id)
    if gh and gh.issue and race is None:  # a race keeps one comment for all its attempts (job/race.py)
        progress = gh.api.progress(gh.base_repo, gh.issue.number, job_id)
        reporter = Tee(reporter or NullReporter(), progress)
    log = JobLog(log_path(home, job_id), plan.redactor, reporter or NullReporter(), started)
    store.update(job_id, started_at=time.time(), pid=os.getpid())
    return JobRun(plan, store, home, job_id, jdir, log, Outcome(job_id, "failed", 1, branch=plan.branch), progress,
                  race=race)


def _race_of(store: Store, job_id: str) -> RaceAttempt | None:
    record = store.get(job_id)
    if not record.race_id or not record.attempt:
        return None
    r = races.get_race(store, record.race_id)
    return RaceAttempt(r.id, record.attempt, r.base_commit, r.budget_usd)


# -- prepare the workspace ---------------------------------------------------------------------------------------

def prepare_workspace(job: JobRun) -> Prepared:
    """Clone the origin (through the mirror) onto the job's new branch; write the prompt; give the tree to the
    agent's user."""
    from toren_action.git import workspace

    plan, race = job.plan, job.race
    job.enter("preparing", f"cloning {plan.origin} into the job workspace")
    mirror = workspace.mirror_path(job.home, plan.origin)
    if race is None or not (mirror / "HEAD").is_file():
        mirror = workspace.update_mirror(job.home, plan.origin, env=job.git_env, redact=plan.redactor)
        if race is not None:
            races.count(job.store, race.race_id, "mirror_fetches")
    else:
        job.log.stage("preparing", f"attempt {race.number} of race {race.race_id}: the race's mirror, fetched once "
                                   "for the race")
    ws = workspace.create_clone(mirror, plan.origin, job.dir / "workspace", plan.settings.base_branch, plan.branch,
                                commit=race.base_commit if race else None)
    job.store.update(job.id, base_commit=ws.base_commit)
    job.log.stage("preparing", f"branch {plan.branch} from {ws.base_branch} at {ws.base_commit[:10]}")
    workspace.give_tree_to(ws.path, plan.uid, plan.gid)
    return Prepared(ws, tuple(_job_mounts(plan, job.dir, ws.path)))


def _job_mounts(plan: Plan, jdir: Path, ws_path: Path) -> list[Mount]:
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
    if plan.secrets:  # written by Sandbox.run just before the agent starts, removed as soon as it ends
        mounts.append(Mount(str(jdir / "secrets"), CONTAINER_SECRETS, True))
    return mounts + list(plan.mounts)


def _repo_instructions(ws_path: Path) -> str | None:
    """AGENTS.md, CLAUDE.md and GEMINI.md from the repository's root, those present, 20 000 characters at most."""
    from toren_action.core.paths import read_bounded

    parts = []
    for name in ("AGENTS.md", "CLAUDE.md", "GEMINI.md"):
        data = read_bounded(ws_path, name, 80_000)  # a regular file, no link; a huge or sparse one costs 80 kB
        if data is not None:
            parts.append(f"From {name}:\n\n" + data.decode("utf-8", errors="replace").strip())
    return "\n\n".join(parts)[:20_000] or None


# -- build the image ---------------------------------------------------------------------------------------------

def build_image(job: JobRun, docker=None) -> AgentImage:
    """The agent's image on the base image (its Node runtime for a CLI agent): reused when built before."""
    from toren_action.sandbox import container

    plan = job.plan
    job.enter("building", f"agent image on {plan.settings.base_image}")
    docker = docker or container.client()
    tag, built = make_image(plan, docker, job.log.line)
    job.outcome.image_built = built
    job.store.update(job.id, image=tag)
    job.log.stage("building", f"{'built' if built else 'reusing'} {tag}")
    return AgentImage(tag, built, docker)


def make_image(plan: Plan, docker, line: Callable[[str], None]) -> tuple[str, bool]:
    """The plan's agent image: (tag, whether it was built now). A race makes it once for all its attempts."""
    from toren_action.sandbox import image

    base_id, arch = image.resolve_base(docker, plan.settings.base_image, plan.settings.pull, line)
    node_dir, node_label = None, ""
    if plan.profile.package:
        from toren_action.sandbox import toolchain

        node_arch = toolchain.wheel_arch(arch)
        node_dir = toolchain.node_runtime(node_arch, line)
        node_label = f"{toolchain.NODE_VERSION}-{node_arch}"
    recipe = image.ImageRecipe(base_id, plan.profile, plan.uid, plan.gid, image.read_ca_bundle(plan.ca_bundle),
                               node_dir, node_label)
    return image.ensure_image(docker, recipe, line)


# -- run the agent in its sandbox --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Sandbox:
    """The agent's container, ready to start, with everything around it already running."""

    plan: Plan
    docker: object
    spec: ContainerSpec
    secrets_dir: Path

    def run(self, on_line: Callable[[str], bool], on_start: Callable[[str], None]) -> ContainerResult:
        """Write the secrets (agent_sandbox removes them as soon as this returns or raises), run the container."""
        from toren_action.sandbox import container

        _write_secrets(self.plan, self.secrets_dir)
        return container.run(self.docker, self.spec, on_line, on_start=on_start)


@dataclass(frozen=True)
class _Wiring:
    """A host-side proxy as the container sees it: its socket's mount, the variables pointing at it, and the
    relays (loopback port in the container, mounted socket) that TCP-only clients reach it through."""

    mount: Mount
    env: dict[str, str] = field(default_factory=dict)
    relays: tuple[tuple[int, str], ...] = ()
    url: str | None = None  # the key proxy's base URL for a TCP-only CLI


@contextmanager
def agent_sandbox(job: JobRun, prepared: Prepared, image: AgentImage) -> Iterator[Sandbox]:
    """Everything the agent's run needs around it, each released however the run ends (last in, first out):
    the key proxy, the task files, the egress proxy and the relays to them, and the secrets directory, which the
    container reads while it runs and which goes first, as soon as the container has ended, before any end state
    is written."""
    from toren_action.sandbox import container

    plan, s = job.plan, job.plan.settings
    with ExitStack() as stack:
        mounts, passthrough = list(prepared.mounts), dict(plan.passthrough)
        relays: list[tuple[int, str]] = []
        key_proxy = _start_key_proxy(job, stack) if plan.proxy_key is not None else None
        if key_proxy is not None:
            mounts.append(key_proxy.mount)
            passthrough.update(key_proxy.env)
            relays += key_proxy.relays
        ctx = RunContext(f"{CONTAINER_TASK}/prompt.md", s.model, s.command, CONTAINER_SECRETS, plan.credentials,
                         s.max_turns, s.max_cost_usd, s.allowed_tools, s.disallowed_tools, s.append_system_prompt,
                         passthrough, key_proxy=key_proxy is not None,
                         key_proxy_url=key_proxy.url if key_proxy else None)
        env = {**plan.env, **plan.profile.environment(ctx), "TOREN_JOB_ID": job.id, "TOREN_TASK_FILE": ctx.prompt_file}
        if job.race is not None:  # the same task for every attempt: a shell agent (or a seed) may vary by attempt
            env.update(TOREN_ATTEMPT=str(job.race.number), TOREN_RACE_ID=job.race.race_id)
        elif s.race_attempt:  # one attempt of a race spread over a runner fleet
            env["TOREN_ATTEMPT"] = str(s.race_attempt)
        if plan.secrets:
            env["TOREN_SECRETS_DIR"] = CONTAINER_SECRETS
        _write_task_files(job, ctx)
        command = plan.profile.command(ctx)
        if plan.profile.package:  # a CLI: the launcher fills its secret variables and the prompt argument
            command = launch_command(command, plan.profile.secret_environment(ctx))
        if plan.egress_hosts:
            egress = _start_egress_proxy(job, stack)
            mounts.append(egress.mount)
            env.update(egress.env)
            relays += egress.relays
        if relays:
            command = _with_relays(job, relays, command)
        spec = container.ContainerSpec(
            image=image.tag, command=command, job_id=job.id, user=f"{plan.uid}:{plan.gid}",
            mounts=mounts, environment=env, network=plan.network, gpus=s.gpus, memory=s.memory, cpus=s.cpus,
            pids_limit=s.pids_limit, timeout_s=plan.timeout_s, name=f"toren-{job.id}",
        )
        secrets_dir = job.dir / "secrets"
        stack.callback(remove_tree, secrets_dir)  # 0500 while the agent ran: remove_tree makes it writable first
        yield Sandbox(plan, image.docker, spec, secrets_dir)


def _start_key_proxy(job: JobRun, stack: ExitStack) -> _Wiring:
    """The model API key stays on the host: the agent reaches the API through the key proxy's socket."""
    from urllib.parse import urlsplit

    from toren_action.agents.base import KEY_RELAY_PORT
    from toren_action.sandbox.keyproxy import KeyProxy

    plan = job.plan
    kp, upstream = plan.profile.key_proxy, plan.key_proxy_upstream
    assert kp is not None and upstream is not None and plan.proxy_key is not None
    proxy = KeyProxy(upstream, plan.proxy_key, kp.header, owner=(plan.uid, plan.gid), value=kp.value,
                     keep_path=kp.socket_env is not None).start()
    stack.callback(proxy.stop)
    target = f"{CONTAINER_SOCKETS}/model-api.sock"
    mount = Mount(str(proxy.socket_path), target, False)
    job.log.stage("building", f"model API key kept on the host: the agent reaches {upstream} through Toren's "
                              "key proxy")
    if kp.socket_env:  # the CLI speaks HTTP over the socket itself
        return _Wiring(mount, {kp.socket_env: target})
    # a TCP-only CLI: its base URL is a relay on the container's loopback
    return _Wiring(mount, relays=((KEY_RELAY_PORT, target),),
                   url=f"http://localhost:{KEY_RELAY_PORT}{urlsplit(upstream).path.rstrip('/')}")


def _start_egress_proxy(job: JobRun, stack: ExitStack) -> _Wiring:
    """--egress: the agent's only way out is the host's filtering proxy, through a relay on its loopback."""
    from toren_action.sandbox import egress

    plan = job.plan
    proxy = egress.EgressProxy(plan.egress_hosts, owner=(plan.uid, plan.gid)).start()

    def stop() -> None:
        proxy.stop()
        for host in sorted(set(proxy.refused)):
            job.log.line(f"egress: refused {host} (a host, port or Host header off the allow-list)")
        if proxy.refused:
            job.store.add_event(job.id, "egress", {"refused": sorted(set(proxy.refused)),
                                                   "passed": sorted(set(proxy.passed))})

    stack.callback(stop)
    target = f"{CONTAINER_SOCKETS}/egress.sock"
    url = f"http://127.0.0.1:{egress.RELAY_PORT}"
    job.log.stage("building", f"egress: only {', '.join(plan.egress_hosts)} through the host's proxy")
    return _Wiring(Mount(str(proxy.socket_path), target, False),
                   dict(HTTPS_PROXY=url, HTTP_PROXY=url, https_proxy=url, http_proxy=url, NO_PROXY="localhost",
                        no_proxy="localhost"), ((egress.RELAY_PORT, target),))


def _write_task_files(job: JobRun, ctx: RunContext) -> None:
    for name, content in job.plan.profile.task_files(ctx).items():
        path = job.dir / "task" / name
        path.write_text(content, "utf-8")
        path.chmod(0o444)


def _with_relays(job: JobRun, relays: list[tuple[int, str]], command: list[str]) -> list[str]:
    """Loopback ports in the container that lead to the host's proxies (a few lines of Node), then the command."""
    from toren_action.agents.base import NODE_PREFIX
    from toren_action.sandbox import egress

    relay = job.dir / "task" / "relay.js"
    relay.write_text(egress.RELAY_JS, "utf-8")
    relay.chmod(0o444)
    starts = "".join(f"{NODE_PREFIX}/bin/node {CONTAINER_TASK}/relay.js {port} {target} & "
                     for port, target in relays)
    return ["/bin/sh", "-c", starts + 'sleep 0.3; exec "$@"', "toren-relay", *command]


def _write_secrets(plan: Plan, secrets_dir: Path) -> None:
    """The agent's secrets as read-only files for its container; agent_sandbox removes them when the container is
    gone, before any end state is written (so a crash after that leaves none on disk)."""
    if not plan.secrets:
        return
    secrets_dir.mkdir(mode=0o700, exist_ok=True)
    for secret in plan.secrets:
        write_private(secrets_dir / secret.name, secret.reveal(), 0o400,
                      (plan.uid, plan.gid) if os.geteuid() == 0 else None)
    if os.geteuid() == 0:
        os.chown(secrets_dir, plan.uid, plan.gid)
    secrets_dir.chmod(0o500)


class _AgentWatch:
    """Reads the agent's output: each line logged readably, the budgets checked; a verdict stops the container."""

    def __init__(self, job: JobRun) -> None:
        self.job = job
        self.parser = job.plan.profile.parser()
        self.stopped: list[Verdict] = []
        self.prices = job.plan.settings.price_overrides()
        self.started = False
        self.race_turns = 0

    def _race_budget(self) -> Verdict | None:
        """The race's shared budget: at each new turn this attempt's cost so far goes to the store, and the sum of
        every attempt's passes the budget: stop (the other attempts see the same sum at their next turn)."""
        from toren_action.agents.pricing import cost_usd

        job, race = self.job, self.job.race
        assert race is not None and race.budget_usd is not None
        turns = self.parser.usage.turns
        if turns == self.race_turns:
            return None
        self.race_turns = turns
        cost, _ = cost_usd(_with_model(self.parser.usage, job.plan), self.prices)
        if cost is None:
            return None
        job.store.update(job.id, cost_usd=cost, turns=turns)
        total = races.spent(job.store, race.race_id)
        if total > race.budget_usd:
            return Verdict("budget", f"the race's shared budget --max-cost-usd {race.budget_usd:g} is spent "
                                     f"(${total:.4f} by all its attempts)")
        return None

    def show(self, line: str) -> bool:
        """One line of the agent's output: log it readably; True stops the container."""
        log, parser = self.job.log, self.parser
        try:
            for text in parser.feed(line):
                log.line(text)
        except Exception as exc:  # noqa: BLE001 - keep reading (and enforcing budgets) whatever one line does
            log.line(f"toren: could not read a line of agent output ({exc.__class__.__name__}): {line[:300]}")
        if self.stopped:
            return False
        verdict = parser.stop or (None if parser.finished else _budget_verdict(self.job.plan, parser, self.prices))
        if verdict is None and self.job.race is not None and self.job.race.budget_usd is not None:
            verdict = self._race_budget()
        if self.job.progress:
            self.job.progress.turns(parser.usage.turns)
        if verdict:
            self.stopped.append(verdict)
            log.line(f"toren: stopping the agent: {verdict.message}")
            return True
        return False


def run_agent(job: JobRun, prepared: Prepared, image: AgentImage) -> AgentRun:
    """The agent in its sandbox until it exits, is stopped (a verdict) or times out; its usage is recorded
    however the run ends, once the sandbox is released."""
    plan = job.plan
    watch = _AgentWatch(job)
    race = job.race
    if race is not None and race.budget_usd is not None and races.spent(job.store, race.race_id) >= race.budget_usd:
        raise BudgetExceeded(f"the race's shared budget --max-cost-usd {race.budget_usd:g} was spent before attempt "
                             f"{race.number} started; it did not run")
    try:
        with agent_sandbox(job, prepared, image) as sandbox:
            job.enter("running", f"{plan.profile.name} agent in {image.tag} (network {plan.network})")
            job.scanner = WarmBandit().start()  # its start-up hides behind the agent's run
            watch.started = True
            result = sandbox.run(watch.show, on_start=lambda cid: job.store.update(job.id, container_id=cid))
    finally:
        if watch.started:
            _record_usage(job, watch)
    job.store.update(job.id, exit_code=result.exit_code)
    return AgentRun(result.exit_code, watch.stopped[0] if watch.stopped else watch.parser.verdict, sandbox.spec)


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


def _record_usage(job: JobRun, watch: _AgentWatch) -> None:
    """Store the turns, tokens, cost and the parsed events; log one line about them."""
    from toren_action.agents.pricing import cost_usd

    plan = job.plan
    if not plan.profile.package:  # the shell agent uses no model
        return
    usage = _with_model(watch.parser.usage, plan)
    cost, source = cost_usd(usage, watch.prices)
    data = usage.to_dict()
    job.store.update(job.id, usage=data, turns=usage.turns, cost_usd=cost, cost_source=source)
    job.store.add_events(job.id, [(kind, redact_data(item, plan.redactor)) for kind, item in watch.parser.events])
    job.log.stage("running", usage_text(data, cost, source))
    job.outcome.usage, job.outcome.cost_usd, job.outcome.cost_source = data, cost, source


# -- decide the outcome ------------------------------------------------------------------------------------------

def decide_outcome(job: JobRun, agent: AgentRun) -> TorenError | None:
    """Raise the error the agent's end means (a verdict, a failing exit code); with --push-partial a budget or
    max-turns stop is returned instead: the work so far is delivered, and the job then ends in that state."""
    verdict = agent.verdict
    if verdict is None and agent.exit_code != 0:
        verdict = job.plan.profile.exit_verdict(agent.exit_code)
    if verdict is not None:
        error = VERDICT_ERRORS[verdict.kind](verdict.message + f"; see `toren logs {job.id}`")
        if not (job.plan.settings.push_partial and verdict.kind in ("budget", "max_turns")):
            raise error
        job.log.stage(error.state, f"{verdict.message}; --push-partial: delivering the work so far")
        return error
    if agent.exit_code != 0:
        raise AgentFailed(f"the {job.plan.profile.name} agent exited with code {agent.exit_code}; "
                          f"see `toren logs {job.id}`")
    return None


# -- commit ------------------------------------------------------------------------------------------------------

def commit_change(job: JobRun, ws: Workspace) -> Committed:
    """Commit what the agent changed, if it is not too large; its redacted patch goes to the job's directory."""
    from toren_action.git import workspace

    plan, s = job.plan, job.plan.settings
    agent_summary = workspace.read_agent_summary(ws)
    check_change_size(ws, s.max_change_mb)
    change = workspace.commit_all(ws, report.commit_message(plan, job.id), s.author_name, s.author_email)
    if change is not None:
        (job.dir / "change.diff").write_text(plan.redactor(workspace.last_patch(ws, change.commit)), "utf-8")
    return Committed(change, agent_summary)


def check_change_size(ws: Workspace, max_mb: float) -> None:
    """Refuse, before git reads a byte of it, a change larger than ``max_mb`` MiB in all (the sizes of every file
    the commit would take: changed, added, untracked and not ignored; sparse files at their full length) or of
    more than MAX_CHANGE_FILES files."""
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


def _nothing_committed(job: JobRun, ws: Workspace, partial: TorenError | None) -> Outcome:
    """The agent changed nothing: no_changes, or the --push-partial stop's own state (nothing to push)."""
    if partial:
        job.end(partial.state, f"{partial}; it had changed nothing, so nothing was pushed",
                partial.exit_code)
    else:
        job.enter("no_changes", "the agent left the tree unchanged; nothing to commit")
        job.outcome.state, job.outcome.exit_code, job.outcome.message = "no_changes", 0, "the agent changed nothing"
    remove_tree(ws.path)
    return job.outcome


# -- check the change --------------------------------------------------------------------------------------------

def check_change(job: JobRun, ws: Workspace, change: Change) -> list:
    """The diff policy, then the code scan, both on the commit; returns the scan's findings (for the PR)."""
    enforce_policy(job, ws, change)
    return code_scan(job, ws, change)


def _committed_tree(jdir: Path, ws: Workspace, change: Change, name: str, paths: list[str] | None = None) -> Path:
    """A fresh directory holding the commit's tree (or ``paths`` of it), written from its objects."""
    from toren_action.git import snapshot

    dest = jdir / name
    remove_tree(dest)
    snapshot.export_commit(ws.path, change.commit, dest, paths)
    return dest


def enforce_policy(job: JobRun, ws: Workspace, change: Change) -> None:
    """The diff policy, on the host, on the commit about to be pushed (see policy.py)."""
    import json

    from toren_action.git import workspace
    from toren_action.guard import policy

    plan, s = job.plan, job.plan.settings
    allow = set(s.allow_policy) | ({"workflow"} if s.allow_workflow_changes else set())
    rules = policy.Policy(frozenset(allow), s.protected_paths, int(s.max_file_mb * 1024 * 1024))
    findings = policy.check(lambda *a: workspace.git(*a, cwd=ws.path, trusted=True), ws.base_commit, change.commit,
                            str(ws.path), rules, plan.redactor.mask_values)
    if not findings:
        return
    lines = [plan.redactor(mask_tokens(str(f))) for f in findings]
    (job.dir / "policy.json").write_text(json.dumps([{**f.to_dict(), "detail": plan.redactor(
        mask_tokens(f.detail))} for f in findings], indent=2), "utf-8")
    job.store.add_events(job.id, [("policy", {"rule": f.rule, "path": plan.redactor(f.path), "line": f.line})
                                  for f in findings])
    for line in lines:
        job.log.line(f"policy: {line}")
    raise PolicyBlocked(plan.redactor(mask_tokens(policy.describe(findings)))
                        + f"; the change is kept in {ws.path}")


def code_scan(job: JobRun, ws: Workspace, change: Change) -> list:
    """The code scan on the committed files; findings at or above --fail-on block the job."""
    from toren_action.guard import codescan

    plan = job.plan
    tree = _committed_tree(job.dir, ws, change, "scan-tree", change.files)
    try:
        findings, what = codescan.scan(tree, change.files, job.scanner)
    finally:
        remove_tree(tree)
    job.log.line(f"code scan: {what}")
    for f in findings:
        job.log.line(f"code scan: {plan.redactor(str(f))}")
    if findings:
        job.store.add_events(job.id, [("code_scan", {"tool": f.tool, "severity": f.severity, "path": f.path,
                                                     "line": f.line, "test": f.test}) for f in findings])
    blocked = codescan.blocking(findings, plan.settings.fail_on)
    if blocked:
        raise PolicyBlocked(f"the code scan found {len(blocked)} finding(s) at or above {plan.settings.fail_on} "
                            f"(--fail-on): {plan.redactor(str(blocked[0]))}; nothing was pushed")
    return findings


# -- verify ------------------------------------------------------------------------------------------------------

def verify_commit(job: JobRun, image: AgentImage, ws: Workspace, change: Change, spec: ContainerSpec) -> None:
    """--verify (when set) in a container like the agent's, on a clean copy of exactly the commit about to be
    pushed (no ignored or untracked file of the agent's counts), without the agent's secrets and sockets."""
    from toren_action.git import workspace
    from toren_action.sandbox import container

    plan, s = job.plan, job.plan.settings
    if not s.verify:
        return
    job.enter("verifying", s.verify)
    tree = _committed_tree(job.dir, ws, change, "verify-tree")
    workspace.give_tree_to(tree, plan.uid, plan.gid)
    # the user's own volumes read-only: what the agent wrote there (a .pth, a cache) cannot sway the check either
    mounts = [Mount(str(tree), m.target, m.read_only) if m.target == "/workspace"
              else Mount(m.source, m.target, True) if m in plan.mounts else m for m in spec.mounts
              if m.target != CONTAINER_SECRETS and not m.target.startswith(CONTAINER_SOCKETS + "/")]
    vspec = container.ContainerSpec(**{
        **spec.__dict__, "command": ["/bin/sh", "-c", s.verify], "name": f"toren-{job.id}-verify",
        "role": "verification", "mounts": mounts,
        "environment": {k: v for k, v in spec.environment.items() if k != "TOREN_SECRETS_DIR"}})
    try:
        vres = container.run(image.docker, vspec, job.log.line)
    finally:
        remove_tree(tree)
    job.store.add_event(job.id, "verify", {"command": s.verify, "exit_code": vres.exit_code, "commit": change.commit})
    if vres.exit_code != 0:
        raise VerificationFailed(f"--verify exited with code {vres.exit_code} on commit {change.commit[:10]}; "
                                 f"nothing was pushed (the change is kept in {ws.path})")


# -- deliver -----------------------------------------------------------------------------------------------------

def describe_change(job: JobRun, committed: Committed, findings: list) -> PrText:
    """Record the commit; write the pull request's title and body (the body also to pr.md). The title comes from
    the agent, never from a model's summary; the body falls back to an AI summary when the agent left none."""
    plan, outcome, change = job.plan, job.outcome, committed.change
    assert change is not None
    outcome.commit, outcome.files = change.commit, redact_data(change.files, plan.redactor)
    outcome.diffstat = plan.redactor(change.diffstat)
    summary = committed.agent_summary
    if summary is None and _wants_ai_summary(plan):
        summary = _pr_ai_summary(job, change)
    job.store.update(job.id, result_commit=change.commit, files_changed=redact_data(change.files, plan.redactor),
                     diffstat=plan.redactor(change.diffstat))  # a file's name is the agent's text too
    body = plan.redactor(report.pr_body(plan, job.id, change, summary, outcome, findings))
    (job.dir / "pr.md").write_text(body, "utf-8")
    return PrText(plan.redactor(report.pr_title(plan, committed.agent_summary)), body)


def _wants_ai_summary(plan: Plan) -> bool:
    from toren_action.job import summary

    mode = plan.settings.ai_summary
    return mode == "always" or (mode == "auto" and plan.profile.name == "claude" and summary.available())


def _pr_ai_summary(job: JobRun, change: Change) -> str | None:
    """An AI summary of the change for the pull request body, when the agent left none."""
    from toren_action.job import summary

    plan = job.plan
    facts = {"task": plan.task.title, "task_source": plan.task.source, "files_changed": change.files,
             "diffstat": change.diffstat, "verify": plan.settings.verify}
    diff = (job.dir / "change.diff").read_text("utf-8")
    try:
        made = summary.ai_summary(facts, job.store.events(job.id), diff, plan.settings.summary_model,
                                  prices=plan.settings.price_overrides())
    except Exception as exc:  # noqa: BLE001 - a summary is never worth failing a finished job
        job.log.line(f"toren: no AI summary for the pull request: {exc}")
        return None
    job.store.add_event(job.id, "summary", {"model": made.model, "cost_usd": made.cost_usd, "for": "pull request"})
    return plan.redactor(made.text) + f"\n\n_(Summary written by {made.model}; the agent left none.)_"


def deliver(job: JobRun, ws: Workspace, change: Change, text: PrText, partial: TorenError | None) -> None:
    """Push the commit; open or update the pull request (not with --no-pr, nor for a --push-partial stop)."""
    push_commit(job, ws, change)
    gh = job.plan.github
    if job.race is not None or job.plan.settings.race_attempt:  # the race opens one pull request, from its winner
        _keep_for_race(job, ws, change)
        return
    if gh and not job.plan.settings.no_pr and not partial:
        open_pull_request(job, ws, text)


def _keep_for_race(job: JobRun, ws: Workspace, change: Change) -> None:
    """A race's attempt also keeps its commit on the host (``races/<id>/commits.git``, refs/attempts/<n>), so that
    `toren race --pick` can push it again after the losers' branches were deleted."""
    from toren_action.git import workspace

    if job.race is None:
        return
    keep = job.home / "races" / job.race.race_id / "commits.git"
    if (keep / "HEAD").is_file():
        workspace.git("push", "--quiet", "--no-verify", str(keep), f"{change.commit}:refs/attempts/{job.race.number}",
                      cwd=ws.path, trusted=True)


def push_commit(job: JobRun, ws: Workspace, change: Change) -> None:
    """Push the checked commit, by id, to the job's branch (with the lease of a Toren pull request's branch)."""
    from toren_action.git import workspace

    plan = job.plan
    job.enter("pushing", f"{plan.branch} to {plan.origin}")
    workspace.push(ws, plan.branch, plan.force_push, env=job.git_env, redact=plan.redactor, lease=plan.push_lease,
                   commit=change.commit)
    job.outcome.pushed_to = plan.origin


def open_pull_request(job: JobRun, ws: Workspace, text: PrText) -> None:
    plan, s, gh = job.plan, job.plan.settings, job.plan.github
    assert gh is not None
    job.enter("pull_request", f"on {gh.base_repo} from {plan.branch} into {ws.base_branch}")
    job.outcome.pr_url, number, created = gh.api.open_or_update_pr(
        gh.base_repo, gh.repo, plan.branch, gh.pr_base or ws.base_branch, text.title, text.body, s.draft, s.labels,
        s.reviewers, s.assignees)
    job.store.update(job.id, pr_url=job.outcome.pr_url)
    for warning in gh.api.warnings:
        job.log.line(f"toren: warning: {warning}")
    job.log.stage("pull_request", f"{'opened' if created else 'updated'} #{number}: {job.outcome.pr_url}")


def _delivered(job: JobRun, ws: Workspace, change: Change, partial: TorenError | None) -> Outcome:
    """succeeded, or the --push-partial stop's own state now that the work so far is pushed."""
    if partial:
        job.end(partial.state, f"{partial}; the work so far was pushed to {job.plan.branch} at "
                f"{change.commit[:10]}", partial.exit_code)
    else:
        job.enter("succeeded", f"{job.plan.branch} at {change.commit[:10]}, {len(change.files)} file(s) changed")
        job.outcome.state, job.outcome.exit_code = "succeeded", 0
    remove_tree(ws.path)
    return job.outcome
