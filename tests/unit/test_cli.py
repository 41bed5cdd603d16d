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


def test_no_command_prints_help_and_exits_2(capsys):
    assert main([]) == 2
    assert "COMMAND" in capsys.readouterr().out


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
