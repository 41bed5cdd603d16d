"""What verification as test results costs: a warm shell-agent job on a small unittest project, without --verify,
with --verify, and with --verify --verify-baseline, each N times (a CLI process each time, so start-up counts),
and the run of the command itself (``duration_s`` of the record, container start included). Also the parsers
alone: reading a pytest JUnit file of 20,000 cases, and 1,000,000 lines of output through the summary reader.
Prints medians; asserts nothing.

    .venv/bin/python bench/bench_verify.py [--runs 5] [--image toren/base:bookworm]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.integration.test_verification import FIX, TESTS, TEXTOPS  # noqa: E402
from toren_action.job import verify  # noqa: E402


def job(tmp: Path, home: Path, image: str, branch: str, *extra: str) -> tuple[float, dict]:
    env = {**os.environ, "TOREN_HOME": str(home), "PYTHONPATH": str(ROOT)}
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "toren_action", "run", "--repo", str(tmp / "repo"), "--spec",
                          str(tmp / "task.md"), "--branch", branch, "--agent", "shell", "--command", FIX,
                          "--base-image", image, "--pull", "never", "--disable-daemon", "--json", *extra],
                         env=env, capture_output=True, text=True, check=False)
    took = time.perf_counter() - started
    result = json.loads(out.stdout)
    assert result["state"] == "succeeded", result
    return took, result


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--image", default=os.environ.get("TOREN_BASE_IMAGE", "toren/base:bookworm"))
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="toren-bench-verify-"))
    repo = tmp / "repo"
    repo.mkdir()
    (repo / "textops.py").write_text(TEXTOPS)
    (repo / "test_textops.py").write_text(TESTS)
    (tmp / "task.md").write_text("# Fix slug\n")
    for cmd in (["init", "-q", "-b", "main"], ["add", "-A"],
                ["-c", "user.name=U", "-c", "user.email=u@example.invalid", "commit", "-q", "-m", "x"]):
        subprocess.run(["git", *cmd], cwd=repo, check=True)
    home = tmp / "home"
    job(tmp, home, args.image, "warm-up")  # the agent image, the mirror
    modes = {"no --verify": (), "--verify": ("--verify", "python3 -m unittest -v"),
             "--verify --verify-baseline": ("--verify", "python3 -m unittest -v", "--verify-baseline")}
    for name, extra in modes.items():
        totals, runs, bases = [], [], []
        for i in range(args.runs):
            took, result = job(tmp, home, args.image, f"b-{len(extra)}-{i}", *extra)
            totals.append(took)
            v = result.get("verification") or {}
            if v:
                runs.append(v["duration_s"])
            if v.get("baseline"):
                bases.append(v["baseline"]["duration_s"])
        line = f"{name:28} job {statistics.median(totals):.2f} s"
        if runs:
            line += f", verify run {statistics.median(runs):.2f} s"
        if bases:
            line += f", baseline run {statistics.median(bases):.2f} s"
        print(line)

    cases = "".join(f'<testcase classname="tests.test_m{i % 50}" name="test_{i}" time="0.001"/>'
                    for i in range(verify.MAX_CASES))
    xml = f'<?xml version="1.0"?><testsuites><testsuite name="pytest">{cases}</testsuite></testsuites>'.encode()
    started = time.perf_counter()
    verify.parse_junit(xml, {}, {})
    print(f"JUnit of {verify.MAX_CASES} cases ({len(xml) >> 10} KiB): {time.perf_counter() - started:.2f} s")
    lines = [f"tests/test_m.py::test_{i} PASSED [ 50%]" for i in range(1_000_000)]
    reader = verify.SummaryReader()
    started = time.perf_counter()
    for line in lines:
        reader.feed(line)
    print(f"1,000,000 lines through the summary reader: {time.perf_counter() - started:.2f} s")


if __name__ == "__main__":
    main()
