"""Shared test fixtures: paths to ../shared, a fake engine, synthetic frames."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.fakes import fake_engine  # noqa: F401  (re-exported for tests)

REPO = Path(__file__).resolve().parents[1]
SHARED = (REPO / ".." / "shared").resolve()
FIXTURES = SHARED / "ls-fixtures"
DAVIS = SHARED / "data" / "davis2016-val"


def load_fixture(name: str) -> dict:
    matches = sorted(FIXTURES.glob(f"{name}*.json"))
    assert matches, f"no fixture {name} in {FIXTURES}"
    return json.loads(matches[0].read_text())


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
