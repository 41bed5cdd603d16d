"""`toren scan`: the diff policy on your own changes (a pre-commit hook, a range of commits). The same rules as the
check before every push (policy.py). The security look at an image (`toren scan --image`) is imagescan.py."""

from __future__ import annotations

import json

from toren_action.core.errors import PolicyBlocked, UsageError
from toren_action.core.redact import mask_tokens
from toren_action.guard.policy import Policy, check


def scan_repo(cwd: str, staged: bool, diff: str | None, allow: tuple[str, ...] = (),
              exclude: tuple[str, ...] = ()) -> list:
    from toren_action.git import workspace

    def git(*args: str) -> str:
        return workspace.git(*args, cwd=cwd)

    try:
        git("rev-parse", "--git-dir")
    except workspace.UntrustedRepository:  # owned by another user: say so, its config never runs
        raise
    except Exception:  # noqa: BLE001 - GitError with git's own words
        raise UsageError("scan", f"{cwd} is not a git repository") from None
    if staged:
        try:
            base = git("rev-parse", "--verify", "HEAD").strip()
        except Exception:  # noqa: BLE001 - a repository with no commit yet: compare with the empty tree
            base = git("hash-object", "-t", "tree", "/dev/null").strip()
        return _without(check(git, base, None, cwd, Policy(frozenset(allow)), str), exclude)
    if diff is None or ".." not in diff:
        raise UsageError("--diff", "give a range like main..HEAD")
    base, head = diff.split("..", 1)
    for rev in (base or "HEAD", head or "HEAD"):
        try:
            git("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
        except Exception:  # noqa: BLE001
            raise UsageError("--diff", f"{rev!r} is not a commit in this repository") from None
    return _without(check(git, base or "HEAD", head or "HEAD", cwd, Policy(frozenset(allow)), str), exclude)


def _without(findings: list, exclude: tuple[str, ...]) -> list:
    import fnmatch

    return [f for f in findings if not any(fnmatch.fnmatch(f.path, pat) for pat in exclude)]


def report(findings: list, as_json: bool) -> int:
    if as_json:
        print(json.dumps([{**f.to_dict(), "detail": mask_tokens(f.detail)} for f in findings], indent=2))
    else:
        for f in findings:
            print(mask_tokens(str(f)))
        print(f"{len(findings)} finding(s)" if findings else "no findings")
    return PolicyBlocked.exit_code if findings else 0

