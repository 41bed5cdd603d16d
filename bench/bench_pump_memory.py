"""The host process while the agent's container floods its output: peak resident memory and time while a
container prints 1 GiB without a newline (and, for comparison, 1 GiB in short lines), next to an idle container
as the baseline. Each case runs in a fresh Python process so its peak is its own. Prints figures; asserts
nothing.

    .venv/bin/python bench/bench_pump_memory.py [--mib 1024] [--image toren/base:bookworm]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, resource, sys, time
from toren_action.sandbox import container
from toren_action.sandbox.container import ContainerSpec


def status(key):
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith(key + ":"))


client = container.client()
with open("/proc/self/clear_refs", "w") as fh:
    fh.write("5")  # the peak (VmHWM) starts again from here: imports and the client are not counted
before = status("VmRSS")
seen = {"lines": 0, "bytes": 0}


def on_line(line):
    seen["lines"] += 1
    seen["bytes"] += len(line)


spec = ContainerSpec(image=sys.argv[1], command=["/bin/sh", "-c", sys.argv[2]], job_id=sys.argv[3],
                     user="65534:65534", mounts=[], timeout_s=3600, name=sys.argv[3], role="bench")
cpu, t = time.process_time(), time.monotonic()
container.run(client, spec, on_line)
seen.update(seconds=time.monotonic() - t, cpu_s=time.process_time() - cpu, rss_before_kib=before,
            peak_kib=status("VmHWM"))
print(json.dumps(seen))
"""


def case(image: str, command: str) -> dict:
    name = f"toren-bench-pump-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", CHILD, image, command, name], env=env, capture_output=True,
                          text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mib", type=int, default=1024)
    ap.add_argument("--image", default=os.environ.get("TOREN_BASE_IMAGE", "toren/base:bookworm"))
    args = ap.parse_args()
    n = args.mib << 20
    cases = {
        "idle (sleep 2)": "sleep 2",
        f"{args.mib} MiB without a newline": f"head -c {n} /dev/zero | tr '\\0' a",
        f"{args.mib} MiB in 64-byte lines": f"yes {'b' * 63} | head -c {n}",
    }
    print(f"{'case':34} {'seconds':>8} {'CPU s':>6} {'peak RSS':>9} {'growth':>8} {'lines':>9}")
    for label, command in cases.items():
        r = case(args.image, command)
        print(f"{label:34} {r['seconds']:8.1f} {r['cpu_s']:6.1f} {r['peak_kib'] / 1024:7.1f} M "
              f"{(r['peak_kib'] - r['rss_before_kib']) / 1024:+6.1f} M {r['lines']:9d}")


if __name__ == "__main__":
    main()
