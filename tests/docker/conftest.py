"""Fixtures for the image tests: a Docker daemon, the CPU image built from this checkout, and a
report of its build time and size at the end of the run.

In CI (``CI=true``) a missing daemon is installed and started (docker/ensure-dockerd.sh) and any
failure to do so FAILS the tests. Elsewhere the tests run when a daemon answers and are skipped,
with the reason, when none does; ``TAM_SKIP_DOCKER=1`` skips them on request (not in CI).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SKIP_ENV = "TAM_SKIP_DOCKER"
IMAGE_TAG = os.environ.get("TAM_DOCKER_TEST_TAG", "tam-backend:test-cpu")
BUILD_TIMEOUT_S = 1800
HEALTHY_WITHIN_S = 180

_report: list[str] = []


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def docker_exe() -> str | None:
    """Debian's client speaks BuildKit without the buildx plugin: prefer it when installed."""
    if Path("/usr/bin/docker").is_file():
        return "/usr/bin/docker"
    return shutil.which("docker")


@dataclass(frozen=True)
class Docker:
    exe: str

    def run(self, *args: str, timeout: float = 120, check: bool = True, full: bool = False, **kw):
        """``docker ARGS``; its stdout (the CompletedProcess when ``full``). A failure raises
        with stderr when ``check``."""
        proc = subprocess.run(
            [self.exe, *args], capture_output=True, text=True, timeout=timeout, **kw
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"docker {' '.join(args[:3])} … exited {proc.returncode}:\n"
                f"{proc.stderr[-3000:]}{proc.stdout[-2000:]}"
            )
        return proc if full else proc.stdout


@dataclass(frozen=True)
class BuiltImage:
    tag: str
    seconds: float
    size_bytes: int


def report(line: str) -> None:
    """A line for the "docker images" section at the end of the pytest output."""
    _report.append(line)


def pytest_terminal_summary(terminalreporter) -> None:
    if _report:
        terminalreporter.section("docker images")
        for line in _report:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def docker() -> Docker:
    if not in_ci() and os.environ.get(SKIP_ENV) == "1":
        pytest.skip(f"{SKIP_ENV}=1: image tests disabled on request")
    if in_ci():
        proc = subprocess.run(
            ["bash", str(REPO / "docker" / "ensure-dockerd.sh")],
            capture_output=True,
            text=True,
            timeout=600,
        )
        if proc.returncode != 0:
            pytest.fail(f"CI: no Docker daemon could be started:\n{proc.stderr[-3000:]}")
    exe = docker_exe()
    answers = (
        exe is not None
        and subprocess.run([exe, "info"], capture_output=True, timeout=60).returncode == 0
    )
    if not answers:
        reason = (
            "no Docker daemon answers (as root: docker/ensure-dockerd.sh installs and starts one)"
        )
        if in_ci():
            pytest.fail(f"CI: {reason}")
        pytest.skip(reason)
    return Docker(exe)


@pytest.fixture(scope="session")
def cpu_image(docker: Docker) -> BuiltImage:
    """The CPU image of this checkout, built with docker/build-image.sh (cached layers reused)."""
    env = {**os.environ, "DOCKER": docker.exe}
    t0 = time.monotonic()
    proc = subprocess.run(
        ["bash", str(REPO / "docker" / "build-image.sh"), "cpu", IMAGE_TAG],
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT_S,
        env=env,
        cwd=REPO,
    )
    seconds = time.monotonic() - t0
    if proc.returncode != 0:
        pytest.fail(f"building the CPU image failed:\n{proc.stdout[-6000:]}\n{proc.stderr[-3000:]}")
    size = int(docker.run("image", "inspect", IMAGE_TAG, "--format", "{{.Size}}").strip())
    cached = proc.stdout.count(" CACHED") + proc.stderr.count(" CACHED")
    report(
        f"{IMAGE_TAG}: built in {seconds:.0f} s ({cached} steps from cache), "
        f"size {size / 1e6:.0f} MB ({size} bytes)"
    )
    return BuiltImage(IMAGE_TAG, seconds, size)


@pytest.fixture
def container_name(docker: Docker) -> Iterator[str]:
    """A fresh container name; the container is removed (with its volumes) afterwards."""
    name = f"tam-test-{uuid.uuid4().hex[:10]}"
    yield name
    docker.run("rm", "-f", "-v", name, check=False)


def container_log(docker: Docker, name: str) -> str:
    """The last lines of a container's log (stdout and stderr), for failure messages."""
    proc = subprocess.run(
        [docker.exe, "logs", "--tail", "40", name], capture_output=True, text=True, timeout=60
    )
    return f"--- last lines of {name}'s log ---\n{proc.stdout}{proc.stderr}"


def wait_healthy(docker: Docker, name: str) -> str:
    """Poll the container's own HEALTHCHECK; ``"<state> <health>"`` when healthy or stopped."""
    deadline = time.monotonic() + HEALTHY_WITHIN_S
    state = ""
    while time.monotonic() < deadline:
        state = docker.run(
            "inspect", name, "--format", "{{.State.Status}} {{.State.Health.Status}}"
        ).strip()
        if state.split()[0] != "running" or state.split()[-1] == "healthy":
            break
        time.sleep(1)
    return state
