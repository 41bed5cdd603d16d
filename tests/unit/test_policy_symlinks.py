"""Symlinks are resolved through the other links of the new tree (security issue 11, finding 4): a chain of
links that are each lexically inside the repository but together lead out of it (or into .git) is a finding;
loops are too; links that really stay inside are not."""

from __future__ import annotations

import os

import pytest

from tests.unit.test_policy_blind import commit_change, findings, make_repo

# (name, links the agent commits (path -> target), directories it adds, the link that must be named)
ESCAPES = [
    ("dir-link-then-dotdot", {"d1/d2/d3/up": "../../..", "esc": "d1/d2/d3/up/../etc/passwd"}, (), "esc"),
    ("issue-shape", {"a/b/c/up": "../../..", "a/b/c/esc": "up/../../../../etc/passwd"}, (), "a/b/c/esc"),
    ("link-to-link-to-root", {"p": "q", "q": "deep/x/y", "deep/x/y": "../..", "e": "p/../x"}, (), "e"),
    ("dot-link", {"here": ".", "e": "here/sub/../../x"}, (), "e"),
    ("link-into-a-link", {"a": "b/c", "b": "deep", "deep/c": "..", "e": "a/../x"}, (), "e"),
    ("absolute-at-the-end", {"a": "b", "b": "c", "c": "/etc"}, (), "a"),
    ("absolute", {"passwd": "/etc/passwd"}, (), "passwd"),
    ("plain-dotdot", {"up": ".."}, (), "up"),
    ("into-dot-git", {"cfg": ".git/config"}, (), "cfg"),
    ("into-dot-git-by-case", {"cfg": "sub/../.GIT/hooks"}, (), "cfg"),
    ("into-dot-git-through-a-link", {"root": "d/..", "h": "root/.git"}, ("d",), "h"),
    ("backslash", {"w": "..\\..\\secret"}, (), "w"),
    ("windows-drive", {"w": "C:/Windows"}, (), "w"),
    ("loop", {"l1": "l2", "l2": "l1"}, (), "l1"),
    ("self-loop", {"me": "me/x"}, (), "me"),
]


@pytest.mark.parametrize("name, links, dirs, path", ESCAPES, ids=[e[0] for e in ESCAPES])
def test_a_link_that_leads_out_through_other_links_is_blocked(name, links, dirs, path, tmp_path):
    repo = make_repo(tmp_path)
    commit_change(repo, {f"{d}/keep": "x\n" for d in dirs}, links=links)
    found = findings(repo)
    assert path in {f.path for f in found if f.rule == "symlink"}, [str(f) for f in found]
    allowed = findings(repo, allow=frozenset({"symlink"}))
    assert all(f.rule != "symlink" for f in allowed)


def test_the_finding_names_the_link_it_went_through(tmp_path):
    repo = make_repo(tmp_path)
    commit_change(repo, {}, links={"d1/d2/d3/up": "../../..", "esc": "d1/d2/d3/up/../etc/passwd"})
    [finding] = findings(repo)
    assert finding.path == "esc" and "outside the repository" in finding.detail and "d1/d2/d3/up" in finding.detail


def test_an_unchanged_link_that_a_changed_link_sends_outside(tmp_path):
    """The base has a directory a/b/c and a link through it that stays inside; the agent turns ``a`` into a
    link to ``.``, so the old link now leads out. It is named, though the agent did not touch it."""
    repo = make_repo(tmp_path, {"a/b/c/file": "x\n", "README.md": "#\n"})
    os.symlink("a/b/c/../../../README.md", repo / "keep")
    commit_change(repo, {})
    commit_change(repo, {}, links={"a": "."}, remove=("a",))
    found = findings(repo)
    assert [f.path for f in found if f.rule == "symlink"] == ["keep"]
    assert "changed symlink" in found[0].detail


def test_a_link_that_already_escaped_in_the_base_is_not_this_changes_doing(tmp_path):
    repo = make_repo(tmp_path, {"README.md": "#\n"})
    os.symlink("/etc", repo / "sys-etc")
    commit_change(repo, {})
    commit_change(repo, {}, links={"docs": "README.md"})
    assert findings(repo) == []
    commit_change(repo, {}, links={"passwd": "sys-etc/passwd"})  # a new link through it is
    assert [f.path for f in findings(repo)] == ["passwd"]


def test_links_that_stay_inside_are_fine(tmp_path):
    repo = make_repo(tmp_path, {"src/a.py": "x = 1\n", "docs/guide.md": "#\n"})
    commit_change(repo, {}, links={"lib": "src", "a.py": "lib/a.py", "docs/src": "../src", "docs/up": "..",
                                   "docs/x": "up/src/a.py", "dangling": "nope/nothing", "dot": "./src/../docs"})
    assert findings(repo) == []
