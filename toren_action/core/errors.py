"""Every error Toren raises on purpose, each with its own process exit code.

The CLI prints ``str(error)`` as one line and exits with ``error.exit_code``; anything else is a bug
and exits 1 with a traceback in the job log only.
"""

from __future__ import annotations


class TorenError(Exception):
    """Base class: a failure the user can act on. ``str()`` is the one-line message."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class UsageError(TorenError):
    """Bad input (a flag, an environment variable, a config value). Nothing has been started."""

    exit_code = 2

    def __init__(self, option: str, message: str) -> None:
        self.option = option
        super().__init__(f"{option}: {message}")


class ConfigError(TorenError):
    """A configuration file is unreadable or does not match the settings schema."""

    exit_code = 3


class DockerError(TorenError):
    """The Docker engine is unreachable or refused an operation."""

    exit_code = 4


class ImageError(TorenError):
    """The base image is missing, cannot be pulled, or the agent image failed to build."""

    exit_code = 5


class AgentFailed(TorenError):
    """The agent ran but exited non-zero."""

    exit_code = 6


class JobTimedOut(TorenError):
    """The agent ran past ``--timeout``; its container was stopped and removed."""

    exit_code = 7


class VerificationFailed(TorenError):
    """``--verify`` exited non-zero on the agent's change; nothing was pushed."""

    exit_code = 8


class GitError(TorenError):
    """A git operation (mirror, clone, commit, push) failed."""

    exit_code = 9


class JobNotFound(TorenError):
    """No job matches the given id or prefix (or the prefix is ambiguous)."""

    exit_code = 10


class BudgetExceeded(TorenError):
    """The agent's running cost passed ``--max-cost-usd``; its container was stopped."""

    exit_code = 11


class AgentAuthFailed(TorenError):
    """The model API refused the agent's credentials (401/403)."""

    exit_code = 12


class AgentRateLimited(TorenError):
    """The model API kept answering 429 or 5xx (rate limit, overload) until the CLI gave up."""

    exit_code = 13


class MaxTurnsReached(TorenError):
    """The agent used all of ``--max-turns`` before finishing."""

    exit_code = 14


class MissingCredentials(TorenError):
    """The agent CLI needs a credential that is not set on the host. Checked before anything is built."""

    exit_code = 15


class GitHubError(TorenError):
    """GitHub refused a request (a validation error such as no commits between the branches, or another status)."""

    exit_code = 16


class GitHubAuthError(GitHubError):
    """GitHub refused the token (401) or the token lacks a permission (403)."""

    exit_code = 17


class GitHubNotFound(GitHubError):
    """The repository or issue does not exist, or the token cannot see it (404)."""

    exit_code = 18


class GitHubRateLimited(GitHubError):
    """GitHub's API rate limit is exhausted."""

    exit_code = 19


class ActorNotAllowed(TorenError):
    """The user who triggered the job may not start jobs (no write access, a bot, a fork)."""

    exit_code = 20


class PolicyBlocked(TorenError):
    """The diff policy found something the change may not contain (a secret, a workflow edit, ...)."""

    exit_code = 21


class Interrupted(TorenError):
    """The user pressed Ctrl-C; the container was removed and the job marked cancelled."""

    exit_code = 130


#: Exit codes by job end state, for commands that report a job's outcome (``run``, ``logs --follow``).
STATE_EXIT_CODES = {
    "succeeded": 0,
    "no_changes": 0,
    "failed": AgentFailed.exit_code,
    "timed_out": JobTimedOut.exit_code,
    "cancelled": Interrupted.exit_code,
    "budget_exceeded": BudgetExceeded.exit_code,
    "auth_failed": AgentAuthFailed.exit_code,
    "rate_limited": AgentRateLimited.exit_code,
    "max_turns": MaxTurnsReached.exit_code,
    "blocked_by_policy": PolicyBlocked.exit_code,
}

#: The job state each agent-side failure ends in.
ERROR_STATES = {
    BudgetExceeded: "budget_exceeded",
    AgentAuthFailed: "auth_failed",
    AgentRateLimited: "rate_limited",
    MaxTurnsReached: "max_turns",
    JobTimedOut: "timed_out",
    PolicyBlocked: "blocked_by_policy",
}
