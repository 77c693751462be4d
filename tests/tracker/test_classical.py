"""ClassicalTracker: protocol rules, failure modes, and accuracy on synthetic and real clips."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from backend.frames import ArrayFrameSource, FolderFrameSource
from backend.masks import jaccard
from backend.tracker import classical
from backend.tracker.base import Tracker, TrackerSession
from backend.tracker.classical import (
    ClassicalTracker,
    ClassicalTrackerConfig,
    drop_strays,
    exclusive_probs,
    motion_llr,
    object_motion,
    shape_softness,
    signed_distance,
    splat,
)
from tests.conftest import DAVIS, textured_background

H, W = 120, 160


def _background(seed: int = 0) -> np.ndarray:
    return textured_background(H, W, seed, amplitude=25)


def _disk(cx: float, cy: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[:H, :W]
    return (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r


def _clip(centres, r=14, colour=(220, 40, 40), bg_seed=0, colours=None):
    """Frames with a red disk at each centre (None = hidden); returns frames and masks.
    ``colours``: the disk's colour on each frame instead of one ``colour``."""
    bg = _background(bg_seed)
    frames, masks = [], []
    for i, c in enumerate(centres):
        img = bg.copy()
        m = np.zeros((H, W), bool) if c is None else _disk(c[0], c[1], r)
        img[m] = colour if colours is None else colours[i]
        frames.append(img)
        masks.append(m)
    return frames, masks


class CountingSource:
    """A FrameSource that records every read."""

    def __init__(self, frames):
        self.frames = frames
        self.reads: list[int] = []

    def __len__(self):
        return len(self.frames)

    def __getitem__(self, i):
        self.reads.append(i)
        return self.frames[i]


def _run(frames, masks0, *, start=0, reverse=False, stop=None, config=None):
    session = ClassicalTracker(config or ClassicalTrackerConfig()).start(ArrayFrameSource(frames))
    for oid, m in masks0.items():
        session.add_mask(start, oid, m)
    return list(session.propagate(start, reverse=reverse, stop=stop))


# -- protocol -------------------------------------------------------------------------------


def test_implements_protocols():
    tracker = ClassicalTracker()
    assert isinstance(tracker, Tracker)
    frames, _ = _clip([(40, 60)] * 2)
    assert isinstance(tracker.start(ArrayFrameSource(frames)), TrackerSession)


def test_start_frame_first_and_order_forward_reverse_stop():
    frames, masks = _clip([(30 + 4 * i, 60) for i in range(8)])
    fwd = _run(frames, {1: masks[2]}, start=2)
    assert [o.index for o in fwd] == list(range(2, 8))
    assert np.array_equal(fwd[0].masks()[1], masks[2])  # the conditioned mask itself
    back = _run(frames, {1: masks[5]}, start=5, reverse=True, stop=1)
    assert [o.index for o in back] == [5, 4, 3, 2, 1]


def test_probs_shape_dtype_and_normalised():
    frames, masks = _clip([(40 + 3 * i, 60) for i in range(4)])
    out = _run(frames, {7: masks[0]})
    for o in out:
        assert o.obj_ids == [7]
        assert o.probs.shape == (2, H, W) and o.probs.dtype == np.float32
        assert np.all(np.isfinite(o.probs))
        np.testing.assert_allclose(o.probs.sum(axis=0), 1.0, atol=1e-4)


def test_bad_calls_raise():
    frames, masks = _clip([(40, 60)] * 3)
    session = ClassicalTracker().start(ArrayFrameSource(frames))
    with pytest.raises(ValueError):
        list(session.propagate(0))  # no mask on the start frame
    session.add_mask(1, 1, masks[1])
    with pytest.raises(ValueError):
        session.add_mask(0, 1, np.zeros((10, 10), bool))
    with pytest.raises(IndexError):
        session.add_mask(5, 1, masks[0])
    with pytest.raises(ValueError):
        list(session.propagate(1, stop=0))  # stop behind start going forward


def test_frames_are_read_lazily_one_at_a_time():
    frames, masks = _clip([(30 + 3 * i, 60) for i in range(10)])
    src = CountingSource(frames)
    session = ClassicalTracker().start(src)
    session.add_mask(0, 1, masks[0])
    src.reads.clear()
    it = session.propagate(0)
    for k in range(4):
        next(it)
        assert max(src.reads) == k  # nothing read ahead of what was yielded
    it.close()


# -- tracking quality -----------------------------------------------------------------------


def test_tracks_moving_disk():
    frames, masks = _clip([(30 + 5 * i, 50 + 2 * i) for i in range(16)])
    out = _run(frames, {1: masks[0]})
    ious = [jaccard(o.masks()[1], masks[o.index]) for o in out]
    assert min(ious) > 0.8, ious


def test_reverse_tracks_too():
    frames, masks = _clip([(30 + 5 * i, 60) for i in range(12)])
    out = _run(frames, {1: masks[11]}, start=11, reverse=True)
    assert jaccard(out[-1].masks()[1], masks[0]) > 0.8


def test_a_repeated_frame_changes_nothing():
    """Every frame shown twice (a frame-rate conversion, a paused recording): the repeat brings
    no new evidence, so it gets the mask of the frame it repeats and the frames after it get
    what they get without the repeats. Stepping a repeat re-decided the boundary band again,
    and each re-decision drifts (0.83 IoU after 15 copies of one DAVIS frame)."""
    frames, gts = _davis_clip("car-shadow", 5)
    once = [o.masks()[1] for o in _run(frames, {1: gts[0]})]
    twice = [o.masks()[1] for o in _run([f for f in frames for _ in (0, 1)], {1: gts[0]})]
    assert len(twice) == 2 * len(once) and np.array_equal(twice[0], once[0])
    assert jaccard(twice[1], once[0]) > 0.95  # the keyframe's mask at the tracker's size
    for i, mask in enumerate(once[1:], start=1):
        assert np.array_equal(twice[2 * i], mask) and np.array_equal(twice[2 * i + 1], mask), i
    assert jaccard(once[-1], gts[-1]) > 0.75  # and it still tracks (measured 0.80)


def test_a_still_video_keeps_its_mask():
    """One DAVIS frame repeated: nothing moves, so the mask does not either. With a still
    camera's noise on every copy each frame is re-decided and car-shadow's car walks into its
    shadow (``bench/still_video.py --noise 2``)."""
    frames, gts = _davis_clip("car-shadow", 1)
    held = [o.masks()[1] for o in _run([frames[0]] * 6, {1: gts[0]})]
    assert all(np.array_equal(m, held[1]) for m in held[2:])
    # measured 0.988: what is lost is the working-size round trip of the first tracked frame
    assert jaccard(held[-1], gts[0]) > 0.95


def test_each_propagate_starts_clean():
    frames, masks = _clip([(30 + 5 * i, 60) for i in range(10)])
    session = ClassicalTracker().start(ArrayFrameSource(frames))
    session.add_mask(0, 1, masks[0])
    first = [o.probs for o in session.propagate(0)]
    session.add_mask(9, 1, masks[9])
    list(session.propagate(9, reverse=True))  # a backward pass in between
    again = [o.probs for o in session.propagate(0, stop=8)]
    for a, b in zip(first[:9], again, strict=True):
        np.testing.assert_array_equal(a, b)


def test_keyframe_on_the_way_overrides_prediction():
    frames, masks = _clip([(30 + 5 * i, 60) for i in range(10)])
    session = ClassicalTracker().start(ArrayFrameSource(frames))
    session.add_mask(0, 1, masks[0])
    correction = np.zeros((H, W), bool)
    correction[10:30, 10:40] = True  # deliberately not the disk
    session.add_mask(5, 1, correction)
    out = {o.index: o for o in session.propagate(0)}
    assert np.array_equal(out[5].masks()[1], correction)
    assert jaccard(out[4].masks()[1], masks[4]) > 0.8  # before the keyframe: still tracking


def _sloppy_correction(start: int = 0, config: ClassicalTrackerConfig | None = None):
    """A disk tracked from frame 0 with a correction on frame 5 painted 12 px past it,
    propagated from ``start``: the output masks, the correction and the true masks."""
    frames, masks = _clip([(30 + 5 * i, 60) for i in range(14)])
    session = ClassicalTracker(config or ClassicalTrackerConfig()).start(ArrayFrameSource(frames))
    session.add_mask(0, 1, masks[0])
    sloppy = cv2.dilate(masks[5].astype(np.uint8), np.ones((25, 25), np.uint8)).astype(bool)
    session.add_mask(5, 1, sloppy)
    return {o.index: o.masks()[1] for o in session.propagate(start)}, sloppy, masks


@pytest.mark.parametrize("start", [0, 5])
def test_sloppy_correction_keeps_the_first_keyframes_colours(start):
    """A correction on frame 5 painted well past the object (a common, partial or sloppy mask)
    is shown as given, but the colours learnt on the first keyframe trim it back to the object
    within a few frames. ``start=5`` is the server's quick path, restarted at the correction.
    Re-anchoring the colours on the correction kept the margin (J 0.5 at frame 8, 0.87 at 13);
    learning them on frame 5 when the pass starts there did too (J 0.36)."""
    out, sloppy, masks = _sloppy_correction(start)
    assert sorted(out) == list(range(start, 14)) and np.array_equal(out[5], sloppy)
    assert min(jaccard(out[i], masks[i]) for i in range(8, 14)) > 0.9


def test_restarting_on_a_keyframe_tracks_as_arriving_there():
    """A correction's reach restarts the tracker on the corrected frame; it must give what a
    pass from the first keyframe gives after it, so the object's recent look (its colour
    drifts here) is not lost by restarting."""
    centres = [(30 + 6 * i, 60) for i in range(12)]
    drifting = [(220 - 12 * i, 40 + 12 * i, 40) for i in range(12)]
    frames, masks = _clip(centres, bg_seed=3, colours=drifting)
    session = ClassicalTracker().start(ArrayFrameSource(frames))
    session.add_mask(0, 1, masks[0])
    session.add_mask(6, 1, masks[6] & ~_disk(centres[6][0] + 8, 60, 6))  # a partial correction
    arrived = {tf.index: tf.probs for tf in session.propagate(0)}
    restarted = {tf.index: tf.probs for tf in session.propagate(6)}
    assert set(restarted) == set(range(6, 12))
    for t in range(6, 12):
        np.testing.assert_allclose(restarted[t], arrived[t], atol=1e-5)


def test_object_appearing_on_a_later_keyframe_joins():
    frames, masks = _clip([(30 + 5 * i, 60) for i in range(8)])
    square = np.zeros((H, W), bool)
    square[5:20, 120:150] = True
    session = ClassicalTracker().start(ArrayFrameSource(frames))
    session.add_mask(0, 1, masks[0])
    session.add_mask(3, 2, square)
    out = list(session.propagate(0))
    assert all(o.obj_ids == [1, 2] for o in out)
    assert not out[1].masks()[2].any()  # not there before its keyframe
    assert np.array_equal(out[3].masks()[2], square)


def test_two_objects_never_overlap():
    bg = _background(1)
    frames, m1s, m2s = [], [], []
    for i in range(10):
        img = bg.copy()
        m1 = _disk(40 + 4 * i, 60, 15)
        m2 = _disk(120 - 4 * i, 60, 15) & ~m1  # they meet and occlude in the middle
        img[m1] = (220, 40, 40)
        img[m2] = (40, 40, 220)
        frames.append(img)
        m1s.append(m1)
        m2s.append(m2)
    out = _run(frames, {1: m1s[0], 2: m2s[0]})
    for o in out:
        ms = o.masks()
        assert not np.logical_and(ms[1], ms[2]).any()
    assert jaccard(out[-1].masks()[1], m1s[-1]) > 0.6
    assert jaccard(out[-1].masks()[2], m2s[-1]) > 0.5


def test_remove_object():
    frames, masks = _clip([(40, 60)] * 3)
    session = ClassicalTracker().start(ArrayFrameSource(frames))
    session.add_mask(0, 1, masks[0])
    session.add_mask(0, 2, ~masks[0])
    session.remove_object(2)
    assert all(o.obj_ids == [1] for o in session.propagate(0))


# -- failure modes --------------------------------------------------------------------------


def test_object_leaving_the_frame_disappears():
    frames, masks = _clip([(110 + 8 * i, 60) for i in range(12)])  # gone after ~frame 8
    out = _run(frames, {1: masks[0]})
    assert out[-1].masks()[1].sum() < 0.1 * masks[0].sum()


def test_empty_start_mask_gives_empty_output():
    frames, _ = _clip([(40 + 3 * i, 60) for i in range(5)])
    out = _run(frames, {1: np.zeros((H, W), bool)})
    assert len(out) == 5
    assert all(not o.masks()[1].any() for o in out)


def test_tiny_object_is_kept():
    frames, masks = _clip([(40 + 2 * i, 60) for i in range(8)], r=3)
    out = _run(frames, {1: masks[0]})
    assert jaccard(out[-1].masks()[1], masks[-1]) > 0.4


def test_uniform_frame_in_the_middle():
    frames, masks = _clip([(40 + 3 * i, 60) for i in range(9)])
    frames[4] = np.full((H, W, 3), 128, np.uint8)  # a flash / blank frame
    out = _run(frames, {1: masks[0]})
    assert len(out) == 9
    assert all(np.all(np.isfinite(o.probs)) for o in out)
    assert out[4].masks()[1].sum() < 4 * masks[0].sum()  # no explosion on the blank frame


def test_recovers_after_full_occlusion():
    centres = [(40 + 3 * i, 60) for i in range(5)] + [None] * 4
    centres += [(80 + 3 * i, 60) for i in range(6)]
    frames, masks = _clip(centres)
    out = _run(frames, {1: masks[0]})
    assert out[7].masks()[1].sum() < 0.2 * masks[0].sum()  # hidden: not hallucinated
    assert jaccard(out[-1].masks()[1], masks[-1]) > 0.6  # found again by colour


# -- helpers --------------------------------------------------------------------------------


def test_splat_moves_without_trailing_smear():
    img = np.zeros((20, 30), np.float32)
    img[5:10, 5:10] = 1.0
    grid = np.dstack(np.meshgrid(np.arange(30), np.arange(20))).astype(np.float32)
    flow = np.zeros((20, 30, 2), np.float32)
    flow[..., 0] = 6.0
    out, _ = splat(img, flow, grid, fill=0.0)
    assert out[7, 13] > 0.9 and out[7, 6] < 0.1


@pytest.mark.parametrize("coarse", [1, 2])
def test_object_motion_finds_the_shift_also_coarse_to_fine(coarse):
    rng = np.random.default_rng(4)
    prev = cv2.GaussianBlur(rng.integers(0, 255, (H, W)).astype(np.uint8), (5, 5), 0)
    new = np.roll(prev, (-4, 7), axis=(0, 1))  # the whole scene moves 7 right, 4 up
    mask = np.zeros((H, W), bool)
    mask[40:80, 50:100] = True
    sc, ox, oy, nx, ny = object_motion(prev, new, mask, 12, (0.92, 1.0, 1.08), coarse)
    assert sc == 1.0 and (nx - ox, ny - oy) == (7.0, -4.0)


def test_motion_llr_tells_object_motion_from_background_motion():
    prev = _disk(60, 60, 15)
    fwd = np.zeros((H, W, 2), np.float32)
    fwd[prev] = (4.0, 0.0)  # the object moves right, the background stands still
    new = _disk(64, 60, 15)
    motion_new = np.zeros((H, W, 2), np.float32)
    motion_new[new] = (4.0, 0.0)
    llr = motion_llr(prev, fwd, motion_new, ring_px=8, clip=4.0)
    assert llr[new].min() > 3.0 and llr[~new].max() < -3.0
    # same motion inside and around: no opinion
    still = motion_llr(prev, np.zeros_like(fwd), np.zeros_like(fwd), ring_px=8, clip=4.0)
    assert np.abs(still).max() < 1e-6


def test_drop_strays_drops_detached_parts_that_move_like_the_surroundings():
    prob = np.zeros((H, W), np.float32)
    prob[20:80, 20:80] = 0.9  # the main body
    prob[30:40, 110:120] = 0.8  # a detached part
    prob[90:100, 110:120] = 0.3  # not in the mask at all
    part = np.zeros((H, W), bool)
    part[30:40, 110:120] = True
    motion = np.where(part, -2.0, 3.0).astype(np.float32)  # the part moves like the ground
    out = drop_strays(prob, motion)
    assert out.dtype == np.float32
    assert np.all(out[part] == 0.0)
    assert np.array_equal(out[~part], prob[~part])  # the rest, below 0.5 too, as it was
    # a detached part that moves with the object stays
    assert np.array_equal(drop_strays(prob, np.full((H, W), 1.0, np.float32)), prob)
    # the main body stays whatever its motion says, and without a motion map nothing changes
    assert np.array_equal(drop_strays(prob, np.full((H, W), -1.0, np.float32))[20:80, 20:80],
                          prob[20:80, 20:80])  # fmt: skip
    assert drop_strays(prob, None) is prob


def test_a_leak_the_object_leaves_behind_is_not_reported():
    """A keyframe mask that took in a like-coloured patch of the still background next to
    the object: the patch stays where it is while the object moves on. The tracker's shape
    prior holds it and its colour is the object's, but it moves like the surroundings, so
    once it has come apart from the object it is no longer in the output."""
    bg = _background()
    patch = np.zeros((H, W), bool)
    patch[50:70, 18:34] = True  # left of the disk on frame 0, touching it
    frames, masks = [], []
    for i in range(12):
        m = _disk(46 + 4 * i, 60, 14)
        img = bg.copy()
        img[patch | m] = (220, 40, 40)
        frames.append(img)
        masks.append(m)
    out = _run(frames, {1: masks[0] | patch})
    last = out[-1].masks()[1]
    assert np.count_nonzero(last & patch) < 0.05 * patch.sum()  # before: 319 of 320 pixels
    assert jaccard(last, masks[-1]) > 0.9  # before: 0.66


def test_shape_prior_softens_where_the_flow_on_the_object_is_unreliable():
    mask = _disk(60, 60, 15)
    conf = np.ones((H, W), np.float32)
    assert shape_softness(3.0, conf, mask, 1.0) == pytest.approx(3.0)
    conf[~mask] = 0.1  # unreliable flow off the object does not count
    assert shape_softness(3.0, conf, mask, 1.0) == pytest.approx(3.0)
    conf[mask] = 0.5
    assert shape_softness(3.0, conf, mask, 1.0) == pytest.approx(3.0 / 0.65)
    conf[:] = 0.0  # no trust at all: as soft as the carried probability's floor allows
    assert shape_softness(3.0, conf, mask, 1.0) == pytest.approx(10.0)
    assert shape_softness(3.0, conf, np.zeros((H, W), bool), 1.0) == 3.0


def test_the_shape_prior_softens_with_a_power_of_the_objects_mistrust():
    """``power`` 2: a trusted object's prior stays as tight; one whose flow is half trusted
    gets a band four times as wide, not twice."""
    mask = _disk(60, 60, 15)
    conf = np.ones((H, W), np.float32)
    assert shape_softness(3.0, conf, mask, 2.0) == pytest.approx(3.0)
    conf[mask] = (0.5 - 0.3) / 0.7  # warp trust 0.5
    assert shape_softness(3.0, conf, mask, 1.0) == pytest.approx(6.0)
    assert shape_softness(3.0, conf, mask, 2.0) == pytest.approx(12.0)
    conf[:] = 0.0
    assert shape_softness(3.0, conf, mask, 2.0) == pytest.approx(3.0 / 0.09)


def test_each_step_softens_the_shape_prior_by_the_objects_own_flow_confidence(monkeypatch):
    seen = []

    def spy(sigma, conf, mask, power):
        seen.append((sigma, power, mask.sum(), conf.shape == mask.shape))
        return shape_softness(sigma, conf, mask, power)

    monkeypatch.setattr(classical, "shape_softness", spy)
    frames, masks = _clip([(30 + 5 * i, 60) for i in range(5)])
    _run(frames, {1: masks[0]}, config=ClassicalTrackerConfig(shape_sigma=2.5))
    assert len(seen) == 4  # one per object and tracked frame
    assert all(sigma == 2.5 and area > 0 and same for sigma, _, area, same in seen)
    assert {power for _, power, _, _ in seen} == {ClassicalTrackerConfig().softness_power}


def test_signed_distance_and_exclusive_probs():
    m = np.zeros((9, 9), bool)
    m[2:7, 2:7] = True
    sd = signed_distance(m)
    assert sd[4, 4] > 0 > sd[0, 0]
    p = exclusive_probs(np.stack([np.full((2, 2), 0.9), np.full((2, 2), 0.6)]).astype(np.float32))
    assert p.shape == (3, 2, 2)
    assert np.all(np.argmax(p, axis=0) == 1)


def test_background_model_weighs_the_ring_the_object_can_leak_into():
    """A colour the object has a little of, and which lies right beside it (a shadow), is
    background only because the ring counts more than the rest of the frame."""
    h, w = 60, 80
    idx = np.zeros((h, w), np.int32)  # colour 0: the far background
    mask = np.zeros((h, w), bool)
    mask[20:40, 20:40] = True
    idx[mask] = 1  # the object's main colour
    idx[38:40, 20:40] = 2  # the object's dark part (a tenth of it)
    idx[40:46, 20:40] = 2  # the same dark colour just below it, outside
    bins, ring_px = 4, 6

    def llr(ring_weight):
        cfg = ClassicalTrackerConfig(ring_weight=ring_weight, color_prior=2.0)
        fg, bg = classical._models_from_mask(idx, mask, bins, ring_px, cfg)
        return float(np.log(fg[2]) - np.log(bg[2]))

    # Against the whole frame the dark colour looks like the object; with the default
    # weight (and 3 did not do it) it is background.
    assert llr(ClassicalTrackerConfig().ring_weight) < 0.0 < llr(3.0) < llr(0.0)
    assert llr(20.0) < llr(8.0)


def test_fine_colour_bins_keep_out_a_band_of_almost_the_objects_colour():
    """A black disk moves with a band of near-black right below it (a reflection: the same
    motion, a colour 8 levels away). 4-bit histograms put both colours in one bin, so the band
    looked like the object and was taken in within a few frames; 6-bit ones (the default)
    tell them apart."""
    bg = _background(3)
    yy, xx = np.mgrid[:H, :W]
    frames, masks = [], []
    for i in range(12):
        cx, cy = 40 + 2 * i, 50
        img, disk = bg.copy(), _disk(cx, cy, 14)
        band = (np.abs(xx - cx) <= 14) & (yy > cy) & (yy <= cy + 24) & ~disk
        img[band] = (13, 14, 12)
        img[disk] = (5, 6, 4)
        frames.append(img)
        masks.append(disk)

    def mean_iou(config: ClassicalTrackerConfig) -> float:
        out = _run(frames, {1: masks[0]}, config=config)
        return float(np.mean([jaccard(o.masks()[1], masks[o.index]) for o in out[1:]]))

    # measured: 0.98 with the default, 0.63 with 4 bits per channel
    assert mean_iou(ClassicalTrackerConfig()) > 0.95
    assert mean_iou(ClassicalTrackerConfig(color_bits=4)) < 0.8


def test_the_histogram_prior_weighs_the_same_at_any_resolution():
    idx = np.array([0, 0, 1, 5])
    weights = np.ones(4)
    for bins in (8, 64, 512):
        h = classical.histogram(idx, weights, bins, prior=4.0)
        assert h.sum() == pytest.approx(1.0)
        # 2 of the 4 samples, plus the prior's share, out of 4 + 4
        assert h[0] == pytest.approx((2 + 4.0 / bins) / 8.0)
        assert h[7] == pytest.approx((4.0 / bins) / 8.0)


@pytest.mark.parametrize("recent_bits, trimmed", [(5, True), (6, False)])
def test_recent_models_one_bit_coarser_do_not_memorise_what_was_taken_in(recent_bits, trimmed):
    """The recent colour models learn from the tracker's own output. At the full 6-bit
    resolution the exact colours of the background a sloppy correction took in became the
    object's, and the still background kept them (J 0.73 on frames 8–13); one bit coarser
    (the default) the first keyframe's colours trim the margin again (0.96)."""
    out, _, masks = _sloppy_correction(config=ClassicalTrackerConfig(recent_color_bits=recent_bits))
    worst = min(jaccard(out[i], masks[i]) for i in range(8, 14))
    assert (worst > 0.9) is trimmed, worst


def test_coarse_index_is_the_colour_bin_at_fewer_bits():
    from backend.segmenter.classical import color_index

    rgb = np.random.default_rng(1).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    for bits, coarse in ((6, 5), (6, 3), (4, 4)):
        fine = color_index(rgb, bits)
        assert np.array_equal(classical.coarse_index(fine, bits, coarse), color_index(rgb, coarse))


def test_likelihood_spreads_the_recent_models_coarse_bins_over_their_fine_bins():
    cfg = ClassicalTrackerConfig(color_bits=3, recent_color_bits=2, anchor_share=0.5)
    flat_fine, flat_coarse = np.full(512, 1 / 512, np.float32), np.full(64, 1 / 64, np.float32)
    fg_recent = np.zeros(64, np.float32)
    fg_recent[0] = 1.0  # all of the recent object in the first coarse bin
    st = classical._ObjectState(None, flat_fine, flat_fine, fg_recent, flat_coarse, 1.0, 1.0)
    fine = np.array([0b001_001_001, 0b010_000_000])  # inside and outside coarse bin 0
    llr = st.likelihood(fine, classical.coarse_index(fine, 3, 2), cfg)
    # fg: 0.5 / 512 + 0.5 · 1 / 8 inside, 0.5 / 512 outside; bg: 1 / 512 everywhere
    assert llr[0] == pytest.approx(min(np.log(0.5 + 32), cfg.color_clip))
    assert llr[1] == pytest.approx(np.log(0.5))


# -- real video -----------------------------------------------------------------------------


def _davis_clip(
    seq: str, n: int, size: tuple[int, int] | None = (427, 240)
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The first ``n`` frames of a shared DAVIS sequence and their masks, at ``size`` (W, H;
    ``None``: the native 854×480)."""
    src = FolderFrameSource(DAVIS / "JPEGImages" / "480p" / seq)
    frames, gts = [], []
    for i in range(n):
        g = cv2.imread(str(DAVIS / "Annotations" / "480p" / seq / f"{i:05d}.png"), 0)
        if size is None:
            frames.append(src[i])
        else:
            frames.append(cv2.resize(src[i], size, interpolation=cv2.INTER_AREA))
            g = cv2.resize(g, size, interpolation=cv2.INTER_NEAREST)
        gts.append(g > 127)
    return frames, gts


def _ious_from_ground_truth(frames, gts, config=None) -> list[float]:
    out = _run(frames, {1: gts[0]}, config=config)
    return [jaccard(o.masks()[1], gts[o.index]) for o in out[1:]]


def test_real_davis_clip_from_ground_truth():
    ious = _ious_from_ground_truth(*_davis_clip("blackswan", 8))
    # 0.80 before the motion cue; the swan's reflection moves with it and is now partly
    # taken in (the known cost of the cue that lifts the 14-sequence mean, benchmarks.md).
    assert np.mean(ious) > 0.75, ious


def test_native_size_output_keeps_the_boundary_where_the_object_is():
    """At DAVIS's native 854×480 the tracker works at about half size, and the output is
    upsampled. Bilinear upsampling (the default) keeps the car's outline; the guided
    upsampling it replaced snapped it to other edges (car-roundabout from the ground truth,
    mean F of frames 1–9: 0.75 against 0.69)."""
    from backend.eval.metrics import f_measure

    frames, gts = _davis_clip("car-roundabout", 10, size=None)
    out = [o.masks()[1] for o in _run(frames, {1: gts[0]})]
    assert out[1].shape == (480, 854)
    scores = [f_measure(g, m) for g, m in zip(gts[1:], out[1:], strict=True)]
    assert np.mean(scores) > 0.72, scores


def test_weighing_the_ring_keeps_the_swans_reflection_out():
    """Blackswan from the ground truth: the dark water beside the swan moves with it and has
    the colour of its underside; counted mostly as the ring, it is taken in less."""
    frames, gts = _davis_clip("blackswan", 12)
    weighted = np.mean(_ious_from_ground_truth(frames, gts))
    flat = np.mean(_ious_from_ground_truth(frames, gts, ClassicalTrackerConfig(ring_weight=0.0)))
    # measured: 0.797 with the default, 0.733 with the ring counted like the rest of the frame
    assert weighted > flat + 0.03, (weighted, flat)


def test_backward_pass_from_a_sloppy_correction_learns_the_earlier_keyframes_colours():
    """The backward reach of a correction (``pipeline.splice_backward``): a sloppy correction on
    frame 12 tracked back towards the keyframe on frame 0, which the pass never reaches. Given
    that keyframe, the colours learnt there trim the margin; without it they do not."""
    frames, masks = _clip([(30 + 5 * i, 60) for i in range(14)])
    sloppy = cv2.dilate(masks[12].astype(np.uint8), np.ones((25, 25), np.uint8)).astype(bool)

    def back(with_look: bool) -> dict[int, np.ndarray]:
        session = ClassicalTracker().start(ArrayFrameSource(frames))
        session.add_mask(12, 1, sloppy)
        if with_look:
            session.add_mask(0, 1, masks[0])
        return {o.index: o.masks()[1] for o in session.propagate(12, reverse=True, stop=1)}

    looked, alone = back(True), back(False)
    assert sorted(looked) == list(range(1, 13)) and np.array_equal(looked[12], sloppy)
    j_look = [jaccard(looked[i], masks[i]) for i in range(1, 9)]
    j_alone = [jaccard(alone[i], masks[i]) for i in range(1, 9)]
    assert min(j_look) > 0.9 and max(j_alone) < min(j_look)
