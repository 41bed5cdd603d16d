"""The layers cannot drift: the import-linter contracts in pyproject.toml hold (the folders are layers, `toren
status` loads no SDK, no import cycles), and the folder listing is the map docs/architecture.md describes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_import_contracts_hold():
    lint = Path(sys.executable).with_name("lint-imports")
    proc = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "3 kept, 0 broken" in proc.stdout


def test_every_layer_says_what_it_may_import_and_the_map_names_it():
    layers = [p for p in (ROOT / "toren_action").iterdir() if (p / "__init__.py").is_file()]
    assert {p.name for p in layers} == {"agents", "cli", "config", "core", "git", "guard", "job", "jobs", "sandbox"}
    doc = (ROOT / "docs" / "architecture.md").read_text()
    for layer in layers:
        docstring = (layer / "__init__.py").read_text()
        assert docstring.startswith('"""') and "import" in docstring.lower(), layer.name
        assert f"{layer.name}/" in doc, layer.name
