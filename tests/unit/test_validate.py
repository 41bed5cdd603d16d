import os
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from toren_action.config import validate
from toren_action.core.errors import UsageError


def git_accepts_branch(name: str) -> bool:
    return subprocess.run(["git", "check-ref-format", "--branch", name], capture_output=True).returncode == 0


@pytest.mark.parametrize("name", ["toren/fix-parser", "a", "feature/x_y-1.2", "UPPER/lower", "toren/issue-42"])
def test_good_branch_names(name):
    assert validate.branch_name(name) == name
    assert git_accepts_branch(name)


@pytest.mark.parametrize("name", [
    "", "has space", "a..b", "-x", "x.lock", "a/", "/a", "a//b", "a.", ".hidden", "a/.b", "x~1", "x^", "x:y",
    "x?", "x*", "x[", "x\\y", "@", "a@{b", "tab\there", "x" * 201, "HEAD",
])
def test_bad_branch_names(name):
    with pytest.raises(UsageError) as exc:
        validate.branch_name(name)
    assert str(exc.value).startswith("--branch: ")


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(
    st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x17F), min_size=1, max_size=40),
    st.text(alphabet="ab/.-_@{~^:", min_size=1, max_size=12),  # the characters git's rules are about
))
def test_branch_validator_never_accepts_what_git_refuses(name):
    try:
        validate.branch_name(name)
    except UsageError:
        return
    assert git_accepts_branch(name), name


@given(st.from_regex(r"\A[A-Za-z_][A-Za-z0-9_]{0,20}\Z"), st.text(max_size=30))
def test_env_pairs(key, value):
    text = f"{key}={value}"
    if any(c in value for c in "\n\r\x00"):
        with pytest.raises(UsageError):
            validate.env_pair(text)
    else:
        assert validate.env_pair(text) == (key, value)


@pytest.mark.parametrize("text", ["NOEQ", "1A=x", "A-B=x", "=x", "A B=x"])
def test_bad_env(text):
    with pytest.raises(UsageError, match="^--env: "):
        validate.env_pair(text)


@pytest.fixture
def fakehome(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    for d in (".ssh", ".aws", "projects/data"):
        (home / d).mkdir(parents=True)
    return home


def test_volume_ok(tmp_path, fakehome):
    m = validate.volume_spec(f"{fakehome}/projects/data:/data:ro", str(tmp_path), str(fakehome))
    assert (m.source, m.target, m.read_only) == (os.path.realpath(fakehome / "projects/data"), "/data", True)
    m = validate.volume_spec("home/projects/data:/workspace/models", str(tmp_path), str(fakehome))
    assert m.read_only is False and m.target == "/workspace/models"


@pytest.mark.parametrize("spec,needle", [
    ("/:/host", "root"),
    ("{home}:/h", "home directory"),
    ("{home}/.ssh:/s", "credentials"),
    ("{home}/.aws:/s:ro", "credentials"),
    ("/nonexistent-xyz:/x", "does not exist"),
    ("{home}/projects:relative", "absolute"),
    ("{home}/projects:/", "absolute"),
    ("{home}/projects:/workspace", "Toren's own"),
    ("{home}/projects:/run/toren/secrets", "Toren's own"),
    ("{home}/projects:/x:rx", "ro or rw"),
    ("{home}/projects/../projects:/x", "'..'"),
    ("{home}/projects", "SRC:DST"),
    ("a:b:c:d", "SRC:DST"),
])
def test_volume_refused(tmp_path, fakehome, spec, needle):
    with pytest.raises(UsageError, match="^--volume: ") as exc:
        validate.volume_spec(spec.format(home=fakehome), str(tmp_path), str(fakehome))
    assert needle in str(exc.value)


def test_volume_allow_list(tmp_path, fakehome):
    m = validate.volume_spec(f"{fakehome}/.aws:/aws:ro", str(tmp_path), str(fakehome), (str(fakehome / ".aws"),))
    assert m.target == "/aws"


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from(["a", "..", "b", "."]), min_size=1, max_size=5))
def test_volume_never_accepts_dotdot(parts):
    src = "/tmp/" + "/".join(parts)
    if ".." not in parts:
        return
    with pytest.raises(UsageError):
        validate.volume_spec(f"{src}:/x", "/tmp", "/nonexistent-home")


@pytest.mark.parametrize("good", ["python:3.11", "pytorch/pytorch:latest", "ghcr.io/org/img:v1", "localhost:5000/a/b",
                                  "toren/base:bookworm", "nvcr.io/nvidia/pytorch:24.01-py3",
                                  "alpine@sha256:" + "a" * 64, "2a85133e864e"])
def test_image_refs(good):
    assert validate.image_ref(good) == good


@pytest.mark.parametrize("bad", ["", "UPPER/case", "bad image", "a:", "a::b", ":tag", "a/", "img@sha256:xyz"])
def test_bad_image_refs(bad):
    with pytest.raises(UsageError, match="^--base-image: "):
        validate.image_ref(bad)


@pytest.mark.parametrize("good", ["all", "1", "4", "device=0", "device=0,1", "device=GPU-3a2b"])
def test_gpus(good):
    assert validate.gpus_spec(good) == good


@pytest.mark.parametrize("bad", ["0", "-1", "lots", "device=", "device=a", "all,1"])
def test_bad_gpus(bad):
    with pytest.raises(UsageError, match="^--gpus: "):
        validate.gpus_spec(bad)


@pytest.mark.parametrize("text,expected", [
    ("https://github.com/acme/widget/issues/42", ("acme/widget", 42)),
    ("https://ghe.example.com/acme/widget/issues/7/", ("acme/widget", 7)),
    ("acme/widget#3", ("acme/widget", 3)),
])
def test_issue_refs(text, expected):
    ref = validate.issue_ref(text)
    assert (ref.repo, ref.number) == expected


@pytest.mark.parametrize("bad", ["42", "acme/widget", "https://github.com/acme/widget/pull/4", "acme/widget#0"])
def test_bad_issue_refs(bad):
    with pytest.raises(UsageError, match="^--issue: "):
        validate.issue_ref(bad)


def test_repo_specs(tmp_path):
    (tmp_path / "r" / ".git").mkdir(parents=True)
    assert validate.repo_spec("r", str(tmp_path)).kind == "local"
    assert validate.repo_spec("https://example.com/a/b.git", str(tmp_path)).kind == "url"
    assert validate.repo_spec("git@example.com:a/b.git", str(tmp_path)).kind == "url"
    assert validate.repo_spec("acme/widget", str(tmp_path)) == validate.RepoRef("github", "acme/widget")
    (tmp_path / "plain").mkdir()
    with pytest.raises(UsageError, match="not a git repository"):
        validate.repo_spec("plain", str(tmp_path))
    with pytest.raises(UsageError, match="neither"):
        validate.repo_spec("no/such/path", str(tmp_path))


def test_tilde_is_expanded(tmp_path, monkeypatch):
    home = tmp_path / "h"
    (home / "data").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    m = validate.volume_spec("~/data:/data", "/", str(tmp_path / "other-home"))
    assert m.source == os.path.realpath(home / "data")
    (home / "t.md").write_text("# t\n")
    assert validate.spec_file("~/t.md", "/") == (home / "t.md").resolve()


def test_volume_destinations_are_normalised(tmp_path):
    (tmp_path / "d").mkdir()
    assert validate.volume_spec("d:/data//models/", str(tmp_path), "/nonexistent").target == "/data/models"


@pytest.mark.parametrize("text,problem", [
    ("", "is empty; write the task in it"),
    ("   \n\t\n", "holds only white space; write the task in it"),
    ("\r\n\u00a0\u2003\n", "holds only white space"),  # no-break and em spaces
    ("\ufeff\u200b\u200d\n", "holds only white space"),  # a BOM and zero-width characters show nothing either
])
def test_a_spec_with_no_task_in_it_is_refused(tmp_path, text, problem):
    (tmp_path / "task.md").write_text(text, "utf-8")
    with pytest.raises(UsageError, match=f"^--spec: task.md {problem}"):
        validate.spec_file("task.md", str(tmp_path))


def test_a_spec_with_one_visible_character_is_a_task(tmp_path):
    (tmp_path / "task.md").write_text("\ufeff  x\n", "utf-8")
    assert validate.spec_file("task.md", str(tmp_path)) == (tmp_path / "task.md").resolve()
