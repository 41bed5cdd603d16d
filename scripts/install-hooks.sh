#!/usr/bin/env bash
# Installs a git pre-commit hook in this repository (or the one given) that runs `toren scan --staged`:
# the diff policy Toren applies before every push, on what you are about to commit.
set -euo pipefail
repo="${1:-.}"
hooks="$(git -C "$repo" rev-parse --git-path hooks)"
case "$hooks" in /*) ;; *) hooks="$repo/$hooks" ;; esac
hook="$hooks/pre-commit"
mkdir -p "$(dirname "$hook")"
cat > "$hook" <<'HOOK'
#!/bin/sh
# installed by toren's scripts/install-hooks.sh
exec toren scan --staged
HOOK
chmod +x "$hook"
echo "installed $hook"
