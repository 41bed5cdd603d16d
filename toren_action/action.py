"""`toren action`: the entry point of the composite GitHub Action (action.yml).

Inputs arrive as INPUT_<NAME> variables that action.yml sets explicitly (composite actions get none of their
own). Order matters: every secret input is masked (``::add-mask::``) before anything else is printed; then
the event decides whether this run is a trigger (a label, a comment starting with the trigger phrase, a
manual dispatch; on a pull request a comment, a review or a review comment starting with it: a review round);
the actor's permission is checked; the job runs synchronously with one ``::group::`` per
stage; outputs go to GITHUB_OUTPUT, a markdown summary to GITHUB_STEP_SUMMARY, and the redacted log, record
and pull-request body to an artifact directory under RUNNER_TEMP (never under GITHUB_WORKSPACE).
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toren_action.config.settings import SETTINGS, parse_bool
from toren_action.core.errors import TorenError, UsageError
from toren_action.core.paths import write_private
from toren_action.core.states import JobState
from toren_action.core.texts import code, inline, terminal

SECRET_INPUTS = {  # input -> the variable the agent profile or GitHub code reads
    "anthropic_api_key": "ANTHROPIC_API_KEY",
    "gemini_api_key": "GEMINI_API_KEY",
    "openai_api_key": "OPENAI_API_KEY",
    "claude_code_oauth_token": "CLAUDE_CODE_OAUTH_TOKEN",
    "github_token": "GITHUB_TOKEN",
}


def _core():
    from actions_toolkit import core

    return core


def get(name: str) -> str:
    return os.environ.get(f"INPUT_{name.upper()}", "").strip()


def get_lines(name: str) -> list[str]:
    return [ln.strip() for ln in os.environ.get(f"INPUT_{name.upper()}", "").splitlines()
            if ln.strip() and not ln.strip().startswith("#")]


def get_bool(name: str, default: bool = False) -> bool:
    raw = get(name).lower()
    if not raw:
        return default
    value = parse_bool(raw)
    if value is None:
        raise UsageError(f"input {name.replace('_', '-')}", f"{raw!r} is not a boolean; use true or false")
    return value


def setting_inputs() -> dict[str, Any]:
    """The settings that the Action's inputs give one to one (their ``action_input`` in settings.Settings), each
    read by its kind; None where an input is empty."""
    flags: dict[str, Any] = {}
    for key, spec in SETTINGS.items():
        name = (spec.action_input or "").replace("-", "_")
        if not name:
            continue
        if spec.kind == "bool":
            flags[key] = get_bool(name) or None
        elif spec.kind == "list":
            flags[key] = get_lines(name) or None
        elif spec.kind == "map":
            from toren_action.config.validate import env_pair

            flags[key] = dict(env_pair(line, f"input {spec.action_input}") for line in get_lines(name)) or None
        elif spec.kind in ("int", "float"):
            raw = get(name)
            try:
                flags[key] = (int if spec.kind == "int" else float)(raw) if raw else None
            except ValueError:
                raise UsageError(f"input {spec.action_input}", f"{raw!r} is not a number") from None
        else:
            flags[key] = get(name) or None
    return flags


def mask_secrets() -> None:
    """Mask every secret input, each line of a multi-line one too, before anything else is printed."""
    core = _core()
    for name in [*SECRET_INPUTS, "claude_credentials"]:
        value = os.environ.get(f"INPUT_{name.upper()}", "")
        if value.strip():
            core.set_secret(value.strip())
            for line in value.splitlines():
                if len(line.strip()) >= 8:
                    core.set_secret(line.strip())


@dataclass(frozen=True)
class Trigger:
    kind: str  # "dispatch" | "label" | "comment" | "pr_comment" | "pr_review" | "pr_review_comment"
    actor: str
    issue: int | None = None
    instruction: str = ""  # a comment's text after the trigger phrase
    pr: int | None = None  # the pull request a review round works on


#: The pull request events that can start a review round, each with the one action that does.
PR_EVENTS = {"pull_request_review": "submitted", "pull_request_review_comment": "created"}


def _from_person(user: dict[str, Any], body: str) -> str | None:
    """Why a text by ``user`` is never a trigger (a bot, or Toren's own), or None."""
    if user.get("type") == "Bot" or str(user.get("login", "")).endswith("[bot]") or "<!-- toren:" in body:
        return "the comment is from a bot or is Toren's own; it never triggers a run"
    return None


def _after_phrase(body: str, phrase: str) -> str | None:
    """The text after the trigger phrase when the body starts with it (as a word of its own), else None."""
    text = body.lstrip()
    if not text.startswith(phrase) or text[len(phrase):len(phrase) + 1] not in ("", " ", "\t", "\n", "\r"):
        return None
    return text[len(phrase):].strip()


def _pr_trigger(event_name: str, event: dict[str, Any], phrase: str) -> Trigger | str:
    """A review (its body) or a review comment (an inline comment) that starts with the trigger phrase."""
    if event.get("action") != PR_EVENTS[event_name]:
        return (f"{event_name} event '{event.get('action')}' is not a trigger (only '{PR_EVENTS[event_name]}' "
                "is: an edited comment never starts a run)")
    item = event.get("review" if event_name == "pull_request_review" else "comment") or {}
    user, body = item.get("user") or {}, item.get("body") or ""
    why = _from_person(user, body)
    if why:
        return why
    pull = event.get("pull_request") or {}
    head = ((pull.get("head") or {}).get("repo") or {}).get("full_name")
    base = ((pull.get("base") or {}).get("repo") or {}).get("full_name")
    if not head or head != base:
        return "the pull request comes from a fork; Toren never pushes to a fork nor runs its code with secrets"
    instruction = _after_phrase(body, phrase)
    if instruction is None:
        return f"the {'review' if event_name == 'pull_request_review' else 'review comment'} does not start " \
               f"with {phrase!r}"
    return Trigger("pr_review" if event_name == "pull_request_review" else "pr_review_comment",
                   user.get("login", ""), None, instruction, pull.get("number"))


def read_trigger(event_name: str, event: dict[str, Any], phrase: str, label: str) -> Trigger | str:
    """The trigger in this event, or the reason it is none (a string)."""
    sender = (event.get("sender") or {}).get("login", "")
    if event_name == "workflow_dispatch":
        return Trigger("dispatch", sender)
    issue = event.get("issue") or {}
    if event_name == "issues":
        if event.get("action") != "labeled":
            return f"issues event '{event.get('action')}' is not a trigger (only 'labeled' is)"
        name = (event.get("label") or {}).get("name", "")
        if name != label:
            return f"label {name!r} is not the trigger label {label!r}"
        return Trigger("label", sender, issue.get("number"))
    if event_name == "issue_comment":
        if event.get("action") != "created":
            return f"comment event '{event.get('action')}' is not a trigger (only 'created' is)"
        comment = event.get("comment") or {}
        user = comment.get("user") or {}
        body = comment.get("body") or ""
        why = _from_person(user, body)
        if why:
            return why
        if issue.get("pull_request"):  # a comment on a pull request's conversation: a review round
            instruction = _after_phrase(body, phrase)
            if instruction is None:
                return f"the comment does not start with {phrase!r}"
            return Trigger("pr_comment", user.get("login", sender), None, instruction, issue.get("number"))
        instruction = _after_phrase(body, phrase)
        if instruction is None:
            return f"the comment does not start with {phrase!r}"
        return Trigger("comment", user.get("login", sender), issue.get("number"), instruction)
    if event_name in PR_EVENTS:
        return _pr_trigger(event_name, event, phrase)
    return (f"event {event_name!r} is not a trigger (use issues, issue_comment, pull_request_review, "
            "pull_request_review_comment or workflow_dispatch)")


class ActionsReporter:
    """One folded group per stage; the agent's lines inside it, where the runner cannot read them as workflow
    commands: they are printed between ``::stop-commands::TOKEN`` and ``::TOKEN::`` (a random token the agent
    never sees), and a line that would still look like a command is shown with a mark (``workflow_safe``)."""

    def __init__(self) -> None:
        import threading

        self._open = False
        self._token: str | None = None  # set while workflow commands are stopped
        self._lock = threading.Lock()  # the agent's lines and the stages may come from two threads
        self.started = time.monotonic()

    def _resume(self) -> None:
        if self._token is not None:
            print(f"::{self._token}::", flush=True)
            self._token = None

    def stage(self, state: str, detail: str) -> None:
        from toren_action.core.texts import one_line

        core = _core()
        with self._lock:
            self._resume()
            if self._open:
                core.end_group()
            core.start_group(one_line(f"{state}: {detail}")[:200])
            self._open = True

    def line(self, text: str) -> None:
        import secrets

        from toren_action.core.texts import workflow_safe

        with self._lock:
            if self._token is None:
                self._token = f"toren-{secrets.token_hex(16)}"
                print(f"::stop-commands::{self._token}", flush=True)
            for part in str(text).split("\n"):
                print(workflow_safe(part), flush=True)

    def close(self) -> None:
        with self._lock:
            self._resume()
            if self._open:
                _core().end_group()
                self._open = False


def run() -> int:
    mask_secrets()  # first: nothing secret may be printed before its mask
    core = _core()
    event_name = os.environ.get("GITHUB_EVENT_NAME", "")
    try:
        event = json.loads(Path(os.environ["GITHUB_EVENT_PATH"]).read_text("utf-8"))
    except (KeyError, OSError, ValueError):
        event = {}
    phrase, label = get("trigger_phrase") or "/toren", get("label_trigger") or "toren"
    trigger = read_trigger(event_name, event, phrase, label)
    if isinstance(trigger, str):
        core.notice(terminal(f"Toren: nothing to do: {trigger}."))
        core.set_output("status", "skipped")
        return 0
    for name, var in SECRET_INPUTS.items():  # credentials reach Toren as the variables it reads, on the host
        if get(name):
            os.environ[var] = get(name)
    try:
        return _run(trigger, event)
    except TorenError as exc:
        from toren_action.core.errors import ActorNotAllowed

        if isinstance(exc, ActorNotAllowed) and (trigger.issue or trigger.pr) and get_bool("comment_on_refusal",
                                                                                              True):
            _comment_refusal(trigger, str(exc))
        said = in_workflow_words(exc)
        core.error(terminal(f"Toren: {said}"))
        core.set_output("status", "refused" if exc.refusal else "failed")
        _summary([f"## Toren: {'refused' if exc.refusal else 'failed'}", "", inline(said)])
        return exc.exit_code


def _run(trigger: Trigger, event: dict[str, Any]) -> int:
    from toren_action.config.settings import Settings
    from toren_action.core.paths import job_dir, log_path
    from toren_action.job.submit import run_in_foreground, submit

    core = _core()
    if os.environ.get("INPUT_CLAUDE_CREDENTIALS", "").strip():
        creds = _runner_temp() / "toren-claude-credentials.json"
        write_private(creds, os.environ["INPUT_CLAUDE_CREDENTIALS"].strip())
        os.environ["CLAUDE_CREDENTIALS_FILE"] = str(creds)
    repo = os.environ.get("GITHUB_REPOSITORY", "")
    allowed = get_lines("allowed_users")
    if trigger.kind != "dispatch" or allowed:  # who asked comes first: before any other check or build
        from toren_action.core.errors import MissingCredentials
        from toren_action.git.github import Endpoints, GitHub, read_token

        token = read_token(dict(os.environ), None)
        if token is None:
            raise MissingCredentials("input github-token: the token is empty; pass ${{ github.token }}")
        GitHub(Endpoints.from_environ(dict(os.environ)), token).check_actor(
            repo, trigger.actor, tuple(u.lstrip("@") for u in allowed))
    flags = setting_inputs()
    flags["on_failure"] = flags.get("on_failure") or "draft"  # the Action's default: a failed job's work is a draft
    flags.update(repo=repo, actor=trigger.actor, allow_actors=[u.lstrip("@") for u in allowed] or None)
    run_id = os.environ.get("GITHUB_RUN_ID", str(int(time.time())))
    spec_text, spec_file = get("spec"), get("spec_file")
    if trigger.pr:  # a review round on the pull request: its head branch, its threads, the new instruction
        flags["pr"] = f"{repo}#{trigger.pr}"
        if trigger.instruction:
            flags["instruction"] = trigger.instruction
    elif spec_text or spec_file:
        if spec_text:
            path = _runner_temp() / f"toren-task-{run_id}.md"
            path.write_text(spec_text + "\n", "utf-8")
            spec_file = str(path)
        flags["spec"] = spec_file
    elif trigger.issue:
        flags["issue"] = f"{repo}#{trigger.issue}"
        if trigger.instruction and flags.get("agent") == "shell":  # it runs its command and reads no prompt
            core.notice("Toren: the shell agent runs input command; the comment's words after /toren are not given "
                        "to it")
        elif trigger.instruction:
            flags["append_system_prompt"] = ("The person who started this run added, as data: "
                                             + json.dumps(trigger.instruction[:2000]))
    else:
        raise UsageError("input spec", "a manual run needs the task: give the spec input (text) or spec-file")
    if trigger.pr:
        flags.pop("branch", None)  # the pull request's head branch
    else:
        flags["branch"] = flags.get("branch") or (f"toren/issue-{trigger.issue}" if trigger.issue
                                                  else f"toren/run-{run_id}")
    if trigger.kind == "dispatch" and not allowed:
        flags.pop("actor")  # whoever may dispatch a workflow already has write access
    flags = {k: v for k, v in flags.items() if v is not None}
    settings = Settings.load(flags)
    from toren_action.job import race

    if race.is_race(settings):  # the attempts and agents inputs: a race, one pull request from the best
        return _run_race(settings)

    submitted = submit(settings, background=False)  # as `toren run --disable-daemon` does
    home, job_id = submitted.home, submitted.job_id
    for warning in submitted.plan.warnings:  # a local checkout's uncommitted work or detached HEAD
        print(f"toren: warning: {warning}", file=sys.stderr)
    core.set_output("job-id", job_id)
    reporter = ActionsReporter()
    try:
        outcome = run_in_foreground(submitted, reporter)
    finally:
        reporter.close()
    job = submitted.store.get(job_id)
    artifacts = _artifacts(home, job_id, job, job_dir, log_path)
    pr_number = re.search(r"/pull/(\d+)", outcome.pr_url or "")
    outputs = {"status": outcome.state, "branch": outcome.branch or "", "pr-url": outcome.pr_url or "",
               "pr-number": pr_number.group(1) if pr_number else "",
               "cost-usd": f"{outcome.cost_usd:.4f}" if outcome.cost_usd is not None else "",
               "turns": str((outcome.usage or {}).get("turns", "")), "log-path": str(artifacts),
               "summary": (job_dir(home, job_id) / "pr.md").read_text("utf-8")
               if (job_dir(home, job_id) / "pr.md").is_file() else outcome.message,
               **verification_outputs(job.verification)}
    for key, value in outputs.items():  # under a random delimiter (GITHUB_OUTPUT); no control character
        core.set_output(key, terminal(value))
    lines = _summary_lines(outcome, job)
    _summary(lines)
    (artifacts / f"{job_id}-summary.md").write_text("\n".join(lines) + "\n", "utf-8")
    if outcome.exit_code != 0:
        core.error(terminal(f"Toren: {outcome.state}: {outcome.message}"))
    return outcome.exit_code


def _run_race(settings) -> int:
    """A race in the Action: its attempts run on this runner (TOREN_MAX_JOBS at a time), each row is printed as
    it ends; the outputs are the winner's (job-id is the race's id), the step summary holds the table."""
    import shutil

    from toren_action.core.errors import NoWinner
    from toren_action.core.paths import log_path
    from toren_action.core.states import RaceState
    from toren_action.job import choose, race
    from toren_action.jobs import race as races

    core = _core()
    sub = race.submit_race(settings, say=lambda line: print(terminal(f"toren: {line}"), flush=True))
    core.set_output("job-id", sub.race_id)
    r = race.wait_for_race(sub, lambda a: print(terminal("toren: attempt " + " | ".join(choose.cells(a))),
                                                flush=True))
    attempts = race.race_attempts(sub.store, r)
    out = Path(os.environ.get("TOREN_ARTIFACTS") or Path(os.environ.get("RUNNER_TEMP") or sub.home)
               / "toren-artifacts")
    out.mkdir(parents=True, exist_ok=True)
    for a in attempts:  # each attempt's redacted log, for the table's links
        if a.job_id and log_path(sub.home, a.job_id).is_file():
            shutil.copyfile(log_path(sub.home, a.job_id), out / f"attempt-{a.number}-{a.job_id}.log")
    choice = choose.Choice(r.winner, (), (r.choice or {}).get("why", ""))
    table = choose.markdown_table(attempts, choice)
    (out / f"race-{r.id}.md").write_text(table + "\n", "utf-8")
    winner = next((a for a in attempts if a.number == r.winner), None)
    pr_number = re.search(r"/pull/(\d+)", r.pr_url or "")
    spent = races.spent(sub.store, r.id)
    outputs = {"status": str(r.state), "branch": winner.branch if winner else "", "pr-url": r.pr_url or "",
               "pr-number": pr_number.group(1) if pr_number else "", "cost-usd": f"{spent:.4f}" if spent else "",
               "turns": str(winner.turns or "") if winner else "", "log-path": str(out), "summary": table}
    for key, value in outputs.items():
        core.set_output(key, terminal(value))
    _summary([f"## Toren race {inline(str(r.state).replace('_', ' '))}", "", table])
    if r.state is RaceState.CHOSEN:
        return 0
    core.error(terminal(f"Toren: race {r.state}: {r.error or ''}"))
    return NoWinner.exit_code if r.state is RaceState.NO_WINNER else r.state.exit_code or 1


def _comment_refusal(trigger: Trigger, reason: str) -> None:
    """Tell the person on the issue why nothing happens (best effort: a failure here changes nothing)."""
    from toren_action.git.github import MARKER, Endpoints, GitHub, read_token

    token = read_token(dict(os.environ), None)
    if token is None:
        return
    try:
        gh = GitHub(Endpoints.from_environ(dict(os.environ)), token)
        issue = gh.repo(os.environ.get("GITHUB_REPOSITORY", "")).get_issue(trigger.issue or trigger.pr)
        # no @mention of the person refused (a refusal must not become a way to notify anyone), and the
        # reason, which names them, as inert text
        issue.create_comment(f"{MARKER}refused -->\nToren did not start: {inline(reason.removeprefix('--actor: '))}.")
    except Exception:  # noqa: BLE001,S110 - the refusal itself is already reported
        pass


def _runner_temp() -> Path:
    """The runner's temporary directory (emptied after each job), never GITHUB_WORKSPACE."""
    if os.environ.get("RUNNER_TEMP"):
        return Path(os.environ["RUNNER_TEMP"])
    from toren_action.core.paths import toren_home

    path = toren_home() / "tmp"
    path.mkdir(mode=0o700, exist_ok=True)
    return path


def _artifacts(home: Path, job_id: str, job, job_dir, log_path) -> Path:
    """The redacted log, the job record and the PR body, for actions/upload-artifact (under RUNNER_TEMP)."""
    import shutil

    out = Path(os.environ.get("TOREN_ARTIFACTS") or Path(os.environ.get("RUNNER_TEMP") or home) / "toren-artifacts")
    out.mkdir(parents=True, exist_ok=True)
    if log_path(home, job_id).is_file():
        shutil.copyfile(log_path(home, job_id), out / f"{job_id}.log")
    from toren_action.jobs.job_json import job_json

    record = {k: v for k, v in job_json(job, log_path(home, job_id)).items() if k != "inputs"}  # uploaded
    (out / f"{job_id}.json").write_text(json.dumps(record, indent=2, default=str), "utf-8")
    if (job_dir(home, job_id) / "pr.md").is_file():
        shutil.copyfile(job_dir(home, job_id) / "pr.md", out / f"{job_id}-pr.md")
    return out


def _summary_lines(outcome, job) -> list[str]:
    """The step summary (Markdown): every value from the job is a code span or inline text, so a file name,
    a branch or a message cannot add a heading, a link, HTML, a mention or a closing reference."""
    mark = JobState(outcome.state).github_mark
    lines = [f"## Toren {mark} {inline(outcome.state.replace('_', ' '))}", "", "| | |", "|---|---|"]
    if outcome.pr_url:
        url = outcome.pr_url if re.fullmatch(r"https?://[^\s<>|`]+", outcome.pr_url) else code(outcome.pr_url, True)
        lines.append(f"| Pull request | {url} |")
    lines.append(f"| Branch | {code(outcome.branch or '', True)} |")
    if outcome.files:
        names = ", ".join(code(f, True) for f in outcome.files[:15])
        lines.append(f"| Files changed | {len(outcome.files)}: {names} |")
    verify = job.inputs.get("verify")
    verification = getattr(job, "verification", None)
    if verification:
        from toren_action.job.verify import verification_line

        shown = inline(verification_line(verification))
    else:
        shown = f"{code(verify, True)} passed" if verify and outcome.commit else code(verify, True) if verify \
            else "none"
    lines.append(f"| Verification | {shown} |")
    from toren_action.job.usage import usage_parts

    usage, cost = usage_parts(outcome.usage, outcome.cost_usd, tokens=False)  # numbers and fixed words only
    if outcome.usage:
        lines.append(f"| Usage | {usage} |")
    if outcome.cost_usd is not None:
        lines.append(f"| Cost | {cost} |")
    lines.append(f"| Duration | {outcome.duration_s:.0f} s |")
    if outcome.message and outcome.state != "succeeded":
        lines += ["", f"**Reason:** {inline(outcome.message)}"]
    if verification:
        from toren_action.job.verify import verification_table_markdown

        lines += ["", verification_table_markdown(verification)]
    return lines


def verification_outputs(verification: dict[str, Any] | None) -> dict[str, str]:
    """The outputs verify-outcome, tests-fixed and tests-broken (empty without --verify; the counts need
    --verify-baseline)."""
    if not verification:
        return {"verify-outcome": "", "tests-fixed": "", "tests-broken": ""}
    counts = verification.get("counts") or {}
    based = verification.get("baseline") is not None
    return {"verify-outcome": str(verification.get("outcome", "")),
            "tests-fixed": str(int(counts.get("fixed") or 0)) if based else "",
            "tests-broken": str(int(counts.get("broken") or 0)) if based else ""}


def _summary(lines: list[str]) -> None:
    path = os.environ.get("GITHUB_STEP_SUMMARY")
    if path:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write("\n".join(lines) + "\n")


def in_workflow_words(exc: TorenError) -> str:
    """A usage error as a workflow author reads it: the flags of settings that have an input named as inputs
    (``--command: ...`` is ``input command: ...``; ``--command 'make fmt'`` is ``command: make fmt``)."""
    if not isinstance(exc, UsageError):
        return str(exc)
    inputs = {flag: spec.action_input for spec in SETTINGS.values() if spec.action_input for flag in spec.flags}

    def word(m: re.Match[str]) -> str:
        name = inputs.get(m.group(1))
        if name is None:
            return m.group(0)
        return f"`{name}: {m.group(2)[1:-1]}`" if m.group(2) else f"input {name}"

    return re.sub(r"(?<![\w-])(--[a-z][a-z-]*)(?: ('[^'\n]*'))?", word, str(exc))


def main() -> int:
    try:
        return run()
    except TorenError as exc:
        _core().error(f"Toren: {in_workflow_words(exc)}")
        return exc.exit_code
    finally:
        sys.stdout.flush()
