"""A job as JSON: the one object every command's ``--json`` prints for a job (`status`, `run`, `summary`), and the
Action's record of it, with one set of keys, described by ``schema/job.schema.json`` (docs/cli.md#json-output). A
new key is one line here and one property in the schema; a consumer ignores keys it does not know (the schema
allows more). Plain data from the record: no SDK, nothing but the states' table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from toren_action.core.states import JobState

#: The schema of a job's object (installed with the package).
SCHEMA = Path(__file__).with_name("schema") / "job.schema.json"
#: Old names kept for a while, each the same value as its new key (docs/cli.md says when they go).
DEPRECATED_ALIASES = {"job_id": "id", "result_commit": "commit"}


def job_json(job: Any, log: Path | str | None = None, **extra: Any) -> dict[str, Any]:
    """The job record ``job`` (jobs.store.Job) as its JSON object; ``log``: its log's path; ``extra``: a
    command's own keys (in the schema too), which may also refine a record's value it knows better (the exit
    code `toren run` returns)."""
    state = JobState(job.state)
    data: dict[str, Any] = {
        "id": job.id,
        "state": str(state),
        "final": state.final,
        "exit_code": state.exit_code,
        "error": job.error,
        "repo": job.repo,
        "branch": job.branch,
        "base_commit": job.base_commit,
        "commit": job.result_commit,
        "files_changed": list(job.files_changed or []),
        "diffstat": job.diffstat,
        "pr_url": job.pr_url,
        "task": job.inputs.get("spec") or job.inputs.get("issue"),
        "agent": job.agent,
        "model": job.model,
        "agent_exit_code": job.exit_code,
        "base_image": job.base_image,
        "image": job.image,
        "container_id": job.container_id,
        "turns": job.turns,
        "usage": job.usage,
        "cost_usd": job.cost_usd,
        "cost_source": job.cost_source,
        "ai_summary": json.loads(job.ai_summary) if job.ai_summary else None,
        "created_at": job.created_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "updated_at": job.updated_at,
        "duration_s": round(job.duration, 3) if job.duration is not None else None,
        "pid": job.pid,
        "heartbeat_at": job.heartbeat_at,
        "cancel_requested_at": job.cancel_requested_at,
        "verification": job.verification,
        "setup": job.setup,
        "pr_number": job.pr_number,
        "round": job.round,
        "parent_job": job.parent_job,
        "race_id": job.race_id,
        "attempt": job.attempt,
        "log": str(log) if log is not None else None,
        "inputs": job.inputs,
        **extra,
    }
    for old, new in DEPRECATED_ALIASES.items():
        data[old] = data[new]
    return data
