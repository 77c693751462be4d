"""TrackedFrame: masks from per-channel probabilities."""

from __future__ import annotations

import numpy as np

from backend.tracker.base import TrackedFrame


def test_one_object_masks_equal_the_argmax_and_ties_go_to_background():
    rng = np.random.default_rng(0)
    p = rng.random((40, 50)).astype(np.float32)
    p[:5] = 0.5  # exact ties
    probs = np.stack([1.0 - p, p])
    got = TrackedFrame(index=3, obj_ids=[7], probs=probs).masks()
    assert list(got) == [7]
    assert np.array_equal(got[7], np.argmax(probs, axis=0) == 1)
    assert not got[7][:5].any()


def test_several_objects_never_overlap():
    rng = np.random.default_rng(1)
    probs = rng.random((4, 30, 30)).astype(np.float32)
    masks = TrackedFrame(index=0, obj_ids=[1, 2, 5], probs=probs).masks()
    stacked = np.stack([masks[o] for o in (1, 2, 5)])
    assert stacked.sum(axis=0).max() <= 1
    assert np.array_equal(stacked.any(axis=0), np.argmax(probs, axis=0) > 0)
