"""--verify as test results: run the command on a clean copy of a commit, read which tests passed and failed,
and judge the change against the base commit.

A run of the command is read, in this order, from: the JUnit XML files ``--verify-junit GLOB`` names (or, when the
command runs pytest and no glob is given, the JUnit file Toren asks pytest for), read with junitparser after
defusedxml parsed them (no DTD, no entity, no external reference); else the summary lines of pytest, unittest,
cargo test, jest/vitest and go test in its output; else its exit code alone. Everything the command writes is
the repository's (and so possibly the agent's) text: each file, each line, each test id and the number of tests
is bounded, and no file is read through a link.

With ``--verify-baseline`` the same command runs first on the base commit, in the same image, environment,
mounts and timeout; each test is then fixed (failed at the base, passes now), broken (did not fail at the base,
fails now: a new failing test is broken too), still failing or still passing. The change passes when nothing
is broken and the command passes, or, with ``--verify-allow-preexisting``, when every failing test is named
and already failed at the base.
"""

from __future__ import annotations

import fnmatch
import os
import re
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toren_action.core import texts
from toren_action.core.errors import JobTimedOut, UsageError
from toren_action.core.patterns import lazy

#: Bounds on what a run of the command may make Toren read or keep.
MAX_JUNIT_FILE_BYTES = 10 << 20
MAX_JUNIT_FILES = 20
MAX_JUNIT_TOTAL_BYTES = 20 << 20  # all files of one run together
MAX_JUNIT_DEPTH = 32  # nested <testsuite> levels (junitparser walks them recursively)
MAX_CASES = 20_000
MAX_ID_CHARS = 300
MAX_LISTED = 50  # test ids per list in the job record
MAX_LINE_CHARS = 2_000
TAIL_LINES = 60
TAIL_CHARS = 6_000
MAX_MESSAGES = 20
MAX_MESSAGE_CHARS = 1_500
MAX_TREE_ENTRIES = 200_000  # directory entries a --verify-junit glob walks
MAX_ROUNDS = 5  # --verify-retries at most (the schema's maximum)
MAX_REPORT_CHARS = 20_000  # what the agent is told of a failed verification
MAX_PREVIOUS_CHARS = 4_000  # and of what it said of its last round
#: The prompt of a retry round: the task, then this heading and the failure report.
RETRY_HEADING = "\n\n## Toren: the verification of your change failed"

#: Where the container writes the JUnit file Toren asks pytest for (a directory of the job's, mounted there).
RESULTS_MOUNT = "/run/toren/verify-results"
PYTEST_JUNIT = f"{RESULTS_MOUNT}/pytest-junit.xml"

PASSED, FAILED, SKIPPED = "passed", "failed", "skipped"
SOURCES = ("junit", "pytest", "unittest", "go", "cargo", "jest", "exit-code")
_PYTEST_WORD = lazy(r"(?:^|[\s;&|(/'\"])(?:py\.test|pytest)(?=$|[\s;&|)'\"])|-m\s+pytest\b")


def runs_pytest(command: str) -> bool:
    """Whether ``command`` runs pytest (``pytest``, ``py.test``, ``python -m pytest``, a path ending in one)."""
    return bool(_PYTEST_WORD.search(command))


def check_junit_glob(pattern: str, option: str = "--verify-junit") -> str:
    """A glob relative to the repository: not absolute, no '..', no control character."""
    parts = pattern.split("/")
    if pattern.startswith("/") or any(p == ".." for p in parts) or re.search(r"[\x00-\x1f\x7f\\]", pattern):
        raise UsageError(option, f"{pattern!r} must be a glob relative to the repository, without '..' (e.g. "
                                 "'build/test-results/*.xml')")
    return pattern


def _cut_id(test_id: str) -> str:
    test_id = texts.one_line(test_id.strip())
    return test_id if len(test_id) <= MAX_ID_CHARS else test_id[:MAX_ID_CHARS - 1] + "…"


# -- one run's results -------------------------------------------------------------------------------------------

@dataclass
class TestRun:
    """What one run of the command showed: its exit code and time, and the tests it reported (``cases``: id ->
    passed, failed or skipped, for the tests named; ``complete`` when every test it ran is named)."""

    __test__ = False  # not a pytest class

    exit_code: int
    duration_s: float
    source: str = "exit-code"
    cases: dict[str, str] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=lambda: {PASSED: 0, FAILED: 0, SKIPPED: 0, "total": 0})
    complete: bool = False
    timed_out: bool = False
    tail: list[str] = field(default_factory=list)
    messages: dict[str, str] = field(default_factory=dict)  # a failing test's message, bounded
    notes: list[str] = field(default_factory=list)  # files refused, cases cut

    @property
    def failed_ids(self) -> list[str]:
        return sorted(k for k, v in self.cases.items() if v == FAILED)

    def to_dict(self) -> dict[str, Any]:
        return {"exit_code": self.exit_code, "duration_s": round(self.duration_s, 3), "source": self.source,
                "counts": dict(self.counts)}


def _add_case(cases: dict[str, str], test_id: str, status: str) -> bool:
    """One test's result (a test reported twice is failed if either said so); False once MAX_CASES are held."""
    test_id = _cut_id(test_id)
    if test_id not in cases and len(cases) >= MAX_CASES:
        return False
    if cases.get(test_id) != FAILED:
        cases[test_id] = status
    return True


def _counted(cases: dict[str, str]) -> dict[str, int]:
    counts = {PASSED: 0, FAILED: 0, SKIPPED: 0}
    for status in cases.values():
        counts[status] += 1
    return {**counts, "total": len(cases)}


# -- JUnit XML ---------------------------------------------------------------------------------------------------

class JUnitError(ValueError):
    """A JUnit file Toren will not read (a DTD, an entity, malformed, too deep)."""


def parse_junit(data: bytes, cases: dict[str, str], messages: dict[str, str]) -> int:
    """Add the test cases of one JUnit XML document to ``cases``; the number read. defusedxml parses it (a DTD,
    an entity declaration or an external reference is refused: no billion laughs, no file or URL read);
    junitparser reads the tree."""
    from xml.etree.ElementTree import ParseError  # nosec B405 - only its error type; defusedxml parses

    from defusedxml import DefusedXmlException
    from defusedxml.ElementTree import fromstring
    from junitparser import Error, Failure, JUnitXml, JUnitXmlError

    try:
        root = fromstring(data, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except (DefusedXmlException, ParseError, ValueError) as exc:
        raise JUnitError(f"{exc.__class__.__name__}: {str(exc)[:200]}") from None
    _check_depth(root)
    try:
        xml = JUnitXml.fromroot(root)
    except JUnitXmlError as exc:
        raise JUnitError(str(exc)[:200]) from None
    read = 0
    for suite in xml:
        for case in suite:
            name, classname = case.name or "", case.classname or ""
            test_id = f"{classname}.{name}" if classname and name else classname or name or "(unnamed)"
            results = case.result
            failed = any(isinstance(r, (Failure, Error)) for r in results)
            status = FAILED if failed else SKIPPED if results else PASSED
            if not _add_case(cases, test_id, status):
                return read
            read += 1
            if failed and len(messages) < MAX_MESSAGES:
                r = next(r for r in results if isinstance(r, (Failure, Error)))
                text = "\n".join(t for t in (r.message, r.text) if t)
                messages.setdefault(_cut_id(test_id), texts.terminal(text)[-MAX_MESSAGE_CHARS:])
    return read


def _check_depth(root) -> None:
    """Refuse a document whose suites nest deeper than MAX_JUNIT_DEPTH (walked without recursion)."""
    stack = [(root, 0)]
    while stack:
        elem, depth = stack.pop()
        if depth > MAX_JUNIT_DEPTH:
            raise JUnitError(f"elements nest deeper than {MAX_JUNIT_DEPTH} levels")
        stack.extend((child, depth + 1) for child in elem)


def junit_files(root: Path, pattern: str) -> list[str]:
    """The regular files under ``root`` (relative, sorted) whose path matches ``pattern``; links neither
    followed nor matched; at most MAX_TREE_ENTRIES entries looked at."""
    found: list[str] = []
    seen = 0
    for dirpath, dirs, files in os.walk(root):  # does not follow links to directories
        rel = os.path.relpath(dirpath, root)
        if rel == "." and ".git" in dirs:
            dirs.remove(".git")
        for name in files:
            seen += 1
            if seen > MAX_TREE_ENTRIES:
                return sorted(found)
            path = name if rel == "." else f"{rel}/{name}"
            if fnmatch.fnmatchcase(path, pattern) and not os.path.islink(os.path.join(dirpath, name)):
                found.append(path)
        seen += len(dirs)
    return sorted(found)


def read_junit(root: Path, paths: Iterable[str], run: TestRun) -> bool:
    """Read the JUnit files ``paths`` under ``root`` into ``run``; True when any was read."""
    from toren_action.core.paths import read_bounded

    cases: dict[str, str] = {}
    read_any, total = False, 0
    for i, path in enumerate(paths):
        if i >= MAX_JUNIT_FILES:
            run.notes.append(f"more than {MAX_JUNIT_FILES} JUnit files; the rest were not read")
            break
        if total >= MAX_JUNIT_TOTAL_BYTES:
            run.notes.append(f"more than {MAX_JUNIT_TOTAL_BYTES >> 20} MiB of JUnit files; the rest were not read")
            break
        data = read_bounded(root, path, min(MAX_JUNIT_FILE_BYTES, MAX_JUNIT_TOTAL_BYTES - total) + 1)
        if data is None:
            run.notes.append(f"{texts.one_line(path)[:200]}: not a regular file; not read")
            continue
        if len(data) > min(MAX_JUNIT_FILE_BYTES, MAX_JUNIT_TOTAL_BYTES - total):
            run.notes.append(f"{texts.one_line(path)[:200]}: larger than {MAX_JUNIT_FILE_BYTES >> 20} MiB (or than "
                             "what is left of the run's JUnit bound); not read")
            continue
        total += len(data)
        try:
            parse_junit(data, cases, run.messages)
        except JUnitError as exc:
            run.notes.append(f"{texts.one_line(path)[:200]}: not read as JUnit XML ({exc})")
            continue
        read_any = True
        if len(cases) >= MAX_CASES:
            run.notes.append(f"more than {MAX_CASES} test cases; the rest were not read")
            break
    if read_any:
        run.source, run.cases, run.counts = "junit", cases, _counted(cases)
        run.complete = len(cases) < MAX_CASES
    return read_any


# -- summary lines -----------------------------------------------------------------------------------------------

_PYTEST_FINAL = lazy(r"^=*\s*((?:\d+ [a-z]+(?:, )?)+) in [\d.]+s\b.*$")
_PYTEST_PART = lazy(r"(?<!\d)(\d+) (passed|failed|skipped|errors?|xfailed|xpassed)\b")
_PYTEST_LINE = lazy(r"^(FAILED|ERROR) ([^\s(].*?)(?: - .*)?$")
_PYTEST_STATUS = lazy(r" (PASSED|FAILED|SKIPPED|ERROR|XFAIL|XPASS)\b")
_UNITTEST_RAN = lazy(r"^Ran (\d+) tests? in [\d.]+s$")
_UNITTEST_END = lazy(r"^(OK|FAILED)(?: \((.*)\))?$")
_UNITTEST_HEAD = lazy(r"^(FAIL|ERROR): (\S+) \((\S+?)\)")
_UNITTEST_VERBOSE = lazy(r"^(\S+) \((\S+?)\)(?: .*?)? \.\.\. (ok|FAIL|ERROR|skipped|expected failure|"
                               r"unexpected success)")
_GO_CASE = lazy(r"^\s*--- (PASS|FAIL|SKIP): (\S+) \([\d.]+s\)$")
_GO_PACKAGE = lazy(r"^(ok|FAIL)\s+(\S+)\s+(?:[\d.]+s|\(cached\))")
_CARGO_CASE = lazy(r"^test (.+?) \.\.\. (ok|FAILED|ignored)\b")
_CARGO_RESULT = lazy(r"^test result: (?:ok|FAILED)\. (\d+) passed; (\d+) failed; (\d+) ignored;")
_JEST_TESTS = lazy(r"^Tests:\s+(\S.*\d+ total)$")  # the line is right-stripped
_JEST_PART = lazy(r"(?<!\d)(\d+) (failed|passed|skipped|todo|pending|total)\b")
_JEST_FAILING = lazy(r"^\s+● (.+? › .+)$")
_ANSI = lazy(r"\x1b\[[0-9;?]*[A-Za-z]")


class SummaryReader:
    """Fed the command's output line by line; remembers only what the summary lines say (bounded) and the
    output's tail."""

    def __init__(self) -> None:
        self.tail: deque[str] = deque(maxlen=TAIL_LINES)
        self.pytest: dict[str, Any] = {"final": None, "cases": {}}
        self.unittest: dict[str, Any] = {"ran": None, "end": None, "cases": {}, "verbose": 0}
        self.go: dict[str, Any] = {"cases": {}, "packages": 0, "passes": 0}
        self.cargo: dict[str, Any] = {"results": None, "cases": {}}
        self.jest: dict[str, Any] = {"counts": None, "cases": {}}

    def feed(self, line: str) -> None:
        line = line[:MAX_LINE_CHARS].rstrip()
        if "\x1b" in line:  # colours (jest, vitest, cargo with a terminal)
            line = _ANSI.sub("", line)
        self.tail.append(line)
        if m := _PYTEST_FINAL.match(line):
            parts = {k: int(n) for n, k in _PYTEST_PART.findall(m.group(1))}
            if parts:
                self.pytest["final"] = parts
        elif verbose := _pytest_verbose(line):
            status = {"PASSED": PASSED, "XPASS": PASSED, "SKIPPED": SKIPPED, "XFAIL": SKIPPED}.get(verbose[1], FAILED)
            _add_case(self.pytest["cases"], verbose[0], status)
        elif m := _PYTEST_LINE.match(line):
            _add_case(self.pytest["cases"], m[2], FAILED)
        elif m := _UNITTEST_RAN.match(line):
            self.unittest["ran"] = int(m[1])
        elif (m := _UNITTEST_END.match(line)) and self.unittest["ran"] is not None:
            self.unittest["end"] = {k.strip(): v for k, v in re.findall(r"([a-z ]+)=(\d+)", m[2] or "")}
        elif m := _UNITTEST_HEAD.match(line):
            _add_case(self.unittest["cases"], _unittest_id(m[2], m[3]), FAILED)
        elif m := _UNITTEST_VERBOSE.match(line):
            status = PASSED if m[3] in ("ok", "unexpected success") else FAILED if m[3] in ("FAIL", "ERROR") \
                else SKIPPED
            if m[3] == "unexpected success":
                status = FAILED
            self.unittest["verbose"] += 1
            _add_case(self.unittest["cases"], _unittest_id(m[1], m[2]), status)
        elif m := _GO_CASE.match(line):
            status = {"PASS": PASSED, "FAIL": FAILED, "SKIP": SKIPPED}[m[1]]
            self.go["passes"] += status == PASSED
            _add_case(self.go["cases"], m[2], status)
        elif _GO_PACKAGE.match(line):
            self.go["packages"] += 1
        elif m := _CARGO_RESULT.match(line):
            old = self.cargo["results"] or [0, 0, 0]
            self.cargo["results"] = [old[0] + int(m[1]), old[1] + int(m[2]), old[2] + int(m[3])]
        elif m := _CARGO_CASE.match(line):
            _add_case(self.cargo["cases"], m[1], {"ok": PASSED, "FAILED": FAILED}.get(m[2], SKIPPED))
        elif line.endswith(" total") and (m := _JEST_TESTS.match(line)):
            self.jest["counts"] = {k: int(n) for n, k in _JEST_PART.findall(m[1])}
        elif (vitest := _vitest_tests(line)) and ("passed" in line or "failed" in line):
            counts = {k: int(n) for n, k in _JEST_PART.findall(vitest[0])}
            counts["total"] = vitest[1]
            self.jest["counts"] = counts
        elif failing := _jest_failing(line):
            _add_case(self.jest["cases"], failing, FAILED)

    def result(self, run: TestRun) -> None:
        """Fill ``run`` from the first format whose summary was seen (pytest, unittest, cargo, jest, go)."""
        run.tail = list(self.tail)
        for reader in (self._pytest, self._unittest, self._cargo, self._jest, self._go):
            if reader(run):
                return

    def _pytest(self, run: TestRun) -> bool:
        final = self.pytest["final"]
        if final is None:
            return False
        passed = final.get("passed", 0) + final.get("xpassed", 0)
        failed = final.get("failed", 0) + final.get("error", 0) + final.get("errors", 0)
        skipped = final.get("skipped", 0) + final.get("xfailed", 0)
        _fill(run, "pytest", self.pytest["cases"], passed, failed, skipped)
        return True

    def _unittest(self, run: TestRun) -> bool:
        ran, end = self.unittest["ran"], self.unittest["end"]
        if ran is None or end is None:
            return False
        failed = sum(int(end.get(k, 0)) for k in ("failures", "errors", "unexpected successes"))
        skipped = sum(int(end.get(k, 0)) for k in ("skipped", "expected failures"))
        _fill(run, "unittest", self.unittest["cases"], max(ran - failed - skipped, 0), failed, skipped)
        return True

    def _cargo(self, run: TestRun) -> bool:
        results = self.cargo["results"]
        if results is None:
            return False
        _fill(run, "cargo", self.cargo["cases"], *results)
        return True

    def _jest(self, run: TestRun) -> bool:
        counts = self.jest["counts"]
        if counts is None:
            return False
        skipped = sum(counts.get(k, 0) for k in ("skipped", "todo", "pending"))
        _fill(run, "jest", self.jest["cases"], counts.get("passed", 0), counts.get("failed", 0), skipped)
        return True

    def _go(self, run: TestRun) -> bool:
        cases = self.go["cases"]
        if not cases and not self.go["packages"]:
            return False
        counts = _counted(cases)
        _fill(run, "go", cases, counts[PASSED], counts[FAILED], counts[SKIPPED])
        run.complete = bool(self.go["passes"]) and len(cases) < MAX_CASES  # `go test -v` names every test
        return True


# Lines are the agent's text: where a regex would backtrack over a line (quadratic or worse in its length),
# the line is taken apart by hand, in one pass.

def _pytest_verbose(line: str) -> tuple[str, str] | None:
    """pytest -v's "tests/t.py::test_a[x y] PASSED  [50%]": (the id, the status). The first word holds '::'
    followed by something; the id ends at the first status word after that word."""
    word_end = len(line.split(None, 1)[0]) if line.strip() else 0
    if not line[:1].strip() or line.find("::", 1, max(word_end - 1, 0)) == -1:
        return None
    m = _PYTEST_STATUS.search(line, word_end)
    return (line[:m.start()], m[1]) if m else None


def _jest_failing(line: str) -> str | None:
    """A failing test's header: jest's "  ● suite › name", vitest's " FAIL  file > suite > name"."""
    if m := _JEST_FAILING.match(line):
        return m[1]
    text = line.strip()
    if not text.startswith("FAIL") or not text[4:5].isspace():
        return None
    rest = text[4:].lstrip()
    return rest if rest.find(" > ", 1) != -1 else None


def _vitest_tests(line: str) -> tuple[str, int] | None:
    """vitest's "Tests  1 failed | 2 passed (3)": the counts' text and the total; parsed without a regex (the
    one it replaces backtracked for seconds on a line of spaces: the output is the agent's)."""
    text = line.strip()
    if not text.startswith("Tests") or not text.endswith(")"):
        return None
    head, sep, total = text[:-1].rpartition("(")
    if not sep or not total.isdecimal() or not head[5:6].isspace():
        return None
    return head[5:].strip(), int(total)


def _unittest_id(name: str, where: str) -> str:
    """unittest's "test_x (pkg.mod.Case.test_x)" (3.11+) or "test_x (pkg.mod.Case)" as pkg.mod.Case.test_x."""
    return where if where.endswith("." + name) else f"{where}.{name}"


def _fill(run: TestRun, source: str, cases: dict[str, str], passed: int, failed: int, skipped: int) -> None:
    run.source, run.cases = source, dict(cases)
    run.counts = {PASSED: passed, FAILED: failed, SKIPPED: skipped, "total": passed + failed + skipped}
    named = _counted(cases)
    run.complete = named["total"] == run.counts["total"] and len(cases) < MAX_CASES


# -- judging a change --------------------------------------------------------------------------------------------

@dataclass
class Judgement:
    outcome: str  # passed, failed, error
    reason: str
    fixed: list[str]
    broken: list[str]
    still_failing: list[str]
    still_passing: int


def judge(now: TestRun, base: TestRun | None, allow_preexisting: bool) -> Judgement:
    """Classify each test against the base run (when there is one) and decide the verification's outcome."""
    failing = now.failed_ids
    fixed: list[str] = []
    broken: list[str] = []
    still_failing: list[str] = []
    still_passing = 0
    if base is not None:
        was_failing = set(base.failed_ids)
        broken = [t for t in failing if t not in was_failing]
        still_failing = [t for t in failing if t in was_failing]
        if now.complete:  # a test that failed at the base is fixed when it passes now
            fixed = sorted(t for t in was_failing if now.cases.get(t) == PASSED)
        else:  # only the failures are named: a base failure that no longer fails (and still runs) is fixed
            fixed = sorted(t for t in was_failing if t not in now.cases) if now.counts["total"] else []
        still_passing = sum(1 for t, s in now.cases.items() if s == PASSED and t not in was_failing) \
            if now.complete else max(now.counts[PASSED] - len(fixed), 0)
    failed_count = max(now.counts[FAILED], len(failing))
    if now.timed_out:
        return Judgement("error", "ran past --verify-timeout", fixed, broken, still_failing, still_passing)
    if broken:
        return Judgement("failed", f"broke {len(broken)} test(s) that did not fail on the base commit: "
                         + _names(broken), fixed, broken, still_failing, still_passing)
    if now.exit_code == 0:
        return Judgement("passed", "", fixed, broken, still_failing, still_passing)
    if not now.counts["total"] and not failing:
        return Judgement("error", f"exited with code {now.exit_code} and reported no test results", fixed,
                         broken, still_failing, still_passing)
    if allow_preexisting and base is not None and failing and len(failing) >= failed_count:
        return Judgement("passed", f"only tests that already failed on the base commit fail: {_names(failing)}",
                         fixed, broken, still_failing, still_passing)
    named = f"; failing: {_names(failing)}" if failing else ""
    return Judgement("failed", f"exited with code {now.exit_code}{named}", fixed, broken, still_failing,
                     still_passing)


def _names(ids: list[str], limit: int = 5) -> str:
    shown = ", ".join(ids[:limit])
    return shown + (f" and {len(ids) - limit} more" if len(ids) > limit else "")


def record(command: str, now: TestRun, base: TestRun | None, verdict: Judgement,
           rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """The job record's ``verification`` (JSON): the outcome, the counts, the tests named, the baseline, each
    round."""
    counts = {**now.counts, "fixed": len(verdict.fixed), "broken": len(verdict.broken),
              "still_failing": len(verdict.still_failing), "still_passing": verdict.still_passing}
    return {"command": command, "outcome": verdict.outcome, "reason": verdict.reason, "exit_code": now.exit_code,
            "duration_s": round(now.duration_s, 3), "source": now.source, "counts": counts,
            "fixed": verdict.fixed[:MAX_LISTED], "broken": verdict.broken[:MAX_LISTED],
            "still_failing": verdict.still_failing[:MAX_LISTED], "failing": now.failed_ids[:MAX_LISTED],
            "baseline": None if base is None else {"exit_code": base.exit_code,
                                                   "duration_s": round(base.duration_s, 3),
                                                   "source": base.source, "counts": dict(base.counts)},
            "rounds": rounds, "notes": now.notes[:10]}


def failure_report(run: TestRun, verdict: Judgement) -> str:
    """What the agent is told in its next round: the verdict, the failing tests and their messages, the tail
    of the output (bounded)."""
    lines = [f"The verification command failed: {verdict.reason}."]
    failing = verdict.broken or run.failed_ids
    if failing:
        lines += ["", "Failing tests:", *(f"- {t}" for t in failing[:MAX_LISTED])]
    for test_id in failing[:MAX_MESSAGES]:
        if test_id in run.messages:
            lines += ["", f"{test_id}:", run.messages[test_id]]
    tail = "\n".join(run.tail)[-TAIL_CHARS:]
    if tail:
        lines += ["", "The end of its output:", tail]
    return "\n".join(lines)


def retry_prompt(task: str, report: str, round_no: int, previous: str | None = None,
                 max_bytes: int | None = None) -> str:
    """The task's prompt for round ``round_no``: the task as before, what the agent said of its last round, then
    what failed and what to do; the report (then what the agent said) cut so that the whole is at most
    ``max_bytes`` of UTF-8 (an agent CLI takes its prompt as one argument)."""
    head = (f"{task.rstrip()}{RETRY_HEADING} (round {round_no})\n\n"
            "You already worked on this task: your changes are in /workspace. Toren committed them and ran the "
            "verification command on that commit, and it failed. Fix your change so that the tests below pass "
            "without breaking any other test, then stop.\n\n")
    said = f"What you said at the end of your last round:\n\n{previous.strip()}\n\n" if previous else ""
    report = report.strip() + "\n"
    if max_bytes is not None:
        left = max_bytes - len(head.encode())
        said = _cut_bytes(said, max(left // 4, 0))
        report = _cut_bytes(report, max(left - len(said.encode()), 0))
    return head + said + report


def _cut_bytes(text: str, limit: int) -> str:
    data = text.encode()
    return text if len(data) <= limit else data[:limit].decode("utf-8", errors="ignore")


def run_line(run: TestRun) -> str:
    """One run as one line: its exit code and what its results said."""
    c = run.counts
    said = "timed out" if run.timed_out else f"exit code {run.exit_code}"
    if run.source == "exit-code":
        return f"{said}; no test results read"
    return f"{said}; {c[PASSED]} passed, {c[FAILED]} failed, {c[SKIPPED]} skipped of {c['total']} ({run.source})"


# -- the table ---------------------------------------------------------------------------------------------------

def verification_table_markdown(verification: dict[str, Any] | None) -> str:
    """The verification as Markdown (the pull request, the progress comment, the Action's step summary, `toren
    summary`): one line of outcome, a table of counts (the change, and the base commit with --verify-baseline),
    the tests fixed, broken and still failing. Every value from the run is a code span or a number."""
    if not verification:
        return ""
    v = verification
    counts = v.get("counts") or {}
    base = v.get("baseline")
    outcome = {"passed": "passed ✅", "failed": "failed ❌", "error": "error ❌"}.get(str(v.get("outcome")), "unknown")
    head = f"**Verification** {texts.code(v.get('command', ''))}: {outcome}"
    if v.get("source") and v["source"] in SOURCES:
        head += f" (results from {v['source'] if v['source'] != 'exit-code' else 'the exit code'})"
    lines = [head + ".", ""]
    if base is not None:
        lines += [f"{_int(counts.get('fixed'))} fixed, {_int(counts.get('broken'))} broken, "
                  f"{_int(counts.get('still_failing'))} still failing, {_int(counts.get('still_passing'))} still "
                  "passing.", ""]
    lines += ["| | passed | failed | skipped | total | exit code | duration |", "|---|---|---|---|---|---|---|",
              _row("this change", counts, v)]
    if base is not None:
        lines.append(_row("base commit", base.get("counts") or {}, base))
    for key, title in (("fixed", "Fixed"), ("broken", "Broken"), ("still_failing", "Still failing"),
                       *((("failing", "Failing"),) if base is None else ())):
        ids = [str(t) for t in (v.get(key) or [])][:MAX_LISTED]
        if ids:
            total = counts.get(key, len(ids)) if key != "failing" else counts.get("failed", len(ids))
            more = f" and {_int(total) - len(ids)} more" if isinstance(total, int) and total > len(ids) else ""
            lines += ["", f"{title}: " + ", ".join(texts.code(t) for t in ids) + more]
    rounds = v.get("rounds") or []
    if len(rounds) > 1:
        lines += ["", "Rounds: " + "; ".join(
            f"{_int(r.get('round'))}: {texts.inline(str(r.get('outcome', '')))} "
            f"({_int((r.get('counts') or {}).get('failed'))} failed)" for r in rounds[:MAX_ROUNDS + 1])]
    return "\n".join(lines)


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _row(label: str, counts: dict[str, Any], run: dict[str, Any]) -> str:
    duration = run.get("duration_s")
    shown = f"{duration:.1f} s" if isinstance(duration, (int, float)) else ""
    return (f"| {label} | {_int(counts.get(PASSED))} | {_int(counts.get(FAILED))} | {_int(counts.get(SKIPPED))} | "
            f"{_int(counts.get('total'))} | {_int(run.get('exit_code'))} | {shown} |")


# -- running the command -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Runner:
    """How to run the command once on a tree: ``run(tree, results_dir, env, on_line) -> exit code`` in a
    container like the agent's (run.py builds it), and where the job keeps its directories."""

    command: str
    junit_glob: str | None
    run: Callable[[Path, Path, dict[str, str], Callable[[str], None], str], int]
    job_dir: Path
    log: Callable[[str], None]


def run_once(runner: Runner, tree: Path, name: str) -> TestRun:
    """Run the command on ``tree`` (a fresh export) and read its results."""
    from toren_action.core.paths import remove_tree

    results = runner.job_dir / f"{name}-results"
    remove_tree(results)
    results.mkdir(mode=0o700)
    env: dict[str, str] = {}
    ask_pytest = runner.junit_glob is None and runs_pytest(runner.command)
    if ask_pytest:  # run.py puts it after any PYTEST_ADDOPTS of the user's
        env["PYTEST_ADDOPTS"] = f"--junitxml={PYTEST_JUNIT}"
    # only files this run writes count, never ones the commit holds (which stay: the tests may need them)
    before = _stats(tree, junit_files(tree, runner.junit_glob)) if runner.junit_glob else {}
    reader = SummaryReader()

    def on_line(line: str) -> None:
        runner.log(line)
        reader.feed(line)

    started = time.monotonic()
    run = TestRun(exit_code=-1, duration_s=0.0)
    try:
        run.exit_code = runner.run(tree, results, env, on_line, name)
    except JobTimedOut:
        run.timed_out = True
    run.duration_s = time.monotonic() - started
    reader.result(run)
    if runner.junit_glob:
        found = [p for p, st in _stats(tree, junit_files(tree, runner.junit_glob)).items() if before.get(p) != st]
        if not found:
            run.notes.append(f"the run wrote no file that --verify-junit {texts.one_line(runner.junit_glob)} "
                             "matches")
        read_junit(tree, found, run)
    elif ask_pytest and os.path.lexists(results / Path(PYTEST_JUNIT).name):  # pytest may not have run at all
        read_junit(results, [Path(PYTEST_JUNIT).name], run)
    remove_tree(results)
    for note in run.notes:
        runner.log(f"toren: verify: {note}")
    return run


def verification_line(verification: dict[str, Any]) -> str:
    """One line for a terminal: the outcome, fixed and broken with a baseline, the counts, where they came from."""
    v, counts = verification, verification.get("counts") or {}
    parts = [str(v.get("outcome", "?"))]
    if v.get("baseline") is not None:
        parts.append(f"{_int(counts.get('fixed'))} fixed, {_int(counts.get('broken'))} broken")
    if v.get("source") != "exit-code":
        parts.append(f"{_int(counts.get(PASSED))} passed, {_int(counts.get(FAILED))} failed of "
                     f"{_int(counts.get('total'))} ({v.get('source')})")
    else:
        parts.append(f"exit code {_int(v.get('exit_code'))}")
    return "; ".join(parts)


def _stats(root: Path, paths: list[str]) -> dict[str, tuple[int, int, int]]:
    """Each file's identity and version (inode, size, modification time), to tell what a run wrote."""
    out = {}
    for path in paths:
        try:
            st = os.lstat(root / path)
        except OSError:
            continue
        out[path] = (st.st_ino, st.st_size, st.st_mtime_ns)
    return out
