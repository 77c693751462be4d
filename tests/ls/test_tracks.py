"""Masks → ``videorectangle`` tracks: boxes, fewest keyframes within tolerance, spans,
annotator keyframes, results, and the compression ratio on DAVIS ground truth."""

from __future__ import annotations

import json
import logging
import math

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backend.ls.export_tracks import sequence_boxes
from backend.ls.tracks import (
    FrameBox,
    Keyframe,
    ObjectTrack,
    TrackFrame,
    TrackOptions,
    VideoInfo,
    box_error,
    compress_track,
    default_tolerance,
    keyframes_from_sequence,
    mask_box,
    prediction_score,
    select_keyframes,
    track_frames,
    track_result,
    track_results,
)
from backend.types import FramePrediction
from tests.conftest import DAVIS, load_fixture

log = logging.getLogger(__name__)

W, H = 854, 480
TOL = default_tolerance(W, H)
EPS = 1e-6  # float noise of percent ↔ pixel conversions


def video(n: int, fps: float = 25.0) -> VideoInfo:
    return VideoInfo(W, H, n, n / fps)


def shown_errors(track: ObjectTrack, vid: VideoInfo, result: dict) -> dict[int, float]:
    """Error of the box Label Studio would show on each frame the track should show."""
    boxes = sequence_boxes(json.loads(json.dumps(result))["value"]["sequence"], vid.frames_count)
    real = {tf.index: tf.box for tf in track.frames if tf.box is not None and tf.score >= 0.3}
    for kf in track.keyframes:
        real[kf.index] = kf.box(W, H)
    assert {f - 1 for f in boxes} == set(real), "shown frames differ from visible frames"
    return {i: box_error(FrameBox.from_percent(*boxes[i + 1], W, H), real[i]) for i in real}


def result_of(track: ObjectTrack, vid: VideoInfo, **opts) -> dict:
    result = track_result(
        track, from_name="box", to_name="video", video=vid, options=TrackOptions(**opts)
    )
    assert result is not None
    return result


def smooth_track(n: int, seed: int = 0, lost: set[int] = frozenset()) -> ObjectTrack:
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    x = 200 + 150 * np.sin(t / 40 + rng.uniform(0, 6)) + 0.8 * t
    y = 150 + 60 * np.sin(t / 25 + rng.uniform(0, 6))
    w = 120 + 30 * np.sin(t / 50)
    h = 90 + 20 * np.cos(t / 35)
    frames = [
        TrackFrame(i, FrameBox(x[i], y[i], w[i], h[i]), 0.1 if i in lost else 0.9) for i in range(n)
    ]
    return ObjectTrack("tam-track-1", "Car", frames)


def seq_frames(result: dict) -> list[tuple[int, bool]]:
    return [(k["frame"], k["enabled"]) for k in result["value"]["sequence"]]


# --------------------------------------------------------------------------- boxes


def test_mask_box_is_tight_in_pixels_and_percent():
    mask = np.zeros((H, W), bool)
    assert mask_box(mask) is None
    mask[10:20, 30:35] = True
    mask[40, 100] = True
    box = mask_box(mask)
    assert box == FrameBox(30.0, 10.0, 71.0, 31.0)
    assert box.edges == (30.0, 10.0, 101.0, 41.0)
    px, py, pw, ph = box.percent(W, H)
    assert (px, pw) == pytest.approx((100 * 30 / W, 100 * 71 / W))
    assert (py, ph) == pytest.approx((100 * 10 / H, 100 * 31 / H))
    back = FrameBox.from_percent(px, py, pw, ph, W, H)
    assert back.edges == pytest.approx(box.edges)


def test_box_error_is_the_largest_edge_displacement():
    a = FrameBox(10, 10, 20, 20)
    assert box_error(a, a) == 0
    assert box_error(FrameBox(13, 10, 20, 20), a) == 3  # left and right move by 3
    assert box_error(FrameBox(10, 10, 20, 25), a) == 5  # bottom moves by 5
    assert pytest.approx(0.01 * math.hypot(W, H)) == TOL


# --------------------------------------------------------------------------- keyframe selection


def brute_force_count(
    vertices: np.ndarray, targets: np.ndarray, tol: float, hold_end: bool = False
) -> int:
    """Fewest keyframes (the first, and the last unless ``hold_end``), checking every frame
    of every edge."""
    n = len(targets)
    best = [math.inf] * n
    best[0] = 1
    for j in range(1, n):
        for i in range(j):
            ks = np.arange(i + 1, j + 1)[:, None]
            interp = vertices[i] + (vertices[j] - vertices[i]) * (ks - i) / (j - i)
            if j == i + 1 or np.abs(interp - targets[i + 1 : j + 1]).max() <= tol:
                best[j] = min(best[j], best[i] + 1)
    if not hold_end:
        return int(best[-1])
    return int(
        min(
            best[i]
            for i in range(n)
            if np.abs(targets[i + 1 :] - vertices[i]).max(initial=0) <= tol
        )
    )


def edges_array(boxes: list[FrameBox]) -> np.ndarray:
    return np.array([b.edges for b in boxes])


@st.composite
def trajectories(draw, jerky: bool):
    n = draw(st.integers(2, 120))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    if jerky:
        steps = rng.normal(0, 6, (n, 4)) + rng.binomial(1, 0.1, (n, 4)) * rng.normal(0, 60, (n, 4))
    else:
        steps = np.cumsum(rng.normal(0, 0.6, (n, 4)), axis=0) + rng.normal(0, 3, 4)
    pos = np.array([300.0, 200.0, 100.0, 80.0]) + np.cumsum(steps, axis=0)
    pos[:, 2:] = np.clip(pos[:, 2:], 2, None)
    return [FrameBox(*p) for p in pos]


@pytest.mark.parametrize("jerky", [False, True], ids=["smooth", "jerky"])
def test_error_bound_holds_on_every_frame(jerky):
    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(boxes=trajectories(jerky), tol_px=st.sampled_from([0.5, 3.0, TOL, 25.0]))
    def check(boxes, tol_px):
        track = ObjectTrack("r", "A", [TrackFrame(i, b, 0.9) for i, b in enumerate(boxes)])
        vid = video(len(boxes))
        result = result_of(track, vid, tolerance_px=tol_px)
        errors = shown_errors(track, vid, result)
        assert max(errors.values()) <= tol_px + EPS

    check()


@settings(max_examples=80, deadline=None)
@given(
    boxes=st.one_of(trajectories(False), trajectories(True)),
    tol=st.sampled_from([2.0, 9.8]),
    hold_end=st.booleans(),
)
def test_selection_is_minimal_against_brute_force(boxes, tol, hold_end):
    boxes = boxes[:30]
    targets = edges_array(boxes)
    picks = select_keyframes(targets, targets, tol, hold_end=hold_end)
    assert picks[0] == 0 and (hold_end or picks[-1] == len(boxes) - 1)
    assert len(picks) == brute_force_count(targets, targets, tol, hold_end)


@settings(max_examples=60, deadline=None)
@given(
    boxes=st.one_of(trajectories(False), trajectories(True)),
    data=st.data(),
)
def test_bound_and_spans_with_gaps_and_annotator_keyframes(boxes, data):
    """Random lost frames and annotator keyframes (some disabled): every frame that should
    show a box shows one within tolerance, and no other frame shows one."""
    n = len(boxes)
    lost = data.draw(st.sets(st.integers(0, n - 1), max_size=n // 2))
    empty = data.draw(st.sets(st.integers(0, n - 1), max_size=n // 4))
    frames = [
        TrackFrame(i, None if i in empty else b, 0.1 if i in lost else 0.9)
        for i, b in enumerate(boxes)
    ]
    picked = data.draw(st.lists(st.integers(0, n - 1), max_size=5, unique=True))
    mine = [
        Keyframe(
            i,
            *data.draw(st.tuples(*[st.floats(0, 60, allow_nan=False)] * 4)),
            enabled=data.draw(st.booleans()),
        )
        for i in sorted(picked)
    ]
    track = ObjectTrack("r", "A", frames, mine)
    vid = video(n + data.draw(st.integers(0, 3)))
    result = track_result(track, from_name="box", to_name="video", video=vid)
    if result is None:
        assert not mine and all(i in lost or i in empty for i in range(n))
        return
    errors = shown_errors(track, vid, result)
    assert max(errors.values()) <= TOL + EPS
    by_frame = {k["frame"]: k for k in result["value"]["sequence"]}
    for kf in mine:
        got = by_frame[kf.index + 1]
        assert (got["x"], got["y"], got["width"], got["height"]) == (
            kf.x,
            kf.y,
            kf.width,
            kf.height,
        )
        if not kf.enabled:
            assert got["enabled"] is False


def test_smooth_track_compresses_well():
    track = smooth_track(300)
    vid = video(300)
    result = result_of(track, vid)
    ratio = len(result["value"]["sequence"]) / 300
    log.info("smooth synthetic track: %d keyframes / 300 frames", ratio * 300)
    assert ratio < 0.1
    assert max(shown_errors(track, vid, result).values()) <= TOL + EPS


def test_static_object_is_one_keyframe_held_to_the_end():
    frames = [TrackFrame(i, FrameBox(100, 50, 80, 60), 0.9) for i in range(400)]
    result = result_of(ObjectTrack("r", "A", frames), video(400))
    assert seq_frames(result) == [(1, True)]
    # the same track on a longer video must stop where the model stopped
    result = result_of(ObjectTrack("r", "A", frames), video(500))
    assert seq_frames(result) == [(1, True), (400, False)]


def test_tolerance_zero_keeps_every_changing_frame():
    boxes = [FrameBox(10 + i * i, 10, 20, 20) for i in range(10)]
    track = ObjectTrack("r", "A", [TrackFrame(i, b, 1.0) for i, b in enumerate(boxes)])
    result = result_of(track, video(10), tolerance_px=0.0)
    assert [f for f, _ in seq_frames(result)] == list(range(1, 11))


# --------------------------------------------------------------------------- spans


def test_lost_in_the_middle_ends_a_span_and_restarts():
    lost = set(range(40, 55))
    track = smooth_track(100, lost=lost)
    vid = video(100)
    result = result_of(track, vid)
    keys = seq_frames(result)
    assert (40, False) in keys  # last shown frame (0-based 39) closes the span
    assert (56, True) in keys  # first frame back (0-based 55) opens a new one
    assert not any(41 <= f <= 55 for f, _ in keys)
    assert keys[-1][1] is True  # reaches the end of the video: no closing keyframe needed
    errors = shown_errors(track, vid, result)  # also checks frames 41..55 show nothing
    assert max(errors.values()) <= TOL + EPS


def test_lost_at_the_end_and_at_the_start():
    frames = [
        TrackFrame(i, FrameBox(100 + i, 50, 80, 60) if 5 <= i < 30 else None, 0.9)
        for i in range(50)
    ]
    track = ObjectTrack("r", "A", frames)
    vid = video(50)
    result = result_of(track, vid)
    keys = seq_frames(result)
    assert keys[0] == (6, True)
    assert keys[-1] == (30, False)
    boxes = sequence_boxes(result["value"]["sequence"], 50)
    assert sorted(boxes) == list(range(6, 31))
    assert max(shown_errors(track, vid, result).values()) <= TOL + EPS


def test_back_again_and_single_frame_spans():
    visible = {0, 1, 2, 3, 7, 12, 13, 14}
    frames = [
        TrackFrame(i, FrameBox(10 * i, 50, 80, 60), 0.9 if i in visible else 0.05)
        for i in range(20)
    ]
    track = ObjectTrack("r", "A", frames)
    vid = video(20)
    result = result_of(track, vid, tolerance_px=1.0)
    keys = seq_frames(result)
    assert keys == [(1, True), (4, False), (8, False), (13, True), (15, False)]
    assert set(sequence_boxes(result["value"]["sequence"], 20)) == {i + 1 for i in visible}
    assert max(shown_errors(track, vid, result).values()) <= 1.0 + EPS


def test_nothing_shown_gives_no_region():
    frames = [TrackFrame(i, None, 0.0) for i in range(10)]
    track = ObjectTrack("r", "A", frames)
    assert track_result(track, from_name="box", to_name="video", video=video(10)) is None
    assert track_results([track], from_name="box", to_name="video", video=video(10)) == []


# --------------------------------------------------------------------------- annotator keyframes


def test_annotator_keyframes_are_kept_exactly():
    track = smooth_track(120)
    mine = [
        Keyframe(0, 12.345678901, 20.5, 10.25, 15.125, rotation=0.0),
        Keyframe(60, 33.3333333333, 40.0, 12.0, 18.0, rotation=5.0),
        Keyframe(61, 34.0, 40.5, 12.0, 18.0),
    ]
    track = ObjectTrack(track.region_id, track.label, track.frames, mine)
    vid = video(120)
    result = result_of(track, vid)
    by_frame = {k["frame"]: k for k in result["value"]["sequence"]}
    for kf in mine:
        got = by_frame[kf.index + 1]
        assert (got["x"], got["y"], got["width"], got["height"]) == (
            kf.x,
            kf.y,
            kf.width,
            kf.height,
        )
        assert got["rotation"] == kf.rotation and got["enabled"] is True
    assert max(shown_errors(track, vid, result).values()) <= TOL + EPS


def test_annotator_keyframe_on_a_lost_frame_and_a_disabled_one():
    frames = [TrackFrame(i, FrameBox(100 + 2 * i, 50, 80, 60), 0.9) for i in range(30)]
    frames[10] = TrackFrame(10, None, 0.0)
    mine = [Keyframe(10, 14.0, 10.0, 9.0, 12.0), Keyframe(20, 15.0, 10.0, 9.0, 12.0, False)]
    track = ObjectTrack("r", "A", frames, mine)
    vid = video(30)
    result = result_of(track, vid)
    keys = seq_frames(result)
    assert (11, True) in keys and (21, False) in keys and (22, True) in keys
    assert max(shown_errors(track, vid, result).values()) <= TOL + EPS


def test_a_model_that_agrees_gives_back_the_annotators_sequence():
    """The real capture's track (keyframes 1, 10, 20, disabled 30 of 50), with the model
    seeing exactly the boxes Label Studio shows between them: nothing is added or moved."""
    fixture = load_fixture("video/03_batch_retrieve_predictions_context_null")
    region = fixture["body"]["tasks"][0]["annotations"][0]["result"][1]
    value = region["value"]
    kfs = keyframes_from_sequence(value["sequence"])
    assert [(k.index, k.enabled) for k in kfs] == [(0, True), (9, True), (19, True), (29, False)]
    shown = sequence_boxes(value["sequence"], value["framesCount"])
    assert sorted(shown) == list(range(1, 31))
    frames = [TrackFrame(f - 1, FrameBox.from_percent(*b, W, H), 0.9) for f, b in shown.items()]
    track = ObjectTrack(region["id"], value["labels"][0], frames, kfs)
    vid = VideoInfo(W, H, value["framesCount"], value["duration"])
    result = result_of(track, vid)
    assert result["value"]["sequence"] == value["sequence"]


# --------------------------------------------------------------------------- results


def test_result_shape_scores_and_meta():
    frames = [
        TrackFrame(i, FrameBox(100 + i, 50, 80, 60), s)
        for i, s in enumerate([0.9, 0.8, 0.7, 0.1, 0.9])
    ]
    vid = VideoInfo(W, H, 8, 0.32, framerate=25)
    result = result_of(ObjectTrack("tam-o1", "Car", frames), vid)
    assert {k: result[k] for k in ("id", "from_name", "to_name", "type")} == {
        "id": "tam-o1",
        "from_name": "box",
        "to_name": "video",
        "type": "videorectangle",
    }
    value = result["value"]
    assert value["framesCount"] == 8 and value["duration"] == 0.32
    assert value["labels"] == ["Car"]
    assert result["score"] == pytest.approx(np.mean([0.9, 0.8, 0.7, 0.9]), abs=1e-4)
    assert result["meta"] == {"frame_scores": {"first_frame": 1, "values": [90, 80, 70, 10, 90]}}
    assert all(k["time"] == pytest.approx(k["frame"] / 25) for k in value["sequence"])
    assert set(value["sequence"][0]) == {
        "frame",
        "enabled",
        "rotation",
        "x",
        "y",
        "width",
        "height",
        "time",
    }
    assert len(json.dumps(result)) < 1000
    other = dict(result, score=0.5)
    assert prediction_score([result, other]) == pytest.approx((result["score"] + 0.5) / 2)
    assert prediction_score([]) == 0.0


def test_track_frames_from_pipeline_predictions():
    def disk(cx):
        yy, xx = np.mgrid[:H, :W]
        return (xx - cx) ** 2 + (yy - 100) ** 2 <= 20**2

    preds = [
        FramePrediction(0, {1: disk(100), 2: disk(400)}, {1: 0.9, 2: 0.8}),
        FramePrediction(1, {1: disk(110)}, {1: 0.85, 2: 0.0}),
    ]
    got = track_frames(preds)
    assert [tf.box for tf in got[1]] == [FrameBox(80, 80, 41, 41), FrameBox(90, 80, 41, 41)]
    assert got[2][1] == TrackFrame(1, None, 0.0)


def test_frames_outside_the_video_are_ignored(caplog):
    frames = [TrackFrame(i, FrameBox(10, 10, 10, 10), 0.9) for i in range(12)]
    with caplog.at_level(logging.WARNING):
        result = result_of(ObjectTrack("r", "A", frames), video(10))
    assert "outside" in caplog.text
    assert all(k["frame"] <= 10 for k in result["value"]["sequence"])


# --------------------------------------------------------------------------- DAVIS


def davis_track(seq: str) -> tuple[ObjectTrack, VideoInfo]:
    paths = sorted((DAVIS / "Annotations" / "480p" / seq).glob("*.png"))
    frames = []
    for i, p in enumerate(paths):
        mask = cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) > 127
        frames.append(TrackFrame(i, mask_box(mask), 1.0))
    h, w = mask.shape
    return ObjectTrack(seq, "Object", frames), VideoInfo(w, h, len(paths), len(paths) / 24)


@pytest.mark.parametrize("seq", ["blackswan", "car-roundabout", "dog"])
def test_davis_ground_truth_compression(seq):
    if not (DAVIS / "Annotations" / "480p" / seq).is_dir():
        pytest.skip(f"no DAVIS {seq}")
    track, vid = davis_track(seq)
    result = result_of(track, vid)
    ratio = len(result["value"]["sequence"]) / vid.frames_count
    errors = shown_errors(track, vid, result)
    log.info(
        "DAVIS %s: keyframes/frames = %.3f, max error %.2f px", seq, ratio, max(errors.values())
    )
    assert max(errors.values()) <= default_tolerance(vid.width, vid.height) + EPS
    assert ratio < 0.5


def test_compress_track_matches_result_sequence():
    track = smooth_track(50)
    vid = video(50)
    assert compress_track(track, vid) == result_of(track, vid)["value"]["sequence"]
