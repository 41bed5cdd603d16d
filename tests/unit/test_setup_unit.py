"""The setup's guards without Docker: which script runs (never one through a symlink out of the repository), what
the cache key covers, how the prepared paths are kept out of the commit, and how prepared files are copied into a
tree that the commit (hostile) shaped."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import git
from toren_action.config import validate
from toren_action.config.settings import Settings
from toren_action.core.errors import SetupFailed, UsageError
from toren_action.job import setup


def commit_all(path: Path) -> str:
    git("add", "-A", cwd=path)
    git("-c", "user.name=U", "-c", "user.email=u@example.invalid", "commit", "-q", "--allow-empty", "-m", "c", cwd=path)
    return git("rev-parse", "HEAD", cwd=path).strip()


@pytest.fixture
def repo_at(tmp_path):
    path = tmp_path / "r"
    path.mkdir()
    git("init", "-q", "-b", "main", cwd=path)
    return path


class _Plan:
    def __init__(self, origin: str = "/src/lib", base_branch: str = "main", **settings):
        self.settings = Settings(**settings)
        self.setup_secrets = ()
        self.origin, self.base_branch, self.base_commit, self.pull = origin, base_branch, None, None


def script_of(repo: Path, **settings):
    commit = commit_all(repo)
    return setup.setup_command(_Plan(**settings), repo, setup._tree_entries(repo, commit))  # type: ignore[arg-type]


# -- which setup runs

def test_the_command_wins_over_the_script(repo_at):
    (repo_at / ".toren").mkdir()
    (repo_at / ".toren" / "setup.sh").write_text("echo script\n")
    cmd = script_of(repo_at, setup="make deps")
    assert cmd is not None and cmd.command == "make deps" and not cmd.script_blobs


def test_the_script_runs_with_sh_or_itself_when_executable(repo_at):
    (repo_at / ".toren").mkdir()
    script = repo_at / ".toren" / "setup.sh"
    script.write_text("echo script\n")
    cmd = script_of(repo_at)
    assert cmd is not None and cmd.command == "exec /bin/sh ./.toren/setup.sh" and len(cmd.script_blobs) == 1
    script.chmod(0o755)
    cmd = script_of(repo_at)
    assert cmd is not None and cmd.command == "exec ./.toren/setup.sh"


def test_no_setup_without_a_command_or_script(repo_at):
    (repo_at / "README").write_text("x\n")
    assert script_of(repo_at) is None


@pytest.mark.parametrize("target", ["/etc/passwd", "../../outside.sh", "../..", "../x/../../y"])
def test_a_committed_script_symlink_out_of_the_repository_ends_the_job(repo_at, target):
    (repo_at / ".toren").mkdir()
    (repo_at / ".toren" / "setup.sh").symlink_to(target)
    with pytest.raises(SetupFailed, match="symlink out of the repository"):
        script_of(repo_at)


def test_a_script_symlink_inside_the_repository_runs_and_its_target_is_in_the_key(repo_at):
    (repo_at / "scripts").mkdir()
    (repo_at / "scripts" / "deps.sh").write_text("echo deps\n")
    (repo_at / ".toren").mkdir()
    (repo_at / ".toren" / "setup.sh").symlink_to("../scripts/deps.sh")
    first = script_of(repo_at)
    assert first is not None and len(first.script_blobs) == 2
    (repo_at / "scripts" / "deps.sh").write_text("echo other deps\n")
    second = script_of(repo_at)
    assert second is not None and second.script_blobs[1] != first.script_blobs[1]


def test_a_script_symlink_to_a_directory_is_refused(repo_at):
    (repo_at / "scripts").mkdir()
    (repo_at / "scripts" / "x").write_text("x\n")
    (repo_at / ".toren").mkdir()
    (repo_at / ".toren" / "setup.sh").symlink_to("../scripts")
    with pytest.raises(SetupFailed, match="no file of the repository"):
        script_of(repo_at)


# -- the cache key

@pytest.mark.parametrize("pattern,yes,no", [
    ("requirements*.txt", ["requirements.txt", "requirements-dev.txt"], ["sub/requirements.txt", "requirements.in"]),
    ("**/package.json", ["package.json", "a/b/package.json"], ["package.json.bak", "a/package-lock.json"]),
    ("uv.lock", ["uv.lock"], ["x/uv.lock", "uv_lock"]),
    ("deps/**", ["deps/a", "deps/b/c"], ["deps", "other/deps/a"]),
    ("req[!x].txt", ["reqa.txt"], ["reqx.txt"]),
    ("a.(b)+", ["a.(b)+"], ["a.bb"]),
])
def test_cache_key_globs(pattern, yes, no):
    regex = validate.cache_key_regex(pattern)
    assert all(regex.match(p) for p in yes) and not any(regex.match(p) for p in no)


@pytest.mark.parametrize("pattern", ["/etc/passwd", "../x", "a/../../b", "a//b", "./x", "~/.netrc", "", "a\\..\\b",
                                     "x/.."])
def test_cache_key_patterns_outside_the_repository_are_refused(pattern):
    with pytest.raises(UsageError) as exc:
        validate.cache_key_pattern(pattern)
    assert exc.value.exit_code == 2


def test_the_key_follows_the_cache_key_files_content_not_other_files(repo_at):
    (repo_at / "requirements.txt").write_text("pytest\n")
    (repo_at / "app.py").write_text("x = 1\n")
    plan = _Plan(setup="pip install -r requirements.txt", setup_cache_key=("requirements*.txt",))

    def key() -> str:
        entries = setup._tree_entries(repo_at, commit_all(repo_at))
        cmd = setup.setup_command(plan, repo_at, entries)  # type: ignore[arg-type]
        assert cmd is not None
        files = setup.cache_key_files(plan.settings.setup_cache_key, entries)
        return setup.cache_key(plan, "sha256:img", cmd, files)  # type: ignore[arg-type]

    first = key()
    (repo_at / "app.py").write_text("x = 2\n")
    assert key() == first  # the code changes: the environment is the same
    (repo_at / "requirements.txt").write_text("pytest==8\n")
    assert key() != first
    (repo_at / "requirements-dev.txt").write_text("ruff\n")
    third = key()
    assert third != first
    plan.settings = Settings(setup="pip install -r requirements.txt", setup_cache_key=("requirements*.txt",),
                             setup_version="2")
    assert key() != third


# -- out of the commit

def test_the_key_names_whose_code_the_setup_runs_the_origin_and_the_base(repo_at):
    # the same command and cache-key files in another repository, or on another line of history of this one
    # (an earlier agent's unmerged branch), run other code: never the same prepared environment
    (repo_at / "requirements.txt").write_text("pytest\n")
    entries = setup._tree_entries(repo_at, commit_all(repo_at))

    def key(plan: _Plan) -> str:
        cmd = setup.setup_command(plan, repo_at, entries)  # type: ignore[arg-type]
        assert cmd is not None
        files = setup.cache_key_files(plan.settings.setup_cache_key, entries)
        return setup.cache_key(plan, "sha256:img", cmd, files)  # type: ignore[arg-type]

    settings = {"setup": "pip install -e .", "setup_cache_key": ("requirements*.txt",)}
    base = key(_Plan(**settings))
    assert key(_Plan(**settings)) == base  # the same repository and branch: reused
    assert key(_Plan(origin="/src/other", **settings)) != base
    github = key(_Plan(origin="https://github.example/acme/lib.git", **settings))
    assert github != key(_Plan(origin="https://github.example/evil/lib.git", **settings))
    # the origin's credentials are not part of it (a token that changes reuses the environment)
    assert key(_Plan(origin="https://x-access-token:t0k3n@github.example/acme/lib.git", **settings)) == github
    assert key(_Plan(base_branch="toren/earlier", **settings)) != base
    plan = _Plan(**settings)
    plan.base_commit = "0" * 40  # --base-ref: that commit's own
    assert key(plan) != base

    class _Pull:
        head_branch = "toren/fix-parser"

    plan = _Plan(**settings)
    plan.pull = _Pull()  # a review round: its pull request's branch, whatever the base branch
    assert key(plan) != base


@pytest.mark.parametrize("name", ["plain", "star*", "q?uestion", "[brackets]", "back\\slash", "trailing ",
                                  "#hash", "!bang", "sp ace"])
def test_a_prepared_path_is_excluded_exactly(repo_at, name):
    (repo_at / "keep").write_text("tracked\n")
    commit_all(repo_at)
    (repo_at / name).write_text("prepared\n")
    (repo_at / "other").write_text("the agent's\n")
    setup.exclude_paths(repo_at, (name,))
    status = git("status", "--porcelain", "-z", "--untracked-files=all", cwd=repo_at).split("\0")
    assert "?? other" in status and not any(e[3:] == name for e in status), status


def test_a_prepared_directory_is_excluded_but_not_a_sibling(repo_at):
    (repo_at / "src").mkdir()
    (repo_at / "src" / "mod.py").write_text("x = 1\n")
    commit_all(repo_at)
    (repo_at / "src" / "mod.egg-info").mkdir()
    (repo_at / "src" / "mod.egg-info" / "PKG-INFO").write_text("x\n")
    (repo_at / "src" / "new.py").write_text("y = 1\n")
    setup.exclude_paths(repo_at, ("src/mod.egg-info/",))
    status = git("status", "--porcelain", "--untracked-files=all", cwd=repo_at).split("\n")
    assert "?? src/new.py" in status and not [e for e in status if "egg-info" in e]


# -- copying prepared files into a tree the commit shaped

def env_with(tmp_path: Path, files: dict[str, str]) -> setup.PreparedEnv:
    tree = tmp_path / "cache" / "tree"
    for rel, text in files.items():
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        (tree / rel).write_text(text)
    paths = tuple(sorted({rel.split("/")[0] + ("/" if "/" in rel else "") for rel in files}))
    return setup.PreparedEnv("img", "k", "hit", tree, paths, 0.0)


def test_prepared_files_are_copied_in_without_following_a_symlink_of_the_tree(tmp_path):
    env = setup.PreparedEnv("img", "k", "hit", tmp_path / "cache" / "tree", ("a/b/", "c"), 0.0)
    (env.tree / "a" / "b").mkdir(parents=True)
    (env.tree / "a" / "b" / "f").write_text("prepared\n")
    (env.tree / "c").write_text("prepared\n")
    victim = tmp_path / "victim"
    victim.mkdir()
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "a").symlink_to(victim)  # the commit made a/ a link out of the tree
    lines: list[str] = []
    setup.copy_in(env, dest, lines.append)
    assert not list(victim.iterdir())
    assert (dest / "c").read_text() == "prepared\n"
    assert any("a/b" in line for line in lines)


def test_a_path_the_commit_has_is_left_as_the_commit_has_it(tmp_path):
    env = env_with(tmp_path, {"node_modules/x/index.js": "prepared\n", ".venv/bin/python": "prepared\n"})
    dest = tmp_path / "dest"
    (dest / "node_modules").mkdir(parents=True)
    (dest / "node_modules" / "vendored.js").write_text("tracked\n")
    setup.copy_in(env, dest)
    assert not (dest / "node_modules" / "x").exists()
    assert (dest / ".venv" / "bin" / "python").read_text() == "prepared\n"


def test_links_in_the_prepared_files_are_copied_as_links(tmp_path):
    env = env_with(tmp_path, {".venv/lib/x.py": "x\n"})
    (env.tree / ".venv" / "lib" / "link").symlink_to("/etc/passwd")
    os.mkfifo(env.tree / ".venv" / "fifo")  # copied as a fifo, never opened
    dest = tmp_path / "dest"
    dest.mkdir()
    setup.copy_in(env, dest)
    assert os.readlink(dest / ".venv" / "lib" / "link") == "/etc/passwd"
    assert (dest / ".venv" / "fifo").is_fifo()


def test_keeping_the_files_puts_back_tracked_files_the_setup_changed(repo_at, tmp_path):
    (repo_at / "package-lock.json").write_text("{}\n")
    commit_all(repo_at)
    (repo_at / "package-lock.json").write_text('{"rewritten": true}\n')
    (repo_at / "node_modules").mkdir()
    (repo_at / "node_modules" / "m.js").write_text("m\n")
    lines: list[str] = []
    paths = setup.keep_workspace_files(repo_at, tmp_path / "kept", lines.append)
    assert paths == ("node_modules/",)
    assert (repo_at / "package-lock.json").read_text() == "{}\n"
    assert any("package-lock.json" in line for line in lines)
    assert (tmp_path / "kept" / "tree" / "node_modules" / "m.js").read_text() == "m\n"
    assert subprocess.run(["git", "diff", "--quiet"], cwd=repo_at).returncode == 0


def test_git_files_the_setup_wrote_are_not_kept(repo_at, tmp_path):
    # host-side git reads them in every later clone: a nested .gitignore outranks .git/info/exclude
    (repo_at / "src").mkdir()
    (repo_at / "src" / "a.py").write_text("a\n")
    commit_all(repo_at)
    (repo_at / "src" / ".gitignore").write_text("!node_modules/\n!*.env\n")
    (repo_at / ".gitattributes").write_text("*.py -text\n")
    (repo_at / ".gitmodules").write_text("[submodule \"x\"]\n")
    (repo_at / ".venv").mkdir()
    (repo_at / ".venv" / ".gitignore").write_text("*\n")  # inside a kept directory: git never reads it
    lines: list[str] = []
    paths = setup.keep_workspace_files(repo_at, tmp_path / "kept", lines.append)
    assert paths == (".venv/",)
    assert not (repo_at / "src" / ".gitignore").exists() and not (repo_at / ".gitattributes").exists()
    assert (tmp_path / "kept" / "tree" / ".venv" / ".gitignore").exists()
    assert any("src/.gitignore" in line and "not kept" in line for line in lines)


def test_only_the_paths_put_in_place_are_excluded_from_the_commit(repo_at, tmp_path):
    (repo_at / "node_modules").mkdir()
    (repo_at / "node_modules" / "vendored.js").write_text("tracked\n")  # the commit tracks node_modules/ now
    commit_all(repo_at)
    env = env_with(tmp_path, {"node_modules/x/index.js": "prepared\n", ".venv/bin/python": "prepared\n"})
    setup.copy_in(env, repo_at)
    assert env.excluded == (".venv/",)
    (repo_at / "node_modules" / "agent.js").write_text("the agent's new file\n")
    (repo_at / ".venv" / "agent-file").write_text("in the prepared environment\n")
    status = git("status", "--porcelain", "--untracked-files=all", cwd=repo_at).split("\n")
    assert "?? node_modules/agent.js" in status and not [e for e in status if ".venv" in e], status


def test_a_clone_the_setup_left_in_a_prepared_directory_is_no_nested_repository(tmp_path):
    from toren_action.git import workspace

    root = tmp_path / "ws"
    (root / ".venv" / "src" / "dep" / ".git").mkdir(parents=True)
    (root / "lib" / "vendored" / ".git").mkdir(parents=True)
    assert workspace.nested_repositories(root, (".venv/",)) == ["lib/vendored/.git"]
    assert workspace.nested_repositories(root) == [".venv/src/dep/.git", "lib/vendored/.git"]


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="sealing gives the files to root")


@needs_root
def test_sealed_files_are_shared_as_read_only_links_and_a_changed_seal_is_noticed(repo_at, tmp_path):
    (repo_at / "keep").write_text("tracked\n")
    commit_all(repo_at)
    (repo_at / ".venv" / "bin").mkdir(parents=True)
    (repo_at / ".venv" / "bin" / "tool").write_text("#!/bin/sh\n")
    (repo_at / ".venv" / "bin" / "tool").chmod(0o4777)  # set-uid and writable by all: both go
    os.chown(repo_at / ".venv" / "bin" / "tool", 1000, 1000)
    where = tmp_path / "kept"
    paths = setup.keep_workspace_files(repo_at, where, lambda _: None, seal=True)
    assert paths == (".venv/",) and not (repo_at / ".venv").exists()  # moved, not copied
    kept = where / "tree" / ".venv" / "bin" / "tool"
    st = os.stat(kept)
    assert (st.st_uid, st.st_mode & 0o7777) == (0, 0o555)
    env = setup.PreparedEnv("img", "k", "hit", where / "tree", paths, 0.0, sealed=True)
    setup.copy_in(env, repo_at)
    assert os.stat(repo_at / ".venv" / "bin" / "tool").st_ino == st.st_ino  # a hard link, no copy
    assert setup.sealed_intact(where / "tree")
    os.chown(repo_at / ".venv" / "bin" / "tool", 1000, 1000)  # what a give_tree_to after copy_in would do
    assert not setup.sealed_intact(where / "tree")


# -- the [setup] table of a settings file

def load_file(tmp_path, text, name="toren.toml") -> Settings:
    (tmp_path / name).write_text(text)
    return Settings.load({}, environ={}, cwd=str(tmp_path))


def test_the_setup_table_is_the_two_settings(tmp_path):
    s = load_file(tmp_path, '[setup]\nrun = "make deps"\ncache_key = ["requirements*.txt"]\n')
    assert (s.setup, s.setup_cache_key) == ("make deps", ("requirements*.txt",))
    assert s.source_of("setup").endswith("toren.toml: setup")
    s = load_file(tmp_path, '[project]\nname = "x"\n[tool.toren.setup]\nrun = "make deps"\ncache-key = ["a"]\n',
                  "pyproject.toml")
    (tmp_path / "toren.toml").unlink()
    s = Settings.load({}, environ={}, cwd=str(tmp_path))
    assert (s.setup, s.setup_cache_key) == ("make deps", ("a",))
    assert load_file(tmp_path, 'setup = "make deps"\n').setup == "make deps"


@pytest.mark.parametrize("text,named", [
    ('[setup]\nrun = "x"\nnetwork = "host"\n', "setup.network"),
    ('[setup]\nrun = "x"\nversion = "2"\n', "setup.version"),
    ('[setup]\nrun = "x"\nsetup_network = "host"\n', "setup.setup_network"),
    ('setup_cache_key = ["a"]\n[setup]\ncache_key = ["b"]\n', "also set as setup_cache_key"),
    ('[setup]\nrun = 3\n', "setup"),
])
def test_bad_setup_tables_are_refused_in_one_line(tmp_path, text, named):
    from toren_action.core.errors import ConfigError

    with pytest.raises(ConfigError) as exc:
        load_file(tmp_path, text)
    assert named in str(exc.value) and "\n" not in str(exc.value) and exc.value.exit_code == 3


def test_what_the_setup_writes_in_torens_own_directory_is_dropped(repo_at, tmp_path):
    (repo_at / ".toren").mkdir()
    (repo_at / ".toren" / "setup.sh").write_text("echo hi\n")
    commit_all(repo_at)
    (repo_at / ".toren" / "summary.md").write_text("# A summary the setup wrote for the PR\n")
    (repo_at / ".venv").mkdir()
    (repo_at / ".venv" / "x").write_text("x\n")
    paths = setup.keep_workspace_files(repo_at, tmp_path / "kept", lambda _: None)
    assert paths == (".venv/",)
    assert not (repo_at / ".toren" / "summary.md").exists() and (repo_at / ".toren" / "setup.sh").exists()


def test_keeping_across_file_systems_copies_and_leaves_the_clone_as_a_rename_would(repo_at, tmp_path, monkeypatch):
    (repo_at / "keep").write_text("tracked\n")
    commit_all(repo_at)
    (repo_at / ".venv").mkdir()
    (repo_at / ".venv" / "x").write_text("x\n")

    real = os.rename

    def no_rename(src, dst):  # the clone is on another file system than TOREN_HOME
        if str(src).startswith(str(repo_at)):
            raise OSError(18, "Invalid cross-device link")
        real(src, dst)

    monkeypatch.setattr(setup.os, "rename", no_rename)
    paths = setup.keep_workspace_files(repo_at, tmp_path / "kept", lambda _: None)
    monkeypatch.undo()
    assert paths == (".venv/",) and not (repo_at / ".venv").exists()
    assert (tmp_path / "kept" / "tree" / ".venv" / "x").read_text() == "x\n"


@needs_root
def test_a_hard_link_the_setup_made_to_a_tracked_file_is_sealed_as_a_copy(repo_at, tmp_path):
    (repo_at / "README.md").write_text("tracked\n")
    commit_all(repo_at)
    (repo_at / ".venv").mkdir()
    os.link(repo_at / "README.md", repo_at / ".venv" / "readme-link")
    setup.keep_workspace_files(repo_at, tmp_path / "kept", lambda _: None, seal=True)
    st = os.stat(repo_at / "README.md")
    assert st.st_uid != 0 or os.stat(repo_at).st_uid == 0  # the tracked file keeps its owner
    assert st.st_mode & 0o200  # and stays writable
    assert os.stat(tmp_path / "kept" / "tree" / ".venv" / "readme-link").st_ino != st.st_ino


@pytest.mark.parametrize("seal", [False, True])
def test_a_kept_file_shares_no_inode_with_the_clone_sealed_or_not(repo_at, tmp_path, seal):
    # without the seal (Toren not root) too: job 1's agent writing its tracked README.md in place must not
    # change what job 2 gets as the prepared .venv's file
    (repo_at / "README.md").write_text("tracked\n")
    commit_all(repo_at)
    (repo_at / ".venv").mkdir()
    os.link(repo_at / "README.md", repo_at / ".venv" / "activate")
    setup.keep_workspace_files(repo_at, tmp_path / "kept", lambda _: None, seal=seal)
    with open(repo_at / "README.md", "a") as fh:  # the agent, in its clone
        fh.write("poison\n")
    assert (tmp_path / "kept" / "tree" / ".venv" / "activate").read_text() == "tracked\n"


@pytest.mark.parametrize("seal", [False, True])
def test_unsharing_a_kept_file_never_writes_through_a_name_the_setup_chose(repo_at, tmp_path, seal):
    # the setup made `.venv/a` (two links) and `.venv/a.toren-tmp`, a hard link to the tracked README.md: the
    # copy that unshares `a` must not be written into README.md's inode
    (repo_at / "README.md").write_text("tracked\n")
    commit_all(repo_at)
    (repo_at / ".venv").mkdir()
    (repo_at / ".venv" / "a").write_text("prepared\n")
    os.link(repo_at / ".venv" / "a", repo_at / ".venv" / "b")
    os.link(repo_at / "README.md", repo_at / ".venv" / "a.toren-tmp")
    setup.keep_workspace_files(repo_at, tmp_path / "kept", lambda _: None, seal=seal)
    assert (repo_at / "README.md").read_text() == "tracked\n"
    readme = os.stat(repo_at / "README.md").st_ino
    kept = tmp_path / "kept" / "tree" / ".venv"
    assert all(os.stat(kept / n).st_ino != readme for n in ("a", "b", "a.toren-tmp"))
    assert (kept / "a").read_text() == "prepared\n" and not list(kept.glob(".toren-unshare-*"))


def test_links_the_setup_left_are_kept_as_links_and_never_followed(repo_at, tmp_path):
    (repo_at / "keep").write_text("tracked\n")
    commit_all(repo_at)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious").write_text("the host's\n")
    (repo_at / ".venv").symlink_to(outside)  # the whole prepared directory is a link out
    (repo_at / "node_modules").mkdir()
    (repo_at / "node_modules" / "up").symlink_to("../../outside")
    paths = setup.keep_workspace_files(repo_at, tmp_path / "kept", lambda _: None, seal=os.geteuid() == 0)
    assert set(paths) == {".venv", "node_modules/"}
    env = setup.PreparedEnv("img", "k", "hit", tmp_path / "kept" / "tree", paths, 0.0, sealed=os.geteuid() == 0)
    dest = tmp_path / "dest"
    dest.mkdir()
    setup.copy_in(env, dest)
    assert os.readlink(dest / ".venv") == str(outside) and os.readlink(dest / "node_modules" / "up")
    assert [p.name for p in outside.iterdir()] == ["precious"] and (outside / "precious").read_text() == "the host's\n"
    assert os.stat(outside / "precious").st_uid == os.stat(outside).st_uid  # not sealed through the link


def test_two_toren_homes_never_share_a_prepared_image(tmp_path):
    key = "a" * 64
    one, two = setup.prepared_tag(tmp_path / "home1", key), setup.prepared_tag(tmp_path / "home2", key)
    assert one != two and one.startswith("toren/prepared:") and setup.prepared_tag(tmp_path / "home1", key) == one
