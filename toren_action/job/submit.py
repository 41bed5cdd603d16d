"""Submitting a job, the one way `toren run` and the Action do it: plan it (every check; nothing starts),
check that the Docker engine answers, store it (its inputs redacted), and either leave it to the worker or run
it here with the signal handling and heartbeat of a job's process."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

from toren_action.config.settings import Settings
from toren_action.core.errors import TorenError
from toren_action.core.paths import toren_home
from toren_action.core.redact import redact_data
from toren_action.job.log import Reporter
from toren_action.job.plan import Plan, check_engine, make_plan
from toren_action.job.report import Outcome
from toren_action.jobs.store import Store, new_job_id
from toren_action.sandbox.engine import Engine


@dataclass(frozen=True)
class Submitted:
    """A job that exists in the store, queued."""

    plan: Plan
    store: Store
    home: Path
    job_id: str
    docker: Engine


def submit(settings: Settings, *, background: bool) -> Submitted:
    """Plan and store a job. Bad input raises before anything exists; ``background`` saves the environment
    and the inputs as given for the worker, before the job's row exists (so the worker never sees a job
    without them)."""
    from toren_action.sandbox import container

    if background:
        from toren_action.jobs.worker import max_jobs

        max_jobs()  # a bad TOREN_MAX_JOBS is refused now, not by a worker that could then run nothing
    job_id = new_job_id()
    plan = make_plan(settings, job_id)
    docker = container.client()  # the engine must answer before a job exists
    check_engine(plan, docker)  # its networks and runtimes (only when --network or --gpus ask for them)
    home = toren_home()
    store = Store(home)
    inputs = {**settings.to_record(), "_cwd": os.getcwd()}
    if background:
        from toren_action.jobs.worker import save_job_env

        save_job_env(home, job_id, dict(os.environ), inputs)
    # the record keeps the inputs with secret values and token formats masked (a --command holding a token)
    store.create_job(job_id=job_id, repo=plan.origin, branch=plan.branch, agent=plan.profile.name,
                     model=settings.model, base_image=settings.base_image, inputs=redact_data(inputs, plan.redactor))
    plan = with_round(plan, store, job_id)
    return Submitted(plan, store, home, job_id, docker)


def with_round(plan: Plan, store: Store, job_id: str) -> Plan:
    """A review round's record: its pull request, its number, and the round before it (the newest job on the
    same pull request on this host, else the job that opened it)."""
    if plan.pull is None:
        return plan
    before = store.last_round(plan.origin, plan.pull.number, job_id)
    parent = before.id if before else None
    if parent is None and plan.parent_job:  # the job the body names (anyone who may edit it wrote that): only
        try:  # a job of this host on this very repository, else its session could carry another repository's
            named = store.get(plan.parent_job)
        except TorenError:
            named = None
        parent = named.id if named is not None and named.repo == plan.origin else None
    store.update(job_id, pr_number=plan.pull.number, round=plan.round, parent_job=parent, pr_url=plan.pull.html_url)
    return dataclasses.replace(plan, parent_job=parent)


def run_in_foreground(job: Submitted, reporter: Reporter) -> Outcome:
    """Run a submitted job in this process: SIGTERM and SIGHUP take Ctrl-C's path, a heartbeat tells the store
    the job's process lives."""
    from toren_action.job.run import run_job
    from toren_action.jobs.process import heartbeat, stop_on_termination

    stop_on_termination()
    heartbeat(job.home, job.job_id)
    return run_job(job.plan, job.store, job.home, job.job_id, reporter, docker=job.docker)
