"""Mask helpers at the bottom of the stack: overlap, a compact in-memory form, and index
images (the DAVIS palette PNG format).

Masks are ``H×W`` bool arrays at the native frame size. :class:`CompactMask`
keeps one as run lengths of the flattened mask (row-major, starting with a run
of ``False``): a few hundred bytes for a typical object instead of ``H·W``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

MAX_OBJECTS = 255  # ids that fit an 8-bit index image


def jaccard(gt: np.ndarray, pred: np.ndarray) -> float:
    """Region similarity J (IoU) of two boolean masks (1 when both are empty)."""
    gt = gt.astype(bool, copy=False)
    pred = pred.astype(bool, copy=False)
    union = np.count_nonzero(gt | pred)
    if union == 0:
        return 1.0
    return np.count_nonzero(gt & pred) / union


@dataclass(frozen=True)
class CompactMask:
    """A bool mask stored as alternating run lengths (False first), uint32."""

    height: int
    width: int
    runs: bytes

    @classmethod
    def encode(cls, mask: np.ndarray) -> CompactMask:
        if mask.ndim != 2:
            raise ValueError(f"a mask must be 2-D, got shape {mask.shape}")
        flat = np.ascontiguousarray(mask, dtype=bool).ravel()
        change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
        bounds = np.concatenate(([0], change, [flat.size]))
        runs = np.diff(bounds)
        if flat.size and flat[0]:
            runs = np.concatenate(([0], runs))
        return cls(int(mask.shape[0]), int(mask.shape[1]), runs.astype(np.uint32).tobytes())

    def decode(self) -> np.ndarray:
        runs = np.frombuffer(self.runs, dtype=np.uint32)
        values = np.zeros(runs.size, dtype=bool)
        values[1::2] = True
        return np.repeat(values, runs).reshape(self.height, self.width)

    @property
    def shape(self) -> tuple[int, int]:
        return (self.height, self.width)

    @property
    def nbytes(self) -> int:
        """Memory held by the runs (what a byte budget counts)."""
        return len(self.runs) + 64

    def any(self) -> bool:
        return len(self.runs) > 4


def pixel_of(x: float, y: float, shape: tuple[int, ...]) -> tuple[int, int]:
    """(row, col) of the point (x, y), clamped to an image of ``shape`` (H, W, ...): a click
    on the far edge (a box corner, a rounded coordinate) reads the last pixel."""
    return min(max(int(y), 0), shape[0] - 1), min(max(int(x), 0), shape[1] - 1)


def wrong_points(
    mask: np.ndarray, points: np.ndarray, labels: np.ndarray
) -> list[tuple[int, int, bool]]:
    """The points (x, y, positive) that ``mask`` gets wrong: a positive one (label 1) outside
    it, a negative one inside. ``points`` is N×2 (x, y) in the mask's pixels, clamped to it
    (:func:`pixel_of`). A correction is exactly such a click on the mask it was put on."""
    xy = np.asarray(points).reshape(-1, 2)
    positive = np.asarray(labels).reshape(-1) == 1
    out = []
    for (x, y), pos in zip(xy, positive, strict=True):
        r, c = pixel_of(x, y, mask.shape)
        if bool(mask[r, c]) != pos:
            out.append((c, r, bool(pos)))
    return out


def davis_palette() -> np.ndarray:
    """The 256-colour DAVIS / PASCAL VOC palette as a 256×3 uint8 array (0 = black)."""
    pal = np.zeros((256, 3), np.uint8)
    for k in range(256):
        c, r, g, b = k, 0, 0, 0
        for bit in range(8):
            r |= ((c >> 0) & 1) << (7 - bit)
            g |= ((c >> 1) & 1) << (7 - bit)
            b |= ((c >> 2) & 1) << (7 - bit)
            c >>= 3
        pal[k] = (r, g, b)
    return pal


def masks_to_index(masks: Mapping[int, np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """H×W uint8 index image; where objects overlap the lowest id wins."""
    index = np.zeros(shape, np.uint8)
    for oid in sorted(masks, reverse=True):  # paint high ids first, low ids on top
        if not 0 < oid <= MAX_OBJECTS:
            raise ValueError(f"object id {oid} does not fit an 8-bit index PNG")
        m = np.asarray(masks[oid], bool)
        if m.shape != shape:
            raise ValueError(f"object {oid}: mask {m.shape} does not match frame {shape}")
        index[m] = oid
    return index


def write_index_png(path: str | Path, index: np.ndarray) -> None:
    """Write an H×W uint8 index image as a palette PNG (the DAVIS annotation format)."""
    img = Image.fromarray(np.asarray(index, np.uint8), mode="P")
    img.putpalette(davis_palette().ravel().tolist())
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    img.save(str(path), optimize=True)


def read_index_png(path: str | Path) -> np.ndarray:
    """Read a palette (or grey) PNG as its H×W uint8 index values."""
    with Image.open(path) as img:
        if img.mode not in ("P", "L"):
            img = img.convert("L")
        return np.array(img, dtype=np.uint8)
