"""The one JSON object of a job (cli/job_json.py) against its schema, in every state, without Docker; and the
function and the schema name the same keys (a new key is added to both)."""

from __future__ import annotations

import json

import jsonschema
import pytest

from toren_action.core.states import JobState
from toren_action.jobs.job_json import DEPRECATED_ALIASES, SCHEMA, job_json
from toren_action.jobs.store import Store


@pytest.fixture
def store(tmp_path):
    return Store(tmp_path / "home")


def schema() -> dict:
    return json.loads(SCHEMA.read_text("utf-8"))


def make(store: Store, state: JobState) -> dict:
    job_id = store.create_job(repo="/src/widget", branch="toren/x", agent="claude", model="claude-sonnet-4-5",
                              base_image="python:3.11", inputs={"spec": "task.md", "command": None})
    if state is not JobState.QUEUED:
        store.update(job_id, started_at=store.get(job_id).created_at + 1, pid=4242)
        store.set_state(job_id, state, **({"error": "the agent exited with code 4"} if state.exit_code else {}))
    if state is JobState.SUCCEEDED:
        store.update(job_id, result_commit="a" * 40, files_changed=["a.py", "b c.py"], turns=3,
                     cost_usd=0.0123, cost_source="cli", pr_url="https://github.example/o/n/pull/1",
                     usage={"turns": 3, "tool_calls": 2},
                     ai_summary=json.dumps({"text": "Done.", "model": "m", "cost_usd": 0.001}))
    return job_json(store.get(job_id), "/h/jobs/x/job.log")


@pytest.mark.parametrize("state", list(JobState))
def test_a_job_in_every_state_matches_the_schema(store, state):
    obj = make(store, state)
    jsonschema.Draft202012Validator(schema()).validate(obj)
    assert obj["state"] == state.value and obj["final"] is state.final and obj["exit_code"] == state.exit_code
    for old, new in DEPRECATED_ALIASES.items():
        assert obj[old] == obj[new]
    json.dumps(obj)  # plain JSON: no enum, no bytes


def test_the_success_keys_carry_the_records_values(store):
    obj = make(store, JobState.SUCCEEDED)
    assert obj["commit"] == "a" * 40 and obj["files_changed"] == ["a.py", "b c.py"]
    assert obj["ai_summary"] == {"text": "Done.", "model": "m", "cost_usd": 0.001}  # an object, not a string
    assert obj["task"] == "task.md" and obj["cost_source"] == "cli" and obj["duration_s"] is not None


def test_the_function_and_the_schema_name_the_same_keys(store):
    """Adding a key is a line in job_json and a property (required) in the schema; a command's own keys
    (run's image_built, summary's tools) are properties that are not required."""
    s = schema()
    obj = make(store, JobState.QUEUED)
    assert set(obj) == set(s["required"])
    assert set(s["required"]) <= set(s["properties"])
    assert s["additionalProperties"] is True  # consumers ignore keys a later release adds
    for key in set(s["properties"]) - set(s["required"]):
        assert s["properties"][key]["description"].startswith("`") or s["properties"][key].get("deprecated"), key


@pytest.mark.parametrize("broken", [{"state": "bogus"}, {"id": "NOT-AN-ID"}, {"files_changed": "a.py"},
                                    {"commit": 1}])
def test_the_schema_refuses_a_wrong_object(store, broken):
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(schema()).validate({**make(store, JobState.FAILED), **broken})


def test_the_actions_record_is_the_same_object_without_the_inputs(store, tmp_path, monkeypatch):
    from toren_action import action
    from toren_action.core.paths import job_dir, log_path

    monkeypatch.setenv("TOREN_ARTIFACTS", str(tmp_path / "artifacts"))
    make(store, JobState.SUCCEEDED)
    (job,) = store.list()
    out = action._artifacts(tmp_path / "home", job.id, job, job_dir, log_path)
    record = json.loads((out / f"{job.id}.json").read_text())
    assert "inputs" not in record
    assert record == {k: v for k, v in json.loads(json.dumps(job_json(job, log_path(tmp_path / "home", job.id))))
                      .items() if k not in ("inputs", "duration_s")} | {"duration_s": record["duration_s"]}
    jsonschema.Draft202012Validator(schema()).validate({**record, "inputs": {}})


def test_an_ended_jobs_record_stops_changing_its_heartbeat_with_it(store, tmp_path, monkeypatch):
    """What `run --json` printed at the end is what `status --json` shows later: no heartbeat after the end
    (the foreground run's heartbeat thread used to beat on while its process lived)."""
    from toren_action.jobs import process, worker

    job_id = store.create_job(repo="/r", branch="b", agent="shell", model=None, base_image="i", inputs={})
    store.set_state(job_id, "running")
    assert store.beat(job_id) is True
    store.set_state(job_id, "succeeded")
    before = store.get(job_id).heartbeat_at
    assert store.beat(job_id) is False and store.get(job_id).heartbeat_at == before
    monkeypatch.setattr(worker, "HEARTBEAT_S", 0.01)
    thread = process.heartbeat(tmp_path / "home", job_id)
    thread.join(30)
    assert not thread.is_alive()  # it saw the end and stopped
    assert store.get(job_id).heartbeat_at == before
