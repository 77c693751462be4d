"""``import-video`` offline (--dry-run) on generated videos and DAVIS frames, plus bad inputs."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from backend.cli import main as cli_main
from backend.cli_import import chunk_tasks, label_config, safe_name
from backend.ls.labelconfig import parse_label_config
from tests.conftest import DAVIS, REPO, write_video

BLACKSWAN = DAVIS / "JPEGImages" / "480p" / "blackswan"


def _moving_dot(i: int, w: int, h: int) -> np.ndarray:
    img = np.zeros((h, w, 3), np.uint8)
    cv2.circle(img, (10 + 3 * i, h // 2), 8, (0, 200, 255), -1)
    return img


def make_video(path: Path, count: int, *, fourcc="mp4v") -> Path:
    return write_video(path, count, _moving_dot, size=(96, 64), fps=20.0, fourcc=fourcc)


def run(argv: list[str], monkeypatch, tmp_path: Path) -> int:
    monkeypatch.delenv("LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT", raising=False)
    monkeypatch.delenv("LABEL_STUDIO_URL", raising=False)
    monkeypatch.delenv("LABEL_STUDIO_API_KEY", raising=False)
    return cli_main(["import-video", *argv])


def test_dry_run_video_in_chunks(tmp_path, monkeypatch, capsys):
    video = make_video(tmp_path / "my clip.mp4", 21)
    root = tmp_path / "media"
    out = tmp_path / "tasks.json"
    code = run(
        [
            str(video),
            "--document-root",
            str(root),
            "--stride",
            "2",
            "--chunk-size",
            "4",
            "--dry-run",
            "--out-json",
            str(out),
        ],
        monkeypatch,
        tmp_path,
    )
    assert code == 0, capsys.readouterr().err
    tasks = json.loads(out.read_text())
    # 21 frames, stride 2 → 11 kept frames (0, 2, ..., 20) → chunks of 4, 4, 3
    assert [len(t["data"]["frames"]) for t in tasks] == [4, 4, 3]
    assert [t["data"]["frame_offset"] for t in tasks] == [0, 8, 16]
    assert all(t["data"]["video"] == "my clip.mp4" for t in tasks)
    assert all(t["data"]["fps"] == pytest.approx(10.0) for t in tasks)
    first = tasks[0]["data"]["frames"][0]
    assert first == "/data/local-files/?d=videos/my_clip/00000.jpg"
    assert tasks[2]["data"]["frames"][-1].endswith("videos/my_clip/00020.jpg")
    for t in tasks:
        for url in t["data"]["frames"]:
            rel = url.split("?d=", 1)[1]
            img = cv2.imread(str(root / rel))
            assert img is not None and img.shape == (64, 96, 3)


def test_dry_run_davis_folder_resized(tmp_path, monkeypatch, capsys):
    out = tmp_path / "tasks.json"
    monkeypatch.setenv("LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT", str(tmp_path / "root"))
    code = cli_main(
        [
            "import-video",
            str(BLACKSWAN),
            "--max-frames",
            "5",
            "--resize",
            "240",
            "--jpeg-quality",
            "80",
            "--chunk-size",
            "0",
            "--prefix",
            "davis",
            "--dry-run",
            "--out-json",
            str(out),
        ]
    )
    assert code == 0, capsys.readouterr().err
    (task,) = json.loads(out.read_text())
    frames = task["data"]["frames"]
    assert len(frames) == 5 and task["data"]["video"] == "blackswan"
    img = cv2.imread(str(tmp_path / "root" / frames[4].split("?d=", 1)[1]))
    assert img.shape == (240, 427, 3)


def test_two_videos_with_the_same_name_get_separate_folders(tmp_path, monkeypatch):
    a = make_video((tmp_path / "a").mkdir() or tmp_path / "a" / "clip.mp4", 3)
    b = make_video((tmp_path / "b").mkdir() or tmp_path / "b" / "clip.avi", 3, fourcc="MJPG")
    out = tmp_path / "tasks.json"
    assert (
        run(
            [
                str(a),
                str(b),
                "--document-root",
                str(tmp_path / "m"),
                "--dry-run",
                "--out-json",
                str(out),
            ],
            monkeypatch,
            tmp_path,
        )
        == 0
    )
    tasks = json.loads(out.read_text())
    dirs = {t["data"]["frames"][0].rsplit("/", 1)[0] for t in tasks}
    assert len(dirs) == 2


def test_chunk_tasks_and_safe_name():
    tasks = chunk_tasks(
        ["u0", "u1", "u2"], [10, 12, 14], video="v.mp4", fps=12.5, chunk_size=2, frames_key="imgs"
    )
    assert tasks == [
        {"data": {"imgs": ["u0", "u1"], "video": "v.mp4", "fps": 12.5, "frame_offset": 10}},
        {"data": {"imgs": ["u2"], "video": "v.mp4", "fps": 12.5, "frame_offset": 14}},
    ]
    assert safe_name("My Video (1).mp4") == "My_Video_1"
    assert safe_name("frames_dir") == "frames_dir"


def test_shipped_label_config_matches_docs():
    ours = parse_label_config(label_config())
    docs = parse_label_config((REPO / "docs" / "labeling-config.xml").read_text())
    assert ours == docs
    custom = parse_label_config(label_config(["Car", 'Person "A"']))
    assert custom.brush_labels == ("Car", 'Person "A"') == custom.keypoint_labels


@pytest.mark.parametrize(
    ("make", "extra", "message"),
    [
        (lambda d: d / "missing.mp4", [], "no such file"),
        (
            lambda d: (d / "garbage.mp4").write_bytes(b"\x00garbage" * 50) and d / "garbage.mp4",
            [],
            "cannot open as a video",
        ),
        (lambda d: make_video(d / "zero.mp4", 0), [], "zero.mp4"),
        (lambda d: (d / "empty").mkdir() or d / "empty", [], "no image files"),
        (lambda d: make_video(d / "ok.mp4", 2), ["--stride", "0"], "--stride"),
        (lambda d: make_video(d / "ok.mp4", 2), ["--jpeg-quality", "101"], "--jpeg-quality"),
        (lambda d: make_video(d / "ok.mp4", 2), ["--resize", "big"], "--resize"),
    ],
)
def test_bad_inputs_give_a_message_and_nonzero_exit(
    tmp_path, monkeypatch, capsys, make, extra, message
):
    src = make(tmp_path)
    code = run(
        [
            str(src),
            "--document-root",
            str(tmp_path / "m"),
            "--dry-run",
            "--out-json",
            str(tmp_path / "t.json"),
            *extra,
        ],
        monkeypatch,
        tmp_path,
    )
    assert code != 0
    assert message in capsys.readouterr().err
    assert not (tmp_path / "t.json").exists()


def test_needs_a_destination_and_a_target(tmp_path, monkeypatch, capsys):
    video = make_video(tmp_path / "ok.mp4", 2)
    assert (
        run(
            [str(video), "--dry-run", "--out-json", str(tmp_path / "t.json")], monkeypatch, tmp_path
        )
        == 2
    )
    assert "--document-root" in capsys.readouterr().err
    assert run([str(video), "--document-root", str(tmp_path)], monkeypatch, tmp_path) == 2
    assert "--project" in capsys.readouterr().err
    assert (
        run([str(video), "--document-root", str(tmp_path), "--project", "3"], monkeypatch, tmp_path)
        == 2
    )
    assert "LABEL_STUDIO_URL" in capsys.readouterr().err
    assert (
        run([str(video), "--upload", "--dry-run", "--out-json", "x.json"], monkeypatch, tmp_path)
        == 2
    )
    assert "--upload" in capsys.readouterr().err
