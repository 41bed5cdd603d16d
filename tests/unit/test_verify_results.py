"""Reading test results (job/verify.py) from real output: pytest, unittest, cargo test, jest and vitest were run
on small projects on this machine and their output recorded under verify_samples/ (go is not installed here:
go-v.txt is written in `go test -v`'s format); hostile and huge JUnit files; the judgement against the base
commit; the table every report shows."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from toren_action.core.errors import UsageError
from toren_action.job import verify
from toren_action.job.verify import FAILED, PASSED, SKIPPED, TestRun

SAMPLES = Path(__file__).parent / "verify_samples"


def read(name: str, exit_code: int = 1) -> TestRun:
    reader = verify.SummaryReader()
    for line in (SAMPLES / name).read_text().splitlines():
        reader.feed(line)
    run = TestRun(exit_code=exit_code, duration_s=0.5)
    reader.result(run)
    return run


def counts(p: int, f: int, s: int) -> dict[str, int]:
    return {PASSED: p, FAILED: f, SKIPPED: s, "total": p + f + s}


@pytest.mark.parametrize("name, source, expected, failing, complete", [
    ("pytest-q.txt", "pytest", counts(3, 2, 1), ["test_sample.py::test_bad", "test_sample.py::test_param[2]"], False),
    ("pytest-v.txt", "pytest", counts(3, 2, 1), ["test_sample.py::test_bad", "test_sample.py::test_param[2]"], True),
    # failures=1, errors=1 fail; skipped=1 and expected failures=1 are skipped
    ("unittest.txt", "unittest", counts(1, 2, 2), ["test_u.TestA.test_error", "test_u.TestA.test_fail"], False),
    ("unittest-v.txt", "unittest", counts(1, 2, 2), ["test_u.TestA.test_error", "test_u.TestA.test_fail"], True),
    ("cargo.txt", "cargo", counts(1, 1, 1), ["tests::it_fails"], True),
    ("cargo-ok.txt", "cargo", counts(3, 0, 1), [], True),  # the unit tests and the doc test, summed
    ("jest.txt", "jest", counts(1, 1, 1), ["math › subtracts"], False),
    ("vitest.txt", "jest", counts(1, 1, 1), ["math.test.mjs > math > subtracts"], False),
    ("go-v.txt", "go", counts(3, 1, 1), ["TestSub"], True),
])
def test_summary_lines_of_each_runner(name, source, expected, failing, complete):
    run = read(name)
    assert run.source == source
    assert run.counts == expected
    assert run.failed_ids == failing
    assert run.complete is complete


def test_output_with_no_known_summary_is_judged_by_its_exit_code():
    reader = verify.SummaryReader()
    for line in ["make: *** [check] Error 2", "FAILED (failures=1)"]:  # a unittest end without its "Ran" line
        reader.feed(line)
    run = TestRun(exit_code=2, duration_s=0.1)
    reader.result(run)
    assert run.source == "exit-code" and run.counts["total"] == 0
    judged = verify.judge(run, None, False)
    assert judged.outcome == "error" and "no test results" in judged.reason


def test_pytest_junit_is_read_with_every_case():
    cases: dict[str, str] = {}
    messages: dict[str, str] = {}
    assert verify.parse_junit((SAMPLES / "pytest-junit.xml").read_bytes(), cases, messages) == 6
    assert cases == {"test_sample.test_ok": PASSED, "test_sample.test_bad": FAILED,
                     "test_sample.test_skipped": SKIPPED, "test_sample.test_param[1]": PASSED,
                     "test_sample.test_param[2]": FAILED, "test_sample.TestGroup.test_in_class": PASSED}
    assert "assert [1, 2] == [1, 3]" in messages["test_sample.test_bad"]


@pytest.mark.parametrize("xml", [
    # billion laughs: entities that expand to gigabytes
    b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;">'
    b'<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]><testsuite><testcase name="&lol3;"/></testsuite>',
    # an external entity: a file of the host
    b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
    b'<testsuite><testcase name="&xxe;"/></testsuite>',
    # a DTD alone, without an entity
    b'<?xml version="1.0"?><!DOCTYPE testsuite SYSTEM "http://127.0.0.1:9/x.dtd"><testsuite/>',
    b"<testsuite><testcase name='unclosed'></testsuite>",  # malformed
    b"<html><body>not junit</body></html>",
    b"<testsuite>" * (verify.MAX_JUNIT_DEPTH + 5) + b"</testsuite>" * (verify.MAX_JUNIT_DEPTH + 5),  # deep nesting
], ids=["billion-laughs", "external-entity", "dtd", "malformed", "not-junit", "deep"])
def test_hostile_junit_is_refused(xml):
    cases: dict[str, str] = {}
    with pytest.raises(verify.JUnitError):
        verify.parse_junit(xml, cases, {})
    assert cases == {}


def test_junit_cases_and_ids_are_bounded():
    long_name = "x" * 5000
    body = "".join(f'<testcase classname="c" name="t{i}"/>' for i in range(verify.MAX_CASES + 500))
    xml = f'<testsuite><testcase classname="c" name="{long_name}"><failure/></testcase>{body}</testsuite>'
    cases: dict[str, str] = {}
    started = time.monotonic()
    verify.parse_junit(xml.encode(), cases, {})
    assert len(cases) == verify.MAX_CASES
    assert max(len(k) for k in cases) == verify.MAX_ID_CHARS
    assert time.monotonic() - started < 30  # linear: not a timing claim, only that it ends


def test_junit_files_are_read_only_as_regular_files_within_bounds(tmp_path):
    tree = tmp_path / "tree"
    (tree / "reports").mkdir(parents=True)
    good = b'<testsuite><testcase classname="a" name="ok"/><testcase classname="a" name="bad"><error/></testcase>' \
           b'</testsuite>'
    (tree / "reports" / "a.xml").write_bytes(good)
    secret = tmp_path / "host-secret.xml"
    secret.write_bytes(b'<testsuite><testcase classname="host" name="secret"/></testsuite>')
    os.symlink(secret, tree / "reports" / "link.xml")  # a link out of the tree: not followed
    os.mkfifo(tree / "reports" / "fifo.xml")  # would block a reader forever
    with open(tree / "reports" / "huge.xml", "wb") as fh:  # sparse: costs nothing on disk
        fh.truncate(verify.MAX_JUNIT_FILE_BYTES + 1)
    (tree / "elsewhere.xml").write_bytes(good)  # outside the glob
    paths = verify.junit_files(tree, "reports/*.xml")
    assert paths == ["reports/a.xml", "reports/fifo.xml", "reports/huge.xml"]
    run = TestRun(exit_code=1, duration_s=0.1)
    assert verify.read_junit(tree, paths, run)
    assert run.source == "junit" and run.cases == {"a.ok": PASSED, "a.bad": FAILED}
    assert any("fifo.xml: not a regular file" in n for n in run.notes)
    assert any("huge.xml: larger than" in n for n in run.notes)


@pytest.mark.parametrize("pattern", ["/etc/*.xml", "../*.xml", "reports/../../x.xml", "a\nb", "a\\b"])
def test_a_junit_glob_must_stay_in_the_repository(pattern):
    with pytest.raises(UsageError, match="--verify-junit"):
        verify.check_junit_glob(pattern)


@pytest.mark.parametrize("command, runs", [
    ("pytest -q", True), ("python -m pytest tests", True), ("python3 -m pytest", True), (".venv/bin/pytest", True),
    ("make test && py.test", True), ("cd lib; pytest", True), ("npm test", False), ("python3 -m unittest", False),
    ("./pytest-like-script", False), ("echo pytests", False),
])
def test_pytest_is_recognised_in_the_command(command, runs):
    assert verify.runs_pytest(command) is runs


def run_of(cases: dict[str, str], exit_code: int, complete: bool = True) -> TestRun:
    run = TestRun(exit_code=exit_code, duration_s=1.0, source="junit", cases=dict(cases))
    run.counts = {PASSED: 0, FAILED: 0, SKIPPED: 0}
    for status in cases.values():
        run.counts[status] += 1
    run.counts["total"] = len(cases)
    run.complete = complete
    return run


def test_judged_against_the_base_commit():
    base = run_of({"a": FAILED, "b": PASSED, "c": PASSED, "d": FAILED}, 1)
    now = run_of({"a": PASSED, "b": PASSED, "c": FAILED, "d": FAILED, "new": FAILED}, 1)
    j = verify.judge(now, base, allow_preexisting=True)
    assert (j.fixed, j.broken, j.still_failing, j.still_passing) == (["a"], ["c", "new"], ["d"], 1)
    assert j.outcome == "failed" and "c, new" in j.reason  # a new failing test is broken too


def test_allow_preexisting_needs_every_failure_named_and_old():
    base = run_of({"a": FAILED, "b": PASSED}, 1)
    assert verify.judge(run_of({"a": FAILED, "b": PASSED}, 1), base, True).outcome == "passed"
    assert verify.judge(run_of({"a": FAILED, "b": PASSED}, 1), base, False).outcome == "failed"
    # the command failed more often than it named: something unnamed failed too
    unnamed = run_of({"a": FAILED, "b": PASSED}, 1)
    unnamed.counts[FAILED] = 2
    assert verify.judge(unnamed, base, True).outcome == "failed"
    # no baseline, nothing to compare with
    assert verify.judge(run_of({"a": FAILED}, 1), None, True).outcome == "failed"


def test_a_passing_command_without_a_baseline_passes_and_a_timeout_is_an_error():
    assert verify.judge(run_of({"a": PASSED}, 0), None, False).outcome == "passed"
    timed = run_of({}, -1)
    timed.timed_out = True
    assert verify.judge(timed, None, False).outcome == "error"


def test_with_only_the_failures_named_a_base_failure_that_no_longer_fails_is_fixed():
    base = run_of({"a": FAILED, "b": FAILED}, 1, complete=False)
    base.counts.update({PASSED: 5, "total": 7})
    now = run_of({"b": FAILED}, 1, complete=False)
    now.counts.update({PASSED: 6, "total": 7})
    j = verify.judge(now, base, False)
    assert j.fixed == ["a"] and j.still_failing == ["b"] and j.broken == []


def test_the_record_and_the_table():
    base = run_of({"a": FAILED, "b": PASSED}, 1)
    now = run_of({"a": PASSED, "b": PASSED}, 0)
    j = verify.judge(now, base, False)
    rec = verify.record("python -m pytest", now, base, j, [{"round": 1, "outcome": j.outcome,
                                                            "counts": now.counts}])
    assert rec["counts"] == {PASSED: 2, FAILED: 0, SKIPPED: 0, "total": 2, "fixed": 1, "broken": 0,
                             "still_failing": 0, "still_passing": 1}
    assert rec["fixed"] == ["a"] and rec["baseline"]["exit_code"] == 1 and rec["outcome"] == "passed"
    table = verify.verification_table_markdown(rec)
    assert "1 fixed, 0 broken, 0 still failing, 1 still passing." in table
    assert "| this change | 2 | 0 | 0 | 2 | 0 | 1.0 s |" in table and "| base commit | 1 | 1 | 0 | 2 | 1 |" in table
    assert "Fixed: `a`" in table
    assert verify.verification_table_markdown(None) == ""


def test_the_table_keeps_hostile_test_names_inert():
    hostile = "x` | @octocat Closes #1 <img src=x> [link](http://e)\n# Heading"
    base = run_of({hostile: PASSED}, 0)
    now = run_of({hostile: FAILED}, 1)
    rec = verify.record("cmd", now, base, verify.judge(now, base, False), [])
    table = verify.verification_table_markdown(rec)
    # one line, the name a single code span (GitHub acts on no mention inside one; the pull request's body is
    # defused again as a whole), no reference or closing keyword that can act
    assert "\n# Heading" not in table and "\n| x" not in table
    assert "Broken: ``x` | @octocat C\u200bloses #\u200b1 <img src=x> [link](http://e)\\n# Heading``" in table


def test_the_retry_report_is_bounded():
    run = run_of({f"t{i}" * 40: FAILED for i in range(500)}, 1)
    run.tail = ["x" * verify.MAX_LINE_CHARS] * verify.TAIL_LINES
    run.messages = {k: "m" * verify.MAX_MESSAGE_CHARS for k in list(run.cases)[:verify.MAX_MESSAGES]}
    text = verify.failure_report(run, verify.judge(run, None, False))
    assert len(text) < 80_000 and text.count("\n- ") == verify.MAX_LISTED


def test_all_junit_files_of_a_run_together_are_bounded(tmp_path, monkeypatch):
    monkeypatch.setattr(verify, "MAX_JUNIT_TOTAL_BYTES", 1000)
    tree = tmp_path / "tree"
    tree.mkdir()
    for i in range(5):
        cases = "".join(f'<testcase classname="f{i}" name="t{j}"/>' for j in range(8))
        (tree / f"r{i}.xml").write_text(f"<testsuite>{cases}</testsuite>")  # about 300 bytes each
    run = TestRun(exit_code=0, duration_s=0.1)
    verify.read_junit(tree, verify.junit_files(tree, "*.xml"), run)
    assert 0 < run.counts["total"] < 5 * 8
    assert any("JUnit" in n and "not read" in n for n in run.notes)


def test_a_retry_prompt_fits_the_clis_argument_limit():
    task = "é" * 49_000  # 98,000 bytes: a task just under the limit
    report = "ü" * verify.MAX_REPORT_CHARS
    prompt = verify.retry_prompt(task, report, 2, "said " * 1000, max_bytes=100_000)
    assert len(prompt.encode()) <= 100_000 and prompt.startswith(task) and verify.RETRY_HEADING in prompt
    small = verify.retry_prompt("Fix it.", "- test_a", 2, "I tried.", max_bytes=100_000)
    assert small.endswith("I tried.\n\n- test_a\n")
    assert verify.retry_prompt("Fix it.", report, 2).count("ü") == verify.MAX_REPORT_CHARS  # no limit: all of it


def fake_runner(tmp_path, command, glob, write):
    logged: list[str] = []

    def run(tree, results, env, on_line, name):
        write(tree, results, env)
        on_line("Ran 2 tests in 0.01s")
        on_line("FAILED (failures=1)")
        return 1

    return verify.Runner(command, glob, run, tmp_path, logged.append), logged


def test_only_junit_files_the_run_wrote_are_read_and_committed_ones_stay(tmp_path):
    tree = tmp_path / "tree"
    (tree / "reports").mkdir(parents=True)
    forged = b'<testsuite><testcase classname="x" name="all_good"/></testsuite>'
    (tree / "reports" / "fixture.xml").write_bytes(forged)  # committed: the tests read it, or it is forged

    def write(tree, results, env):
        assert (tree / "reports" / "fixture.xml").read_bytes() == forged  # still there while the tests run
        (tree / "reports" / "junit.xml").write_text(
            '<testsuite><testcase classname="t" name="a"/><testcase classname="t" name="b"><failure/></testcase>'
            "</testsuite>")

    runner, _ = fake_runner(tmp_path, "python3 run_tests.py", "reports/*.xml", write)
    run = verify.run_once(runner, tree, "verify-1")
    assert run.source == "junit" and run.cases == {"t.a": PASSED, "t.b": FAILED}
    assert (tree / "reports" / "fixture.xml").exists()


def test_pytest_is_asked_for_junit_in_the_results_directory(tmp_path):
    tree = tmp_path / "tree"
    tree.mkdir()
    seen = {}

    def write(tree, results, env):
        seen.update(env)
        (results / "pytest-junit.xml").write_text('<testsuites><testsuite><testcase classname="m" name="t"/>'
                                                  "</testsuite></testsuites>")

    runner, _ = fake_runner(tmp_path, "python -m pytest -q", None, write)
    run = verify.run_once(runner, tree, "verify-1")
    assert seen == {"PYTEST_ADDOPTS": f"--junitxml={verify.PYTEST_JUNIT}"}
    assert run.source == "junit" and run.cases == {"m.t": PASSED}
    assert not (tmp_path / "verify-1-results").exists()  # removed once read
    # not pytest: nothing asked, the summary lines read
    given: list[dict] = []
    runner, _ = fake_runner(tmp_path, "python3 -m unittest", None, lambda tree, results, env: given.append(env))
    run = verify.run_once(runner, tree, "verify-2")
    assert given == [{}] and run.source == "unittest" and run.counts[FAILED] == 1


#: Lines (the agent's output, 2,000 characters each once cut) on which the summary regexes backtracked: vitest's
#: "Tests" line for 11 s a line, jest's, pytest's counts, -v ids and FAIL headers quadratically.
HOSTILE_LINES = ["Tests" + " " * 1994 + "x", " Tests passed" + " " * 1980 + "(", "Tests: " + " " * 1990 + "x",
                 "Tests: " + "1" * 1990 + " in 1s", "1" * 1990 + " a in 1s", "::" * 1000,
                 " FAIL a > " + " " * 1990 + "x", "a::b" + " x" * 998]


def test_hostile_output_lines_are_read_in_linear_time():
    import time

    reader = verify.SummaryReader()
    started = time.monotonic()
    for line in HOSTILE_LINES * 3:
        reader.feed(line)
    assert time.monotonic() - started < 5  # about 1 ms in all; each vitest line alone took 11 s before


@pytest.mark.parametrize("line, parsed", [
    ("tests/t.py::test_a[x y] PASSED                [ 50%]", ("pytest", "tests/t.py::test_a[x y]", "passed")),
    ("t.py::C::test_b FAILED", ("pytest", "t.py::C::test_b", "failed")),
    ("::x PASSED", None), ("a:: PASSED", None), (" t.py::a PASSED", None),
    (" FAIL  src/a.test.ts > suite > works", ("jest", "src/a.test.ts > suite > works", "failed")),
    ("FAILx src/a > b", None), ("FAIL >  x", None),
])
def test_the_hand_parsed_lines_match_what_the_regexes_matched(line, parsed):
    reader = verify.SummaryReader()
    reader.feed(line)
    found = [(name, k, v) for name in ("pytest", "jest") for k, v in getattr(reader, name)["cases"].items()]
    assert found == ([parsed] if parsed else [])


def test_vitest_totals_are_read_by_hand_as_before():
    reader = verify.SummaryReader()
    reader.feed("      Tests  1 failed | 2 passed (3)")
    assert reader.jest["counts"] == {"failed": 1, "passed": 2, "total": 3}
    for line in ("Testsx 1 passed (3)", "Tests 1 passed (x)", "Tests 1 passed 3)"):
        other = verify.SummaryReader()
        other.feed(line)
        assert other.jest["counts"] is None, line
