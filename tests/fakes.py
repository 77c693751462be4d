"""Fake engines for tests (importable by subprocess servers via ENGINE=tests.fakes:...)."""

from __future__ import annotations

import os
import time

import numpy as np

from backend.engine import Engine
from backend.segmenter.base import SegmentOutput
from backend.tracker.base import TrackedFrame


class DiskSegmenter:
    """Fake segmenter: a disk of radius 20 px around each positive click (a box: the box)."""

    name = "fake-disk"

    def __init__(self, delay_s: float = 0.0):
        self.image = None
        self.set_calls = 0
        self.delay_s = delay_s  # per image encoding, like a real segmenter's cost

    def set_image(self, image, *, cache_key=None):
        if self.delay_s:
            time.sleep(self.delay_s)
        self.image = image
        self.set_calls += 1

    def predict(
        self,
        point_coords,
        point_labels,
        *,
        mask_prior=None,
        multimask_output=True,
        box=None,
        prior_is_own=False,
    ):
        h, w = self.image.shape[:2]
        yy, xx = np.mgrid[:h, :w]
        mask = np.zeros((h, w), bool)
        if box is not None:  # the box itself, filled
            x0, y0, x1, y1 = box
            mask = (xx >= x0) & (xx < x1) & (yy >= y0) & (yy < y1)
        for (x, y), lab in zip(point_coords, point_labels, strict=True):
            disk = (xx - x) ** 2 + (yy - y) ** 2 <= 20**2
            mask = mask | disk if lab == 1 else mask & ~disk
        return SegmentOutput(masks=mask[None], scores=np.array([0.9]))


class _CopySession:
    def __init__(self, frames, delay_s=0.0):
        self.frames = frames
        self.delay_s = delay_s
        self.masks: dict[int, dict[int, np.ndarray]] = {}
        self.added: list[tuple[int, int, np.ndarray]] = []  # kept after close, for tests

    def add_mask(self, frame_index, obj_id, mask):
        self.masks.setdefault(frame_index, {})[obj_id] = mask.astype(bool)
        self.added.append((frame_index, obj_id, mask.astype(bool)))

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
            if self.delay_s:
                time.sleep(self.delay_s)
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
    """Fake tracker: carries the last keyframe mask unchanged, ``delay_s`` per frame."""

    name = "fake-copy"

    def __init__(self, delay_s: float = 0.0):
        self.delay_s = delay_s
        self.sessions: list[_CopySession] = []

    def start(self, frames):
        self.sessions.append(_CopySession(frames, self.delay_s))
        return self.sessions[-1]


def fake_engine(settings=None, delay_s: float = 0.0, segment_delay_s: float = 0.0) -> Engine:
    return Engine(
        name="classical",
        segmenter=DiskSegmenter(segment_delay_s),
        tracker=CopyTracker(delay_s),
        model_version="tam-fake-test",
        checkpoints={},
    )


def slow_engine(settings=None) -> Engine:
    """Fake engine taking ``TAM_FAKE_DELAY_S`` (default 0.05 s) per propagated frame and
    ``TAM_FAKE_SEGMENT_DELAY_S`` (default 0) per image encoding."""
    return fake_engine(
        delay_s=float(os.environ.get("TAM_FAKE_DELAY_S", "0.05")),
        segment_delay_s=float(os.environ.get("TAM_FAKE_SEGMENT_DELAY_S", "0")),
    )
