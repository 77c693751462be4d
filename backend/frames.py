"""Frame sources: random access to the frames of one video, one at a time (no HTTP here).

A :class:`FrameSource` never holds a whole video in memory; implementations
decode on demand and may keep a small bounded cache. Frames are H×W×3 uint8
RGB arrays at their native size.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import cv2
import numpy as np

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


class MediaError(ValueError):
    """A frame could not be fetched or decoded; the message says which and why."""


@runtime_checkable
class FrameSource(Protocol):
    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> np.ndarray:
        """Frame ``index`` as H×W×3 uint8 RGB."""
        ...


def decode_image(data: bytes, *, name: str = "image", max_pixels: int | None = None) -> np.ndarray:
    """Decode encoded image bytes to H×W×3 uint8 RGB, with a clear error."""
    if not data:
        raise MediaError(f"{name}: empty file")
    buf = np.frombuffer(data, dtype=np.uint8)
    bgr = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if bgr is None:
        raise MediaError(f"{name}: not a readable image (corrupt or unsupported format)")
    if max_pixels is not None and bgr.shape[0] * bgr.shape[1] > max_pixels:
        raise MediaError(
            f"{name}: {bgr.shape[1]}x{bgr.shape[0]} exceeds the frame size limit "
            f"of {max_pixels} pixels (MAX_FRAME_PIXELS)"
        )
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def read_image(path: str | Path, *, max_pixels: int | None = None) -> np.ndarray:
    """Read an image file as H×W×3 uint8 RGB."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise MediaError(f"{p.name}: cannot read ({exc.strerror or exc})") from None
    return decode_image(data, name=p.name, max_pixels=max_pixels)


class ArrayFrameSource:
    """Frames already in memory (tests, small clips)."""

    def __init__(self, frames: Sequence[np.ndarray]):
        self._frames = frames

    def __len__(self) -> int:
        return len(self._frames)

    def __getitem__(self, index: int) -> np.ndarray:
        if not 0 <= index < len(self._frames):
            raise IndexError(index)
        return self._frames[index]


class LazyFrameSource:
    """Frames produced on demand by ``load(i)``, with a bounded LRU cache.

    Thread-safe; the cache holds at most ``cache_size`` decoded frames.
    """

    def __init__(self, count: int, load: Callable[[int], np.ndarray], *, cache_size: int = 8):
        self._count = count
        self._load = load
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._cache_size = max(0, cache_size)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, index: int) -> np.ndarray:
        if not 0 <= index < self._count:
            raise IndexError(index)
        with self._lock:
            if index in self._cache:
                self._cache.move_to_end(index)
                return self._cache[index]
        frame = self._load(index)
        if self._cache_size:
            with self._lock:
                self._cache[index] = frame
                self._cache.move_to_end(index)
                while len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
        return frame


def list_image_files(folder: str | Path) -> list[Path]:
    """Image files of a folder in natural (sorted) order."""
    root = Path(folder)
    if not root.is_dir():
        raise MediaError(f"{root}: not a folder")
    files = sorted(p for p in root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise MediaError(f"{root}: no image files ({', '.join(IMAGE_SUFFIXES)})")
    return files


class FolderFrameSource(LazyFrameSource):
    """The sorted image files of a folder, decoded lazily."""

    def __init__(self, folder: str | Path, *, cache_size: int = 8, max_pixels: int | None = None):
        self.paths = list_image_files(folder)
        super().__init__(
            len(self.paths),
            lambda i: read_image(self.paths[i], max_pixels=max_pixels),
            cache_size=cache_size,
        )
