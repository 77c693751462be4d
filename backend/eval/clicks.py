"""Simulated annotator clicks for the one-click and interactive protocols.

Every click sits at the pixel farthest from the region's border (maximum of the Euclidean
distance transform, the image outside counting as border), the most unambiguous point a
person would pick. When the maximum is a ridge or plateau (a rectangle's centre line), the
maximum pixel nearest to the plateau's mean position is taken, first in row-major order on
ties, so the simulation is deterministic. Clicks are in native pixel coordinates at the pixel's centre
(``x = column + 0.5``, ``y = row + 0.5``, see ``backend.types``).

Interactive rounds (modelled on the DAVIS interactive robot, with clicks instead of
scribbles): find the frame with the lowest mean J over objects, and for each object with an
error there, click inside its largest connected error region — positive when the region is
missed object (false negative), negative when it is wrongly included (false positive). J is
used to pick the frame instead of J&F because it needs no boundary dilation per frame and
object; the two agree on which frame is badly wrong, which is all the choice needs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from backend.masks import jaccard
from backend.types import Box, Click


def deepest_point(mask: np.ndarray) -> tuple[int, int] | None:
    """(row, col) of the distance-transform maximum of a mask, or None if it is empty."""
    m = np.asarray(mask, dtype=bool)
    if not m.any():
        return None
    padded = np.pad(m, 1).astype(np.uint8)
    dist = cv2.distanceTransform(padded, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[1:-1, 1:-1]
    # The maximum is often a ridge or plateau: take its pixel nearest to the plateau's mean.
    rows, cols = np.nonzero(dist >= dist.max() - 1e-4)
    k = int(np.argmin((rows - rows.mean()) ** 2 + (cols - cols.mean()) ** 2))
    return int(rows[k]), int(cols[k])


def click_at(point: tuple[int, int], positive: bool) -> Click:
    row, col = point
    return Click(x=col + 0.5, y=row + 0.5, positive=positive)


def first_frame_clicks(first_gt: np.ndarray, obj_ids: Sequence[int]) -> dict[int, Click]:
    """One positive click per object present in the first GT label map."""
    clicks = {}
    for oid in obj_ids:
        point = deepest_point(first_gt == oid)
        if point is not None:
            clicks[oid] = click_at(point, positive=True)
    return clicks


def tight_box(mask: np.ndarray) -> Box | None:
    """The tightest box around a mask, in native pixel-edge coordinates (a pixel at column
    ``c`` spans ``c .. c + 1``), or None when the mask is empty."""
    rows = np.flatnonzero(np.asarray(mask, bool).any(axis=1))
    cols = np.flatnonzero(np.asarray(mask, bool).any(axis=0))
    if rows.size == 0:
        return None
    return Box(x0=float(cols[0]), y0=float(rows[0]), x1=float(cols[-1] + 1), y1=float(rows[-1] + 1))


def first_frame_boxes(first_gt: np.ndarray, obj_ids: Sequence[int]) -> dict[int, Box]:
    """The box protocol's prompt: a tight box around each object of the first GT label map."""
    boxes = {}
    for oid in obj_ids:
        box = tight_box(first_gt == oid)
        if box is not None:
            boxes[oid] = box
    return boxes


def largest_error(gt: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, bool] | None:
    """The largest 8-connected error region of one object and whether it is a miss.

    Returns (region mask, positive) with positive=True for a false-negative region; None
    when the prediction is exact. On equal areas the false negative wins.
    """
    best: tuple[int, np.ndarray, bool] | None = None
    for positive, err in ((True, gt & ~pred), (False, pred & ~gt)):
        if not err.any():
            continue
        n, labels, stats, _ = cv2.connectedComponentsWithStats(err.view(np.uint8), connectivity=8)
        k = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
        area = int(stats[k, cv2.CC_STAT_AREA])
        if best is None or area > best[0]:
            best = (area, labels == k, positive)
    return None if best is None else (best[1], best[2])


def fix_largest_error(gt: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """``pred`` with only its largest error region (:func:`largest_error`) made right: what a
    perfect correction that changes nothing but the part it is on would give."""
    out = np.asarray(pred, bool).copy()
    found = largest_error(np.asarray(gt, bool), out)
    if found is not None:
        region, positive = found
        out[region] = positive
    return out


def corrective_click(gt: np.ndarray, pred: np.ndarray) -> Click | None:
    """A click that fixes the largest error of one object's mask, or None if exact."""
    found = largest_error(np.asarray(gt, bool), np.asarray(pred, bool))
    if found is None:
        return None
    region, positive = found
    point = deepest_point(region)
    return None if point is None else click_at(point, positive)


def frame_quality(gt: np.ndarray, pred: np.ndarray, obj_ids: Sequence[int]) -> float:
    """Mean J over objects of one frame (label maps; GT void 255 counts as background)."""
    if not obj_ids:
        return 1.0
    return float(np.mean([jaccard(gt == oid, pred == oid) for oid in obj_ids]))


@dataclass(frozen=True)
class Correction:
    """The simulated annotator's next move: clicks on one frame, keyed by object id."""

    frame: int
    quality: float  # mean J of that frame before the clicks
    clicks: dict[int, Click]


def next_correction(
    gt: Sequence[np.ndarray],
    pred: Sequence[np.ndarray],
    obj_ids: Sequence[int],
    frames: Sequence[int] | None = None,
) -> Correction | None:
    """Clicks on the worst frame (lowest mean J, first on ties) among ``frames`` (default
    all); None when they are all exact."""
    if len(gt) != len(pred):
        raise ValueError(f"{len(gt)} ground-truth frames but {len(pred)} predictions")
    quality = [frame_quality(g, p, obj_ids) for g, p in zip(gt, pred, strict=True)]
    allowed = range(len(gt)) if frames is None else frames
    order = sorted(allowed, key=lambda t: (quality[t], t))
    for t in order:
        t = int(t)
        clicks = {}
        for oid in obj_ids:
            click = corrective_click(gt[t] == oid, pred[t] == oid)
            if click is not None:
                clicks[oid] = click
        if clicks:
            return Correction(frame=t, quality=quality[t], clicks=clicks)
    return None
