"""The `toren` command line's parser: every command and flag (the setting flags of `toren run` derived from
the settings' declaration), one-line errors, no abbreviations."""

from __future__ import annotations

import argparse
import difflib
import re
from typing import Any

from toren_action import __version__
from toren_action.config.settings import GROUPS, SETTINGS
from toren_action.core.errors import UsageError
from toren_action.core.states import JobState

#: Where the full reference is (in Toren's source and its installed docs).
DOCS = "docs/cli.md"


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """The description and epilogue as written (examples keep their lines); a flag's default shown after its help
    unless the help already says it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (text and "default" not in text and default not in (None, False, [], argparse.SUPPRESS)
                and action.option_strings):
            text += f" (default: {default:g})" if isinstance(default, float) else f" (default: {default})"
        return text


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad flag is one line and exit code 2, like every other usage error; and no abbreviated
    flags (``--pr`` would otherwise be taken for ``--protected-path``): a mistyped flag names the closest one, a
    mistyped command or choice the closest one."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["allow_abbrev"] = False
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # type: ignore[override]
        m = re.match(r"unrecognized arguments: (--[\w-]+)", message)
        if m:
            flags = [opt for action in self._all_actions() for opt in action.option_strings if opt.startswith("--")]
            close = difflib.get_close_matches(m.group(1).split("=")[0], flags, n=1, cutoff=0.6)
            if close:
                message += f"; did you mean {close[0]}?"
        m = re.match(r"argument ([^:]+): invalid choice: '([^']*)'", message)
        if m:
            message = self._bad_choice(m.group(1), m.group(2)) or message
        self.exit(UsageError.exit_code, f"toren: {message} (see `{self.prog} --help`)\n")

    def _bad_choice(self, name: str, value: str) -> str | None:
        """``toren stat``: 'stat' is not a toren command; did you mean status?"""
        for action in self._actions:
            if action.choices is None or argparse._get_action_name(action) != name:
                continue
            choices = [str(c) for c in action.choices]
            close = difflib.get_close_matches(value, choices, n=1, cutoff=0.5)
            hint = f"did you mean {close[0]}?" if close else "choose from " + ", ".join(choices)
            if isinstance(action, argparse._SubParsersAction):
                return f"{value!r} is not a {self.prog} command; {hint}"
            return f"{name}: {value!r} is not one of its values; {hint}"
        return None

    def _all_actions(self) -> list[argparse.Action]:
        actions = list(self._actions)
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction):
                for parser in action.choices.values():
                    actions += parser._actions
        return actions


def _text(*paragraphs: str) -> str:
    """A description: paragraphs filled to 79 columns (the formatter keeps text as written, for examples)."""
    import textwrap

    return "\n\n".join(textwrap.fill(para, 79) for para in paragraphs)


def _examples(*lines: str) -> str:
    return "examples:\n" + "\n".join(f"  {line}" for line in lines)


def exit_codes() -> str:
    """`toren run --help`'s table of exit codes: from the errors (core/errors.py) and the end states
    (core/states.py), never a copied list."""
    import textwrap

    from toren_action.core.errors import TorenError, _subclasses
    from toren_action.core.states import JobState

    rows: dict[int, list[str]] = {0: [" or ".join(st for st in JobState if st.exit_code == 0)
                                      + " (a background run: once queued)"]}
    errors: list[type[TorenError]] = [TorenError, *_subclasses(TorenError)]
    for cls in errors:
        doc = (cls.__doc__ or cls.__name__).strip().removeprefix("Base class: ").replace("``", "")
        doc = re.split(r"\.\s", " ".join(doc.split()), maxsplit=1)[0].rstrip(".")
        ends = f" (job ends {cls.state})" if "state" in cls.__dict__ and cls is not TorenError else ""
        rows.setdefault(cls.exit_code, []).append(f"{cls.__name__}: {doc[:1].lower()}{doc[1:]}{ends}")
    lines = []
    for code in sorted(rows):
        for i, text in enumerate(rows[code]):
            lines += textwrap.wrap(text, 79, initial_indent=f"  {code if i == 0 else '':<5}",
                                   subsequent_indent=" " * 7)
    return "exit codes (of --disable-daemon; see " + DOCS + "#exit-codes):\n" + "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="toren", description=_text("Hand coding work to an AI agent in a Docker container; "
                                                "get back a branch and a pull request."),
                epilog=_examples("toren run --spec task.md                 # the current repository, background",
                                 "toren status                             # what ran, what runs",
                                 "toren logs 01j9 --follow                 # a job's log as it runs") +
                f"\n\nRun `toren COMMAND --help` for a command's flags; the reference is {DOCS}.")
    p.add_argument("--version", action="version", version=f"toren {__version__}")
    sub = p.add_subparsers(dest="command_name", metavar="COMMAND", parser_class=_Parser)

    r = sub.add_parser(
        "run", help="run an agent on a task and deliver the result as a branch",
        usage="toren run (--spec FILE | --issue URL) [--repo REPO] [options]",
        description=_text("Run an agent on a task in a container built from your base image, commit its change on "
                          "a new branch and push it. Background by default; --disable-daemon waits for the result.",
                          "One of --spec and --issue is required."),
        epilog=_examples(
            "toren run --spec task.md                  # Claude Code on this repository",
            "toren run --issue acme/widget#42 --draft   # an issue's task; a draft PR",
            "toren run --agent shell --command 'make fmt' --spec task.md --disable-daemon",
        ) + "\n\n" + exit_codes() + f"\n\nEvery flag, setting and exit code: {DOCS}")
    _add_setting_flags(r)
    g = r.add_argument_group("execution")
    g.add_argument("--disable-daemon", action="store_true", help="run in the foreground and wait for the result")
    g.add_argument("--json", action="store_true", help="print the job as JSON on stdout (docs/cli.md#json-output)")
    g.add_argument("--quiet", "-q", action="store_true", help="show stages only, not the agent's output")
    g.add_argument("--config", metavar="FILE", help="settings file (default: toren.toml or [tool.toren] in the repo)")

    s = sub.add_parser("status", help="list jobs", description="List jobs, newest first.",
                       epilog=_examples("toren status                      # the last 50 jobs, at 80 columns",
                                        "toren status --state running -w   # live, until Ctrl-C",
                                        "toren status --json --limit 0     # every job, as JSON"))
    s.add_argument("--json", action="store_true", help="print the jobs as a JSON list (docs/cli.md#json-output)")
    s.add_argument("--watch", "-w", action="store_true", help="refresh the table until Ctrl-C")
    s.add_argument("--interval", type=float, default=1.0, metavar="SECONDS", help="refresh period with --watch")
    s.add_argument("--state", choices=[state.value for state in JobState], metavar="STATE",
                   help="only jobs in this state: " + ", ".join(state.value for state in JobState))
    s.add_argument("--repo", help="only jobs whose repository contains this")
    s.add_argument("--limit", type=int, default=50, metavar="N", help="at most N jobs, newest first; 0 for all")
    s.add_argument("--wide", action="store_true", help="every column (agent, duration, turns, cost, full result)")

    lg = sub.add_parser("logs", help="print a job's log", description="Print a job's log.",
                        epilog=_examples("toren logs 01j9                 # the log so far",
                                         "toren logs 01j9 --follow        # until the job ends; exits with its code",
                                         "toren logs 01j9 --tail 20"))
    lg.add_argument("job", help="job id or unambiguous prefix")
    lg.add_argument("--follow", "-f", action="store_true", help="keep printing until the job ends")
    lg.add_argument("--tail", type=int, metavar="N", help="only the last N lines")

    sub.add_parser("action", help="the GitHub Action's entry point (reads INPUT_* and the event)",
                   description=_text("The GitHub Action's entry point: action.yml runs it on the runner, with the "
                                     "inputs as INPUT_* variables and the event in GITHUB_EVENT_PATH "
                                     "(docs/action.md)."),
                   epilog=_examples("uses: OWNER/toren@v1   # in a workflow; see docs/action.md"))

    sc = sub.add_parser("scan", help="the diff policy on your changes, or a security look at an image",
                        description="The diff policy on your own changes, or a security look at a local image.",
                        epilog=_examples("toren scan --staged                # what you are about to commit",
                                         "toren scan --diff main..HEAD       # a range of commits",
                                         "toren scan --image python:3.11     # user, secrets, setuid, PATH, CVEs"))
    what = sc.add_mutually_exclusive_group(required=True)
    what.add_argument("--staged", action="store_true", help="what is staged for the next commit (a pre-commit hook)")
    what.add_argument("--diff", metavar="A..B", help="a range of commits")
    what.add_argument("--image", metavar="IMAGE", help="a local image: user, secrets, setuid binaries, PATH, CVEs")
    sc.add_argument("--allow-policy", action="append", default=[], metavar="RULE", help="a rule not to report")
    sc.add_argument("--exclude", action="append", default=[], metavar="GLOB",
                    help="paths not to report (repeatable), e.g. 'tests/*' for deliberate test fixtures")
    sc.add_argument("--json", action="store_true", help="print the findings (or the image's rows) as JSON")

    rc = sub.add_parser("race", help="a race's attempts side by side, and its choice (docs/race.md)",
                        description=_text("Show a race of several attempts on one task (toren run --attempts or "
                                          "--agents): each attempt's state, tests, change, cost and time, and which "
                                          "one was chosen and why; or pick another, or choose among a runner "
                                          "fleet's records."),
                        epilog=_examples("toren race 01m9 --watch", "toren race 01m9 --pick 3",
                                         "toren race --from-artifacts records/ --issue acme/widget#42"))
    rc.add_argument("race", nargs="?", help="race id or unambiguous prefix")
    rc.add_argument("--json", action="store_true", help="print the race and its attempts as JSON")
    rc.add_argument("--watch", "-w", action="store_true", help="redraw the table until the race ends")
    rc.add_argument("--interval", type=float, default=1.0, metavar="SECONDS", help="refresh period with --watch")
    rc.add_argument("--pick", type=int, metavar="N", help="open the pull request from attempt N instead")
    rc.add_argument("--force", action="store_true", help="with --pick: an attempt that did not pass verification")
    rc.add_argument("--from-artifacts", metavar="DIR",
                    help="choose among the result records of `toren run --race-attempt` (a runner fleet's race)")
    rc.add_argument("--repo", help="with --from-artifacts: the repository (default: the records')")
    rc.add_argument("--spec", metavar="FILE", help="with --from-artifacts: the task (for the pull request's title)")
    rc.add_argument("--issue", metavar="URL", help="with --from-artifacts: the task's issue")
    rc.add_argument("--keep-attempts", action="store_true", help="with --from-artifacts: keep the losers' branches")
    rc.add_argument("--no-pr", action="store_true", help="with --from-artifacts: choose, open no pull request")
    rc.add_argument("--draft", action="store_true", help="with --from-artifacts: open the pull request as a draft")
    rc.add_argument("--config", metavar="FILE", help="settings file")

    cn = sub.add_parser("cancel", help="stop a job (or every attempt of a race) and remove its container",
                        description="Stop a job: a queued one never starts; a running one stops as with Ctrl-C.",
                        epilog=_examples("toren cancel 01j9", "toren cancel 01j9 --wait 5   # then kill it"))
    cn.add_argument("job", help="job or race id, or an unambiguous prefix")
    cn.add_argument("--wait", type=float, default=30.0, metavar="SECONDS",
                    help="how long to let it stop cleanly before killing it (default 30)")

    sm = sub.add_parser("summary", help="what a job did (an AI summary when an Anthropic key is set)",
                        description=_text("What a job did: its stages, change, usage and cost; first an AI summary "
                                          "when an Anthropic key is set and the job ended."),
                        epilog=_examples("toren summary 01j9", "toren summary 01j9 --plain     # no AI summary",
                                         "toren summary 01j9 --json"))
    sm.add_argument("job", help="job id or unambiguous prefix")
    sm.add_argument("--json", action="store_true", help="print the job as JSON (docs/cli.md#json-output)")
    sm.add_argument("--plain", action="store_true", help="only the recorded facts, no AI summary")
    sm.add_argument("--refresh", action="store_true", help="make the AI summary again instead of the cached one")

    c = sub.add_parser("cleanup", help="remove finished jobs' containers and workspaces",
                       description=_text("Remove what finished jobs left behind: containers, workspaces, saved "
                                         "environments; with --logs their logs and records too."),
                       epilog=_examples("toren cleanup --all --dry-run", "toren cleanup --older-than 7d --logs",
                                        "toren cleanup 01j9"))
    c.add_argument("job", nargs="?", help="one job (default: see --all / --older-than)")
    c.add_argument("--all", action="store_true", help="every finished job, and every prepared environment")
    c.add_argument("--older-than", metavar="AGE", help="finished jobs older than AGE (e.g. 7d, 12h), and prepared "
                   "environments not used for AGE")
    c.add_argument("--logs", action="store_true", help="also remove logs and job records")
    c.add_argument("--dry-run", action="store_true", help="show what would be removed")

    h = sub.add_parser("health", help="check Docker, git, disk and an image",
                       description=_text("Check what Toren needs: git, disk, Docker, the agents' credentials, "
                                         "an image."),
                       epilog=_examples("toren health", "toren health --docker-image python:3.11 --security",
                                        "toren health --json"))
    h.add_argument("--docker-image", metavar="IMAGE", help="also inspect this image")
    h.add_argument("--security", action="store_true", help="add a security look at --docker-image")
    h.add_argument("--check-registry", action="store_true",
                   help="when --docker-image is not present locally, ask its registry whether it can be pulled")
    h.add_argument("--json", action="store_true", help="print the checks as JSON")

    _no_negative_numbers(p)
    return p


def non_negative(convert: type) -> Any:
    """An argparse type: a finite number of ``convert`` (int or float) that is not negative; every numeric flag
    of every command that is not a setting gets it (``_no_negative_numbers``), so `logs --tail -3` and `cancel
    --wait -5` are refused (a setting's flag is checked against the schema, which bounds every number)."""
    def parse(text: str) -> Any:
        try:
            value = convert(text)
        except ValueError:
            what = "a whole number" if convert is int else "a number"
            raise argparse.ArgumentTypeError(f"{text[:40]!r} is not {what}") from None
        if value != value or value in (float("inf"), float("-inf")):
            raise argparse.ArgumentTypeError(f"{text[:40]!r} is not a finite number")
        if value < 0:
            raise argparse.ArgumentTypeError(f"{text[:40]} is negative; give 0 or more")
        return value

    parse.__name__ = convert.__name__  # argparse names the type in its messages
    return parse


def _no_negative_numbers(parser: argparse.ArgumentParser) -> None:
    """Every numeric flag that is not a setting (a setting's bounds are its schema's, in its own words)."""
    for action in _Parser._all_actions(parser):  # type: ignore[arg-type]
        if action.type in (int, float) and action.dest not in SETTINGS:
            action.type = non_negative(action.type)


#: The settings that `toren run` takes a flag for, but the maps (run_flags parses those).
RUN_SETTING_FLAGS = tuple(key for key, spec in SETTINGS.items() if spec.flags and spec.kind != "map")
#: What each kind of setting (settings.KINDS) is to argparse.
_FLAG_KINDS: dict[str, dict[str, Any]] = {
    "str": {}, "int": {"type": int}, "float": {"type": float}, "bool": {"action": "store_true", "default": None},
    "list": {"action": "append"}, "map": {"action": "append"},
}


def _add_setting_flags(run: argparse.ArgumentParser) -> None:
    """The flags of `toren run` that are settings, from their declaration (settings.Settings), by section."""
    for title in GROUPS:
        group = run.add_argument_group(title)
        for key, spec in SETTINGS.items():
            if spec.flags and spec.group == title:
                options: dict[str, Any] = {"dest": key, "help": spec.help, **_FLAG_KINDS[spec.kind]}
                if spec.metavar:
                    options["metavar"] = spec.metavar
                if spec.choices:
                    options["choices"] = spec.choices
                group.add_argument(*spec.flags, **options)


def run_flags(args: argparse.Namespace) -> dict[str, Any]:
    """The settings that `toren run`'s flags give (None where a flag is not given); a map from KEY=VALUE items."""
    flags = {k: getattr(args, k) for k in RUN_SETTING_FLAGS}
    for key, spec in SETTINGS.items():
        if spec.flags and spec.kind == "map" and getattr(args, key):
            from toren_action.config.validate import env_pair

            flags[key] = dict(env_pair(e, spec.flags[0]) for e in getattr(args, key))
    return flags
