"""Shared test fixtures: paths to ../shared, a fake engine, synthetic frames."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from backend.engine import Engine
from backend.segmenter.base import SegmentOutput
from backend.tracker.base import TrackedFrame

REPO = Path(__file__).resolve().parents[1]
SHARED = (REPO / ".." / "shared").resolve()
FIXTURES = SHARED / "ls-fixtures"
DAVIS = SHARED / "data" / "davis2016-val"


def load_fixture(name: str) -> dict:
    matches = sorted(FIXTURES.glob(f"{name}*.json"))
    assert matches, f"no fixture {name} in {FIXTURES}"
    return json.loads(matches[0].read_text())


class DiskSegmenter:
    """Fake segmenter: a disk of radius 20 px around each positive click."""

    name = "fake-disk"

    def __init__(self):
        self.image = None
        self.set_calls = 0

    def set_image(self, image, *, cache_key=None):
        self.image = image
        self.set_calls += 1

    def predict(self, point_coords, point_labels, *, mask_prior=None, multimask_output=True):
        h, w = self.image.shape[:2]
        yy, xx = np.mgrid[:h, :w]
        mask = np.zeros((h, w), bool)
        for (x, y), lab in zip(point_coords, point_labels, strict=True):
            disk = (xx - x) ** 2 + (yy - y) ** 2 <= 20**2
            mask = mask | disk if lab == 1 else mask & ~disk
        return SegmentOutput(masks=mask[None], scores=np.array([0.9]))


class _CopySession:
    def __init__(self, frames):
        self.frames = frames
        self.masks: dict[int, dict[int, np.ndarray]] = {}

    def add_mask(self, frame_index, obj_id, mask):
        self.masks.setdefault(frame_index, {})[obj_id] = mask.astype(bool)

    def remove_object(self, obj_id):
        for d in self.masks.values():
            d.pop(obj_id, None)

    def propagate(self, start, *, reverse=False, stop=None):
        if start not in self.masks:
            raise ValueError("no mask on start frame")
        stop = (0 if reverse else len(self.frames) - 1) if stop is None else stop
        step = -1 if reverse else 1
        current: dict[int, np.ndarray] = {}
        for t in range(start, stop + step, step):
            self.frames[t]  # read like a real tracker would
            current.update(self.masks.get(t, {}))
            ids = sorted(current)
            h, w = self.frames[t].shape[:2]
            probs = np.zeros((len(ids) + 1, h, w), np.float32)
            for k, oid in enumerate(ids):
                probs[k + 1] = current[oid] * 0.8
            probs[0] = 0.5
            yield TrackedFrame(index=t, obj_ids=ids, probs=probs)

    def close(self):
        self.masks.clear()


class CopyTracker:
    """Fake tracker: carries the last keyframe mask unchanged."""

    name = "fake-copy"

    def start(self, frames):
        return _CopySession(frames)


def fake_engine() -> Engine:
    return Engine(
        name="classical",
        segmenter=DiskSegmenter(),
        tracker=CopyTracker(),
        model_version="tam-fake-test",
        checkpoints={},
    )


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
