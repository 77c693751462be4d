"""``videorectangle`` tracks → per-frame boxes (as Label Studio draws them) → MOT and YOLO."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from backend.ls.export_tracks import (
    ExportTrack,
    class_indices,
    mot_lines,
    sequence_boxes,
    sequence_shapes,
    tracks_from_results,
    write_mot,
    write_yolo,
    yolo_line,
)
from backend.ls.tracks import (
    FrameBox,
    ObjectTrack,
    TrackFrame,
    VideoInfo,
    box_error,
    default_tolerance,
    track_results,
)
from tests.conftest import load_fixture

W, H = 854, 480


def key(frame: int, x: float, y: float = 10.0, enabled: bool = True, **extra) -> dict:
    return {"frame": frame, "x": x, "y": y, "width": 20.0, "height": 30.0, "rotation": 0,
            "enabled": enabled, "time": frame / 25, **extra}  # fmt: skip


# --------------------------------------------------------------------------- interpolation


def test_the_real_capture_replays_as_label_studio_draws_it():
    fixture = load_fixture("video/03_batch_retrieve_predictions_context_null")
    value = fixture["body"]["tasks"][0]["annotations"][0]["result"][1]["value"]
    seq = value["sequence"]
    boxes = sequence_boxes(seq, value["framesCount"])
    assert sorted(boxes) == list(range(1, 31))  # disabled keyframe 30 shows, 31.. do not
    assert boxes[1] == (10, 30, 20, 25)
    assert boxes[5] == pytest.approx((10 + 15 * 4 / 9, 30 + 2 * 4 / 9, 20, 25))
    assert boxes[30] == (55, 36, 20, 25)
    assert boxes[25] == pytest.approx(
        tuple(a + (b - a) / 2 for a, b in zip(boxes[20], boxes[30], strict=True))
    )


def test_before_the_first_keyframe_nothing_after_the_last_it_holds():
    seq = [key(5, 10.0), key(9, 30.0)]
    boxes = sequence_boxes(seq, 12)
    assert sorted(boxes) == list(range(5, 13))
    assert boxes[7][0] == pytest.approx(20.0)
    assert boxes[12] == boxes[9] == (30.0, 10.0, 20.0, 30.0)
    assert sorted(sequence_boxes(seq)) == list(range(5, 10))  # no frame count: stop at the last


def test_a_disabled_keyframe_ends_its_span_until_the_next_keyframe():
    seq = [key(1, 0.0), key(4, 30.0, enabled=False), key(8, 50.0), key(10, 70.0, enabled=False)]
    boxes = sequence_boxes(seq, 20)
    assert sorted(boxes) == [1, 2, 3, 4, 8, 9, 10]
    assert boxes[3][0] == pytest.approx(20.0)
    assert boxes[9][0] == pytest.approx(60.0)


def test_several_keyframes_on_one_frame():
    seq = [key(1, 0.0), key(5, 40.0), key(5, 80.0, enabled=False), key(9, 10.0)]
    boxes = sequence_boxes(seq, 9)
    assert boxes[5][0] == 40.0  # the frame shows the first
    assert sorted(boxes) == [1, 2, 3, 4, 5, 9]  # the frames after follow the last (disabled)


def test_rotation_takes_the_short_way_and_exports_its_bounds():
    seq = [key(1, 10.0, rotation=170), key(3, 10.0, rotation=-170)]
    assert sequence_shapes(seq)[2][4] == pytest.approx(180.0)
    seq = [key(1, 50.0, y=50.0, rotation=90)]
    (x, y, w, h) = sequence_boxes(seq, 1, frame_size=(W, H))[1]
    # a 20 % × 30 % box turned 90° clockwise about its top-left corner
    assert x * W / 100 == pytest.approx(0.5 * W - 0.3 * H)
    assert y * H / 100 == pytest.approx(0.5 * H)
    assert (w * W / 100, h * H / 100) == pytest.approx((0.3 * H, 0.2 * W))


# --------------------------------------------------------------------------- round trip


def moving_tracks(n: int = 80) -> list[ObjectTrack]:
    t = np.arange(n)
    a = [
        TrackFrame(i, FrameBox(50 + 3 * i + 10 * np.sin(i / 7), 40, 100, 80), 0.9) for i in range(n)
    ]
    b = [
        TrackFrame(
            i, FrameBox(600 - 2 * i, 300 + 20 * np.cos(i / 9), 60, 60), 0.8 if i % 3 else 0.7
        )
        if not 30 <= i < 45
        else TrackFrame(i, None, 0.0)
        for i in t
    ]
    return [ObjectTrack("tam-o1", "Car", a), ObjectTrack("tam-o2", "Person", b)]


def exported(n: int = 80) -> tuple[list[ObjectTrack], list[ExportTrack]]:
    tracks = moving_tracks(n)
    vid = VideoInfo(W, H, n, n / 25)
    results = track_results(tracks, from_name="box", to_name="video", video=vid)
    results = json.loads(json.dumps(results))  # as Label Studio stores them
    return tracks, tracks_from_results(results, frame_size=(W, H))


def test_round_trip_boxes_within_tolerance_of_the_input():
    tracks, out = exported()
    tol = default_tolerance(W, H)
    assert [(t.track_id, t.label) for t in out] == [(1, "Car"), (2, "Person")]
    for track, ex in zip(tracks, out, strict=True):
        real = {tf.index + 1: tf.box for tf in track.frames if tf.box is not None}
        assert set(ex.boxes) == set(real)
        worst = max(box_error(FrameBox.from_percent(*ex.boxes[f], W, H), real[f]) for f in real)
        assert worst <= tol + 1e-6
        assert ex.scores[1] == pytest.approx(track.frames[0].score)
    assert out[1].confidence(4) == pytest.approx(0.7)  # index 3


# --------------------------------------------------------------------------- writers


def test_mot_file_parses_back(tmp_path):
    _, out = exported()
    path = write_mot(out, tmp_path / "gt" / "gt.txt", W, H)
    rows = list(csv.reader(path.read_text().splitlines()))
    assert len(rows) == sum(len(t.boxes) for t in out)
    assert [(int(r[0]), int(r[1])) for r in rows] == sorted((int(r[0]), int(r[1])) for r in rows)
    by_id = {t.track_id: t for t in out}
    for r in rows:
        frame, tid = int(r[0]), int(r[1])
        x, y, w, h, conf = map(float, r[2:7])
        assert r[7:] == ["-1", "-1", "-1"]
        px, py, pw, ph = by_id[tid].boxes[frame]
        assert (x, y, w, h) == pytest.approx(
            (px * W / 100, py * H / 100, pw * W / 100, ph * H / 100), abs=0.006
        )
        assert conf == pytest.approx(by_id[tid].confidence(frame), abs=1e-4)
    assert mot_lines([], W, H) == []


def test_yolo_files_parse_back(tmp_path):
    _, out = exported(80)
    classes = class_indices(out, known=["Person", "Car"])
    assert classes == {"Person": 0, "Car": 1}
    paths = write_yolo(out, tmp_path, frames_count=80, classes=classes)
    assert [p.name for p in paths[:2]] == ["000000.txt", "000001.txt"] and len(paths) == 80
    assert (tmp_path / "classes.txt").read_text().splitlines() == ["Person", "Car"]
    for frame, path in enumerate(paths, start=1):
        parsed = [line.split() for line in path.read_text().splitlines()]
        expected = [t for t in out if frame in t.boxes]
        assert len(parsed) == len(expected)
        for fields, t in zip(parsed, expected, strict=True):
            cls, cx, cy, w, h = int(fields[0]), *map(float, fields[1:])
            assert cls == classes[t.label]
            x, y, bw, bh = t.boxes[frame]
            assert (cx, cy, w, h) == pytest.approx(
                ((x + bw / 2) / 100, (y + bh / 2) / 100, bw / 100, bh / 100), abs=2e-6
            )
    assert (tmp_path / "000035.txt").read_text().count("\n") == 1  # object 2 is lost there


def test_yolo_clips_to_the_frame_and_drops_boxes_outside():
    assert yolo_line(3, (90.0, -10.0, 20.0, 30.0)) == "3 0.950000 0.100000 0.100000 0.200000"
    assert yolo_line(0, (100.0, 10.0, 5.0, 5.0)) is None


def test_unknown_labels_get_the_next_classes():
    tracks = [ExportTrack(1, "Dog", {}, {}), ExportTrack(2, "Car", {}, {})]
    assert class_indices(tracks, known=["Car"]) == {"Car": 0, "Dog": 1}


def test_results_of_other_types_are_skipped():
    results = [{"type": "labels", "value": {"labels": ["Car"]}}]
    assert tracks_from_results(results) == []
