"""What a job tells people: its outcome, the commit message, the pull request's title and body, the progress
comment's closing lines. Usage and cost are written one way, by usage.py (the log, the pull request, the
progress comment, the terminal and the Action's step summary all use ``usage_parts``).

Every text that comes from the task, the repository or the agent is redacted and then made inert (texts.py)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from toren_action.core import texts
from toren_action.job.usage import usage_text

if TYPE_CHECKING:
    from toren_action.job.plan import Plan


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
    verification: dict | None = None  # verify.record's


def commit_message(plan: Plan, job_id: str) -> str:
    # the subject on one line (no forged trailer), nothing in it or the task's source that GitHub would act on
    return (f"{texts.title(plan.task.title)}\n\nTask: {texts.plain(texts.one_line(plan.task.source))}\n"
            f"Agent: {plan.profile.name}"
            + (f" ({plan.settings.model})" if plan.settings.model else "")
            + f"\nToren-Job: {job_id}\n")


def pr_title(plan: Plan, agent_summary: str | None) -> str:
    """The agent's summary's first line when it is a heading, else the task's title (never a model's summary)."""
    first = (agent_summary or "").strip().splitlines()[:1]
    if first and first[0].startswith("# ") and len(first[0]) > 3:
        return texts.title(plan.redactor(first[0][2:].strip()[:120]))
    return texts.title(plan.task.title)


def short_stat(diffstat: str, lines: int = 60) -> str:
    """A diffstat of at most ``lines`` files, with git's closing total line."""
    rows = diffstat.splitlines()
    if len(rows) <= lines + 1:
        return diffstat
    return "\n".join([*rows[:lines], f" ... and {len(rows) - 1 - lines} more file(s)", rows[-1]])


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + "\n\n_(cut: the summary was longer)_"


def pr_body(plan: Plan, job_id: str, change, agent_summary: str | None, outcome: Outcome,
            code_findings: list | None = None, failed: tuple[str, str] | None = None) -> str:
    """The pull request's body. Every text that comes from the task, the repository or the agent is redacted and
    then made inert (texts.py): it renders as written and cannot mention, close or forge anything. ``failed``
    (the end state and its reason) makes it the body of a draft for a job that failed (--on-failure draft): it
    says why, and it closes no issue."""
    from toren_action.git.github import PR_MARKER, html_log_hint

    r = plan.redactor
    table = ""
    if outcome.verification:  # the verification module (its many patterns) only for a job that verified
        from toren_action.job.verify import verification_table_markdown

        table = verification_table_markdown(outcome.verification)
    verify = "see Tests above" if table else f"{texts.code(r(plan.settings.verify))} passed" if plan.settings.verify \
        else "not configured (`--verify`)"
    gh = plan.github
    issue = gh.issue.number if gh and gh.issue and gh.issue.repo == gh.base_repo else None
    closes = [] if issue is None else [f"Closes #{issue}", ""] if not failed else \
        [f"For #{issue} (this draft closes nothing)", ""]
    why = [] if not failed else [
        "## Why this is a draft", "",
        f"The job ended {texts.code(failed[0])}: {texts.inline(r(_no_paths(failed[1])))}. Toren pushed the work "
        "so far so that it is not lost (`--on-failure draft`); it did not pass the job's checks.", "",
        html_log_hint(job_id), ""]
    usage = outcome.usage
    cost = usage_text(usage, outcome.cost_usd, outcome.cost_source, tokens=False)
    model = (usage or {}).get("model") or plan.settings.model
    findings = [f"- {texts.code(r(f'{f.path}:{f.line}'))} {texts.inline(r(f'{f.severity.lower()} {f.test}: {f.text}'))}"
                for f in (code_findings or [])[:20]]
    return "\n".join([
        f"# {texts.inline(r(plan.task.title))}",
        "",
        *closes,
        *why,
        "## Summary",
        texts.block(_cut(r(agent_summary), 12_000)) if agent_summary else "_The agent left no summary._",
        "",
        "## Changes",
        texts.fence(r(short_stat(change.diffstat))),
        "",
        *(["## Security scan", "", *findings, ""] if findings else []),
        *(["## Tests", "", table, ""] if table else []),
        f"- Task: {texts.inline(r(plan.task.source))}",
        f"- Verification: {verify}",
        f"- Agent: {plan.profile.name}" + (f", model {texts.inline(r(model))}" if model else ""),
        *([f"- Usage: {cost}"] if cost else []),  # numbers and fixed words only
        f"- Branch: {texts.code(plan.branch)}, commit `{change.commit[:12]}`",
        "",
        f"_Generated by Toren (job `{job_id}`). Review it as you would any contributor's change._",
        PR_MARKER,
        *([_source_marker(gh.issue.number)] if closes and gh and gh.issue else []),
        "",
    ])


def _source_marker(number: int) -> str:
    from toren_action.git.review import SOURCE_MARKER

    return SOURCE_MARKER.format(number=number)


def progress_lines(outcome: Outcome, job_id: str) -> list[str]:
    """The progress comment's closing lines: the pull request, or why there is none; then time, usage, cost."""
    from toren_action.git.github import html_log_hint

    lines = []
    if outcome.pr_url:
        lines.append(f"Pull request: {outcome.pr_url}")
    elif outcome.state == "succeeded" and outcome.pushed_to:
        lines.append(f"Branch {texts.code(outcome.branch or '')} pushed (no pull request: `--no-pr`).")
    if outcome.state not in ("succeeded", "no_changes"):
        # the issue may be public: no host paths
        lines.append("Reason: " + texts.inline(_no_paths(outcome.message)))
        lines.append(html_log_hint(job_id))
    elif outcome.state == "no_changes":
        lines.append("The agent changed nothing; no pull request.")
    if outcome.verification:
        from toren_action.job.verify import verification_table_markdown

        lines += ["", verification_table_markdown(outcome.verification), ""]
    facts = [f"took {outcome.duration_s:.0f}s"]
    usage = usage_text(outcome.usage, outcome.cost_usd, outcome.cost_source, tokens=False)
    if usage:
        facts.append(usage)
    lines.append("_" + ", ".join(facts) + "._")
    return lines


def _no_paths(message: str) -> str:
    """A message for GitHub (the issue may be public): no host paths."""
    return re.sub(r"(?:/[^\s;:,'\"()`]+){2,}", "<path>", message)
