"""guard/codescan: bandit's and semgrep's JSON output, recorded, read into findings (medium and high kept, low
dropped, messages on one line); a tool that fails is said so, never taken for a clean scan; which changed files
each tool is given; and what blocks the push with fail_on. The tools themselves are faked except in one bandit
run on a real file (skipped where bandit is not installed)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from toren_action.guard import codescan
from toren_action.guard.codescan import CodeFinding

# What `bandit -q -f json -ll --ignore-nosec -- app.py` printed (bandit 1.9.4), trimmed to the fields read
# and a few that are not; plus one LOW result, which -ll would not print but the parser must drop anyway.
BANDIT_JSON = json.dumps({
    "errors": [],
    "generated_at": "2025-01-01T00:00:00Z",
    "metrics": {"_totals": {"SEVERITY.HIGH": 1, "SEVERITY.MEDIUM": 1}},
    "results": [
        {"code": "5     subprocess.call(x, shell=True)  # nosec\n", "col_offset": 4, "filename": "./app.py",
         "issue_confidence": "HIGH", "issue_cwe": {"id": 78, "link": "https://cwe.mitre.org/data/definitions/78.html"},
         "issue_severity": "HIGH", "issue_text": "subprocess call with shell=True identified,\n  security issue.",
         "line_number": 5, "line_range": [5], "test_id": "B602",
         "test_name": "subprocess_popen_with_shell_equals_true"},
        {"code": "6     return pickle.loads(x)\n", "filename": "src/app.py", "issue_confidence": "HIGH",
         "issue_severity": "MEDIUM", "issue_text": "Pickle and modules that wrap it can be unsafe when used to "
         "deserialize untrusted data, possible security issue.", "line_number": 6, "line_range": [6],
         "test_id": "B301", "test_name": "blacklist"},
        {"filename": "src/app.py", "issue_severity": "LOW", "issue_text": "Use of assert detected.",
         "line_number": 8, "test_id": "B101", "test_name": "assert_used"},
    ],
})

# The shape of `semgrep scan --json` output (semgrep 1.x): results with check_id, path, start/end, extra.
SEMGREP_JSON = json.dumps({
    "version": "1.90.0",
    "errors": [],
    "paths": {"scanned": ["web/app.js", "src/app.py"]},
    "results": [
        {"check_id": "javascript.lang.security.audit.eval-detected", "path": "web/app.js",
         "start": {"line": 3, "col": 1, "offset": 40}, "end": {"line": 3, "col": 20, "offset": 59},
         "extra": {"message": "Detected the use of eval().\n   eval() can be dangerous " + "x" * 300,
                   "severity": "ERROR", "metadata": {"cwe": ["CWE-95"]}, "lines": "eval(input)"}},
        {"check_id": "python.lang.security.audit.subprocess-shell-true", "path": "src/app.py",
         "start": {"line": 5, "col": 5}, "end": {"line": 5, "col": 35},
         "extra": {"message": "Found 'subprocess' function with 'shell=True'.", "severity": "WARNING"}},
        {"check_id": "generic.secrets.gitleaks.generic-api-key", "path": "README.md",
         "start": {"line": 1}, "extra": {"message": "just info", "severity": "INFO"}},
    ],
})


def test_bandit_output_becomes_medium_and_high_findings():
    found = codescan.parse_bandit(BANDIT_JSON)
    assert found == [
        CodeFinding("bandit", "HIGH", "./app.py", 5, "B602 subprocess_popen_with_shell_equals_true",
                    "subprocess call with shell=True identified, security issue."),
        CodeFinding("bandit", "MEDIUM", "src/app.py", 6, "B301 blacklist",
                    "Pickle and modules that wrap it can be unsafe when used to deserialize untrusted data, "
                    "possible security issue."),
    ]
    assert str(found[0]) == ("high: ./app.py:5: B602 subprocess_popen_with_shell_equals_true: subprocess call "
                             "with shell=True identified, security issue.")


def test_semgrep_output_maps_its_levels_and_keeps_messages_short():
    found = codescan.parse_semgrep(SEMGREP_JSON)
    assert [(f.tool, f.severity, f.path, f.line, f.test) for f in found] == [
        ("semgrep", "HIGH", "web/app.js", 3, "javascript.lang.security.audit.eval-detected"),
        ("semgrep", "MEDIUM", "src/app.py", 5, "python.lang.security.audit.subprocess-shell-true"),
    ]
    assert found[0].text.startswith("Detected the use of eval(). eval() can be dangerous xxx")
    assert len(found[0].text) == 200 and "\n" not in found[0].text


@pytest.mark.parametrize("parse", [codescan.parse_bandit, codescan.parse_semgrep])
def test_no_results_and_empty_output_are_no_findings_but_garbage_is_a_failure(parse):
    assert parse('{"results": [], "errors": []}') == []
    assert parse("") == []  # nothing printed (no files matched): no findings
    assert parse("{}") == []
    assert parse("Traceback (most recent call last):\n  ...") is None
    assert parse('{"results": [') is None


def fake_run(monkeypatch, stdout: str, stderr: str = "") -> list[list[str]]:
    calls: list[list[str]] = []

    def run(argv, **kw):
        calls.append(list(argv))
        return subprocess.CompletedProcess(argv, 1, stdout, stderr)

    monkeypatch.setattr(codescan.subprocess, "run", run)
    return calls


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "app.py").write_text("x = 1\n")
    (tmp_path / "web").mkdir()
    (tmp_path / "web" / "app.js").write_text("eval(1)\n")
    os.symlink("/etc/passwd", tmp_path / "link.py")
    return tmp_path


def test_scan_gives_bandit_the_python_files_and_says_what_ran(monkeypatch, tree):
    calls = fake_run(monkeypatch, BANDIT_JSON)
    monkeypatch.setattr(codescan, "bandit_command", lambda: ["/bin/bandit"])
    monkeypatch.setattr(codescan.shutil, "which", lambda name: None)  # no semgrep
    found, said = codescan.scan(tree, ["src/app.py", "web/app.js", "link.py", "gone.py"])
    assert calls == [["/bin/bandit", "-q", "-f", "json", "-ll", "--ignore-nosec", "--", "src/app.py"]]
    assert len(found) == 2
    assert said == "bandit on 1 Python file(s): 2 medium or high finding(s)"


def test_scan_runs_semgrep_on_every_regular_changed_file_when_it_is_there(monkeypatch, tree):
    calls = fake_run(monkeypatch, SEMGREP_JSON)
    monkeypatch.setattr(codescan, "bandit_command", lambda: None)
    monkeypatch.setattr(codescan.shutil, "which", lambda name: "/bin/semgrep" if name == "semgrep" else None)
    monkeypatch.setenv("TOREN_SEMGREP_CONFIG", "p/ci")
    found, said = codescan.scan(tree, ["src/app.py", "web/app.js", "link.py"])
    assert calls == [["semgrep", "scan", "--quiet", "--json", "--disable-nosem", "--config", "p/ci", "--",
                      "src/app.py", "web/app.js"]]
    assert [f.severity for f in found] == ["HIGH", "MEDIUM"]
    assert said == ("bandit is not installed (pip install bandit): the code scan was skipped; "
                    "semgrep (p/ci): 2 medium or high finding(s)")


def test_a_tool_that_fails_is_reported_as_failed_not_as_clean(monkeypatch, tree):
    fake_run(monkeypatch, "", "bandit: error: unrecognized arguments: --ignore-nosec\n")
    monkeypatch.setattr(codescan, "bandit_command", lambda: ["/bin/bandit"])
    monkeypatch.setattr(codescan.shutil, "which", lambda name: None)
    assert codescan.scan(tree, ["src/app.py"]) == ([], "bandit on 1 Python file(s): 0 medium or high finding(s)")
    fake_run(monkeypatch, "Traceback: boom", "ImportError: no module named bandit.core\n")
    found, said = codescan.scan(tree, ["src/app.py"])
    assert found == [] and said == "bandit failed: ImportError: no module named bandit.core"
    fake_run(monkeypatch, "not json " + "y" * 300)
    assert codescan.scan(tree, ["src/app.py"])[1] == "bandit failed: not json " + "y" * 191


def test_nothing_to_scan_says_so(monkeypatch, tree):
    fake_run(monkeypatch, BANDIT_JSON)
    monkeypatch.setattr(codescan.shutil, "which", lambda name: None)
    assert codescan.scan(tree, ["web/app.js", "link.py"]) == ([], "no Python files changed")


@pytest.mark.parametrize("fail_on, severities", [("none", []), ("medium", ["HIGH", "MEDIUM"]), ("high", ["HIGH"])])
def test_fail_on_picks_what_blocks_the_push(fail_on, severities):
    findings = codescan.parse_bandit(BANDIT_JSON) + [CodeFinding("x", "LOW", "a", 1, "t", "low")]
    assert [f.severity for f in codescan.blocking(findings, fail_on)] == severities


@pytest.mark.skipif(codescan.bandit_command() is None, reason="bandit is not installed")
def test_real_bandit_output_is_read(tmp_path):
    (tmp_path / "app.py").write_text("import subprocess\n\n\ndef f(x):\n    subprocess.call(x, shell=True)  # nosec\n")
    found, said = codescan.scan(tmp_path, ["app.py"])
    assert [(f.severity, f.line, f.test.split()[0]) for f in found] == [("HIGH", 5, "B602")]  # nosec ignored
    assert said == "bandit on 1 Python file(s): 1 medium or high finding(s)"


def test_a_warm_bandit_finds_what_bandits_command_finds_and_is_used_once(tmp_path):
    import time

    from toren_action.guard import codescan

    (tmp_path / "r.py").write_text("import subprocess\ndef f(x):\n    subprocess.call(x, shell=True)  # nosec\n")
    cold = codescan.scan(tmp_path, ["r.py"])
    warm = codescan.WarmBandit().start()
    try:
        assert warm.run(tmp_path, ["-q", "-f", "json", "--", "r.py"], timeout=60) is not None  # it answers once
        assert warm.run(tmp_path, ["-q", "-f", "json", "--", "r.py"], timeout=60) is None  # then it is spent
    finally:
        warm.close()
    warm = codescan.WarmBandit().start()
    try:
        time.sleep(0.2)
        assert codescan.scan(tmp_path, ["r.py"], warm) == cold and cold[0][0].test.startswith("B602")
    finally:
        warm.close()


def test_a_dead_warm_bandit_falls_back_to_bandits_command(tmp_path):
    from toren_action.guard import codescan

    (tmp_path / "r.py").write_text("import subprocess\ndef f(x):\n    subprocess.call(x, shell=True)\n")
    warm = codescan.WarmBandit().start()
    warm.close()  # gone before it was asked
    found, said = codescan.scan(tmp_path, ["r.py"], warm)
    assert found and "bandit on 1 Python file(s)" in said
