"""Shared test fixtures: paths to ../shared, a fake engine, synthetic frames."""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.fakes import fake_engine  # noqa: F401  (re-exported for tests)

REPO = Path(__file__).resolve().parents[1]
SHARED = (REPO / ".." / "shared").resolve()
FIXTURES = SHARED / "ls-fixtures"
DAVIS = SHARED / "data" / "davis2016-val"
# an image-sequence project with two labels (objects 1 and 2), as Label Studio sends it
TWO_LABEL_CONFIG = """<View>
  <Image name="image" valueList="$frames"/>
  <BrushLabels name="brush" toName="image"><Label value="A"/><Label value="B"/></BrushLabels>
  <KeyPointLabels name="kp" toName="image" smart="true">
    <Label value="A" smart="true"/><Label value="B" smart="true"/>
  </KeyPointLabels>
</View>"""


def load_fixture(name: str) -> dict:
    matches = sorted(FIXTURES.glob(f"{name}*.json"))
    assert matches, f"no fixture {name} in {FIXTURES}"
    return json.loads(matches[0].read_text())


def textured_background(
    height: int, width: int, seed: int = 0, amplitude: float = 25.0
) -> np.ndarray:
    """A smooth random grey-green texture (H×W×3 uint8): something for flow and colour
    models to lock on, unlike a flat colour."""
    rng = np.random.default_rng(seed)
    noise = rng.normal(0, 1, (height // 4, width // 4, 3)).astype(np.float32)
    tex = cv2.resize(noise, (width, height), interpolation=cv2.INTER_CUBIC)
    base = np.array([90, 110, 90], np.float32)
    return np.clip(base + amplitude * tex, 0, 255).astype(np.uint8)


def write_video(
    path: Path, count: int, draw, *, size: tuple[int, int], fps: float = 10.0, fourcc="mp4v"
) -> Path:
    """Encode ``count`` frames ``draw(i, w, h)`` (H×W×3 uint8 BGR) of ``size`` (w, h) at ``path``."""
    w, h = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (w, h))
    assert writer.isOpened(), f"OpenCV cannot write {fourcc} to {path}"
    for i in range(count):
        writer.write(draw(i, w, h))
    writer.release()
    return path


def write_frames(root: Path, rel_dir: str, count: int, size=(320, 240)) -> list[str]:
    """Synthetic JPEG frames under ``root/rel_dir``; returns LS local-files URLs."""
    folder = root / rel_dir
    folder.mkdir(parents=True, exist_ok=True)
    w, h = size
    urls = []
    for i in range(count):
        img = np.full((h, w, 3), 40, np.uint8)
        cv2.circle(img, (w // 3 + 4 * i, h // 2), 30, (30, 200, 60), -1)
        cv2.imwrite(str(folder / f"frame_{i:03d}.jpg"), img)
        urls.append(f"/data/local-files/?d={rel_dir}/frame_{i:03d}.jpg")
    return urls


@pytest.fixture
def fake_engine_factory():
    return fake_engine


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def backend_process(args: list[str], env: dict[str, str], log_path: Path, port: int):
    """Run the backend (``args`` after the python executable, in the repo) on loopback until
    /health answers; yields its URL and stops it afterwards."""
    import subprocess
    import sys
    import time

    import requests

    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, *args], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                if requests.get(f"{url}/health", timeout=1).ok:
                    break
            except (requests.ConnectionError, requests.Timeout):
                # Timeout: gunicorn's master accepts connections before its worker has
                # imported the app, so a busy machine can leave the first reads unanswered.
                time.sleep(0.1)
        else:
            pytest.fail("the backend did not start:\n" + log_path.read_text())
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=20)
