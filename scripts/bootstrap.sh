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
