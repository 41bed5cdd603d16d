#!/usr/bin/env bash
# Installs a git pre-commit hook in this repository (or the one given) that runs `toren scan --staged`:
# the diff policy Toren applies before every push, on what you are about to commit.
#
#   scripts/install-hooks.sh [--python PYTHON] [REPO]
#
# The hook runs the Toren found now, by its absolute path, so it works when its virtualenv is not active:
# `--python PYTHON` (that interpreter's `-m toren_action`), else the `toren` on PATH, else `python3 -m
# toren_action` when python3 can import it. When that Toren is later moved or removed, the hook says so in one
# line and how to fix it (run this script again) instead of `toren: not found`.
set -euo pipefail
python=""
if [ "${1:-}" = "--python" ]; then
  [ $# -ge 2 ] || { echo "install-hooks.sh: --python needs an interpreter" >&2; exit 2; }
  python="$2"
  shift 2
fi
repo="${1:-.}"

# shell-quote one word for the hook
quote() { printf "'%s'" "$(printf '%s' "$1" | sed "s/'/'\\\\''/g")"; }

if [ -n "$python" ]; then
  exe="$(cd / && "$python" -c 'import sys, toren_action; print(sys.executable)' 2>/dev/null)" || {
    echo "install-hooks.sh: $python cannot import toren_action; install Toren into it first" >&2; exit 2; }
  kind=python
elif toren="$(command -v toren)" && [ -n "$toren" ]; then
  case "$toren" in /*) ;; *) toren="$(cd "$(dirname "$toren")" && pwd)/$(basename "$toren")" ;; esac
  exe="$toren"
  kind=script
elif exe="$(cd / && python3 -c 'import sys, toren_action; print(sys.executable)' 2>/dev/null)"; then
  kind=python
else
  echo "install-hooks.sh: no toren on PATH and python3 cannot import toren_action; activate Toren's virtualenv" \
       "(or pass --python /path/to/venv/bin/python) and run it again" >&2
  exit 2
fi

hooks="$(git -C "$repo" rev-parse --git-path hooks)"
case "$hooks" in /*) ;; *) hooks="$repo/$hooks" ;; esac
hook="$hooks/pre-commit"
mkdir -p "$(dirname "$hook")"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/install-hooks.sh"
{
  echo '#!/bin/sh'
  echo "# installed by toren's scripts/install-hooks.sh: the diff policy on what is staged (git commit --no-verify"
  echo "# skips it once). It runs the Toren that installed it, by its absolute path."
  echo "toren=$(quote "$exe")"
  echo "fix=$(quote "re-run $here $(cd "$repo" && pwd) with Toren installed (or --python /path/to/venv/bin/python)")"
  if [ "$kind" = script ]; then
    # the console script, and the interpreter on its #! line (gone with a removed virtualenv)
    cat <<'HOOK'
interpreter=$(sed -n '1s/^#![[:space:]]*\([^[:space:]]*\).*/\1/p' "$toren" 2>/dev/null)
if [ ! -x "$toren" ] || { [ -n "$interpreter" ] && [ ! -x "$interpreter" ]; }; then
  echo "toren pre-commit hook: $toren is gone (moved or removed); $fix" >&2
  exit 1
fi
exec "$toren" scan --staged
HOOK
  else
    cat <<'HOOK'
if [ ! -x "$toren" ] || ! "$toren" -c 'import toren_action' 2>/dev/null; then
  echo "toren pre-commit hook: $toren -m toren_action is gone (moved or removed); $fix" >&2
  exit 1
fi
exec "$toren" -m toren_action scan --staged
HOOK
  fi
} > "$hook"
chmod +x "$hook"
echo "installed $hook (runs $exe)"
