"""DAVIS video-object-segmentation metrics: region J, boundary F and their sequence statistics.

Written from the published DAVIS rules (defaults reproduce the official semi-supervised
evaluation, including its quirks):

* J = |G ∩ P| / |G ∪ P|, and 1 when the union is empty.
* F: one-pixel boundary maps (a pixel is on the boundary when it differs from its right,
  lower or lower-right neighbour; see :func:`boundary_map`), matched within a disk of radius
  ``ceil(bound_th · image diagonal)`` pixels (8 px at 480x854); F = 2PR / (P + R); both maps
  empty → 1, exactly one empty → 0.
* Semi-supervised scoring skips the first and the last frame.
* Void (255) in the ground truth counts as background, as in the official code.
* Objects are 1..max label of the first ground-truth frame; an object missing from the
  prediction is an empty mask. Predicted labels above that are ignored.
* Statistics per object: mean, recall = mean(x > 0.5), decay = mean(bin 1) − mean(bin 4) of
  four overlapping bins. The official code casts bin indices to uint8, which makes decay NaN
  from 256 evaluated frames on; ``decay_uint8_bug=True`` (default) reproduces that,
  ``False`` uses correct indices.
* J&F of a sequence or data set = (mean over objects of J-mean + mean over objects of
  F-mean) / 2, i.e. objects are averaged, not pixels or sequences.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from backend.masks import jaccard  # re-exported: J is defined with the masks

log = logging.getLogger(__name__)

VOID = 255


@dataclass(frozen=True)
class EvalConfig:
    """How to score: DAVIS semi-supervised defaults."""

    bound_th: float = 0.008  # F tolerance: fraction of the diagonal (< 1) or pixels (>= 1)
    skip_first_last: bool = True
    decay_uint8_bug: bool = True


# ---------------------------------------------------------------------------------------------
# per frame


def boundary_map(mask: np.ndarray) -> np.ndarray:
    """One-pixel-wide boundary of a mask, offset half a pixel towards the origin.

    A pixel is a boundary pixel when it differs from its right, lower or lower-right
    neighbour (outside the image counts as background). On the last row only the right
    neighbour is compared, on the last column only the lower one, and the bottom-right
    corner pixel is never a boundary pixel (the DAVIS ``seg2bmap`` rule).
    """
    m = mask.astype(bool, copy=False)
    padded = np.zeros((m.shape[0] + 1, m.shape[1] + 1), bool)
    padded[:-1, :-1] = m
    right = padded[:-1, 1:]
    below = padded[1:, :-1]
    diag = padded[1:, 1:]
    edge = (m != right) | (m != below) | (m != diag)
    edge[-1, :] = m[-1, :] != right[-1, :]
    edge[:, -1] = m[:, -1] != below[:, -1]
    edge[-1, -1] = False
    return edge


def boundary_tolerance(shape: tuple[int, int], bound_th: float = 0.008) -> int:
    """Matching radius in pixels: ``bound_th`` itself if >= 1, else a fraction of the diagonal."""
    if bound_th >= 1:
        return int(bound_th)
    return int(math.ceil(bound_th * math.hypot(shape[0], shape[1])))


@lru_cache(maxsize=16)
def _disk(radius: int) -> np.ndarray:
    """Disk structuring element: offsets with x² + y² <= r²."""
    r = np.arange(-radius, radius + 1)
    return (r[:, None] ** 2 + r[None, :] ** 2 <= radius**2).astype(np.uint8)


def f_measure(gt: np.ndarray, pred: np.ndarray, bound_th: float = 0.008) -> float:
    """Boundary F-measure of two boolean masks (DAVIS rules, see module docstring)."""
    gt_b = boundary_map(gt)
    pred_b = boundary_map(pred)
    n_gt = int(np.count_nonzero(gt_b))
    n_pred = int(np.count_nonzero(pred_b))
    if n_gt == 0 and n_pred == 0:
        return 1.0
    if n_gt == 0 or n_pred == 0:
        return 0.0
    kernel = _disk(boundary_tolerance(gt.shape, bound_th))
    gt_near = cv2.dilate(gt_b.view(np.uint8), kernel).astype(bool)
    pred_near = cv2.dilate(pred_b.view(np.uint8), kernel).astype(bool)
    precision = np.count_nonzero(pred_b & gt_near) / n_pred
    recall = np.count_nonzero(gt_b & pred_near) / n_gt
    if precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


# ---------------------------------------------------------------------------------------------
# statistics


@dataclass(frozen=True)
class Stats:
    """Mean, recall (fraction > 0.5) and decay of per-frame values of one object."""

    mean: float
    recall: float
    decay: float


def _decay_bounds(n: int, uint8_bug: bool) -> list[tuple[int, int]]:
    """Slice bounds of the four overlapping decay bins over ``n`` values."""
    ids = [int(v) for v in np.round(np.linspace(1, n, 5) + 1e-10) - 1]
    if not uint8_bug:
        return [(ids[i], ids[i + 1] + 1) for i in range(4)]
    # The official code stores the indices as uint8 and adds 1 in uint8: both wrap mod 256.
    wrapped = [v % 256 for v in ids]
    return [(wrapped[i], (wrapped[i + 1] + 1) % 256) for i in range(4)]


def _nanmean(x: np.ndarray) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(np.nanmean(x)) if x.size else math.nan


def statistics(values: Sequence[float] | np.ndarray, *, decay_uint8_bug: bool = True) -> Stats:
    """DAVIS mean / recall / decay of one object's per-frame values."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        return Stats(math.nan, math.nan, math.nan)
    bins = [x[a:b] for a, b in _decay_bounds(x.size, decay_uint8_bug)]
    return Stats(
        mean=_nanmean(x),
        recall=_nanmean((x > 0.5).astype(np.float64)),
        decay=_nanmean(bins[0]) - _nanmean(bins[3]),
    )


# ---------------------------------------------------------------------------------------------
# sequences


@dataclass(frozen=True)
class ObjectResult:
    """Per-frame J and F of one object over the evaluated frames, with their statistics."""

    obj_id: int
    frames: tuple[int, ...]  # indices of the evaluated frames
    j: np.ndarray
    f: np.ndarray
    j_stats: Stats
    f_stats: Stats

    @property
    def jf(self) -> float:
        return (self.j_stats.mean + self.f_stats.mean) / 2


@dataclass(frozen=True)
class SequenceResult:
    name: str
    objects: tuple[ObjectResult, ...]

    @property
    def j(self) -> float:
        return _mean_of(o.j_stats.mean for o in self.objects)

    @property
    def f(self) -> float:
        return _mean_of(o.f_stats.mean for o in self.objects)

    @property
    def jf(self) -> float:
        return (self.j + self.f) / 2


def _mean_of(values) -> float:
    vals = list(values)
    return float(np.mean(vals)) if vals else math.nan


def object_ids(first_gt: np.ndarray) -> list[int]:
    """Objects of a sequence: 1..max label of the first GT frame, void (255) excluded."""
    labels = first_gt[first_gt != VOID]
    top = int(labels.max()) if labels.size else 0
    return list(range(1, top + 1))


def evaluated_frames(n_frames: int, skip_first_last: bool) -> list[int]:
    if skip_first_last:
        return list(range(1, n_frames - 1))
    return list(range(n_frames))


def evaluate_sequence(
    gt: Sequence[np.ndarray],
    pred: Sequence[np.ndarray],
    *,
    name: str = "",
    config: EvalConfig | None = None,
    obj_ids: Sequence[int] | None = None,
) -> SequenceResult:
    """Score index-map predictions against index-map ground truth (equal length lists).

    ``gt`` and ``pred`` hold H×W integer label maps (0 = background, 255 in ``gt`` = void,
    scored as background). ``obj_ids`` defaults to :func:`object_ids` of ``gt[0]``.
    """
    config = config or EvalConfig()
    if len(gt) != len(pred):
        raise ValueError(f"{name}: {len(gt)} ground-truth frames but {len(pred)} predictions")
    if not gt:
        raise ValueError(f"{name}: no frames")
    ids = list(obj_ids) if obj_ids is not None else object_ids(np.asarray(gt[0]))
    frames = evaluated_frames(len(gt), config.skip_first_last)
    if not frames:
        raise ValueError(f"{name}: {len(gt)} frames leave none to score (first/last skipped)")
    j = np.zeros((len(ids), len(frames)))
    f = np.zeros((len(ids), len(frames)))
    extra: set[int] = set()
    for col, t in enumerate(frames):
        g = np.asarray(gt[t])
        p = np.asarray(pred[t])
        if g.shape != p.shape:
            raise ValueError(f"{name} frame {t}: prediction {p.shape} vs ground truth {g.shape}")
        extra.update(int(v) for v in np.unique(p) if v != 0 and v not in ids)
        for row, oid in enumerate(ids):
            gm = g == oid  # void (255) is never an object id here: it scores as background
            pm = p == oid
            j[row, col] = jaccard(gm, pm)
            f[row, col] = f_measure(gm, pm, config.bound_th)
    if extra:
        log.warning("%s: predicted labels %s are not ground-truth objects; ignored", name, extra)
    objects = tuple(
        ObjectResult(
            obj_id=oid,
            frames=tuple(frames),
            j=j[row],
            f=f[row],
            j_stats=statistics(j[row], decay_uint8_bug=config.decay_uint8_bug),
            f_stats=statistics(f[row], decay_uint8_bug=config.decay_uint8_bug),
        )
        for row, oid in enumerate(ids)
    )
    return SequenceResult(name=name, objects=objects)


def summarize(results: Sequence[SequenceResult]) -> dict[str, float]:
    """Data-set statistics, averaged over all objects of all sequences (official rule)."""
    objs = [o for r in results for o in r.objects]
    out: dict[str, float] = {}
    for key, pick in (("J", lambda o: o.j_stats), ("F", lambda o: o.f_stats)):
        out[f"{key}-Mean"] = _mean_of(pick(o).mean for o in objs)
        out[f"{key}-Recall"] = _mean_of(pick(o).recall for o in objs)
        out[f"{key}-Decay"] = _mean_of(pick(o).decay for o in objs)
    out["J&F-Mean"] = (out["J-Mean"] + out["F-Mean"]) / 2
    return out
