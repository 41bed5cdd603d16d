#!/usr/bin/env bash
# Build the local base image used by the demo and the tests, without any registry:
# debootstrap a minimal Debian bookworm (python3, git, ca-certificates, curl) and `docker import` it.
# Idempotent and quiet: does nothing when the tag already exists.
#   TOREN_BASE_IMAGE   tag to build (default toren/base:bookworm)
#   TOREN_DEBIAN_MIRROR  Debian mirror (default: the first URI in this machine's apt sources, else deb.debian.org)
set -euo pipefail

tag=${TOREN_BASE_IMAGE:-toren/base:bookworm}
suite=${TOREN_BASE_SUITE:-bookworm}

if docker image inspect "$tag" >/dev/null 2>&1; then
  exit 0
fi

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

if ! command -v debootstrap >/dev/null 2>&1; then
  echo "build-base-image: installing debootstrap" >&2
  export DEBIAN_FRONTEND=noninteractive
  as_root apt-get update -qq >/dev/null
  as_root apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
fi

mirror=${TOREN_DEBIAN_MIRROR:-}
if [ -z "$mirror" ]; then
  mirror=$(grep -rhoE '^(URIs:|deb) +https?://[^ ]+/debian/?( |$)' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null \
           | head -n 1 | awk '{print $2}' || true)
  mirror=${mirror:-http://deb.debian.org/debian}
fi

root=$(mktemp -d "${TMPDIR:-/tmp}/toren-rootfs.XXXXXX")
trap 'as_root rm -rf "$root"' EXIT

echo "build-base-image: debootstrap $suite from $mirror (about a minute)" >&2
as_root debootstrap --variant=minbase --include=python3,git,ca-certificates,curl \
  "$suite" "$root" "$mirror" >"$root.log" 2>&1 || { tail -n 30 "$root.log" >&2; exit 1; }
rm -f "$root.log"
# Trim what a container never needs.
as_root rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/usr/share/doc/* "$root"/usr/share/man/*

as_root tar -C "$root" -c . | docker import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["/bin/bash"]' \
  - "$tag" >/dev/null
echo "build-base-image: built $tag" >&2
