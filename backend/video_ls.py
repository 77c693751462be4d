"""Frames of a video file as the Label Studio ``<Video>`` player numbers them (no HTTP here).

Label Studio (1.23) ignores the file's own frame rate: its frame grid is the ``framerate``
attribute of ``<Video>`` (default 24). For a video of ``duration`` seconds it has
``round(duration × framerate)`` frames, and LS frame ``f`` (1-based) shows the picture at
``(f − 1) / framerate`` seconds, snapped to the browser's 2 ms time grid plus 2 ms (so the
seek lands inside the frame). A 30 fps file under ``framerate="25"`` thus has 42 LS frames
and LS frame 10 shows the file's frame 11; a 25 fps file under 30 repeats frames. The
count's rounding and the 2 ms step follow the player's code (``ceil`` was its older count);
the UI-verified examples agree and are in the tests: 30 fps under 25 gives 42 frames (41.67
rounded), LS 10 → 11, LS 40 → 47; 25 fps under 30 gives 60, LS 1 and 2 → 1, LS 10 → 8.
``duration`` is the container's as FFmpeg reads it, which is what the browser uses for
ordinary files; pass the result's ``framesCount`` where LS counted differently.

:class:`LSVideoFrameSource` is a :class:`~backend.frames.FrameSource` on that grid: index
``i`` (0-based) is LS frame ``i + 1`` and returns the last decoded picture whose presentation
time is at or before the player's seek time. The same rule covers variable frame rate files,
since it uses the real presentation timestamps. Frames are decoded on demand: reading
``i + 1`` after ``i`` continues the decoder, any other jump seeks to the keyframe before and
decodes forward, walking backward decodes a short run at once, and a bounded LRU cache keeps
the last frames; the video is never held in memory.

Decoder: PyAV, chosen by measurement. ``bench/video_decode.py`` decodes to RGB arrays
(frames/s, two runs of best-of-3 on 2 shared, loaded CPU cores; H.264 with a 2 s GOP; random
= 40 seeks; OpenCV random by ``CAP_PROP_POS_FRAMES``):

===================  ==========  ==========  ===========
clip                 access      OpenCV      PyAV
===================  ==========  ==========  ===========
854×480 H.264        sequential  1274-1376   1337-1381
854×480 H.264        random      38-42       71-74
1920×1080 H.264      sequential  258-291     332-401
1920×1080 H.264      random      8-10        10-14
854×480 VP8, VFR     sequential  856-1102    588-882
854×480 VP8, VFR     random      9-11        34-36
===================  ==========  ==========  ===========

Both return the right frames on constant rate H.264. What decides it is time: the player
addresses frames by time, and on the variable frame rate WebM OpenCV's
``CAP_PROP_POS_MSEC`` seek returned the wrong frame 39 times out of 40 (up to 8.2 s off),
while PyAV seeks by presentation timestamp and was exact; PyAV is also as fast or faster
except on sequential VP8. PyAV's own RGB conversion (swscale) halves its rate, so 8-bit
4:2:0 frames are converted by OpenCV instead (:func:`frame_to_rgb`).

Frames are always H×W×3 uint8 RGB.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path

import av
import cv2
import numpy as np

from backend.frames import MediaError, check_frame_size
from backend.video import Resize, VideoError, resize_frame

log = logging.getLogger(__name__)

DEFAULT_LS_FRAMERATE = 24.0  # <Video framerate> when the config sets none
BROWSER_TIME_STEP = 0.002  # s; the player seeks on this grid, one step past the frame time
RATE_TOLERANCE = 0.01  # fps; config and file rates closer than this agree (29.97 vs 30000/1001)
FORWARD_DECODE_S = 2.0  # decode forward instead of seeking when the target is this close ahead
DEFAULT_CACHE_BYTES = 256 * 2**20
_EPS = 1e-6  # s; float slack when comparing times


class FrameIndexError(MediaError, IndexError):
    """An index outside the Label Studio frame grid (an ``IndexError`` too, as sequences raise)."""


def ls_frame_count(duration: float, framerate: float) -> int:
    """Frames on Label Studio's grid for ``duration`` seconds: ``round(duration × framerate)``.

    Rounds half up like the player (``Math.round``); ``ceil`` would turn a float error
    such as 60.0000001 into an extra frame.
    """
    return max(0, math.floor(duration * framerate + 0.5))


def ls_seek_time(index: int, framerate: float) -> float:
    """Seconds the player seeks to for 0-based ``index`` (LS frame ``index + 1``).

    ``index / framerate`` rounded to the browser's 2 ms grid, plus 2 ms, as the player does
    so that the seek lands inside the frame rather than on its edge.
    """
    step = BROWSER_TIME_STEP
    return math.floor(index / framerate / step + 0.5) * step + step


def ls_result_time(index: int, framerate: float) -> float:
    """``time`` of a VideoRectangle sequence item at 0-based ``index``: ``frame / framerate``."""
    return (index + 1) / framerate


def frame_to_rgb(frame: av.VideoFrame) -> np.ndarray:
    """A decoded frame as H×W×3 uint8 RGB.

    8-bit 4:2:0 frames (H.264, VP8, VP9, MPEG-4 as usually encoded) go through OpenCV's
    I420 conversion, about twice as fast as PyAV's swscale path (BT.601, as OpenCV's own
    capture); other formats are converted by PyAV.
    """
    if frame.format.name == "yuv420p" and frame.width % 2 == 0 and frame.height % 2 == 0:
        return cv2.cvtColor(frame.to_ndarray(format="yuv420p"), cv2.COLOR_YUV2RGB_I420)
    return frame.to_ndarray(format="rgb24")


def _check_rate(framerate: float) -> float:
    rate = float(framerate)
    if not (math.isfinite(rate) and rate > 0):
        raise ValueError(f"framerate must be a positive number, got {framerate!r}")
    return rate


class LSVideoFrameSource:
    """Random access to a video file on Label Studio's frame grid, decoded lazily with PyAV.

    ``framerate`` is the ``<Video>`` tag's rate. ``frames_count`` (a result's
    ``value.framesCount``, as the player counted) replaces the computed grid length when
    given; grid frames past the file's last frame show that frame, as the player does.
    ``cache_size`` and ``cache_bytes`` bound the decoded frames kept (whichever is reached
    first). ``resize`` scales frames as :class:`~backend.video.VideoFrameSource` does;
    ``max_pixels`` refuses larger videos (:func:`~backend.frames.check_frame_size`).
    :attr:`rate_mismatch` says when the file's rate and ``framerate`` disagree. Thread-safe.

    Raises :class:`~backend.video.VideoError` (a :class:`MediaError`) when the file is
    missing, unreadable, has no video or no frame on the grid; indexing outside the grid
    raises :class:`FrameIndexError`.
    """

    def __init__(
        self,
        path: str | Path,
        framerate: float = DEFAULT_LS_FRAMERATE,
        *,
        cache_size: int = 16,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
        resize: Resize | None = None,
        frames_count: int | None = None,
        max_pixels: int | None = None,
    ):
        self.path = Path(path)
        self.name = self.path.name
        self.framerate = _check_rate(framerate)
        self.resize = resize
        self._lock = threading.RLock()
        self._cache: OrderedDict[int, tuple[float, np.ndarray]] = OrderedDict()
        self._last_index: int | None = None
        self._warned_short = False
        self._closed = False
        self._origin = 0.0  # s; presentation time shown at player time 0 (if negative)
        self._first_t = 0.0  # s; presentation time of the first frame (after the origin)
        # Decoder state: the current frame (the last one at or before the last target time),
        # the next one decoded ahead, their times in seconds, and the current one as RGB.
        self._gen: Iterator[av.VideoFrame] | None = None
        self._cur: av.VideoFrame | None = None
        self._ahead: av.VideoFrame | None = None
        self._cur_t = self._ahead_t = 0.0
        self._cur_rgb: np.ndarray | None = None
        self._container = self._open()
        try:
            self._stream = self._container.streams.video[0]
            self._time_base = self._stream.time_base
            rate = self._stream.average_rate or self._stream.guessed_rate
            self.file_fps = float(rate) if rate else 0.0
            self._reset_decoder()
            if self._cur is None:
                raise VideoError(f"{self.name}: the video has no decodable frames")
            first = self._cur
            check_frame_size(first.width, first.height, name=self.name, max_pixels=max_pixels)
            self.source_width, self.source_height = first.width, first.height
            self.width, self.height = (
                resize.target(first.width, first.height) if resize else (first.width, first.height)
            )
            # Browsers shift a negative start to zero and keep a positive one.
            self._origin = min(0.0, self._cur_t)
            self._cur_t -= self._origin
            self._ahead_t -= self._origin
            self._first_t = self._cur_t
            self.duration = self._read_duration()
            self._count = ls_frame_count(self.duration, self.framerate)
            if frames_count is not None:
                if frames_count != self._count:
                    log.info(
                        "%s: Label Studio counts %d frames, the file gives %d at %g fps",
                        self.name,
                        frames_count,
                        self._count,
                        self.framerate,
                    )
                self._count = max(0, int(frames_count))
            if self._count == 0:
                raise VideoError(
                    f"{self.name}: the video ({self.duration:.3f} s) is shorter than one "
                    f"frame at framerate {self.framerate:g}"
                )
            frame_bytes = max(1, self.width * self.height * 3)
            self._capacity = (
                min(cache_size, max(1, cache_bytes // frame_bytes)) if cache_size > 0 else 0
            )
        except BaseException:
            self._container.close()
            raise

    # ------------------------------------------------------------------ opening, probing

    def _open(self) -> av.container.InputContainer:
        if not self.path.exists():
            raise VideoError(f"{self.path}: no such file")
        if self.path.is_dir():
            raise VideoError(f"{self.path}: is a folder, not a video file")
        try:
            container = av.open(str(self.path), metadata_errors="ignore")
        except av.error.EOFError:
            raise VideoError(
                f"{self.name}: the file ends before any video frame (empty or cut short)"
            ) from None
        except Exception as exc:  # any demuxer failure on untrusted bytes
            raise VideoError(
                f"{self.name}: cannot open as a video (corrupt or unsupported format: {exc})"
            ) from None
        if not container.streams.video:
            container.close()
            raise VideoError(f"{self.name}: the file has no video stream")
        # PyAV's default slice threading: frame threading ("AUTO") measured slower here, delays
        # the first frame after a seek, and would compete with the tracker for the cores.
        return container

    def _read_duration(self) -> float:
        """Length in seconds as the player sees it: the container's, else the stream's, else
        the end of the last packet (one demux pass, no decoding)."""
        if self._container.duration and self._container.duration > 0:
            return self._container.duration / av.time_base
        if self._stream.duration and self._stream.duration > 0:
            return float(self._stream.duration * self._time_base)
        end = None
        period = 1.0 / self.file_fps if self.file_fps > 0 else 0.0
        with av.open(str(self.path), metadata_errors="ignore") as scan:
            stream = scan.streams.video[0]
            for packet in scan.demux(stream):
                if packet.pts is not None:
                    stop = float(packet.pts * stream.time_base)
                    stop += float(packet.duration * stream.time_base) if packet.duration else period
                    end = stop if end is None else max(end, stop)
        return max(0.0, (end or 0.0) - self._origin)

    # ------------------------------------------------------------------ public API

    def __len__(self) -> int:
        return self._count

    @property
    def rate_mismatch(self) -> str | None:
        """A warning when the file's frame rate and the config's ``framerate`` disagree, else
        ``None``: the LS grid then skips or repeats the file's frames."""
        if self.file_fps <= 0 or abs(self.file_fps - self.framerate) <= RATE_TOLERANCE:
            return None
        real = round(self.duration * self.file_fps)
        effect = "skips some of them" if self.framerate < self.file_fps else "repeats some"
        return (
            f"{self.name} is {self.file_fps:g} fps but the labeling config's <Video> "
            f"framerate is {self.framerate:g}: Label Studio shows {self._count} frames for "
            f'the file\'s {real} and {effect}; set framerate="{self.file_fps:g}" on <Video> '
            "to label every frame"
        )

    def frame_time(self, index: int) -> float:
        """Seconds into the video that LS frame ``index + 1`` shows (the player's seek time)."""
        self._check_index(index)
        return ls_seek_time(index, self.framerate)

    def timestamp(self, index: int) -> float:
        """Presentation time (s) of the file's frame shown at ``index``."""
        return self._get(index)[0]

    def __getitem__(self, index: int) -> np.ndarray:
        """LS frame ``index + 1`` as H×W×3 uint8 RGB."""
        return self._get(index)[1]

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._container.close()
            self._gen = None
            self._cur = self._ahead = None
            self._cur_rgb = None
            self._cache.clear()
            self._closed = True

    def __enter__(self) -> LSVideoFrameSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ cache and runs

    def _check_index(self, index: int) -> None:
        if not 0 <= index < self._count:
            raise FrameIndexError(
                f"{self.name}: frame {index + 1} is outside the video's "
                f"{self._count} frames at framerate {self.framerate:g}"
            )

    def _get(self, index: int) -> tuple[float, np.ndarray]:
        self._check_index(index)
        with self._lock:
            if self._closed:
                raise VideoError(f"{self.name}: the video is closed")
            hit = self._cache.get(index)
            if hit is not None:
                self._cache.move_to_end(index)
                self._last_index = index
                return hit
            start = index
            if self._last_index == index + 1 and self._capacity > 1:
                # Walking backward: decode the run ending here once, later steps hit the cache.
                start = max(0, index - self._capacity + 1)
            out = (0.0, np.empty((0, 0, 3), np.uint8))
            for j in range(start, index + 1):
                self._advance_to(ls_seek_time(j, self.framerate))
                out = (self._cur_t, self._current_rgb())
                self._store(j, out)
            self._last_index = index
            return out

    def _store(self, index: int, item: tuple[float, np.ndarray]) -> None:
        if not self._capacity:
            return
        self._cache[index] = item
        self._cache.move_to_end(index)
        while len(self._cache) > self._capacity:
            self._cache.popitem(last=False)

    # ------------------------------------------------------------------ decoding

    def _reset_decoder(self) -> None:
        """Start decoding at the container's current position (after opening or a seek)."""
        self._gen = self._container.decode(self._stream)
        self._cur = self._ahead = None
        self._cur_t = self._ahead_t = 0.0
        self._cur_rgb = None
        self._ahead, self._ahead_t = self._pull(0.0)
        self._step()

    def _pull(self, previous_t: float) -> tuple[av.VideoFrame | None, float]:
        """The next decoded frame and its presentation time (s), or ``(None, 0)`` at the end."""
        if self._gen is None:
            return None, 0.0
        try:
            frame = next(self._gen)
        except StopIteration:
            self._gen = None
            return None, 0.0
        except av.FFmpegError as exc:
            raise VideoError(f"{self.name}: cannot decode the video ({exc})") from None
        if frame.pts is None:  # no timestamp: one frame period after the previous frame
            return frame, previous_t + (1.0 / self.file_fps if self.file_fps > 0 else 0.0)
        return frame, float(frame.pts * self._time_base) - self._origin

    def _step(self) -> None:
        """Make the look-ahead frame current and decode the next one."""
        self._cur, self._cur_t = self._ahead, self._ahead_t
        self._cur_rgb = None
        self._ahead, self._ahead_t = self._pull(self._cur_t)

    def _advance_to(self, t: float) -> None:
        """Make ``_cur`` the last frame presented at or before ``t`` seconds (the first frame
        when ``t`` is before it)."""
        if (
            self._cur is None
            or (t < self._cur_t - _EPS and self._cur_t > self._first_t + _EPS)
            or (
                self._ahead is not None
                and self._ahead_t <= t
                and t - self._cur_t > FORWARD_DECODE_S
            )
        ):
            self._seek(t)
        while self._ahead is not None and self._ahead_t <= t + _EPS:
            self._step()
        if self._ahead is None and not self._warned_short and t > self._cur_t + 1.0:
            self._warned_short = True
            log.warning(
                "%s: the frames end at %.2f s but the video lasts %.2f s; later frames "
                "repeat the last one",
                self.name,
                self._cur_t,
                self.duration,
            )

    def _seek(self, t: float) -> None:
        """Seek to the keyframe before ``t`` and decode its first frame, further back if the
        demuxer lands after ``t``; from the start when nothing else works."""
        back = 0.0
        while True:
            target = t - back
            if target <= _EPS:
                self._restart()
                return
            try:
                self._container.seek(
                    int(math.floor((target + self._origin) / self._time_base)),
                    stream=self._stream,
                    backward=True,
                )
            except av.FFmpegError:
                self._restart()
                return
            self._reset_decoder()
            if self._cur is not None and self._cur_t <= t + _EPS:
                return
            back = max(1.0, 2 * back)

    def _restart(self) -> None:
        """Decode again from the first frame (reopens the file: seeking to 0 is not exact in
        every demuxer)."""
        self._container.close()
        self._container = self._open()
        self._stream = self._container.streams.video[0]
        self._reset_decoder()
        if self._cur is None:
            raise VideoError(f"{self.name}: the video has no decodable frames")

    def _current_rgb(self) -> np.ndarray:
        """The current frame as RGB (converted once, also when several LS frames show it)."""
        if self._cur_rgb is None:
            assert self._cur is not None
            self._cur_rgb = resize_frame(frame_to_rgb(self._cur), self.resize)
        return self._cur_rgb
