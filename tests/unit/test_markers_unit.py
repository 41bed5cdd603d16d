"""The docker marker cannot drift: a test that reaches the docker_client fixture (itself or through workdir)
without the marker stops collection, so `pytest -m "not docker"` never needs an engine. Each case runs pytest
in a child process (collection only) on throwaway test modules next to a copy of tests/conftest.py and the
project's pytest settings; no test there runs, so no engine is asked."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

CONFTEST = Path(__file__).resolve().parents[1] / "conftest.py"
PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"
PLAIN = "def test_plain(repo):\n    pass\n"


def collect(tmp_path: Path, modules: dict[str, str], *args: str) -> tuple[int, str]:
    (tmp_path / "conftest.py").write_text(CONFTEST.read_text())
    (tmp_path / "pyproject.toml").write_text(PYPROJECT.read_text())  # its markers and --strict-markers
    for name, text in {**modules, "test_plain.py": PLAIN}.items():
        (tmp_path / name).write_text("import pytest\n\n" + text)
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p",
                           "no:hypothesispytest", "--collect-only", *args, str(tmp_path)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60,
                          env={"DOCKER_HOST": "unix:///nonexistent", "PATH": "/usr/bin:/bin"})
    return proc.returncode, proc.stdout + proc.stderr


UNMARKED = {
    "test_direct.py": "def test_uses_docker(docker_client):\n    pass\n",
    "test_through_workdir.py": "def test_uses_the_shell(workdir):\n    pass\n",
    "test_in_a_class.py": "class TestX:\n    def test_uses_docker(self, docker_client):\n        pass\n",
    "test_marked_elsewhere.py": "@pytest.mark.docker\ndef test_ok(docker_client):\n    pass\n\n"
                                "def test_not_this_one(workdir):\n    pass\n",
}


@pytest.mark.parametrize("selection", [(), ("-m", "not docker")], ids=["everything", "not-docker"])
def test_a_docker_test_without_the_marker_stops_collection(tmp_path, selection):
    code, out = collect(tmp_path, UNMARKED, *selection)
    assert code == 4, out  # pytest's usage error: nothing runs
    named = out.split("without the docker marker", 1)[1]
    for node in ("test_direct.py::test_uses_docker", "test_through_workdir.py::test_uses_the_shell",
                 "test_in_a_class.py::TestX::test_uses_docker", "test_marked_elsewhere.py::test_not_this_one"):
        assert node in named, out
    assert "test_ok" not in named and "test_plain" not in named


MARKED = {
    "test_module.py": "pytestmark = pytest.mark.docker\n\ndef test_a(workdir):\n    pass\n",
    "test_function.py": "@pytest.mark.docker\ndef test_b(docker_client):\n    pass\n",
    "test_class.py": "@pytest.mark.docker\nclass TestX:\n    def test_c(self, workdir):\n        pass\n",
}


def test_marked_docker_tests_are_collected_and_left_out_of_not_docker(tmp_path):
    code, out = collect(tmp_path, MARKED)
    assert code == 0 and "4 tests collected" in out, out
    code, out = collect(tmp_path, MARKED, "-m", "not docker")
    assert code == 0 and "1/4 tests collected (3 deselected)" in out, out


def test_a_misspelt_marker_is_refused(tmp_path):
    code, out = collect(tmp_path, {"test_typo.py": "@pytest.mark.dokcer\ndef test_a(docker_client):\n    pass\n"})
    assert code != 0 and "'dokcer' not found in `markers`" in out, out
