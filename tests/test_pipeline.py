"""The pipeline's keyframe / propagation / merge logic, on a fake engine."""

from __future__ import annotations

import numpy as np
import pytest

from backend.frames import ArrayFrameSource
from backend.pipeline import Cancelled, segment_video
from backend.types import Click, ObjectPrompt
from tests.conftest import fake_engine


def frames(n=8, h=60, w=80):
    return ArrayFrameSource([np.full((h, w, 3), i, np.uint8) for i in range(n)])


def run(objs, n=8, **kw):
    engine = fake_engine()
    out = list(segment_video(engine, frames(n), objs, **kw))
    return engine, out


def test_one_click_covers_every_frame_once():
    obj = ObjectPrompt(1, "A", clicks={3: [Click(40, 30)]})
    _, out = run([obj])
    assert sorted(fp.index for fp in out) == list(range(8))
    assert [fp.index for fp in out][:3] == [2, 1, 0], "backward part first"
    for fp in out:
        assert fp.masks[1][30, 40] and fp.scores[1] > 0


def test_keyframe_score_comes_from_the_segmenter():
    obj = ObjectPrompt(1, "A", clicks={0: [Click(40, 30)]})
    _, out = run([obj])
    by_index = {fp.index: fp for fp in out}
    assert by_index[0].scores[1] == pytest.approx(0.9)
    assert by_index[5].scores[1] == pytest.approx(0.8)


def test_objects_born_on_different_frames():
    a = ObjectPrompt(1, "A", clicks={1: [Click(15, 15)]})
    b = ObjectPrompt(2, "B", clicks={5: [Click(60, 40)]})
    _, out = run([a, b])
    assert sorted(fp.index for fp in out) == list(range(8))
    for fp in out:
        assert set(fp.masks) == {1, 2}, fp.index
        assert fp.masks[1][15, 15] and fp.masks[2][40, 60]
        assert not (fp.masks[1] & fp.masks[2]).any()


def test_correction_on_a_later_frame_wins_from_there():
    obj = ObjectPrompt(1, "A", clicks={0: [Click(15, 15)], 4: [Click(60, 40)]})
    _, out = run([obj])
    by_index = {fp.index: fp.masks[1] for fp in out}
    assert by_index[3][15, 15] and not by_index[3][40, 60]
    assert by_index[4][40, 60] and not by_index[4][15, 15]
    assert by_index[7][40, 60]


def test_one_encode_per_keyframe_for_all_objects():
    a = ObjectPrompt(1, "A", clicks={2: [Click(15, 15)]})
    b = ObjectPrompt(2, "B", clicks={2: [Click(60, 40)]})
    engine, _ = run([a, b])
    assert engine.segmenter.set_calls == 1


def test_painted_mask_without_clicks_is_used_as_is():
    m = np.zeros((60, 80), bool)
    m[5:10, 5:10] = True
    _, out = run([ObjectPrompt(1, "A", masks={2: m})])
    assert all((fp.masks[1] == m).all() for fp in out)


def test_negative_only_click_gives_empty_masks():
    obj = ObjectPrompt(1, "A", clicks={0: [Click(40, 30, positive=False)]})
    _, out = run([obj])
    assert len(out) == 8 and not any(fp.masks[1].any() for fp in out)


def test_keyframe_outside_the_video():
    with pytest.raises(ValueError, match="outside"):
        run([ObjectPrompt(1, "A", clicks={9: [Click(1, 1)]})])


def test_progress_and_cancel():
    seen = []
    obj = ObjectPrompt(1, "A", clicks={0: [Click(40, 30)]})
    run([obj], progress=lambda d, t: seen.append((d, t)))
    assert seen[-1] == (8, 8) and len(seen) == 8
    with pytest.raises(Cancelled):
        run([obj], should_stop=lambda: True)


def test_no_objects_yields_nothing():
    assert run([])[1] == []


def test_forward_only_pass():
    obj = ObjectPrompt(1, "A", clicks={3: [Click(40, 30)]})
    _, out = run([obj], backward=False)
    assert [fp.index for fp in out] == [3, 4, 5, 6, 7]


def test_forward_pass_stops_where_asked():
    obj = ObjectPrompt(1, "A", clicks={3: [Click(40, 30)]})
    seen = []
    _, out = run([obj], backward=False, stop=5, progress=lambda d, t: seen.append((d, t)))
    assert [fp.index for fp in out] == [3, 4, 5]
    assert seen[-1] == (3, 3)
    with pytest.raises(ValueError, match="stop"):
        run([obj], stop=5)  # a stop needs backward=False


def test_respect_clicks_adds_and_removes_only_near_the_clicks():
    from backend.pipeline import clicks_violated, respect_clicks

    mask = np.zeros((60, 80), bool)
    mask[10:30, 10:30] = True
    fresh = np.zeros_like(mask)
    fresh[10:30, 10:30] = True
    fresh[35:50, 50:70] = True  # the fresh segmentation also covers the missed part
    clicks = [Click(60, 40, True), Click(15, 15, False)]
    assert clicks_violated(mask, clicks)
    out = respect_clicks(mask, clicks, fresh)
    assert not clicks_violated(out, clicks)
    assert out[35:50, 50:70].all(), "the missed part containing the positive click is added"
    assert out[25, 25] and not out[15, 15], "a small disc is removed around the negative click"
    assert not out[0:5, :].any(), "nothing changes away from the clicks"


def test_a_positive_click_does_not_bring_in_a_leak_far_from_it():
    from backend.pipeline import respect_clicks

    mask = np.zeros((60, 80), bool)
    mask[10:30, 10:30] = True
    fresh = np.zeros_like(mask)
    fresh[10:30, 10:30] = True
    fresh[30:60, :] = True  # the fresh cut leaked over the whole lower half
    out = respect_clicks(mask, [Click(20, 40, True)], fresh)
    assert out[40, 20], "the click is honoured"
    assert out[10:30, 10:30].all() and not out[55, 75], "the far part of the leak stays out"
    assert not out[31, 20], "pixels nearer to the mask than to the click are not the click's"


def test_correction_with_prior_never_ignores_a_click():
    from backend.segmenter.base import SegmentOutput

    engine = fake_engine()
    clicks_only = engine.segmenter.predict

    def sticky(points, labels, *, mask_prior=None, multimask_output=True, prior_is_own=False):
        if mask_prior is None:
            return clicks_only(points, labels, multimask_output=multimask_output)
        return SegmentOutput(masks=(mask_prior > 0.5)[None], scores=np.array([0.9]))

    engine.segmenter.predict = sticky  # a segmenter that ignores clicks when given a prior
    prior = np.zeros((60, 80), bool)
    prior[5:15, 5:15] = True
    obj = ObjectPrompt(1, "A", clicks={2: [Click(70, 50)]}, masks={2: prior})
    out = list(segment_video(engine, frames(), [obj]))
    frame2 = next(fp for fp in out if fp.index == 2).masks[1]
    assert frame2[50, 70], "the positive click is honoured"
    assert frame2[5:15, 5:15].all(), "the prior is kept"


def test_one_click_asks_for_candidates_with_or_without_a_box():
    """The segmenter chooses among its candidates for a single click, also with a box (the
    weights-free one cuts them to the box; SAM's engines take one mask for a box themselves);
    with two clicks it is asked for one mask."""
    from backend.types import Box

    engine = fake_engine()
    asked = []
    predict = engine.segmenter.predict

    def recording(
        points, labels, *, mask_prior=None, multimask_output=True, box=None, prior_is_own=False
    ):
        asked.append((len(points), box is not None, multimask_output))
        return predict(points, labels, multimask_output=multimask_output, box=box)

    engine.segmenter.predict = recording
    box = {0: Box(10, 10, 60, 50)}
    for clicks in ([Click(40, 30)], [Click(40, 30), Click(20, 20)]):
        obj = ObjectPrompt(1, "A", clicks={0: clicks}, boxes=box)
        list(segment_video(engine, frames(), [obj]))
    assert asked == [(1, True, True), (2, True, False)]


def _box(y0, y1, x0, x1, h=60, w=80):
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m


def test_splice_backward_switches_where_the_passes_agree_best_and_spares_other_objects():
    from backend.pipeline import splice_backward
    from backend.refine import mask_quality

    other = _box(30, 50, 35, 70)  # object 2, untouched by the correction
    corrected = _box(14, 34, 14, 40)  # object 1's corrected mask on frame 4: overlaps both
    # object 1 as the forward pass from frame 0 left it: IoU with the corrected mask (which
    # the fake tracker carries back unchanged) 0.39 on frame 1, 0.92 on 2, 0.60 on 3
    old = {1: _box(10, 30, 10, 30), 2: _box(14, 34, 14, 38), 3: _box(12, 32, 12, 34)}
    old[0] = old[1]  # the keyframe on 0: the pass's looks

    def kept(t):
        return {1: old[t], 2: other}, {1: 0.4, 2: 0.7}

    out = list(splice_backward(fake_engine(), frames(), 4, {1: corrected}, {1: 0}, kept))
    assert [fp.index for fp in out] == [3, 2, 1]
    by = {fp.index: fp for fp in out}
    # the seam is frame 2, where the passes agree best: from it on the backward mask
    for t in (2, 3):
        assert np.array_equal(by[t].masks[1], corrected & ~other), "never takes object 2's"
    assert np.array_equal(by[1].masks[1], old[1]) and by[1].scores[1] == 0.4
    q = mask_quality(0.8 * corrected.astype(np.float32), corrected, None)
    assert by[2].scores[1] == pytest.approx(q) and by[3].scores[1] == pytest.approx(q)
    assert all(np.array_equal(fp.masks[2], other) and fp.scores[2] == 0.7 for fp in out)


def test_splice_backward_lets_a_backward_pass_that_arrives_better_cover_the_stretch():
    """Where the two passes agree more on the lowest frame than on the highest, the backward
    pass arrives at the earlier keyframe better than the forward pass at the later one, and
    covers every frame, even where they agree best in between."""
    from backend.pipeline import splice_backward

    corrected = _box(14, 34, 14, 40)
    # IoU with the corrected mask 0.85 on frame 1, 0.92 on 2, 0.60 on 3
    old = {1: _box(14, 34, 14, 36), 2: _box(14, 34, 14, 38), 3: _box(12, 32, 12, 34)}
    old[0] = old[1]

    def kept(t):
        return {1: old[t]}, {1: 0.4}

    out = list(splice_backward(fake_engine(), frames(), 4, {1: corrected}, {1: 0}, kept))
    assert [fp.index for fp in out] == [3, 2, 1]
    assert all(np.array_equal(fp.masks[1], corrected) for fp in out), "frame 1 too"


def test_the_seam_is_where_the_passes_agree_best_unless_the_backward_pass_arrives_better():
    from backend.pipeline import _seam

    assert _seam({1: 0.2, 2: 0.9, 3: 0.5}, 0, 4) == 2
    assert _seam({1: 0.5, 2: 0.9, 3: 0.8}, 0, 4) == 2
    assert _seam({1: 0.8, 2: 0.9, 3: 0.5}, 0, 4) == 1, "the backward pass arrives better"
    assert _seam({1: 0.5, 2: 0.5, 3: 0.5}, 0, 4) == 2, "the middle of 0..4"
    assert _seam({1: 0.5, 2: 0.5, 3: 0.5, 4: 0.5}, 0, 5) == 3, "two middles: the later"
    assert _seam({5: 0.7, 9: 0.7}, 0, 10) == 5
    assert _seam({}, 0, 4) is None


def test_splice_backward_stops_at_the_previous_keyframe_and_on_request():
    from backend.pipeline import splice_backward

    def kept(t):
        return {1: _box(0, 10, 0, 10)}, {1: 0.5}

    out = list(splice_backward(fake_engine(), frames(), 6, {1: _box(5, 20, 5, 20)}, {1: 3}, kept))
    assert [fp.index for fp in out] == [5, 4], "frames after the previous keyframe only"
    assert (
        list(splice_backward(fake_engine(), frames(), 4, {1: _box(0, 5, 0, 5)}, {1: 3}, kept)) == []
    )
    with pytest.raises(Cancelled):
        list(splice_backward(fake_engine(), frames(), 6, {1: _box(5, 20, 5, 20)}, {1: 0}, kept,
                            should_stop=lambda: True))  # fmt: skip
    with pytest.raises(ValueError):
        list(splice_backward(fake_engine(), frames(), 4, {1: _box(0, 5, 0, 5)}, {1: 4}, kept))


def test_splice_backward_yields_only_the_frames_asked_for():
    """``low``/``high`` pick the frames to splice and to seek the seam among; the pass
    still starts on the anchor, and frames above ``high`` are neither asked about nor
    yielded."""
    from backend.pipeline import splice_backward

    asked = []

    def kept(t):
        asked.append(t)
        return {1: _box(0, 10, 0, 10)}, {1: 0.5}

    engine = fake_engine()
    out = list(splice_backward(engine, frames(), 7, {1: _box(2, 12, 2, 12)}, {1: 1}, kept,
                               low=3, high=5))  # fmt: skip
    assert [fp.index for fp in out] == [5, 4, 3]
    assert sorted(set(asked)) == [1, 3, 4, 5], "frame 1: the looks; 3-5: the seam, the output"
    (session,) = engine.tracker.sessions
    assert [(f, o) for f, o, _ in session.added] == [(7, 1), (1, 1)]
    assert list(splice_backward(engine, frames(), 7, {1: _box(2, 12, 2, 12)}, {1: 1}, kept,
                               low=5, high=4)) == []  # fmt: skip


def test_same_place_needs_half_of_the_smaller_mask_inside_the_other():
    from backend.pipeline import same_place

    big = _box(10, 30, 10, 30)  # 400 px
    assert same_place(big, _box(20, 30, 10, 30)) and same_place(_box(20, 30, 10, 30), big)
    assert same_place(big, _box(15, 35, 15, 35)), "225 of 400 shared"
    assert not same_place(big, _box(20, 40, 20, 40)), "100 of 400 shared"
    assert not same_place(big, _box(29, 49, 29, 49)), "touching by one pixel"
    assert not same_place(big, _box(40, 50, 40, 50))
    empty = np.zeros_like(big)
    assert not same_place(big, empty) and not same_place(empty, empty)


def test_splice_backward_never_moves_or_removes_the_object():
    """Where the backward mask is not in the kept one's place — elsewhere, touching it only
    at its edge, or the tracker's presence is below one half (SAM 2's object score: absent)
    — the kept mask and score stay."""
    from dataclasses import replace

    from backend.pipeline import splice_backward

    engine = fake_engine()
    start = engine.tracker.start

    def with_presence(frames):
        session = start(frames)
        propagate = session.propagate

        def lost_on_2(s, **kw):
            for tf in propagate(s, **kw):
                yield replace(tf, presence={o: 0.1 if tf.index == 2 else 0.9 for o in tf.obj_ids})

        session.propagate = lost_on_2
        return session

    engine.tracker.start = with_presence
    old = _box(10, 30, 10, 30)
    near = _box(15, 35, 15, 35)  # the corrected mask, overlapping the kept one

    def kept(t):
        return {1: old}, {1: 0.5}

    by = {fp.index: fp for fp in splice_backward(engine, frames(), 4, {1: near}, {1: 0}, kept)}
    # frames 1 and 3 agree alike; the seam is the later (3), not frame 2, where it is absent
    assert np.array_equal(by[3].masks[1], near) and by[3].scores[1] == pytest.approx(0.9)
    assert np.array_equal(by[2].masks[1], old) and by[2].scores[1] == 0.5, "absent on 2: kept"
    assert np.array_equal(by[1].masks[1], old) and by[1].scores[1] == 0.5
    for far in (_box(40, 55, 50, 75), _box(26, 46, 26, 46)):  # elsewhere; touching the edge
        out = list(splice_backward(engine, frames(), 4, {1: far}, {1: 0}, kept))
        assert [fp.index for fp in out] == [3, 2, 1]
        assert all(np.array_equal(fp.masks[1], old) and fp.scores[1] == 0.5 for fp in out)
