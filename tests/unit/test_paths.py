"""The host-side file helpers the agent's files reach: bounded reads that never follow a link, removal that never
chmods through one, and a private TOREN_HOME."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from toren_action.core.errors import UsageError
from toren_action.core.paths import read_bounded, remove_tree, toren_home


def test_read_bounded_reads_a_regular_file_up_to_its_limit(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "f.md").write_bytes(b"x" * 100)
    assert read_bounded(tmp_path, "a/f.md", 10) == b"x" * 10
    assert read_bounded(tmp_path, "a/f.md", 1000) == b"x" * 100
    assert read_bounded(tmp_path, "a/missing", 10) is None


def test_a_sparse_huge_file_costs_only_the_limit(tmp_path):
    big = tmp_path / "summary.md"
    with open(big, "wb") as fh:
        fh.truncate(64 << 30)  # 64 GiB, no disk
    data = read_bounded(tmp_path, "summary.md", 1 << 20)
    assert data is not None and len(data) == 1 << 20


@pytest.mark.parametrize("shape", ["file-link", "dir-link", "dotdot", "fifo", "directory"])
def test_read_bounded_refuses_links_and_odd_files(tmp_path, shape):
    secret = tmp_path / "host-secret"
    secret.write_text("host key\n")
    ws = tmp_path / "ws"
    ws.mkdir()
    rel = ".toren/summary.md"
    if shape == "file-link":
        (ws / ".toren").mkdir()
        (ws / ".toren" / "summary.md").symlink_to(secret)
    elif shape == "dir-link":  # a symlinked .toren directory leading out of the workspace
        (tmp_path / "out").mkdir()
        (tmp_path / "out" / "summary.md").write_text("host file\n")
        (ws / ".toren").symlink_to(tmp_path / "out")
    elif shape == "dotdot":
        rel = "../host-secret"
    elif shape == "fifo":  # reading would block for ever
        (ws / ".toren").mkdir()
        os.mkfifo(ws / ".toren" / "summary.md")
    else:
        (ws / ".toren" / "summary.md").mkdir(parents=True)
    assert read_bounded(ws, rel, 1000) is None


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run the removal as another user")
@pytest.mark.parametrize("depth", [0, 2])
def test_remove_tree_never_chmods_through_a_link(depth):
    """As a non-root user (root ignores modes, so the chmod-and-retry path never runs for it) removing a tree of
    read-only directories holding links to the user's key and to a read-only directory of theirs."""
    import shutil
    import subprocess
    import tempfile

    base = Path(tempfile.mkdtemp())
    try:
        base.chmod(0o755)
        key = base / "id_ed25519"
        key.write_text("private key\n")
        key.chmod(0o600)
        outside = base / "outside"
        outside.mkdir()
        tree = base / "ws"
        inner = tree.joinpath(*["d"] * depth) if depth else tree
        inner.mkdir(parents=True)
        (inner / "link").symlink_to(key)
        (inner / "dirlink").symlink_to(outside, target_is_directory=True)
        for path in (base, key, outside, *[p for p in [inner, *inner.parents] if p.is_relative_to(tree)]):
            os.lchown(path, 65534, 65534)
        outside.chmod(0o500)
        for d in [p for p in [inner, *inner.parents] if p.is_relative_to(tree)]:
            d.chmod(0o500)  # read-only: unlinking fails and remove_tree's retry path runs
        # the checkout may not be readable by that user: the module goes along (it needs nothing else here)
        import toren_action.core.paths

        shutil.copy(toren_action.core.paths.__file__, base / "toren_paths.py")
        code = "import sys; from pathlib import Path; from toren_paths import remove_tree; " \
               "sys.exit(0 if remove_tree(Path(sys.argv[1])) else 1)"
        proc = subprocess.run(["/usr/bin/python3", "-c", code, str(tree)], user=65534,
                              group=65534, cwd=base, env={"PATH": os.environ["PATH"], "PYTHONPATH": str(base)},
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        assert not tree.exists()
        assert stat.S_IMODE(key.stat().st_mode) == 0o600 and key.read_text() == "private key\n"
        assert stat.S_IMODE(outside.stat().st_mode) == 0o500
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_remove_tree_on_a_link_removes_the_link_only(tmp_path):
    target = tmp_path / "keep"
    target.mkdir()
    (target / "f").write_text("x")
    link = tmp_path / "link"
    link.symlink_to(target)
    assert remove_tree(link)
    assert not link.is_symlink() and (target / "f").exists()


def test_toren_home_is_private_and_tightened(tmp_path):
    home = tmp_path / "home"
    home.mkdir(mode=0o755)
    (home / "jobs").mkdir(mode=0o755)
    home.chmod(0o755)
    (home / "jobs").chmod(0o755)
    got = toren_home({"TOREN_HOME": str(home)})
    for path in (got, got / "jobs", got / "mirrors"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o700, path


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a directory to another user")
def test_a_toren_home_owned_by_another_user_is_refused(tmp_path):
    home = tmp_path / "theirs"
    home.mkdir()
    os.chown(home, 12345, 12345)
    with pytest.raises(UsageError, match="TOREN_HOME: .* belongs to uid 12345"):
        toren_home({"TOREN_HOME": str(home)})


def test_the_database_and_its_wal_are_private_from_the_start(tmp_path):
    from toren_action.jobs.store import Store

    home = tmp_path / "h"
    store = Store(home)
    store.create_job(repo="r", branch="b", agent="shell", model=None, base_image="i", inputs={"env": {"A": "1"}})
    for name in ("toren.db", "toren.db-wal", "toren.db-shm"):
        path = Path(home, name)
        assert path.exists() and stat.S_IMODE(path.stat().st_mode) == 0o600, name
