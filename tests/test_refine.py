"""Quality signal and TAM step-3 refinement."""

from __future__ import annotations

import numpy as np
import pytest

from backend.frames import ArrayFrameSource
from backend.pipeline import segment_video
from backend.refine import (
    RefineConfig,
    accept_refinement,
    mask_quality,
    prompts_from_mask,
    refine_mask,
)
from backend.segmenter.base import SegmentOutput
from backend.types import Click, ObjectPrompt
from tests.fakes import fake_engine


def box(h=60, w=80, y0=20, y1=40, x0=20, x1=50):
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m


def test_quality_rewards_confidence_and_stability():
    m = box()
    sure = np.where(m, 0.95, 0.05).astype(np.float32)
    unsure = np.where(m, 0.55, 0.45).astype(np.float32)
    assert mask_quality(sure, m, None) > 0.9
    assert mask_quality(unsure, m, None) < 0.6
    assert mask_quality(sure, m, int(m.sum())) == pytest.approx(mask_quality(sure, m, None))
    assert mask_quality(sure, m, int(m.sum()) * 4) < 0.5, "area jump ×4 is penalised"
    assert mask_quality(sure, np.zeros_like(m), None) == 0.0


def test_quality_penalises_fragments():
    one = box()
    p = np.full(one.shape, 0.9, np.float32)
    frag = box() | box(y0=45, y1=58, x0=60, x1=78)
    assert mask_quality(p, frag, None) < mask_quality(p, one, None)


def test_prompts_sit_inside_and_outside():
    m = box()
    pts, labels = prompts_from_mask(m)
    assert labels.tolist() == [1, 0]
    (px, py), (nx, ny) = pts
    assert m[int(py), int(px)] and not m[int(ny), int(nx)]


def test_acceptance_rule():
    m = box()
    cfg = RefineConfig(min_gain=0.05, min_iou=0.3)
    assert accept_refinement(m, 0.4, m, 0.9, cfg)
    assert not accept_refinement(m, 0.4, m, 0.42, cfg), "not better enough"
    assert not accept_refinement(m, 0.4, box(x0=60, x1=78), 0.99, cfg), "another object"
    assert not accept_refinement(m, 0.4, np.zeros_like(m), 0.99, cfg), "empty"


class FixedSegmenter:
    """Returns ``mask`` with ``score`` whatever the prompts; records what it got."""

    name = "fixed"

    def __init__(self, mask, score):
        self.mask, self.score, self.calls = mask, score, []

    def set_image(self, image, *, cache_key=None):
        self.calls.append(("set", cache_key))

    def predict(self, point_coords, point_labels, *, mask_prior=None, multimask_output=True):
        self.calls.append(("predict", point_coords.copy(), mask_prior))
        return SegmentOutput(masks=self.mask[None], scores=np.array([self.score]))


def test_refine_mask_uses_prob_as_prior_and_keeps_other_objects_out():
    m = box()
    better = box(x0=18, x1=55)
    others = box(x0=52, x1=60)
    seg = FixedSegmenter(better, 0.95)
    prob = np.where(m, 0.6, 0.1).astype(np.float32)
    r = refine_mask(
        seg,
        np.zeros((60, 80, 3), np.uint8),
        prob,
        m,
        0.5,
        RefineConfig(),
        others=others,
        cache_key=("t", 3),
    )
    assert r.accepted and r.score == 0.95
    assert not (r.mask & others).any()
    assert seg.calls[0] == ("set", ("t", 3))
    assert seg.calls[1][2] is not None and seg.calls[1][2].shape == m.shape


def _frames(n=6):
    return ArrayFrameSource([np.zeros((60, 80, 3), np.uint8) for _ in range(n)])


@pytest.mark.parametrize("mode, expected", [("off", 0), ("always", 5), ("auto", 5)])
def test_pipeline_refines_poor_frames_only_in_modes(mode, expected):
    engine = fake_engine()  # tracked frames have quality 0.8 (copy tracker)
    calls = []
    original = engine.segmenter.predict

    def counting(*a, **kw):
        calls.append(kw.get("mask_prior") is not None)
        return original(*a, **kw)

    engine.segmenter.predict = counting
    cfg = RefineConfig(mode=mode, threshold=0.9, max_frames=20)
    obj = ObjectPrompt(1, "A", clicks={0: [Click(40, 30)]})
    out = list(segment_video(engine, _frames(), [obj], refine=cfg))
    assert len(out) == 6
    assert sum(calls) == expected, "keyframe 0 is never refined; the 5 others are"


@pytest.mark.parametrize("keyframe", [0, 3])
def test_refinement_is_capped_per_run(keyframe):
    """One cap for the run: a keyframe mid-clip (backward and forward passes) refines no more
    frames than one on frame 0."""
    engine = fake_engine()
    obj = ObjectPrompt(1, "A", clicks={keyframe: [Click(40, 30)]})
    before = engine.segmenter.set_calls
    list(segment_video(engine, _frames(), [obj], refine=RefineConfig(mode="always", max_frames=2)))
    assert engine.segmenter.set_calls - before == 1 + 2
