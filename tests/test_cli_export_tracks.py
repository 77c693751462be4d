"""``python -m backend export`` for <Video> projects: tracks → MOT text and YOLO files."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from backend.cli import main as cli_main

CONFIG = """<View>
  <Labels name="videoLabels" toName="video"><Label value="Car"/><Label value="Person"/></Labels>
  <Video name="video" value="$video" framerate="10"/>
  <VideoRectangle name="box" toName="video"/>
</View>"""


def _track(rid="a", label="Person"):
    seq = [
        {"frame": 1, "enabled": True, "rotation": 0, "x": 10, "y": 20, "width": 20, "height": 30},
        {"frame": 5, "enabled": False, "rotation": 0, "x": 30, "y": 20, "width": 20, "height": 30},
    ]
    return {"id": rid, "type": "videorectangle", "from_name": "box", "to_name": "video",
            "value": {"framesCount": 10, "duration": 1.0, "sequence": seq, "labels": [label]}}  # fmt: skip


def _run(tmp_path, fmt, *extra, tasks=None):
    tasks_json = tmp_path / "tasks.json"
    tasks_json.write_text(json.dumps(tasks or [
        {"id": 7, "data": {"video": "/data/local-files/?d=v/clip.webm"},
         "annotations": [{"id": 1, "result": [_track()]}]},
        {"id": 8, "data": {"video": "/data/local-files/?d=v/clip.webm"}, "annotations": []},
    ]))  # fmt: skip
    (tmp_path / "video.xml").write_text(CONFIG)
    argv = ["export", "--tasks-json", str(tasks_json), "--label-config",
            str(tmp_path / "video.xml"), "--format", fmt, "--out", str(tmp_path / "out"), *extra]  # fmt: skip
    return cli_main(argv)


def test_mot_lines_follow_label_studio_interpolation(tmp_path, capsys):
    assert _run(tmp_path, "mot", "--frame-size", "200x100") == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["tasks"] == 1 and summary["skipped"] == [8]
    lines = (tmp_path / "out" / "task-7.txt").read_text().splitlines()
    rows = [list(map(float, line.split(","))) for line in lines]
    assert [int(r[0]) for r in rows] == [1, 2, 3, 4, 5], "shown on frames 1..5, then switched off"
    assert rows[0][2:6] == pytest.approx([20, 20, 40, 30])  # percent → pixels of 200x100
    assert rows[2][2] == pytest.approx(40), "frame 3 halfway: x 10% → 30%, 20% of 200 px"


def test_yolo_files_per_frame_with_classes(tmp_path):
    assert _run(tmp_path, "yolo", "--frame-size", "200x100") == 0
    folder = tmp_path / "out" / "task-7"
    assert (folder / "classes.txt").read_text().split() == ["Car", "Person"]
    files = sorted(folder.glob("0*.txt"))
    assert len(files) == 10
    cls, cx, cy, w, h = files[0].read_text().split()
    assert cls == "1" and float(cx) == pytest.approx(0.2) and float(w) == pytest.approx(0.2)
    assert files[7].read_text() == "", "nothing shown after the span ends"


def _video(tmp_path, monkeypatch) -> None:
    """A 10-frame 160x120 WebM at the local-files path the tasks name."""
    root = tmp_path / "media"
    (root / "v").mkdir(parents=True)
    writer = cv2.VideoWriter(
        str(root / "v" / "clip.webm"), cv2.VideoWriter_fourcc(*"VP80"), 10, (160, 120)
    )
    for _ in range(10):
        writer.write(np.full((120, 160, 3), 90, np.uint8))
    writer.release()
    monkeypatch.setenv("LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT", str(root))
    monkeypatch.setenv("MODEL_DIR", str(tmp_path / "md"))


def test_size_is_read_from_the_video(tmp_path, monkeypatch, capsys):
    _video(tmp_path, monkeypatch)
    assert _run(tmp_path, "mot") == 0
    first = (tmp_path / "out" / "task-7.txt").read_text().splitlines()[0].split(",")
    assert float(first[2]) == pytest.approx(16) and float(first[4]) == pytest.approx(32)


def test_masks_of_a_video_project_are_computed_again_from_the_boxes(tmp_path, monkeypatch):
    """DAVIS masks of a <Video> task: its boxes through the configured engine (here the fake:
    a box segments as itself, the tracker carries it), one object per label."""
    from backend.masks import read_index_png

    _video(tmp_path, monkeypatch)
    monkeypatch.setenv("ENGINE", "tests.fakes:fake_engine")
    assert _run(tmp_path, "davis") == 0
    files = sorted((tmp_path / "out" / "Annotations" / "task-7").glob("*.png"))
    assert len(files) == 10, "every frame of the video"
    first = read_index_png(files[0])
    assert set(np.unique(first)) == {0, 2}, "Person is the config's second label"
    ys, xs = np.nonzero(first)
    assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (16, 24, 48, 60)
