#!/usr/bin/env bash
# Build the Python-capable test image: the local base image (scripts/build-base-image.sh) plus python3-pip and
# python3-venv, which Debian's python3 lacks. The setup and verification tests prepare the fixture project
# (tests/fixtures/pyproj) in it. Package downloads go through this machine's CA bundle (a TLS-intercepting proxy
# answers for the Debian mirror here), copied into the build and left in the image at the system path.
# Idempotent and quiet: does nothing when the tag already exists.
#   TOREN_PYTHON_IMAGE  tag to build (default toren/base-python:bookworm)
#   TOREN_BASE_IMAGE    the image it starts from (default toren/base:bookworm; built first when missing)
#   TOREN_CA_BUNDLE     CA bundle to trust (default /etc/ssl/certs/ca-certificates.crt when it exists)
set -euo pipefail

tag=${TOREN_PYTHON_IMAGE:-toren/base-python:bookworm}
base=${TOREN_BASE_IMAGE:-toren/base:bookworm}
ca=${TOREN_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}

if docker image inspect "$tag" >/dev/null 2>&1; then
  exit 0
fi
if ! docker image inspect "$base" >/dev/null 2>&1; then
  TOREN_BASE_IMAGE=$base "$(dirname "$0")/build-base-image.sh"
fi

ctx=$(mktemp -d "${TMPDIR:-/tmp}/toren-pyimage.XXXXXX")
trap 'rm -rf "$ctx"' EXIT
if [ -f "$ca" ]; then cp "$ca" "$ctx/ca.crt"; else : >"$ctx/ca.crt"; fi
cat >"$ctx/Dockerfile" <<DOCKERFILE
FROM $base
COPY ca.crt /tmp/toren-ca.crt
RUN if [ -s /tmp/toren-ca.crt ]; then cp /tmp/toren-ca.crt /etc/ssl/certs/ca-certificates.crt; fi \\
 && rm -f /tmp/toren-ca.crt \\
 && export DEBIAN_FRONTEND=noninteractive \\
 && apt-get update -qq \\
 && apt-get install -y -qq --no-install-recommends python3-pip python3-venv >/dev/null \\
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb
DOCKERFILE

echo "build-python-image: building $tag from $base (about a minute)" >&2
docker build -q -t "$tag" "$ctx" >"$ctx/build.log" 2>&1 || { tail -n 30 "$ctx/build.log" >&2; exit 1; }
echo "build-python-image: built $tag" >&2
