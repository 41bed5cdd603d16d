import subprocess
import sys

from toren_action.cli import build_parser, main

RUN_FLAGS = ["--repo", "--spec", "--issue", "--branch", "--base-image", "--agent", "--cli-type", "--command", "--model",
             "--disable-daemon", "--env", "--volume", "--gpus", "--network", "--timeout", "--max-cost-usd", "--pull",
             "--ca-bundle", "--draft", "--no-pr", "--verify", "--json"]


def test_every_command_and_run_flag_is_in_help(capsys):
    assert main(["--help"]) == 0
    top = capsys.readouterr().out
    for command in ("run", "status", "logs", "summary", "cleanup", "health"):
        assert command in top
    assert main(["run", "--help"]) == 0
    run_help = capsys.readouterr().out
    for flag in RUN_FLAGS:
        assert flag in run_help, flag


def test_cli_type_is_an_alias_of_agent():
    args = build_parser().parse_args(["run", "--cli-type", "shell"])
    assert args.agent == "shell"


def test_help_and_status_do_not_import_heavy_sdks(tmp_path):
    code = (
        "import sys; from toren_action.cli import main; "
        "main(['status']); "
        "heavy = ('docker', 'jsonschema', 'requests', 'rich', 'github', 'anthropic'); "
        "print(sorted(m for m in heavy if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"TOREN_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}).stdout
    assert out.strip().splitlines()[-1] == "[]"


def test_no_command_prints_the_short_help_and_exits_0_as_gh_does(capsys):
    assert main([]) == 0
    out, err = capsys.readouterr()
    assert "COMMAND" in out and "examples:" in out and err == ""
    assert len(out.splitlines()) < 40


COMMANDS = ("run", "status", "logs", "action", "scan", "cancel", "summary", "cleanup", "health", "race")


def _help(capsys, *argv: str) -> str:
    assert main([*argv, "--help"]) == 0
    return capsys.readouterr().out


def test_every_command_has_a_description_examples_and_help_for_every_argument(capsys):
    import argparse

    from toren_action.cli.parser import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert set(sub.choices) == set(COMMANDS)
    for name, parser in sub.choices.items():
        assert parser.description, name
        assert parser.epilog and parser.epilog.startswith("examples:\n"), name
        examples = [ln for ln in parser.epilog.split("\n\n")[0].splitlines()[1:]]
        assert 1 <= len(examples) <= 3, name
        assert all(ln.strip().startswith(("toren " + name, "uses: ")) for ln in examples), (name, examples)
        for action in parser._actions:
            assert action.help, (name, action.dest)  # --json, --limit, summary's JOB included
        text = _help(capsys, name)
        assert max(len(ln) for ln in text.splitlines()) <= 80, name  # reads in an 80-column terminal


def test_defaults_are_shown(capsys):
    status = _help(capsys, "status")
    assert "(default: 50)" in status and "(default: 1)" in status
    run = " ".join(_help(capsys, "run").split())
    assert "(default 60)" in run and "(default python:3.11)" in run
    assert "when to pull the base image (default missing)" in run and "(default 2)" in run
    assert "(default: False)" not in run and "(default: None)" not in run


def test_run_help_says_what_is_required_and_lists_the_exit_codes_from_the_code(capsys):
    from toren_action.core.errors import TorenError, _subclasses
    from toren_action.core.states import JobState

    text = _help(capsys, "run")
    assert text.startswith("usage: toren run (--spec FILE | --issue URL)")
    assert "One of --spec and --issue is required." in text
    assert "docs/cli.md" in text
    codes = text.split("exit codes")[1]
    for cls in [TorenError, *_subclasses(TorenError)]:  # every error, with its code, from errors.py
        row = next(ln for ln in codes.splitlines() if f" {cls.__name__}: " in ln)
        assert row.split()[0] == str(cls.exit_code) or row.startswith(" " * 7), (cls, row)
    for state in JobState:
        if state.final and state.exit_code:
            assert f"(job ends {state})" in " ".join(codes.split()), state
    assert " ".join(codes.split()).startswith("(of --disable-daemon; see docs/cli.md#exit-codes): 0 succeeded")


def test_a_mistyped_command_or_choice_names_the_closest_one():
    from tests.conftest import subprocess_env

    for argv, wanted in ((["stat"], "toren: 'stat' is not a toren command; did you mean status? "
                                    "(see `toren --help`)"),
                         (["sumary", "x"], "did you mean summary?"),
                         (["run", "--pull", "alway"], "toren: --pull: 'alway' is not one of its values; did you "
                                                      "mean always? (see `toren run --help`)"),
                         (["xyzzy"], "'xyzzy' is not a toren command; choose from run, status,")):
        proc = subprocess.run([sys.executable, "-m", "toren_action", *argv], capture_output=True, text=True,
                              env=subprocess_env(), timeout=60)
        assert proc.returncode == 2 and wanted in proc.stderr, proc.stderr
        assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr


def test_a_usage_error_after_parsing_points_at_the_commands_own_help(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TOREN_HOME", str(tmp_path / "home"))
    assert main(["cleanup"]) == 2
    assert capsys.readouterr().err == ("toren: cleanup: say what to remove: a JOB id, --all or --older-than AGE "
                                       "(see `toren cleanup --help`)\n")
    assert main(["status", "--watch", "--interval", "0"]) == 2
    assert capsys.readouterr().err.rstrip().endswith("(see `toren status --help`)")
    spec = tmp_path / "task.md"
    spec.write_text("x\n")
    assert main(["run", "--spec", str(spec), "--timeout", "0"]) == 2  # found by the settings, after parsing
    assert capsys.readouterr().err.rstrip().endswith("(see `toren run --help`)")


def test_abbreviated_flags_are_refused_and_the_closest_flag_is_named():
    from tests.conftest import subprocess_env

    # `--pr` used to be taken for --protected-path by argparse's prefix matching (it is a flag of its own now)
    for argv, wanted in ((["run", "--allow-any", "--pr", "a/b#1"], "--allow-any-pr"),
                         (["run", "--protected", "x"], "--protected-path"),
                         (["status", "--jso"], "--json")):
        proc = subprocess.run([sys.executable, "-m", "toren_action", *argv], capture_output=True, text=True,
                              env=subprocess_env(), timeout=60)
        assert proc.returncode == 2, (argv, proc.stderr)
        assert "unrecognized arguments" in proc.stderr and f"did you mean {wanted}?" in proc.stderr, proc.stderr
        assert proc.stderr.count("\n") == 1


def test_health_says_when_the_machine_is_a_cloud_one(tmp_path):
    from toren_action.cli.commands import cloud_vendor

    dmi = tmp_path / "dmi"
    dmi.mkdir()
    assert cloud_vendor(str(dmi), {}) is None  # nothing said: no claim
    (dmi / "sys_vendor").write_text("QEMU\n")
    assert cloud_vendor(str(dmi), {}) is None
    for file, text, cloud in (("sys_vendor", "Amazon EC2\n", "Amazon EC2"), ("product_name", "Google Compute Engine",
                                                                             "Google Cloud"),
                              ("chassis_asset_tag", "7783-7084-3265-9085-8269-3286-77", "Azure")):
        (dmi / file).write_text(text)
        assert cloud_vendor(str(dmi), {}) == cloud
        (dmi / file).unlink()
    assert cloud_vendor(str(dmi), {"RUNNER_ENVIRONMENT": "github-hosted"}) == "GitHub-hosted runner"


def test_logs_of_a_queued_job_is_one_line_and_exit_0_as_docs_cli_says(tmp_path, monkeypatch, capsys):
    from toren_action.core.paths import log_path
    from toren_action.jobs.store import Store

    home = tmp_path / "home"
    monkeypatch.setenv("TOREN_HOME", str(home))
    store = Store(home)
    queued = store.create_job(repo="/r", branch="b", agent="shell", model=None, base_image="i", inputs={})
    log = log_path(home, queued)
    log.parent.mkdir(parents=True)
    log.touch()  # as `toren run` leaves it for the worker
    assert main(["logs", queued]) == 0
    out, err = capsys.readouterr()
    assert out == "" and err == (f"toren: job {queued} is queued: nothing logged yet; `toren logs {queued} "
                                 "--follow` waits for it\n")
    log.unlink()  # never given a log: still a queued job, not an error
    assert main(["logs", queued]) == 0 and "is queued" in capsys.readouterr().err
    store.set_state(queued, "running")
    assert main(["logs", queued]) == 1  # a job that started without a log is one
    assert capsys.readouterr().err == f"toren: job {queued} is running but has no log file ({log} is missing)\n"
