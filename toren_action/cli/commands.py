"""What each `toren` subcommand does, over the store and the job (job/plan.py, job/run.py). cli.py only parses."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from argparse import Namespace
from pathlib import Path
from typing import Any

from toren_action.cli.parser import run_flags
from toren_action.cli.ui import closed_pipe, print_json, say, silence_stdout
from toren_action.core.errors import Interrupted, JobNotFound, TorenError, UsageError
from toren_action.core.paths import job_dir, log_path, remove_tree, toren_home
from toren_action.core.states import JobState
from toren_action.core.texts import terminal
from toren_action.jobs.process import is_job_process
from toren_action.jobs.store import Store


def cmd_run(args: Namespace) -> int:
    from toren_action.config.settings import Settings
    from toren_action.job.submit import run_in_foreground, submit

    settings = Settings.load(run_flags(args), config_file=args.config)
    if settings.judge or settings.attempts or settings.agents or settings.race_attempt:  # a race, or one attempt
        from toren_action.job import race

        race.check_judge(settings)  # --judge outside a race, or without a key: refused before anything starts
        if race.is_race(settings):
            from toren_action.cli.race import run_race

            return run_race(args, settings)
        if settings.race_attempt:  # one attempt of a fleet race: in the foreground, its record written at the end
            settings = race.fleet_settings(settings)
            args.disable_daemon = True
    job = submit(settings, background=not args.disable_daemon)
    for warning in job.plan.warnings:
        say(f"toren: warning: {warning}")  # a closed stderr must not stop the job that now exists
    if not args.disable_daemon:
        return _start_background(args, job.store, job.home, job.job_id)

    from toren_action.cli.ui import ConsoleReporter, outcome_json, print_outcome

    reporter = ConsoleReporter(quiet=args.quiet)
    try:
        outcome = run_in_foreground(job, reporter)
    finally:
        reporter.close()
    record = job.store.get(job.job_id)
    if settings.race_attempt:
        from pathlib import Path as _Path

        from toren_action.job import race

        path = _Path(settings.race_record or f"toren-attempt-{settings.race_attempt}.json")
        race.write_record(path, job.plan, record)
        say(f"toren: attempt {settings.race_attempt}'s result record: {path}")
    try:
        if args.json:
            print_json(outcome_json(outcome, record, log_path(job.home, job.job_id)))
        else:
            print_outcome(outcome, record)
        sys.stdout.flush()
    except OSError as exc:  # `toren run ... | head`: the job has ended all the same; its exit code stands
        if not closed_pipe(exc):
            raise
        silence_stdout()
    return outcome.exit_code


def _start_background(args: Namespace, store: Store, home: Path, job_id: str) -> int:
    """Queue the job for the worker (started when none runs); the job's log and record tell the rest."""
    from toren_action.jobs import worker

    log = log_path(home, job_id)
    log.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    log.touch()
    worker.ensure_worker(home)
    if args.json:
        from toren_action.jobs.job_json import job_json

        print_json(job_json(store.get(job_id), log))
    else:
        print(job_id)
        print(f"toren: job {job_id} started in the background; follow it with `toren logs {job_id} --follow`",
              file=sys.stderr)
    return 0


def cmd_run_job(args: Namespace) -> int:
    """The background half of `toren run` (hidden command)."""
    from toren_action.config.settings import settings_from_record
    from toren_action.job.plan import make_plan
    from toren_action.job.run import run_job
    from toren_action.jobs.process import heartbeat, stop_on_termination
    from toren_action.jobs.worker import take_job_env

    stop_on_termination(parent=os.getppid())
    home = toren_home()
    store = Store(home)
    job = store.get(args.job)
    if job.state is not JobState.QUEUED:  # cancelled after the worker picked it
        return 0
    store.update(job.id, pid=os.getpid(), heartbeat_at=time.time())
    saved = take_job_env(home, job.id)  # the submitting shell's environment and inputs, deleted as it is read
    if saved is None:  # never run with the worker's environment: it is some other submitter's
        store.set_state(job.id, JobState.FAILED, error="the job's saved environment is missing (was it cancelled?); "
                                                "submit it again")
        return 1
    env, inputs = saved
    inputs = inputs or job.inputs
    os.environ.clear()
    os.environ.update(env)
    if inputs.get("_cwd") and os.path.isdir(inputs["_cwd"]):
        os.chdir(inputs["_cwd"])
    heartbeat(home, job.id)
    settings = settings_from_record(inputs)
    try:
        plan = make_plan(settings, job.id)
    except TorenError as exc:
        store.set_state(job.id, JobState.FAILED, error=str(exc))
        return exc.exit_code
    except KeyboardInterrupt:  # cancelled (or its worker died: WorkerLost) before anything started
        store.set_state(job.id, JobState.CANCELLED, error="cancelled before it started")
        return Interrupted.exit_code
    from toren_action.job.submit import with_round

    plan = with_round(plan, store, job.id)  # a review round, as read now
    try:
        return run_job(plan, store, home, job.id).exit_code
    except TorenError as exc:  # Interrupted: the job is already marked cancelled
        return exc.exit_code
    finally:
        if job.race_id:  # an attempt of a race: its end may end the race (the last one, or --first-verified)
            from toren_action.job.race import after_attempt

            after_attempt(store, home, job.id, plan)


def cmd_race(args: Namespace) -> int:
    from toren_action.cli.race import cmd_race as race

    return race(args)


def cmd_scan(args: Namespace) -> int:
    from toren_action.config.settings import check_layer
    from toren_action.guard import scan

    check_layer({"allow_policy": list(args.allow_policy)}, "flags")  # the rules `toren run` takes, in its words

    if args.image:
        from toren_action.guard.imagescan import scan_image

        rows = scan_image(args.image)
        if args.json:
            print_json([{"check": c, "ok": ok, "detail": d} for c, ok, d in rows])
        else:
            for c, ok, d in rows:
                print(f"{'✔' if ok else '!'} {c:<17} {d}")
        return 0 if all(ok for _, ok, _ in rows) else 1
    findings = scan.scan_repo(os.getcwd(), args.staged, args.diff, tuple(args.allow_policy), tuple(args.exclude))
    return scan.report(findings, args.json)


def cmd_action(args: Namespace) -> int:
    """The composite Action's entry point (action.yml runs it)."""
    from toren_action import action

    return action.main()


def cmd_worker(args: Namespace) -> int:
    """The background worker (hidden command; `toren run` starts it)."""
    from toren_action.jobs import worker

    return worker.serve(toren_home())


def cmd_cancel(args: Namespace) -> int:
    """Stop a job: a queued one never starts; a running one is interrupted like Ctrl-C (container removed)."""
    import signal

    from toren_action.jobs import worker

    home = toren_home()
    store = Store(home)
    from toren_action.jobs import race as races

    r = races.find_race(store, args.job)
    if r is not None and r.id != args.job.strip().lower() and races.job_matches(store, args.job):
        # a race and its attempts have ids from the same moment: a short prefix may name either
        raise JobNotFound(f"{args.job!r} matches a race and a job; give more characters of the id")
    if r is not None:
        from toren_action.cli.race import cancel_race

        return cancel_race(store, home, r, args.wait)
    job = store.resolve(args.job)
    if job.state.final:
        print(f"toren: job {job.id} already ended: {job.state}", file=sys.stderr)
        return 0 if job.state is JobState.CANCELLED else 1
    if job.state is JobState.QUEUED and not job.pid:
        store.set_state(job.id, JobState.CANCELLED, error="cancelled before it started (toren cancel)")
        worker.discard_job_env(home, job.id)
        print(f"cancelled {job.id} (it had not started)")
        return 0
    store.request_cancel(job.id)  # whoever ends the job from now on ends it cancelled
    if job.pid and is_job_process(job.pid, job.id):
        try:
            os.kill(job.pid, signal.SIGTERM)  # the job's process cancels itself and removes its container
        except (ProcessLookupError, PermissionError):
            pass
    deadline = time.monotonic() + args.wait
    while time.monotonic() < deadline:
        job = store.get(job.id)
        if job.state.final:
            break
        if not job.pid or not is_job_process(job.pid, job.id):  # it died before it could handle the signal
            store.set_state(job.id, JobState.CANCELLED, error="cancelled (toren cancel)")
            break
        time.sleep(0.2)
    else:
        if job.pid and is_job_process(job.pid, job.id):  # it did not stop in time
            try:
                os.kill(job.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        store.set_state(job.id, JobState.CANCELLED, error="cancelled (toren cancel); its process did not stop in time "
                                                    "and was killed")
    worker.remove_containers([job.id])
    worker.discard_job_env(home, job.id)
    job = store.get(job.id)
    if job.state is not JobState.CANCELLED:
        print(f"job {job.id} ended {job.state} before it could be cancelled")
        return job.state.exit_code or 1
    print(f"cancelled {job.id}")
    return 0


def cmd_logs(args: Namespace) -> int:
    home = toren_home()
    store = Store(home)
    job = store.resolve(args.job)
    path = log_path(home, job.id)
    nothing_yet = job.state is JobState.QUEUED and (not path.exists() or path.stat().st_size == 0)
    if nothing_yet and not args.follow:  # waiting for the worker: nothing to show, and no error
        print(f"toren: job {job.id} is queued: nothing logged yet; `toren logs {job.id} --follow` waits for it",
              file=sys.stderr)
        return 0
    if not path.exists():
        raise TorenError(f"job {job.id} is {job.state} but has no log file ({path} is missing)")
    # the log holds the agent's output: its control characters are shown, never sent to the terminal (newline="":
    # a lone \r is kept, to be shown, not read as a line end)
    with open(path, encoding="utf-8", errors="replace", newline="") as fh:
        lines = fh.readlines()
        if args.tail is not None:
            lines = lines[-args.tail:] if args.tail > 0 else []
        sys.stdout.writelines(terminal(ln) for ln in lines)
        sys.stdout.flush()
        if not args.follow:
            return 0
        while True:
            chunk = fh.read()
            if chunk:
                sys.stdout.write(terminal(chunk))
                sys.stdout.flush()
                continue
            store.reap_lost(job.id)
            job = store.get(job.id)
            if job.state.final:
                sys.stdout.write(terminal(fh.read()))
                return job.state.exit_code or 0
            time.sleep(0.05)


def cmd_summary(args: Namespace) -> int:
    store = Store(toren_home())
    job = store.resolve(args.job)
    facts: dict[str, Any] = {
        "job_id": job.id, "state": job.state, "repo": job.repo, "branch": job.branch, "agent": job.agent,
        "model": job.model, "task": job.inputs.get("spec") or job.inputs.get("issue"),
        "duration_s": job.duration, "files_changed": job.files_changed, "commit": job.result_commit,
        "error": job.error, "cost_usd": job.cost_usd, "cost_source": job.cost_source, "turns": job.turns,
        "usage": job.usage, "verification": job.verification, "setup": job.setup,
        "tools": [e["name"] for e in store.events(job.id) if e["kind"] == "tool"],
        "stages": [(e["state"], round(e["ts"] - job.created_at, 2)) for e in store.events(job.id)
                   if e["kind"] == "state"],
    }
    ai = _ai_summary(store, job, facts, args)
    if args.json:
        from toren_action.jobs.job_json import job_json

        print_json(job_json(job, log_path(toren_home(), job.id), ai_summary=ai, tools=facts["tools"],
                            stages=facts["stages"]))
        return 0
    from toren_action.cli.ui import fmt_age, setup_text

    if ai:
        print(terminal(ai["text"]))
        cost = f", ${ai['cost_usd']:.4f}" if ai.get("cost_usd") is not None else ""
        print(f"\n(summary by {ai['model']}{cost})\n")
    print(f"Job {job.id}: {job.state}, {job.agent} agent on {job.repo}, task {facts['task']}.")
    print("Stages: " + " → ".join(f"{name} (+{t:.1f}s)" for name, t in facts["stages"]) + ".")
    if job.result_commit:
        print(terminal(f"Committed {job.result_commit[:10]} on {job.branch}, {len(job.files_changed)} file(s) "
                       "changed: " + ", ".join(job.files_changed[:20])))  # names are the agent's: no escapes
        if job.diffstat:
            print(terminal(job.diffstat))
    if job.error:
        print(terminal(f"Reason: {job.error}"))
    if setup_text(job.setup):
        print(f"Setup: {setup_text(job.setup)}.")
    if job.usage:
        u = job.usage
        from toren_action.job.usage import usage_parts

        cost = usage_parts(u, job.cost_usd, job.cost_source)[1]
        tools = ", ".join(f"{name} ×{n}" for name, n in _counts(facts["tools"]))
        print(f"The agent ({u.get('model') or 'model unknown'}) took {u['turns']} turn(s) and {u['tool_calls']} tool "
              f"call(s){' (' + tools + ')' if tools else ''}, {u['input_tokens']} tokens in "
              f"({u['cache_read_tokens']} cached) and {u['output_tokens']} out, for {cost}.")
    if job.verification:
        from toren_action.job.verify import verification_table_markdown

        print(terminal(verification_table_markdown(job.verification)))  # test ids are the repository's text
    if job.duration is not None:
        print(f"Took {fmt_age(job.duration)}{'' if job.state.final else ' so far'}.")
    else:
        print(f"Not started yet ({job.state} for {fmt_age(time.time() - job.created_at)}).")
    return 0


def _ai_summary(store: Store, job, facts: dict, args: Namespace) -> dict | None:
    """The AI summary: cached with the job once made; made only for an ended job, when a key is set."""
    from toren_action.job import summary

    if args.plain or not job.state.final:
        return None
    if job.ai_summary and not args.refresh:
        return json.loads(job.ai_summary)
    if not summary.available():
        return None
    diff_path = job_dir(toren_home(), job.id) / "change.diff"
    diff = diff_path.read_text("utf-8", errors="replace") if diff_path.is_file() else None
    from toren_action.config.settings import settings_from_record

    settings = settings_from_record(job.inputs)
    try:
        made = summary.ai_summary(facts, store.events(job.id), diff, settings.summary_model,
                                  prices=settings.price_overrides())
    except TorenError as exc:
        print(f"toren: {exc}; showing the plain summary", file=sys.stderr)
        return None
    data = made.to_dict()
    store.update(job.id, ai_summary=json.dumps(data))
    store.add_event(job.id, "summary", {"model": made.model, "cost_usd": made.cost_usd,
                                        "input_tokens": made.input_tokens, "output_tokens": made.output_tokens})
    return data


def _counts(names: list[str]) -> list[tuple[str, int]]:
    counts: dict[str, int] = {}
    for name in names:
        counts[name] = counts.get(name, 0) + 1
    return sorted(counts.items(), key=lambda kv: -kv[1])


_AGE = re.compile(r"^([0-9]+)([smhdw])$")


def _parse_age(text: str) -> float:
    m = _AGE.match(text.strip())
    if not m:
        raise UsageError("--older-than", f"{text!r} is not an age; use a number and a unit, e.g. 30m, 12h, 7d")
    return int(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[m.group(2)]


def cmd_cleanup(args: Namespace) -> int:
    if not (args.job or args.all or args.older_than):
        raise UsageError("cleanup", "say what to remove: a JOB id, --all or --older-than AGE")
    min_age = _parse_age(args.older_than) if args.older_than else None
    home = toren_home()
    store = Store(home)
    store.reap_lost()
    if args.job:
        jobs = [store.resolve(args.job)]
        if not jobs[0].state.final:
            raise UsageError("cleanup", f"job {jobs[0].id} is still {jobs[0].state}; wait for it to end")
    else:
        jobs = [j for j in store.list(limit=None) if j.state.final]
        if min_age is not None:
            now = time.time()
            jobs = [j for j in jobs if now - (j.finished_at or j.created_at) >= min_age]
    from toren_action.sandbox import container

    docker_client = None
    try:
        docker_client = container.client()
    except TorenError as exc:
        print(f"toren: {exc}; skipping containers", file=sys.stderr)
    for job in jobs:
        jdir = job_dir(home, job.id)
        what = []
        if docker_client is not None:
            removed = container.remove_job_containers(docker_client, job.id, dry_run=args.dry_run)
            what += [f"container {cid[:12]}" for cid in removed]
        if args.logs:
            if jdir.exists():
                what.append(f"{jdir}")
            if not args.dry_run:
                remove_tree(jdir)
                store.delete(job.id)
            what.append("job record")
        else:
            worker_env = jdir / "env.json"
            if worker_env.exists():
                what.append(str(worker_env))
                if not args.dry_run:
                    worker_env.unlink(missing_ok=True)
            for sub in ("workspace", "secrets", "task"):
                if (jdir / sub).exists():
                    what.append(str(jdir / sub))
                    if not args.dry_run and not remove_tree(jdir / sub):
                        print(f"toren: could not remove all of {jdir / sub}", file=sys.stderr)
        if what:
            print(f"{'would remove' if args.dry_run else 'removed'} for {job.id}: {', '.join(what)}")
    if args.logs:  # a race whose attempts' records are all gone goes too: its row, log, table and kept commits
        from toren_action.jobs import race as races

        for r in races.ended_without_attempts(store):
            print(f"{'would remove' if args.dry_run else 'removed'} race {r.id}: {home / 'races' / r.id}")
            if not args.dry_run:
                remove_tree(home / "races" / r.id)
                races.delete_race(store, r.id)
    if docker_client is not None and (args.all or args.older_than):
        from toren_action.job import setup

        for gone in setup.prune(docker_client, home, min_age, args.dry_run):
            print(f"{'would remove' if args.dry_run else 'removed'} {gone}")
        _prune_images(docker_client.sdk, args.dry_run, home)
    if not jobs:
        print("nothing to clean up")
    return 0


def _prune_images(docker_client, dry_run: bool, home) -> None:
    """Toren's agent images that no tag points to any more (superseded by a rebuild); never anyone else's: only
    images Toren recorded building, not the ones a user built FROM them (those inherit Toren's label)."""
    import docker.errors

    from toren_action.sandbox import image

    ours = image.built_ids(home)
    dangling = docker_client.images.list(filters={"dangling": True, "label": f"{image.LABEL_MANAGED}=1"})
    gone = set()
    for img in dangling:
        if not image.is_torens(img, ours):
            continue
        if dry_run:
            print(f"would remove image {img.short_id.removeprefix('sha256:')}")
            continue
        try:
            docker_client.images.remove(img.id)
            gone.add(img.id)
            print(f"removed image {img.short_id.removeprefix('sha256:')}")
        except docker.errors.ImageNotFound:
            gone.add(img.id)
        except docker.errors.APIError:  # still used by a container or an image built FROM it
            pass
    if not dry_run and ours:
        present = {i.id for i in docker_client.images.list(all=True, filters={"label": f"{image.LABEL_MANAGED}=1"})}
        gone |= ours - present
        if gone:
            image.forget_built(gone, home)


def cmd_health(args: Namespace) -> int:
    for flag, given in (("--security", args.security), ("--check-registry", args.check_registry)):
        if given and not args.docker_image:
            raise UsageError(flag, "looks at an image: give it with --docker-image IMAGE")
    checks: list[dict] = []

    def check(name: str, ok: bool, detail: str, required: bool = True) -> None:
        checks.append({"check": name, "ok": ok, "detail": detail, "required": required})

    git = shutil.which("git")
    if git:
        ver = subprocess.run(["git", "--version"], capture_output=True, text=True).stdout.strip()
        check("git", True, ver)
    else:
        check("git", False, "git is not on PATH; install git")
    home = toren_home()
    free = shutil.disk_usage(home).free
    check("disk", free > 2 << 30, f"{free / (1 << 30):.1f} GiB free under {home}")
    from toren_action.jobs import worker

    store = Store(home)
    beat = store.get_meta("worker_heartbeat") if worker.worker_running(home) else None
    check("worker", True, (f"running (pid {beat['pid']}, {beat['running']} job(s), max {worker.max_jobs()})" if beat
                           else f"idle; `toren run` starts it (max {worker.max_jobs()} jobs at once)"),
          required=False)
    docker_client = None
    try:
        from toren_action.sandbox import container

        docker_client = container.client()
        info = docker_client.info()
        check("docker", True, f"engine {info.get('ServerVersion')} ({info.get('Driver')}, "
                              f"root {info.get('DockerRootDir')})")
        try:
            root_free = shutil.disk_usage(info.get("DockerRootDir") or "/var/lib/docker").free
            check("docker disk", root_free > 5 << 30, f"{root_free / (1 << 30):.1f} GiB free under Docker's root "
                                                      "(agent images take 0.5 to 1 GB each)", required=False)
        except OSError:  # a remote engine: its disk is not ours to see
            pass
        gpu = container.has_gpu_runtime(info)
        check("gpus", gpu, "NVIDIA runtime present" if gpu else "no NVIDIA runtime: --gpus is unavailable on this "
                                                                 "engine", required=False)
    except TorenError as exc:
        check("docker", False, str(exc))
    vendor = cloud_vendor()
    check("network", vendor is None, (
        f"this looks like a {vendor} machine: Docker's default bridge network reaches its metadata endpoint "
        "(169.254.169.254) and the machine's cloud credentials; run agents with --network none or --egress"
        if vendor else "no cloud machine detected (on one, prefer --network none or --egress: the default bridge "
                       "network reaches the metadata endpoint)"), required=False)
    _check_agents(check)
    if args.docker_image:
        sdk = docker_client.sdk if docker_client is not None else None  # the image's attributes, a registry's
        _check_image(args.docker_image, sdk, args.security, check, args.check_registry)
    if args.json:
        print_json({"ok": all(c["ok"] for c in checks if c["required"]), "checks": checks})
    else:
        for c in checks:
            mark = "✔" if c["ok"] else ("✘" if c["required"] else "!")
            print(f"{mark} {c['check']:<13} {c['detail']}")
    return 0 if all(c["ok"] for c in checks if c["required"]) else 1


#: What the firmware of cloud machines says of itself (DMI), lower-cased, and the cloud it names.
_CLOUD_DMI = (("amazon ec2", "Amazon EC2"), ("amazon", "Amazon EC2"), ("google", "Google Cloud"),
              ("7783-7084-3265-9085-8269-3286-77", "Azure"), ("microsoft corporation", "Azure"),
              ("digitalocean", "DigitalOcean"), ("hetzner", "Hetzner"), ("alibaba", "Alibaba Cloud"),
              ("oraclecloud", "Oracle Cloud"), ("openstack", "OpenStack"), ("scaleway", "Scaleway"))


def cloud_vendor(dmi: str = "/sys/class/dmi/id", environ: dict[str, str] | None = None) -> str | None:
    """The cloud this machine runs on, when its firmware (or the Actions runner) says so; read locally, never by
    asking the metadata endpoint."""
    env = os.environ if environ is None else environ
    if env.get("RUNNER_ENVIRONMENT") == "github-hosted":
        return "GitHub-hosted runner"
    said = []
    for name in ("sys_vendor", "product_name", "bios_vendor", "board_vendor", "chassis_asset_tag"):
        try:
            with open(os.path.join(dmi, name), encoding="utf-8", errors="replace") as fh:
                said.append(fh.read(256).strip().lower())
        except OSError:
            continue
    for text in said:
        for needle, cloud in _CLOUD_DMI:
            if needle in text:
                return cloud
    return None


def _check_agents(check) -> None:
    """Each profile: its pinned CLI, and whether credentials for it are present (names only, never values)."""
    from toren_action.agents import KNOWN_AGENTS, get_profile
    from toren_action.sandbox.toolchain import NODE_VERSION, cache_dir

    home_dir = os.environ.get("HOME", str(Path.home()))
    for name in KNOWN_AGENTS:
        profile = get_profile(name)
        if not profile.package:
            check(f"agent {name}", True, "built in; needs no credentials", required=False)
            continue
        found = profile.credentials_present(dict(os.environ), home_dir)
        wanted = " or ".join(c.name if not c.default_file else c.default_file for c in profile.credentials)
        detail = f"{profile.package}@{profile.version}; " + (
            f"credentials: {', '.join(found)}" if found else f"no credentials: set {wanted}")
        check(f"agent {name}", bool(found), detail, required=False)
    cached = any(cache_dir().glob(f"node-{NODE_VERSION}-*/bin/node"))
    check("node", True, f"Node {NODE_VERSION} for agent images: " + (
        f"cached in {cache_dir()}" if cached else "downloaded from PyPI on the first build"), required=False)


def _check_image(ref: str, docker_client, security: bool, check, registry: bool = False) -> None:
    from toren_action.config.validate import image_ref

    image_ref(ref, "--docker-image")
    if docker_client is None:
        check("image", False, f"{ref}: no Docker engine to inspect it")
        return
    import docker.errors

    try:
        img = docker_client.images.get(ref)
    except docker.errors.ImageNotFound:
        if not registry:
            check("image", False, f"{ref} is not present locally (toren run pulls it with --pull missing; "
                                  "--check-registry asks the registry now)", required=False)
            return
        try:  # ask the registry for its manifest, without pulling the layers
            data = docker_client.images.get_registry_data(ref)
            platforms = ", ".join(sorted({f"{p.get('os')}/{p.get('architecture')}"
                                          for p in data.attrs.get("Platforms") or []})) or "unknown platforms"
            check("image", True, f"{ref} is not present locally but can be pulled ({platforms})", required=False)
        except docker.errors.APIError as exc:
            from toren_action.sandbox.container import first_line

            check("image", False, f"{ref} is not present locally and cannot be pulled ({first_line(exc)}); build "
                                  "or load it, then use --pull never", required=False)
        return
    cfg = img.attrs.get("Config") or {}
    user = cfg.get("User") or "root"
    check("image", img.attrs.get("Os") == "linux", f"{ref}: {img.attrs.get('Os')}/{img.attrs.get('Architecture')}, "
          f"{img.attrs.get('Size', 0) / 1e6:.0f} MB, runs as {user}")
    if security:
        from toren_action.guard.imagescan import scan_image

        for name, ok, detail in scan_image(ref):
            if name == "user" and not ok:
                detail += " (Toren's agent image runs as a non-root user anyway)"
            check(f"security {name}", ok, detail, required=False)
