"""How much Toren adds on top of the floor: a bare `docker run` plus a local `git clone`.

Runs a warm `toren run --agent shell --disable-daemon` (a CLI process each time, so start-up counts) N times
on a throwaway repository, and the floor the same number of times, and prints medians. Also times
`toren --help` and `toren status` (CLI start-up). Prints figures; asserts nothing.

    .venv/bin/python bench/bench_run.py [--runs 10] [--image toren/base:bookworm] [--agent claude]

With ``--agent claude`` the job runs the real Claude Code CLI against the fake Messages API from the tests
(one tool call, then an answer); the floor is then `git clone` plus a bare `docker run` of the same CLI in the
same agent image against the same fake.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def sh(*cmd: str, cwd: Path | None = None, env: dict | None = None) -> None:
    subprocess.run(cmd, cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--image", default=os.environ.get("TOREN_BASE_IMAGE", "toren/base:bookworm"))
    ap.add_argument("--agent", choices=("shell", "claude"), default="shell")
    args = ap.parse_args()
    fake = None
    if args.agent == "claude":
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        from tests.fakes.anthropic import FakeAnthropic

        fake = FakeAnthropic().start()

    tmp = Path(tempfile.mkdtemp(prefix="toren-bench-"))
    repo = tmp / "repo"
    (repo / "src").mkdir(parents=True)
    for i in range(200):
        (repo / "src" / f"m{i}.py").write_text(f"def old_name_{i}():\n    return {i}\n")
    sh("git", "init", "-q", "-b", "main", cwd=repo)
    sh("git", "add", "-A", cwd=repo)
    sh("git", "-c", "user.name=b", "-c", "user.email=b@x", "commit", "-qm", "init", cwd=repo)
    (tmp / "task.md").write_text("# Rename\n")
    env = {**os.environ, "TOREN_HOME": str(tmp / "home")}
    toren = [sys.executable, "-m", "toren_action"]
    cmd = "sed -i s/old_name/new_name/ src/m1.py"
    agent_args = ["--agent", "shell", "--command", cmd]
    if fake is not None:
        env.update(ANTHROPIC_API_KEY=fake.script.api_key, ANTHROPIC_BASE_URL=fake.url)
        agent_args = ["--agent", "claude", "--network", "host"]

    def toren_run(i: int) -> None:
        sh(*toren, "run", "--repo", str(repo), "--spec", str(tmp / "task.md"), "--branch", f"bench/{i}",
           *agent_args, "--base-image", args.image, "--disable-daemon", "-q", env=env)

    toren_run(-1)  # warm: image built, mirror made
    floor_image, floor_cmd, floor_opts = args.image, ["sh", "-c", cmd], ["--network", "none"]
    if fake is not None:  # the same CLI, in the same agent image, against the same fake
        out = subprocess.run([*toren, "status", "--json", "--limit", "1"], env=env, capture_output=True, text=True)
        import json

        floor_image = json.loads(out.stdout)[0]["image"]
        floor_cmd = ["claude", "-p", "write hello.txt", "--output-format", "stream-json", "--verbose",
                     "--dangerously-skip-permissions"]
        floor_opts = ["--network", "host", "--user", "0", "-e", "IS_SANDBOX=1", "-e", f"ANTHROPIC_BASE_URL={fake.url}",
                      "-e", f"ANTHROPIC_API_KEY={fake.script.api_key}",
                      "-e", "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1"]

    def floor(i: int) -> None:
        dest = tmp / f"floor-{i}"
        sh("git", "clone", "-q", str(repo), str(dest))
        sh("docker", "run", "--rm", *floor_opts, "-v", f"{dest}:/workspace", "-w", "/workspace",
           floor_image, *floor_cmd)

    toren_t = [timed(lambda i=i: toren_run(i)) for i in range(args.runs)]
    floor_t = [timed(lambda i=i: floor(i)) for i in range(args.runs)]
    help_t = [timed(lambda: sh(*toren, "--help", env=env)) for _ in range(args.runs)]
    status_t = [timed(lambda: sh(*toren, "status", env=env)) for _ in range(args.runs)]
    py_t = [timed(lambda: sh(sys.executable, "-c", "pass")) for _ in range(args.runs)]

    m_toren, m_floor = statistics.median(toren_t), statistics.median(floor_t)
    print(f"runs: {args.runs}, image: {args.image}, agent: {args.agent}, repo: 200 files")
    print(f"floor (git clone + docker run --rm)   median {m_floor * 1000:7.0f} ms")
    print(f"toren run --disable-daemon (warm)     median {m_toren * 1000:7.0f} ms  "
          f"(overhead {(m_toren - m_floor) * 1000:+.0f} ms, {m_toren / m_floor:.2f}x the floor; "
          "includes commit + push)")
    print(f"python -c pass                        median {statistics.median(py_t) * 1000:7.0f} ms")
    print(f"toren --help                          median {statistics.median(help_t) * 1000:7.0f} ms")
    print(f"toren status ({args.runs + 1} jobs)              median {statistics.median(status_t) * 1000:7.0f} ms")
    if fake is not None:
        fake.stop()
    sh("rm", "-rf", str(tmp))


if __name__ == "__main__":
    main()
