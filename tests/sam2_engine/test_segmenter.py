"""SAM 2's image path through the Segmenter protocol."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from backend.sam2_engine.segmenter import Sam2Segmenter, prior_to_mask_input
from backend.segmenter.base import Segmenter

H, W = 60, 90


@pytest.fixture
def seg(sam2_model, precision):
    return Sam2Segmenter(sam2_model, precision)


@pytest.fixture
def image():
    return np.random.default_rng(3).integers(0, 255, (H, W, 3), dtype=np.uint8)


def test_masks_come_back_at_the_native_size(seg, image):
    assert isinstance(seg, Segmenter)
    seg.set_image(image)
    one = seg.predict(np.array([[40.0, 30.0]]), np.array([1]))
    assert one.masks.shape == (3, H, W) and one.masks.dtype == bool  # ambiguous single click
    assert one.low_res_logits.shape == (3, 16, 16) and one.scores.shape == (3,)
    two = seg.predict(np.array([[40.0, 30.0], [5.0, 5.0]]), np.array([1, 0]))
    assert two.masks.shape == (1, H, W)
    boxed = seg.predict(np.zeros((0, 2)), np.zeros(0), box=np.array([10, 10, 60, 50]))
    assert boxed.masks.shape == (1, H, W)
    empty = seg.predict(np.zeros((0, 2)), np.zeros(0))
    assert not empty.masks.any() and empty.best_score() == 0.0


def test_a_prior_changes_the_answer(seg, image):
    seg.set_image(image)
    pts, lab = np.array([[40.0, 30.0], [80.0, 50.0]]), np.array([1, 1])
    plain = seg.predict(pts, lab).low_res_logits
    prior = np.zeros((H, W), np.float32)
    prior[10:50, 20:70] = 1.0
    with_prior = seg.predict(pts, lab, mask_prior=prior).low_res_logits
    assert not np.allclose(plain, with_prior)
    with pytest.raises(ValueError, match="prior shape"):
        seg.predict(pts, lab, mask_prior=np.zeros((5, 5), np.float32))


def test_prior_conversion_is_a_logit_in_the_squashed_frame():
    prior = np.zeros((40, 80), np.float32)
    prior[:, :40] = 1.0  # left half
    m = prior_to_mask_input(prior, 16)
    assert m.shape == (1, 16, 16)
    assert (m[0, :, :7] > 5).all() and (m[0, :, 9:] < -5).all()


def test_features_are_reused_per_cache_key(seg, image):
    calls = []
    encode = seg.predictor.set_image
    seg.predictor.set_image = lambda img: (calls.append(1), encode(img))
    seg.set_image(image, cache_key=("task", 0))
    seg.set_image(image, cache_key=("task", 0))
    assert len(calls) == 1
    seg.set_image(image[::-1].copy(), cache_key=("task", 0))  # same key, other pixels
    assert len(calls) == 2
    with pytest.raises(ValueError, match="uint8"):
        seg.set_image(image.astype(np.float32))


def test_the_package_info_lines_per_image_are_dropped(seg, image, caplog):
    with caplog.at_level(logging.INFO):
        seg.set_image(image)
        logging.getLogger().warning("still shown")
    messages = [r.getMessage() for r in caplog.records]
    assert "still shown" in messages
    assert not [m for m in messages if "embeddings" in m], messages
