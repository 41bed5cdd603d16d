"""Static security analysis of the files the agent changed, on the host, before the push: bandit for Python
(as the original tool did) when it is installed. Medium and high findings go to the log, the job's events and
the pull request body; they block the push only with ``fail_on``."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

SEVERITY = {"LOW": 1, "MEDIUM": 2, "HIGH": 3}


@dataclass(frozen=True)
class CodeFinding:
    tool: str
    severity: str
    path: str
    line: int
    test: str
    text: str

    def __str__(self) -> str:
        return f"{self.severity.lower()}: {self.path}:{self.line}: {self.test}: {self.text}"


def bandit_command() -> list[str] | None:
    exe = Path(sys.executable).parent / "bandit"
    if exe.exists():
        return [str(exe)]
    found = shutil.which("bandit")
    return [found] if found else None


#: A bandit process started ahead of time: it loads bandit and its plugins (about 150 ms, all of bandit's own
#: run time on a few files) while the agent runs, then runs bandit's own command line once on the request it
#: reads from standard input.
_WARM_BANDIT = """
import json, os, sys
from bandit.cli import main
import bandit.core.extension_loader
request = json.loads(sys.stdin.readline() or "null")
if request:
    os.chdir(request["cwd"])
    sys.argv = ["bandit", *request["argv"]]
    code = 0
    try:
        main.main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except ValueError:  # closed: bandit's JSON report closes the stream it wrote
            pass
    os._exit(code)  # at once: unloading bandit and its plugins (about 30 ms) is not worth waiting for
"""


class WarmBandit:
    """bandit, loaded before it is needed: ``start`` it when the agent starts; ``run`` gives it its files (at
    most once); ``close`` ends it whatever happened. Without bandit importable by this interpreter it does
    nothing, and the scan runs bandit's command as usual."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen | None = None

    def start(self) -> WarmBandit:
        import importlib.util

        if bandit_command() is not None and importlib.util.find_spec("bandit") is not None:
            self._proc = subprocess.Popen([sys.executable, "-c", _WARM_BANDIT], stdin=subprocess.PIPE,
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        return self

    def run(self, workdir: Path, argv: list[str], timeout: float) -> subprocess.CompletedProcess | None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return None
        try:
            out, err = proc.communicate(json.dumps({"cwd": str(workdir), "argv": argv}) + "\n", timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)

    def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.communicate()


def scan(workdir: Path, files: list[str], warm: WarmBandit | None = None) -> tuple[list[CodeFinding], str]:
    """(medium and high findings, a line saying what ran): bandit on Python files, semgrep on every changed
    file when it is on PATH (its rules from TOREN_SEMGREP_CONFIG, default `auto`). ``warm``: a bandit already
    loaded (WarmBandit), used when it is there."""
    regular = [f for f in files if (workdir / f).is_file() and not (workdir / f).is_symlink()]
    found, said = _bandit(workdir, [f for f in regular if f.endswith(".py")], warm)
    if shutil.which("semgrep") and regular:
        more, line = _semgrep(workdir, regular)
        found, said = found + more, f"{said}; {line}"
    return found, said


def _semgrep(workdir: Path, files: list[str]) -> tuple[list[CodeFinding], str]:
    import os

    config = os.environ.get("TOREN_SEMGREP_CONFIG", "auto")
    proc = subprocess.run(["semgrep", "scan", "--quiet", "--json", "--disable-nosem", "--config", config, "--",
                           *files], cwd=workdir, capture_output=True, text=True, timeout=600, check=False)
    found = parse_semgrep(proc.stdout)
    if found is None:
        return [], f"semgrep failed: {(proc.stderr or proc.stdout).strip()[:200]}"
    return found, f"semgrep ({config}): {len(found)} medium or high finding(s)"


def parse_semgrep(stdout: str) -> list[CodeFinding] | None:
    """The medium and high findings in ``semgrep --json`` output (ERROR is high, WARNING medium, INFO low);
    None when the output is not JSON (semgrep failed)."""
    try:
        results = json.loads(stdout or "{}").get("results", [])
    except ValueError:
        return None
    levels = {"ERROR": "HIGH", "WARNING": "MEDIUM", "INFO": "LOW"}
    found = [CodeFinding("semgrep", levels.get(r.get("extra", {}).get("severity", "INFO"), "LOW"), r.get("path", ""),
                         int(r.get("start", {}).get("line", 0)), r.get("check_id", ""),
                         " ".join(str(r.get("extra", {}).get("message", "")).split())[:200])
             for r in results]
    return [f for f in found if SEVERITY.get(f.severity, 1) >= 2]


def _bandit(workdir: Path, python: list[str], warm: WarmBandit | None = None) -> tuple[list[CodeFinding], str]:
    if not python:
        return [], "no Python files changed"
    cmd = bandit_command()
    if cmd is None:
        return [], "bandit is not installed (pip install bandit): the code scan was skipped"
    # --ignore-nosec: a `# nosec` comment is the agent's own word about its code, and counts for nothing
    argv = ["-q", "-f", "json", "-ll", "--ignore-nosec", "--", *python]
    proc = warm.run(workdir, argv, timeout=300) if warm is not None else None
    if proc is None or parse_bandit(proc.stdout) is None:  # no warm bandit, or it failed: bandit's command
        proc = subprocess.run([*cmd, *argv], cwd=workdir, capture_output=True, text=True, timeout=300, check=False)
    found = parse_bandit(proc.stdout)
    if found is None:
        return [], f"bandit failed: {(proc.stderr or proc.stdout).strip()[:200]}"
    return found, f"bandit on {len(python)} Python file(s): {len(found)} medium or high finding(s)"


def parse_bandit(stdout: str) -> list[CodeFinding] | None:
    """The medium and high findings in ``bandit -f json`` output; None when the output is not JSON (bandit
    failed)."""
    try:
        results = json.loads(stdout or "{}").get("results", [])
    except ValueError:
        return None
    return [CodeFinding("bandit", r.get("issue_severity", "LOW"), r.get("filename", ""), int(r.get("line_number", 0)),
                        f"{r.get('test_id')} {r.get('test_name')}", " ".join(str(r.get("issue_text", "")).split()))
            for r in results if SEVERITY.get(r.get("issue_severity", "LOW"), 1) >= 2]


def blocking(findings: list[CodeFinding], fail_on: str) -> list[CodeFinding]:
    if fail_on == "none":
        return []
    return [f for f in findings if SEVERITY.get(f.severity, 1) >= SEVERITY[fail_on.upper()]]
