#!/usr/bin/env bash
# Everything a fresh machine needs for Toren's demo and tests, each step skipped when already done:
# a Docker engine, the local base image, and the package in ./.venv (with the dev extras).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"

bash scripts/setup-docker.sh
bash scripts/build-base-image.sh

py=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$py" -m venv .venv
fi
stamp=.venv/.toren-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "bootstrap: installing toren-action into .venv" >&2
  if ! .venv/bin/python -m pip install -q --disable-pip-version-check -e ".[dev]" >.venv/pip.log 2>&1 \
     || ! .venv/bin/python -c "import toren_action, docker, jsonschema, pytest, hypothesis"; then
    tail -n 30 .venv/pip.log >&2
    echo "bootstrap: installing the package failed (log: .venv/pip.log)" >&2
    exit 1
  fi
  touch "$stamp"
fi
# The package's bytecode, as an installed package has it (pip compiles a wheel's modules at install): where
# PYTHONDONTWRITEBYTECODE is set (this project's CI machines set it), an editable install would otherwise
# compile every module again in each `toren` process. Quick when nothing changed; stale files are recompiled
# by Python itself, never trusted.
.venv/bin/python -m compileall -q toren_action >/dev/null
