# Track Anything ML backend for Label Studio: one Dockerfile for the CPU and the GPU image.
# Needs BuildKit (secrets and mounts); see docs/docker.md for every build argument.
#
#   CPU: docker build --build-arg TORCH_INDEX_URL=<torch's CPU wheel index> -t tam-backend:cpu .
#   GPU: docker build --build-arg TORCH_FLAVOUR=cuda --build-arg DEVICE=cuda -t tam-backend:gpu .
#        docker run --gpus all ... tam-backend:gpu
#
# Checkpoints are mounted at run time (never baked in); MODEL_DIR is a volume; the server needs
# no network at run time except to reach Label Studio.

# Any image with Python 3.11 and its venv module: the official python:3.11-slim, a CUDA image
# with Python 3.11, or the Debian-made one of docker/make-base-image.sh.
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

# cpu: torch must be a CPU build (the build fails on a CUDA build: several GB of NVIDIA
# libraries); cuda: torch must be a CUDA build (the wheel carries the CUDA runtime libraries).
ARG TORCH_FLAVOUR=cpu
# The README's pins; the CPU image may need other ones where only other CPU wheels exist.
# An empty TORCHVISION_VERSION leaves torchvision out: the weights-free engine serves, SAM
# (segment_anything imports torchvision) cannot (docs/docker.md).
ARG TORCH_VERSION=2.14.1
ARG TORCHVISION_VERSION=0.29.1
# An extra index for the torch step only, besides pip's own (torch's CPU index for cpu).
ARG TORCH_INDEX_URL=
# pip reads these from the environment: a wheel directory (a path or an http URL, e.g. a local
# folder served for the build) and an extra index, both optional.
ARG PIP_FIND_LINKS=
ARG PIP_EXTRA_INDEX_URL=
# The server's DEVICE (cpu, cuda, cuda:N).
ARG DEVICE=cpu

ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1

# The project's pins (constraints.txt) hold for everything but torch and torchvision, whose
# versions are the build arguments above.
COPY constraints.txt /opt/req/
RUN grep -vE '^(torch|torchvision)==' /opt/req/constraints.txt >/opt/req/pins.txt

# torch first, in its own layer: it changes least and weighs most. An extra CA bundle (a
# corporate proxy) comes as the build secret "ca" and stays out of the image; pip's downloads
# go to a tmpfs.
RUN --mount=type=secret,id=ca --mount=type=tmpfs,target=/tmp \
    set -eu; \
    if [ -s /run/secrets/ca ]; then export PIP_CERT=/run/secrets/ca; fi; \
    case "$TORCH_FLAVOUR" in cpu|cuda) ;; *) echo "TORCH_FLAVOUR must be cpu or cuda" >&2; exit 2;; esac; \
    case "$TORCH_FLAVOUR:$DEVICE" in cpu:cuda*) echo "DEVICE=$DEVICE needs TORCH_FLAVOUR=cuda" >&2; exit 2;; esac; \
    python3 -m venv /opt/venv; \
    /opt/venv/bin/pip install -q -c /opt/req/pins.txt \
        ${TORCH_INDEX_URL:+--extra-index-url "$TORCH_INDEX_URL"} \
        "torch==$TORCH_VERSION" ${TORCHVISION_VERSION:+"torchvision==$TORCHVISION_VERSION"}; \
    /opt/venv/bin/python -c "import sys, torch; cuda = torch.version.cuda; \
print('torch', torch.__version__, 'CUDA', cuda); \
sys.exit(0 if (cuda is None) == (sys.argv[1] == 'cpu') else \
'TORCH_FLAVOUR=%s but torch %s is %s: for cpu pass TORCH_INDEX_URL (torch CPU index) or \
PIP_FIND_LINKS with CPU wheels' % (sys.argv[1], torch.__version__, 'a CUDA build' if cuda else 'a CPU build'))" \
        "$TORCH_FLAVOUR"; \
    if [ -n "$TORCHVISION_VERSION" ]; then /opt/venv/bin/python -c "import torchvision"; fi

# The runtime requirements (no dev tools), then the unprivileged user.
COPY requirements.txt /opt/req/
RUN --mount=type=secret,id=ca --mount=type=tmpfs,target=/tmp \
    set -eu; \
    if [ -s /run/secrets/ca ]; then export PIP_CERT=/run/secrets/ca; fi; \
    /opt/venv/bin/pip install -q -r /opt/req/requirements.txt -c /opt/req/pins.txt; \
    groupadd --gid 10001 tam; \
    useradd --uid 10001 --gid tam --no-create-home --home-dir /app --shell /usr/sbin/nologin tam; \
    mkdir -p /app /data/model_dir /weights; \
    chown tam:tam /data/model_dir

# SAM 2 (ENGINE=sam2, docs/sam2.md): Meta's package builds against the torch installed above
# (no build isolation, no CUDA extension); it needs torchvision, so an image without it has none.
COPY requirements-sam2.txt /opt/req/
RUN --mount=type=secret,id=ca --mount=type=tmpfs,target=/tmp \
    set -eu; \
    if [ -s /run/secrets/ca ]; then export PIP_CERT=/run/secrets/ca; fi; \
    if [ -n "$TORCHVISION_VERSION" ]; then \
        /opt/venv/bin/pip install -q setuptools -c /opt/req/pins.txt; \
        SAM2_BUILD_CUDA=0 /opt/venv/bin/pip install -q --no-build-isolation \
            -r /opt/req/requirements-sam2.txt -c /opt/req/pins.txt; \
        /opt/venv/bin/python -c "import sam2.build_sam"; \
    fi

WORKDIR /app
COPY backend ./backend
COPY model.py model_video.py _wsgi.py docker/healthcheck.py docker/selfcheck.py ./
COPY docs/labeling-config.xml ./docs/labeling-config.xml

# The README's names (docs/configuration.md). Weights: mount them read-only (e.g. at /weights)
# and set SAM_CHECKPOINT / XMEM_CHECKPOINT; without them the weights-free engine serves.
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 \
    HOST=0.0.0.0 PORT=9090 WORKERS=1 THREADS=16 LOG_LEVEL=INFO \
    MODEL_DIR=/data/model_dir DEVICE=${DEVICE} \
    NVIDIA_VISIBLE_DEVICES=all NVIDIA_DRIVER_CAPABILITIES=compute,utility
LABEL org.opencontainers.image.title="Track Anything for Label Studio" \
      org.opencontainers.image.description="Label Studio ML backend: clicks on one frame, masks on every frame (torch ${TORCH_FLAVOUR})"

VOLUME ["/data/model_dir"]
USER 10001:10001
EXPOSE 9090
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "/app/healthcheck.py"]
# No gunicorn control socket: it would be written under $HOME (/app, not writable).
CMD ["sh", "-c", "exec gunicorn --bind \"$HOST:$PORT\" --workers \"$WORKERS\" --threads \"$THREADS\" --timeout 0 --log-level \"$LOG_LEVEL\" --no-control-socket _wsgi:app"]
