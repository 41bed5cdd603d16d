"""The review loop, measured: reading a pull request with many review threads (REST, GraphQL reviewThreads and the
files, through real PyGithub against the fake GitHub) and building the round's task from it at its largest
(30 threads of 20 comments of 4,000 characters). Prints figures; asserts nothing.

    .venv/bin/python bench/bench_review.py [--threads 100] [--runs 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.fakes.github import FakeGitHub  # noqa: E402
from toren_action.config.validate import IssueRef  # noqa: E402
from toren_action.core.redact import Secret  # noqa: E402
from toren_action.git import review  # noqa: E402
from toren_action.git.github import PR_MARKER, Endpoints, GitHub  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=100)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp, FakeGitHub(Path(tmp)) as gh:
        lines = "".join(f"line {i}\n" for i in range(400))
        gh.add_repo("acme/widget", files={"a.py": lines})
        gh.set_permission("acme/widget", "alice", "write")
        number = gh.add_pull("acme/widget", "toren/x", {"a.py": lines.replace("line", "LINE")}, body=PR_MARKER)
        for i in range(args.threads):
            first = gh.add_review_comment("acme/widget", number, "alice", "c" * 4000, "a.py", 1 + i % 400)
            for _ in range(3):
                gh.add_review_comment("acme/widget", number, "alice", "r" * 4000, in_reply_to=first)
        api = GitHub(Endpoints(gh.api_url, gh.server_url), Secret("GITHUB_TOKEN", gh.token))
        reads, builds = [], []
        for _ in range(args.runs):
            api._repos.clear()
            t = time.perf_counter()
            pull = review.read_pull(api, IssueRef("acme/widget", number), False)
            reads.append(time.perf_counter() - t)
            t = time.perf_counter()
            task = review.pull_task(pull, "x" * 20_000, None, None)
            builds.append(time.perf_counter() - t)
        print(f"read a pull request with {args.threads} threads x 4 comments: median "
              f"{statistics.median(reads) * 1000:.0f} ms ({len(pull.threads)} threads kept)")
        print(f"build its task ({len(task.body)} characters): median {statistics.median(builds) * 1000:.1f} ms")


if __name__ == "__main__":
    main()
