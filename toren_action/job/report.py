"""What a job tells people: its outcome, the commit message, the pull request's title and body, the progress
comment's closing lines, and the one way its usage and cost are written (the log, the pull request, the progress
comment, the terminal and the Action's step summary all use ``usage_parts``).

Every text that comes from the task, the repository or the agent is redacted and then made inert (texts.py)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from toren_action.core import texts

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


def usage_parts(usage: dict | None, cost_usd: float | None, cost_source: str | None = None, *,
                tokens: bool = True) -> tuple[str, str]:
    """A job's usage and its cost, the one way Toren writes them: ``("2 turns, 1 tool calls, 2400 tokens in
    (0 cached), 160 out", "$0.0123 (price table)")``; without the token counts when ``tokens`` is False."""
    u = usage or {}
    parts = []
    if "turns" in u:
        parts.append(f"{u['turns']} turns")
    if "tool_calls" in u:
        parts.append(f"{u['tool_calls']} tool calls")
    if tokens and "input_tokens" in u:
        parts.append(f"{u['input_tokens']} tokens in ({u.get('cache_read_tokens', 0)} cached), "
                     f"{u.get('output_tokens', 0)} out")
    if cost_usd is None:
        cost = "cost unknown (no price for this model; set `prices` in the config)"
    else:
        cost = f"${cost_usd:.4f}" + (" (price table)" if cost_source == "price-table" else "")
    return ", ".join(parts), cost


def usage_text(usage: dict | None, cost_usd: float | None, cost_source: str | None = None, *,
               tokens: bool = True) -> str:
    """``usage_parts`` on one line; empty for a job that used no model (the shell agent)."""
    if not usage:
        return ""
    return ", ".join(p for p in usage_parts(usage, cost_usd, cost_source, tokens=tokens) if p)


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
    cost = usage_text(usage, outcome.cost_usd, outcome.cost_source, tokens=False)
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
        texts.fence(r(short_stat(change.diffstat))),
        "",
        *(["## Security scan", "", *findings, ""] if findings else []),
        f"- Task: {texts.inline(r(plan.task.source))}",
        f"- Verification: {verify}",
        f"- Agent: {plan.profile.name}" + (f", model {texts.inline(r(model))}" if model else ""),
        *([f"- Usage: {cost}"] if cost else []),  # numbers and fixed words only
        f"- Branch: {texts.code(plan.branch)}, commit `{change.commit[:12]}`",
        "",
        f"_Generated by Toren (job `{job_id}`). Review it as you would any contributor's change._",
        PR_MARKER,
        "",
    ])


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
        lines.append("Reason: " + texts.inline(re.sub(r"(?:/[^\s;:,'\"()`]+){2,}", "<path>", outcome.message)))
        lines.append(html_log_hint(job_id))
    elif outcome.state == "no_changes":
        lines.append("The agent changed nothing; no pull request.")
    facts = [f"took {outcome.duration_s:.0f}s"]
    usage = usage_text(outcome.usage, outcome.cost_usd, outcome.cost_source, tokens=False)
    if usage:
        facts.append(usage)
    lines.append("_" + ", ".join(facts) + "._")
    return lines
