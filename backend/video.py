"""Frames out of a video file or a folder of frames, lazily, with sampling and resizing.

Two ways in:

* :func:`iter_frames` streams sampled frames (stride / target fps / max frames / resize)
  from an ``.mp4``/``.avi``/``.webm``/... file or a folder of images, one at a time, so a
  long video never sits in memory. Used by ``import-video`` to write JPEGs.
* :class:`VideoFrameSource` is a random-access :class:`~backend.frames.FrameSource` over a
  video file: frames are decoded on demand (sequential reads are cheap, a backward jump
  re-seeks) and the last few are kept in a bounded cache. Used by ``segment``.

Frames are always H×W×3 uint8 RGB.
"""

from __future__ import annotations

import logging
import math
import re
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from backend.frames import FolderFrameSource, MediaError, list_image_files, read_image, resize_rgb

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".avi", ".webm", ".mov", ".mkv", ".m4v", ".mpg", ".mpeg")
DEFAULT_FOLDER_FPS = 25.0  # a folder of frames has no timing; DAVIS is 24-25 fps


class VideoError(MediaError):
    """A video cannot be opened or decoded; the message says which and why."""


# --------------------------------------------------------------------------- sampling options


@dataclass(frozen=True)
class Resize:
    """Target size: ``short`` = shorter side in pixels, or an exact ``width``×``height``."""

    short: int | None = None
    width: int | None = None
    height: int | None = None

    def target(self, width: int, height: int) -> tuple[int, int]:
        """Output (width, height) for a ``width``×``height`` frame (never upscales ``short``)."""
        if self.width and self.height:
            return self.width, self.height
        if self.short and min(width, height) > self.short:
            scale = self.short / min(width, height)
            return max(1, round(width * scale)), max(1, round(height * scale))
        return width, height


def parse_resize(text: str) -> Resize:
    """``"480"`` → shorter side 480; ``"640x360"`` → exactly 640×360."""
    t = text.strip().lower()
    m = re.fullmatch(r"(\d+)\s*[x×]\s*(\d+)", t)
    if m:
        w, h = int(m.group(1)), int(m.group(2))
        if w < 1 or h < 1:
            raise ValueError(f"--resize {text!r}: width and height must be >= 1")
        return Resize(width=w, height=h)
    if t.isdigit() and int(t) >= 1:
        return Resize(short=int(t))
    raise ValueError(f"--resize {text!r}: expected the shorter side (e.g. 480) or WxH (640x360)")


@dataclass(frozen=True)
class Sampling:
    """Which frames to keep and at what size.

    ``stride`` keeps every n-th frame; ``fps`` (if set) keeps frames closest to that rate
    instead (never faster than the source); ``max_frames`` stops after that many kept frames.
    """

    stride: int = 1
    fps: float | None = None
    max_frames: int | None = None
    resize: Resize | None = None

    def __post_init__(self) -> None:
        if self.stride < 1:
            raise ValueError(f"stride must be >= 1, got {self.stride}")
        if self.fps is not None and not self.fps > 0:
            raise ValueError(f"fps must be > 0, got {self.fps}")
        if self.max_frames is not None and self.max_frames < 1:
            raise ValueError(f"max frames must be >= 1, got {self.max_frames}")

    def step(self, source_fps: float) -> float:
        """Source frames per kept frame (>= 1)."""
        if self.fps is not None and source_fps > 0:
            return max(1.0, source_fps / self.fps)
        return float(self.stride)

    def effective_fps(self, source_fps: float) -> float:
        return source_fps / self.step(source_fps) if source_fps > 0 else 0.0


def selected_indices(total: int, source_fps: float, sampling: Sampling) -> Iterator[int]:
    """Source frame indices kept by ``sampling`` out of ``total`` (``total < 0``: unknown)."""
    step = sampling.step(source_fps)
    kept = 0
    k = 0
    while sampling.max_frames is None or kept < sampling.max_frames:
        index = int(math.floor(k * step + 1e-9))
        if 0 <= total <= index:
            return
        yield index
        kept += 1
        k += 1


def resize_frame(frame: np.ndarray, resize: Resize | None) -> np.ndarray:
    if resize is None:
        return frame
    h, w = frame.shape[:2]
    tw, th = resize.target(w, h)
    return resize_rgb(frame, (th, tw))


# --------------------------------------------------------------------------- probing


@dataclass(frozen=True)
class VideoInfo:
    """What a source says about itself (``frame_count`` may be an estimate for videos)."""

    name: str
    frame_count: int
    fps: float
    width: int
    height: int
    is_folder: bool


def _open(path: Path) -> cv2.VideoCapture:
    if not path.exists():
        raise VideoError(f"{path}: no such file")
    if path.is_dir():
        raise VideoError(f"{path}: is a folder, not a video file")
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        cap.release()
        raise VideoError(f"{path.name}: cannot open as a video (corrupt or unsupported format)")
    return cap


def probe(path: str | Path) -> VideoInfo:
    """Frame count, fps and size of a video file or a folder of frames."""
    p = Path(path)
    if p.is_dir():
        files = list_image_files(p)
        first = read_image(files[0])
        return VideoInfo(
            p.name, len(files), DEFAULT_FOLDER_FPS, first.shape[1], first.shape[0], True
        )
    cap = _open(p)
    try:
        ok, bgr = cap.read()
        if not ok or bgr is None:
            raise VideoError(f"{p.name}: the video has no decodable frames")
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        return VideoInfo(
            p.name, count, fps if math.isfinite(fps) else 0.0, bgr.shape[1], bgr.shape[0], False
        )
    finally:
        cap.release()


# --------------------------------------------------------------------------- streaming


@dataclass(frozen=True)
class Frame:
    """One kept frame: its index in the source and the RGB pixels (after resizing)."""

    source_index: int
    image: np.ndarray


def iter_frames(path: str | Path, sampling: Sampling = Sampling()) -> Iterator[Frame]:
    """Kept frames of a video file or folder of images, decoded one at a time.

    Raises :class:`VideoError` (a :class:`MediaError`) when the source cannot be read or
    yields no frame at all.
    """
    p = Path(path)
    if p.is_dir():
        yield from _iter_folder(p, sampling)
        return
    cap = _open(p)
    try:
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        wanted = selected_indices(-1, fps, sampling)
        target = next(wanted, None)
        index = 0
        produced = 0
        while target is not None:
            if index < target:
                ok = cap.grab()  # skip without converting
                if not ok:
                    break
                index += 1
                continue
            ok, bgr = cap.read()
            if not ok or bgr is None:
                break
            yield Frame(index, resize_frame(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), sampling.resize))
            produced += 1
            index += 1
            target = next(wanted, None)
        if produced == 0:
            raise VideoError(f"{p.name}: the video has no decodable frames")
    finally:
        cap.release()


def _iter_folder(folder: Path, sampling: Sampling) -> Iterator[Frame]:
    files = list_image_files(folder)
    for index in selected_indices(len(files), DEFAULT_FOLDER_FPS, sampling):
        yield Frame(index, resize_frame(read_image(files[index]), sampling.resize))


# --------------------------------------------------------------------------- random access


class VideoFrameSource:
    """Random access to the frames of a video file, decoded lazily with a bounded cache.

    Reading forward continues the open decoder; any other jump seeks (``CAP_PROP_POS_FRAMES``)
    and, when seeking is inexact, decodes from the start. The frame count is established by
    one ``grab()`` pass at construction (container headers are often wrong) unless
    ``count`` is given. Thread-safe.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        cache_size: int = 16,
        resize: Resize | None = None,
        count: int | None = None,
    ):
        self.path = Path(path)
        self.resize = resize
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._cache_size = max(0, cache_size)
        self._lock = threading.Lock()
        self._cap = _open(self.path)
        self.fps = float(self._cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self._count = self._count_frames() if count is None else count
        if self._count == 0:
            self.close()
            raise VideoError(f"{self.path.name}: the video has no decodable frames")
        self._next = 0  # index the decoder will return on the next read()
        self._rewind()

    def _count_frames(self) -> int:
        n = 0
        while self._cap.grab():
            n += 1
        return n

    def _rewind(self) -> None:
        self._cap.release()
        self._cap = _open(self.path)
        self._next = 0

    def __len__(self) -> int:
        return self._count

    def _decode(self, index: int) -> np.ndarray:
        if index < self._next or index > self._next + 64:
            # OpenCV's FFmpeg backend seeks to the previous keyframe and decodes forward, so
            # the position is exact; fall back to decoding from the start if it is not.
            ok = self._cap.set(cv2.CAP_PROP_POS_FRAMES, index)
            if ok and int(self._cap.get(cv2.CAP_PROP_POS_FRAMES)) == index:
                self._next = index
            else:
                self._rewind()
        while self._next < index:
            if not self._cap.grab():
                raise VideoError(f"{self.path.name}: cannot decode frame {index}")
            self._next += 1
        ok, bgr = self._cap.read()
        if not ok or bgr is None:
            raise VideoError(f"{self.path.name}: cannot decode frame {index}")
        self._next += 1
        return resize_frame(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), self.resize)

    def __getitem__(self, index: int) -> np.ndarray:
        if not 0 <= index < self._count:
            raise IndexError(index)
        with self._lock:
            cached = self._cache.get(index)
            if cached is not None:
                self._cache.move_to_end(index)
                return cached
            frame = self._decode(index)
            if self._cache_size:
                self._cache[index] = frame
                while len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
            return frame

    def close(self) -> None:
        with self._lock:
            self._cap.release()
            self._cache.clear()

    def __enter__(self) -> VideoFrameSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ResizedFrameSource:
    """Another frame source, resized on the fly (folders for ``segment --resize``)."""

    def __init__(self, inner, resize: Resize | None):
        self.inner = inner
        self.resize = resize

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, index: int) -> np.ndarray:
        return resize_frame(self.inner[index], self.resize)


def open_frames(path: str | Path, *, resize: Resize | None = None, cache_size: int = 16):
    """A lazy frame source for a video file or a folder of frames.

    Raises :class:`MediaError` with a readable message when ``path`` is missing, empty or
    not decodable.
    """
    p = Path(path)
    if not p.exists():
        raise VideoError(f"{p}: no such file or folder")
    if p.is_dir():
        src = FolderFrameSource(p, cache_size=cache_size)
        return ResizedFrameSource(src, resize) if resize else src
    return VideoFrameSource(p, cache_size=cache_size, resize=resize)
