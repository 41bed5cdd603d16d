"""The states of a job, each with everything Toren says about it: the one table of states.

A job moves through the unfinished states (``queued`` → ``preparing`` → ``building`` → ``setting_up`` (with a setup
only) → ``running`` → ``verifying`` → ``pushing`` → ``pull_request``) and stops in one end state, which is never
overwritten. Each state knows whether it is final, the exit code a command that knows only the state returns for it
(``toren logs --follow``, ``toren cancel``), its colour and mark in a terminal, and its mark and title on GitHub
(the progress comment). Errors that end a job in a state of its own name it (``TorenError.state``, in ``errors``).

``JobState`` is a ``str``: it compares equal to its value, formats as it, and is stored as it.
"""

from __future__ import annotations

from enum import Enum
from typing import Any


class JobState(str, Enum):
    """A job's state. ``final``, ``exit_code`` (None while unfinished), ``colour`` (a rich colour), ``mark`` (in a
    terminal), ``github_mark`` and ``github_title`` (the progress comment's row, or its heading once the job ended)."""

    final: bool
    exit_code: int | None
    colour: str
    mark: str
    github_mark: str
    github_title: str

    def __new__(cls, value: str, *facts: Any) -> JobState:
        """A member from its row (``JobState("queued")`` after the class is made looks a member up instead)."""
        member = str.__new__(cls, value)
        member._value_ = value
        member.final, member.exit_code, member.colour, member.mark, member.github_mark, member.github_title = facts
        return member

    def __str__(self) -> str:  # "queued", not "JobState.QUEUED", in every Python
        return str.__str__(self)

    def __format__(self, spec: str) -> str:
        return str.__format__(self, spec)

    #                   value                final  exit  colour    mark GitHub GitHub title
    QUEUED =            "queued",            False, None, "cyan",   "▸", "⏳", "Queued"
    PREPARING =         "preparing",         False, None, "cyan",   "▸", "⏳", "Preparing the workspace"
    BUILDING =          "building",          False, None, "cyan",   "▸", "⏳", "Building the agent image"
    SETTING_UP =        "setting_up",        False, None, "cyan",   "▸", "⏳", "Preparing the environment"
    RUNNING =           "running",           False, None, "cyan",   "▸", "⏳", "Agent running"
    VERIFYING =         "verifying",         False, None, "cyan",   "▸", "⏳", "Verifying"
    PUSHING =           "pushing",           False, None, "cyan",   "▸", "⏳", "Pushing the branch"
    PULL_REQUEST =      "pull_request",      False, None, "cyan",   "▸", "⏳", "Opening the pull request"
    SUCCEEDED =         "succeeded",         True,  0,    "green",  "✔", "✅", "succeeded"
    FAILED =            "failed",            True,  6,    "red",    "✘", "❌", "failed"
    NO_CHANGES =        "no_changes",        True,  0,    "blue",   "•", "➖", "no changes"
    CANCELLED =         "cancelled",         True,  130,  "yellow", "✘", "❌", "cancelled"
    TIMED_OUT =         "timed_out",         True,  7,    "red",    "✘", "❌", "timed out"
    BUDGET_EXCEEDED =   "budget_exceeded",   True,  11,   "red",    "✘", "❌", "budget exceeded"
    AUTH_FAILED =       "auth_failed",       True,  12,   "red",    "✘", "❌", "auth failed"
    RATE_LIMITED =      "rate_limited",      True,  13,   "red",    "✘", "❌", "rate limited"
    MAX_TURNS =         "max_turns",         True,  14,   "red",    "✘", "❌", "max turns"
    BLOCKED_BY_POLICY = "blocked_by_policy", True,  21,   "red",    "✘", "❌", "blocked by policy"
    VERIFICATION_FAILED = "verification_failed", True, 8, "red",   "✘", "❌", "verification failed"
    SETUP_FAILED =      "setup_failed",      True,  22,   "red",    "✘", "❌", "setup failed"
    BRANCH_MOVED =      "branch_moved",      True,  24,   "yellow", "✘", "❌", "branch moved"


#: The end states, for SQL (``state NOT IN (...)``) and membership tests.
FINAL_STATES = frozenset(s for s in JobState if s.final)


class RaceState(str, Enum):
    """A race's state (jobs/race.py): its attempts run, then one process claims the choice, which ends the race
    ``chosen`` (a winner, its pull request opened), ``no_winner`` (no attempt passed) or ``cancelled``."""

    final: bool
    exit_code: int | None

    def __new__(cls, value: str, *facts: Any) -> RaceState:
        member = str.__new__(cls, value)
        member._value_ = value
        member.final, member.exit_code = facts
        return member

    def __str__(self) -> str:
        return str.__str__(self)

    def __format__(self, spec: str) -> str:
        return str.__format__(self, spec)

    #           value        final  exit
    RUNNING =   "running",   False, None
    CHOOSING =  "choosing",  False, None
    CHOSEN =    "chosen",    True,  0
    NO_WINNER = "no_winner", True,  25
    CANCELLED = "cancelled", True,  130
