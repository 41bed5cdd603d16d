"""The diff policy cannot be blinded (security issue 11, finding 1): it judges the blobs of the change, not patch
text, so no added line, file name, attribute, textconv, host config or odd byte hides a secret or a binary from
it. Each test commits the attack with real git and runs the real check, under a plain and a hostile host config.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from toren_action.core.redact import Redactor
from toren_action.git import workspace
from toren_action.guard import policy

TOKEN = "ghp_" + "BlindedP0licyT0kenFromTheAgent0123456789"[:36]
SECRET = "s3cr3t-VALUE-of-this-job-0123"
MARKER_NAME = "ran-a-command"


def run_git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", "-c", "user.name=u", "-c", "user.email=u@x", *args], cwd=cwd, check=True,
                          capture_output=True).stdout.decode("utf-8", "surrogateescape")


def write(repo: Path, name: str | bytes, data: str | bytes) -> None:
    path = os.path.join(os.fsencode(repo), os.fsencode(name))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(data.encode() if isinstance(data, str) else data)


def make_repo(tmp_path: Path, files: dict | None = None) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    run_git("init", "-q", "-b", "main", cwd=repo)
    for name, data in (files or {"README.md": "# project\n"}).items():
        write(repo, name, data)
    run_git("add", "-A", cwd=repo)
    run_git("commit", "-qm", "base", cwd=repo)
    return repo


def commit_change(repo: Path, files: dict, links: dict | None = None, remove: tuple = ()) -> None:
    for name in remove:
        run_git("rm", "-rq", name, cwd=repo)
    for name, data in files.items():
        write(repo, name, data)
    for name, target in (links or {}).items():
        path = repo / name
        path.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(target, path)
    run_git("add", "-A", cwd=repo)
    run_git("commit", "-qm", "agent", cwd=repo)


def findings(repo: Path, **rules) -> list[policy.Finding]:
    return policy.check(lambda *a: workspace.git(*a, cwd=repo), "HEAD~1", "HEAD", str(repo),
                        policy.Policy(**rules), Redactor([SECRET]).mask_values)


def rules_for(found: list[policy.Finding], path: str) -> set[str]:
    return {f.rule for f in found if f.path == path}


@pytest.fixture(params=["plain-config", "hostile-config"])
def host_config(request, tmp_path, monkeypatch) -> Path:
    """The host user's git config: empty, or set to everything that blinded or steered the old policy."""
    home = tmp_path / "home"
    home.mkdir()
    marker = tmp_path / MARKER_NAME
    config = home / ".gitconfig"
    if request.param == "hostile-config":
        script = tmp_path / "run.sh"
        script.write_text(f"#!/bin/sh\ntouch {marker}\n")
        script.chmod(0o755)
        attributes = home / "attributes"
        attributes.write_text("* -diff\n*.py diff=blank\n")
        config.write_text(
            "[diff]\n\tnoprefix = true\n\tmnemonicPrefix = true\n\trelative = true\n\trenames = copies\n"
            f"\texternal = {script}\n\tignoreSubmodules = all\n"
            "[core]\n\tquotePath = true\n"
            f"\tattributesFile = {attributes}\n"
            f'[diff "blank"]\n\ttextconv = {script}\n'
            "[color]\n\tui = always\n")
    else:
        config.write_text("")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(config))
    monkeypatch.setenv("GIT_EXTERNAL_DIFF", str(tmp_path / "run.sh"))
    yield config
    assert not marker.exists(), "host-side git ran a command from the config"


# (name, files the agent commits, path that must be named, rule)
ATTACKS = [
    ("plus-plus-line", {"notes.py": f'x = 1\n++ looks like a header\nTOKEN = "{TOKEN}"\n'}, "notes.py",
     "secret-pattern"),
    ("plus-plus-line-value", {"a.txt": f"++ /dev/null\n{SECRET}\n"}, "a.txt", "secret-value"),
    ("quote-in-name", {'say"hi".py': f'T = "{TOKEN}"\n'}, 'say"hi".py', "secret-pattern"),
    ("backslash-in-name", {"back\\slash.py": f'T = "{TOKEN}"\n'}, "back\\slash.py", "secret-pattern"),
    ("tab-in-name", {"tab\there.py": f'T = "{TOKEN}"\n'}, "tab\\x09here.py", "secret-pattern"),
    ("newline-in-name", {"new\nline.py": f'T = "{TOKEN}"\n'}, "new\\x0aline.py", "secret-pattern"),
    ("control-char-in-name", {"bell\x07.py": f'T = "{TOKEN}"\n'}, "bell\\x07.py", "secret-pattern"),
    ("non-ascii-name", {"café/naïve.py": f'T = "{TOKEN}"\n'}, "café/naïve.py", "secret-pattern"),
    ("gitattributes-minus-diff", {".gitattributes": "notes.txt -diff\n", "notes.txt": f"key {SECRET}\n"},
     "notes.txt", "secret-value"),
    ("gitattributes-binary-macro", {".gitattributes": "* binary\n", "app.py": f'T = "{TOKEN}"\n'}, "app.py",
     "secret-pattern"),
    ("gitattributes-so-diff", {".gitattributes": "*.so diff\n", "lib.so": b"\x7fELF\0\0\0\x01code"}, "lib.so",
     "binary"),
    ("gitattributes-text", {".gitattributes": "*.dat text diff\n", "blob.dat": b"a\0b\0c"}, "blob.dat", "binary"),
    ("gitattributes-textconv", {".gitattributes": "*.py diff=blank\n", "conf.py": f"{SECRET}\n"}, "conf.py",
     "secret-value"),
    ("tab-in-binary-name", {"lib\tx.bin": b"\0\0\0binary"}, "lib\\x09x.bin", "binary"),
    ("form-feed", {"ff.py": f"x = 1\f{SECRET}\n"}, "ff.py", "secret-value"),
    ("form-feed-token", {"ff.py": f'x = 1\fT = "{TOKEN}"\n'}, "ff.py", "secret-pattern"),
    ("vertical-tab", {"vt.py": f"x = 1\v{SECRET}\n"}, "vt.py", "secret-value"),
    ("file-separator", {"fs.py": f"x = 1\x1c{SECRET}\n"}, "fs.py", "secret-value"),
    ("line-separator", {"u.py": f"x = 1\u2028T = '{TOKEN}'\n"}, "u.py", "secret-pattern"),
    ("next-line", {"n.py": f"x = 1\x85{SECRET}\n"}, "n.py", "secret-value"),
    ("carriage-return", {"cr.py": f"x = 1\r{SECRET}\r\n"}, "cr.py", "secret-value"),
    ("latin-1-content", {"latin.txt": b"caf\xe9 = 1\nT = '" + TOKEN.encode() + b"'\n"}, "latin.txt",
     "secret-pattern"),
    ("latin-1-name", {b"caf\xe9.txt": SECRET + "\n"}, "caf\ufffd.txt", "secret-value"),
    ("nul-then-secret", {"data.bin": b"\0" * 10 + SECRET.encode()}, "data.bin", "secret-value"),
]


@pytest.mark.parametrize("name, files, path, rule", ATTACKS, ids=[a[0] for a in ATTACKS])
def test_nothing_in_the_change_blinds_the_policy(name, files, path, rule, tmp_path, host_config):
    repo = make_repo(tmp_path)
    commit_change(repo, files)
    found = findings(repo)
    assert rule in rules_for(found, path), [str(f) for f in found]
    assert all(SECRET not in str(f) and TOKEN not in str(f) for f in found)


def test_the_line_number_is_the_new_blobs(tmp_path, host_config):
    repo = make_repo(tmp_path, {"app.py": "a = 1\nb = 2\nc = 3\n"})
    commit_change(repo, {"app.py": f"a = 1\nb = 2\n++ x\nT = '{TOKEN}'\nc = 3\n"})
    [finding] = findings(repo)
    assert (finding.rule, finding.path, finding.line) == ("secret-pattern", "app.py", 4)


def test_lines_already_in_the_base_are_not_added(tmp_path, host_config):
    repo = make_repo(tmp_path, {"old.py": f"T = '{TOKEN}'\nx = 1\n", "gone.py": f"T = '{TOKEN}'\n"})
    commit_change(repo, {"old.py": f"y = 0\nT = '{TOKEN}'\nx = 2\n"}, remove=("gone.py",))
    assert findings(repo) == []
    commit_change(repo, {"moved.py": f"T = '{TOKEN}'\n"})  # the same line in another file is added there
    assert rules_for(findings(repo), "moved.py") == {"secret-pattern"}


def test_a_secret_just_past_the_size_cap_is_still_found(tmp_path, host_config):
    repo = make_repo(tmp_path)
    commit_change(repo, {"big.txt": "a" * (1024 * 1024 + 10) + "\n" + SECRET + "\n"})
    found = findings(repo, max_file_bytes=1024 * 1024)
    assert rules_for(found, "big.txt") == {"large-file", "secret-value"}
    allowed = findings(repo, max_file_bytes=1024 * 1024, allow=frozenset({"large-file", "secret-pattern"}))
    assert [f.rule for f in allowed] == ["secret-value"]


def test_streamed_blobs_and_long_lines_hide_nothing(tmp_path, host_config, monkeypatch):
    """Blobs over DIFF_LIMIT are streamed in chunks, long lines in overlapping windows: a secret placed across
    a chunk or window boundary, or at the very end, is found."""
    monkeypatch.setattr(policy, "DIFF_LIMIT", 4096)
    monkeypatch.setattr(policy, "LINE_WINDOW", 1000)
    monkeypatch.setattr(policy, "LINE_OVERLAP", 100)
    repo = make_repo(tmp_path)
    long_line = "x" * 990 + SECRET + "y" * 5000
    end = "z\n" * 10000 + "q" * 3000 + SECRET
    tok = "w" * 2994 + " " + TOKEN + "\n" * 3000
    commit_change(repo, {"long.txt": long_line + "\n", "end.txt": end, "tok.txt": tok})
    found = findings(repo)
    assert "secret-value" in rules_for(found, "long.txt")
    assert [f.line for f in found if f.path == "end.txt"] == [10001]
    assert "secret-pattern" in rules_for(found, "tok.txt")


def test_a_blob_too_large_to_scan_can_never_be_pushed(tmp_path, host_config, monkeypatch):
    monkeypatch.setattr(policy, "SCAN_LIMIT", 1000)
    repo = make_repo(tmp_path)
    commit_change(repo, {"huge.txt": "a" * 5000, "small.txt": "fine\n"})
    found = findings(repo, allow=frozenset(policy.RULES))
    assert [(f.rule, f.path) for f in found] == [("secret-value", "huge.txt")]


def test_a_secret_in_a_symlink_target(tmp_path, host_config):
    repo = make_repo(tmp_path)
    commit_change(repo, {}, links={"link": SECRET, "tok": TOKEN})
    found = findings(repo)
    assert rules_for(found, "link") == {"secret-value"} and rules_for(found, "tok") == {"secret-pattern"}


def test_an_ordinary_change_has_no_findings(tmp_path, host_config):
    repo = make_repo(tmp_path, {"src/a.py": "def f():\n    return 1\n"})
    commit_change(repo, {"src/a.py": "def f():\n    return 2\n", "src/é.py": "x = 'é'\n", "docs/+++.md": "++ x\n"},
                  links={"docs/link": "../src/a.py"})
    assert findings(repo) == []


def test_the_staged_scan_from_a_subdirectory_sees_the_whole_index(tmp_path, host_config):
    """`toren scan --staged` (the pre-commit hook) from a subdirectory: diff.relative and friends cannot narrow
    or blind it."""
    from toren_action.guard.scan import scan_repo

    repo = make_repo(tmp_path, {"sub/x.py": "x = 1\n"})
    write(repo, "top.py", f"++ y\nT = '{TOKEN}'\n")
    write(repo, ".gitattributes", "*.py -diff\n")
    write(repo, "tab\tname.bin", b"\0\0")
    run_git("add", "-A", cwd=repo)
    found = scan_repo(str(repo / "sub"), staged=True, diff=None)
    assert {(f.rule, f.path) for f in found} == {("secret-pattern", "top.py"), ("binary", "tab\\x09name.bin")}


def test_workspace_git_reads_undecodable_output(tmp_path, host_config):
    """Latin-1 names and content never crash host-side git; the bytes round-trip; the record is printable."""
    repo = make_repo(tmp_path)
    write(repo, b"caf\xe9.txt", b"na\xefve\n")
    run_git("add", "-A", cwd=repo)
    run_git("commit", "-qm", "latin-1", cwd=repo)
    out = workspace.git("ls-files", "-z", cwd=repo)
    assert os.fsencode(out.split("\0")[1]) == b"caf\xe9.txt"
    ws = workspace.Workspace(repo, run_git("rev-parse", "HEAD", cwd=repo).strip(), "main")
    write(repo, b"caf\xe9.txt", b"na\xefve \xff\n")
    change = workspace.commit_all(ws, "edit", "u", "u@x")
    assert change and [os.fsencode(f) for f in change.files] == [b"caf\xe9.txt"]
    assert "caf\ufffd.txt" in change.diffstat
    assert "\ufffd" in workspace.last_patch(ws)
