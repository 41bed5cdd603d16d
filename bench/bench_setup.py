"""What the repository's setup costs (job/setup.py), on the fixture project tests/fixtures/pyproj.

- A warm job whose prepared environment is cached (a setup cache hit: the image reused, the .venv copied into the
  clone) next to the same job on the same project with no setup at all. Target: at most 10% over.
- A first job (cache miss: the setup runs, its container is committed, its workspace files kept) next to the same
  job with no setup plus the setup command's own time (a bare `docker run` of it in a fresh clone, same image,
  same network). Target: at most +2 s.

A CLI process each time (start-up counts), the shell agent, `--network none`; medians. Prints figures, asserts
nothing. Needs the Python test image (scripts/build-python-image.sh; built when missing).

    .venv/bin/python bench/bench_setup.py [--runs 7] [--first-runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "pyproj"
SETUP = "python3 -m venv .venv && .venv/bin/pip install -q -e '.[test]'"
AGENT = "echo '# touched' >> README.md"


def sh(*cmd: str, cwd: Path | None = None, env: dict | None = None) -> str:
    return subprocess.run(cmd, cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def project(where: Path, with_setup: bool) -> Path:
    shutil.copytree(FIXTURE, where, ignore=shutil.ignore_patterns("__pycache__", ".venv", "*.egg-info"))
    if not with_setup:
        (where / "toren.toml").unlink()
    sh("git", "init", "-q", "-b", "main", cwd=where)
    sh("git", "add", "-A", cwd=where)
    sh("git", "-c", "user.name=b", "-c", "user.email=b@x", "commit", "-qm", "init", cwd=where)
    return where


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--first-runs", type=int, default=3)
    ap.add_argument("--image", default=os.environ.get("TOREN_TEST_PYTHON_IMAGE", "toren/base-python:bookworm"))
    args = ap.parse_args()
    sh(str(ROOT / "scripts" / "build-python-image.sh"), env={**os.environ, "TOREN_PYTHON_IMAGE": args.image})

    tmp = Path(tempfile.mkdtemp(prefix="toren-bench-setup-"))
    plain, prepared = project(tmp / "plain", False), project(tmp / "prepared", True)
    (tmp / "task.md").write_text("# Touch the README\n")
    home = tmp / "home"
    env = {**os.environ, "TOREN_HOME": str(home), "PYTHONPATH": str(ROOT)}
    toren = [sys.executable, "-m", "toren_action"]
    count = [0]

    def job(repo: Path) -> tuple[float, dict]:
        """One `toren run` (its wall time) and its record."""
        count[0] += 1
        took = timed(lambda: sh(*toren, "run", "--repo", str(repo), "--spec", str(tmp / "task.md"), "--branch",
                                f"bench/{count[0]}", "--agent", "shell", "--command", AGENT, "--base-image",
                                args.image, "--network", "none", "--disable-daemon", "-q", env=env))
        return took, json.loads(sh(*toren, "status", "--json", "--limit", "1", env=env))[0]

    def forget_cache() -> None:
        sys.path.insert(0, str(ROOT))
        from toren_action.job import setup
        from toren_action.sandbox import container

        setup.prune(container.client(), home, None, False)

    try:
        job(plain)  # warm: agent image built, mirrors made
        agent_image = json.loads(sh(*toren, "status", "--json", "--limit", "1", env=env))[0]["image"]

        # the setup command's own time: a bare docker run of it in a fresh clone, same image, user, network
        own = []
        for i in range(args.first_runs):
            clone = tmp / f"own-{i}"
            sh("git", "clone", "-q", str(prepared), str(clone))
            if os.geteuid() == 0:  # the agent's user writes the .venv, as in a job
                sh("chown", "-R", "1000:1000", str(clone))
            own.append(timed(lambda c=clone: sh("docker", "run", "--rm", "--user", "1000:1000", "-v",
                                                f"{c}:/workspace", "-w", "/workspace", agent_image, "sh", "-c",
                                                SETUP)))
            shutil.rmtree(clone, ignore_errors=True)

        first_runs, recorded, plain_runs = [], [], []
        for _ in range(args.first_runs):
            forget_cache()
            took, record = job(prepared)
            assert record["setup"]["cache"] == "miss", record["setup"]
            first_runs.append(took)
            recorded.append((record["setup"]["duration_s"], record["setup"]["command_s"]))
            plain_runs.append(job(plain)[0])

        hit_runs, hit_stage = [], []
        for _ in range(args.runs):  # interleaved, so that the machine's load falls on both alike
            took, record = job(prepared)
            assert record["setup"]["cache"] == "hit", record["setup"]
            hit_runs.append(took)
            hit_stage.append(record["setup"]["duration_s"])
            plain_runs.append(job(plain)[0])
    finally:
        try:
            forget_cache()
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    med = statistics.median
    base, hit, first, own_t = med(plain_runs), med(hit_runs), med(first_runs), med(own)
    print(f"warm job, no setup ({len(plain_runs)} runs):              {base * 1000:7.0f} ms")
    print(f"warm job, prepared environment cached ({args.runs} runs): {hit * 1000:7.0f} ms  "
          f"({(hit / base - 1) * 100:+.1f}%; target <= +10%)")
    print(f"setup command alone, docker run ({args.first_runs} runs):   {own_t * 1000:7.0f} ms")
    print(f"first job, setup run and kept ({args.first_runs} runs):     {first * 1000:7.0f} ms  "
          f"(over a job without setup: {(first - base) * 1000:.0f} ms, the setup's own "
          f"{own_t * 1000:.0f} ms {'+' if first - base >= own_t else '-'} {abs(first - base - own_t) * 1000:.0f} ms; "
          "target <= +2000 ms)")
    stage = med([d for d, _ in recorded])
    overhead = med([d - c for d, c in recorded])
    print(f"  the setup stage in those jobs: {stage * 1000:.0f} ms, of which the setup's container "
          f"{med([c for _, c in recorded]) * 1000:.0f} ms; Toren's part (key, commit, keeping, linking) "
          f"{overhead * 1000:.0f} ms (target <= +2000 ms)")
    print(f"  the setup stage in the cached jobs (key, checks, links): {med(hit_stage) * 1000:.0f} ms")

if __name__ == "__main__":
    main()
