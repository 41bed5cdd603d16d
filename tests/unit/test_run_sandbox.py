"""The agent's sandbox (job/run.py's agent_sandbox) releases everything it started however the run ends: a step
that raises between the key proxy's start and the container's run leaves no proxy serving and no socket
directory behind; the secrets are gone as soon as the container is. No Docker: the container's run is faked."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.unit.test_plan import KEY, clean_environ, make_repo, plan
from toren_action.job import run
from toren_action.job.log import JobLog, NullReporter
from toren_action.job.report import Outcome
from toren_action.sandbox import container, egress, keyproxy


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path)


@pytest.fixture
def environ(tmp_path: Path) -> dict[str, str]:
    return clean_environ(tmp_path)


class _Store:
    def __init__(self) -> None:
        self.events: list = []

    def update(self, job_id, **fields) -> None:
        pass

    def set_state(self, job_id, state, error=None) -> None:
        pass

    def add_event(self, job_id, kind, data) -> None:
        self.events.append((kind, data))

    def add_events(self, job_id, items) -> None:
        self.events.extend(items)


def _job(p, tmp_path: Path) -> run.JobRun:
    jdir = tmp_path / "job"
    (jdir / "task").mkdir(parents=True)
    log = JobLog(jdir / "job.log", p.redactor, NullReporter(), time.monotonic())
    return run.JobRun(p, _Store(), tmp_path, "job1", jdir, log, Outcome("job1", "failed", 1, branch=p.branch))


@pytest.fixture
def proxies(monkeypatch):
    """Every key and egress proxy started during the test."""
    started: list = []
    for cls in (keyproxy.KeyProxy, egress.EgressProxy):
        def start(self, _real=cls.start):
            started.append(self)
            return _real(self)

        monkeypatch.setattr(cls, "start", start)
    return started


def _released(proxy) -> bool:
    return not proxy._thread.is_alive() and not proxy.socket_path.parent.exists()


@pytest.mark.parametrize("step", ["task files", "egress proxy", "relay"])
def test_a_step_between_the_key_proxy_and_the_container_that_raises_stops_the_proxy(repo, environ, tmp_path,
                                                                                    monkeypatch, proxies, step):
    p = plan(repo, {**environ, **KEY}, agent="claude", egress="allow=pypi.org")
    assert p.proxy_key is not None and p.egress_hosts
    job = _job(p, tmp_path)

    def boom(*args, **kwargs):
        raise OSError(f"{step} failed")

    target = {"task files": (run, "_write_task_files"), "egress proxy": (egress.EgressProxy, "start"),
              "relay": (run, "_with_relays")}[step]
    monkeypatch.setattr(*target, boom)
    prepared = run.Prepared(ws=None, mounts=())  # type: ignore[arg-type]
    with pytest.raises(OSError, match=step), run.agent_sandbox(job, prepared, run.AgentImage("img", False, None)):
        pytest.fail("the sandbox was entered")
    assert proxies, "no proxy was started"
    assert all(_released(x) for x in proxies), [x.socket_path for x in proxies]
    assert not (job.dir / "secrets").exists()


def test_the_secrets_go_first_when_the_container_fails_and_the_proxies_follow(repo, environ, tmp_path,
                                                                             monkeypatch, proxies):
    p = plan(repo, {**environ, **KEY, "EXTRA_SECRET": "s3cret-value"}, agent="claude", egress="allow=pypi.org",
             secrets=["EXTRA_SECRET"])
    job = _job(p, tmp_path)
    seen = {}

    def container_run(docker, spec, on_line, on_start=None):
        seen["secrets"] = sorted(x.name for x in (job.dir / "secrets").iterdir())
        seen["serving"] = [x._thread.is_alive() for x in proxies]
        raise RuntimeError("the engine went away")

    monkeypatch.setattr(container, "run", container_run)
    prepared = run.Prepared(ws=None, mounts=())  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="engine"):
        with run.agent_sandbox(job, prepared, run.AgentImage("img", False, None)) as sandbox:
            assert sandbox.spec.environment["TOREN_SECRETS_DIR"] == run.CONTAINER_SECRETS
            sandbox.run(lambda line: False, on_start=lambda cid: None)
    assert seen == {"secrets": ["EXTRA_SECRET"], "serving": [True, True]}
    assert not (job.dir / "secrets").exists()
    assert len(proxies) == 2 and all(_released(x) for x in proxies)


def test_a_policy_block_comes_before_the_code_scan_reads_anything(monkeypatch):
    """The scan parses whole files on the host: a file the policy refuses (over --max-file-mb) must never reach
    it, so the policy decides first and a block ends the checks there."""
    from types import SimpleNamespace

    from toren_action.core.errors import PolicyBlocked
    from toren_action.job import run

    scanned: list[str] = []

    def blocked(job, ws, change):
        raise PolicyBlocked("huge.py is over --max-file-mb")

    def scan(job, ws, change):
        scanned.extend(change.files)
        return [], "bandit"

    monkeypatch.setattr(run, "enforce_policy", blocked)
    monkeypatch.setattr(run, "scan_commit", scan)
    with pytest.raises(PolicyBlocked):
        run.check_change(SimpleNamespace(), SimpleNamespace(), SimpleNamespace(files=["huge.py"], commit="c"))
    assert scanned == []
    monkeypatch.setattr(run, "enforce_policy", lambda job, ws, change: None)  # the variant: a change it allows
    job = SimpleNamespace(plan=SimpleNamespace(settings=SimpleNamespace(fail_on="high"), redactor=str),
                          log=SimpleNamespace(line=lambda text: None))
    assert run.check_change(job, SimpleNamespace(), SimpleNamespace(files=["ok.py"], commit="c")) == []
    assert scanned == ["ok.py"]
