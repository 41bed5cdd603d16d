"""One job from its plan to its end state, as stages: prepare the workspace -> build the image -> run the agent
in its sandbox -> decide the outcome -> commit (with the change-size check) -> check the change (policy, code
scan) -> verify (verify.py; with --verify-retries a failed verification gives the agent another round, then
commit, check and verify again) -> deliver (push, pull request). Every check after the commit judges that commit,
never the agent's work tree, and the push sends that commit by id. A job that fails after the agent changed
something (verification, budget, turns, timeout; never the diff policy) still delivers with --on-failure branch
or draft. Progress leaves as events through a Reporter; the CLI (or the Action) decides how to show them."""

from __future__ import annotations

import os
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from toren_action.agents.base import RunContext, Verdict, launch_command
from toren_action.config.validate import Mount
from toren_action.core.errors import (
    AgentAuthFailed,
    AgentFailed,
    AgentRateLimited,
    BranchMoved,
    BudgetExceeded,
    GitError,
    Interrupted,
    JobTimedOut,
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
from toren_action.job.plan import CONTAINER_SECRETS, CONTAINER_SOCKETS, CONTAINER_TASK, MAX_PROMPT_BYTES, Plan
from toren_action.job.report import Outcome
from toren_action.job.usage import usage_text
from toren_action.jobs import race as races
from toren_action.jobs.store import Store

if TYPE_CHECKING:
    from toren_action.git.github import ProgressComment
    from toren_action.git.workspace import Change, Workspace
    from toren_action.job.setup import PreparedEnv
    from toren_action.sandbox.container import ContainerResult, ContainerSpec
    from toren_action.sandbox.engine import Engine

#: How each verdict from an agent's stream ends the job.
VERDICT_ERRORS = {"auth": AgentAuthFailed, "rate_limit": AgentRateLimited, "max_turns": MaxTurnsReached,
                  "budget": BudgetExceeded, "error": AgentFailed, "timeout": JobTimedOut}
#: The ends of a job whose change --on-failure branch or draft still delivers (--push-partial: the first two).
DELIVERABLE_FAILURES = ("budget", "max_turns", "timeout", "verification")
#: A retry round needs at least this much of --timeout left.
MIN_ROUND_S = 30.0
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
    #: The key proxy while the agent runs (why the model API was unreachable, if it was)
    key_proxy: object | None = None
    #: The agent's rounds so far (1, and one more for each --verify-retries turn), and what they used together.
    round: int = 1
    agent_s: float = 0.0
    spent: dict[str, Any] = field(default_factory=dict)  # the usage of the rounds before this one
    spent_cost: float = 0.0
    #: --verify-baseline's run on the base commit (once per job) and each verification round's outcome.
    baseline: Any = None
    rounds: list[dict[str, Any]] = field(default_factory=list)
    #: the prepared environment the agent and the verification run in (job/setup.py); None without a setup
    setup: PreparedEnv | None = None
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
    docker: Engine  # the engine, which holds the image


@dataclass(frozen=True)
class AgentRun:
    """How the agent's container ended, and the spec it ran with (--verify runs in one like it)."""

    exit_code: int
    verdict: Verdict | None
    spec: ContainerSpec
    final_text: str | None = None  # the CLI's last answer (its summary of the round)


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
        if plan.settings.push_partial:
            job.log.line("toren: warning: --push-partial is deprecated; use --on-failure branch")
        prepared = prepare_workspace(job)
        image = build_image(job, docker)
        image = prepare_environment(job, prepared, image)
        agent = run_agent(job, prepared, image)
        failure = decide_outcome(job, agent)
        while True:
            committed = commit_change(job, prepared.ws)
            change = committed.change
            if change is None:
                return _nothing_committed(job, prepared.ws, failure)
            # From here on every check judges the commit, never the agent's work tree, and the push sends that
            # commit. A policy block raises: it never delivers.
            findings = check_change(job, prepared.ws, change)
            verdict = verify_commit(job, image, prepared.ws, change, agent.spec)
            if verdict is None:
                break
            if failure is None and _may_retry(job):
                agent = retry_agent(job, prepared, image, verdict, committed.agent_summary or agent.final_text)
                failure = decide_outcome(job, agent)
                continue
            if not delivers(plan, "verification") or plan.pull is not None:
                raise verdict
            failure = failure or verdict
            break
        if plan.pull is not None:  # a review round: a fast-forward of the pull request's head, then the answers
            if failure is not None:  # a round never pushes a failed change onto someone's pull request
                raise failure
            ws, change = push_round(job, prepared.ws, change, image, agent.spec)
            job.outcome.commit, job.outcome.pr_url = change.commit, plan.pull.html_url
            answer_round(job, change)
            return _delivered(job, ws, change, None)
        text = describe_change(job, committed, findings, failure)
        deliver(job, prepared.ws, change, text, failure)
        return _delivered(job, prepared.ws, change, failure)
    except KeyboardInterrupt as exc:
        if isinstance(exc, WorkerLost):
            job.end(JobState.FAILED, "worker lost: the background worker died; the container was removed", 1)
        elif _cancel_requested(store, job_id):
            job.end(JobState.CANCELLED, "cancelled (toren cancel); the container was removed", Interrupted.exit_code)
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
        if job.setup is not None:
            job.setup.release()
        outcome.duration_s = time.monotonic() - started
        if job.progress:
            job.progress.finish(outcome.state, [plan.redactor(x) for x in report.progress_lines(outcome, job_id)])
        job.log.close()


def _cancel_requested(store: Store, job_id: str) -> bool:
    """Whether `toren cancel` asked this job to stop (its SIGTERM is then no Ctrl-C of the user's)."""
    try:
        return store.get(job_id).cancel_requested_at is not None
    except Exception:  # noqa: BLE001 - a busy database: say interrupted rather than fail to end the job
        return False


def _open_job(plan: Plan, store: Store, home: Path, job_id: str, reporter: Reporter | None,
              started: float) -> JobRun:
    """The job's directory, its log, the progress comment on the issue (one, edited at each stage), its pid."""
    jdir = job_dir(home, job_id)
    jdir.mkdir(parents=True, exist_ok=True, mode=0o700)
    gh = plan.github
    progress = None
    race = _race_of(store, job_id)
    # on the issue, or on the pull request of a review round; a race keeps one comment for all its attempts, and
    # an attempt of a fleet race none (its matrix job may only read the issue; the final job opens the PR)
    if gh and (gh.issue or gh.pull) and race is None and not plan.settings.race_attempt:
        number = gh.issue.number if gh.issue else gh.pull.number  # type: ignore[union-attr]
        progress = gh.api.progress(gh.base_repo, number, job_id)
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
        mirror = workspace.update_mirror(job.home, plan.origin, env=job.git_env, redact=plan.redactor,
                                         head=plan.origin_head)
        if race is not None:
            races.count(job.store, race.race_id, "mirror_fetches")
    else:
        job.log.stage("preparing", f"attempt {race.number} of race {race.race_id}: the race's mirror, fetched once "
                                   "for the race")
    if plan.pull is not None:  # a review round: on the pull request's head as planned, never a new branch
        ws = workspace.create_clone(mirror, plan.origin, job.dir / "workspace", plan.branch, plan.branch,
                                    start=plan.pull.head_sha)
        job.log.stage("preparing", f"pull request #{plan.pull.number}, round {plan.round}: {plan.branch} at "
                                   f"{ws.base_commit[:10]}")
    else:  # a race's attempts all start from the race's base commit
        ws = workspace.create_clone(mirror, plan.origin, job.dir / "workspace",
                                    plan.base_branch or plan.settings.base_branch, plan.branch,
                                    base_commit=plan.base_commit, start=race.base_commit if race else None)
        start = f"--base-ref {plan.settings.base_ref}" if plan.base_commit else ws.base_branch
        job.log.stage("preparing", f"branch {plan.branch} from {start} at {ws.base_commit[:10]}")
    job.store.update(job.id, base_commit=ws.base_commit)
    for warning in plan.warnings:
        job.log.line(f"toren: warning: {warning}", show=False)  # the submitter showed it (cli, action)
    workspace.give_tree_to(ws.path, plan.uid, plan.gid)
    return Prepared(ws, tuple(_job_mounts(plan, job.dir, ws.path)))


def _job_mounts(plan: Plan, jdir: Path, ws_path: Path) -> list[Mount]:
    from toren_action.git import workspace

    task_dir = jdir / "task"
    task_dir.mkdir(exist_ok=True)
    prompt = task_dir / "prompt.md"
    prompt.write_text(plan.task.prompt(_repo_instructions(ws_path)), "utf-8")
    prompt.chmod(0o444)
    # the task as given, for a later review round of its pull request on this host (the job's dir is 0700)
    write_private(jdir / "task.md", plan.redactor(plan.task.body))
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


# -- prepare the environment -------------------------------------------------------------------------------------

def prepare_environment(job: JobRun, prepared: Prepared, image: AgentImage) -> AgentImage:
    """The repository's setup (job/setup.py): its prepared environment reused, or made now with the network;
    returns the image the agent runs in (the prepared one). Without a setup, the agent's image as it is."""
    from toren_action.job import setup

    plan = job.plan
    network = plan.settings.setup_network or "bridge"

    def running(command: setup.SetupCommand) -> None:
        job.enter("setting_up", f"{command.source}: {command.command[:300]} (network {network}"
                                f"{', no cache' if plan.settings.no_setup_cache else ''})")

    env = setup.prepare(plan, image.docker, prepared.ws.path, prepared.ws.base_commit, image.tag, job.home,
                        job.dir, job.id, job.log.line, on_run=running)
    if env is None:
        job.store.update(job.id, setup={"cache": "none"})
        return image
    job.setup = env
    job.store.update(job.id, setup=env.record())
    if env.cache == "hit":
        job.log.stage("building", f"reusing the prepared environment {env.image} (setup cache hit; "
                                  f"{len(env.paths)} path(s) of the workspace in {env.duration_s:.1f} s)")
    else:
        ran = f", the setup's container {env.command_s:.1f} s of it" if env.command_s is not None else ""
        job.log.stage("setting_up", f"prepared {env.image} in {env.duration_s:.1f} s{ran} (setup cache "
                                    f"{env.cache}; kept: {', '.join(env.paths[:5]) or 'nothing in the workspace'})")
    return AgentImage(env.image, image.built, image.docker)


# -- run the agent in its sandbox --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Sandbox:
    """The agent's container, ready to start, with everything around it already running."""

    plan: Plan
    docker: Engine
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
        max_turns, max_cost = _round_limits(job)
        session = _session_mount(job)
        if session is not None:
            mounts.append(session[0])
        ctx = RunContext(f"{CONTAINER_TASK}/prompt.md", s.model, s.command, CONTAINER_SECRETS, plan.credentials,
                         max_turns, max_cost, s.allowed_tools, s.disallowed_tools, s.append_system_prompt,
                         passthrough, key_proxy=key_proxy is not None,
                         key_proxy_url=key_proxy.url if key_proxy else None,
                         session_dir=session[0].target if session else None,
                         resume_session=session[1] if session else None)
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
            pids_limit=s.pids_limit, timeout_s=max(plan.timeout_s - job.agent_s, 1.0), name=f"toren-{job.id}",
        )
        secrets_dir = job.dir / "secrets"
        stack.callback(remove_tree, secrets_dir)  # 0500 while the agent ran: remove_tree makes it writable first
        yield Sandbox(plan, image.docker, spec, secrets_dir)


#: The agent's sessions in the container (the job's ``agent-session`` directory), and the record of its id.
CONTAINER_SESSION = "/run/toren/session"
SESSION_DIR, SESSION_RECORD = "agent-session", "agent-session.json"
#: A session larger than this (in all) is not carried to the next round; the prompt's summary is enough.
MAX_SESSION_BYTES = 64 * 1024 * 1024


def _session_mount(job: JobRun) -> tuple[Mount, str | None] | None:
    """For a CLI that resumes sessions, on a job whose result goes to GitHub (a later review round may continue
    it): the job's session directory, writable by the agent, mounted where the CLI keeps its sessions; for a
    review round whose previous round ran here, that round's session files copied in and its id to resume.
    Never in the repository or the artifacts; the job's directory is 0700."""
    plan = job.plan
    if not plan.profile.resumes_sessions or plan.github is None:
        return None
    dest = job.dir / SESSION_DIR
    dest.mkdir(mode=0o700, exist_ok=True)
    resume = _previous_session(job, dest) if plan.pull is not None and plan.parent_job else None
    if os.geteuid() == 0 and os.geteuid() != plan.uid:
        for root, _dirs, files in os.walk(dest):
            os.chown(root, plan.uid, plan.gid)
            for name in files:
                os.lchown(os.path.join(root, name), plan.uid, plan.gid)
    return Mount(str(dest), CONTAINER_SESSION, False), resume


def _previous_session(job: JobRun, dest: Path) -> str | None:
    """Copy the previous round's session files (regular files only, never a link, bounded) into ``dest``;
    return its session id, or None (then the prompt's summary of earlier rounds is all the agent has)."""
    import json

    from toren_action.agents.base import SESSION_ID
    from toren_action.core.paths import read_bounded

    plan = job.plan
    assert plan.parent_job is not None
    source = job_dir(job.home, plan.parent_job)
    try:  # a round still running (a retry, a round started by hand) has an agent that may still change its files
        if not job.store.get(plan.parent_job).state.final:
            job.log.line(f"toren: job {plan.parent_job}, the round before, has not ended; its session is not resumed")
            return None
    except TorenError:
        return None
    try:
        record = json.loads((source / SESSION_RECORD).read_text("utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("agent") != plan.profile.name:
        return None
    session = record.get("session_id")
    if not isinstance(session, str) or not SESSION_ID.fullmatch(session):
        return None
    root = source / SESSION_DIR
    copied = _session_files(root)
    if sum(size for _, size in copied) > MAX_SESSION_BYTES:
        job.log.line(f"toren: the previous round's session is over {MAX_SESSION_BYTES >> 20} MiB; not resumed")
        return None
    budget = MAX_SESSION_BYTES
    for rel, _size in copied:
        # every component opened without following a link: what the walk saw as a directory may be one by now
        data = read_bounded(root, rel, budget)
        if data is None:
            continue
        budget -= len(data)
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        except FileExistsError:  # a --verify-retries run of this round: its first run's copy, gone on since
            continue
        with open(fd, "wb") as out:
            out.write(data)
    job.log.stage("building", f"continuing the {plan.profile.name} session of job {plan.parent_job}")
    return session


def _session_files(root: Path, drop_others: bool = False) -> list[tuple[str, int]]:
    """The regular files under ``root`` (relative path, size), reached through no link; ``drop_others``: every
    other entry (a link, a FIFO, a socket) is removed, never entered."""
    import stat

    found = []
    for dirpath, dirs, names in os.walk(root, followlinks=False):
        for name in [*names, *dirs]:
            path = os.path.join(dirpath, name)
            mode = os.lstat(path).st_mode
            if stat.S_ISREG(mode):
                found.append((os.path.relpath(path, root), os.lstat(path).st_size))
            elif not stat.S_ISDIR(mode) and drop_others:
                os.unlink(path)
        dirs[:] = [d for d in dirs if os.path.isdir(os.path.join(dirpath, d))
                   and not os.path.islink(os.path.join(dirpath, d))]  # a removed link is no directory either
    return found


def _keep_session(job: JobRun, watch: _AgentWatch) -> None:
    """The CLI's session id with the job (0600), for the next review round; the session's files redacted like
    the log (a secret the agent read is in its conversation), or removed when they are over MAX_SESSION_BYTES."""
    import json

    root = job.dir / SESSION_DIR
    if not root.is_dir():
        return
    files = _session_files(root, drop_others=True)  # only the CLI's own regular files are kept
    if sum(size for _, size in files) > MAX_SESSION_BYTES:
        job.log.line(f"toren: the agent's session is over {MAX_SESSION_BYTES >> 20} MiB; not kept for a later round")
        remove_tree(root)
        return
    for rel, _size in files:
        path = str(root / rel)
        os.chmod(path, 0o600)  # the conversation: the job's owner's alone, like the record
        with open(os.open(path, os.O_RDONLY | os.O_NOFOLLOW), "rb") as fh:
            data = fh.read()
        masked = job.plan.redactor.bytes(data)
        if masked != data:
            with open(os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_NOFOLLOW), "wb") as fh:
                fh.write(masked)
    session = watch.parser.session_id
    if session:
        write_private(job.dir / SESSION_RECORD, json.dumps({"agent": job.plan.profile.name, "session_id": session}))


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
    job.key_proxy = proxy
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
        verdict = parser.stop or (None if parser.finished else _budget_verdict(self.job, parser, self.prices))
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
    started = time.monotonic()
    timed_out = None
    try:
        with agent_sandbox(job, prepared, image) as sandbox:
            rnd = f" (round {job.round})" if job.round > 1 else ""
            job.enter("running", f"{plan.profile.name} agent in {image.tag} (network {plan.network}){rnd}")
            if job.scanner is not None:  # a retry round: the last round's bandit was used by its scan
                job.scanner.close()
            job.scanner = WarmBandit().start()  # its start-up hides behind the agent's run
            watch.started = True
            try:
                result = sandbox.run(watch.show, on_start=lambda cid: job.store.update(job.id, container_id=cid))
            except JobTimedOut as exc:  # --on-failure branch/draft: the work so far is delivered
                if not delivers(plan, "timeout"):
                    raise
                timed_out = Verdict("timeout", str(exc))
    finally:
        job.agent_s += time.monotonic() - started
        if watch.started:
            _record_usage(job, watch)
            _keep_session(job, watch)
    if timed_out is not None:
        return AgentRun(-1, timed_out, sandbox.spec)
    job.store.update(job.id, exit_code=result.exit_code)
    verdict = watch.stopped[0] if watch.stopped else watch.parser.verdict
    unreachable = getattr(job.key_proxy, "unreachable", None)
    if unreachable and result.exit_code != 0 and (verdict is None or verdict.kind == "error"):
        env = plan.profile.key_proxy.base_url_env if plan.profile.key_proxy else "the base URL"
        verdict = Verdict("error", f"the model API cannot be reached: {unreachable}; check {env}")
    return AgentRun(result.exit_code, verdict, sandbox.spec, watch.parser.final_text)


def _round_limits(job: JobRun) -> tuple[int | None, float | None]:
    """--max-turns and --max-cost-usd for this round: what the rounds before it left."""
    s = job.plan.settings
    turns = max(s.max_turns - int(job.spent.get("turns") or 0), 1) if s.max_turns else None
    cost = max(s.max_cost_usd - job.spent_cost, 0.0001) if s.max_cost_usd else None
    return turns, cost


def _may_retry(job: JobRun) -> bool:
    """Another round after a failed verification: --verify-retries not used up, and time, turns and budget left."""
    plan, s = job.plan, job.plan.settings
    if job.round > s.verify_retries:
        return False
    why = None
    if plan.timeout_s - job.agent_s < MIN_ROUND_S:
        why = "--timeout is used up"
    elif s.max_turns and plan.profile.package and int((job.outcome.usage or {}).get("turns") or 0) >= s.max_turns:
        why = "--max-turns is used up"
    elif s.max_cost_usd and (job.outcome.cost_usd or 0) >= s.max_cost_usd:
        why = "--max-cost-usd is used up"
    if why:
        job.log.line(f"toren: no further round for the agent: {why}")
        return False
    return True


def retry_agent(job: JobRun, prepared: Prepared, image: AgentImage, failed: VerificationFailed,
                previous: str | None) -> AgentRun:
    """Another round for the agent, in a new container on the same work tree: its prompt is the task, what it
    said of its last round (``previous``: its .toren/summary.md, else the CLI's last answer), then the failing
    tests and the tail of their output. The commit is undone (kept in the work tree) so that the next one holds
    all of the agent's work."""
    from toren_action.git import workspace
    from toren_action.job import verify

    plan = job.plan
    details: tuple[verify.TestRun, verify.Judgement] = failed.details  # type: ignore[assignment]  # verify_commit's
    run, verdict = details
    report_text = plan.redactor(verify.failure_report(run, verdict))[:verify.MAX_REPORT_CHARS]
    job.store.add_event(job.id, "verify_retry", {"round": job.round + 1, "failing": redact_data(
        (verdict.broken or run.failed_ids)[:verify.MAX_LISTED], plan.redactor)})
    prompt = job.dir / "task" / "prompt.md"
    task_text = prompt.read_text("utf-8").split(verify.RETRY_HEADING)[0]
    prompt.unlink()
    said = plan.redactor(previous)[:verify.MAX_PREVIOUS_CHARS] if previous else None
    prompt.write_text(verify.retry_prompt(task_text, report_text, job.round + 1, said, MAX_PROMPT_BYTES
                                          if plan.profile.package else None), "utf-8")
    prompt.chmod(0o444)
    workspace.git("reset", "--soft", "-q", prepared.ws.base_commit, cwd=prepared.ws.path, trusted=True)
    job.spent = dict(job.outcome.usage or {})  # already the sum of the rounds so far (_record_usage)
    job.spent_cost = job.outcome.cost_usd or 0.0
    job.round += 1
    job.log.stage("running", f"verification failed; round {job.round} for the agent with the failing tests "
                             f"(--verify-retries {plan.settings.verify_retries})")
    return run_agent(job, prepared, image)


def _usage_sum(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Two rounds' usage as one (numbers added; the model and flags of the later)."""
    out = dict(a)
    for key, value in b.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool) and isinstance(out.get(key), (int, float)):
            out[key] = out[key] + value
        elif key not in out or value is not None:
            out[key] = value
    return out


def delivers(plan: Plan, kind: str) -> bool:
    """Whether a job that ends this way (a verdict's kind, "timeout" or "verification") still pushes its change:
    --on-failure branch or draft, or --push-partial for a budget stop."""
    if kind not in DELIVERABLE_FAILURES:
        return False
    return plan.on_failure in ("branch", "draft") or (plan.settings.push_partial and kind in ("budget", "max_turns"))


def _budget_verdict(job: JobRun, parser, prices) -> Verdict | None:
    plan = job.plan
    s = plan.settings
    if s.max_cost_usd:
        from toren_action.agents.pricing import cost_usd

        cost, _ = cost_usd(_with_model(parser.usage, plan), prices)
        if cost is not None:
            cost += job.spent_cost  # the rounds before this one
        if cost is not None and cost > s.max_cost_usd:
            return Verdict("budget", f"the agent's cost ${cost:.4f} passed --max-cost-usd {s.max_cost_usd:g}")
    turns = parser.usage.turns + int(job.spent.get("turns") or 0)
    if s.max_turns and not plan.profile.enforces_max_turns and turns > s.max_turns:
        return Verdict("max_turns", f"the agent started turn {turns}, past --max-turns {s.max_turns}")
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
    data = _usage_sum(job.spent, usage.to_dict()) if job.spent else usage.to_dict()
    if cost is not None and job.round > 1:
        cost += job.spent_cost
    job.store.update(job.id, usage=data, turns=usage.turns, cost_usd=cost, cost_source=source)
    job.store.add_events(job.id, [(kind, redact_data(item, plan.redactor)) for kind, item in watch.parser.events])
    job.log.stage("running", usage_text(data, cost, source))
    job.outcome.usage, job.outcome.cost_usd, job.outcome.cost_source = data, cost, source


# -- decide the outcome ------------------------------------------------------------------------------------------

def decide_outcome(job: JobRun, agent: AgentRun) -> TorenError | None:
    """Raise the error the agent's end means (a verdict, a failing exit code); a stop that --on-failure branch or
    draft (or --push-partial, for a budget or max-turns stop) delivers is returned instead: the work so far is
    checked and delivered, and the job then ends in that state."""
    verdict = agent.verdict
    if verdict is None and agent.exit_code != 0:
        verdict = job.plan.profile.exit_verdict(agent.exit_code)
    if verdict is not None:
        error = VERDICT_ERRORS[verdict.kind](verdict.message + f"; see `toren logs {job.id}`")
        if not delivers(job.plan, verdict.kind):
            raise error
        how = f"--on-failure {job.plan.on_failure}" if job.plan.on_failure != "discard" else "--push-partial"
        job.log.stage(error.state, f"{verdict.message}; {how}: delivering the work so far")
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
    change = workspace.commit_all(ws, report.commit_message(plan, job.id), s.author_name, s.author_email,
                                  job.setup.excluded if job.setup else ())
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
    """The agent changed nothing: no_changes, or the delivered stop's own state (nothing to push)."""
    if partial:
        job.end(partial.state, f"{partial}; it had changed nothing, so nothing was pushed",
                partial.exit_code)
    else:
        job.enter("no_changes", "the agent left the tree unchanged; nothing to commit")
        job.outcome.state, job.outcome.exit_code, job.outcome.message = "no_changes", 0, "the agent changed nothing"
        if job.plan.pull is not None:
            answer_round(job, None)
    remove_tree(ws.path)
    return job.outcome


# -- check the change --------------------------------------------------------------------------------------------

def check_change(job: JobRun, ws: Workspace, change: Change) -> list:
    """The diff policy, then the code scan, both on the commit; returns the scan's findings (for the PR). In this
    order: the policy refuses files the scan must never read (one over --max-file-mb would cost the host bandit's
    parse of it)."""
    enforce_policy(job, ws, change)
    return code_scan(job, scan_commit(job, ws, change))


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


def scan_commit(job: JobRun, ws: Workspace, change: Change) -> tuple[list, str]:
    """The code scan on the committed files, written out from the commit's objects: (findings, what ran)."""
    from toren_action.guard import codescan

    tree = _committed_tree(job.dir, ws, change, "scan-tree", change.files)
    try:
        return codescan.scan(tree, change.files, job.scanner)
    finally:
        remove_tree(tree)


def code_scan(job: JobRun, scanned: tuple[list, str]) -> list:
    """The code scan's findings logged and recorded; those at or above --fail-on block the job."""
    from toren_action.guard import codescan

    plan = job.plan
    findings, what = scanned
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

def verify_commit(job: JobRun, image: AgentImage, ws: Workspace, change: Change,
                  spec: ContainerSpec) -> VerificationFailed | None:
    """--verify (when set; see verify.py) on a clean copy of exactly the commit about to be pushed, with
    --verify-baseline first on a clean copy of the base commit (once per job). Returns the failure (the caller
    retries, delivers it or raises it); its results are stored with the job either way."""
    from toren_action.job import verify

    plan, s = job.plan, job.plan.settings
    if not s.verify:
        return None
    job.enter("verifying", s.verify)
    runner = verify.Runner(s.verify, s.verify_junit,
                           lambda tree, results, env, on_line, name: _verify_container(
                               job, image, spec, tree, results, env, on_line, name), job.dir, job.log.line)
    if s.verify_baseline and job.baseline is None:
        job.log.stage("verifying", f"baseline: on the base commit {ws.base_commit[:10]}")
        tree = _export_tree(job, ws, ws.base_commit, "baseline-tree")
        try:
            job.baseline = verify.run_once(runner, tree, "baseline")
        finally:
            remove_tree(tree)
        job.log.stage("verifying", f"baseline: {verify.run_line(job.baseline)}")
    tree = _export_tree(job, ws, change.commit, "verify-tree")
    try:
        now = verify.run_once(runner, tree, f"verify-{job.round}")
    finally:
        remove_tree(tree)
    verdict = verify.judge(now, job.baseline, s.verify_allow_preexisting)
    job.rounds.append({"round": job.round, "outcome": verdict.outcome, "counts": dict(now.counts)})
    rec = redact_data(verify.record(s.verify, now, job.baseline, verdict, list(job.rounds)), plan.redactor)
    job.store.update(job.id, verification=rec)
    job.outcome.verification = rec
    job.store.add_event(job.id, "verify", {"command": s.verify, "exit_code": now.exit_code, "commit": change.commit,
                                           "outcome": verdict.outcome, "round": job.round})
    job.log.stage("verifying", verify.verification_line(rec))
    if verdict.outcome == "passed":
        return None
    return VerificationFailed(plan.redactor(
        f"--verify {verdict.reason} on commit {change.commit[:10]}; nothing was pushed (the change is kept in "
        f"{ws.path})" if not delivers(plan, "verification") else
        f"--verify {verdict.reason} on commit {change.commit[:10]}"), (now, verdict))


def _export_tree(job: JobRun, ws: Workspace, commit: str, name: str) -> Path:
    """A fresh copy of ``commit``'s tree for a verification run, owned by the agent's user."""
    from toren_action.git import snapshot, workspace

    dest = job.dir / name
    remove_tree(dest)
    snapshot.export_commit(ws.path, commit, dest)
    workspace.give_tree_to(dest, job.plan.uid, job.plan.gid)
    # The prepared environment's files as the setup left them, not as the agent did; after give_tree_to, which
    # would otherwise chown the kept files through their hard links.
    if job.setup is not None:
        from toren_action.job import setup

        setup.copy_in(job.setup, dest)
    return dest


def _verify_container(job: JobRun, image: AgentImage, spec: ContainerSpec, tree: Path, results: Path,
                      env: dict[str, str], on_line: Callable[[str], None], name: str) -> int:
    """One run of --verify in a container like the agent's, without the agent's secrets and sockets; its exit
    code (JobTimedOut past --verify-timeout)."""
    from toren_action.git import workspace
    from toren_action.job import verify
    from toren_action.sandbox import container

    plan, s = job.plan, job.plan.settings
    workspace.give_tree_to(results, plan.uid, plan.gid)
    # the user's own volumes read-only: what the agent wrote there (a .pth, a cache) cannot sway the check either
    mounts = [Mount(str(tree), m.target, m.read_only) if m.target == "/workspace"
              else Mount(m.source, m.target, True) if m in plan.mounts else m for m in spec.mounts
              if m.target != CONTAINER_SECRETS and not m.target.startswith(CONTAINER_SOCKETS + "/")]
    mounts.append(Mount(str(results), verify.RESULTS_MOUNT, False))
    environment = {k: v for k, v in spec.environment.items() if k != "TOREN_SECRETS_DIR"}
    for key, value in env.items():  # Toren's PYTEST_ADDOPTS after the user's
        environment[key] = f"{environment[key]} {value}" if environment.get(key) else value
    timeout = s.verify_timeout * 60 if s.verify_timeout else plan.timeout_s
    vspec = container.ContainerSpec(**{
        **spec.__dict__, "command": ["/bin/sh", "-c", s.verify], "name": f"toren-{job.id}-{name}",
        "role": "verification", "mounts": mounts, "environment": environment, "timeout_s": timeout})
    return container.run(image.docker, vspec, on_line).exit_code


# -- deliver -----------------------------------------------------------------------------------------------------

def describe_change(job: JobRun, committed: Committed, findings: list, failure: TorenError | None = None) -> PrText:
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
    failed = None if failure is None else (failure.state, str(failure))
    body = plan.redactor(report.pr_body(plan, job.id, change, summary, outcome, findings, failed))
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


def deliver(job: JobRun, ws: Workspace, change: Change, text: PrText, failure: TorenError | None) -> None:
    """Push the commit; open or update the pull request (not with --no-pr; for a failed job only with
    --on-failure draft, and as a draft)."""
    push_commit(job, ws, change)
    gh = job.plan.github
    if job.race is not None or job.plan.settings.race_attempt:  # the race opens one pull request, from its winner
        _keep_for_race(job, ws, change)
        return
    if gh and not job.plan.settings.no_pr and (failure is None or job.plan.on_failure == "draft"):
        open_pull_request(job, ws, text, draft=failure is not None)


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


def open_pull_request(job: JobRun, ws: Workspace, text: PrText, draft: bool = False) -> None:
    plan, s, gh = job.plan, job.plan.settings, job.plan.github
    assert gh is not None
    job.enter("pull_request", f"on {gh.base_repo} from {plan.branch} into {ws.base_branch}")
    job.outcome.pr_url, number, created = gh.api.open_or_update_pr(
        gh.base_repo, gh.repo, plan.branch, gh.pr_base or ws.base_branch, text.title, text.body, s.draft or draft,
        s.labels,
        s.reviewers, s.assignees)
    job.store.update(job.id, pr_url=job.outcome.pr_url)
    for warning in gh.api.warnings:
        job.log.line(f"toren: warning: {warning}")
    job.log.stage("pull_request", f"{'opened' if created else 'updated'} #{number}: {job.outcome.pr_url}")


def push_round(job: JobRun, ws: Workspace, change: Change, image: AgentImage,
               spec: ContainerSpec) -> tuple[Workspace, Change]:
    """Push a review round's commit as a fast-forward of the head the round started from (never a force push).
    When the branch moved meanwhile: fetch it, apply the commit on the new head if it applies cleanly, run the
    checks again on that commit and push it; otherwise end ``branch_moved`` with nothing pushed."""
    from toren_action.git import workspace

    plan = job.plan
    assert plan.pull is not None
    start = plan.pull.head_sha
    job.enter("pushing", f"{plan.branch} to {plan.origin}, a fast-forward of {start[:10]}")
    try:
        workspace.push(ws, plan.branch, False, env=job.git_env, redact=plan.redactor, lease=start,
                       commit=change.commit)
        job.outcome.pushed_to = plan.origin
        return ws, change
    except GitError:
        now = workspace.remote_branch_sha(plan.origin, plan.branch, env=job.git_env, redact=plan.redactor)
        if now == start:
            raise
    if now is None:
        raise BranchMoved(f"{plan.branch} was deleted during the run; nothing was pushed (the change is kept in "
                          f"{ws.path})")
    job.log.stage("pushing", f"{plan.branch} moved from {start[:10]} to {now[:10]} during the run; applying "
                             "the commit on the new head")
    replayed = workspace.replay(ws, plan.branch, change.commit, now, plan.settings.author_name,
                                plan.settings.author_email, env=job.git_env, redact=plan.redactor)
    if replayed is None:
        raise BranchMoved(f"{plan.branch} moved from {start[:10]} to {now[:10]} during the run and the commit does "
                          f"not apply cleanly on it; nothing was pushed (the change is kept in {ws.path})")
    ws, change = replayed
    (job.dir / "change.diff").write_text(plan.redactor(workspace.last_patch(ws, change.commit)), "utf-8")
    check_change(job, ws, change)  # the checks judge the commit that is pushed, the replayed one
    failed = verify_commit(job, image, ws, change, spec)
    if failed is not None:
        raise failed
    job.enter("pushing", f"{plan.branch}: {change.commit[:10]} on {now[:10]}")
    try:
        workspace.push(ws, plan.branch, False, env=job.git_env, redact=plan.redactor, lease=now,
                       commit=change.commit)
    except GitError:
        raise BranchMoved(f"{plan.branch} moved again during the run; nothing was pushed (the change is kept in "
                          f"{ws.path})") from None
    job.outcome.pushed_to = plan.origin
    return ws, change


def answer_round(job: JobRun, change: Change | None) -> None:
    """A review round's answers on the pull request: a reply on each thread it handled, one on the instruction,
    and a row in the body's Iterations section. Best effort: the round's commit is already pushed."""
    from toren_action.core import texts
    from toren_action.git import review
    from toren_action.job.usage import usage_text

    plan, gh, outcome = job.plan, job.plan.github, job.outcome
    assert plan.pull is not None and gh is not None
    pull, r = plan.pull, plan.redactor
    commit, files = (change.commit, change.files) if change else (None, [])
    if change:
        job.store.update(job.id, result_commit=change.commit, files_changed=redact_data(change.files, r),
                         diffstat=r(change.diffstat))
        outcome.files, outcome.diffstat = redact_data(change.files, r), r(change.diffstat)
    failed = review.reply_to_threads(gh.api, pull, lambda t: review.thread_reply(t, commit, files), r)
    verify = (f"{plan.settings.verify} passed" if plan.settings.verify and change
              else "not run" if plan.settings.verify else "not configured")
    asked = plan.settings.instruction or f"{len(pull.threads)} review thread(s)"
    try:
        if plan.settings.instruction:
            done = (f"commit {commit[:10]} changed " + ", ".join(texts.code(f) for f in files[:10])
                    + (f" and {len(files) - 10} more" if len(files) > 10 else "")) if commit \
                else "the agent changed nothing"
            review.comment(gh.api, pull, r(f"{review.REPLY_MARKER}\nToren, round {plan.round}: "
                                           f"{texts.inline(asked[:300])}: {done}."))
        cost = usage_text(outcome.usage, outcome.cost_usd, outcome.cost_source, tokens=False) or ""
        review.add_iteration(gh.api, pull, plan.round or 1, r(asked[:200]), commit, verify, cost)
    except TorenError as exc:
        failed += 1
        job.log.line(f"toren: warning: {exc}")
    if failed:
        job.log.line(f"toren: warning: {failed} answer(s) on the pull request could not be written")
    job.log.stage(job.state, f"answered {len(pull.threads)} thread(s) on #{pull.number}")


def _delivered(job: JobRun, ws: Workspace, change: Change, failure: TorenError | None) -> Outcome:
    """succeeded, or the delivered failure's own state now that the work so far is pushed."""
    if failure:
        draft = f" and draft pull request {job.outcome.pr_url} opened" if job.outcome.pr_url else ""
        job.end(failure.state, f"{failure}; the work so far was pushed to {job.plan.branch} at "
                f"{change.commit[:10]}{draft}", failure.exit_code)
    else:
        job.enter("succeeded", f"{job.plan.branch} at {change.commit[:10]}, {len(change.files)} file(s) changed")
        job.outcome.state, job.outcome.exit_code = "succeeded", 0
    remove_tree(ws.path)
    return job.outcome
