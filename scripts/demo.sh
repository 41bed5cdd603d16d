#!/usr/bin/env bash
# Toren's main job on its embedded defaults: the bundled example project as a local git repository,
# the built-in deterministic shell agent (no API key), the local base image. Prints the resulting branch.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
work=${TOREN_DEMO_DIR:-$here/.toren-home/demo}
export TOREN_HOME=${TOREN_HOME:-$here/.toren-home}

rm -rf "$work" && mkdir -p "$work"
cp -r "$here/examples/demo/project" "$work/project"
cp "$here/examples/demo/task.md" "$work/task.md"
git -C "$work/project" init -q -b main
git -C "$work/project" add -A
git -C "$work/project" -c user.name=demo -c user.email=demo@example.invalid commit -q -m "demo project"

cd "$work"
"$here/.venv/bin/toren" run --repo ./project --spec task.md --branch toren/rename-helper \
  --agent shell --command 'sed -i s/old_name/greeting/g src/*.py && python3 src/greet.py' \
  --base-image "${TOREN_BASE_IMAGE:-toren/base:bookworm}" --verify 'python3 src/greet.py | grep -qx "Hello, world!"' \
  --disable-daemon

echo
echo "The demo repository is $work/project; its new branch:"
git -C "$work/project" log --stat --format='%h %s (%an)' -1 toren/rename-helper
