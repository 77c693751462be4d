"""The interactive session: planning, reuse, priors, identity and the byte budget."""

from __future__ import annotations

import numpy as np
import pytest

from backend.frames import ArrayFrameSource
from backend.masks import CompactMask
from backend.session import (
    InteractiveSession,
    PlanKind,
    SessionKey,
    SessionStore,
    media_fingerprint,
    plan_run,
)
from backend.types import Click
from tests.fakes import fake_engine

N = 8


def frames(n=N, h=60, w=80):
    return ArrayFrameSource([np.full((h, w, 3), i, np.uint8) for i in range(n)])


def key(task=1, media="m"):
    return SessionKey("test", 1, task, media)


def run(session, engine, src, **kw):
    return [fp.index for fp in session.run(engine, src, **kw)]


def test_plan_rules():
    a0 = {1: {0: "c0"}}
    assert plan_run(None, a0, N).kind is PlanKind.FULL
    assert plan_run(a0, a0, N).kind is PlanKind.NONE
    p = plan_run(a0, {1: {0: "c0", 5: "c5"}}, N)
    assert (p.kind, p.start, p.stop) == (PlanKind.FORWARD, 5, N - 1)
    p = plan_run({1: {0: "c0", 6: "c6"}}, {1: {0: "c0", 3: "c3", 6: "c6"}}, N)
    assert (p.kind, p.start, p.stop) == (PlanKind.FORWARD, 3, 5), "up to the next keyframe"
    p = plan_run({1: {0: "c0", 6: "c6"}}, {1: {0: "c0", 6: "x"}}, N)
    assert (p.kind, p.start, p.stop) == (PlanKind.FORWARD, 6, N - 1)
    assert plan_run(a0, {1: {0: "c0+c1"}}, N).kind is PlanKind.FULL, "first keyframe changed"
    assert plan_run(a0, {1: {4: "c4"}}, N).kind is PlanKind.FULL, "keyframe removed"
    assert plan_run(a0, {1: {0: "c0"}, 2: {5: "b"}}, N).kind is PlanKind.FULL, "new object"
    two = {1: {0: "a"}, 2: {0: "b"}}
    assert plan_run(two, {1: {0: "a", 4: "x"}, 2: {0: "b", 5: "y"}}, N).kind is PlanKind.FULL
    late = {1: {0: "a"}, 2: {6: "b"}}
    assert plan_run(late, {1: {0: "a", 3: "x"}, 2: {6: "b"}}, N).kind is PlanKind.FULL


def test_plan_reaches_back_to_the_previous_keyframe():
    p = plan_run({1: {0: "c0", 6: "c6"}}, {1: {0: "c0", 3: "c3", 6: "c6"}}, N)
    assert (p.back, p.start, p.stop, p.earlier) == (1, 3, 5, {1: 0})
    assert list(p.frames) == [1, 2, 3, 4, 5] and not p.covers(2) and p.recomputes(2)
    assert not p.recomputes(0) and not p.recomputes(6)
    # each corrected object reaches back to its own previous keyframe
    two = {1: {0: "a", 2: "a2"}, 2: {0: "b"}}
    p = plan_run(two, {1: {0: "a", 2: "a2", 5: "x"}, 2: {0: "b", 5: "y"}}, N)
    assert (p.back, p.start, p.earlier) == (1, 5, {1: 2, 2: 0})
    # nothing between the keyframes, or forward only: no splice
    assert plan_run({1: {0: "c"}}, {1: {0: "c", 1: "d"}}, N).back is None
    q = plan_run({1: {0: "c"}}, {1: {0: "c", 4: "d"}}, N, reach_back=False)
    assert (q.back, list(q.frames)) == (None, [4, 5, 6, 7])


def test_compact_mask_round_trip():
    rng = np.random.default_rng(0)
    for mask in (
        rng.random((37, 53)) > 0.5,
        np.ones((4, 5), bool),
        np.zeros((4, 5), bool),
        np.eye(6, dtype=bool),
    ):
        c = CompactMask.encode(mask)
        np.testing.assert_array_equal(c.decode(), mask)
        assert c.any() == mask.any()
    blob = np.zeros((480, 854), bool)
    blob[100:300, 200:500] = True
    assert CompactMask.encode(blob).nbytes < 2000, "a blob costs a few hundred bytes"


def test_first_run_then_correction_reuses_frames_before_it():
    engine, src = fake_engine(), frames()
    s = InteractiveSession(key(), N, reach_back=False)
    s.add_click(1, 0, Click(20, 20), label="A")
    assert run(s, engine, src) == list(range(N))
    before = [s.shown(1, f).copy() for f in range(N)]
    s.add_click(1, 4, Click(60, 40))
    assert s.plan().kind is PlanKind.FORWARD
    assert run(s, engine, src) == [4, 5, 6, 7]
    for f in range(4):
        np.testing.assert_array_equal(s.shown(1, f), before[f])
    assert s.shown(1, 5)[40, 60] and not s.shown(1, 5)[20, 20]
    assert s.plan().kind is PlanKind.NONE
    assert run(s, engine, src) == [], "same prompts: nothing recomputed"


def test_a_correction_reaches_back_to_the_previous_keyframe():
    engine, src = fake_engine(), frames()
    s = InteractiveSession(key(), N)
    s.add_click(1, 0, Click(20, 20), label="A")
    run(s, engine, src)
    before = [s.shown(1, f).copy() for f in range(N)]
    s.add_click(1, 4, Click(32, 24))  # its disk shares over half of the one from frame 0
    prepared = s.prepare(engine, src)
    # a partial answer shows the frames to splice as they were until their splice comes
    assert [fp.index for fp in prepared.reused()] == [0, 1, 2, 3]
    # forward first (what the annotator looks at next), then back towards frame 0
    assert [fp.index for fp in s.propagate(engine, src, prepared)] == [4, 5, 6, 7, 3, 2, 1]
    np.testing.assert_array_equal(s.shown(1, 0), before[0])
    # the fake tracker carries masks unchanged, so the passes agree alike on frames 1-3 and
    # the seam is the middle, frame 2: below it the old mask, from it the correction's
    np.testing.assert_array_equal(s.shown(1, 1), before[1])
    np.testing.assert_array_equal(s.shown(1, 2), s.shown(1, 4))
    np.testing.assert_array_equal(s.shown(1, 3), s.shown(1, 4))
    assert not np.array_equal(s.shown(1, 3), before[3])
    assert s.plan().kind is PlanKind.NONE
    # a correction that puts the object elsewhere (not in its place) does not move it back
    far = InteractiveSession(key(task=2), N)
    far.add_click(1, 0, Click(20, 20), label="A")
    run(far, engine, src)
    far.add_click(1, 4, Click(60, 40))
    assert run(far, engine, src) == [4, 5, 6, 7, 3, 2, 1]
    for f in range(4):
        np.testing.assert_array_equal(far.shown(1, f), before[f])


def _disk(x, y, h=60, w=80):
    yy, xx = np.mgrid[:h, :w]
    return (xx - x) ** 2 + (yy - y) ** 2 <= 20**2


def test_every_stretch_between_keyframes_is_spliced_whatever_the_click_order():
    """Frames between two keyframes splice the forward pass from the earlier one and a
    backward pass from the later one, whether the keyframes came in one run or one by one,
    in any order: a correction does not undo the reach of a later keyframe."""
    engine, src = fake_engine(), frames()
    clicks = {0: Click(20, 20), 3: Click(32, 24), 6: Click(44, 28)}  # neighbours overlap
    shown = {}
    for order in ((0, 3, 6), (0, 6, 3), "all at once"):
        s = InteractiveSession(key(task=str(order)), N)
        for k in (0, 3, 6) if order == "all at once" else order:
            s.add_click(1, k, clicks[k], label="A")
            if order != "all at once":
                run(s, engine, src)
        run(s, engine, src)
        shown[order] = [s.shown(1, f) for f in range(N)]
    a, b, c = (_disk(int(k.x), int(k.y)) for k in clicks.values())
    # the fake tracker's passes agree alike everywhere: each seam is the later middle frame
    expected = [a, a, b, b, b, c, c, c]
    for order, masks in shown.items():
        for f in range(N):
            np.testing.assert_array_equal(masks[f], expected[f], err_msg=f"{order}, frame {f}")


def test_a_correction_before_a_keyframe_yields_each_frame_once_after_its_splice():
    engine, src = fake_engine(), frames()
    s = InteractiveSession(key(), N)
    s.add_click(1, 0, Click(20, 20), label="A")
    s.add_click(1, 6, Click(44, 28))
    run(s, engine, src)
    old = {f: s.shown(1, f).copy() for f in range(N)}
    s.add_click(1, 3, Click(32, 24))
    prepared = s.prepare(engine, src)
    assert [(r.anchor, r.low, r.high) for r in prepared.reaches] == [(6, 4, 5), (3, 1, 2)]
    # a partial answer shows the frames to splice as they were until their splice comes
    reused = {fp.index: fp.masks[1] for fp in prepared.reused()}
    assert sorted(reused) == [0, 1, 2, 4, 5, 6, 7]
    assert all(np.array_equal(m, old[f]) for f, m in reused.items())
    # the corrected frame first, then the stretch after it, then the one before it
    assert [fp.index for fp in s.propagate(engine, src, prepared)] == [3, 5, 4, 2, 1]
    assert np.array_equal(s.shown(1, 5), _disk(44, 28)), "the keyframe on 6 still reaches 5"
    q = InteractiveSession(key(task=2), N, reach_back=False)
    q.add_click(1, 0, Click(20, 20), label="A")
    q.add_click(1, 6, Click(44, 28))
    assert run(q, engine, src) == list(range(N))
    assert np.array_equal(q.shown(1, 5), _disk(20, 20)), "without reach_back: forward only"
    q.add_click(1, 3, Click(32, 24))
    assert q.prepare(engine, src).reaches == [] and run(q, engine, src) == [3, 4, 5]


def test_a_correction_reaches_other_objects_stretches_it_recomputed():
    """Another object's stretch that the correction re-propagated is spliced again from its
    next keyframe, even one past the frames recomputed."""
    engine, src = fake_engine(), frames(w=120)  # A and B never meet
    s = InteractiveSession(key(), N)
    s.add_click(1, 0, Click(20, 20), label="A")
    s.add_click(1, 5, Click(32, 24))
    s.add_click(2, 0, Click(96, 30), label="B")
    s.add_click(2, 7, Click(84, 38))
    run(s, engine, src)
    full = [s.shown(2, f).copy() for f in range(N)]
    s.add_click(1, 2, Click(26, 22))
    prepared = s.prepare(engine, src)
    assert [(r.anchor, sorted(r.masks), r.low, r.high) for r in prepared.reaches] == [
        (7, [2], 3, 4), (5, [1], 3, 4), (2, [1], 1, 1)
    ]  # fmt: skip
    assert [fp.index for fp in s.propagate(engine, src, prepared)] == [2, 4, 3, 1]
    for f in range(N):  # B's seed on 2 was the full run's: forward from it, spliced again
        np.testing.assert_array_equal(s.shown(2, f), full[f], err_msg=f"frame {f}")
    assert not np.array_equal(full[4], full[0]), "B's frame 4 does come from the splice"


def test_correction_prior_is_the_shown_mask_and_sticky():
    engine, src = fake_engine(), frames()
    priors = []
    predict = engine.segmenter.predict

    def recording(points, labels, *, mask_prior=None, multimask_output=True, prior_is_own=False):
        priors.append(None if mask_prior is None else mask_prior > 0.5)
        return predict(points, labels, mask_prior=mask_prior, multimask_output=multimask_output)

    engine.segmenter.predict = recording
    s = InteractiveSession(key(), N)
    s.add_click(1, 0, Click(20, 20), label="A")
    run(s, engine, src)
    assert priors == [None]
    shown3 = s.shown(1, 3)
    s.add_click(1, 3, Click(60, 40))
    run(s, engine, src)
    np.testing.assert_array_equal(priors[-1], shown3)
    s.set_object(1, "A", clicks={0: [Click(20, 20)], 3: [Click(60, 40)]})  # re-sent as is
    assert s.plan().kind is PlanKind.NONE and len(priors) == 2


def test_the_prior_is_own_only_where_the_segmenter_answered_earlier_prompts_on_that_frame():
    """Clicking again on a frame refines the segmenter's own answer there (the classical
    segmenter then looks closer); a correction of a propagated frame or of a painted mask
    does not."""
    engine, src = fake_engine(), frames()
    asked = []
    predict = engine.segmenter.predict

    def recording(points, labels, *, mask_prior=None, multimask_output=True, prior_is_own=False):
        asked.append((mask_prior is not None, prior_is_own))
        return predict(points, labels, mask_prior=mask_prior, multimask_output=multimask_output)

    engine.segmenter.predict = recording
    painted = np.zeros((60, 80), bool)
    painted[40:50, 10:20] = True
    s = InteractiveSession(key(), N)
    for frame, x in [(0, 20), (0, 30), (3, 60), (3, 62)]:
        s.add_click(1, frame, Click(x, 20), label="A")
        run(s, engine, src)
    s.add_mask(1, 6, painted)
    s.add_click(1, 6, Click(12, 44))
    run(s, engine, src)
    assert asked == [(False, False), (True, True), (True, False), (True, True), (True, False)]


def test_painted_mask_is_a_keyframe_and_prompts_survive_export():
    engine, src = fake_engine(), frames()
    s = InteractiveSession(key(), N)
    painted = np.zeros((60, 80), bool)
    painted[5:15, 5:15] = True
    s.add_mask(2, 2, painted, label="B")
    s.add_click(1, 0, Click(60, 40), label="A")
    run(s, engine, src)
    np.testing.assert_array_equal(s.shown(2, 2), painted)
    copy = InteractiveSession(key(), N)
    copy.import_prompts(s.export_prompts())
    assert copy.signature() == s.signature()
    with pytest.raises(ValueError, match="frames"):
        InteractiveSession(key(), N + 1).import_prompts(s.export_prompts())


def test_answer_limits_what_is_shown():
    engine, src = fake_engine(), frames()
    s = InteractiveSession(key(), N)
    s.add_click(1, 0, Click(20, 20), label="A")
    s.add_click(2, 0, Click(60, 40), label="B")
    run(s, engine, src, answer=[2])
    assert s.shown(1, 3) is None and s.shown(2, 3) is not None


def test_bad_prompts_are_refused():
    s = InteractiveSession(key(), N)
    with pytest.raises(ValueError, match="outside"):
        s.add_click(1, N, Click(1, 1))
    with pytest.raises(ValueError, match="no prompts"):
        s.prepare(fake_engine(), frames())
    s.add_click(1, 0, Click(1, 1))
    with pytest.raises(ValueError, match="frames"):
        s.prepare(fake_engine(), frames(N - 1))


def test_cancelled_run_leaves_the_last_run():
    engine, src = fake_engine(), frames()
    s = InteractiveSession(key(), N)
    s.add_click(1, 0, Click(20, 20), label="A")
    run(s, engine, src)
    s.add_click(1, 4, Click(60, 40))
    prepared = s.prepare(engine, src)
    gen = s.propagate(engine, src, prepared)
    next(gen)
    gen.close()  # the consumer went away (a superseded job)
    assert s.plan().kind is PlanKind.FORWARD, "the unfinished run was not kept"
    assert not s.shown(1, 5)[40, 60]


def test_store_keys_by_content_and_keeps_a_byte_budget():
    store = SessionStore(budget_bytes=0)
    a = store.get(key(1, media_fingerprint(["x.jpg"])), 3)
    assert store.get(key(1, media_fingerprint(["x.jpg"])), 3) is a
    b = store.get(key(1, media_fingerprint(["y.jpg"])), 3)
    assert b is not a and len(store) == 1, "changed frames: a fresh session, the old one dropped"
    other = store.get(SessionKey("another instance", 1, 1, media_fingerprint(["y.jpg"])), 3)
    assert other is not b and len(store) == 2
    engine, src = fake_engine(), frames(3)
    for s in (b, other):
        s.add_click(1, 0, Click(20, 20))
        run(s, engine, src)
    assert b.nbytes > 0
    store.trim(keep=other.key)
    assert other.key in store and b.key not in store


def test_box_prompt_is_a_keyframe_and_survives_export():
    from backend.types import Box

    engine, src = fake_engine(), frames()
    s = InteractiveSession(key(), N)
    s.add_box(1, 2, Box(10, 10, 30, 25), label="A")
    assert sorted(run(s, engine, src)) == list(range(N))
    mask = s.shown(1, 2)
    assert mask[10:25, 10:30].all() and mask.sum() == 20 * 15, "the fake fills the box"
    copy = InteractiveSession(key(), N)
    copy.import_prompts(s.export_prompts())
    assert copy.signature() == s.signature()
    s.add_box(1, 2, Box(40, 10, 60, 25))  # a moved box: that frame changes, it is the first
    assert s.plan().kind is PlanKind.FULL
    with pytest.raises(ValueError, match="empty"):
        s.add_box(1, 3, Box(5, 5, 5, 9))
