"""Label Studio frame grid over video files: frame↔time mapping, VFR, cache, errors.

Clips are generated here: each frame shows its index as a 3×4 block code (survives VP8 and
MPEG-4 compression), so a test reads back which of the file's frames it got.
"""

from __future__ import annotations

import bisect
import math
import random
import threading
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from backend.frames import FrameSource, MediaError
from backend.video import Resize, VideoError
from backend.video_ls import (
    FrameIndexError,
    LSVideoFrameSource,
    frame_to_rgb,
    ls_frame_count,
    ls_result_time,
    ls_seek_time,
)
from tests.conftest import write_video

W, H, SIDE = 64, 48, 16  # 4×3 blocks of 16 px: 12 bits


def code_image(number: int, width: int = W, height: int = H) -> np.ndarray:
    """An RGB frame showing ``number`` as black/white 16 px blocks (grey elsewhere)."""
    img = np.full((height, width, 3), 128, np.uint8)
    for bit in range(12):
        r, c = divmod(bit, 4)
        img[r * SIDE : (r + 1) * SIDE, c * SIDE : (c + 1) * SIDE] = 255 if number >> bit & 1 else 0
    return img


def read_code(img: np.ndarray) -> int:
    """The number :func:`code_image` drew."""
    q = SIDE // 4
    number = 0
    for bit in range(12):
        r, c = divmod(bit, 4)
        block = img[r * SIDE + q : (r + 1) * SIDE - q, c * SIDE + q : (c + 1) * SIDE - q]
        number |= (block.mean() > 127) << bit
    return number


def write_clip(
    path: Path, pts: list[int], time_base: Fraction, *, codec: str = "libvpx", size=(W, H)
) -> Path:
    """Encode frame ``k`` (showing ``k``) at ``pts[k] × time_base`` seconds."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=1 / time_base)
        stream.width, stream.height = size
        stream.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
        stream.codec_context.time_base = time_base
        stream.bit_rate = 2_000_000
        for k, p in enumerate(pts):
            frame = av.VideoFrame.from_ndarray(code_image(k, *size), format="rgb24")
            frame.pts, frame.time_base = p, time_base
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    return path


def cfr_clip(folder: Path, fps: str, count: int = 50, *, suffix: str = ".webm") -> Path:
    """``count`` frames at ``fps`` ("29.97" means 30000/1001): VP8 WebM, MPEG-4 mp4 or
    MJPEG avi."""
    rate = Fraction(30000, 1001) if fps == "29.97" else Fraction(fps)
    codec = {".webm": "libvpx", ".mp4": "mpeg4", ".avi": "mjpeg"}[suffix]
    return write_clip(folder / f"f{fps}{suffix}", list(range(count)), 1 / rate, codec=codec)


def true_times(path: Path) -> list[float]:
    """Presentation times (s) of the file's frames, decoded plainly from the start."""
    with av.open(str(path)) as container:
        return [float(f.time) for f in container.decode(video=0)]


def expected_frame(times: list[float], index: int, rate: str) -> int:
    """Which of the file's frames the player shows at LS frame ``index + 1``: the last one
    starting at or before ``index / rate`` snapped to 2 ms, plus 2 ms (exact arithmetic)."""
    step = Fraction(1, 500)
    seek = math.floor(Fraction(index) / Fraction(rate) / step + Fraction(1, 2)) * step + step
    return max(0, bisect.bisect_right(times, float(seek) + 1e-9) - 1)


# ------------------------------------------------------------------------ grid arithmetic


def test_grid_arithmetic():
    assert ls_frame_count(50 / 30, 25) == 42  # 41.67: the doc's 30 fps file under 25
    assert ls_frame_count(2.0, 30) == 60  # the doc's 25 fps file under 30
    assert ls_frame_count(1.1, 30) == 33  # 33.000000000000004: no extra frame from float error
    assert ls_frame_count(0.94, 25) == 24  # 23.5 rounds half up, as Math.round
    assert ls_frame_count(0.01, 25) == 0
    assert ls_seek_time(0, 25) == pytest.approx(0.002)
    assert ls_seek_time(9, 25) == pytest.approx(0.362)
    assert ls_seek_time(7, 29.97) == pytest.approx(0.236)  # 0.23357 → 0.234 + 0.002
    assert ls_result_time(0, 25) == pytest.approx(0.04)  # time = frame / framerate, 1-based


# ------------------------------------------------------------------------ frame ↔ time mapping

PAIRS = [  # (file fps, config framerate)
    ("24", "24"),
    ("24", "25"),
    ("25", "25"),
    ("25", "30"),
    ("29.97", "29.97"),
    ("29.97", "30"),
    ("30", "30"),
    ("30", "25"),
]


@pytest.mark.parametrize(("fps", "rate"), PAIRS)
def test_mapping_follows_the_player(tmp_path, fps, rate):
    clip = cfr_clip(tmp_path, fps)
    times = true_times(clip)
    assert len(times) == 50
    with LSVideoFrameSource(clip, float(rate)) as src:
        assert isinstance(src, FrameSource)
        assert len(src) == ls_frame_count(src.duration, float(rate))
        got = [read_code(src[i]) for i in range(len(src))]
        assert got == [expected_frame(times, i, rate) for i in range(len(src))]
        if fps == rate:  # matching rates: every file frame once, in order
            assert len(src) == 50 and got == list(range(50))
            assert src.rate_mismatch is None


@pytest.mark.parametrize("suffix", [".webm", ".mp4", ".avi"])
@pytest.mark.parametrize("fps", ["24", "25", "29.97", "30"])
def test_matching_rate_is_the_identity_in_every_container(tmp_path, fps, suffix):
    clip = cfr_clip(tmp_path, fps, 30, suffix=suffix)
    with LSVideoFrameSource(clip, float(fps)) as src:
        assert len(src) == 30
        assert [read_code(src[i]) for i in range(30)] == list(range(30))
        assert src.timestamp(29) == pytest.approx(29 / float(Fraction(fps)), abs=1e-3)


def test_doc_example_30fps_file_under_25(tmp_path):
    with LSVideoFrameSource(cfr_clip(tmp_path, "30"), 25) as src:
        assert len(src) == 42
        assert read_code(src[10 - 1]) == 11 - 1  # LS frame 10 shows real frame 11
        assert read_code(src[40 - 1]) == 47 - 1  # LS frame 40 shows real frame 47
        assert "30 fps" in src.rate_mismatch and "framerate is 25" in src.rate_mismatch


def test_doc_example_25fps_file_under_30_repeats_frames(tmp_path):
    with LSVideoFrameSource(cfr_clip(tmp_path, "25"), 30) as src:
        assert len(src) == 60
        assert read_code(src[0]) == read_code(src[1]) == 0  # LS 1 and 2 both show real 1
        assert read_code(src[10 - 1]) == 8 - 1  # LS 10 shows real 8
        assert src[0] is src[1]  # one decoded picture, not two copies
        assert "repeats" in src.rate_mismatch


def test_seek_lands_2ms_inside_the_frame(tmp_path):
    """24 fps under 25: LS frame 2 seeks to 0.042 s, just past real frame 2's start."""
    with LSVideoFrameSource(cfr_clip(tmp_path, "24"), 25) as src:
        assert read_code(src[1]) == 1
        assert src.frame_time(1) == pytest.approx(0.042)


def test_millisecond_timestamps_need_the_tolerance(tmp_path):
    """29.97 fps in WebM stores frame 7 at 234 ms, after its exact time 233.57 ms."""
    clip = cfr_clip(tmp_path, "29.97")
    assert true_times(clip)[7] == pytest.approx(0.234)
    with LSVideoFrameSource(clip, 29.97) as src:
        assert read_code(src[7]) == 7
        assert src.rate_mismatch is None  # 29.97 and 30000/1001 agree


def test_variable_frame_rate(tmp_path):
    pts_ms = [0, 40, 80, 200, 220, 240, 500, 900, 910, 1300]
    clip = write_clip(tmp_path / "vfr.webm", pts_ms, Fraction(1, 1000))
    times = true_times(clip)
    assert times == pytest.approx([p / 1000 for p in pts_ms])
    for rate in ("25", "10", "60"):
        with LSVideoFrameSource(clip, float(rate)) as src:
            assert 1.3 <= src.duration <= 1.4
            assert len(src) == ls_frame_count(src.duration, float(rate))
            order = list(range(len(src)))
            random.Random(rate).shuffle(order)
            for i in order:
                assert read_code(src[i]) == expected_frame(times, i, rate), (rate, i)
                assert src.timestamp(i) == pytest.approx(times[expected_frame(times, i, rate)])


def test_frames_before_a_late_first_frame_show_it(tmp_path):
    clip = write_clip(tmp_path / "late.webm", [200 + 40 * k for k in range(10)], Fraction(1, 1000))
    times = true_times(clip)
    with LSVideoFrameSource(clip, 25) as src:
        seeks = count_seeks(src)
        got = [read_code(src[i]) for i in range(len(src))]
        assert got[:6] == [0] * 6  # 0 … 0.2 s: nothing yet, the player shows the first frame
        assert got == [expected_frame(times, i, "25") for i in range(len(src))]
        assert seeks == []


def test_fast_rgb_conversion_matches_pyav(tmp_path):
    clip = write_clip(tmp_path / "c.webm", [0, 1], Fraction(1, 25), size=(160, 120))
    with av.open(str(clip)) as container:
        frame = next(container.decode(video=0))
    assert frame.format.name == "yuv420p"
    fast = frame_to_rgb(frame).astype(int)
    assert fast.shape == (120, 160, 3)
    assert np.abs(fast - frame.to_ndarray(format="rgb24")).mean() < 2


def test_opencv_written_mp4v_file(tmp_path):
    def draw(i: int, w: int, h: int) -> np.ndarray:
        return code_image(i, w, h)[:, :, ::-1]  # BGR

    clip = write_video(tmp_path / "cv.mp4", 30, draw, size=(W, H), fps=10.0)
    with LSVideoFrameSource(clip, 10) as src:
        assert len(src) == 30
        assert [read_code(src[i]) for i in range(30)] == list(range(30))


# ------------------------------------------------------------------------ access patterns


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory) -> Path:
    """300 frames at 30 fps with a keyframe every 2 s."""
    path = tmp_path_factory.mktemp("long") / "long.webm"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libvpx", rate=30)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        stream.codec_context.gop_size = 60
        stream.bit_rate = 2_000_000
        for k in range(300):
            frame = av.VideoFrame.from_ndarray(code_image(k), format="rgb24")
            frame.pts, frame.time_base = k, Fraction(1, 30)
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    return path


def count_seeks(src: LSVideoFrameSource) -> list[float]:
    seeks: list[float] = []
    real = src._seek

    def spy(t: float) -> None:
        seeks.append(t)
        real(t)

    src._seek = spy  # type: ignore[method-assign]
    return seeks


def test_sequential_reads_never_seek(long_clip):
    with LSVideoFrameSource(long_clip, 30, cache_size=4) as src:
        seeks = count_seeks(src)
        assert [read_code(src[i]) for i in range(300)] == list(range(300))
        assert seeks == []
        src[150]  # a jump back seeks once, then reading on continues the decoder
        assert len(seeks) == 1
        assert [read_code(src[i]) for i in range(151, 200)] == list(range(151, 200))
        assert len(seeks) == 1


def test_random_access_equals_sequential(long_clip):
    with LSVideoFrameSource(long_clip, 25, cache_size=0) as src:
        sequential = [src[i].copy() for i in range(len(src))]
    order = list(range(len(sequential)))
    random.Random(7).shuffle(order)
    with LSVideoFrameSource(long_clip, 25, cache_size=3) as src:
        for i in order:
            assert np.array_equal(src[i], sequential[i]), i


def test_backward_walk_decodes_runs(long_clip):
    with LSVideoFrameSource(long_clip, 30, cache_size=16) as src:
        src[299]
        seeks = count_seeks(src)
        assert [read_code(src[i]) for i in range(298, -1, -1)] == list(range(298, -1, -1))
        assert len(seeks) <= 300 // 15 + 1  # one seek per run of 16, not one per frame


def test_cache_is_bounded(long_clip):
    with LSVideoFrameSource(long_clip, 30, cache_size=8) as src:
        for i in range(300):
            src[i]
            assert len(src._cache) <= 8
    frame_bytes = W * H * 3
    with LSVideoFrameSource(long_clip, 30, cache_size=100, cache_bytes=3 * frame_bytes) as src:
        for i in range(300):
            src[i]
        assert len(src._cache) == 3
        assert read_code(src[298]) == 298  # a hit
    with LSVideoFrameSource(long_clip, 30, cache_size=0) as src:
        src[5]
        assert len(src._cache) == 0


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="needs Linux /proc")
def test_memory_stays_bounded(tmp_path):
    """400 frames of 320×240 (92 MiB as RGB) read twice: memory grows by far less."""
    clip = write_clip(tmp_path / "big.webm", list(range(400)), Fraction(1, 25), size=(320, 240))
    with LSVideoFrameSource(clip, 25, cache_size=8) as src:
        for i in range(40):  # warm up the decoder and allocator
            src[i]
        before = rss_mib()
        for i in list(range(len(src))) + list(range(len(src) - 1, -1, -1)):
            src[i]
        assert rss_mib() - before < 40


def test_concurrent_readers(long_clip):
    errors: list[str] = []
    with LSVideoFrameSource(long_clip, 30, cache_size=4) as src:

        def reader(seed: int) -> None:
            rng = random.Random(seed)
            for _ in range(25):
                i = rng.randrange(len(src))
                if read_code(src[i]) != i:
                    errors.append(f"{seed}:{i}")

        threads = [threading.Thread(target=reader, args=(s,)) for s in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert errors == []


def test_resize_and_frames_count(long_clip):
    with LSVideoFrameSource(long_clip, 30, resize=Resize(short=24)) as src:
        assert src[0].shape == (24, 32, 3) and (src.width, src.height) == (32, 24)
    with LSVideoFrameSource(long_clip, 30, frames_count=302) as src:
        assert len(src) == 302  # the player's own count wins; past the end: the last frame
        assert read_code(src[301]) == 299


# ------------------------------------------------------------------------ errors


def test_index_outside_the_grid(tmp_path):
    with LSVideoFrameSource(cfr_clip(tmp_path, "30", 10), 30) as src:
        for bad in (10, 11, -1):
            with pytest.raises(FrameIndexError, match="outside the video's 10 frames"):
                src[bad]
        with pytest.raises(MediaError):
            src[10]
        with pytest.raises(IndexError):
            src[10]
        assert sum(1 for _ in src) == 10  # iteration stops at the end of the grid
    with pytest.raises(VideoError, match="closed"):
        src[0]


def test_unreadable_files(tmp_path):
    with pytest.raises(VideoError, match="no such file"):
        LSVideoFrameSource(tmp_path / "missing.webm")
    with pytest.raises(VideoError, match="folder"):
        LSVideoFrameSource(tmp_path)
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(bytes(random.Random(0).randrange(256) for _ in range(4096)))
    with pytest.raises(MediaError, match="garbage.mp4"):
        LSVideoFrameSource(garbage)
    empty = tmp_path / "empty.webm"
    empty.write_bytes(b"")
    with pytest.raises(MediaError, match="empty.webm"):
        LSVideoFrameSource(empty)
    truncated = tmp_path / "truncated.webm"
    truncated.write_bytes(cfr_clip(tmp_path, "25", 20).read_bytes()[:200])
    with pytest.raises(MediaError, match="truncated.webm"):
        LSVideoFrameSource(truncated)


def test_audio_only_file(tmp_path):
    path = tmp_path / "tone.wav"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(
            np.zeros((1, 800), np.int16), format="s16", layout="mono"
        )
        frame.sample_rate = 8000
        out.mux(stream.encode(frame))
        out.mux(stream.encode())
    with pytest.raises(VideoError, match="no video stream"):
        LSVideoFrameSource(path)


def empty_video(path: Path, codec: str) -> Path:
    """A video file with a video stream and no frame."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=25)
        stream.width, stream.height = W, H
        stream.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
        out.start_encoding()
    return path


def test_zero_length_videos(tmp_path):
    with pytest.raises(VideoError, match="no decodable frames"):
        LSVideoFrameSource(empty_video(tmp_path / "none.avi", "mjpeg"))
    with pytest.raises(VideoError, match="ends before any video frame"):
        LSVideoFrameSource(empty_video(tmp_path / "none.webm", "libvpx"))
    one = write_clip(tmp_path / "one.webm", [0], Fraction(1, 30))
    with pytest.raises(VideoError, match="shorter than one frame at framerate 1"):
        LSVideoFrameSource(one, 1)
    with LSVideoFrameSource(one, 30) as src:
        assert len(src) == 1 and read_code(src[0]) == 0


def test_bad_framerate_and_size_limit(tmp_path):
    clip = cfr_clip(tmp_path, "25", 5)
    with pytest.raises(MediaError, match="exceeds the frame size limit"):
        LSVideoFrameSource(clip, 25, max_pixels=W * H - 1)
    for bad in (0, -25, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="framerate"):
            LSVideoFrameSource(clip, bad)
