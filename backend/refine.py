"""Quality of propagated masks and their refinement by the segmenter (TAM step 3).

Track-Anything's paper refines poor propagated masks with SAM; its code never
did. Here a per-frame quality signal flags poor frames, the segmenter re-segments
them from point prompts derived from the tracker's output plus the coarse
probability map as a mask prompt, and the refined mask replaces the tracked one
only when it is better by a stated rule (:func:`accept_refinement`).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from backend.masks import jaccard
from backend.segmenter.base import Segmenter


@dataclass(frozen=True)
class RefineConfig:
    """``mode``: ``off``, ``auto`` (frames below ``threshold``) or ``always``.

    ``max_frames`` caps refinements per run, both directions together (each costs one image
    encoding: ~10 s with SAM ViT-B on a CPU, ~0.1 s on a GPU). A refined mask is
    accepted when its score beats the tracked quality by ``min_gain`` and it
    overlaps the tracked mask by at least ``min_iou`` (same object).
    """

    mode: str = "off"
    threshold: float = 0.5
    max_frames: int = 20
    min_gain: float = 0.05
    min_iou: float = 0.3


def _components(mask: np.ndarray) -> tuple[int, np.ndarray]:
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    return n - 1, stats[1:, cv2.CC_STAT_AREA] if n > 1 else np.zeros(0, np.int64)


def mask_quality(prob: np.ndarray, mask: np.ndarray, previous_area: int | None) -> float:
    """Quality in [0, 1] of a propagated mask from its own probabilities.

    The product of: confidence (mean probability inside the mask), area
    stability against the previous frame (a jump beyond ×1.5 is penalised), and
    compactness (mass outside the largest connected part is penalised).
    An empty mask scores 0.
    """
    area = int(mask.sum())
    if area == 0:
        return 0.0
    confidence = float(prob[mask].mean())
    stability = 1.0
    if previous_area:
        jump = abs(np.log(area / previous_area))
        stability = float(np.exp(-max(0.0, jump - np.log(1.5))))
    _, sizes = _components(mask)
    compact = float(sizes.max() / sizes.sum()) if sizes.size else 0.0
    return float(np.clip(confidence * stability * (0.5 + 0.5 * compact), 0.0, 1.0))


def prompts_from_mask(
    mask: np.ndarray, others: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Point prompts for re-segmenting a tracked mask (pixel x, y; labels 1/0).

    A positive click at the interior-most pixel of the largest part, and a
    negative click at the interior-most pixel of the background ring around
    the mask's box (preferring other objects' pixels when given), so the
    segmenter keeps to this object.
    """
    m = mask.astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(m, connectivity=8)
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    core = (labels == largest).astype(np.uint8)
    dist = cv2.distanceTransform(np.pad(core, 1), cv2.DIST_L2, 5)[1:-1, 1:-1]
    py, px = np.unravel_index(int(np.argmax(dist)), dist.shape)
    points = [[px + 0.5, py + 0.5]]
    point_labels = [1]
    x, y, w, h = cv2.boundingRect(m)
    pad_x, pad_y = max(4, w // 4), max(4, h // 4)
    ring = np.zeros_like(m)
    ring[max(0, y - pad_y) : y + h + pad_y, max(0, x - pad_x) : x + w + pad_x] = 1
    ring &= 1 - m
    if others is not None and (ring & others).any():
        ring &= others.astype(np.uint8)
    if ring.any():
        dist = cv2.distanceTransform(np.pad(ring, 1), cv2.DIST_L2, 5)[1:-1, 1:-1]
        ny, nx = np.unravel_index(int(np.argmax(dist)), dist.shape)
        points.append([nx + 0.5, ny + 0.5])
        point_labels.append(0)
    return np.array(points, np.float32), np.array(point_labels, np.int32)


def accept_refinement(
    tracked: np.ndarray,
    tracked_quality: float,
    refined: np.ndarray,
    refined_score: float,
    config: RefineConfig,
) -> bool:
    """The rule: a non-empty refined mask that scores ``min_gain`` higher and overlaps the
    tracked one by ``min_iou`` (so it is the same object, not a jump to another)."""
    if not refined.any():
        return False
    if refined_score < tracked_quality + config.min_gain:
        return False
    return jaccard(tracked, refined) >= config.min_iou


@dataclass
class Refinement:
    mask: np.ndarray
    score: float
    accepted: bool


def refine_mask(
    segmenter: Segmenter,
    image: np.ndarray,
    prob: np.ndarray,
    mask: np.ndarray,
    quality: float,
    config: RefineConfig,
    *,
    others: np.ndarray | None = None,
    cache_key=None,
) -> Refinement:
    """Re-segment one object on one frame; returns the mask to keep and its score."""
    points, labels = prompts_from_mask(mask, others)
    segmenter.set_image(image, cache_key=cache_key)
    out = segmenter.predict(
        points, labels, mask_prior=prob.astype(np.float32), multimask_output=False
    )
    refined = out.best_mask().astype(bool)
    if others is not None:
        refined &= ~others.astype(bool)
    score = out.best_score()
    if accept_refinement(mask, quality, refined, score, config):
        return Refinement(refined, score, True)
    return Refinement(mask, quality, False)
