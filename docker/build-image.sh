#!/usr/bin/env bash
# Build the backend image on a machine without an image registry, from local package sources:
#
#   docker/build-image.sh cpu|gpu [TAG]       default TAG: tam-backend:cpu / tam-backend:gpu
#
# BASE_IMAGE   the base (default: tam-base:bookworm, made by docker/make-base-image.sh when absent)
# WHEEL_DIR    a local wheel folder (default: $PIP_FIND_LINKS, else pip's find-links setting, when
#              a folder), served over HTTP on 127.0.0.1:$WHEEL_PORT (default 38917) for the build
#              only and given to pip as PIP_FIND_LINKS
# CA_BUNDLE    a CA bundle for pip in the build (default: $SSL_CERT_FILE, else pip's cert
#              setting), passed as the build secret "ca": never stored in the image
# TORCH_VERSION, TORCHVISION_VERSION, TORCH_INDEX_URL, PIP_EXTRA_INDEX_URL: passed on when set.
#              For cpu without TORCH_VERSION, the newest torch CPU wheel ("+cpu") in WHEEL_DIR
#              picks the version, and torchvision is the CPU wheel of the matching release
#              (0.N+15 for torch 2.N) in WHEEL_DIR, or none: PyPI's torchvision is built for
#              CUDA torch and fails to import beside a CPU torch.
# Anywhere with a registry, a plain `docker build` of the Dockerfile does the same (docs/docker.md).
# Prints the build time and the image size at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
flavour=${1:?usage: docker/build-image.sh cpu|gpu [TAG]}
tag=${2:-tam-backend:$flavour}
case "$flavour" in
  cpu) torch_flavour=cpu device=cpu ;;
  gpu) torch_flavour=cuda device=cuda ;;
  *) echo "flavour must be cpu or gpu" >&2; exit 2 ;;
esac
DOCKER=${DOCKER:-$( [ -x /usr/bin/docker ] && echo /usr/bin/docker || command -v docker )}

base=${BASE_IMAGE:-tam-base:bookworm}
if [ -z "${BASE_IMAGE:-}" ]; then
  docker/make-base-image.sh "$base"
fi

args=(--network host --build-arg "BASE_IMAGE=$base" --build-arg "TORCH_FLAVOUR=$torch_flavour"
      --build-arg "DEVICE=$device" -t "$tag")
# A setting of this machine's pip (`pip config list`), e.g. find-links or cert; empty if none.
pip_setting() {
  python3 -m pip config list 2>/dev/null | sed -nE "s/^(global|install|:env:)\.$1='([^' ]*).*/\2/p" \
    | head -n 1
}
wheel_dir=${WHEEL_DIR:-${PIP_FIND_LINKS:-$(pip_setting find-links)}}
[ -n "$wheel_dir" ] && [ ! -d "$wheel_dir" ] && wheel_dir=
torch_version=${TORCH_VERSION:-}
torchvision_version=${TORCHVISION_VERSION:-}
if [ "$flavour" = cpu ] && [ -z "$torch_version" ] && [ -n "$wheel_dir" ]; then
  torch_version=$(find "$wheel_dir" -maxdepth 1 -name 'torch-*+cpu-*.whl' -printf '%f\n' \
    | sed -E 's/^torch-([0-9.]+)\+cpu-.*/\1/' | sort -V | tail -n 1)
  if [ -n "$torch_version" ] && [ -z "${TORCHVISION_VERSION+set}" ]; then
    IFS=. read -r _major minor patch <<<"$torch_version"
    want="0.$((minor + 15)).${patch:-0}"
    if compgen -G "$wheel_dir/torchvision-$want+cpu-*.whl" >/dev/null; then
      torchvision_version=$want
    else
      torchvision_version=none
      echo "no torchvision $want CPU wheel in $wheel_dir: the image leaves torchvision out" \
        "(weights-free engine only, no SAM)"
    fi
  fi
fi
[ -n "$torch_version" ] && args+=(--build-arg "TORCH_VERSION=$torch_version")
if [ "$torchvision_version" = none ]; then
  args+=(--build-arg "TORCHVISION_VERSION=")
elif [ -n "$torchvision_version" ]; then
  args+=(--build-arg "TORCHVISION_VERSION=$torchvision_version")
fi
[ -n "${TORCH_INDEX_URL:-}" ] && args+=(--build-arg "TORCH_INDEX_URL=$TORCH_INDEX_URL")
[ -n "${PIP_EXTRA_INDEX_URL:-}" ] && args+=(--build-arg "PIP_EXTRA_INDEX_URL=$PIP_EXTRA_INDEX_URL")
ca=${CA_BUNDLE:-${SSL_CERT_FILE:-$(pip_setting cert)}}
[ -n "$ca" ] && [ -f "$ca" ] && args+=(--secret "id=ca,src=$ca")

server_pid=
cleanup() { [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true; }
trap cleanup EXIT
if [ -n "$wheel_dir" ]; then
  # A fixed port by default: the URL is a build argument, and a new value would miss the cache
  # of every layer after it.
  port=${WHEEL_PORT:-38917}
  if ! python3 -c "import socket, sys; socket.socket().bind(('127.0.0.1', int(sys.argv[1])))" "$port" 2>/dev/null; then
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    echo "port ${WHEEL_PORT:-38917} is taken: serving $wheel_dir on $port (no layer cache reuse)"
  fi
  python3 -m http.server --bind 127.0.0.1 --directory "$wheel_dir" "$port" >/dev/null 2>&1 &
  server_pid=$!
  args+=(--build-arg "PIP_FIND_LINKS=http://127.0.0.1:$port/")
  for _ in $(seq 1 50); do
    python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/', timeout=1)" \
      2>/dev/null && break
    sleep 0.1
  done
fi

echo "building $tag ($flavour) on $base, torch ${torch_version:-default} / torchvision ${torchvision_version:-default}"
start=$(date +%s)
DOCKER_BUILDKIT=1 "$DOCKER" build --progress=plain "${args[@]}" .
seconds=$(($(date +%s) - start))
size=$("$DOCKER" image inspect "$tag" --format '{{.Size}}')
echo "image $tag built in ${seconds} s, size $((size / 1000000)) MB ($size bytes)"
