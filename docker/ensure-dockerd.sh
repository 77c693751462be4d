#!/usr/bin/env bash
# Make a Docker daemon answer on this machine: install Debian's docker.io when dockerd is absent
# (as root, with apt), start dockerd when nothing answers, and wait for it. Used by .ci/run and by
# the image test (tests/docker). Exit 0 only when `docker info` works. Its log: $DOCKERD_LOG.
set -euo pipefail
DOCKERD_LOG=${DOCKERD_LOG:-/var/log/tam-dockerd.log}

docker_cli() {
  # Debian's client (20.10) speaks BuildKit without the buildx plugin; prefer it when present.
  if [ -x /usr/bin/docker ]; then echo /usr/bin/docker; else command -v docker; fi
}

if cli=$(docker_cli) && [ -n "$cli" ] && "$cli" info >/dev/null 2>&1; then
  exit 0
fi
if ! command -v dockerd >/dev/null || [ ! -x /usr/bin/docker ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "dockerd is not installed and this is not root: install docker.io first" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq docker.io >/dev/null
fi
cli=$(docker_cli)
if ! "$cli" info >/dev/null 2>&1; then
  if [ "$(id -u)" != 0 ]; then
    echo "no Docker daemon answers and this is not root: start dockerd first" >&2
    exit 1
  fi
  # No init system in these containers: run dockerd detached; it starts its own containerd.
  setsid nohup dockerd >>"$DOCKERD_LOG" 2>&1 </dev/null &
  pid=$!
  for _ in $(seq 1 60); do
    "$cli" info >/dev/null 2>&1 && break
    kill -0 "$pid" 2>/dev/null || break  # it exited: its log says why
    sleep 1
  done
fi
if ! "$cli" info >/dev/null 2>&1; then
  echo "no Docker daemon answers (dockerd exited, or not up within 60 s); the end of $DOCKERD_LOG:" >&2
  tail -n 30 "$DOCKERD_LOG" >&2 || true
  exit 1
fi
"$cli" info --format 'docker {{.ServerVersion}}, storage driver {{.Driver}}, root {{.DockerRootDir}}'
