"""Background jobs, measured: how fast `toren run` returns, how fast `toren status` is with 10,000 jobs in the
store, and how long a line takes from the agent's container to `toren logs --follow`. Prints figures; asserts
nothing.

    .venv/bin/python bench/bench_background.py [--runs 10] [--image toren/base:bookworm]
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


def sh(*cmd: str, cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, env=env, check=True, capture_output=True, text=True)


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--image", default=os.environ.get("TOREN_BASE_IMAGE", "toren/base:bookworm"))
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="toren-bench-bg-"))
    repo = tmp / "repo"
    repo.mkdir()
    (repo / "a.txt").write_text("a\n")
    sh("git", "init", "-q", "-b", "main", cwd=repo)
    sh("git", "add", "-A", cwd=repo)
    sh("git", "-c", "user.name=b", "-c", "user.email=b@x", "commit", "-qm", "init", cwd=repo)
    (tmp / "task.md").write_text("# Bench\n")
    env = {**os.environ, "TOREN_HOME": str(tmp / "home"), "TOREN_WORKER_IDLE_S": "5"}
    toren = [sys.executable, "-m", "toren_action"]

    def submit(branch: str, command: str) -> str:
        return sh(*toren, "run", "--repo", str(repo), "--spec", str(tmp / "task.md"), "--branch", branch,
                  "--agent", "shell", "--command", command, "--base-image", args.image, env=env).stdout.strip()

    def wait(job_id: str) -> None:
        subprocess.run([*toren, "logs", job_id, "--follow"], env=env, capture_output=True, check=False)

    wait(submit("bench/warm", "true"))  # image, mirror, worker warm
    returns = []
    for i in range(args.runs):
        t = time.perf_counter()
        job_id = submit(f"bench/bg-{i}", "true")
        returns.append(time.perf_counter() - t)
        wait(job_id)

    # logs --follow latency: the container prints its clock; the follower compares with its own
    job_id = submit("bench/follow", "for i in $(seq 1 20); do echo \"T $(date +%s.%N)\"; sleep 0.25; done")
    proc = subprocess.Popen([*toren, "logs", job_id, "--follow"], env=env, stdout=subprocess.PIPE, text=True)
    latencies = []
    for line in proc.stdout:
        now = time.time()
        if line.lstrip("│ ").startswith("T ") or " T " in line:
            try:
                latencies.append(now - float(line.split("T ", 1)[1].split()[0]))
            except (IndexError, ValueError):
                pass
    proc.wait()

    # toren status with 10,000 jobs
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from toren_action.jobs.store import Store, new_job_id

    store = Store(tmp / "home")
    now = time.time()
    rows = []
    for i in range(10_000):
        jid = new_job_id(now - 86400 + i)
        rows.append((jid, now - 86400 + i, now - 86400 + i, "succeeded", str(repo), f"old/{i}", "shell", None,
                     args.image, json.dumps({"spec": "task.md"})))
    with store._tx() as conn:
        conn.executemany("INSERT INTO jobs (id, created_at, updated_at, state, repo, branch, agent, model, "
                         "base_image, inputs) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    status_t = [timed(lambda: sh(*toren, "status", env=env)) for _ in range(args.runs)]
    status_json_t = [timed(lambda: sh(*toren, "status", "--json", "--limit", "1000", env=env))
                     for _ in range(args.runs)]

    print(f"runs: {args.runs}, image: {args.image}")
    print(f"toren run, background, returns after      median {statistics.median(returns) * 1000:6.0f} ms")
    if latencies:
        latencies.sort()
        p95 = latencies[int(len(latencies) * 0.95) - 1]
        print(f"logs --follow, container line to screen  median {statistics.median(latencies) * 1000:6.0f} ms, "
              f"p95 {p95 * 1000:.0f} ms ({len(latencies)} lines)")
    print(f"toren status, 10,000+ jobs (50 shown)     median {statistics.median(status_t) * 1000:6.0f} ms")
    print(f"toren status --json --limit 1000           median {statistics.median(status_json_t) * 1000:6.0f} ms")
    sh("rm", "-rf", str(tmp))


if __name__ == "__main__":
    main()
