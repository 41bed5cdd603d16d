"""How much Toren adds on top of the floor: a bare `docker run` plus a local `git clone`.

Runs a warm `toren run --agent shell --disable-daemon` (a CLI process each time, so start-up counts) N times
on a throwaway repository, and the floor the same number of times, and prints medians. Also times
`toren --help` and `toren status` (CLI start-up). Prints figures; asserts nothing.

    .venv/bin/python bench/bench_run.py [--runs 10] [--image toren/base:bookworm]
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
    args = ap.parse_args()

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

    def toren_run(i: int) -> None:
        sh(*toren, "run", "--repo", str(repo), "--spec", str(tmp / "task.md"), "--branch", f"bench/{i}",
           "--agent", "shell", "--command", cmd, "--base-image", args.image, "--disable-daemon", "-q", env=env)

    toren_run(-1)  # warm: image built, mirror made

    def floor(i: int) -> None:
        dest = tmp / f"floor-{i}"
        sh("git", "clone", "-q", str(repo), str(dest))
        sh("docker", "run", "--rm", "--network", "none", "-v", f"{dest}:/workspace", "-w", "/workspace",
           args.image, "sh", "-c", cmd)

    toren_t = [timed(lambda i=i: toren_run(i)) for i in range(args.runs)]
    floor_t = [timed(lambda i=i: floor(i)) for i in range(args.runs)]
    help_t = [timed(lambda: sh(*toren, "--help", env=env)) for _ in range(args.runs)]
    status_t = [timed(lambda: sh(*toren, "status", env=env)) for _ in range(args.runs)]
    py_t = [timed(lambda: sh(sys.executable, "-c", "pass")) for _ in range(args.runs)]

    m_toren, m_floor = statistics.median(toren_t), statistics.median(floor_t)
    print(f"runs: {args.runs}, image: {args.image}, repo: 200 files")
    print(f"floor (git clone + docker run --rm)   median {m_floor * 1000:7.0f} ms")
    print(f"toren run --disable-daemon (warm)     median {m_toren * 1000:7.0f} ms  "
          f"(overhead {(m_toren - m_floor) * 1000:+.0f} ms, {m_toren / m_floor:.2f}x the floor; "
          "includes commit + push)")
    print(f"python -c pass                        median {statistics.median(py_t) * 1000:7.0f} ms")
    print(f"toren --help                          median {statistics.median(help_t) * 1000:7.0f} ms")
    print(f"toren status ({args.runs + 1} jobs)              median {statistics.median(status_t) * 1000:7.0f} ms")
    sh("rm", "-rf", str(tmp))


if __name__ == "__main__":
    main()
