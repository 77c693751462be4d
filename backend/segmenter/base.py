"""The segmenter interface: clicks on one image → a mask (SamPredictor-like).

Usage::

    seg.set_image(rgb)                       # H×W×3 uint8 RGB, encoded once
    out = seg.predict(points, labels)        # many cheap calls on that image
    mask = out.best_mask()                   # H×W bool

``points`` is an ``N×2`` float array of (x, y) in native pixels, ``labels`` an
``N`` int array (1 = positive, 0 = negative); ``box`` an optional ``(x0, y0, x1,
y1)`` float array in native pixels around the object. ``mask_prior`` is an optional
``H×W`` float32 foreground probability at the native size (e.g. a tracker's
output, or the previous answer on this frame); each segmenter converts it to
its own prompt form (SAM: 1×256×256 logits in its padded, resized frame).
``prior_is_own`` says the prior is this segmenter's own earlier answer on this image, which
the clicks refine (the annotator clicking again on a frame), not another source's mask (a
tracker's propagation, a painted mask); a segmenter may then look closer at the object.
"""

from __future__ import annotations

import hashlib
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np


@dataclass
class SegmentOutput:
    """``masks`` C×H×W bool, ``scores`` C float (predicted quality, 0..1),
    ``low_res_logits`` C×256×256 float32 for SAM, ``None`` otherwise."""

    masks: np.ndarray
    scores: np.ndarray
    low_res_logits: np.ndarray | None = None

    def best_index(self) -> int:
        return int(np.argmax(self.scores))

    def best_mask(self) -> np.ndarray:
        return self.masks[self.best_index()]

    def best_score(self) -> float:
        return float(self.scores[self.best_index()])


def image_digest(image: np.ndarray) -> str:
    """A digest of every pixel and the shape: features cached under a key are reused only for
    the very image they were computed from."""
    h = hashlib.sha1(np.ascontiguousarray(image).data, usedforsecurity=False)
    h.update(repr(image.shape).encode())
    return h.hexdigest()


def prompt_arrays(point_coords, point_labels) -> tuple[np.ndarray, np.ndarray]:
    """Clicks as an ``N×2`` float64 array and an ``N`` int64 array of 0/1, checked (ValueError)."""
    points = np.asarray(point_coords, dtype=np.float64).reshape(-1, 2)
    labels = np.asarray(point_labels, dtype=np.int64).reshape(-1)
    if len(points) != len(labels):
        raise ValueError(f"{len(points)} points but {len(labels)} labels")
    if not np.isin(labels, (0, 1)).all():
        raise ValueError("point labels must be 0 (negative) or 1 (positive)")
    return points, labels


@runtime_checkable
class Segmenter(Protocol):
    """Click-promptable single-image segmenter."""

    name: str

    def set_image(self, image: np.ndarray, *, cache_key: Hashable | None = None) -> None:
        """Prepare ``image`` (H×W×3 uint8 RGB). ``cache_key`` (e.g. (task, frame))
        lets an implementation reuse an earlier encoding of the same image."""
        ...

    def predict(
        self,
        point_coords: np.ndarray,
        point_labels: np.ndarray,
        *,
        mask_prior: np.ndarray | None = None,
        multimask_output: bool = True,
        box: np.ndarray | None = None,
        prior_is_own: bool = False,
    ) -> SegmentOutput:
        """Segment the current image from clicks and/or a box (see module docstring)."""
        ...
