"""Every error Toren raises on purpose, each with its own process exit code.

The CLI prints ``str(error)`` as one line and exits with ``error.exit_code``; anything else is a bug: one
line naming the file its traceback was written to, exit ``INTERNAL_ERROR_EXIT``, never a traceback on the
terminal. An error that ends a job in a state of its own names it (``state``) and takes that state's exit
code; a refusal (``refusal``) is bad input or a caller who may not start a job: nothing was started.
"""

from __future__ import annotations

from typing import ClassVar

from toren_action.core.states import JobState


class TorenError(Exception):
    """Base class: a failure the user can act on. ``str()`` is the one-line message.

    ``state``: the state a job this error ends is marked with; ``exit_code``: the process's exit code (a class
    that sets ``state`` and no ``exit_code`` takes the state's); ``refusal``: nothing was started because the
    input or the caller was refused (the Action reports it as ``refused``, not ``failed``)."""

    exit_code: ClassVar[int] = 1
    state: ClassVar[JobState] = JobState.FAILED
    refusal: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if "state" in cls.__dict__ and "exit_code" not in cls.__dict__:
            assert cls.state.exit_code is not None, cls.state
            cls.exit_code = cls.state.exit_code

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class UsageError(TorenError):
    """Bad input (a flag, an environment variable, a config value). Nothing has been started."""

    exit_code = 2
    refusal = True

    def __init__(self, option: str, message: str) -> None:
        self.option = option
        super().__init__(f"{option}: {message}")


class ConfigError(TorenError):
    """A configuration file is unreadable or does not match the settings schema."""

    exit_code = 3
    refusal = True


class DockerError(TorenError):
    """The Docker engine is unreachable or refused an operation."""

    exit_code = 4


class ImageError(TorenError):
    """The base image is missing, cannot be pulled, or the agent image failed to build."""

    exit_code = 5


class AgentFailed(TorenError):
    """The agent ran but exited non-zero."""

    state = JobState.FAILED  # and its exit code


class JobTimedOut(TorenError):
    """The agent ran past ``--timeout``; its container was stopped and removed."""

    state = JobState.TIMED_OUT  # and its exit code


class VerificationFailed(TorenError):
    """``--verify`` failed on the agent's change (it exited non-zero, or broke a test that passed on the base
    commit); nothing was pushed unless ``--on-failure`` says to push it anyway."""

    state = JobState.VERIFICATION_FAILED  # and its exit code, 8

    def __init__(self, message: str, details: object = None) -> None:
        super().__init__(message)
        #: What job.verify found (the run and its judgement), for another round of the agent.
        self.details = details


class GitError(TorenError):
    """A git operation (mirror, clone, commit, push) failed."""

    exit_code = 9


class JobNotFound(TorenError):
    """No job matches the given id or prefix (or the prefix is ambiguous)."""

    exit_code = 10


class BudgetExceeded(TorenError):
    """The agent's running cost passed ``--max-cost-usd``; its container was stopped."""

    state = JobState.BUDGET_EXCEEDED  # and its exit code


class AgentAuthFailed(TorenError):
    """The model API refused the agent's credentials (401/403)."""

    state = JobState.AUTH_FAILED  # and its exit code


class AgentRateLimited(TorenError):
    """The model API kept answering 429 or 5xx (rate limit, overload) until the CLI gave up."""

    state = JobState.RATE_LIMITED  # and its exit code


class MaxTurnsReached(TorenError):
    """The agent used all of ``--max-turns`` before finishing."""

    state = JobState.MAX_TURNS  # and its exit code


class MissingCredentials(TorenError):
    """The agent CLI needs a credential that is not set on the host. Checked before anything is built."""

    exit_code = 15
    refusal = True


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
    refusal = True


class PolicyBlocked(TorenError):
    """The diff policy found something the change may not contain (a secret, a workflow edit, ...)."""

    state = JobState.BLOCKED_BY_POLICY  # and its exit code


class SetupFailed(TorenError):
    """The repository's setup (``[setup]``, ``.toren/setup.sh``, ``--setup``) failed before the agent started."""

    state = JobState.SETUP_FAILED  # and its exit code


class BranchMoved(TorenError):
    """A pull request's head branch moved while the job ran and Toren's commit does not apply cleanly on top of
    it: nothing was pushed (``toren run --pr``)."""

    state = JobState.BRANCH_MOVED  # and its exit code


class NoWinner(TorenError):
    """A race ended with no attempt that passed verification and the diff policy; no pull request was opened
    (each attempt's own end state says why)."""

    exit_code = 25


class Interrupted(TorenError):
    """The user pressed Ctrl-C; the container was removed and the job marked cancelled."""

    state = JobState.CANCELLED  # and its exit code


class HomeUnusable(TorenError):
    """TOREN_HOME (or the default data directory) cannot hold Toren's state: it is a file, lies under a file,
    cannot be created, is read-only, or its database cannot be opened. Nothing was started (not a refusal of
    the input: the host's state directory is broken)."""

    exit_code = 23


class WorkerLost(KeyboardInterrupt):
    """A job's process is stopped because its worker died (the SIGTERM of PR_SET_PDEATHSIG): the job ends
    ``failed`` (worker lost), not ``cancelled``. A KeyboardInterrupt, so it takes the Ctrl-C path."""

    def __init__(self) -> None:
        super().__init__(WORKER_LOST)


#: The exit code of an unexpected exception (a bug): cli.main prints one line and where its traceback went.
INTERNAL_ERROR_EXIT = 1

#: WorkerLost's text (the job's message says "worker lost: ..."); job/ tells it apart by its type.
WORKER_LOST = "worker lost"


def _subclasses(cls: type[TorenError]) -> list[type[TorenError]]:
    """Every error class below ``cls`` (the tests check each one's state and exit code)."""
    return [c for sub in cls.__subclasses__() for c in (sub, *_subclasses(sub))]
