"""Files CI runs (security issue 11, finding 5): everything under .github/ and every action.yml/action.yaml is
a workflow change; ``@ci`` in protected_paths names the other files CI, build tools and test runners run."""

from __future__ import annotations

import pytest

from tests.unit.test_policy_blind import commit_change, findings, make_repo
from toren_action.core.errors import UsageError
from toren_action.guard import policy

WORKFLOW_FILES = [".github/workflows/ci.yml", ".github/actions/deploy/action.yml", ".github/actions/x/run.sh",
                  ".github/dependabot.yml", ".github/CODEOWNERS", "tools/release/action.yaml", "action.yml",
                  "deep/er/Action.YML", ".GitHub/workflows/x.yml"]


@pytest.mark.parametrize("path", WORKFLOW_FILES)
def test_every_file_ci_reads_from_the_repository_is_a_workflow_change(path, tmp_path):
    repo = make_repo(tmp_path)
    commit_change(repo, {path: "runs:\n  using: composite\n"})
    assert [(f.rule, f.path) for f in findings(repo)] == [("workflow", path)]
    assert findings(repo, allow=frozenset({"workflow"})) == []


def test_deleting_a_composite_action_is_a_workflow_change_too(tmp_path):
    repo = make_repo(tmp_path, {".github/actions/check/action.yml": "runs: {}\n"})
    commit_change(repo, {}, remove=(".github/actions",))
    assert [f.rule for f in findings(repo)] == ["workflow"]


CI_FILES = ["Makefile", "sub/dir/Makefile", "conftest.py", "tests/conftest.py", "package.json", "web/package.json",
            "noxfile.py", "tox.ini", "setup.py", ".pre-commit-config.yaml", "pyproject.toml", "build/rules.mk",
            ".gitlab-ci.yml", "Jenkinsfile", ".circleci/config.yml", "Dockerfile"]


@pytest.mark.parametrize("path", CI_FILES)
def test_the_ci_preset_protects_what_ci_runs(path, tmp_path):
    repo = make_repo(tmp_path)
    commit_change(repo, {path: "x\n", "src/ok.py": "x = 1\n"})
    assert [(f.rule, f.path) for f in findings(repo, protected_paths=("@ci",))] == [("protected-path", path)]
    assert findings(repo) == []  # not protected unless asked


def test_presets_and_globs_mix_and_an_unknown_preset_is_refused(tmp_path):
    repo = make_repo(tmp_path)
    commit_change(repo, {"Makefile": "all:\n", "docs/x.md": "#\n", "README.md": "changed\n"})
    found = findings(repo, protected_paths=("@ci", "docs/*"))
    assert {f.path for f in found} == {"Makefile", "docs/x.md"}
    with pytest.raises(UsageError, match="@cii.*@ci"):
        findings(repo, protected_paths=("@cii",))
    assert "Makefile" in policy.protected_patterns(["@ci"]) and "*/conftest.py" in policy.protected_patterns(["@ci"])
