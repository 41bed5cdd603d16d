"""The `toren` command line: parses flags and prints results. No job logic lives here, and no heavy SDK
is imported until a command needs it (so `toren --help` and `toren status` start fast)."""

from __future__ import annotations

import argparse
import difflib
import json
import re
import sys
from typing import Any

from toren_action import __version__
from toren_action.core.errors import TorenError, UsageError


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
    g = r.add_argument_group("task and repository")
    g.add_argument("--repo", help="local path, git URL or owner/name (default: the current directory)")
    g.add_argument("--spec", metavar="FILE", help="markdown file holding the task")
    g.add_argument("--issue", metavar="URL", help="GitHub issue holding the task (URL or owner/name#N)")
    g.add_argument("--branch", help="branch to create (default: toren/<job id>)")
    g.add_argument("--base-branch", help="branch to start from (default: the repository's default branch)")
    g.add_argument("--force-branch", action="store_true", default=None,
                   help="overwrite the branch if it already exists upstream")
    g = r.add_argument_group("agent")
    g.add_argument("--agent", "--cli-type", dest="agent", help="claude (default), gemini, codex, qwen or shell")
    g.add_argument("--command", help="command the shell agent runs with /bin/sh -c")
    g.add_argument("--model", help="model name for the agent CLI")
    g.add_argument("--agent-version", metavar="VERSION",
                   help="version of the agent CLI's npm package (default: pinned)")
    g.add_argument("--max-cost-usd", type=float, metavar="USD", help="stop the agent when its cost passes this")
    g.add_argument("--max-turns", type=int, metavar="N", help="stop the agent after N model turns")
    g.add_argument("--push-partial", action="store_true", default=None,
                   help="when a budget stops the agent, still commit and push the work so far")
    g.add_argument("--allowed-tools", action="append", metavar="TOOL",
                   help="tool the agent may use (repeatable; Claude Code syntax, e.g. 'Bash(git diff:*)')")
    g.add_argument("--disallowed-tools", action="append", metavar="TOOL",
                   help="tool the agent may not use (repeatable)")
    g.add_argument("--append-system-prompt", metavar="TEXT", help="text appended to the agent's system prompt")
    g.add_argument("--timeout", type=float, dest="timeout_minutes", metavar="MINUTES",
                   help="stop the agent after this many minutes (default 60)")
    g = r.add_argument_group("container")
    g.add_argument("--base-image", metavar="IMAGE", help="image the agent image is built on (default python:3.11)")
    g.add_argument("--pull", choices=("missing", "always", "never"), help="when to pull the base image")
    g.add_argument("--env", action="append", metavar="KEY=VALUE", help="environment variable (repeatable)")
    g.add_argument("--secret", action="append", dest="secrets", metavar="NAME",
                   help="host variable passed as the read-only file /run/toren/secrets/NAME (repeatable)")
    g.add_argument("--volume", action="append", dest="volumes", metavar="SRC:DST[:ro|rw]",
                   help="bind mount (repeatable)")
    g.add_argument("--gpus", help="all, a count, or device=0,1")
    g.add_argument("--network", help="bridge, host, none or a network name (default: the agent's)")
    g.add_argument("--egress", metavar="allow=HOST,...",
                   help="no network except these hosts (through a filtering proxy on the host; *.domain for "
                        "subdomains)")
    g.add_argument("--key-proxy", choices=("auto", "on", "off"),
                   help="keep the model API key on the host behind a proxy (default auto: for every CLI whose "
                        "credential is its API key)")
    g.add_argument("--memory", help="memory limit (default 4g)")
    g.add_argument("--pids-limit", type=int, metavar="N", help="process limit (default 1024)")
    g.add_argument("--cpus", type=float, metavar="N", help="CPUs of the agent's container (default 2)")
    g.add_argument("--ca-bundle", metavar="PATH",
                   help="extra CA bundle to trust in the image (default: SSL_CERT_FILE, REQUESTS_CA_BUNDLE or "
                        "NODE_EXTRA_CA_CERTS when set)")
    g = r.add_argument_group("GitHub")
    g.add_argument("--github-token-file", metavar="PATH", help="file holding the GitHub token "
                                                              "(default: GITHUB_TOKEN or GH_TOKEN)")
    g.add_argument("--actor", metavar="LOGIN", help="GitHub user who triggered the job; must have write access")
    g.add_argument("--allow-actor", action="append", dest="allow_actors", metavar="LOGIN",
                   help="trust this GitHub login to start jobs whatever its permission (repeatable)")
    g.add_argument("--allow-fork", action="store_true", default=None,
                   help="allow --repo to be a fork of the issue's repository")
    g.add_argument("--label", action="append", dest="labels", metavar="LABEL", help="label for the PR (repeatable)")
    g.add_argument("--reviewer", action="append", dest="reviewers", metavar="LOGIN",
                   help="reviewer for the PR (repeatable)")
    g.add_argument("--assignee", action="append", dest="assignees", metavar="LOGIN",
                   help="assignee for the PR (repeatable)")
    g = r.add_argument_group("diff policy")
    g.add_argument("--allow-workflow-changes", action="store_true", default=None,
                   help="let the change touch .github/ or an action.yml/action.yaml")
    g.add_argument("--allow-policy", action="append", dest="allow_policy", metavar="RULE",
                   help="a diff-policy rule that may not block the push (repeatable): secret-pattern, workflow, "
                        "symlink, large-file, binary, protected-path")
    g.add_argument("--protected-path", action="append", dest="protected_paths", metavar="GLOB",
                   help="files the change may not touch (repeatable)")
    g.add_argument("--max-file-mb", type=float, metavar="MB", help="largest file the change may add (default 5)")
    g.add_argument("--max-change-mb", type=float, metavar="MB",
                   help="largest total size of the change the agent may commit (default 50)")
    g.add_argument("--fail-on", choices=("none", "medium", "high"),
                   help="block the push on code-scan (bandit) findings at or above this severity (default none)")
    g = r.add_argument_group("result")
    g.add_argument("--verify", metavar="CMD", help="command that must pass on the change before it is pushed")
    g.add_argument("--draft", action="store_true", default=None, help="open the pull request as a draft")
    g.add_argument("--no-pr", action="store_true", default=None, help="push the branch only")
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

    cn = sub.add_parser("cancel", help="stop a job and remove its container")
    cn.add_argument("job", help="job id or unambiguous prefix")
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


RUN_SETTING_FLAGS = (
    "repo", "spec", "issue", "branch", "base_branch", "force_branch", "agent", "command", "model", "max_cost_usd",
    "agent_version", "max_turns", "push_partial", "allowed_tools", "disallowed_tools", "append_system_prompt",
    "github_token_file", "actor", "allow_actors", "allow_fork", "labels", "reviewers", "assignees",
    "allow_workflow_changes", "allow_policy", "protected_paths", "max_file_mb", "key_proxy", "fail_on", "egress",
    "timeout_minutes", "base_image", "pull", "secrets", "volumes", "gpus", "network", "memory", "pids_limit",
    "ca_bundle", "verify", "draft", "no_pr", "cpus", "max_change_mb",
)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_run-job"] and len(argv) == 2:  # one background job's process (started by the worker)
        args = argparse.Namespace(command_name="_run-job", job=argv[1])
    elif argv == ["_worker"]:  # the background worker (started by `toren run`)
        args = argparse.Namespace(command_name="_worker")
    else:
        try:
            args = build_parser().parse_args(argv)
        except SystemExit as exc:  # --help, --version, or a bad flag (already printed as one line)
            return exc.code if isinstance(exc.code, int) else UsageError.exit_code
    if not args.command_name:
        build_parser().print_help()
        return UsageError.exit_code
    try:
        from toren_action.cli import commands

        return getattr(commands, "cmd_" + args.command_name.lstrip("_").replace("-", "_"))(args)
    except TorenError as exc:
        print(f"toren: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("toren: interrupted", file=sys.stderr)
        return 130


def run_flags(args: argparse.Namespace) -> dict[str, Any]:
    flags = {k: getattr(args, k) for k in RUN_SETTING_FLAGS}
    if args.env:
        from toren_action.config.validate import env_pair

        flags["env"] = dict(env_pair(e) for e in args.env)
    return flags


def print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
