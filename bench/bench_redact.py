"""How fast the redactor is: every known secret value plus the known token formats, over log-like text.
It sits on the live log stream, so it must keep up with any agent (target: 100 MB/s and more). Prints
figures; asserts nothing.

    .venv/bin/python bench/bench_redact.py
"""

from __future__ import annotations

import random
import string
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from toren_action.core.redact import Redactor, Secret  # noqa: E402


def main() -> None:
    random.seed(1)
    line = "2026-11-25 12:00:00 INFO step %d: wrote %s.py (%d bytes), ran `pytest -q tests/` in %s ms\n"
    text = "".join(line % (i, "".join(random.choices(string.ascii_lowercase, k=10)), i * 7, i % 997)  # noqa: S311
                   for i in range(250_000))
    leaky = text[: len(text) // 2] + "token ghp_" + "A" * 36 + "\n" + text[len(text) // 2:]
    secrets = [Secret(f"S{i}", "sk-ant-" + "".join(random.choices(string.ascii_letters, k=40)))  # noqa: S311
               for i in range(8)]
    redact = Redactor(secrets)
    mb = len(text) / 1e6
    for name, data in (("clean log", text), ("log with one token", leaky)):
        best = min(_timed(lambda d=data: redact(d)) for _ in range(3))
        print(f"{name:<22} {mb:5.1f} MB  {mb / best:6.0f} MB/s (whole text)")
    chunks = [text[i:i + 65536] for i in range(0, len(text), 65536)]
    best = min(_timed(lambda: [redact(c) for c in chunks]) for _ in range(3))
    print(f"{'64 KiB chunks':<22} {mb:5.1f} MB  {mb / best:6.0f} MB/s")
    lines = text.splitlines()
    best = min(_timed(lambda: [redact(ln) for ln in lines]) for _ in range(3))
    print(f"{'line by line':<22} {len(lines)} lines  {len(lines) / best / 1000:6.0f} k lines/s ({mb / best:.0f} MB/s)")


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


if __name__ == "__main__":
    main()
