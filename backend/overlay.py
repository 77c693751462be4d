"""Preview painting: coloured masks with contours over frames, written as a video.

Colours are the DAVIS palette (object ``k`` gets palette entry ``k``), so a preview matches
the index PNGs written by ``segment`` and ``export --format davis``.

OpenCV's pip wheel writes MPEG-4 Part 2 (``mp4v``) into ``.mp4``, VP8 into ``.webm`` and
Motion-JPEG into ``.avi``; it has no H.264 encoder. Browsers play ``.webm`` (VP8); ``mp4v``
plays in VLC/ffplay but not in every browser.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

import cv2
import numpy as np

from backend.masks import davis_palette

log = logging.getLogger(__name__)

FOURCC_BY_SUFFIX = {".mp4": "mp4v", ".webm": "VP80", ".avi": "MJPG"}


class OverlayError(RuntimeError):
    """The preview video cannot be written (unsupported suffix, encoder missing)."""


def paint(
    frame: np.ndarray, index_mask: np.ndarray, *, alpha: float = 0.5, contour_px: int = 2
) -> np.ndarray:
    """``frame`` (H×W×3 uint8 RGB) with every object of ``index_mask`` tinted and outlined.

    ``index_mask`` is H×W uint8, 0 = background, k = object k. Contours are drawn in the
    object's colour, darkened, so touching objects stay distinguishable.
    """
    if index_mask.shape != frame.shape[:2]:
        raise ValueError(
            f"mask {index_mask.shape[1]}x{index_mask.shape[0]} does not match the frame "
            f"{frame.shape[1]}x{frame.shape[0]}"
        )
    palette = davis_palette()
    out = frame.astype(np.float32)
    ids = [int(k) for k in np.unique(index_mask) if k != 0]
    for k in ids:
        sel = index_mask == k
        out[sel] = (1.0 - alpha) * out[sel] + alpha * palette[k]
    out = np.clip(out + 0.5, 0, 255).astype(np.uint8)
    if contour_px > 0:
        for k in ids:
            binary = (index_mask == k).astype(np.uint8)
            contours, _ = cv2.findContours(binary, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            edge = tuple(int(c * 0.6) for c in palette[k])
            cv2.drawContours(out, contours, -1, edge, contour_px, lineType=cv2.LINE_AA)
    return out


def write_video(frames: Iterable[np.ndarray], path: str | Path, *, fps: float) -> int:
    """Write RGB frames to ``path`` (codec chosen by suffix); returns the frame count."""
    p = Path(path)
    fourcc = FOURCC_BY_SUFFIX.get(p.suffix.lower())
    if fourcc is None:
        raise OverlayError(
            f"{p.name}: unsupported preview format; use {', '.join(FOURCC_BY_SUFFIX)}"
        )
    p.parent.mkdir(parents=True, exist_ok=True)
    writer: cv2.VideoWriter | None = None
    count = 0
    try:
        for frame in frames:
            h, w = frame.shape[:2]
            if writer is None:
                writer = cv2.VideoWriter(
                    str(p),
                    cv2.VideoWriter_fourcc(*fourcc),
                    float(fps) if fps > 0 else 25.0,
                    (w, h),
                )
                if not writer.isOpened():
                    raise OverlayError(f"{p.name}: OpenCV cannot open a {fourcc} writer")
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
            count += 1
    finally:
        if writer is not None:
            writer.release()
    if count == 0:
        raise OverlayError(f"{p.name}: no frames to write")
    return count
