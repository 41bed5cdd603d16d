"""The choice among a race's attempts: pure rules over what each attempt recorded, no I/O.

An attempt can win only when it delivered a commit (its job ``succeeded``: the diff policy and the code scan
passed and its branch was pushed) and, with ``--verify``, its verification passed. Among those, in order: the
most tests fixed, then the fewest broken, then the smallest change (lines added and removed), then the cheapest,
then the fastest; a tie on every rule goes to the lowest attempt number. ``choose`` says which rule decided.

The verification result is read defensively: a job record's ``verification`` (JSON: ``outcome`` passed, failed
or error; ``counts`` with ``fixed``, ``broken``, ...) when there is one, else what the job's end state says (a
job that ``succeeded`` with ``--verify`` set passed it).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

from toren_action.core import texts

OUTCOMES = ("passed", "failed", "error")
#: Counts a verification record may carry (others are ignored).
COUNT_KEYS = ("fixed", "broken", "still_failing", "still_passing", "passed", "failed", "skipped", "total")
_STAT = re.compile(r"^\s*(\d+) files? changed(?:, (\d+) insertions?\(\+\))?(?:, (\d+) deletions?\(-\))?\s*$")


@dataclass(frozen=True)
class Attempt:
    """One attempt as the choice sees it."""

    number: int
    agent: str
    state: str
    model: str | None = None
    branch: str = ""
    commit: str | None = None
    verify_set: bool = False
    verification: dict[str, Any] | None = None
    files: int = 0
    insertions: int = 0
    deletions: int = 0
    cost_usd: float | None = None
    duration_s: float | None = None
    turns: int | None = None
    job_id: str | None = None
    error: str | None = None

    @property
    def outcome(self) -> str | None:
        """passed, failed or error; None when no verification ran (or none was asked for)."""
        return verification_outcome(self.state, self.verification, self.verify_set, self.error)

    @property
    def counts(self) -> dict[str, int]:
        return verification_counts(self.verification)

    @property
    def changed_lines(self) -> int:
        return self.insertions + self.deletions

    @property
    def eligible(self) -> bool:
        return self.why_not is None

    @property
    def why_not(self) -> str | None:
        """Why this attempt cannot win, or None when it can."""
        if self.state != "succeeded" or not self.commit:
            return {"no_changes": "changed nothing", "blocked_by_policy": "blocked by the policy (never pushed)"
                    }.get(self.state, f"ended {self.state}")
        if self.verify_set and self.outcome != "passed":
            return f"verification {self.outcome or 'not run'}"
        return None


def parse_verification(raw: Any) -> dict[str, Any] | None:
    """A job record's ``verification`` (a JSON text or a dict) as a dict, or None when absent or unreadable."""
    if isinstance(raw, (str, bytes)):
        try:
            raw = json.loads(raw)
        except ValueError:
            return None
    return raw if isinstance(raw, dict) else None


def verification_outcome(state: str, verification: dict[str, Any] | None, verify_set: bool,
                         error: str | None = None) -> str | None:
    """The verification's outcome: the record's own when it has a valid one, else from the job's end state."""
    if verification and verification.get("outcome") in OUTCOMES:
        return str(verification["outcome"])
    if not verify_set:
        return None
    if state == "succeeded":
        return "passed"
    if state == "verification_failed" or (state == "failed" and "--verify exited" in (error or "")):
        return "failed"
    return None


def verification_counts(verification: dict[str, Any] | None) -> dict[str, int]:
    """Every count (COUNT_KEYS), 0 where the record has none or a value that is not a count."""
    raw = (verification or {}).get("counts")
    raw = raw if isinstance(raw, dict) else {}
    counts = {}
    for key in COUNT_KEYS:
        value = raw.get(key)
        counts[key] = value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0
    return counts


def parse_diffstat(diffstat: str | None) -> tuple[int, int, int]:
    """(files, insertions, deletions) from git's --stat closing line; zeros when there is none."""
    for line in reversed((diffstat or "").strip().splitlines()):
        m = _STAT.search(line)
        if m:
            return int(m.group(1)), int(m.group(2) or 0), int(m.group(3) or 0)
    return 0, 0, 0


def _num(value: float | None) -> float:
    return math.inf if value is None else value


def rank_key(a: Attempt) -> tuple:
    """Smaller is better: eligible first, then the rules in order, then the attempt number."""
    c = a.counts
    return (not a.eligible, -c["fixed"], c["broken"], a.changed_lines, _num(a.cost_usd), _num(a.duration_s),
            a.number)


#: The rules after eligibility, each (what rank_key's item means, how to say it).
_RULES = (
    ("most tests fixed", lambda a: f"{a.counts['fixed']} fixed"),
    ("fewest tests broken", lambda a: f"{a.counts['broken']} broken"),
    ("smallest change", lambda a: f"{a.changed_lines} lines"),
    ("cheapest", lambda a: "no cost" if a.cost_usd is None else f"${a.cost_usd:.4f}"),
    ("fastest", lambda a: "time unknown" if a.duration_s is None else f"{a.duration_s:.1f}s"),
)


@dataclass(frozen=True)
class Choice:
    """The winner (an attempt number, or None), every attempt in rank order, and why."""

    winner: int | None
    order: tuple[int, ...]
    why: str
    reasons: dict[int, str] = field(default_factory=dict)  # why each attempt that cannot win cannot
    #: What --judge said when it was asked to break a tie (judge.Verdict.to_dict: model, answer, cost_usd, ...).
    judge: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"winner": self.winner, "order": list(self.order), "why": self.why,
                "reasons": {str(k): v for k, v in self.reasons.items()}, "judge": self.judge}


#: What ``--judge`` counts as a tie on cost and on time: within this much of the best attempt's (the larger of an
#: absolute floor and a share of it). Two runs of the same work never cost or take exactly the same: a
#: difference below these is noise, and the judge is asked rather than the noise deciding.
TIE_COST = (0.01, 0.10)
TIE_TIME = (30.0, 0.10)


def _close(value: float | None, best: float | None, tolerance: tuple[float, float]) -> bool:
    if value is None or best is None:
        return value is None and best is None
    return abs(value - best) <= max(tolerance[0], tolerance[1] * abs(best))


def tied(attempts: list[Attempt]) -> list[Attempt]:
    """The attempts ``--judge`` is asked about, by number: those that could win and are equal with the best one on
    tests fixed and broken and the size of the change, and close to it (TIE_COST, TIE_TIME) on cost and time.
    Fewer than two: no tie."""
    ranked = sorted(attempts, key=rank_key)
    if not ranked or not ranked[0].eligible:
        return []
    best = ranked[0]
    return sorted((a for a in ranked if rank_key(a)[:4] == rank_key(best)[:4]
                   and _close(a.cost_usd, best.cost_usd, TIE_COST)
                   and _close(a.duration_s, best.duration_s, TIE_TIME)), key=lambda a: a.number)


def choose(attempts: list[Attempt]) -> Choice:
    """Rank the attempts and say which rule put the winner ahead of the runner-up."""
    ranked = sorted(attempts, key=rank_key)
    reasons = {a.number: a.why_not for a in attempts if a.why_not}
    if not ranked or not ranked[0].eligible:
        return Choice(None, tuple(a.number for a in ranked), "no attempt passed verification and the policy",
                      reasons)
    best = ranked[0]
    order = tuple(a.number for a in ranked)
    if len(ranked) == 1 or not ranked[1].eligible:
        return Choice(best.number, order, f"attempt {best.number} is the only one that passed"
                      + (" verification and the policy" if best.verify_set else " the policy"), reasons)
    second, a_key, b_key = ranked[1], rank_key(best), rank_key(ranked[1])
    for i, (rule, say) in enumerate(_RULES, start=1):
        if a_key[i] != b_key[i]:
            return Choice(best.number, order, f"{rule}: attempt {best.number} ({say(best)}) over attempt "
                          f"{second.number} ({say(second)})", reasons)
    return Choice(best.number, order, f"a tie with attempt {second.number} on every rule: the lower attempt "
                  "number wins", reasons)


def pick(attempts: list[Attempt], number: int, force: bool) -> Attempt:
    """The attempt ``--pick`` names; ValueError (the caller's one-line refusal) when it does not exist, never
    delivered a commit, or cannot win and ``force`` is not given."""
    found = [a for a in attempts if a.number == number]
    if not found:
        raise ValueError(f"there is no attempt {number} (attempts: {', '.join(str(a.number) for a in attempts)})")
    a = found[0]
    if not a.commit:
        raise ValueError(f"attempt {number} has no pushed commit ({a.why_not}); it cannot be picked")
    if not a.eligible and not force:
        raise ValueError(f"attempt {number} cannot be picked: {a.why_not}; --force picks it anyway")
    return a


# -- the table -------------------------------------------------------------------------------------------------

COLUMNS = ("#", "agent", "model", "state", "verify", "fixed", "broken", "diff", "turns", "cost", "time")


def row(a: Attempt) -> dict[str, Any]:
    """One attempt's row as plain values (for --json and both renderings)."""
    c = a.counts
    return {"attempt": a.number, "agent": a.agent, "model": a.model, "state": a.state, "job_id": a.job_id,
            "branch": a.branch, "commit": a.commit, "verification": a.outcome, "fixed": c["fixed"],
            "broken": c["broken"], "files": a.files, "insertions": a.insertions, "deletions": a.deletions,
            "turns": a.turns, "cost_usd": a.cost_usd, "duration_s": a.duration_s, "eligible": a.eligible,
            "why_not": a.why_not}


def cells(a: Attempt) -> list[str]:
    """One attempt's row as the table's texts (COLUMNS)."""
    r = row(a)
    return [str(a.number), a.agent, a.model or "-", a.state, r["verification"] or "-", str(r["fixed"]),
            str(r["broken"]), f"+{a.insertions} -{a.deletions}" if a.commit or a.files else "-",
            "-" if a.turns is None else str(a.turns), "-" if a.cost_usd is None else f"${a.cost_usd:.4f}",
            "-" if a.duration_s is None else f"{a.duration_s:.0f}s"]


def markdown_table(attempts: list[Attempt], choice: Choice | None, links: dict[int, str] | None = None) -> str:
    """The comparison table for a pull request body or the progress comment: every text made inert (a model
    name is the user's; nothing in it may mention or close anything). ``links``: a URL per attempt (its log)."""
    head = "| " + " | ".join(COLUMNS) + " |"
    lines = [head, "|" + "---|" * len(COLUMNS)]
    for a in sorted(attempts, key=lambda x: x.number):
        items = cells(a)
        items[2] = texts.inline(items[2]) if a.model else "-"  # the user's text; the rest is Toren's own words
        if choice and choice.winner == a.number:
            items[0] = f"**{items[0]}** ✔"
        if links and links.get(a.number):
            items[0] = f"[{items[0]}]({links[a.number]})"
        lines.append("| " + " | ".join(items) + " |")
    if choice:
        lines += ["", f"Chosen: {texts.inline(choice.why)}." if choice.winner else
                  f"No winner: {texts.inline(choice.why)}."]
        if choice.judge:
            lines += ["", f"Judge: {texts.inline(judge_line(choice.judge))}."]
    return "\n".join(lines)


def judge_line(judge: dict[str, Any]) -> str:
    """What the judge cost, in words, for the table: ``claude-haiku-4-5, $0.0012 (in the race's total)``."""
    cost = judge.get("cost_usd")
    said = f"${cost:.4f} (in the race's total)" if isinstance(cost, (int, float)) else "no cost recorded"
    return f"{judge.get('model') or '?'}, {said}"
