"""``segment``: click grammar, real DAVIS frames with the classical engine, a generated mp4
with the fake engine, preview videos and bad inputs."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

import backend.cli_segment as seg
from backend.cli import main as cli_main
from backend.cli_segment import ClickSpec, build_objects, parse_click
from backend.ls.export import read_index_png
from backend.masks import jaccard
from backend.types import Click
from tests.conftest import DAVIS, fake_engine, write_video

BLACKSWAN = DAVIS / "JPEGImages" / "480p" / "blackswan"
BLACKSWAN_GT = DAVIS / "Annotations" / "480p" / "blackswan"


def _moving_disk(i: int, w: int, h: int) -> np.ndarray:
    img = np.full((h, w, 3), 30, np.uint8)
    cv2.circle(img, (40 + 4 * i, 60), 18, (40, 220, 80), -1)
    return img


def make_video(path: Path, count: int) -> Path:
    return write_video(path, count, _moving_disk, size=(160, 120), fps=12.0)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10,20", ClickSpec(0, Click(10, 20, True))),
        ("10.5, 20,+", ClickSpec(0, Click(10.5, 20, True))),
        ("3,4,-", ClickSpec(0, Click(3, 4, False))),
        ("3,4@7", ClickSpec(7, Click(3, 4, True))),
        ("3,4,-@12", ClickSpec(12, Click(3, 4, False))),
    ],
)
def test_parse_click(text, expected):
    assert parse_click(text) == expected


@pytest.mark.parametrize(
    "text", ["", "10", "10,", "a,b", "1,2,x", "1,2@", "1,2@-3", "1;2", "1,2,3", "-1,5", "1,2,+,-"]
)
def test_parse_click_rejects(text):
    with pytest.raises(ValueError, match=r"X,Y\[,\+\|-\]\[@FRAME\]|>= 0"):
        parse_click(text)


def test_build_objects_follows_command_line_order():
    c = [parse_click(t) for t in ("1,1", "2,2@3", "3,3,-", "4,4")]
    objs = build_objects(
        [
            ("click", c[0]),
            ("label", "car"),
            ("click", c[1]),
            ("click", c[2]),
            ("label", "dog"),
            ("click", c[3]),
        ]
    )
    assert [(o.obj_id, o.label) for o in objs] == [(1, "object 1"), (2, "car"), (3, "dog")]
    assert objs[1].clicks == {3: [Click(2, 2)], 0: [Click(3, 3, False)]}
    assert objs[2].clicks == {0: [Click(4, 4)]}


def test_segment_davis_frames_with_classical_engine(tmp_path, capsys):
    out = tmp_path / "masks"
    gt0 = cv2.imread(str(BLACKSWAN_GT / "00000.png"), cv2.IMREAD_GRAYSCALE) > 127
    # full 854×480: at reduced sizes the one-click mask of the swan is not stable
    dist = cv2.distanceTransform(gt0.astype(np.uint8), cv2.DIST_L2, 5)
    y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
    code = cli_main(
        [
            "segment",
            str(BLACKSWAN),
            "--max-frames",
            "4",
            "--engine",
            "classical",
            "--label",
            "swan",
            "--click",
            f"{x},{y}",
            "--out",
            str(out),
            "--overlay",
            str(tmp_path / "preview.webm"),
        ]
    )
    assert code == 0, capsys.readouterr().err
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == [f"{i:05d}.png" for i in range(4)]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames"] == 4 and (summary["width"], summary["height"]) == (854, 480)
    (obj,) = summary["objects"]
    assert obj["label"] == "swan" and obj["id"] == 1
    assert len(obj["scores"]) == 4 and all(0.0 <= s <= 1.0 for s in obj["scores"])
    for i in (0, 3):
        mask = read_index_png(out / f"{i:05d}.png")
        assert set(np.unique(mask)) <= {0, 1}
        gt = cv2.imread(str(BLACKSWAN_GT / f"{i:05d}.png"), cv2.IMREAD_GRAYSCALE) > 127
        assert jaccard(mask == 1, gt) > 0.6
        assert obj["areas"][i] == int((mask == 1).sum())
    cap = cv2.VideoCapture(str(tmp_path / "preview.webm"))
    n = 0
    while cap.read()[0]:
        n += 1
    assert n == 4


@pytest.fixture
def with_fake_engine(monkeypatch):
    monkeypatch.setattr(seg, "build_engine", lambda name, settings=None: fake_engine())


def test_segment_mp4_two_objects_with_overlay(tmp_path, capsys, with_fake_engine):
    video = make_video(tmp_path / "clip.mp4", 6)
    out = tmp_path / "out"
    code = cli_main(
        [
            "segment",
            str(video),
            "--label",
            "ball",
            "--click",
            "40,60",
            "--label",
            "corner",
            "--click",
            "140,20@2",
            "--click",
            "150,10,-@2",
            "--out",
            str(out),
            "--overlay",
            str(tmp_path / "preview.mp4"),
        ]
    )
    assert code == 0, capsys.readouterr().err
    m0 = read_index_png(out / "00000.png")
    m2 = read_index_png(out / "00002.png")
    m5 = read_index_png(out / "00005.png")
    assert m0[60, 40] == 1 and m0[30, 130] == 2  # object 2 propagated back from frame 2
    assert m2[30, 130] == 2 and m2[20, 140] == 0  # the negative click carves a hole
    assert m5[60, 40] == 1 and m5[30, 130] == 2  # fake tracker copies the masks
    summary = json.loads((out / "summary.json").read_text())
    assert [o["label"] for o in summary["objects"]] == ["ball", "corner"]
    assert summary["objects"][1]["scores"][0] == pytest.approx(0.8)  # fake tracker confidence
    assert summary["objects"][1]["scores"][2] == pytest.approx(0.9)  # keyframe: segmenter score
    cap = cv2.VideoCapture(str(tmp_path / "preview.mp4"))
    ok, frame = cap.read()
    assert ok and frame.shape == (120, 160, 3)
    assert cap.get(cv2.CAP_PROP_FRAME_COUNT) == 6


@pytest.mark.parametrize(
    ("setup", "clicks", "message"),
    [
        (lambda d: d / "missing.mp4", ["--click", "1,1"], "no such file"),
        (
            lambda d: (d / "bad.mp4").write_bytes(b"\x00\x01garbage" * 64) and d / "bad.mp4",
            ["--click", "1,1"],
            "cannot open as a video",
        ),
        (lambda d: make_video(d / "zero.mp4", 0), ["--click", "1,1"], "zero.mp4"),
        (lambda d: make_video(d / "ok.mp4", 3), [], "no clicks"),
        (lambda d: make_video(d / "ok.mp4", 3), ["--click", "500,10"], "outside the 160x120"),
        (lambda d: make_video(d / "ok.mp4", 3), ["--click", "5,10@3"], "the video has 3 frames"),
        (lambda d: make_video(d / "ok.mp4", 3), ["--click", "5,10,-"], "positive click"),
        (lambda d: make_video(d / "ok.mp4", 3), ["--label", "a"], "'a' has no --click"),
        (
            lambda d: make_video(d / "ok.mp4", 3),
            ["--click", "5,5", "--overlay", "p.gif"],
            "--overlay",
        ),
    ],
)
def test_bad_inputs(tmp_path, capsys, with_fake_engine, setup, clicks, message):
    src = setup(tmp_path)
    code = cli_main(["segment", str(src), *clicks, "--out", str(tmp_path / "out")])
    assert code != 0
    assert message in capsys.readouterr().err


def test_bad_click_syntax_exits_with_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        cli_main(["segment", str(tmp_path), "--click", "12;40", "--out", str(tmp_path / "o")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "bad click '12;40'" in err and "X,Y[,+|-][@FRAME]" in err
