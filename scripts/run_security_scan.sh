#!/usr/bin/env bash
# Toren scanning itself: bandit on the package, ruff's security rules, zizmor and actionlint on the workflows,
# pip-audit where its database is reachable, and `toren scan` on the last commit (test fixtures hold
# deliberate fake tokens, so tests/ is excluded there).
set -uo pipefail
cd "$(dirname "$0")/.."
bin=.venv/bin
status=0
run() { echo "== $*"; "$@" || status=1; }
run "$bin/bandit" -q -r toren_action -ll
run "$bin/ruff" check toren_action  # its rule set includes the S (bandit) rules
run "$bin/zizmor" --quiet --offline --min-severity medium .github/workflows action.yml
run "$bin/actionlint" .github/workflows/*.yml
if "$bin/python" -m pip_audit --version >/dev/null 2>&1; then
  echo "== pip-audit"; "$bin/python" -m pip_audit -q --progress-spinner off || echo "pip-audit: not clean or offline (not fatal)"
else
  echo "== pip-audit: not installed (pip install pip-audit); skipped"
fi
if git rev-parse --verify -q HEAD~1 >/dev/null; then
  run "$bin/toren" scan --diff HEAD~1..HEAD --exclude 'tests/*'
fi
[ "$status" -eq 0 ] && echo "security scan: clean" || echo "security scan: findings above"
exit "$status"
