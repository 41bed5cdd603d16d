"""A race: several attempts of one task (``--attempts N``, ``--agents A,B[:MODEL]``), each an ordinary job on its
own branch ``<branch>/<agent>-<n>``, and one pull request from the best (docs/race.md).

Submitting (``submit_race``) plans every attempt first (bad input refuses the whole race before anything
exists), then does what the attempts share once: the mirror is fetched and the agent images are built once for
the race, and the base commit is fixed. The attempts then queue for the background worker (TOREN_MAX_JOBS at a
time). Each attempt pushes its branch and opens no pull request; when the last one ends (or, with
--first-verified, the first verified one: the others are stopped) the process that claims the race
(``jobs.race.claim``) chooses (``choose.py``), opens the pull request from the winner with the comparison table in
its body, and deletes the other attempts' branches unless --keep-attempts.

Across a runner fleet (``--race-attempt N``), each attempt writes a result record instead (``write_record``), and
``from_artifacts`` chooses among the records by the same rules.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toren_action.config import validate
from toren_action.config.settings import Settings
from toren_action.core import texts
from toren_action.core.errors import TorenError, UsageError
from toren_action.core.paths import job_dir, toren_home
from toren_action.core.redact import redact_data
from toren_action.core.states import JobState, RaceState
from toren_action.job import choose
from toren_action.job.plan import Plan, make_plan
from toren_action.jobs import race as races
from toren_action.jobs.process import is_job_process
from toren_action.jobs.store import Job, Store, new_job_id

#: The most bytes of one result record that --from-artifacts reads (a record is a few kB).
MAX_RECORD_BYTES = 256 * 1024
RECORD_KIND = "toren-race-attempt"
#: The most .json files --from-artifacts looks at (a race's artifacts hold one record each, at most 16).
MAX_RECORD_FILES = 200
#: How long the process that ends a race waits for the attempts it stopped (--first-verified) to end.
STOP_WAIT_S = 60.0
#: A race choosing for this long without a word from the process that claimed it has lost that process (it
#: waits at most STOP_WAIT_S for stopped attempts, then a few GitHub calls).
CHOOSING_LOST_S = 600.0


def is_race(s: Settings) -> bool:
    """``toren run`` starts a race (not one job) when given --attempts or --agents (a fleet's --race-attempt is one
    job of a race that the workflow's matrix schedules)."""
    return bool(s.attempts or s.agents) and not s.race_attempt


def entries(s: Settings) -> list[tuple[str, str | None]]:
    """Every attempt's (agent, model), in attempt order: each agent of --agents (default --agent), --attempts times
    (default 1). Refuses (exit 2, one line) an unknown agent, too many attempts, --first-verified without
    --verify, and --judge without an Anthropic key."""
    from toren_action.agents import KNOWN_AGENTS

    check_judge(s)
    if s.first_verified and not s.verify:
        raise UsageError("--first-verified", "it stops the race at the first verified attempt, so it needs "
                                             "--verify CMD; add --verify or drop --first-verified")
    agents: list[tuple[str, str | None]] = []
    for item in (s.agents.split(",") if s.agents else [s.agent]):
        name, _, model = item.strip().partition(":")
        if name not in KNOWN_AGENTS:
            raise UsageError("--agents", f"unknown agent {name!r}; use {', '.join(KNOWN_AGENTS)} (agent:model picks "
                                         "a model)")
        if model and (model.startswith("-") or not re.fullmatch(r"[\w.:/@+-]{1,200}", model)):
            raise UsageError("--agents", f"{model!r} is not a model name")
        agents.append((name, model or (s.model if not s.agents or name == s.agent else None)))
    n = s.attempts or 1
    total = len(agents) * n
    if total > races.MAX_ATTEMPTS:
        raise UsageError("--attempts", f"{len(agents)} agent(s) x {n} attempt(s) make {total}; a race has at most "
                                       f"{races.MAX_ATTEMPTS} attempts")
    return [a for a in agents for _ in range(n)]


def check_judge(s: Settings) -> None:
    """``--judge MODEL`` only in a race on this machine (it breaks the choice's ties there), with a model name,
    and with an Anthropic key that this machine can use (the judge is asked from the host). Exit 2, one line."""
    if not s.judge:
        return
    from toren_action.job import model

    name = s.source_of("judge")  # --judge, or TOREN_JUDGE
    if s.race_attempt:
        raise UsageError(name, "it breaks a tie in a race run on this machine; one attempt of a fleet race "
                               "(--race-attempt) has nothing to judge; drop it")
    if not (s.attempts or s.agents):
        raise UsageError(name, "it breaks a tie between the attempts of a race; start one with --attempts N or "
                               "--agents A,B, or drop it")
    if s.judge.startswith("-") or not re.fullmatch(r"[\w.:/@+-]{1,200}", s.judge):
        raise UsageError(name, f"{s.judge!r} is not a model name")
    if not model.available():
        raise UsageError(name, f"the judge is asked through the Anthropic API and no key is set: set "
                               f"{model.KEY_VARS[0]} (or {model.KEY_VARS[1]}), or drop it")


def base_branch_name(s: Settings, race_id: str) -> str:
    return validate.branch_name(s.branch or f"toren/{race_id}")


def attempt_branch(base: str, agent: str, number: int) -> str:
    return validate.branch_name(f"{base}/{agent}-{number}")


def attempt_settings(s: Settings, agent: str, model: str | None, branch: str) -> Settings:
    """One attempt's settings: its agent, model and branch; its own cost cap (--max-cost-usd-per-attempt, never
    above the race's budget); --command only for a shell attempt."""
    caps = [c for c in (s.max_cost_usd_per_attempt, s.max_cost_usd) if c is not None]
    return dataclasses.replace(s, agent=agent, model=model, branch=branch, max_cost_usd=min(caps) if caps else None,
                               command=s.command if agent == "shell" else None, agent_version=s.agent_version
                               if agent == s.agent else None, attempts=None, agents=None)


@dataclass(frozen=True)
class RaceSubmitted:
    race_id: str
    job_ids: tuple[str, ...]
    store: Store
    home: Path
    plans: tuple[Plan, ...]


def race_log(home: Path, race_id: str, line: str) -> None:
    """One line of the race's own log (``races/<id>/race.log``): what the race did once for all its attempts."""
    path = home / "races" / race_id / "race.log"
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(f"{time.strftime('%H:%M:%S')} {line}\n")


def submit_race(s: Settings, say: Callable[[str], None] = lambda _line: None) -> RaceSubmitted:
    """Plan every attempt (all refusals happen here, before anything exists); fetch the mirror and build the
    images once; store the race and queue its attempts for the worker."""
    from toren_action.jobs import worker
    from toren_action.sandbox import container

    worker.max_jobs()  # a bad TOREN_MAX_JOBS is refused now
    wanted = entries(s)
    race_id = new_job_id()
    base = base_branch_name(s, race_id)
    now = time.time()  # ids one millisecond apart: the worker takes queued jobs by id, so attempt 1 starts first
    job_ids = tuple(new_job_id(now + n / 1000) for n in range(1, len(wanted) + 1))
    plans = tuple(make_plan(attempt_settings(s, agent, model, attempt_branch(base, agent, n)), job_ids[n - 1])
                  for n, (agent, model) in enumerate(wanted, start=1))
    _check_base_is_free(plans[0], base)
    docker = container.client()
    home = toren_home()
    store = Store(home)

    def log(line: str) -> None:
        race_log(home, race_id, plans[0].redactor(line))
        say(line)

    base_commit, counters = prepare(home, plans, docker, log)
    from toren_action.git import workspace

    keep_commits_repo(home, race_id, workspace.mirror_path(home, plans[0].origin))
    inputs = redact_data({**s.to_record(), "_cwd": os.getcwd()}, plans[0].redactor)
    races.create_race(store, race_id=race_id, repo=plans[0].origin, branch=base, base_commit=base_commit,
                      budget_usd=s.max_cost_usd, first_verified=s.first_verified, keep_attempts=s.keep_attempts,
                      inputs=inputs, counters=counters)
    gh = plans[0].github
    if gh and gh.issue:  # the race's one comment on the issue, its table filled as attempts end
        comment = gh.api.upsert_comment(gh.base_repo, gh.issue.number, None, comment_body(store, race_id))
        races.update_race(store, race_id, comment_id=comment)
    for n, (plan, job_id) in enumerate(zip(plans, job_ids, strict=True), start=1):
        job_inputs = {**plan.settings.to_record(), "_cwd": os.getcwd()}
        worker.save_job_env(home, job_id, dict(os.environ), job_inputs)
        store.create_job(job_id=job_id, repo=plan.origin, branch=plan.branch, agent=plan.profile.name,
                         model=plan.settings.model, base_image=plan.settings.base_image,
                         inputs=redact_data(job_inputs, plan.redactor), race_id=race_id, attempt=n)
    log(f"race {race_id}: {len(plans)} attempt(s) queued from {base_commit[:10]}, on branches {base}/<agent>-<n>")
    worker.ensure_worker(home)
    return RaceSubmitted(race_id, job_ids, store, home, plans)


def _check_base_is_free(plan: Plan, base: str) -> None:
    """The attempts push to ``<base>/<agent>-<n>``, which git cannot create while a branch ``base`` exists."""
    from toren_action.git import workspace

    env = plan.github.git_env if plan.github else {}
    if workspace.remote_branch_sha(plan.origin, base, env=env, redact=plan.redactor):
        raise UsageError("--branch", f"{base!r} is a branch of {plan.origin}, so the attempts' branches "
                                     f"{base}/<agent>-<n> cannot be pushed; choose another --branch for the race")


def prepare(home: Path, plans: tuple[Plan, ...], docker, log: Callable[[str], None]) -> tuple[str, dict[str, int]]:
    """What every attempt shares, done once: fetch the mirror, fix the base commit, build each agent's image (one
    per distinct profile); a place that keeps the attempts' commits for --pick. Returns (base commit, counters)."""
    from toren_action.git import workspace
    from toren_action.job.run import make_image

    plan = plans[0]
    env = plan.github.git_env if plan.github else {}
    mirror = workspace.update_mirror(home, plan.origin, env=env, redact=plan.redactor, head=plan.origin_head)
    counters = {"mirror_fetches": 1, "image_builds": 0, "image_reuses": 0}
    base = plan.settings.base_branch or workspace.default_branch(mirror)
    try:
        commit = workspace.git("rev-parse", "--verify", f"refs/heads/{base}^{{commit}}", cwd=mirror,
                               trusted=True).strip()
    except TorenError:
        raise UsageError("--base-branch", f"branch {base!r} does not exist in {plan.origin}; name an existing "
                                          "branch") from None
    log(f"mirror: fetched {plan.origin} once for the race; base {base} at {commit[:10]}")
    images: dict[str, bool] = {}
    for p in plans:
        key = f"{p.profile.name}@{p.profile.version}"
        if key in images:
            continue
        tag, built = make_image(p, docker, lambda _line: None)
        images[key] = built
        counters["image_builds" if built else "image_reuses"] += 1
        log(f"image: {'built' if built else 'reusing'} {tag} once for the {p.profile.name} attempts")
    return commit, counters


def keep_commits_repo(home: Path, race_id: str, mirror: Path) -> Path:
    """``races/<id>/commits.git``: a bare repository sharing the mirror's objects, where each attempt's pushed
    commit is kept (refs/attempts/<n>) so that `toren race --pick` can push it again."""
    from toren_action.git import workspace

    path = home / "races" / race_id / "commits.git"
    if not (path / "HEAD").is_file():
        workspace.git("init", "--quiet", "--bare", str(path))
        (path / "objects" / "info" / "alternates").write_text(str(mirror / "objects") + "\n")
    return path


# -- the attempts as the choice sees them ----------------------------------------------------------------------

def as_attempt(job: Job, verify_set: bool) -> choose.Attempt:
    files, ins, dels = choose.parse_diffstat(job.diffstat)
    pushed = job.state is JobState.SUCCEEDED and job.result_commit
    return choose.Attempt(
        number=job.attempt or 0, agent=job.agent, state=str(job.state), model=job.model, branch=job.branch,
        commit=job.result_commit if pushed else None, verify_set=verify_set,
        verification=choose.parse_verification(getattr(job, "verification", None)), files=files or
        len(job.files_changed), insertions=ins, deletions=dels, cost_usd=job.cost_usd, duration_s=job.duration,
        turns=job.turns, job_id=job.id, error=job.error)


def race_attempts(store: Store, race: races.Race) -> list[choose.Attempt]:
    verify_set = bool(race.inputs.get("verify"))
    return [as_attempt(j, verify_set) for j in races.attempts(store, race.id)]


def comment_body(store: Store, race_id: str) -> str:
    """The race's comment on the issue: its state and the table as it fills."""
    race = races.get_race(store, race_id)
    attempts = race_attempts(store, race)
    choice = choose.Choice(**{k: v for k, v in (race.choice or {}).items() if k in ("winner", "why", "judge")},
                           order=()) if race.choice else None
    head = f"**Toren** race `{race.id}`: " + {
        RaceState.RUNNING: f"{sum(1 for a in attempts if a.state in _ENDED)} of {len(attempts)} attempt(s) ended",
        RaceState.CHOOSING: "choosing", RaceState.CHOSEN: "✅ chosen", RaceState.NO_WINNER: "❌ no winner",
        RaceState.CANCELLED: "❌ cancelled"}[race.state]
    lines = [head, "", choose.markdown_table(attempts, choice) if attempts else "_queued_"]
    if race.pr_url:
        lines += ["", f"Pull request: {race.pr_url}"]
    return "\n".join(lines) + "\n"


_ENDED = frozenset(s.value for s in JobState if s.final)


def _update_comment(store: Store, race_id: str, plan: Plan) -> None:
    """The race's comment as the store has it now. The attempts' processes and the one that ends the race each
    write it: under one lock, the body read inside it, so a write made from an older table never lands after
    the final one."""
    import fcntl

    gh = plan.github
    race = races.get_race(store, race_id)
    if not (gh and gh.issue and race.comment_id):
        return
    lock = store.path.parent / "races" / race_id / "comment.lock"
    lock.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(lock, "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        gh.api.upsert_comment(gh.base_repo, gh.issue.number, race.comment_id, comment_body(store, race_id))


def wait_for_race(sub: RaceSubmitted, on_end: Callable[[choose.Attempt], None], poll: float = 0.2) -> races.Race:
    """Wait (in the submitting process: `--disable-daemon`, the Action) until the race ends, calling ``on_end``
    with each attempt as it ends. When every attempt ended and none ended the race (its last one was lost:
    killed, its worker gone), this process ends it."""
    shown: set[int] = set()
    while True:
        sub.store.reap_lost()
        r = races.get_race(sub.store, sub.race_id)
        for a in race_attempts(sub.store, r):
            if a.number not in shown and a.state in _ENDED:
                shown.add(a.number)
                on_end(a)
        if r.state.final:  # the comment final too before this process returns (whoever ended the race)
            try:
                _update_comment(sub.store, r.id, sub.plans[0])
            except Exception:  # noqa: BLE001,S110 - the comment is best effort
                pass
            return r
        if r.state is RaceState.RUNNING and races.all_ended(sub.store, r.id) and races.claim(sub.store, r.id):
            finish_race(sub.store, sub.home, r.id, sub.plans[0])
        elif r.state is RaceState.CHOOSING and time.time() - r.updated_at > CHOOSING_LOST_S:
            # the process that claimed the race died while choosing (finish_race ends it however it fails,
            # unless it was killed): end it here, as a reaper ends a lost job
            races.update_race(sub.store, r.id, state=RaceState.NO_WINNER,
                              error="the process ending the race was lost while choosing; `toren race ID --pick N` "
                                    "opens the pull request from an attempt")
        time.sleep(poll)


def cancel_race(store: Store, home: Path, r: races.Race, wait: float) -> list[str]:
    """Every attempt stopped (a queued one never starts), the race ended cancelled; returns the stopped ids."""
    races.update_race(store, r.id, cancel_requested_at=time.time())
    claimed = races.claim(store, r.id, when_all_ended=False)
    stopped = stop_attempts(store, home, r.id, "cancelled with its race (toren cancel)", wait=wait)
    if claimed:
        races.update_race(store, r.id, state=RaceState.CANCELLED, error="cancelled (toren cancel)")
    race_log(home, r.id, f"cancelled: {len(stopped)} attempt(s) stopped")
    return stopped


# -- the end of an attempt, the end of the race ----------------------------------------------------------------

def after_attempt(store: Store, home: Path, job_id: str, plan: Plan) -> None:
    """Called by an attempt's process once its job ended: the race's comment gets the row; with --first-verified a
    verified attempt ends the race now; the last attempt to end ends it."""
    job = store.get(job_id)
    if not job.race_id:
        return
    race = races.get_race(store, job.race_id)
    if race.state.final:
        return
    try:
        _update_comment(store, race.id, plan)
    except Exception:  # noqa: BLE001,S110 - the comment is best effort
        pass
    mine = as_attempt(job, bool(race.inputs.get("verify")))
    if race.first_verified and mine.eligible and races.claim(store, race.id, when_all_ended=False):
        race_log(home, race.id, f"attempt {mine.number} verified first (--first-verified): stopping the others")
        stop_attempts(store, home, race.id, f"stopped: attempt {mine.number} was verified first (--first-verified)")
        finish_race(store, home, race.id, plan)
    elif races.claim(store, race.id):
        finish_race(store, home, race.id, plan)


def stop_attempts(store: Store, home: Path, race_id: str, reason: str, wait: float = STOP_WAIT_S) -> list[str]:
    """Stop every attempt of the race that has not ended: a queued one never starts; a running one is asked like
    `toren cancel` (SIGTERM: it removes its container and ends cancelled). Waits for them; returns their ids."""
    from toren_action.jobs import worker

    stopped = []
    for job in races.attempts(store, race_id):
        if job.state.final:
            continue
        stopped.append(job.id)
        if job.state is JobState.QUEUED and not job.pid:
            if store.set_state(job.id, JobState.CANCELLED, error=reason):
                worker.discard_job_env(home, job.id)
                continue
            job = store.get(job.id)
        store.request_cancel(job.id)
        if job.pid and is_job_process(job.pid, job.id):
            try:
                os.kill(job.pid, signal.SIGTERM)
            except (ProcessLookupError, PermissionError):
                pass
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline and any(not store.get(j).state.final for j in stopped):
        time.sleep(0.2)
    for job_id in stopped:
        job = store.get(job_id)
        if not job.state.final and not (job.pid and is_job_process(job.pid, job.id)):
            store.set_state(job_id, JobState.CANCELLED, error=reason)
    worker.remove_containers(stopped)
    return stopped


def finish_race(store: Store, home: Path, race_id: str, plan: Plan) -> races.Race:
    """Choose (the race is claimed: this process alone ends it), open the pull request from the winner with the
    table, delete the other attempts' branches unless --keep-attempts, and end the race. However that goes, the
    race ends: a failure is its error, never a race left choosing."""
    try:
        return _finish(store, home, race_id, plan)
    except BaseException as exc:
        race_log(home, race_id, f"the race could not be ended: {exc.__class__.__name__}: {plan.redactor(str(exc))}")
        races.update_race(store, race_id, state=RaceState.NO_WINNER,
                          error=plan.redactor(f"ending the race failed: {exc}"))
        if isinstance(exc, TorenError):
            return races.get_race(store, race_id)
        raise


def _finish(store: Store, home: Path, race_id: str, plan: Plan) -> races.Race:
    race = races.get_race(store, race_id)
    attempts = race_attempts(store, race)
    choice = choose.choose(attempts)
    if race.inputs.get("judge"):
        choice = judge_tie(store, home, race, attempts, choice, plan)
    race_log(home, race_id, f"choice: {choice.why}")
    pr_url, error = None, None
    winner = next((a for a in attempts if a.number == choice.winner), None)
    if winner is not None:
        try:
            pr_url = open_winner_pr(home, plan, race, attempts, choice, winner)
        except TorenError as exc:
            error = f"the pull request from attempt {winner.number} could not be opened: {exc}"
            race_log(home, race_id, error)
    if not race.keep_attempts:
        try:
            delete_branches(plan, [a.branch for a in attempts if a.number != choice.winner], home, race_id)
        except TorenError as exc:  # the choice stands; the branches are left for the user
            race_log(home, race_id, f"the other attempts' branches could not be deleted: {exc}")
    state = RaceState.CHOSEN if winner is not None and error is None else RaceState.NO_WINNER
    if race.cancel_requested_at is not None and winner is None:
        state = RaceState.CANCELLED
    races.update_race(store, race_id, state=state, winner=choice.winner, pr_url=pr_url, choice=choice.to_dict(),
                      error=error or (None if winner else choice.why))
    (home / "races" / race_id / "table.md").write_text(choose.markdown_table(attempts, choice) + "\n", "utf-8")
    try:
        _update_comment(store, race_id, plan)
    except Exception:  # noqa: BLE001,S110 - the comment is best effort
        pass
    return races.get_race(store, race_id)


def judge_tie(store: Store, home: Path, race: races.Race, attempts: list[choose.Attempt], choice: choose.Choice,
              plan: Plan) -> choose.Choice:
    """--judge: when the rules left a tie, the judge (``judge.py``) breaks it and says why; its cost is the
    race's. No tie: the rules' choice, the judge not asked."""
    from toren_action.job import judge

    tied = choose.tied(attempts)
    if len(tied) < 2:
        return choice
    model_name = str(race.inputs["judge"])
    diffs = {a.number: judge.read_diff(job_dir(home, a.job_id) / "change.diff") for a in tied if a.job_id}
    stats = {j.attempt or 0: j.diffstat or "" for j in races.attempts(store, race.id)}
    numbers = tuple(sorted(a.number for a in tied))
    if race.budget_usd is not None and races.spent(store, race.id) >= race.budget_usd:
        verdict = judge.Verdict(numbers[0], numbers, model_name, False,
                                f"the race's budget (${race.budget_usd:g}) is spent, so the judge was not asked")
    else:
        race_log(home, race.id, f"judge: asking {model_name} to break the tie between attempts "
                                f"{', '.join(map(str, numbers))}")
        try:
            verdict = judge.decide(tied, diffs, stats, model_name, plan.redactor,
                                   prices=plan.settings.price_overrides())
        except Exception as exc:  # noqa: BLE001 - the SDK missing or failing oddly: the tie goes to the lowest number
            verdict = judge.Verdict(numbers[0], numbers, model_name, False,
                                    f"the judge could not be asked ({exc.__class__.__name__})")
    cost = "no price known" if verdict.cost_usd is None else f"${verdict.cost_usd:.4f}"
    race_log(home, race.id, f"judge: {'chose' if verdict.usable else 'no usable answer, so'} attempt "
                            f"{verdict.winner} ({cost})")
    rest = tuple(n for n in choice.order if n != verdict.winner)
    return choose.Choice(verdict.winner, (verdict.winner, *rest), verdict.why, choice.reasons, verdict.to_dict())


def open_winner_pr(home: Path, plan: Plan, race: races.Race, attempts: list[choose.Attempt], choice: choose.Choice,
                   winner: choose.Attempt) -> str | None:
    """The one pull request, from the winner's branch: its own body (pr.md) and the comparison table."""
    from toren_action.job import report

    gh, s = plan.github, plan.settings
    if gh is None or s.no_pr:
        race_log(home, race.id, f"winner: attempt {winner.number} on {winner.branch} (no pull request: "
                                f"{'--no-pr' if gh else 'not a GitHub repository'})")
        return None
    check_winner_branch(plan, winner)
    body_file = job_dir(home, winner.job_id or "") / "pr.md"
    body = body_file.read_text("utf-8") if body_file.is_file() else f"# {report.pr_title(plan, None)}\n"
    body = race_pr_body(plan, body, attempts, choice, f"{len(attempts)} attempt(s) of this task; this pull request "
                                                      f"is attempt {winner.number}'s.")
    url, number, _created = gh.api.open_or_update_pr(gh.base_repo, gh.repo, winner.branch, gh.pr_base or "main",
                                                     report.pr_title(plan, None), body, s.draft, s.labels,
                                                     s.reviewers, s.assignees)
    race_log(home, race.id, f"winner: attempt {winner.number}; pull request #{number}: {url}")
    return url


def race_pr_body(plan: Plan, body: str, attempts: list[choose.Attempt], choice: choose.Choice, intro: str) -> str:
    """The winner's own pull request body, then the Race section: the comparison table of every attempt."""
    return plan.redactor(body.rstrip() + f"\n\n## Race\n\n{intro}\n\n"
                         + choose.markdown_table(attempts, choice, _log_links()) + "\n")


def _log_links() -> dict[int, str] | None:
    """In the Action, every row links the run, whose artifacts hold the attempts' logs."""
    server, repo, run = (os.environ.get(k) for k in ("GITHUB_SERVER_URL", "GITHUB_REPOSITORY", "GITHUB_RUN_ID"))
    if not (server and repo and run):
        return None
    url = f"{server}/{repo}/actions/runs/{run}"
    return {n: url for n in range(1, races.MAX_ATTEMPTS + 1)}


def delete_branches(plan: Plan, branches: list[str], home: Path, race_id: str | None = None) -> list[str]:
    """Delete those of ``branches`` that exist at the origin (the losers', pushed); returns the deleted ones."""
    from toren_action.git import workspace

    env = plan.github.git_env if plan.github else {}
    if not branches:
        return []
    out = workspace.git("ls-remote", "--heads", plan.origin, *[f"refs/heads/{b}" for b in branches], env=env,
                        redact=plan.redactor)
    asked = {f"refs/heads/{b}" for b in branches}  # a pattern also matches refs ending in it: only these
    present = [ref for ref in (line.partition("\t")[2] for line in out.splitlines()) if ref in asked]
    if present:
        _push_deletions(plan, present, env, workspace.mirror_path(home, plan.origin))
    deleted = [ref.removeprefix("refs/heads/") for ref in present]
    if race_id:
        race_log(home, race_id, f"deleted {len(deleted)} branch(es) of the other attempts: {', '.join(deleted)}"
                 if deleted else "no branch of another attempt to delete")
    return deleted


def _push_deletions(plan: Plan, refs: list[str], env: dict[str, str], mirror: Path) -> None:
    """Delete ``refs`` at the origin. A push needs a repository to run in; any would do, so Toren's own: the
    mirror, or, where none was fetched (the final job of a fleet race, on a runner of its own), an empty one
    made for the push."""

    from toren_action.git import workspace

    deletions = [f":{ref}" for ref in refs]
    if (mirror / "HEAD").is_file():
        workspace.git("push", "--quiet", "--no-verify", plan.origin, *deletions, env=env, redact=plan.redactor,
                      cwd=mirror, trusted=True)
        return
    with tempfile.TemporaryDirectory(prefix="toren-push-") as tmp:
        workspace.git("init", "--quiet", "--bare", tmp, trusted=True)
        workspace.git("push", "--quiet", "--no-verify", plan.origin, *deletions, env=env, redact=plan.redactor,
                      cwd=tmp, trusted=True)


# -- toren race ID --pick N ------------------------------------------------------------------------------------

def pick(store: Store, home: Path, race: races.Race, number: int, force: bool, plan: Plan) -> str | None:
    """Open (or retarget to) the pull request from attempt ``number``: its commit is pushed again from the
    race's kept commits when its branch was deleted. Refuses (exit 2) an attempt that does not exist, never
    pushed a commit, or cannot win without ``force``."""
    from toren_action.git import workspace

    attempts = race_attempts(store, race)
    try:
        chosen = choose.pick(attempts, number, force)
    except ValueError as exc:
        raise UsageError("--pick", str(exc)) from None
    env = plan.github.git_env if plan.github else {}
    if not workspace.remote_branch_sha(plan.origin, chosen.branch, env=env, redact=plan.redactor):
        keep = home / "races" / race.id / "commits.git"
        workspace.git("push", "--quiet", "--no-verify", plan.origin,
                      f"refs/attempts/{chosen.number}:refs/heads/{chosen.branch}", cwd=keep, env=env,
                      redact=plan.redactor, trusted=True)
    choice = choose.Choice(chosen.number, tuple(a.number for a in attempts), f"picked by hand: attempt "
                           f"{chosen.number} (toren race --pick{' --force' if force else ''})",
                           judge=(race.choice or {}).get("judge"))  # what the judge said (and cost) stays
    pr_url = open_winner_pr(home, plan, race, attempts, choice, chosen)
    old = next((a for a in attempts if a.number == race.winner), None)
    if old is not None and old.number != chosen.number:  # the earlier winner is now a loser like the others
        if plan.github and race.pr_url:
            _close_pr(plan, race.pr_url)
        if not race.keep_attempts:
            delete_branches(plan, [old.branch], home, race.id)
    races.update_race(store, race.id, state=RaceState.CHOSEN, winner=chosen.number, pr_url=pr_url,
                      choice=choice.to_dict(), error=None)
    return pr_url


def _close_pr(plan: Plan, url: str) -> None:
    """The pull request of the attempt that was chosen before --pick: closed (its replacement is open)."""
    gh = plan.github
    m = re.search(r"/pull/(\d+)$", url)
    if gh is None or not m:
        return
    try:
        gh.api.repo(gh.base_repo).get_pull(int(m.group(1))).edit(state="closed")
    except Exception:  # noqa: BLE001,S110 - the new pull request is open; the old one is left for the user
        pass


# -- a race over a runner fleet: one record per attempt, the choice from the records ---------------------------

def fleet_settings(s: Settings) -> Settings:
    """``--race-attempt N``: one attempt of a race whose workflow matrix runs the others: its branch is
    ``<branch>/<agent>-N`` (the branch is required, as every matrix job must name the same one)."""
    if not s.branch:
        raise UsageError("--race-attempt", "every attempt of a fleet race must push under the same name: give "
                                           "--branch (e.g. toren/issue-42)")
    if s.attempts or s.agents:
        raise UsageError("--race-attempt", "runs one attempt: the workflow's matrix says how many and which agents; "
                                           "drop --attempts and --agents (give --agent)")
    check_judge(s)
    return dataclasses.replace(s, branch=attempt_branch(s.branch, s.agent, s.race_attempt or 1),
                               max_cost_usd=s.max_cost_usd_per_attempt or s.max_cost_usd)


def write_record(path: Path, plan: Plan, job: Job) -> dict[str, Any]:
    """The attempt's result record, for --from-artifacts: what the choice reads, nothing secret (the job's
    record is already redacted) and no host path."""
    a = as_attempt(job, bool(plan.settings.verify))
    record = {
        "kind": RECORD_KIND, "version": 1, "attempt": plan.settings.race_attempt, "job_id": job.id,
        "agent": job.agent, "model": job.model, "state": str(job.state), "origin": plan.origin,
        "branch": job.branch, "base_commit": job.base_commit, "commit": a.commit, "verify": plan.settings.verify,
        "verification": a.verification, "diffstat": job.diffstat, "files_changed": job.files_changed[:1000],
        "cost_usd": job.cost_usd, "turns": job.turns, "duration_s": job.duration,
        "error": plan.redactor(job.error) if job.error else None,
        "title": plan.task.title,
    }
    pr = job_dir(toren_home(), job.id) / "pr.md"
    if pr.is_file():
        record["pr_body"] = pr.read_text("utf-8")[:60_000]
    path.write_text(json.dumps(record, indent=1), "utf-8")
    return record


def read_records(folder: Path) -> list[dict[str, Any]]:
    """Every result record under ``folder`` (the downloaded artifacts, one folder each), each checked: a record
    is the matrix job's output, so it is read bounded and only the fields the choice needs are kept."""
    if not folder.is_dir():
        raise UsageError("--from-artifacts", f"{folder} is not a folder; give the folder the artifacts were "
                                             "downloaded to")
    found: dict[int, dict[str, Any]] = {}
    paths = []
    for path in folder.rglob("*.json"):
        paths.append(path)
        if len(paths) > MAX_RECORD_FILES:
            raise UsageError("--from-artifacts", f"more than {MAX_RECORD_FILES} .json files under {folder}; give the "
                                                 "folder the race's artifacts alone were downloaded to")
    for path in sorted(paths):
        if path.is_symlink() or not path.is_file():
            continue
        with open(path, "rb") as fh:
            raw = fh.read(MAX_RECORD_BYTES + 1)
        try:
            data = json.loads(raw) if len(raw) <= MAX_RECORD_BYTES else None
        except ValueError:
            data = None
        if not isinstance(data, dict) or data.get("kind") != RECORD_KIND:
            continue
        n = data.get("attempt")
        if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= races.MAX_ATTEMPTS:
            raise UsageError("--from-artifacts", f"{path.name}: 'attempt' must be a number from 1 to "
                                                 f"{races.MAX_ATTEMPTS}")
        if n in found:
            raise UsageError("--from-artifacts", f"two records of attempt {n}; each matrix job must run its own")
        for key in ("agent", "state", "branch", "origin"):
            if not isinstance(data.get(key), str):
                raise UsageError("--from-artifacts", f"{path.name}: {key!r} is missing or not a text")
        # the agent and the state reach the pull request's table as Toren's own words: only Toren's own values
        from toren_action.agents import KNOWN_AGENTS

        if data["agent"] not in KNOWN_AGENTS:
            raise UsageError("--from-artifacts", f"{path.name}: 'agent' is not one Toren knows "
                                                 f"({', '.join(KNOWN_AGENTS)})")
        if data["state"] not in _STATES:
            raise UsageError("--from-artifacts", f"{path.name}: 'state' is not a job state of Toren's")
        validate.branch_name(data["branch"], "--from-artifacts")
        # the branch must be the attempt's own, <base>/<agent>-<n>: a record naming any other (main) would have
        # the final job delete it as a loser's
        base, _, own = data["branch"].rpartition("/")
        if not base or own != f"{data['agent']}-{n}":
            raise UsageError("--from-artifacts", f"{path.name}: branch {data['branch']!r} is not attempt {n}'s own "
                                                 f"(<branch>/{data['agent']}-{n})")
        found[n] = data
    if not found:
        raise UsageError("--from-artifacts", f"no attempt record (kind {RECORD_KIND!r}) under {folder}")
    origins = {d["origin"] for d in found.values()}
    if len(origins) > 1:
        raise UsageError("--from-artifacts", f"the records are of {len(origins)} different repositories")
    bases = {d["branch"].rpartition("/")[0] for d in found.values()}
    if len(bases) > 1:
        raise UsageError("--from-artifacts", f"the records are of {len(bases)} races (branches under "
                                             f"{', '.join(sorted(bases))}); give the folder of one race")
    return [found[n] for n in sorted(found)]


_STATES = frozenset(str(state) for state in JobState)


def record_attempt(d: dict[str, Any]) -> choose.Attempt:
    files, ins, dels = choose.parse_diffstat(d.get("diffstat") if isinstance(d.get("diffstat"), str) else None)

    def number(key: str) -> float | None:
        v = d.get(key)
        return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 else None

    commit = d.get("commit") if isinstance(d.get("commit"), str) and re.fullmatch(r"[0-9a-f]{40,64}", d["commit"]) \
        else None
    turns = d.get("turns") if isinstance(d.get("turns"), int) and not isinstance(d.get("turns"), bool) else None
    model = d.get("model") if isinstance(d.get("model"), str) else None
    return choose.Attempt(number=d["attempt"], agent=d["agent"][:40], state=d["state"][:40], model=model,
                          branch=d["branch"], commit=commit, verify_set=bool(d.get("verify")),
                          verification=choose.parse_verification(d.get("verification")), files=files,
                          insertions=ins, deletions=dels, cost_usd=number("cost_usd"),
                          duration_s=number("duration_s"), turns=turns, job_id=None,
                          error=d.get("error") if isinstance(d.get("error"), str) else None)


def from_artifacts(folder: Path, s: Settings, keep_attempts: bool) -> tuple[list[choose.Attempt], choose.Choice,
                                                                            str | None]:
    """Choose among the records of a fleet race, open the pull request from the winner, delete the others'
    branches unless ``keep_attempts``. Returns (attempts, choice, pull request URL)."""
    if s.judge:  # TOREN_JUDGE: refused rather than ignored
        raise UsageError(s.source_of("judge"), "a fleet race's records carry no diffs to judge: --from-artifacts "
                                               "chooses by the rules alone; drop it")
    records = read_records(folder)
    attempts = [record_attempt(d) for d in records]
    choice = choose.choose(attempts)
    plan = _fleet_plan(s, records[0])
    if records[0]["origin"] != plan.origin:  # never another repository than the one this job works on
        raise UsageError("--from-artifacts", f"the records are of {records[0]['origin']!r}, not of "
                                             f"{plan.origin!r}; give --repo or --issue of the race's repository")
    home = toren_home()
    pr_url = None
    winner = next((a for a in attempts if a.number == choice.winner), None)
    if winner is not None and plan.github and not s.no_pr:
        from toren_action.job import report

        check_winner_branch(plan, winner)
        gh = plan.github
        rec = next(d for d in records if d["attempt"] == winner.number)
        body = fleet_pr_body(plan, rec.get("pr_body"))
        body = race_pr_body(plan, body, attempts, choice, f"{len(attempts)} attempt(s) over the runner fleet; this "
                                                          f"pull request is attempt {winner.number}'s.")
        pr_url, _n, _c = gh.api.open_or_update_pr(gh.base_repo, gh.repo, winner.branch, gh.pr_base or "main",
                                                  report.pr_title(plan, None), body, s.draft, s.labels, s.reviewers,
                                                  s.assignees)
    if not keep_attempts:
        delete_branches(plan, [a.branch for a in attempts if a.number != choice.winner], home)
    return attempts, choice, pr_url


def _fleet_plan(s: Settings, record: dict[str, Any]) -> Plan:
    """A plan for the final job of a fleet race: the repository of --repo or --issue, never one a record names
    (the task, which the pull request's title comes from, is the one given to this command)."""
    return delivery_plan(s)


def fleet_pr_body(plan: Plan, raw: Any) -> str:
    """The winner's pull request body from its record: a matrix job's artifact, so its text is made inert like
    an agent's (no HTML, no forged marker, no mention, reference or closing keyword acts); what only Toren
    writes (the issue it closes, its markers) this job writes itself, from its own --issue."""
    from toren_action.git.github import PR_MARKER
    from toren_action.git.review import SOURCE_MARKER
    from toren_action.job import report

    gh = plan.github
    text = raw[:60_000] if isinstance(raw, str) else ""
    text = re.sub(r"<!--.*?(?:-->|$)", "", text, flags=re.S)
    text = re.sub(r"^Closes #\d+\n", "", text, flags=re.M)  # the matrix job's own: this job writes it below
    text = texts.block(plan.redactor(text)).strip()
    issue = gh.issue.number if gh and gh.issue and gh.issue.repo == gh.base_repo else None
    head = [] if text.startswith("# ") else [f"# {texts.inline(plan.redactor(report.pr_title(plan, None)))}", ""]
    own = [f"Closes #{issue}", ""] if issue else []
    return "\n".join([*head, text or "_The attempt's record has no description._", "", *own, PR_MARKER,
                      *([SOURCE_MARKER.format(number=issue)] if issue else []), ""])


def check_winner_branch(plan: Plan, winner: choose.Attempt) -> None:
    """The pull request opens from the winner's branch: it must point at the commit that passed, or what is
    merged would not be what was checked (someone pushed to it since, or a record names a commit it never had)."""
    from toren_action.core.errors import BranchMoved
    from toren_action.git import workspace

    env = plan.github.git_env if plan.github else {}
    now = workspace.remote_branch_sha(plan.origin, winner.branch, env=env, redact=plan.redactor)
    if winner.commit is None or now != winner.commit:
        raise BranchMoved(f"the winner's branch {winner.branch} is at {now[:10] if now else 'nothing (deleted)'}, "
                          f"not at attempt {winner.number}'s checked commit {(winner.commit or '?')[:10]}; no pull "
                          "request was opened (`toren race --pick` after checking the branch)")


def delivery_plan(s: Settings) -> Plan:
    """A plan that only delivers (opens a pull request, pushes or deletes branches) and runs no agent: the same
    checks as any job's (repository, token, actor, issue), with the shell profile, so that no model credential
    is asked for on the machine that delivers."""
    return make_plan(dataclasses.replace(s, agent="shell", command="true", model=None, agent_version=None,
                                         max_cost_usd=None, branch=None, force_branch=True, attempts=None,
                                         agents=None, race_attempt=None, judge=None), new_job_id())
