#!/usr/bin/env bash
# Make a Debian 12 base image with Python 3.11 from Debian packages alone (debootstrap, then
# `docker import`), for machines that can reach a Debian mirror but no image registry.
# Elsewhere build on the official Python or CUDA images instead (docs/docker.md).
#
#   docker/make-base-image.sh [TAG]      default TAG: tam-base:bookworm (kept when it exists;
#                                        FORCE=1 rebuilds it)
# Mirror: $DEBIAN_MIRROR, else the first Debian URI of this machine's apt sources, else
# debootstrap's default. Needs root, debootstrap (installed with apt when absent) and a daemon.
set -euo pipefail
TAG=${1:-tam-base:bookworm}
DOCKER=${DOCKER:-$( [ -x /usr/bin/docker ] && echo /usr/bin/docker || command -v docker )}

if [ "${FORCE:-0}" != 1 ] && "$DOCKER" image inspect "$TAG" >/dev/null 2>&1; then
  echo "base image $TAG exists (FORCE=1 rebuilds it)"
  exit 0
fi
if ! command -v debootstrap >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq debootstrap >/dev/null
fi
mirror=${DEBIAN_MIRROR:-}
if [ -z "$mirror" ]; then
  mirror=$(cat /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null \
    | grep -oE 'https?://[^ ]+/debian/?( |$)' | head -n 1 | tr -d ' ' || true)
fi

root=$(mktemp -d "${TMPDIR:-/tmp}/tam-base.XXXXXX")
trap 'rm -rf "$root"' EXIT
start=$(date +%s)
# shellcheck disable=SC2086  # an empty $mirror is left out on purpose
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
  bookworm "$root/rootfs" $mirror >"$root/debootstrap.log" 2>&1 || {
  tail -n 30 "$root/debootstrap.log" >&2
  exit 1
}
chroot "$root/rootfs" apt-get clean
rm -rf "$root/rootfs"/var/lib/apt/lists/* "$root/rootfs"/usr/share/doc/* \
  "$root/rootfs"/usr/share/man/* "$root/rootfs"/usr/share/locale/*
tar -C "$root/rootfs" --numeric-owner -c . | "$DOCKER" import \
  --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' - "$TAG" >/dev/null
echo "base image $TAG made in $(($(date +%s) - start)) s:" \
  "$("$DOCKER" image inspect "$TAG" --format '{{.Size}}') bytes"
