"""Frame sources: random access to the frames of one video, one at a time (no HTTP here).

A :class:`FrameSource` never holds a whole video in memory; implementations
decode on demand and may keep a small bounded cache. Frames are H×W×3 uint8
RGB arrays at their native size.
"""

from __future__ import annotations

import io
import re
import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import cv2
import numpy as np
from PIL import Image

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
MIN_FRAME_SIDE = 16  # px; smaller frames are refused before decoding
MAX_FRAME_ASPECT = 20.0  # longer side / shorter side; flatter frames are refused
# Formats whose header is read (by Pillow, without decoding pixels) before OpenCV decodes.
HEADER_FORMATS = ("JPEG", "PNG", "BMP", "WEBP", "TIFF", "PPM", "JPEG2000")


class MediaError(ValueError):
    """A frame could not be fetched or decoded; the message says which and why."""


def resize_rgb(frame: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``frame`` resized to ``shape`` (h, w): area averaging when shrinking, bilinear when
    enlarging; the frame itself when it already has that size."""
    h, w = shape
    if frame.shape[:2] == (h, w):
        return frame
    shrink = h * w < frame.shape[0] * frame.shape[1]
    return cv2.resize(frame, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


@runtime_checkable
class FrameSource(Protocol):
    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> np.ndarray:
        """Frame ``index`` as H×W×3 uint8 RGB."""
        ...


def image_size(data: bytes, *, name: str = "image") -> tuple[int, int]:
    """``(width, height)`` read from the image header alone, without decoding any pixels."""
    if not data:
        raise MediaError(f"{name}: empty file")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data), formats=HEADER_FORMATS) as im:
                return im.size
        except Image.DecompressionBombError as exc:  # beyond Pillow's own ceiling
            pixels = re.search(r"\d+", str(exc))
            size = f"{pixels.group()} pixels" if pixels else "its size"
            raise MediaError(
                f"{name}: {size} is far over the frame size limit (MAX_FRAME_PIXELS)"
            ) from None
        except Exception:  # any header parser failure on untrusted bytes
            raise MediaError(
                f"{name}: not a readable image (corrupt, or not one of "
                "JPEG, PNG, BMP, WebP, TIFF, PPM, JPEG 2000)"
            ) from None


def check_frame_size(
    width: int,
    height: int,
    *,
    name: str = "image",
    max_pixels: int | None = None,
    min_side: int = MIN_FRAME_SIDE,
    max_aspect: float = MAX_FRAME_ASPECT,
) -> None:
    """Refuse frames over ``max_pixels`` (MAX_FRAME_PIXELS), tiny or extremely elongated."""
    if max_pixels is not None and width * height > max_pixels:
        raise MediaError(
            f"{name}: {width}x{height} exceeds the frame size limit "
            f"of {max_pixels} pixels (MAX_FRAME_PIXELS)"
        )
    if min(width, height) < min_side:
        raise MediaError(
            f"{name}: {width}x{height} is too small for tracking "
            f"(each side must be at least {min_side} px)"
        )
    if max(width, height) > max_aspect * min(width, height):
        raise MediaError(
            f"{name}: {width}x{height} is too elongated for tracking "
            f"(aspect ratio above {max_aspect:g}:1)"
        )


def decode_image(data: bytes, *, name: str = "image", max_pixels: int | None = None) -> np.ndarray:
    """Decode encoded image bytes to H×W×3 uint8 RGB, with a clear error.

    The size is read from the header and checked (:func:`check_frame_size`) before any
    pixel is decoded, so an oversized image costs no memory.
    """
    width, height = image_size(data, name=name)
    check_frame_size(width, height, name=name, max_pixels=max_pixels)
    buf = np.frombuffer(data, dtype=np.uint8)
    bgr = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if bgr is None:
        raise MediaError(f"{name}: not a readable image (corrupt or unsupported format)")
    # The decoder may differ from the header (EXIF rotation, odd files): check again.
    check_frame_size(bgr.shape[1], bgr.shape[0], name=name, max_pixels=max_pixels)
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
