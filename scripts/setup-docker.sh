#!/usr/bin/env bash
# Make sure a Docker engine answers on this machine.
# Idempotent and quiet when there is nothing to do: if `docker info` already answers, it exits at once.
# Otherwise it installs Debian's docker.io when dockerd is missing, starts dockerd in the background
# (log: $TOREN_DOCKERD_LOG, default /var/log/toren-dockerd.log) and waits until the engine answers.
set -euo pipefail

log=${TOREN_DOCKERD_LOG:-/var/log/toren-dockerd.log}
wait_s=${TOREN_DOCKERD_WAIT:-90}

engine_answers() { docker info >/dev/null 2>&1; }

if command -v docker >/dev/null 2>&1 && engine_answers; then
  exit 0
fi

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

if ! command -v dockerd >/dev/null 2>&1; then
  echo "setup-docker: installing Debian's docker.io (no Docker engine found)" >&2
  export DEBIAN_FRONTEND=noninteractive
  as_root apt-get update -qq >/dev/null
  as_root apt-get install -y -qq --no-install-recommends docker.io iptables >/dev/null
fi

if ! pgrep -x dockerd >/dev/null 2>&1; then
  echo "setup-docker: starting dockerd in the background (log: $log)" >&2
  as_root sh -c "nohup setsid dockerd >>'$log' 2>&1 </dev/null &"
fi

for _ in $(seq 1 "$wait_s"); do
  if engine_answers; then
    exit 0
  fi
  sleep 1
done
echo "setup-docker: the Docker engine did not answer within ${wait_s}s; see $log" >&2
tail -n 20 "$log" >&2 || true
exit 1
