"""Parts of the warm path that are fast because they do less: patterns compiled on first use, the mirror refreshed
with one fetch (following the origin's HEAD as the plan read it), the warm bandit's answer."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.conftest import git
from toren_action.core.patterns import lazy


def test_a_lazy_pattern_compiles_on_first_use_and_answers_as_re_does():
    p = lazy(r"(?P<w>b+)", re.I)
    assert p._compiled is None  # nothing compiled yet
    text = "aBbcbd"
    expected = re.compile(r"(?P<w>b+)", re.I)
    assert p.search(text).group("w") == expected.search(text).group("w") == "Bb"
    assert p.findall(text) == expected.findall(text) and p.sub("-", text) == expected.sub("-", text)
    assert p.split(text) == expected.split(text) and p.match(text) is None and p.pattern == r"(?P<w>b+)"
    assert [m.span() for m in p.finditer(text)] == [m.span() for m in expected.finditer(text)]
    assert p._compiled is not None and p.fullmatch("bb") and p.subn("", text) == expected.subn("", text)


def test_importing_the_job_path_compiles_few_of_torens_patterns():
    """The modules' patterns are lazy: importing everything `toren run` loads compiles only those used at import."""
    code = ("import re, sys; seen = []; real = re._compile\n"
            "def spy(p, f):\n"
            "    frame = sys._getframe(1)\n"
            "    while frame.f_globals.get('__name__') == 're': frame = frame.f_back\n"
            "    if frame.f_globals.get('__name__', '').startswith('toren_action'): seen.append(p)\n"
            "    return real(p, f)\n"
            "re._compile = spy\n"
            "import toren_action.cli.commands, toren_action.job.submit, toren_action.job.run, toren_action.job.verify\n"
            "import toren_action.git.review, toren_action.guard.policy, toren_action.config.validate\n"
            "print(len(seen))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert 0 < int(out.split()[0]) <= 12, out  # about 70 are declared in these modules; 6 are compiled now


@pytest.fixture
def origin(tmp_path):
    repo = tmp_path / "origin"
    repo.mkdir()
    git("init", "-q", "-b", "main", cwd=repo)
    (repo / "a.txt").write_text("a\n")
    git("add", "-A", cwd=repo)
    git("-c", "user.name=t", "-c", "user.email=t@x", "commit", "-qm", "one", cwd=repo)
    git("branch", "dev", cwd=repo)
    git("branch", "gone", cwd=repo)
    return repo


def _mirror_head(mirror) -> str:
    return git("symbolic-ref", "HEAD", cwd=mirror).strip()


@pytest.mark.parametrize("told", [True, False], ids=["head from the plan", "head asked"])
def test_the_mirror_follows_the_origins_head_and_prunes_deleted_branches(tmp_path, origin, told):
    from toren_action.git import workspace

    home = tmp_path / "home"
    mirror = workspace.update_mirror(home, str(origin))
    assert _mirror_head(mirror) == "refs/heads/main"
    git("symbolic-ref", "HEAD", "refs/heads/dev", cwd=origin)
    git("branch", "-D", "gone", cwd=origin)
    workspace.update_mirror(home, str(origin), head="dev" if told else None)
    assert _mirror_head(mirror) == "refs/heads/dev"
    branches = git("for-each-ref", "--format=%(refname)", "refs/heads", cwd=mirror).split()
    assert branches == ["refs/heads/dev", "refs/heads/main"]


def test_the_warm_bandit_answers_with_bandits_own_exit_code(tmp_path):
    from toren_action.guard import codescan

    (tmp_path / "ok.py").write_text("def f():\n    return 1\n")
    (tmp_path / "bad.py").write_text("import subprocess\ndef f(x):\n    subprocess.call(x, shell=True)\n")
    for name, code in (("ok.py", 0), ("bad.py", 1)):
        warm = codescan.WarmBandit().start()
        try:
            done = warm.run(tmp_path, ["-q", "-f", "json", "--", name], timeout=60)
        finally:
            warm.close()
        assert done is not None and done.returncode == code, done
        assert codescan.parse_bandit(done.stdout) is not None  # the whole report, flushed before the exit
