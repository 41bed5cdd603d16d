"""The `toren` command line: `main` parses the flags (parser.py) and hands them to one of the commands
(commands.py), which print their results (ui.py). No job logic lives here, and no heavy SDK is imported until
a command needs it (so `toren --help` and `toren status` start fast). The top layer: it may import every layer
below it."""

from __future__ import annotations

import argparse
import sys

from toren_action.cli.parser import RUN_SETTING_FLAGS, build_parser, run_flags
from toren_action.cli.ui import print_json
from toren_action.core.errors import Interrupted, TorenError, UsageError

__all__ = ["RUN_SETTING_FLAGS", "build_parser", "main", "print_json", "run_flags"]


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
        if args.command_name == "status":  # the common quick look: none of the other commands' imports
            if args.watch and not args.json:
                from toren_action.cli.watch import cmd_watch

                return cmd_watch(args)
            from toren_action.cli.status import cmd_status

            return cmd_status(args)
        from toren_action.cli import commands

        handlers = {"run": commands.cmd_run, "_run-job": commands.cmd_run_job, "_worker": commands.cmd_worker,
                    "logs": commands.cmd_logs, "summary": commands.cmd_summary, "cancel": commands.cmd_cancel,
                    "cleanup": commands.cmd_cleanup, "health": commands.cmd_health, "scan": commands.cmd_scan,
                    "action": commands.cmd_action, "race": commands.cmd_race}
        return handlers[args.command_name](args)
    except TorenError as exc:
        print(f"toren: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("toren: interrupted", file=sys.stderr)
        return Interrupted.exit_code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
