"""Frame extraction and lazy video access on generated videos and real DAVIS frames."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from backend.frames import MediaError, read_image
from backend.video import (
    Resize,
    Sampling,
    VideoError,
    VideoFrameSource,
    iter_frames,
    open_frames,
    parse_resize,
    probe,
    selected_indices,
)
from tests.conftest import DAVIS, write_video

BLACKSWAN = DAVIS / "JPEGImages" / "480p" / "blackswan"


def _stripes(i: int, w: int, h: int) -> np.ndarray:
    """Frame i shows i in binary as 8 black/white vertical stripes."""
    img = np.zeros((h, w, 3), np.uint8)
    stripe = w // 8
    for bit in range(8):
        if (i >> bit) & 1:
            img[:, bit * stripe : (bit + 1) * stripe] = 255
    return img


def make_video(path: Path, count: int, *, size=(64, 48), fourcc="mp4v") -> Path:
    return write_video(path, count, _stripes, size=size, fourcc=fourcc)


def level(frame: np.ndarray) -> int:
    """Which generated frame this is (decodes make_video's stripes)."""
    stripe = frame.shape[1] // 8
    means = [frame[:, b * stripe + 1 : (b + 1) * stripe - 1].mean() for b in range(8)]
    return sum(1 << b for b, m in enumerate(means) if m > 127)


def test_parse_resize():
    assert parse_resize("240") == Resize(short=240)
    assert parse_resize("640x360") == Resize(width=640, height=360)
    assert parse_resize(" 64X48 ") == Resize(width=64, height=48)
    for bad in ("", "0", "abc", "10x", "x10", "-5", "0x10"):
        with pytest.raises(ValueError, match="--resize"):
            parse_resize(bad)


def test_resize_target_keeps_aspect_and_never_upscales():
    assert Resize(short=240).target(854, 480) == (427, 240)
    assert Resize(short=240).target(480, 854) == (240, 427)
    assert Resize(short=1000).target(854, 480) == (854, 480)
    assert Resize(width=100, height=50).target(854, 480) == (100, 50)


def test_selected_indices_stride_fps_and_max():
    assert list(selected_indices(10, 25, Sampling(stride=3))) == [0, 3, 6, 9]
    assert list(selected_indices(10, 25, Sampling(fps=10))) == [0, 2, 5, 7]
    assert list(selected_indices(100, 25, Sampling(stride=2, max_frames=3))) == [0, 2, 4]
    # a target fps above the source rate keeps every frame
    assert list(selected_indices(4, 10, Sampling(fps=30))) == [0, 1, 2, 3]
    assert Sampling(fps=10).effective_fps(25) == pytest.approx(10)
    assert Sampling(stride=2).effective_fps(30) == pytest.approx(15)
    with pytest.raises(ValueError):
        Sampling(stride=0)
    with pytest.raises(ValueError):
        Sampling(fps=0)


@pytest.mark.parametrize(
    ("suffix", "fourcc"), [(".mp4", "mp4v"), (".avi", "MJPG"), (".webm", "VP80")]
)
def test_iter_frames_from_video_formats(tmp_path, suffix, fourcc):
    path = make_video(tmp_path / f"clip{suffix}", 12, fourcc=fourcc)
    info = probe(path)
    assert (info.width, info.height, info.fps) == (64, 48, 10.0)
    frames = list(iter_frames(path, Sampling(stride=4)))
    assert [f.source_index for f in frames] == [0, 4, 8]
    assert [level(f.image) for f in frames] == [0, 4, 8]
    assert frames[0].image.shape == (48, 64, 3) and frames[0].image.dtype == np.uint8


def test_iter_frames_resize_and_max_frames(tmp_path):
    path = make_video(tmp_path / "clip.mp4", 20, size=(128, 96))
    frames = list(iter_frames(path, Sampling(fps=5, max_frames=3, resize=Resize(short=48))))
    assert [f.source_index for f in frames] == [0, 2, 4]
    assert all(f.image.shape == (48, 64, 3) for f in frames)


def test_iter_frames_folder_of_davis_frames():
    frames = list(
        iter_frames(BLACKSWAN, Sampling(stride=2, max_frames=3, resize=Resize(short=240)))
    )
    assert [f.source_index for f in frames] == [0, 2, 4]
    assert frames[0].image.shape == (240, 427, 3)
    full = read_image(BLACKSWAN / "00002.jpg")
    expected = cv2.resize(full, (427, 240), interpolation=cv2.INTER_AREA)
    assert np.array_equal(frames[1].image, expected)


def test_video_frame_source_random_access_matches_sequential(tmp_path):
    path = make_video(tmp_path / "clip.mp4", 40)
    with VideoFrameSource(path, cache_size=3) as src:
        assert len(src) == 40
        sequential = [level(src[i]) for i in range(40)]
        assert sequential == list(range(40))
        for i in (39, 3, 17, 0, 38, 5, 5, 12, 11, 10, 25):
            assert level(src[i]) == i
        assert len(src._cache) <= 3
        with pytest.raises(IndexError):
            src[40]


def test_open_frames_folder_and_video(tmp_path):
    folder = open_frames(BLACKSWAN, resize=Resize(short=120))
    assert folder[0].shape == (120, 214, 3)  # 854*120/480 = 213.5 rounds up
    video = open_frames(make_video(tmp_path / "c.avi", 5, fourcc="MJPG"))
    assert len(video) == 5 and level(video[4]) == 4


def test_missing_garbage_and_empty_inputs(tmp_path):
    with pytest.raises(VideoError, match="no such file"):
        open_frames(tmp_path / "missing.mp4")
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"\x00not a video at all" * 100)
    with pytest.raises(VideoError, match="garbage.mp4"):
        list(iter_frames(garbage))
    with pytest.raises(VideoError):
        open_frames(garbage)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(MediaError, match="no image files"):
        list(iter_frames(empty))
    zero = make_video(tmp_path / "zero.mp4", 0)
    with pytest.raises(MediaError):
        list(iter_frames(zero))
    with pytest.raises(MediaError):
        open_frames(zero)
