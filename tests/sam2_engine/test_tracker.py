"""SAM 2 propagation through our Tracker protocol: lazy frames, bounded memory, presence."""

from __future__ import annotations

import numpy as np
import pytest

from backend.sam2_engine.tracker import LazyImages, Sam2Tracker, memory_window
from backend.tracker.base import TrackerSession

H, W = 48, 64


class CountingFrames:
    """Frames made on demand; counts reads and never holds the clip."""

    def __init__(self, n: int):
        self.n = n
        self.reads: list[int] = []

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> np.ndarray:
        self.reads.append(i)
        rng = np.random.default_rng(i)
        return rng.integers(0, 255, (H, W, 3), dtype=np.uint8)


def box_mask(y0, y1, x0, x1):
    m = np.zeros((H, W), bool)
    m[y0:y1, x0:x1] = True
    return m


@pytest.fixture
def tracker(sam2_model, precision):
    return Sam2Tracker(sam2_model, precision)


def test_forward_yields_every_frame_once_in_order(tracker):
    frames = CountingFrames(8)
    session = tracker.start(frames)
    assert isinstance(session, TrackerSession)
    mask = box_mask(10, 30, 20, 40)
    session.add_mask(2, 1, mask)
    out = list(session.propagate(2))
    assert [tf.index for tf in out] == list(range(2, 8))
    assert out[0].obj_ids == [1] and out[0].probs.shape == (2, H, W)
    np.testing.assert_array_equal(out[0].masks()[1], mask)  # the given mask is the answer there
    assert all(0.0 <= tf.presence[1] <= 1.0 for tf in out)
    assert out[0].presence[1] > 0.99, "a non-empty given mask means the object is there"


def test_reverse_with_stop_and_a_later_object(tracker):
    frames = CountingFrames(10)
    session = tracker.start(frames)
    session.add_mask(8, 1, box_mask(5, 20, 5, 20))
    session.add_mask(5, 2, box_mask(25, 40, 30, 60))
    out = list(session.propagate(8, reverse=True, stop=3))
    assert [tf.index for tf in out] == [8, 7, 6, 5, 4, 3]
    assert [tf.obj_ids for tf in out] == [[1], [1], [1], [1, 2], [1, 2], [1, 2]]
    assert out[3].probs.shape == (3, H, W)
    np.testing.assert_array_equal(out[3].masks()[2], box_mask(25, 40, 30, 60))


def test_every_propagation_starts_from_clean_memory(tracker):
    session = tracker.start(CountingFrames(6))
    session.add_mask(0, 1, box_mask(10, 30, 20, 40))
    first = [tf.probs for tf in session.propagate(0)]
    list(session.propagate(0, stop=3))
    again = [tf.probs for tf in session.propagate(0)]
    for a, b in zip(first, again, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_memory_and_frames_stay_bounded(tracker, sam2_model):
    n = memory_window(sam2_model) + 12
    frames = CountingFrames(n)
    session = tracker.start(frames)
    session.add_mask(0, 1, box_mask(10, 30, 20, 40))
    session.add_mask(0, 2, box_mask(30, 45, 40, 60))
    for _ in session.propagate(0):
        pass
    state = session.last_state
    images: LazyImages = state["images"]
    assert len(images._cache) <= images.keep
    assert sorted(set(frames.reads)) == list(range(n)) and images.decoded == n
    for mem in session.memories.values():
        assert len(mem.non_cond) <= memory_window(sam2_model) + 1
        assert list(mem.cond) == [0], "keyframes are kept"


def test_remove_object_and_bad_masks(tracker):
    session = tracker.start(CountingFrames(4))
    session.add_mask(0, 1, box_mask(1, 5, 1, 5))
    session.add_mask(0, 2, box_mask(10, 20, 10, 20))
    session.remove_object(1)
    assert [tf.obj_ids for tf in session.propagate(0)] == [[2]] * 4
    with pytest.raises(ValueError, match="needs a mask"):
        list(session.propagate(1))
    with pytest.raises(ValueError, match="differs"):
        session.add_mask(1, 3, np.zeros((5, 5), bool))
    with pytest.raises(IndexError):
        session.add_mask(4, 3, box_mask(1, 2, 1, 2))
