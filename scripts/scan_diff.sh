#!/usr/bin/env bash
# The diff policy on a range of commits (default: the last commit): secrets, workflow changes, symlinks out
# of the repository, big files, binaries. Usage: scripts/scan_diff.sh [A..B] [toren scan options]
set -euo pipefail
range="${1:-HEAD~1..HEAD}"
shift || true
exec toren scan --diff "$range" "$@"
