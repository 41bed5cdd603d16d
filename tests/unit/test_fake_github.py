"""The fake GitHub answers real PyGithub and real git the way GitHub does."""

from __future__ import annotations

import base64
import os
import subprocess
from pathlib import Path

import pytest

github = pytest.importorskip("github")
from github import Auth, Github, GithubException  # noqa: E402

from tests.fakes.github import FakeGitHub  # noqa: E402

REPO = "acme/widget"


@pytest.fixture
def gh(tmp_path: Path):
    with FakeGitHub(tmp_path / "gh") as fake:
        fake.add_repo(REPO, files={"README.md": "# widget\n", "src/a.py": "print(1)\n"})
        fake.add_issue(REPO, 7, "Rename old_name", "Please rename it.", author="alice", comments=[
            {"login": "alice", "body": "/toren go", "type": "User", "created_at": "2024-05-01T10:00:00Z"},
            {"login": "ci[bot]", "body": "beep", "type": "Bot"},
        ])
        fake.set_permission(REPO, "alice", "maintain")
        fake.set_permission(REPO, "bob", "triage")
        fake.set_permission(REPO, "carol", "write")
        fake.set_permission(REPO, "mallory", "none")
        yield fake


def client(gh: FakeGitHub, token: str | None = None, **kw) -> Github:
    return Github(base_url=gh.api_url, auth=Auth.Token(token or gh.token), seconds_between_requests=0,
                  seconds_between_writes=0, **kw)


def git(*args: str, cwd: Path | None = None, env: dict | None = None, check: bool = True):
    base = {**os.environ, "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull, "GIT_TERMINAL_PROMPT": "0",
            "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@e", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@e"}
    return subprocess.run(["git", *args], cwd=cwd, env={**base, **(env or {})}, capture_output=True, text=True,
                          check=check)


def helper_env(token: str) -> dict:
    """A credential helper that reads the token from the environment (what an Action would do)."""
    return {"FAKE_TOKEN": token, "GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "credential.helper",
            "GIT_CONFIG_VALUE_0": "!f() { echo username=x-access-token; echo password=$FAKE_TOKEN; }; f"}


def header_env(token: str) -> dict:
    basic = base64.b64encode(f"x-access-token:{token}".encode()).decode()
    return {"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "http.extraHeader",
            "GIT_CONFIG_VALUE_0": f"Authorization: Basic {basic}"}


def test_repo_user_rate_limit(gh: FakeGitHub):
    g = client(gh)
    repo = g.get_repo(REPO)
    assert (repo.full_name, repo.name, repo.owner.login, repo.default_branch) == (REPO, "widget", "acme", "main")
    assert repo.private is True
    assert repo.html_url == f"{gh.server_url}/{REPO}"
    assert repo.clone_url == f"{gh.server_url}/{REPO}.git"
    assert repo.permissions.push and repo.permissions.admin
    assert g.get_user().login == "toren-bot"
    rl = g.get_rate_limit()
    assert rl.resources.core.limit == 5000 and rl.resources.core.remaining == 4999
    assert g.oauth_scopes == ["repo"]
    last = gh.api_requests()[-1]
    assert last.path == "/api/v3/rate_limit" and last.headers["authorization"] == f"token {gh.token}"


def test_issue_and_comments(gh: FakeGitHub):
    repo = client(gh).get_repo(REPO)
    issue = repo.get_issue(7)
    assert (issue.number, issue.title, issue.body, issue.state, issue.user.login) == (
        7, "Rename old_name", "Please rename it.", "open", "alice")
    assert issue.pull_request is None and issue.created_at.tzinfo is not None
    comments = list(issue.get_comments())
    assert [(c.user.login, c.user.type, c.body) for c in comments] == [
        ("alice", "User", "/toren go"), ("ci[bot]", "Bot", "beep")]
    assert comments[0].created_at.isoformat() == "2024-05-01T10:00:00+00:00"

    c = issue.create_comment("Working on it…")
    assert c.user.login == "toren-bot" and c.html_url.endswith(f"/issues/7#issuecomment-{c.id}")
    c.edit("Working on it… step 2")
    c.edit("Done.")
    assert issue.get_comment(c.id).body == "Done."
    assert gh.comment_history(REPO, 7) == [
        ["/toren go"], ["beep"], ["Working on it…", "Working on it… step 2", "Done."]]
    assert issue.get_comments().totalCount == 3

    # pagination: per_page=2 → a Link header with rel="next" and PyGithub follows it
    paged = list(client(gh, per_page=2).get_repo(REPO).get_issue(7).get_comments())
    assert [x.body for x in paged] == ["/toren go", "beep", "Done."]

    with pytest.raises(GithubException) as exc:
        repo.get_issue(99)
    assert exc.value.status == 404 and exc.value.data["message"] == "Not Found"


def test_pagination_link_header(gh: FakeGitHub):
    import json
    import urllib.request

    def get(url):
        req = urllib.request.Request(url, headers={"Authorization": f"Bearer {gh.token}"})
        with urllib.request.urlopen(req) as resp:
            return resp.headers, json.loads(resp.read())

    h, body = get(f"{gh.api_url}/repos/{REPO}/issues/7/comments")
    assert len(body) == 2 and h.get("Link") is None
    h, body = get(f"{gh.api_url}/repos/{REPO}/issues/7/comments?per_page=1")
    assert len(body) == 1 and 'rel="next"' in h["Link"] and h["X-RateLimit-Remaining"] == "4999"


def test_permissions(gh: FakeGitHub):
    repo = client(gh).get_repo(REPO)
    assert repo.get_collaborator_permission("alice") == "write"
    assert repo.get_collaborator_role_name("alice") == "maintain"
    assert repo.get_collaborator_permission("bob") == "read"
    assert repo.get_collaborator_role_name("bob") == "triage"
    assert repo.get_collaborator_permission("mallory") == "none"
    assert repo.get_collaborator_permission("toren-bot") == "admin"
    with pytest.raises(GithubException) as exc:
        repo.get_collaborator_permission("nobody-at-all")
    assert exc.value.status == 404


def test_pulls(gh: FakeGitHub, tmp_path: Path):
    repo = client(gh).get_repo(REPO)
    with pytest.raises(GithubException) as exc:
        repo.create_pull(base="main", head="toren/7", title="t", body="b")
    assert exc.value.status == 422
    assert exc.value.data["errors"][0]["message"] == "No commits between main and toren/7"

    # a branch with no new commits is refused the same way
    bare = gh.bare_path(REPO)
    git("--git-dir", str(bare), "branch", "empty", "main")
    with pytest.raises(GithubException) as exc:
        repo.create_pull(base="main", head="empty", title="t", body="b")
    assert exc.value.data["errors"][0]["message"] == "No commits between main and empty"

    work = tmp_path / "w"
    git("clone", "-q", gh.server_url + f"/{REPO}.git", str(work), env=helper_env(gh.token))
    (work / "src" / "a.py").write_text("print(2)\n")
    git("commit", "-qam", "change", cwd=work)
    git("push", "-q", "origin", "HEAD:refs/heads/toren/7", cwd=work, env=helper_env(gh.token))
    sha = gh.branch_sha(REPO, "toren/7")

    pr = repo.create_pull(base="main", head="toren/7", title="Rename", body="Fixes #7", draft=True)
    assert pr.number == 8  # shares the issue number space
    assert (pr.head.ref, pr.head.sha, pr.head.label, pr.head.repo.full_name) == ("toren/7", sha, "acme:toren/7", REPO)
    assert pr.base.ref == "main" and pr.draft is True and pr.merged is False and pr.state == "open"
    assert pr.html_url == f"{gh.server_url}/{REPO}/pull/8" and pr.user.login == "toren-bot"

    with pytest.raises(GithubException) as exc:
        repo.create_pull(base="main", head="acme:toren/7", title="again", body="")
    assert exc.value.data["errors"][0]["message"] == "A pull request already exists for acme:toren/7."

    found = list(repo.get_pulls(state="open", head="acme:toren/7", base="main"))
    assert [p.number for p in found] == [8]
    assert list(repo.get_pulls(state="open", head="acme:other")) == []

    pr.add_to_labels("toren", "automated")
    pr.create_review_request(reviewers=["alice"])
    pr.add_to_assignees("carol")
    pr.edit(title="Rename old_name", body="Fixes #7 (updated)")
    again = repo.get_pull(8)
    assert again.title == "Rename old_name" and again.body == "Fixes #7 (updated)"
    assert [lbl.name for lbl in again.labels] == ["toren", "automated"]
    assert [u.login for u in again.requested_reviewers] == ["alice"]
    assert [u.login for u in again.assignees] == ["carol"]
    as_issue = repo.get_issue(8)
    assert as_issue.pull_request is not None and [lbl.name for lbl in as_issue.labels] == ["toren", "automated"]

    with pytest.raises(GithubException) as exc:
        pr.create_review_request(reviewers=["nobody-at-all"])
    assert exc.value.status == 422
    pr.edit(state="closed")
    assert repo.get_pull(8).state == "closed" and list(repo.get_pulls(state="open")) == []
    issue = repo.get_issue(7)
    issue.add_to_labels("bug")
    assert [lbl.name for lbl in repo.get_issue(7).labels] == ["bug"]


def test_fail_next(gh: FakeGitHub):
    from github import BadCredentialsException, RateLimitExceededException, UnknownObjectException

    g = client(gh, retry=None)
    gh.fail_next("GET", r"/repos/acme/widget$", 401)
    with pytest.raises(BadCredentialsException):
        g.get_repo(REPO)
    gh.fail_next("GET", r"/issues/7$", 404, times=2)
    for _ in range(2):
        with pytest.raises(UnknownObjectException):
            g.get_repo(REPO).get_issue(7)
    assert g.get_repo(REPO).get_issue(7).number == 7
    gh.fail_next("*", r"/issues/7/comments$", 403)
    with pytest.raises(RateLimitExceededException) as exc:
        g.get_repo(REPO).get_issue(7).create_comment("x")
    assert exc.value.headers["x-ratelimit-remaining"] == "0"
    gh.fail_next("POST", r"/pulls$", 422, json_body={"message": "Validation Failed", "errors": [{"code": "x"}]},
                 headers={"X-Extra": "1"})
    with pytest.raises(GithubException) as exc:
        g.get_repo(REPO).create_pull(base="main", head="x", title="t", body="")
    assert exc.value.status == 422 and exc.value.data["errors"] == [{"code": "x"}]
    assert exc.value.headers["x-extra"] == "1"


def test_bad_token(gh: FakeGitHub):
    from github import BadCredentialsException

    with pytest.raises(BadCredentialsException) as exc:
        client(gh, token="ghp_wrong").get_repo(REPO)
    assert exc.value.data["message"] == "Bad credentials"
    with pytest.raises(BadCredentialsException):
        Github(base_url=gh.api_url, seconds_between_requests=0, retry=None).get_repo(REPO)


def test_git_clone_push_and_refusal(gh: FakeGitHub, tmp_path: Path):
    url = f"{gh.server_url}/{REPO}.git"
    # refused without the token, and with a wrong one
    res = git("clone", "-q", url, str(tmp_path / "no"), check=False)
    assert res.returncode != 0 and not (tmp_path / "no").exists()
    res = git("clone", "-q", url, str(tmp_path / "bad"), env=helper_env("ghp_wrong"), check=False)
    assert res.returncode != 0 and "Authentication failed" in res.stderr
    assert gh.git_requests()[0].path.startswith(f"/{REPO}.git/info/refs?service=git-upload-pack")

    # clone via http.extraHeader (GIT_CONFIG_* env vars), protocol v2, gzip-compressed upload-pack requests
    work = tmp_path / "work"
    git("-c", "protocol.version=2", "clone", "-q", url, str(work), env=header_env(gh.token))
    assert (work / "src" / "a.py").read_text() == "print(1)\n"

    # push a new branch with ~5 MB of random data: git sends it chunked
    (work / "blob.bin").write_bytes(os.urandom(5 * 1024 * 1024))
    git("add", "blob.bin", cwd=work)
    git("commit", "-qm", "big", cwd=work)
    git("push", "-q", "origin", "HEAD:refs/heads/big", cwd=work, env=helper_env(gh.token))
    pushes = [r for r in gh.git_requests() if r.method == "POST" and r.path.endswith("git-receive-pack")]
    assert any(r.headers.get("transfer-encoding") == "chunked" and len(r.body) > 5_000_000 for r in pushes)
    assert gh.branch_sha(REPO, "big") == git("rev-parse", "HEAD", cwd=work).stdout.strip()
    assert gh.read_file(REPO, "big", "blob.bin") == (work / "blob.bin").read_bytes()

    # a fetch that negotiates many local commits: git gzips upload-pack requests over 1 KiB
    other = tmp_path / "other"
    git("init", "-q", str(other))
    stream = "".join(f"commit refs/heads/local\ncommitter t <t@e> {1700000000 + i} +0000\ndata 4\nc{i:02d}\n\n"
                     for i in range(80))  # an unrelated local history: every commit becomes a "have"
    subprocess.run(["git", "fast-import", "--quiet"], cwd=other, input=stream, text=True, check=True)
    git("fetch", "-q", url, "big", cwd=other, env=helper_env(gh.token))
    gzipped = [r for r in gh.git_requests() if r.path.endswith("git-upload-pack")
               and r.headers.get("content-encoding") == "gzip"]
    assert gzipped and b"have " in gzipped[-1].body  # recorded decompressed
    assert git("rev-parse", "FETCH_HEAD", cwd=other).stdout.strip() == gh.branch_sha(REPO, "big")

    # a push without the token is refused
    res = git("push", "-q", "origin", "HEAD:refs/heads/sneaky", cwd=work, check=False)
    assert res.returncode != 0 and gh.branch_sha(REPO, "sneaky") is None

    # a read-only token cannot push
    gh.set_permission(REPO, gh.login, "read")
    res = git("push", "-q", "origin", "HEAD:refs/heads/ro", cwd=work, env=helper_env(gh.token), check=False)
    assert res.returncode != 0 and "403" in res.stderr and gh.branch_sha(REPO, "ro") is None


# -- review comments, reviews, threads, forks: what the review loop reads ----------------------------------------

THREADS = """query($owner: String!, $name: String!, $number: Int!) { repository(owner: $owner, name: $name) {
  pullRequest(number: $number) { reviewThreads(last: 100) { nodes { isResolved path line
    comments(first: 50) { nodes { databaseId body author { __typename login } authorAssociation diffHunk } } }
  } } } }"""


def test_review_comments_threads_and_replies(gh: FakeGitHub):
    number = gh.add_pull(REPO, "topic", {"src/a.py": "print(1)\nprint(2)\n"}, body="b")
    first = gh.add_review_comment(REPO, number, "alice", "why 2?", "src/a.py", 2)
    reply = gh.add_review_comment(REPO, number, "carol", "yes, why", in_reply_to=first)
    bot = gh.add_review_comment(REPO, number, "lint[bot]", "style", "src/a.py", 1)
    gh.resolve_thread(REPO, bot)
    g = client(gh)
    pr = g.get_repo(REPO).get_pull(number)
    comments = list(pr.get_review_comments())
    assert [c.id for c in comments] == [first, reply, bot]
    c = comments[0]
    assert (c.path, c.line, c.side, c.original_line, c.in_reply_to_id) == ("src/a.py", 2, "RIGHT", 2, None)
    assert c.diff_hunk == "@@ -1 +1,2 @@\n print(1)\n+print(2)"  # up to the commented line, as GitHub does
    assert c.commit_id == pr.head.sha and c.user.login == "alice" and c.raw_data["author_association"] == "COLLABORATOR"
    assert comments[1].in_reply_to_id == first and comments[1].diff_hunk == c.diff_hunk
    assert c.pull_request_review_id in {r.id for r in pr.get_reviews()}
    # a reply goes to the thread's first comment, from the token's user; a reply to a reply is refused, as GitHub
    # does ("Replies to replies are not supported")
    made = pr.create_review_comment_reply(first, "done")
    assert made.in_reply_to_id == first and made.user.login == gh.login and made.path == "src/a.py"
    for target, status in ((reply, 422), (999_999, 404)):
        with pytest.raises(GithubException) as e:
            pr.create_review_comment_reply(target, "x")
        assert e.value.status == status
    # the threads with isResolved, through GraphQL at GHES's /api/graphql
    _, data = g.requester.graphql_query(THREADS, {"owner": "acme", "name": "widget", "number": number})
    threads = data["data"]["repository"]["pullRequest"]["reviewThreads"]["nodes"]
    assert [(t["isResolved"], [x["databaseId"] for x in t["comments"]["nodes"]]) for t in threads] == [
        (False, [first, reply, made.id]), (True, [bot])]
    assert threads[1]["comments"]["nodes"][0]["author"] == {"__typename": "Bot", "login": "lint[bot]"}
    with pytest.raises(GithubException):  # a query the fake does not know is an error, never an empty answer
        g.requester.graphql_query("query { viewer { login } }", {})
    with pytest.raises(GithubException):
        g.requester.graphql_query(THREADS, {"owner": "acme", "name": "widget", "number": 99})


def test_files_reviews_states_and_a_fork(gh: FakeGitHub):
    number = gh.add_pull(REPO, "topic", {"src/a.py": "print(3)\n", "new.txt": "n\n"}, body="b")
    gh.add_review(REPO, number, "alice", "/toren tidy", "CHANGES_REQUESTED")
    g = client(gh)
    pr = g.get_repo(REPO).get_pull(number)
    assert sorted((f.filename, f.additions, f.deletions) for f in pr.get_files()) == [("new.txt", 1, 0),
                                                                                     ("src/a.py", 1, 1)]
    (review,) = list(pr.get_reviews())
    assert (review.state, review.body, review.user.login) == ("CHANGES_REQUESTED", "/toren tidy", "alice")
    closed = gh.add_pull(REPO, "old", {"x": "1"}, state="closed", merged=True)
    old = g.get_repo(REPO).get_pull(closed)
    assert (old.state, old.merged) == ("closed", True) and old.merged_at is not None
    gh.add_fork("eve/widget", REPO)
    forked = gh.add_pull(REPO, "evil", {"src/a.py": "boom\n"}, head_repo="eve/widget", author="eve")
    fpr = g.get_repo(REPO).get_pull(forked)
    assert fpr.head.repo.full_name == "eve/widget" and fpr.head.repo.fork and fpr.base.repo.full_name == REPO
    assert g.get_repo("eve/widget").parent.full_name == REPO
    assert gh.branch_sha(REPO, "evil") is None and gh.branch_sha("eve/widget", "evil") == fpr.head.sha


def test_a_branch_moved_just_before_a_push(gh: FakeGitHub, tmp_path: Path):
    gh.add_pull(REPO, "topic", {"src/a.py": "print(3)\n"})
    work = tmp_path / "w"
    env = header_env(gh.token)
    git("clone", "-q", "-b", "topic", f"{gh.server_url}/{REPO}.git", str(work), env=env)
    start = gh.branch_sha(REPO, "topic")
    moved = []
    gh.before_next_push(REPO, lambda: moved.append(gh.commit(REPO, "topic", {"other.txt": "o\n"}, "theirs")))
    git("commit", "-q", "--allow-empty", "-m", "ours", cwd=work)
    proc = git("push", "-q", "origin", f"--force-with-lease=refs/heads/topic:{start}", "HEAD:refs/heads/topic",
               cwd=work, env=env, check=False)
    assert proc.returncode != 0 and moved and gh.branch_sha(REPO, "topic") == moved[0]
    assert gh.read_file(REPO, "topic", "other.txt") == b"o\n"
