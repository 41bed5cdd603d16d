"""GitHub in and out: an issue becomes the task, the result becomes a pull request, and one comment on the
issue shows the job's progress. PyGithub does the REST calls (imported lazily: `toren status` never pays
for it). GitHub Enterprise Server works through GitHub's own GITHUB_API_URL and GITHUB_SERVER_URL.

The token stays on the host: it is sent by PyGithub in a header, and to git through an environment-scoped
``http.<server>/.extraHeader`` (never a URL, a command line or a file); every message that could carry it
goes through the job's redactor.
"""

from __future__ import annotations

import base64
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toren_action.config.task import Task, title_of
from toren_action.config.validate import IssueRef
from toren_action.core.errors import (
    ActorNotAllowed,
    GitHubAuthError,
    GitHubError,
    GitHubNotFound,
    GitHubRateLimited,
    UsageError,
)
from toren_action.core.redact import Secret
from toren_action.core.states import JobState
from toren_action.core.texts import defuse_mentions, one_line, terminal
from toren_action.core.texts import title as inert_title

DEFAULT_API_URL = "https://api.github.com"
DEFAULT_SERVER_URL = "https://github.com"
#: Marks Toren's own comments (the progress comment), so they are never read back as part of a task.
MARKER = "<!-- toren:"
PROGRESS_MARKER = "<!-- toren:progress -->"
#: Roles that may start a job (GitHub reports maintain as "write" in `permission`).
ALLOWED_PERMISSIONS = ("admin", "maintain", "write")
#: Comment authors whose words join the task: people with a role in the repository or its organisation.
TRUSTED_ASSOCIATIONS = ("OWNER", "MEMBER", "COLLABORATOR")
#: In the body of every pull request Toren opens: a later run may update (and force-push) only those.
PR_MARKER = "<!-- toren:pull-request -->"
MAX_COMMENTS = 50
#: An issue's task in all, in bytes of UTF-8 (the CLI's prompt takes 100 000 with the rules and the fence).
MAX_TASK_CHARS = 90_000


@dataclass(frozen=True)
class Endpoints:
    api_url: str
    server_url: str

    @classmethod
    def from_environ(cls, environ: dict[str, str]) -> Endpoints:
        api = (environ.get("GITHUB_API_URL") or DEFAULT_API_URL).rstrip("/")
        server = (environ.get("GITHUB_SERVER_URL") or DEFAULT_SERVER_URL).rstrip("/")
        for var, url in (("GITHUB_API_URL", api), ("GITHUB_SERVER_URL", server)):
            if not re.match(r"^https?://[^/@\s]+(/\S*)?$", url):
                raise UsageError(var, f"{url!r} is not an http(s) URL without credentials; e.g. "
                                      f"{DEFAULT_API_URL if var == 'GITHUB_API_URL' else DEFAULT_SERVER_URL}")
            if url.startswith("http://") and not re.match(r"^http://(localhost|127\.[0-9.]+|\[::1\])(:|/|$)", url):
                raise UsageError(var, f"{url} is plain http; the token would cross the network unencrypted, so "
                                      "use https (plain http is accepted only on this machine's loopback)")
        return cls(api, server)

    def clone_url(self, full_name: str) -> str:
        return f"{self.server_url}/{full_name}.git"


def read_token(environ: dict[str, str], token_file: str | None) -> Secret | None:
    """The GitHub token: --github-token-file, else GITHUB_TOKEN, else GH_TOKEN."""
    token = _read_token(environ, token_file)
    if token is not None and not re.fullmatch(r"[\x21-\x7e]+", token.reveal()):
        where = "--github-token-file" if token_file else token.name
        raise UsageError(where, "the token has spaces or characters outside printable ASCII; copy it again")
    return token


def _read_token(environ: dict[str, str], token_file: str | None) -> Secret | None:
    if token_file:
        path = Path(token_file).expanduser()
        try:
            value = path.read_text("utf-8").lstrip("\ufeff").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError("--github-token-file", f"cannot read {token_file} ({exc.__class__.__name__}); point "
                                                    "it at a file holding the token") from None
        if not value:
            raise UsageError("--github-token-file", f"{token_file} is empty; put the token in it")
        return Secret("GITHUB_TOKEN", value)
    for var in ("GITHUB_TOKEN", "GH_TOKEN"):
        if environ.get(var, "").strip():
            return Secret(var, environ[var].strip())
    return None


def git_auth_env(server_url: str, token: Secret | None, environ: dict[str, str] | None = None) -> dict[str, str]:
    """Environment that makes git send the token to ``server_url`` only, as an HTTP header. It lives in the
    environment of the git process (not its arguments, a URL or a config file), after any GIT_CONFIG_* entries
    the user already has."""
    if token is None:
        return {}
    env = os.environ if environ is None else environ
    try:
        n = int(env.get("GIT_CONFIG_COUNT", "0"))
    except ValueError:
        n = 0
    basic = base64.b64encode(f"x-access-token:{token.reveal()}".encode()).decode()
    return {"GIT_CONFIG_COUNT": str(n + 1), f"GIT_CONFIG_KEY_{n}": f"http.{server_url}/.extraHeader",
            f"GIT_CONFIG_VALUE_{n}": f"Authorization: Basic {basic}"}


@contextmanager
def api_errors(what: str) -> Iterator[None]:
    """Map PyGithub's exceptions to Toren's, with a message that says what to do."""
    import github

    try:
        yield
    except github.BadCredentialsException:
        raise GitHubAuthError(f"{what}: GitHub refused the token (401 Bad credentials); check GITHUB_TOKEN, "
                              "GH_TOKEN or --github-token-file, and that it has not expired") from None
    except github.RateLimitExceededException as exc:
        reset = (exc.headers or {}).get("x-ratelimit-reset")
        when = f"; it resets at {time.strftime('%H:%M:%S', time.localtime(int(reset)))}" if reset else ""
        raise GitHubRateLimited(f"{what}: GitHub's API rate limit is exhausted{when}; wait and run again") from None
    except github.UnknownObjectException:
        raise GitHubNotFound(f"{what}: not found (404); check the name, and that the token can see it (a "
                             "fine-grained token must include this repository)") from None
    except github.GithubException as exc:
        raise _mapped(what, exc) from None
    except OSError as exc:  # refused, unreachable, TLS; or retries used up
        import requests.exceptions

        if isinstance(exc, requests.exceptions.RetryError):
            m = re.search(r"too many (\d{3}) error responses", str(exc))
            status = m.group(1) if m else "errors"
            if status in ("403", "429"):
                raise GitHubRateLimited(f"{what}: GitHub kept answering {status} after retries with backoff (a "
                                        "rate limit); wait and run again") from None
            raise GitHubError(f"{what}: GitHub is unavailable (it kept answering {status} after retries); try "
                              "again later") from None
        raise GitHubError(f"{what}: cannot reach GitHub ({exc.__class__.__name__}: {exc}); check "
                          "GITHUB_API_URL and the network") from None


def _mapped(what: str, exc) -> GitHubError:
    data = exc.data if isinstance(exc.data, dict) else {}
    message = str(data.get("message") or exc)
    details = "; ".join(str(e.get("message") or e.get("code")) for e in data.get("errors") or []
                        if isinstance(e, dict))
    headers = {k.lower(): v for k, v in (exc.headers or {}).items()}
    if exc.status == 403 or exc.status == 429:
        if headers.get("x-ratelimit-remaining") == "0" or "rate limit" in message.lower():
            return GitHubRateLimited(f"{what}: GitHub rate limit ({message}); wait and run again")
        accepted = headers.get("x-accepted-github-permissions") or headers.get("x-accepted-oauth-scopes")
        need = f" (it needs {accepted})" if accepted else ""
        return GitHubAuthError(f"{what}: the token lacks permission{need}: {message}; give it contents: write, "
                               "pull-requests: write and issues: write on this repository")
    if exc.status == 422:
        return GitHubError(f"{what}: GitHub refused it (422 {message}{': ' + details if details else ''})")
    return GitHubError(f"{what}: GitHub answered {exc.status}: {message}")


class GitHub:
    """The calls Toren makes, each behind ``api_errors``."""

    def __init__(self, endpoints: Endpoints, token: Secret) -> None:
        import logging

        import github
        from github import Auth

        # PyGithub logs each retried request; Toren reports the outcome in one line instead
        logging.getLogger("github").setLevel(logging.CRITICAL)
        self.endpoints = endpoints
        # reads back to back; writes (comments, pull requests) spaced a little, as GitHub asks of integrations
        # retries: reads and idempotent writes only (a retried POST could open a second pull request or
        # comment); waits for a rate limit are capped, then the job fails with one line
        retry = github.GithubRetry(total=4, backoff_factor=0.5, max_rate_limit_wait=30, secondary_rate_wait=30,
                                   allowed_methods=frozenset({"GET", "HEAD", "PUT", "PATCH", "DELETE", "OPTIONS"}))
        self._gh = github.Github(base_url=endpoints.api_url, auth=Auth.Token(token.reveal()), per_page=100,
                                 timeout=30, retry=retry, seconds_between_requests=0, seconds_between_writes=0.25)
        self._repos: dict[str, Any] = {}
        #: Problems that did not fail the job (a reviewer GitHub refused), to show in the log.
        self.warnings: list[str] = []

    def repo(self, full_name: str):
        if full_name not in self._repos:
            with api_errors(f"repository {full_name}"):
                self._repos[full_name] = self._gh.get_repo(full_name)
        return self._repos[full_name]

    def issue_task(self, ref: IssueRef) -> Task:
        """The issue's title, body and human comments, as a task (fenced as untrusted data by Task.prompt)."""
        repo = self.repo(ref.repo)
        with api_errors(f"issue {ref.repo}#{ref.number}"):
            issue = repo.get_issue(ref.number)
            if issue.pull_request is not None:
                raise UsageError("--issue", f"{ref.repo}#{ref.number} is a pull request, not an issue")
            every = [c for c in issue.get_comments() if _human(c.user) and MARKER not in (c.body or "")]
        # anyone may comment on a public issue; only people with a role in the repository add to the task
        comments = [c for c in every if (c.author_association or "").upper() in TRUSTED_ASSOCIATIONS]
        left_out = len(every) - len(comments)
        parts = [f"# {issue.title}", "", _strip_markers(issue.body or "").strip() or "_(no description)_"]
        if comments:
            parts += ["", "## Comments", ""]
            for c in comments[-MAX_COMMENTS:]:
                when = c.created_at.strftime("%Y-%m-%d %H:%M UTC") if c.created_at else ""
                parts += [f"**@{c.user.login}** ({when}):", "", _strip_markers(c.body or "").strip(), ""]
        if left_out:
            parts += [f"_({left_out} comment(s) from people without a role in the repository left out.)_"]
        body = "\n".join(parts).encode("utf-8", "surrogatepass")[:MAX_TASK_CHARS].decode("utf-8", "ignore")
        return Task(title=title_of(issue.title, fallback=f"Issue #{ref.number}"), body=body,
                    source=f"issue {ref.repo}#{ref.number}")

    def check_actor(self, full_name: str, login: str, allow: tuple[str, ...]) -> str:
        """Refuse a trigger by a bot or a user without write access (unless allow-listed). Returns the role."""
        if login.lower() in {a.lower() for a in allow}:
            return "allow-listed"
        if login.endswith("[bot]"):
            raise ActorNotAllowed(f"--actor: {login} is a bot; bots may not start jobs (add it to allow_actors "
                                  "to trust it)")
        repo = self.repo(full_name)
        try:
            with api_errors(f"permission of {login} on {full_name}"):
                role = repo.get_collaborator_permission(login)
        except GitHubNotFound:
            role = "none"
        if role not in ALLOWED_PERMISSIONS:
            raise ActorNotAllowed(f"--actor: {login} has {role} permission on {full_name}; starting a job needs "
                                  "write, maintain or admin (or allow_actors)")
        return role

    def open_or_update_pr(self, full_name: str, head_repo: str, branch: str, base: str, title: str, body: str,
                          draft: bool, labels: tuple[str, ...] = (), reviewers: tuple[str, ...] = (),
                          assignees: tuple[str, ...] = ()) -> tuple[str, int, bool]:
        """Open the pull request on ``full_name`` from ``head_repo``'s branch (a fork's, or its own), or update
        the open one from that branch. Returns (url, number, created).

        The caller makes each untrusted part of the title and the body inert (toren_action.core.texts); here, last,
        the title is made one defused line, and the body loses its control characters and @mentions (Toren
        writes none; it keeps its Markdown and Toren's own ``Closes #N``)."""
        title, body = inert_title(title) or "Toren", defuse_mentions(terminal(body))
        repo = self.repo(full_name)
        owner = head_repo.split("/")[0]
        head = branch if head_repo.lower() == full_name.lower() else f"{owner}:{branch}"
        with api_errors(f"pull request from {branch}"):
            existing = list(repo.get_pulls(state="open", head=f"{owner}:{branch}"))
            if existing:
                pr = existing[0]
                pr.edit(title=title, body=body)
                created = False
            else:
                pr = repo.create_pull(title=title, body=body, head=head, base=base, draft=draft)
                created = True
        warnings = []
        for what, call, values in (("labels", lambda: pr.add_to_labels(*labels), labels),
                                   ("reviewers", lambda: pr.create_review_request(reviewers=list(reviewers)),
                                    reviewers),
                                   ("assignees", lambda: pr.add_to_assignees(*assignees), assignees)):
            if values:
                try:
                    with api_errors(f"{what} of pull request #{pr.number}"):
                        call()
                except GitHubError as exc:  # the pull request exists; a missing extra is not worth failing
                    warnings.append(str(exc))
        self.warnings = warnings
        return pr.html_url, pr.number, created

    def upsert_comment(self, full_name: str, number: int, comment_id: int | None, body: str) -> int | None:
        """Write ``body`` as a new comment on the issue, or over the comment ``comment_id`` (a race's one comment,
        edited as its table fills). Best effort, like the progress comment: None when GitHub refused."""
        try:
            with api_errors("race comment"):
                issue = self.repo(full_name).get_issue(number)
                if comment_id is None:
                    return issue.create_comment(body).id
                issue.get_comment(comment_id).edit(body)
                return comment_id
        except GitHubError:
            return None

    def progress(self, full_name: str, number: int, job_id: str) -> ProgressComment:
        return ProgressComment(self.repo(full_name), number, job_id)


def _human(user) -> bool:
    return user is not None and getattr(user, "type", "User") != "Bot" and not user.login.endswith("[bot]")


def _strip_markers(text: str) -> str:
    return re.sub(r"<!--.*?-->", "", text, flags=re.S)


class ProgressComment:
    """One comment on the issue, edited as the job moves. Edits are throttled (at most one per MIN_INTERVAL_S,
    except the first and the last); a change that had to wait is written by a timer when its turn comes, so
    the comment does not lag behind a quiet agent."""

    MIN_INTERVAL_S = 10.0

    def __init__(self, repo, number: int, job_id: str, clock: Callable[[], float] = time.monotonic) -> None:
        self._repo = repo
        self._number = number
        self._job_id = job_id
        self._clock = clock
        self._comment = None
        self._last_edit = -1e9
        self._stages: list[tuple[JobState, str]] = []
        self._turns = 0
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()
        self._closed = False
        self.failures = 0

    def stage(self, state: str, detail: str) -> None:
        """A row per unfinished state, each once in a row; an end state is written by finish()."""
        state = JobState(state)
        with self._lock:
            if not state.final and (not self._stages or self._stages[-1][0] != state):
                self._stages.append((state, detail))
            first = self._comment is None
        self._flush(force=first)

    def turns(self, turns: int) -> None:
        """Called from the thread that reads the agent's output: never blocks on GitHub, only schedules."""
        with self._lock:
            if turns == self._turns:
                return
            self._turns = turns
            self._schedule(max(self.MIN_INTERVAL_S - (self._clock() - self._last_edit), 0.0))

    def finish(self, state: str, lines: list[str]) -> None:
        with self._lock:
            self._closed = True
            if self._timer:
                self._timer.cancel()
                self._timer = None
            self._write_locked(self._render(final=(state, lines)))

    def _flush(self, force: bool) -> None:
        with self._lock:
            if self._closed:
                return
            wait = self.MIN_INTERVAL_S - (self._clock() - self._last_edit)
            if force or wait <= 0:
                self._write_locked(self._render())
            else:
                self._schedule(wait)

    def _schedule(self, wait: float) -> None:  # with the lock held
        if self._timer is None and not self._closed:
            self._timer = threading.Timer(wait, self._deferred)
            self._timer.daemon = True
            self._timer.start()

    def _deferred(self) -> None:
        with self._lock:
            self._timer = None
            if not self._closed:
                self._write_locked(self._render())

    def _render(self, final: tuple[str, list[str]] | None = None) -> str:
        head = f"{PROGRESS_MARKER}\n**Toren** job `{self._job_id}`"
        rows = []
        for i, (state, _detail) in enumerate(self._stages):
            done = final is not None or i < len(self._stages) - 1
            title = state.github_title
            if state is JobState.RUNNING and self._turns:
                title += f" (turn {self._turns})"
            rows.append(f"- {'✅' if done else state.github_mark} {title}")
        if final is None:
            return "\n".join([head + ": in progress", "", *rows, ""])
        end, lines = JobState(final[0]), final[1]
        # one line each (none can start a heading of its own) and no @mention (Toren writes none there)
        lines = [defuse_mentions(one_line(line)) for line in lines]
        return "\n".join([head + f": {end.github_mark} **{end.github_title}**", "", *rows, "", *lines, ""])

    def _write_locked(self, body: str) -> None:
        try:
            with api_errors("progress comment"):
                if self._comment is None:
                    self._comment = self._repo.get_issue(self._number).create_comment(body)
                else:
                    self._comment.edit(body)
            self._last_edit = self._clock()
        except GitHubError:
            self.failures += 1  # progress is best effort: the job goes on


def html_log_hint(job_id: str) -> str:
    run_url = os.environ.get("GITHUB_RUN_ID") and os.environ.get("GITHUB_SERVER_URL")
    if run_url:
        return (f"Logs: {os.environ['GITHUB_SERVER_URL']}/{os.environ.get('GITHUB_REPOSITORY', '')}/actions/runs/"
                f"{os.environ['GITHUB_RUN_ID']}")
    return f"Logs: `toren logs {job_id}` on the machine that ran it."
