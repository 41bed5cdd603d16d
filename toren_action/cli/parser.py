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


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad flag is one line and exit code 2, like every other usage error; and no abbreviated
    flags (``--pr`` would otherwise be taken for ``--protected-path``): a mistyped flag names the closest one."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # type: ignore[override]
        m = re.match(r"unrecognized arguments: (--[\w-]+)", message)
        if m:
            flags = [opt for action in self._all_actions() for opt in action.option_strings if opt.startswith("--")]
            close = difflib.get_close_matches(m.group(1).split("=")[0], flags, n=1, cutoff=0.6)
            if close:
                message += f"; did you mean {close[0]}?"
        self.exit(UsageError.exit_code, f"toren: {message} (see `{self.prog} --help`)\n")

    def _all_actions(self) -> list[argparse.Action]:
        actions = list(self._actions)
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction):
                for parser in action.choices.values():
                    actions += parser._actions
        return actions


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="toren", description="Hand coding work to an AI agent in a Docker container; "
                                          "get back a branch and a pull request.")
    p.add_argument("--version", action="version", version=f"toren {__version__}")
    sub = p.add_subparsers(dest="command_name", metavar="COMMAND", parser_class=_Parser)

    r = sub.add_parser("run", help="run an agent on a task and deliver the result as a branch",
                       description="Run an agent on a task in a container built from your base image, commit its "
                                   "change on a new branch and push it. Background by default.")
    _add_setting_flags(r)
    g = r.add_argument_group("execution")
    g.add_argument("--disable-daemon", action="store_true", help="run in the foreground and wait for the result")
    g.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    g.add_argument("--quiet", "-q", action="store_true", help="show stages only, not the agent's output")
    g.add_argument("--config", metavar="FILE", help="settings file (default: toren.toml or [tool.toren] in the repo)")

    s = sub.add_parser("status", help="list jobs")
    s.add_argument("--json", action="store_true")
    s.add_argument("--watch", "-w", action="store_true", help="refresh the table until Ctrl-C")
    s.add_argument("--interval", type=float, default=1.0, metavar="SECONDS", help="refresh period with --watch")
    s.add_argument("--state", help="only jobs in this state")
    s.add_argument("--repo", help="only jobs whose repository contains this")
    s.add_argument("--limit", type=int, default=50)

    lg = sub.add_parser("logs", help="print a job's log")
    lg.add_argument("job", help="job id or unambiguous prefix")
    lg.add_argument("--follow", "-f", action="store_true", help="keep printing until the job ends")
    lg.add_argument("--tail", type=int, metavar="N", help="only the last N lines")

    sub.add_parser("action", help="the GitHub Action's entry point (reads INPUT_* and the event)")

    sc = sub.add_parser("scan", help="the diff policy on your changes, or a security look at an image")
    what = sc.add_mutually_exclusive_group(required=True)
    what.add_argument("--staged", action="store_true", help="what is staged for the next commit (a pre-commit hook)")
    what.add_argument("--diff", metavar="A..B", help="a range of commits")
    what.add_argument("--image", metavar="IMAGE", help="a local image: user, secrets, setuid binaries, PATH, CVEs")
    sc.add_argument("--allow-policy", action="append", default=[], metavar="RULE", help="a rule not to report")
    sc.add_argument("--exclude", action="append", default=[], metavar="GLOB",
                    help="paths not to report (repeatable), e.g. 'tests/*' for deliberate test fixtures")
    sc.add_argument("--json", action="store_true")

    rc = sub.add_parser("race", help="a race's attempts side by side, and its choice (docs/race.md)")
    rc.add_argument("race", nargs="?", help="race id or unambiguous prefix")
    rc.add_argument("--json", action="store_true")
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

    cn = sub.add_parser("cancel", help="stop a job (or every attempt of a race) and remove its container")
    cn.add_argument("job", help="job or race id, or an unambiguous prefix")
    cn.add_argument("--wait", type=float, default=30.0, metavar="SECONDS",
                    help="how long to let it stop cleanly before killing it (default 30)")

    sm = sub.add_parser("summary", help="what a job did (an AI summary when an Anthropic key is set)")
    sm.add_argument("job")
    sm.add_argument("--json", action="store_true")
    sm.add_argument("--plain", action="store_true", help="only the recorded facts, no AI summary")
    sm.add_argument("--refresh", action="store_true", help="make the AI summary again instead of the cached one")

    c = sub.add_parser("cleanup", help="remove finished jobs' containers and workspaces")
    c.add_argument("job", nargs="?", help="one job (default: see --all / --older-than)")
    c.add_argument("--all", action="store_true", help="every finished job")
    c.add_argument("--older-than", metavar="AGE", help="finished jobs older than AGE (e.g. 7d, 12h)")
    c.add_argument("--logs", action="store_true", help="also remove logs and job records")
    c.add_argument("--dry-run", action="store_true", help="show what would be removed")

    h = sub.add_parser("health", help="check Docker, git, disk and an image")
    h.add_argument("--docker-image", metavar="IMAGE", help="also inspect this image")
    h.add_argument("--security", action="store_true", help="add a security look at --docker-image")
    h.add_argument("--check-registry", action="store_true",
                   help="when --docker-image is not present locally, ask its registry whether it can be pulled")
    h.add_argument("--json", action="store_true")

    return p


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
