"""The fixture project (tests/fixtures/pyproj) is what the setup and verification tests say it is: its suite has
exactly one failing test, caused by the bug in parse_expr, and fixing that bug makes all of them pass."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import MINICALC_BUG, PYPROJ, minicalc_fix
from toren_action.config.settings import _read_toml


def _pytest(src):
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"], cwd=PYPROJ,
                          capture_output=True, text=True, env={"PYTHONPATH": str(src), "PATH": "/usr/bin:/bin",
                                                               "PYTHONDONTWRITEBYTECODE": "1"})


def test_one_test_fails_because_of_the_bug(tmp_path):
    result = _pytest(PYPROJ / "src")
    assert result.returncode == 1
    assert "1 failed, 5 passed" in result.stdout
    assert "FAILED tests/test_parser.py::test_subtraction_is_left_associative" in result.stdout


def test_fixing_the_bug_passes_the_suite(tmp_path):
    import shutil

    src = tmp_path / "src"
    shutil.copytree(PYPROJ / "src", src)
    parser = src / "minicalc" / "parser.py"
    text = parser.read_text()
    assert MINICALC_BUG in text
    parser.write_text(text.replace(MINICALC_BUG, minicalc_fix()))
    result = _pytest(src)
    assert result.returncode == 0, result.stdout
    assert "6 passed" in result.stdout


def test_setup_settings():
    toml = _read_toml(PYPROJ / "toren.toml")
    assert toml["setup"]["cache_key"] == ["pyproject.toml"]
    assert "pip install" in toml["setup"]["run"] and ".venv" in toml["setup"]["run"]
    project = _read_toml(PYPROJ / "pyproject.toml")["project"]
    assert any(req.startswith("pytest") for req in project["optional-dependencies"]["test"])
