"""A fake GitHub (Enterprise-style) for tests: the REST API under /api/v3 and git smart HTTP, on one 127.0.0.1 port.

    with FakeGitHub(tmp_path / "gh") as gh:
        gh.add_repo("acme/widget", files={"README.md": "# widget\n"})
        gh.add_issue("acme/widget", 7, "Rename old_name", "please", author="alice")
        gh.set_permission("acme/widget", "alice", "write")
        env = {"GITHUB_API_URL": gh.api_url, "GITHUB_SERVER_URL": gh.server_url, "GITHUB_TOKEN": gh.token}

Every request must carry the token: REST as `Authorization: token T` / `Bearer T`, git as HTTP Basic
(any username, password T). Bare repositories live under `root/{owner}/{name}.git` and are served by the
real `git http-backend`. Nothing here listens on anything but 127.0.0.1.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import json
import os
import re
import subprocess
import tempfile
import threading
import time
import zlib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

DOCS = "https://docs.github.com/rest"
API_PREFIX = "/api/v3"
#: GitHub Enterprise Server's GraphQL endpoint (what PyGithub derives from an /api/v3 base URL).
GRAPHQL_PATH = "/api/graphql"
ROLES = ("admin", "maintain", "write", "triage", "read", "none")
#: The coarse `permission` GitHub reports for each fine role.
COARSE = {"admin": "admin", "maintain": "write", "write": "write", "triage": "read", "read": "read", "none": "none"}
RANK = {"none": 0, "read": 1, "triage": 2, "write": 3, "maintain": 4, "admin": 5}

#: git with a clean, predictable configuration (no user/system config, no signing).
_GIT_ENV = {
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_TERMINAL_PROMPT": "0",
    "GIT_AUTHOR_NAME": "Fake GitHub",
    "GIT_AUTHOR_EMAIL": "noreply@github.invalid",
    "GIT_COMMITTER_NAME": "Fake GitHub",
    "GIT_COMMITTER_EMAIL": "noreply@github.invalid",
}


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _node_id(kind: str, num: int) -> str:
    return base64.b64encode(f"0:{kind}{num}".encode()).decode().rstrip("=")


@dataclass
class Recorded:
    """One request as the server saw it. `body` is de-chunked and, for gzip/deflate bodies, decompressed."""

    method: str
    path: str  # the request target, query string included
    headers: dict[str, str]  # names lower-cased
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body or b"null")


@dataclass
class _Failure:
    method: str
    pattern: re.Pattern
    status: int
    json_body: Any
    headers: dict[str, str]
    times: int


@dataclass
class _Comment:
    id: int
    issue_number: int
    login: str
    bodies: list[str]  # every body it has had, oldest first
    created_at: str
    updated_at: str

    @property
    def body(self) -> str:
        return self.bodies[-1]


@dataclass
class _Issue:
    id: int
    number: int
    title: str
    body: str | None
    login: str
    created_at: str
    updated_at: str
    state: str = "open"
    closed_at: str | None = None
    labels: list[str] = field(default_factory=list)
    assignees: list[str] = field(default_factory=list)
    comments: list[_Comment] = field(default_factory=list)
    pull: dict | None = None  # set for pull requests: head/base refs, draft, reviewers, ...


@dataclass
class _ReviewComment:
    """A pull request review comment (an inline comment on a line of the diff); a reply has in_reply_to_id."""

    id: int
    pull_number: int
    login: str
    body: str
    path: str
    line: int
    side: str
    diff_hunk: str
    commit_id: str
    created_at: str
    review_id: int
    in_reply_to_id: int | None = None


@dataclass
class _Review:
    id: int
    pull_number: int
    login: str
    body: str
    state: str  # APPROVED | CHANGES_REQUESTED | COMMENTED
    commit_id: str
    submitted_at: str


@dataclass
class _Repo:
    id: int
    owner: str
    name: str
    default_branch: str
    private: bool
    description: str | None
    created_at: str
    issues: dict[int, _Issue] = field(default_factory=dict)
    permissions: dict[str, str] = field(default_factory=dict)
    fork_of: str | None = None  # the parent's owner/name for a fork
    review_comments: list[_ReviewComment] = field(default_factory=list)
    reviews: list[_Review] = field(default_factory=list)
    resolved: set[int] = field(default_factory=set)  # ids of the first comments of resolved threads

    @property
    def full_name(self) -> str:
        return f"{self.owner}/{self.name}"


class FakeGitHub:
    """A context manager that serves a fake GitHub on http://127.0.0.1:<random port>.

    `requests` records every request (REST and git) in arrival order; see Recorded."""

    def __init__(self, root: Path, token: str = "ghp_test0123456789abcdefFAKEtoken0000", *, login: str = "toren-bot",
                 user_type: str = "User"):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.token = token
        self.login = login  # the token's owner: author of comments/PRs made through the API
        self.user_type = user_type
        self.requests: list[Recorded] = []
        self._lock = threading.RLock()
        self._repos: dict[str, _Repo] = {}
        self._users: dict[str, dict] = {}
        self._failures: list[_Failure] = []
        #: (repo, callback) run once, just before the next push to that repository is served
        self._before_push: list[tuple[str, Any]] = []
        self._ids = 1000
        self.rate_limit = 5000
        self.rate_remaining = 4999
        self.user(login, user_type)
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            server_version = "GitHub.com"
            sys_version = ""

            def log_message(self, *args):  # quiet
                pass

            def _serve(self):
                try:
                    body = self._read_body()
                except ValueError as exc:
                    self._send(400, {"Content-Type": "text/plain"}, f"bad request body: {exc}\n".encode())
                    self.close_connection = True
                    return
                headers = {k.lower(): v for k, v in self.headers.items()}
                req = Recorded(self.command, self.path, headers, body)
                with fake._lock:
                    fake.requests.append(req)
                status, out_headers, out = fake._dispatch(req)
                self._send(status, out_headers, out)

            def _read_body(self) -> bytes:
                if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
                    parts = []
                    while True:
                        line = self.rfile.readline(65537)
                        if not line:
                            raise ValueError("truncated chunked body")
                        size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                        if size == 0:
                            while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):  # trailers
                                pass
                            break
                        parts.append(self.rfile.read(size))
                        self.rfile.readline(65537)  # the CRLF after each chunk
                    body = b"".join(parts)
                else:
                    length = int(self.headers.get("Content-Length") or 0)
                    body = self.rfile.read(length) if length else b""
                encoding = (self.headers.get("Content-Encoding") or "").lower().strip()
                if encoding in ("gzip", "x-gzip"):
                    body = gzip.decompress(body)
                elif encoding == "deflate":
                    body = zlib.decompress(body)
                return body

            def _send(self, status: int, headers: dict[str, str], body: bytes):
                self.send_response(status)
                for k, v in headers.items():
                    if k.lower() not in ("content-length", "transfer-encoding", "connection"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _serve

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="fake-github", daemon=True)

    # ------------------------------------------------------------------ lifecycle

    @property
    def server_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def api_url(self) -> str:
        return self.server_url + API_PREFIX

    def start(self) -> FakeGitHub:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> FakeGitHub:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------------ state helpers

    def _next_id(self) -> int:
        with self._lock:
            self._ids += 1
            return self._ids

    def user(self, login: str, type: str = "User") -> dict:
        """Register (or look up) a user; returns its stored record."""
        with self._lock:
            if login not in self._users:
                self._users[login] = {"login": login, "id": self._next_id(), "type": type}
            return self._users[login]

    def add_repo(self, full_name: str, files: dict[str, str | bytes] | None = None, default_branch: str = "main",
                 private: bool = True, description: str | None = None) -> Path:
        """Create a bare repository with one commit on `default_branch` holding `files`; returns its path."""
        owner, name = self._split(full_name)
        bare = self.bare_path(full_name)
        bare.parent.mkdir(parents=True, exist_ok=True)
        self._git("init", "--bare", "-q", "-b", default_branch, str(bare))
        self._git("config", "http.receivepack", "true", git_dir=bare)
        with tempfile.TemporaryDirectory(prefix="fake-gh-") as tmp:
            work = Path(tmp) / "work"
            for rel, content in (files or {"README.md": f"# {name}\n"}).items():
                path = work / rel
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(content.encode() if isinstance(content, str) else content)
            work.mkdir(exist_ok=True)
            env = {"GIT_INDEX_FILE": str(Path(tmp) / "index"), "GIT_WORK_TREE": str(work)}
            self._git("add", "-A", git_dir=bare, env=env)
            self._git("commit", "-q", "--no-verify", "--allow-empty", "-m", "Initial commit", git_dir=bare, env=env)
        self.user(owner, "Organization" if owner != self.login else self.user_type)
        with self._lock:
            self._repos[full_name] = _Repo(self._next_id(), owner, name, default_branch, private, description, _now())
        return bare

    def add_issue(self, repo: str, number: int, title: str, body: str | None = "", comments: list[dict] | None = None,
                  author: str = "alice", labels: list[str] | None = None, state: str = "open") -> None:
        """comments: [{"login", "body", "type": "User"|"Bot", "created_at": iso}] (type/created_at optional)."""
        r = self._repo(repo)
        self.user(author)
        created = _now()
        issue = _Issue(self._next_id(), number, title, body, author, created, created, state=state,
                       labels=list(labels or []))
        for c in comments or []:
            self.user(c["login"], c.get("type", "Bot" if c["login"].endswith("[bot]") else "User"))
            at = c.get("created_at") or created
            issue.comments.append(_Comment(self._next_id(), number, c["login"], [c["body"]], at, at))
        with self._lock:
            r.issues[number] = issue

    def set_permission(self, repo: str, login: str, role: str) -> None:
        """role: admin | maintain | write | triage | read | none."""
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}")
        self.user(login)
        with self._lock:
            self._repo(repo).permissions[login] = role

    def bare_path(self, repo: str) -> Path:
        owner, name = self._split(repo)
        return self.root / owner / f"{name}.git"

    def fail_next(self, method: str, path_regex: str, status: int, json_body: Any = None,
                  headers: dict[str, str] | None = None, times: int = 1) -> None:
        """Answer the next `times` requests whose method matches (`*` = any) and whose path (no query string,
        e.g. /api/v3/repos/acme/widget/issues/7/comments or /acme/widget.git/git-receive-pack) matches
        `path_regex` (re.search) with `status`. Checked before authentication. Default bodies are GitHub's:
        401 Bad credentials, 403 primary rate limit (with x-ratelimit-remaining: 0), 404 Not Found,
        422 Validation Failed, 5xx Server Error."""
        with self._lock:
            self._failures.append(_Failure(method.upper(), re.compile(path_regex), status, json_body,
                                           dict(headers or {}), times))

    def comment_history(self, repo: str, issue_number: int) -> list[list[str]]:
        """For each comment on the issue (oldest first), every body it has had (oldest first)."""
        with self._lock:
            return [list(c.bodies) for c in self._repo(repo).issues[issue_number].comments]

    def comments(self, repo: str, issue_number: int) -> list[dict]:
        """The issue's comments as the API would show them."""
        with self._lock:
            r = self._repo(repo)
            return [self._comment_json(r, c) for c in r.issues[issue_number].comments]

    def issue(self, repo: str, number: int) -> dict:
        with self._lock:
            r = self._repo(repo)
            return self._issue_json(r, r.issues[number])

    def pulls(self, repo: str) -> list[dict]:
        """Every pull request on the repository (any state), as the API would show them."""
        with self._lock:
            r = self._repo(repo)
            return [self._pull_json(r, i) for i in sorted(r.issues.values(), key=lambda i: i.number) if i.pull]

    def add_fork(self, fork: str, parent: str) -> Path:
        """A fork of `parent` (its branches copied) owned by the fork's owner."""
        owner, name = self._split(fork)
        bare = self.bare_path(fork)
        bare.parent.mkdir(parents=True, exist_ok=True)
        self._git("clone", "--bare", "-q", str(self.bare_path(parent)), str(bare))
        self._git("config", "http.receivepack", "true", git_dir=bare)
        self.user(owner)
        p = self._repo(parent)
        with self._lock:
            self._repos[fork] = _Repo(self._next_id(), owner, name, p.default_branch, p.private, p.description,
                                      _now(), fork_of=parent)
        return bare

    def commit(self, repo: str, branch: str, files: dict[str, str | bytes], message: str = "A change",
               parent: str | None = None) -> str:
        """Commit `files` (added or replaced) on top of `branch` (or of `parent`, a branch or sha, creating
        `branch`), straight in the bare repository, as someone pushing would; returns the new sha."""
        bare = self.bare_path(repo)
        start = parent or f"refs/heads/{branch}"
        with tempfile.TemporaryDirectory(prefix="fake-gh-") as tmp:
            env = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
            self._git("read-tree", start, git_dir=bare, env=env)
            for rel, content in files.items():
                data = content.encode() if isinstance(content, str) else content
                blob = subprocess.run(["git", "--git-dir", str(bare), "hash-object", "-w", "--stdin"], input=data,
                                      check=True, capture_output=True, env={**os.environ, **_GIT_ENV}).stdout
                self._git("update-index", "--add", "--cacheinfo", f"100644,{blob.decode().strip()},{rel}",
                          git_dir=bare, env=env)
            tree = self._git("write-tree", git_dir=bare, env=env).strip()
        base = self._git("rev-parse", start + "^{commit}", git_dir=bare).strip()
        sha = self._git("commit-tree", tree, "-p", base, "-m", message, git_dir=bare).strip()
        self._git("update-ref", f"refs/heads/{branch}", sha, git_dir=bare)
        return sha

    def add_pull(self, repo: str, head: str, files: dict[str, str | bytes], title: str = "A change",
                 body: str | None = "", author: str | None = None, base: str | None = None,
                 head_repo: str | None = None, state: str = "open", merged: bool = False) -> int:
        """A pull request from `head` (a new branch of `head_repo`, default `repo`: a fork's for a fork PR, made
        with `files` committed on `base`) into `base`; returns its number."""
        r = self._repo(repo)
        base = base or r.default_branch
        source = head_repo or repo
        base_sha = self._rev(r, f"refs/heads/{base}")
        assert base_sha, base
        head_sha = self.commit(source, head, files, title, parent=base_sha if source == repo else base)
        author = author or self.login
        self.user(author)
        number = max(r.issues, default=0) + 1
        at = _now()
        issue = _Issue(self._next_id(), number, title, body, author, at, at, state=state)
        if state == "closed":
            issue.closed_at = at
        issue.pull = {"head": head, "base": base, "head_sha": head_sha, "base_sha": base_sha, "draft": False,
                      "reviewers": [], "maintainer_can_modify": True, "commits": 1, "merged": merged,
                      "head_repo": source}
        with self._lock:
            r.issues[number] = issue
        return number

    def add_review(self, repo: str, number: int, login: str, body: str = "", state: str = "COMMENTED",
                   user_type: str | None = None) -> int:
        """A submitted review (its body may be empty); returns its id."""
        r = self._repo(repo)
        self.user(login, user_type or ("Bot" if login.endswith("[bot]") else "User"))
        review = _Review(self._next_id(), number, login, body, state, self._pull_head(r, number), _now())
        with self._lock:
            r.reviews.append(review)
        return review.id

    def add_review_comment(self, repo: str, number: int, login: str, body: str, path: str = "", line: int = 0,
                           in_reply_to: int | None = None, review_id: int | None = None,
                           user_type: str | None = None) -> int:
        """An inline comment on `path` at `line` (of the head's version, side RIGHT) of pull request `number`,
        or a reply to comment `in_reply_to` (same path and line). Its diff_hunk is GitHub's: the diff hunk up to
        the commented line. Returns its id."""
        r = self._repo(repo)
        self.user(login, user_type or ("Bot" if login.endswith("[bot]") else "User"))
        issue = r.issues[number]
        assert issue.pull is not None
        if in_reply_to is not None:
            root = self._review_comment(r, in_reply_to)
            assert root is not None, in_reply_to
            while root.in_reply_to_id is not None:
                root = self._review_comment(r, root.in_reply_to_id)
                assert root is not None
            path, line, hunk, commit = root.path, root.line, root.diff_hunk, root.commit_id
        else:
            commit = self._pull_head(r, number)
            hunk = self._diff_hunk(repo, issue.pull["base_sha"], commit, path, line)
        if review_id is None:  # a lone comment makes a review of its own, as on GitHub
            review_id = self.add_review(repo, number, login, "", "COMMENTED", user_type)
        c = _ReviewComment(self._next_id(), number, login, body, path, line, "RIGHT", hunk, commit, _now(),
                           review_id, in_reply_to)
        with self._lock:
            r.review_comments.append(c)
        return c.id

    def resolve_thread(self, repo: str, comment_id: int) -> None:
        """Mark the thread that comment `comment_id` starts as resolved."""
        with self._lock:
            self._repo(repo).resolved.add(comment_id)

    def review_comments(self, repo: str, number: int) -> list[dict]:
        """The pull request's review comments (replies included) as the API would show them."""
        with self._lock:
            r = self._repo(repo)
            return [self._review_comment_json(r, c) for c in r.review_comments if c.pull_number == number]

    def before_next_push(self, repo: str, callback) -> None:
        """Run `callback()` once, just before the next push to `repo` is served (its ref advertisement): for a
        branch someone else moved while a job ran (see commit())."""
        with self._lock:
            self._before_push.append((repo, callback))

    def branch_sha(self, repo: str, branch: str) -> str | None:
        return self._rev(self._repo(repo), f"refs/heads/{branch}")

    def read_file(self, repo: str, ref: str, path: str) -> bytes:
        return subprocess.run(["git", "--git-dir", str(self.bare_path(repo)), "show", f"{ref}:{path}"],
                              check=True, capture_output=True, env={**os.environ, **_GIT_ENV}).stdout

    def git_requests(self) -> list[Recorded]:
        return [r for r in self.requests if not r.path.startswith(API_PREFIX + "/") and r.path != API_PREFIX
                and r.path != GRAPHQL_PATH]

    def api_requests(self) -> list[Recorded]:
        return [r for r in self.requests if r.path.startswith(API_PREFIX + "/") or r.path == API_PREFIX]

    # ------------------------------------------------------------------ internals

    @staticmethod
    def _split(full_name: str) -> tuple[str, str]:
        owner, _, name = full_name.partition("/")
        if not owner or not name or "/" in name:
            raise ValueError(f"expected owner/name, got {full_name!r}")
        return owner, name

    def _repo(self, full_name: str) -> _Repo:
        return self._repos[full_name]

    def _git(self, *args: str, git_dir: Path | None = None, env: dict | None = None) -> str:
        cmd = ["git"] + (["--git-dir", str(git_dir)] if git_dir else []) + list(args)
        return subprocess.run(cmd, check=True, capture_output=True, text=True,
                              env={**os.environ, **_GIT_ENV, **(env or {})}).stdout

    def _rev(self, r: _Repo, ref: str) -> str | None:
        out = subprocess.run(["git", "--git-dir", str(self.bare_path(r.full_name)), "rev-parse", "-q", "--verify",
                              ref + "^{commit}"], capture_output=True, text=True, env={**os.environ, **_GIT_ENV})
        return out.stdout.strip() or None if out.returncode == 0 else None

    def _pull_head(self, r: _Repo, number: int) -> str:
        p = r.issues[number].pull
        assert p is not None
        return self._rev(self._repo(p.get("head_repo") or r.full_name), f"refs/heads/{p['head']}") or p["head_sha"]

    @staticmethod
    def _review_comment(r: _Repo, comment_id: int) -> _ReviewComment | None:
        return next((c for c in r.review_comments if c.id == comment_id), None)

    def _diff_hunk(self, repo: str, base: str, head: str, path: str, line: int) -> str:
        """GitHub's diff_hunk: the header of the hunk holding new line `line` and the hunk's lines up to it."""
        diff = self._git("diff", "--no-color", "--no-ext-diff", "-U3", base, head, "--", path,
                         git_dir=self.bare_path(repo))
        hunk: list[str] = []
        new = 0
        for text in diff.splitlines():
            m = re.match(r"@@ -\d+(?:,\d+)? \+(\d+)(?:,\d+)? @@", text)
            if m:
                hunk, new = [text], int(m.group(1))
                continue
            if not hunk or text.startswith("\\"):
                continue
            hunk.append(text)
            if not text.startswith("-"):
                if new == line:
                    return "\n".join(hunk)
                new += 1
        return "\n".join(hunk)

    def _role(self, r: _Repo, login: str) -> str | None:
        """The fine role of `login` on the repository; None for a user GitHub does not know."""
        if login in r.permissions:
            return r.permissions[login]
        if login == self.login or login == r.owner:
            return "admin"
        return "none" if login in self._users else None

    # ------------------------------------------------------------------ JSON shapes

    def _user_json(self, login: str) -> dict:
        u = self.user(login)
        api = f"{self.api_url}/users/{login}"
        return {
            "login": login, "id": u["id"], "node_id": _node_id("U", u["id"]),
            "avatar_url": f"{self.server_url}/avatars/{login}", "gravatar_id": "", "url": api,
            "html_url": f"{self.server_url}/{login}", "followers_url": f"{api}/followers",
            "repos_url": f"{api}/repos", "organizations_url": f"{api}/orgs", "type": u["type"],
            "site_admin": False,
        }

    def _repo_json(self, r: _Repo) -> dict:
        api = f"{self.api_url}/repos/{r.full_name}"
        role = self._role(r, self.login) or "none"
        return {
            "id": r.id, "node_id": _node_id("R", r.id), "name": r.name, "full_name": r.full_name,
            "owner": self._user_json(r.owner), "private": r.private,
            "visibility": "private" if r.private else "public", "html_url": f"{self.server_url}/{r.full_name}",
            "description": r.description, "fork": r.fork_of is not None, "url": api,
            "issues_url": f"{api}/issues{{/number}}", "pulls_url": f"{api}/pulls{{/number}}",
            "clone_url": f"{self.server_url}/{r.full_name}.git", "git_url": f"{self.server_url}/{r.full_name}.git",
            "ssh_url": f"git@127.0.0.1:{r.full_name}.git", "svn_url": f"{self.server_url}/{r.full_name}",
            "default_branch": r.default_branch, "archived": False, "disabled": False, "has_issues": True,
            "created_at": r.created_at, "updated_at": r.created_at, "pushed_at": r.created_at,
            "open_issues_count": sum(1 for i in r.issues.values() if i.state == "open"),
            "permissions": {"admin": RANK[role] >= 5, "maintain": RANK[role] >= 4, "push": RANK[role] >= 3,
                            "triage": RANK[role] >= 2, "pull": RANK[role] >= 1},
        }

    def _label_json(self, r: _Repo, name: str) -> dict:
        lid = zlib.crc32(f"{r.full_name}:{name}".encode())
        return {"id": lid, "node_id": _node_id("L", lid), "url": f"{self.api_url}/repos/{r.full_name}/labels/{name}",
                "name": name, "color": "ededed", "default": False, "description": None}

    def _issue_json(self, r: _Repo, i: _Issue) -> dict:
        api = f"{self.api_url}/repos/{r.full_name}/issues/{i.number}"
        html = f"{self.server_url}/{r.full_name}/{'pull' if i.pull else 'issues'}/{i.number}"
        out = {
            "id": i.id, "node_id": _node_id("I", i.id), "url": api,
            "repository_url": f"{self.api_url}/repos/{r.full_name}", "labels_url": f"{api}/labels{{/name}}",
            "comments_url": f"{api}/comments", "events_url": f"{api}/events", "html_url": html,
            "number": i.number, "title": i.title, "body": i.body, "state": i.state,
            "state_reason": "completed" if i.state == "closed" else None, "locked": False,
            "user": self._user_json(i.login), "labels": [self._label_json(r, n) for n in i.labels],
            "assignee": self._user_json(i.assignees[0]) if i.assignees else None,
            "assignees": [self._user_json(a) for a in i.assignees], "milestone": None,
            "comments": len(i.comments), "created_at": i.created_at, "updated_at": i.updated_at,
            "closed_at": i.closed_at, "author_association": self._association(r, i.login),
            "reactions": {"url": f"{api}/reactions", "total_count": 0},
        }
        if i.pull:
            pull_api = f"{self.api_url}/repos/{r.full_name}/pulls/{i.number}"
            out["pull_request"] = {"url": pull_api, "html_url": html, "diff_url": f"{html}.diff",
                                   "patch_url": f"{html}.patch",
                                   "merged_at": i.closed_at if i.pull.get("merged") else None}
            out["draft"] = i.pull["draft"]
        return out

    def _association(self, r: _Repo, login: str) -> str:
        if login == r.owner:
            return "OWNER"
        return "COLLABORATOR" if RANK.get(r.permissions.get(login, "none"), 0) >= 1 else "NONE"

    def _comment_json(self, r: _Repo, c: _Comment) -> dict:
        api = f"{self.api_url}/repos/{r.full_name}"
        return {
            "id": c.id, "node_id": _node_id("IC", c.id), "url": f"{api}/issues/comments/{c.id}",
            "html_url": f"{self.server_url}/{r.full_name}/issues/{c.issue_number}#issuecomment-{c.id}",
            "issue_url": f"{api}/issues/{c.issue_number}", "body": c.body, "user": self._user_json(c.login),
            "created_at": c.created_at, "updated_at": c.updated_at,
            "author_association": self._association(r, c.login),
            "reactions": {"url": f"{api}/issues/comments/{c.id}/reactions", "total_count": 0},
        }

    def _ref_json(self, r: _Repo, ref: str, sha: str | None) -> dict:
        return {"label": f"{r.owner}:{ref}", "ref": ref, "sha": sha, "user": self._user_json(r.owner),
                "repo": self._repo_json(r)}

    def _pull_json(self, r: _Repo, i: _Issue) -> dict:
        p = i.pull
        assert p is not None
        api = f"{self.api_url}/repos/{r.full_name}/pulls/{i.number}"
        html = f"{self.server_url}/{r.full_name}/pull/{i.number}"
        head_repo = self._repo(p.get("head_repo") or r.full_name)
        head_sha = self._rev(head_repo, f"refs/heads/{p['head']}") or p["head_sha"]
        base_sha = self._rev(r, f"refs/heads/{p['base']}") or p["base_sha"]
        merged = bool(p.get("merged"))
        return {
            "id": i.id, "node_id": _node_id("PR", i.id), "url": api, "html_url": html,
            "diff_url": f"{html}.diff", "patch_url": f"{html}.patch",
            "issue_url": f"{self.api_url}/repos/{r.full_name}/issues/{i.number}",
            "commits_url": f"{api}/commits", "review_comments_url": f"{api}/comments",
            "comments_url": f"{self.api_url}/repos/{r.full_name}/issues/{i.number}/comments",
            "number": i.number, "state": i.state, "locked": False, "title": i.title, "body": i.body,
            "user": self._user_json(i.login), "labels": [self._label_json(r, n) for n in i.labels],
            "milestone": None, "draft": p["draft"], "created_at": i.created_at, "updated_at": i.updated_at,
            "closed_at": i.closed_at, "merged_at": i.closed_at if merged else None, "merge_commit_sha": None,
            "assignee": self._user_json(i.assignees[0]) if i.assignees else None,
            "assignees": [self._user_json(a) for a in i.assignees],
            "requested_reviewers": [self._user_json(u) for u in p["reviewers"]], "requested_teams": [],
            "head": self._ref_json(head_repo, p["head"], head_sha), "base": self._ref_json(r, p["base"], base_sha),
            "author_association": self._association(r, i.login), "auto_merge": None,
            "merged": merged, "mergeable": True, "rebaseable": True, "mergeable_state": "clean", "merged_by": None,
            "comments": len(i.comments),
            "review_comments": sum(1 for c in r.review_comments if c.pull_number == i.number),
            "maintainer_can_modify": p["maintainer_can_modify"],
            "commits": p.get("commits", 1), "additions": 0, "deletions": 0, "changed_files": 0,
        }

    def _review_comment_json(self, r: _Repo, c: _ReviewComment) -> dict:
        """As GET /repos/{owner}/{repo}/pulls/comments/{id} shows it (single-line comment on the RIGHT side)."""
        api = f"{self.api_url}/repos/{r.full_name}/pulls"
        html = f"{self.server_url}/{r.full_name}/pull/{c.pull_number}"
        out = {
            "url": f"{api}/comments/{c.id}", "pull_request_review_id": c.review_id, "id": c.id,
            "node_id": _node_id("PRRC", c.id), "diff_hunk": c.diff_hunk, "path": c.path, "commit_id": c.commit_id,
            "original_commit_id": c.commit_id, "user": self._user_json(c.login), "body": c.body,
            "created_at": c.created_at, "updated_at": c.created_at, "html_url": f"{html}#discussion_r{c.id}",
            "pull_request_url": f"{api}/{c.pull_number}", "author_association": self._association(r, c.login),
            "_links": {"self": {"href": f"{api}/comments/{c.id}"}, "html": {"href": f"{html}#discussion_r{c.id}"},
                       "pull_request": {"href": f"{api}/{c.pull_number}"}},
            "reactions": {"url": f"{api}/comments/{c.id}/reactions", "total_count": 0},
            "start_line": None, "original_start_line": None, "start_side": None, "line": c.line,
            "original_line": c.line, "side": c.side, "original_position": 1, "position": 1,
            "subject_type": "line",
        }
        if c.in_reply_to_id is not None:
            out["in_reply_to_id"] = c.in_reply_to_id
        return out

    def _review_json(self, r: _Repo, v: _Review) -> dict:
        html = f"{self.server_url}/{r.full_name}/pull/{v.pull_number}"
        return {
            "id": v.id, "node_id": _node_id("PRR", v.id), "user": self._user_json(v.login), "body": v.body,
            "state": v.state, "html_url": f"{html}#pullrequestreview-{v.id}",
            "pull_request_url": f"{self.api_url}/repos/{r.full_name}/pulls/{v.pull_number}",
            "author_association": self._association(r, v.login), "submitted_at": v.submitted_at,
            "commit_id": v.commit_id,
            "_links": {"html": {"href": f"{html}#pullrequestreview-{v.id}"},
                       "pull_request": {"href": f"{self.api_url}/repos/{r.full_name}/pulls/{v.pull_number}"}},
        }

    def _files_json(self, r: _Repo, i: _Issue) -> list[dict]:
        """GET /pulls/{n}/files: each file of the three-dot diff with its counts."""
        p = i.pull
        assert p is not None
        bare = self.bare_path(p.get("head_repo") or r.full_name)
        head = self._pull_head(r, i.number)
        out = []
        for row in self._git("diff", "--numstat", "-z", "--no-renames", p["base_sha"], head,
                             git_dir=bare).split("\0"):
            if not row.strip():
                continue
            added, deleted, name = row.split("\t", 2)
            a, d = (int(added), int(deleted)) if added != "-" else (0, 0)
            out.append({"sha": "0" * 40, "filename": name, "status": "modified", "additions": a, "deletions": d,
                        "changes": a + d,
                        "blob_url": f"{self.server_url}/{r.full_name}/blob/{head}/{name}",
                        "raw_url": f"{self.server_url}/{r.full_name}/raw/{head}/{name}",
                        "contents_url": f"{self.api_url}/repos/{r.full_name}/contents/{name}?ref={head}"})
        return out

    def _graphql(self, req: Recorded):
        """POST /api/graphql: only the one query shape Toren sends, repository.pullRequest.reviewThreads, with
        every field GitHub's ReviewThread and PullRequestReviewComment objects give it. Anything else is a
        GraphQL error (HTTP 200, an `errors` array), as GitHub answers a query it cannot resolve."""
        try:
            data = req.json() or {}
        except ValueError:
            return self._json(400, {"message": "Problems parsing JSON", "documentation_url": DOCS})
        query, variables = str(data.get("query") or ""), data.get("variables") or {}
        if "reviewThreads" not in query or "pullRequest" not in query:
            return self._json(200, {"errors": [{"message": "the fake GitHub answers only reviewThreads"}]})
        full = f"{variables.get('owner')}/{variables.get('name')}"
        r = self._repos.get(full)
        issue = r.issues.get(int(variables.get("number") or 0)) if r else None
        if r is None or issue is None or issue.pull is None:
            return self._json(200, {"data": {"repository": None if r is None else {"pullRequest": None}},
                                    "errors": [{"type": "NOT_FOUND", "path": ["repository"],
                                                "message": f"Could not resolve to a PullRequest with the number "
                                                           f"of {variables.get('number')}."}]})
        threads = []
        mine = [c for c in r.review_comments if c.pull_number == issue.number]
        for root in (c for c in mine if c.in_reply_to_id is None):
            chain = [root] + [c for c in mine if c.in_reply_to_id is not None and self._root(r, c) == root.id]
            nodes = []
            for c in chain:
                u = self.user(c.login)
                nodes.append({"id": _node_id("PRRC", c.id), "databaseId": c.id, "body": c.body,
                              "author": {"__typename": "Bot" if u["type"] == "Bot" else "User", "login": c.login},
                              "authorAssociation": self._association(r, c.login), "createdAt": c.created_at,
                              "path": c.path, "line": c.line, "originalLine": c.line, "diffHunk": c.diff_hunk,
                              "outdated": False, "url": f"{self.server_url}/{full}/pull/{issue.number}"
                                                         f"#discussion_r{c.id}",
                              "replyTo": {"databaseId": c.in_reply_to_id} if c.in_reply_to_id else None})
            threads.append({"id": _node_id("PRRT", root.id), "isResolved": root.id in r.resolved,
                            "isOutdated": False, "path": root.path, "line": root.line, "originalLine": root.line,
                            "diffSide": root.side, "startLine": None, "subjectType": "LINE",
                            "comments": {"totalCount": len(nodes), "nodes": nodes,
                                         "pageInfo": {"hasNextPage": False, "endCursor": None}}})
        page = {"totalCount": len(threads), "nodes": threads, "pageInfo": {"hasNextPage": False, "endCursor": None}}
        return self._json(200, {"data": {"repository": {"pullRequest": {"reviewThreads": page}}}})

    def _root(self, r: _Repo, c: _ReviewComment) -> int:
        while c.in_reply_to_id is not None:
            parent = self._review_comment(r, c.in_reply_to_id)
            if parent is None:
                break
            c = parent
        return c.id

    # ------------------------------------------------------------------ dispatch

    def _headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        h = {
            "Content-Type": "application/json; charset=utf-8",
            "X-RateLimit-Limit": str(self.rate_limit), "X-RateLimit-Remaining": str(self.rate_remaining),
            "X-RateLimit-Reset": str(int(time.time()) + 3600), "X-RateLimit-Used": str(self.rate_limit -
                                                                                       self.rate_remaining),
            "X-RateLimit-Resource": "core", "X-OAuth-Scopes": "repo", "X-Accepted-OAuth-Scopes": "repo",
            "X-GitHub-Api-Version-Selected": "2022-11-28", "X-GitHub-Media-Type": "github.v3; format=json",
            "X-GitHub-Request-Id": f"FAKE:{self._next_id()}", "Server": "GitHub.com",
        }
        h.update(extra or {})
        return h

    def _json(self, status: int, payload: Any, extra: dict[str, str] | None = None):
        body = b"" if status == 204 else json.dumps(payload).encode()
        return status, self._headers(extra), body

    def _error(self, status: int, message: str, errors: list | None = None, extra: dict[str, str] | None = None):
        payload: dict[str, Any] = {"message": message, "documentation_url": DOCS}
        if errors is not None:
            payload["errors"] = errors
        payload["status"] = str(status)
        return self._json(status, payload, extra)

    def _injected(self, req: Recorded, path: str):
        with self._lock:
            for f in self._failures:
                if f.times > 0 and f.method in ("*", req.method) and f.pattern.search(path):
                    f.times -= 1
                    if f.times == 0:
                        self._failures.remove(f)
                    break
            else:
                return None
        extra: dict[str, str] = {}
        payload = f.json_body
        if payload is None:
            if f.status == 401:
                payload = {"message": "Bad credentials", "documentation_url": DOCS, "status": "401"}
            elif f.status == 403:
                payload = {"message": "API rate limit exceeded for user ID 1. If you reach out to GitHub Support "
                           "for help, please include the request ID FAKE.",
                           "documentation_url": DOCS + "/overview/rate-limits-for-the-rest-api", "status": "403"}
                extra = {"X-RateLimit-Remaining": "0", "X-RateLimit-Used": str(self.rate_limit),
                         "X-RateLimit-Reset": str(int(time.time()))}
            elif f.status == 404:
                payload = {"message": "Not Found", "documentation_url": DOCS, "status": "404"}
            elif f.status == 422:
                payload = {"message": "Validation Failed", "errors": [], "documentation_url": DOCS, "status": "422"}
            else:
                payload = {"message": "Server Error" if f.status >= 500 else "Error", "status": str(f.status)}
        extra.update(f.headers)
        if f.status == 401 and not path.startswith(API_PREFIX):
            extra.setdefault("WWW-Authenticate", 'Basic realm="GitHub"')
        return self._json(f.status, payload, extra)

    def _dispatch(self, req: Recorded):
        split = urlsplit(req.path)
        path, query = split.path, parse_qs(split.query)
        try:
            injected = self._injected(req, path)
            if injected:
                return injected
            if path == GRAPHQL_PATH and req.method == "POST":
                if not self._rest_authorized(req.headers.get("authorization", "")):
                    return self._error(401, "Bad credentials")
                with self._lock:
                    return self._graphql(req)
            if path == API_PREFIX or path.startswith(API_PREFIX + "/"):
                if not self._rest_authorized(req.headers.get("authorization", "")):
                    return self._error(401, "Bad credentials")
                with self._lock:
                    return self._rest(req, path[len(API_PREFIX):] or "/", query)
            m = re.fullmatch(r"/([^/]+)/([^/]+?)(?:\.git)?/(info/refs|git-upload-pack|git-receive-pack)", path)
            if m:
                return self._git_http(req, m.group(1), m.group(2), m.group(3), split.query)
            return 404, {"Content-Type": "text/plain"}, b"Not Found\n"
        except Exception as exc:  # a bug in the fake: make it loud in the response, not a hung client
            import traceback

            traceback.print_exc()
            return 500, {"Content-Type": "text/plain"}, f"fake github error: {exc!r}\n".encode()

    def _rest_authorized(self, header: str) -> bool:
        scheme, _, value = header.partition(" ")
        return scheme.lower() in ("token", "bearer") and value.strip() == self.token

    def _git_authorized(self, header: str) -> bool:
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            _user, _, password = base64.b64decode(value.strip()).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        return password == self.token

    # ------------------------------------------------------------------ REST

    def _rest(self, req: Recorded, path: str, query: dict[str, list[str]]):
        method = req.method
        try:
            data = req.json() if req.body else {}
        except ValueError:
            return self._error(400, "Problems parsing JSON")
        if path in ("/", "/user", "/rate_limit") or path.startswith("/users/"):
            return self._rest_misc(method, path)
        m = re.fullmatch(r"/repos/([^/]+)/([^/]+)(/.*)?", path)
        if not m:
            return self._error(404, "Not Found")
        r = self._repos.get(f"{m.group(1)}/{m.group(2)}")
        if r is None:
            return self._error(404, "Not Found")
        rest = m.group(3) or ""
        q = {k: v[-1] for k, v in query.items()}

        if rest == "" and method == "GET":
            out = self._repo_json(r)
            if r.fork_of:
                out["parent"] = out["source"] = self._repo_json(self._repo(r.fork_of))
            return self._json(200, out)

        if (m := re.fullmatch(r"/collaborators/([^/]+)/permission", rest)) and method == "GET":
            role = self._role(r, m.group(1))
            if role is None:
                return self._error(404, f"{m.group(1)} is not a user")
            user = self._user_json(m.group(1))
            user["permissions"] = {"admin": RANK[role] >= 5, "maintain": RANK[role] >= 4, "push": RANK[role] >= 3,
                                   "triage": RANK[role] >= 2, "pull": RANK[role] >= 1}
            user["role_name"] = role
            return self._json(200, {"permission": COARSE[role], "role_name": role, "user": user})

        if (m := re.fullmatch(r"/issues/comments/(\d+)", rest)) and method in ("GET", "PATCH"):
            found = [(i, c) for i in r.issues.values() for c in i.comments if c.id == int(m.group(1))]
            if not found:
                return self._error(404, "Not Found")
            issue, c = found[0]
            if method == "PATCH":
                if not isinstance(data, dict) or not isinstance(data.get("body"), str):
                    return self._error(422, "Invalid request.\n\nNo subschema in \"anyOf\" matched.")
                c.bodies.append(data["body"])
                c.updated_at = _now()
            return self._json(200, self._comment_json(r, c))

        if m := re.fullmatch(r"/issues/(\d+)(/comments|/labels|/assignees)?", rest):
            issue = r.issues.get(int(m.group(1)))
            if issue is None:
                return self._error(404, "Not Found")
            sub = m.group(2) or ""
            if sub == "" and method == "GET":
                return self._json(200, self._issue_json(r, issue))
            if sub == "" and method == "PATCH":
                return self._edit_issue(r, issue, data, pull=False)
            if sub == "/comments" and method == "GET":
                return self._paginate(f"{self.api_url}/repos/{r.full_name}/issues/{issue.number}/comments", q,
                                      [self._comment_json(r, c) for c in issue.comments])
            if sub == "/comments" and method == "POST":
                if not isinstance(data, dict) or not isinstance(data.get("body"), str) or not data["body"]:
                    return self._error(422, "Validation Failed",
                                       [{"resource": "IssueComment", "code": "missing_field", "field": "body"}])
                at = _now()
                c = _Comment(self._next_id(), issue.number, self.login, [data["body"]], at, at)
                issue.comments.append(c)
                issue.updated_at = at
                return self._json(201, self._comment_json(r, c),
                                  {"Location": f"{self.api_url}/repos/{r.full_name}/issues/comments/{c.id}"})
            if sub == "/labels" and method == "GET":
                return self._json(200, [self._label_json(r, n) for n in issue.labels])
            if sub == "/labels" and method in ("POST", "PUT"):
                names = data.get("labels", []) if isinstance(data, dict) else data
                names = [n["name"] if isinstance(n, dict) else n for n in names or []]
                if method == "PUT":
                    issue.labels = []
                for n in names:
                    if n not in issue.labels:
                        issue.labels.append(n)
                issue.updated_at = _now()
                return self._json(200, [self._label_json(r, n) for n in issue.labels])
            if sub == "/assignees" and method == "POST":
                for login in data.get("assignees", []) if isinstance(data, dict) else []:
                    # GitHub silently drops assignees who cannot be assigned (no access to the repository)
                    if RANK.get(self._role(r, login) or "none", 0) >= 1 and login not in issue.assignees:
                        issue.assignees.append(login)
                issue.updated_at = _now()
                return self._json(201, self._issue_json(r, issue))
            return self._error(404, "Not Found")

        if rest == "/pulls" and method == "GET":
            return self._list_pulls(r, q)
        if rest == "/pulls" and method == "POST":
            return self._create_pull(r, data if isinstance(data, dict) else {})
        if (m := re.fullmatch(r"/pulls/comments/(\d+)", rest)) and method == "GET":
            c = self._review_comment(r, int(m.group(1)))
            return self._json(200, self._review_comment_json(r, c)) if c else self._error(404, "Not Found")
        if m := re.fullmatch(r"/pulls/(\d+)/(comments|reviews|files)", rest):
            issue = r.issues.get(int(m.group(1)))
            if issue is None or issue.pull is None:
                return self._error(404, "Not Found")
            url = f"{self.api_url}/repos/{r.full_name}/pulls/{issue.number}/{m.group(2)}"
            if method != "GET":
                return self._error(404, "Not Found")
            if m.group(2) == "comments":
                return self._paginate(url, q, [self._review_comment_json(r, c) for c in r.review_comments
                                               if c.pull_number == issue.number])
            if m.group(2) == "reviews":
                return self._paginate(url, q, [self._review_json(r, v) for v in r.reviews
                                               if v.pull_number == issue.number])
            return self._paginate(url, q, self._files_json(r, issue))
        if (m := re.fullmatch(r"/pulls/(\d+)/comments/(\d+)/replies", rest)) and method == "POST":
            issue = r.issues.get(int(m.group(1)))
            parent = self._review_comment(r, int(m.group(2)))
            if issue is None or issue.pull is None or parent is None or parent.pull_number != issue.number:
                return self._error(404, "Not Found")
            if not isinstance(data, dict) or not isinstance(data.get("body"), str) or not data["body"]:
                return self._error(422, "Validation Failed",
                                   [{"resource": "PullRequestReviewComment", "code": "missing_field",
                                     "field": "body"}])
            if parent.in_reply_to_id is not None:  # "Replies to replies are not supported." (GitHub's docs)
                return self._error(422, "Validation Failed",
                                   [{"resource": "PullRequestReviewComment", "code": "invalid",
                                     "field": "in_reply_to"}])
            root = parent
            review = _Review(self._next_id(), issue.number, self.login, "", "COMMENTED", root.commit_id, _now())
            r.reviews.append(review)
            c = _ReviewComment(self._next_id(), issue.number, self.login, data["body"], root.path, root.line,
                               root.side, root.diff_hunk, root.commit_id, _now(), review.id, root.id)
            r.review_comments.append(c)
            return self._json(201, self._review_comment_json(r, c),
                              {"Location": f"{self.api_url}/repos/{r.full_name}/pulls/comments/{c.id}"})
        if m := re.fullmatch(r"/pulls/(\d+)(/requested_reviewers)?", rest):
            issue = r.issues.get(int(m.group(1)))
            if issue is None or issue.pull is None:
                return self._error(404, "Not Found")
            if not m.group(2) and method == "GET":
                return self._json(200, self._pull_json(r, issue))
            if not m.group(2) and method == "PATCH":
                return self._edit_issue(r, issue, data if isinstance(data, dict) else {}, pull=True)
            if m.group(2) and method == "POST":
                return self._request_reviewers(r, issue, data if isinstance(data, dict) else {})
            if m.group(2) and method == "GET":
                return self._json(200, {"users": [self._user_json(u) for u in issue.pull["reviewers"]],
                                        "teams": []})
        return self._error(404, "Not Found")

    def _rest_misc(self, method: str, path: str):
        if method != "GET":
            return self._error(404, "Not Found")
        if path == "/":
            return self._json(200, {"current_user_url": f"{self.api_url}/user",
                                    "repository_url": f"{self.api_url}/repos/{{owner}}/{{repo}}"})
        if path == "/user":
            out = self._user_json(self.login)
            out.update({"name": self.login, "email": None, "created_at": "2020-01-01T00:00:00Z",
                        "updated_at": "2020-01-01T00:00:00Z"})
            return self._json(200, out)
        if path == "/rate_limit":
            reset = int(time.time()) + 3600
            core = {"limit": self.rate_limit, "remaining": self.rate_remaining, "reset": reset,
                    "used": self.rate_limit - self.rate_remaining, "resource": "core"}
            res = {"core": core, "search": {"limit": 30, "remaining": 30, "reset": reset, "used": 0,
                                            "resource": "search"},
                   "graphql": {"limit": 5000, "remaining": 5000, "reset": reset, "used": 0, "resource": "graphql"}}
            return self._json(200, {"resources": res, "rate": core})
        m = re.fullmatch(r"/users/([^/]+)", path)
        if m and m.group(1) in self._users:
            return self._json(200, self._user_json(m.group(1)))
        return self._error(404, "Not Found")

    def _paginate(self, url: str, q: dict[str, str], items: list):
        try:
            per_page = max(1, min(100, int(q.get("per_page", 30))))
            page = max(1, int(q.get("page", 1)))
        except ValueError:
            per_page, page = 30, 1
        last = max(1, -(-len(items) // per_page))
        chunk = items[(page - 1) * per_page: page * per_page]
        links = []
        if page < last:
            links += [f'<{url}?per_page={per_page}&page={page + 1}>; rel="next"',
                      f'<{url}?per_page={per_page}&page={last}>; rel="last"']
        if page > 1:
            links = [f'<{url}?per_page={per_page}&page={page - 1}>; rel="prev"',
                     f'<{url}?per_page={per_page}&page=1>; rel="first"'] + links
        return self._json(200, chunk, {"Link": ", ".join(links)} if links else None)

    def _list_pulls(self, r: _Repo, q: dict[str, str]):
        state = q.get("state", "open")
        out = []
        for i in sorted(r.issues.values(), key=lambda i: -i.number):
            if not i.pull or (state != "all" and i.state != state):
                continue
            if "head" in q:
                owner, _, branch = q["head"].rpartition(":")
                if (owner and owner != r.owner) or branch != i.pull["head"]:
                    continue
            if "base" in q and q["base"] != i.pull["base"]:
                continue
            out.append(self._pull_json(r, i))
        return self._paginate(f"{self.api_url}/repos/{r.full_name}/pulls", q, out)

    def _create_pull(self, r: _Repo, data: dict):
        head, base = data.get("head"), data.get("base")
        missing = [k for k in ("head", "base") if not isinstance(data.get(k), str) or not data[k]]
        if not data.get("title") and not data.get("issue"):
            missing.append("title")
        if missing:
            return self._error(422, "Validation Failed",
                               [{"resource": "PullRequest", "code": "missing_field", "field": k} for k in missing])
        owner, _, branch = head.rpartition(":")
        if owner and owner != r.owner:
            return self._error(422, "Validation Failed",
                               [{"resource": "PullRequest", "field": "head", "code": "invalid"}])
        base_sha = self._rev(r, f"refs/heads/{base}")
        if base_sha is None:
            return self._error(422, "Validation Failed",
                               [{"resource": "PullRequest", "field": "base", "code": "invalid"}])
        no_commits = [{"resource": "PullRequest", "code": "custom",
                       "message": f"No commits between {base} and {branch}"}]
        head_sha = self._rev(r, f"refs/heads/{branch}")
        if head_sha is None:
            return self._error(422, "Validation Failed", no_commits)
        if any(i.pull and i.state == "open" and i.pull["head"] == branch and i.pull["base"] == base
               for i in r.issues.values()):
            return self._error(422, "Validation Failed", [{"resource": "PullRequest", "code": "custom",
                                                           "message": f"A pull request already exists for "
                                                                      f"{r.owner}:{branch}."}])
        ahead = int(self._git("rev-list", "--count", f"{base_sha}..{head_sha}",
                              git_dir=self.bare_path(r.full_name)).strip())
        if ahead == 0:
            return self._error(422, "Validation Failed", no_commits)
        number = max(r.issues, default=0) + 1
        at = _now()
        issue = _Issue(self._next_id(), number, data.get("title") or "", data.get("body"), self.login, at, at)
        issue.pull = {"head": branch, "base": base, "head_sha": head_sha, "base_sha": base_sha,
                      "draft": bool(data.get("draft", False)), "reviewers": [],
                      "maintainer_can_modify": bool(data.get("maintainer_can_modify", True)), "commits": ahead}
        r.issues[number] = issue
        return self._json(201, self._pull_json(r, issue),
                          {"Location": f"{self.api_url}/repos/{r.full_name}/pulls/{number}"})

    def _edit_issue(self, r: _Repo, issue: _Issue, data: dict, pull: bool):
        if "state" in data and data["state"] not in ("open", "closed"):
            return self._error(422, "Validation Failed",
                               [{"resource": "Issue", "field": "state", "code": "invalid"}])
        for key in ("title", "body"):
            if key in data:
                setattr(issue, key, data[key])
        if "state" in data and data["state"] != issue.state:
            issue.state = data["state"]
            issue.closed_at = _now() if issue.state == "closed" else None
        if pull and issue.pull is not None:
            if "base" in data:
                if self._rev(r, f"refs/heads/{data['base']}") is None:
                    return self._error(422, "Validation Failed",
                                       [{"resource": "PullRequest", "field": "base", "code": "invalid"}])
                issue.pull["base"] = data["base"]
            if "maintainer_can_modify" in data:
                issue.pull["maintainer_can_modify"] = bool(data["maintainer_can_modify"])
        if not pull:
            if "labels" in data:
                issue.labels = [n["name"] if isinstance(n, dict) else n for n in data["labels"]]
            if "assignees" in data:
                issue.assignees = list(data["assignees"])
        issue.updated_at = _now()
        return self._json(200, self._pull_json(r, issue) if pull else self._issue_json(r, issue))

    def _request_reviewers(self, r: _Repo, issue: _Issue, data: dict):
        assert issue.pull is not None
        for login in data.get("reviewers", []):
            if login == issue.login:
                return self._error(422, "Review cannot be requested from pull request author.")
            if RANK.get(self._role(r, login) or "none", 0) < 1:
                return self._error(422, "Reviews may only be requested from collaborators. One or more of the "
                                        "users or teams you specified is not a collaborator of the "
                                        f"{r.full_name} repository.")
        for login in data.get("reviewers", []):
            if login not in issue.pull["reviewers"]:
                issue.pull["reviewers"].append(login)
        issue.updated_at = _now()
        return self._json(201, self._pull_json(r, issue))

    # ------------------------------------------------------------------ git smart HTTP

    def _git_http(self, req: Recorded, owner: str, name: str, action: str, query: str):
        text = {"Content-Type": "text/plain; charset=utf-8"}
        if not self._git_authorized(req.headers.get("authorization", "")):
            return 401, {**text, "WWW-Authenticate": 'Basic realm="GitHub"'}, b"Invalid username or token.\n"
        full = f"{owner}/{name}"
        with self._lock:
            r = self._repos.get(full)
            role = self._role(r, self.login) if r else None
        if r is None or not self.bare_path(full).is_dir():
            return 404, text, b"Repository not found.\n"
        service = parse_qs(query).get("service", [""])[-1] if action == "info/refs" else action
        if action == "info/refs" and req.method != "GET" or action != "info/refs" and req.method != "POST":
            return 405, text, b"Method Not Allowed\n"
        if service not in ("git-upload-pack", "git-receive-pack"):
            return 403, text, b"Dumb HTTP is not supported.\n"
        if service == "git-receive-pack" and RANK.get(role or "none", 0) < RANK["write"]:
            return 403, text, f"Permission to {full}.git denied to {self.login}.\n".encode()
        if service == "git-receive-pack" and action == "info/refs":
            with self._lock:
                due = [cb for repo, cb in self._before_push if repo == full]
                self._before_push = [(repo, cb) for repo, cb in self._before_push if repo != full]
            for cb in due:
                cb()
        env = {
            **{k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "TMPDIR", "SYSTEMROOT")},
            **_GIT_ENV,
            "HOME": str(self.root),
            "GIT_PROJECT_ROOT": str(self.root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "GIT_CONFIG_COUNT": "2",
            "GIT_CONFIG_KEY_0": "http.receivepack", "GIT_CONFIG_VALUE_0": "true",
            "GIT_CONFIG_KEY_1": "safe.directory", "GIT_CONFIG_VALUE_1": "*",
            "REMOTE_USER": self.login,
            "REMOTE_ADDR": "127.0.0.1",
            "GATEWAY_INTERFACE": "CGI/1.1",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "REQUEST_METHOD": req.method,
            "PATH_INFO": f"/{owner}/{name}.git/{action}",
            "QUERY_STRING": query,
            "CONTENT_TYPE": req.headers.get("content-type", ""),
            "CONTENT_LENGTH": str(len(req.body)),  # the body is already de-chunked and decompressed
        }
        if "git-protocol" in req.headers:
            env["GIT_PROTOCOL"] = req.headers["git-protocol"]
            env["HTTP_GIT_PROTOCOL"] = req.headers["git-protocol"]
        proc = subprocess.run(["git", "http-backend"], input=req.body, capture_output=True, env=env, timeout=300)
        out = proc.stdout
        sep = min((i for i in (out.find(b"\r\n\r\n"), out.find(b"\n\n")) if i >= 0), default=-1)
        if sep < 0:
            return 500, text, b"git http-backend failed: " + proc.stderr[-2000:]
        head, body = out[:sep], out[sep + (4 if out[sep:sep + 4] == b"\r\n\r\n" else 2):]
        status, headers = 200, {}
        for line in head.decode("latin-1").splitlines():
            if not line.strip():
                continue
            key, _, value = line.partition(":")
            if key.strip().lower() == "status":
                status = int(value.strip().split()[0])
            else:
                headers[key.strip()] = value.strip()
        return status, headers, body
