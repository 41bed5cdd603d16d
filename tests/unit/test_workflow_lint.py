"""Every workflow and action.yml pass the three linters CI relies on (their binaries come with .[dev])."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
WORKFLOWS = sorted(str(p) for p in (ROOT / ".github" / "workflows").glob("*.yml"))


@pytest.mark.parametrize("command", [
    ["actionlint", *WORKFLOWS],
    ["zizmor", "--quiet", "--offline", "--min-severity", "medium", ".github/workflows", "action.yml"],
    ["check-jsonschema", "--builtin-schema", "vendor.github-workflows", *WORKFLOWS],
    ["check-jsonschema", "--builtin-schema", "vendor.github-actions", "action.yml"],
], ids=["actionlint", "zizmor", "workflow-schema", "action-schema"])
def test_workflows_pass_the_linters(command):
    assert len(WORKFLOWS) >= 4
    proc = subprocess.run([str(BIN / command[0]), *command[1:]], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
