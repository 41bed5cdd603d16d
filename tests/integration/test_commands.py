"""The other commands over real jobs: health, summary, cleanup; and a repository given as a git URL."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.conftest import BASE_IMAGE, git
from tests.integration.test_run_local import run_shell, toren

pytestmark = pytest.mark.docker


def test_health_json(workdir, capsys):
    code, out, _ = toren(capsys, "health", "--json", "--docker-image", BASE_IMAGE, "--security")
    report = json.loads(out)
    assert code == 0 and report["ok"] is True
    checks = {c["check"]: c for c in report["checks"]}
    assert checks["docker"]["ok"] and checks["git"]["ok"]
    assert checks["image"]["ok"] and "linux" in checks["image"]["detail"]
    assert checks["gpus"]["required"] is False
    assert "runs as root" in checks["security user"]["detail"]
    assert checks["security secrets"]["ok"] and "security setuid/setgid" in checks


def test_health_lists_agent_profiles_and_which_credentials_are_present(workdir, capsys, monkeypatch, tmp_path):
    for var in ("ANTHROPIC_API_KEY", "GEMINI_API_KEY", "GEMINI_API_KEY_FILE", "OPENAI_API_KEY", "OPENAI_API_KEY_FILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-health-0123456789")
    key_file = tmp_path / "gemini.key"
    key_file.write_text("AIza-health-0123456789")
    monkeypatch.setenv("GEMINI_API_KEY_FILE", str(key_file))
    code, out, _ = toren(capsys, "health", "--json")
    checks = {c["check"]: c for c in json.loads(out)["checks"]}
    assert checks["agent claude"]["ok"] and "ANTHROPIC_API_KEY" in checks["agent claude"]["detail"]
    assert "@anthropic-ai/claude-code@" in checks["agent claude"]["detail"]
    assert checks["agent gemini"]["ok"] and "GEMINI_API_KEY_FILE" in checks["agent gemini"]["detail"]
    assert not checks["agent codex"]["ok"] and "set OPENAI_API_KEY" in checks["agent codex"]["detail"]
    assert checks["agent shell"]["ok"]
    assert "sk-ant-health" not in out and "AIza-health" not in out  # names, never values
    assert code == 0  # a missing key for one agent is a warning, not a failed check


def test_health_missing_image_is_reported(workdir, capsys):
    code, out, _ = toren(capsys, "health", "--docker-image", "toren-test/absent:1")
    assert "not present locally" in out


def test_summary_and_cleanup(workdir, toren_home, capsys, docker_client):
    code, failed, _ = run_shell(capsys, "echo partial > p.txt; exit 4", branch="toren/fails")
    assert code == 6
    job_id = failed["job_id"]
    ws = toren_home / "jobs" / job_id / "workspace"
    assert (ws / "p.txt").read_text() == "partial\n"  # kept for inspection

    code, out, _ = toren(capsys, "summary", job_id)
    assert code == 0 and "failed" in out and "exited with code 4" in out and "running" in out

    code, out, _ = toren(capsys, "cleanup", "--all", "--dry-run")
    assert code == 0 and "would remove" in out and ws.exists()
    code, out, _ = toren(capsys, "cleanup", job_id[:10])
    assert code == 0 and not ws.exists()
    assert (toren_home / "jobs" / job_id / "job.log").exists()  # logs stay without --logs
    code, out, _ = toren(capsys, "cleanup", "--all", "--logs")
    assert code == 0 and not (toren_home / "jobs" / job_id).exists()
    code, out, err = toren(capsys, "logs", job_id)
    assert code == 10 and "no job" in err


def test_cleanup_needs_a_target(workdir, capsys):
    code, _, err = toren(capsys, "cleanup")
    assert code == 2 and "--all" in err
    code, _, err = toren(capsys, "cleanup", "--older-than", "soon")
    assert code == 2 and err.startswith("toren: --older-than: ")


def test_repo_as_git_url(workdir, repo, toren_home, capsys, tmp_path):
    bare = tmp_path / "remote.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(repo), str(bare)], check=True)
    code, out, err = toren(capsys, "run", "--repo", f"file://{bare}", "--spec", "task.md", "--branch", "toren/url",
                           "--agent", "shell", "--command", "echo via-url > url.txt", "--base-image", BASE_IMAGE,
                           "--disable-daemon", "--json")
    assert code == 0, err
    assert git("show", "toren/url:url.txt", cwd=bare) == "via-url\n"
    # a second job on the same URL is refused when the branch exists there
    code, out, err = toren(capsys, "run", "--repo", f"file://{bare}", "--spec", "task.md", "--branch", "toren/url",
                           "--agent", "shell", "--command", "true", "--base-image", BASE_IMAGE, "--disable-daemon")
    assert code == 2 and err.startswith("toren: --branch: ") and "already exists" in err


def test_summary_is_written_by_a_model_when_a_key_is_set_and_cached(workdir, toren_home, capsys, docker_client,
                                                                     monkeypatch):
    from tests.fakes.anthropic import FakeAnthropic
    from tests.fakes.base import Script

    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    code, done, _ = run_shell(capsys, "sed -i s/old_name/new_name/g src/a.py", branch="toren/summarised")
    assert code == 0
    # without a key: the plain summary from the recorded facts
    code, out, _ = toren(capsys, "summary", done["job_id"])
    assert code == 0 and "Committed" in out and "summary by" not in out
    text = "The agent renamed old_name to new_name in src/a.py. Nothing was verified."
    with FakeAnthropic(Script(extra={"summary_text": text})) as fake:
        monkeypatch.setenv("ANTHROPIC_API_KEY", fake.script.api_key)
        monkeypatch.setenv("ANTHROPIC_BASE_URL", fake.url)
        code, out, err = toren(capsys, "summary", done["job_id"])
        assert code == 0, err
        assert out.startswith(text) and "summary by claude-haiku-4-5, $" in out
        (req,) = fake.requests
        prompt = json.dumps(req.json())
        assert "src/a.py" in prompt and "new_name" in prompt  # the facts and the diff were sent
        code, out, _ = toren(capsys, "summary", done["job_id"], "--json")
        assert json.loads(out)["ai_summary"]["text"] == text
        assert len(fake.requests) == 1  # cached with the job


def test_cleanup_removes_only_torens_objects(workdir, toren_home, capsys, docker_client):
    import io

    def build(label: dict) -> str:
        dockerfile = f"FROM {BASE_IMAGE}\nRUN echo {len(label)}-$RANDOM > /marker\n".encode()
        image, _ = docker_client.images.build(fileobj=io.BytesIO(dockerfile), labels=label, rm=True, nocache=True)
        return image.id  # untagged: dangling

    from toren_action.sandbox.image import record_built

    ours, theirs = build({"toren.managed": "1"}), build({"someone.else": "1"})
    record_built(ours, toren_home)  # as ensure_image records an image it built
    stranger = docker_client.containers.run(BASE_IMAGE, ["sleep", "60"], detach=True, labels={"toren.job": "x"})
    try:
        code, done, _ = run_shell(capsys, "echo x > x.txt", branch="toren/clean-me")
        assert code == 0
        code, out, _ = toren(capsys, "cleanup", "--all", "--dry-run")
        assert code == 0 and f"would remove image {ours[7:17]}" in out and theirs[7:17] not in out
        code, out, _ = toren(capsys, "cleanup", "--all")
        assert code == 0 and f"removed image {ours[7:17]}" in out
        ids = {i.id for i in docker_client.images.list(all=True)}
        assert ours not in ids and theirs in ids
        stranger.reload()
        assert stranger.status == "running"  # a container Toren did not label as managed is not touched
    finally:
        stranger.remove(force=True)
        docker_client.images.remove(theirs, force=True)


def test_cleanup_lists_and_removes_a_jobs_containers_with_their_volumes(workdir, toren_home, capsys, docker_client):
    """One removal for cleanup and the worker (container.remove_job_containers): by the job's label, with its
    anonymous volumes; --dry-run only names them."""
    code, done, _ = run_shell(capsys, "echo x > x.txt", branch="toren/left-container")
    assert code == 0
    job_id = done["job_id"]
    left = docker_client.containers.create(BASE_IMAGE, ["true"], labels={"toren.job": job_id, "toren.managed": "1"},
                                           volumes=["/data"])
    volume = next(m["Name"] for m in docker_client.api.inspect_container(left.id)["Mounts"] if m["Type"] == "volume")
    try:
        code, out, _ = toren(capsys, "cleanup", job_id, "--dry-run")
        assert code == 0 and f"would remove for {job_id}: container {left.short_id}" in out
        left.reload()  # still there
        code, out, _ = toren(capsys, "cleanup", job_id)
        assert code == 0 and f"removed for {job_id}: container {left.short_id}" in out
        assert not docker_client.containers.list(all=True, filters={"label": f"toren.job={job_id}"})
        assert volume not in {v.name for v in docker_client.volumes.list()}
    finally:
        for c in docker_client.containers.list(all=True, filters={"label": f"toren.job={job_id}"}):
            c.remove(v=True, force=True)
