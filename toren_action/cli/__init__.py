"""The `toren` command line: `main` parses the flags (parser.py) and hands them to one of the commands
(commands.py), which print their results (ui.py). No job logic lives here, and no heavy SDK is imported until
a command needs it (so `toren --help` and `toren status` start fast). The top layer: it may import every layer
below it."""

from __future__ import annotations

import argparse
import os
import sys

from toren_action.cli.parser import RUN_SETTING_FLAGS, build_parser, run_flags
from toren_action.cli.ui import closed_pipe, print_json, say, silence_stdout
from toren_action.core.errors import INTERNAL_ERROR_EXIT, Interrupted, TorenError, UsageError
from toren_action.core.texts import one_line

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
    if not args.command_name:  # as `gh` does: the help, and success (asking for nothing is no error)
        build_parser().print_help()
        return 0
    try:
        return _dispatch(args)
    except UsageError as exc:  # the one path of a usage error found after parsing: it points at the command's help
        say(f"toren: {one_line(str(exc))} (see `toren {args.command_name} --help`)")
        return exc.exit_code
    except TorenError as exc:  # one line whatever it quotes (a path or a name holding a newline, an escape)
        say(f"toren: {one_line(str(exc))}")
        return exc.exit_code
    except KeyboardInterrupt:
        say("toren: interrupted")
        return Interrupted.exit_code
    except Exception as exc:  # noqa: BLE001 - the last resort: one line and where the traceback went
        if closed_pipe(exc):  # a reader of a closed pipe (`toren status | head -1`): quiet, like git log | head
            silence_stdout()
            return 0
        say(f"toren: internal error ({exc.__class__.__name__}); this is a bug in Toren; the full traceback is in "
            f"{_save_traceback()}")
        return INTERNAL_ERROR_EXIT


def _dispatch(args: argparse.Namespace) -> int:
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


def _save_traceback() -> str:
    """Write the current exception's traceback (known token formats masked) to a private file: under TOREN_HOME
    when it is a usable directory, else the system's temporary directory. Returns where it went."""
    import tempfile
    import time
    import traceback

    from toren_action.core.redact import mask_tokens

    text = mask_tokens(f"toren {__import__('toren_action').__version__}, command {sys.argv[1:2]!r}\n"
                       + traceback.format_exc())
    home = os.environ.get("TOREN_HOME")
    places = [os.path.join(os.path.expanduser(home), "errors")] if home else []
    places.append(tempfile.gettempdir())
    for place in places:
        try:
            os.makedirs(place, mode=0o700, exist_ok=True)
            fd, path = tempfile.mkstemp(prefix=time.strftime("traceback-%Y%m%d-%H%M%S-"), suffix=".txt", dir=place)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
            return path
        except OSError:
            continue
    return "nowhere (no writable directory)"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
