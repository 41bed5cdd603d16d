"""A race, measured: 4 shell attempts as one race (`toren run --attempts 4 --disable-daemon`) against 4 single
jobs of the same work submitted to the worker, TOREN_MAX_JOBS at a time, from submission to the last end. Also
counts the work a race does once (mirror fetches, image builds) from its counters and its attempts' logs.
Prints figures; asserts nothing.

    .venv/bin/python bench/bench_race.py [--runs 3] [--max-jobs 2] [--image toren/base:bookworm]
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

#: Each attempt (and each single job) does the same: a second of work and a one-line change.
WORK = 'sleep 1; echo "$TOREN_ATTEMPT" > attempt.txt'


def sh(*cmd: str, cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, env=env, check=True, capture_output=True, text=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--max-jobs", type=int, default=2)
    ap.add_argument("--image", default=os.environ.get("TOREN_BASE_IMAGE", "toren/base:bookworm"))
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="toren-bench-race-"))
    repo = tmp / "repo"
    repo.mkdir()
    (repo / "a.txt").write_text("a\n")
    sh("git", "init", "-q", "-b", "main", cwd=repo)
    sh("git", "add", "-A", cwd=repo)
    sh("git", "-c", "user.name=b", "-c", "user.email=b@x", "commit", "-qm", "init", cwd=repo)
    (tmp / "task.md").write_text("# Bench\n")
    home = tmp / "home"
    env = {**os.environ, "TOREN_HOME": str(home), "TOREN_WORKER_IDLE_S": "30", "TOREN_MAX_JOBS": str(args.max_jobs),
           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    toren = [sys.executable, "-m", "toren_action"]
    common = ["--repo", str(repo), "--spec", str(tmp / "task.md"), "--agent", "shell", "--base-image", args.image,
              "--verify", "test -s attempt.txt"]

    def singles(run: int) -> float:
        t = time.perf_counter()
        ids = [sh(*toren, "run", *common, "--branch", f"bench/single-{run}-{n}", "--command",
                  WORK.replace("$TOREN_ATTEMPT", str(n)), env=env).stdout.strip() for n in range(1, 5)]
        for job_id in ids:
            subprocess.run([*toren, "logs", job_id, "--follow"], env=env, capture_output=True, check=False)
        return time.perf_counter() - t

    def race(run: int) -> tuple[float, dict]:
        t = time.perf_counter()
        out = sh(*toren, "run", *common, "--branch", f"bench/race-{run}", "--command", WORK, "--attempts", "4",
                 "--keep-attempts", "--disable-daemon", "--json", env=env).stdout
        return time.perf_counter() - t, json.loads(out)

    singles(0)  # image, mirror and worker warm
    single_t, race_t, results = [], [], []
    for run in range(1, args.runs + 1):
        single_t.append(singles(run))
        took, result = race(run)
        race_t.append(took)
        results.append(result)

    last = results[-1]
    logs = [(home / "jobs" / a["job_id"] / "job.log").read_text() for a in last["attempts"]]
    fetched_by_attempts = sum(log.count("cloning") and "the race's mirror" not in log for log in logs)
    race_log = (home / "races" / last["race_id"] / "race.log").read_text()
    print(f"runs: {args.runs}, TOREN_MAX_JOBS {args.max_jobs}, image: {args.image}, {os.cpu_count()} cores")
    print(f"4 single jobs, submitted to the worker     median {statistics.median(single_t):6.2f} s "
          f"({', '.join(f'{x:.2f}' for x in single_t)})")
    print(f"a race of 4 attempts (--disable-daemon)    median {statistics.median(race_t):6.2f} s "
          f"({', '.join(f'{x:.2f}' for x in race_t)})")
    print(f"race / singles                             {statistics.median(race_t) / statistics.median(single_t):.2f}")
    print(f"the race's counters: {last['counters']}; mirror lines in its log: {race_log.count('mirror: fetched')}, "
          f"image lines: {race_log.count('image: ')}; attempts that fetched the mirror themselves: "
          f"{fetched_by_attempts}; attempts that used the race's: "
          f"{sum(1 for log in logs if 'the race' in log and 'mirror, fetched once' in log)}")
    print(f"winner: attempt {last['winner']} ({last['choice']['why']})")
    sh("rm", "-rf", str(tmp))


if __name__ == "__main__":
    main()
