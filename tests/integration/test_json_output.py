"""One vocabulary for a job in every command's --json: `run` (foreground and background), `status` and
`summary` print the object of toren_action/cli/job_json.py, checked here against its JSON schema on real jobs."""

from __future__ import annotations

import json

import jsonschema
import pytest

from tests.integration.test_run_local import run_shell, toren
from toren_action.jobs.job_json import DEPRECATED_ALIASES, SCHEMA

pytestmark = pytest.mark.docker


def validate(obj: dict) -> dict:
    schema = json.loads(SCHEMA.read_text("utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.Draft202012Validator(schema).validate(obj)
    for old, new in DEPRECATED_ALIASES.items():
        assert obj[old] == obj[new], old
    return obj


def test_every_commands_json_is_one_job_object(workdir, toren_home, capsys):
    code, ok, _ = run_shell(capsys, "sed -i s/old_name/new_name/g src/*.py", branch="toren/json-ok")
    assert code == 0 and validate(ok)["state"] == "succeeded"
    assert ok["commit"] and ok["exit_code"] == 0 and ok["image_built"] in (True, False) and ok["final"] is True
    code, bad, _ = run_shell(capsys, "exit 4", branch="toren/json-bad")
    assert code == 6 and validate(bad)["state"] == "failed" and bad["commit"] is None
    assert "exited with code 4" in bad["error"] and bad["agent_exit_code"] == 4
    code, out, _ = toren(capsys, "run", "--repo", "./myproject", "--spec", "task.md", "--agent", "shell",
                         "--command", "true", "--base-image", "toren/none:1", "--pull", "never", "--json")
    queued = json.loads(out)
    try:
        assert code == 0 and validate(queued)["state"] == "queued" and queued["final"] is False
        assert queued["exit_code"] is None and queued["log"].endswith(f"{queued['id']}/job.log")
    finally:
        toren(capsys, "cancel", queued["id"], "--wait", "5")

    code, out, _ = toren(capsys, "status", "--json")
    listed = {j["id"]: validate(j) for j in json.loads(out)}
    assert code == 0 and set(listed) == {ok["id"], bad["id"], queued["id"]}
    for shown in (ok, bad):  # the same keys and values as `run` printed, but what only `run` knows
        same = {k: v for k, v in listed[shown["id"]].items() if k not in ("duration_s", "updated_at")}
        differ = {k for k, v in same.items() if {**shown, "exit_code": same["exit_code"]}.get(k, object()) != v}
        assert not differ, {k: (same[k], shown.get(k)) for k in differ}
    assert set(listed[ok["id"]]) == set(ok) - {"image_built", "pushed_to", "message"}

    for job in (ok, bad, queued):
        code, out, _ = toren(capsys, "summary", job["id"], "--json", "--plain")
        summary = validate(json.loads(out))
        assert code == 0 and summary["id"] == job["id"] and summary["commit"] == listed[job["id"]]["commit"]
        assert [s for s, _ in summary["stages"]][:1] == ["queued"]
    assert "running" in [s for s, _ in summary_of(capsys, ok["id"])["stages"]]


def summary_of(capsys, job_id: str) -> dict:
    return json.loads(toren(capsys, "summary", job_id, "--json", "--plain")[1])
