"""Per-frame masks → Label Studio ``brushlabels`` results and predictions."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from backend import rle
from backend.labelconfig import ProjectSchema
from backend.types import FramePrediction


@dataclass(frozen=True)
class ObjectInfo:
    obj_id: int
    label: str


def region_id(obj_id: int, frame: int) -> str:
    """Deterministic region id: the same object on the same frame keeps its id."""
    return f"tam-o{obj_id}-f{frame}"


def brush_region(
    mask: np.ndarray, *, frame: int, label: str, obj_id: int, schema: ProjectSchema, score: float
) -> dict[str, Any]:
    """One LS brush region for ``mask`` (H×W bool at the native frame size)."""
    height, width = mask.shape
    region: dict[str, Any] = {
        "id": region_id(obj_id, frame),
        "from_name": schema.brush_name,
        "to_name": schema.image_name,
        "type": "brushlabels",
        "original_width": int(width),
        "original_height": int(height),
        "image_rotation": 0,
        "value": {"format": "rle", "rle": rle.encode(mask), "brushlabels": [label]},
        "score": round(float(score), 4),
        "readonly": False,
    }
    if schema.is_sequence:
        region["item_index"] = int(frame)
    return region


def build_prediction(
    frames: Iterable[FramePrediction],
    objects: list[ObjectInfo],
    schema: ProjectSchema,
    *,
    model_version: str,
    quality_threshold: float,
) -> dict[str, Any]:
    """A prediction with one region per (frame, object) whose mask is not empty.

    The prediction ``score`` is the mean per-frame quality; frames below
    ``quality_threshold`` are counted in the log by the caller via
    :func:`low_quality_frames`.
    """
    labels = {o.obj_id: o.label for o in objects}
    result: list[dict[str, Any]] = []
    scores: list[float] = []
    for fp in frames:
        for obj_id, mask in sorted(fp.masks.items()):
            score = fp.scores.get(obj_id, 0.0)
            scores.append(score)
            if not mask.any():
                continue
            result.append(
                brush_region(
                    mask,
                    frame=fp.index,
                    label=labels[obj_id],
                    obj_id=obj_id,
                    schema=schema,
                    score=score,
                )
            )
    return {
        "result": result,
        "score": round(float(np.mean(scores)), 4) if scores else 0.0,
        "model_version": model_version,
    }


def low_quality_frames(frames: Iterable[FramePrediction], threshold: float) -> list[int]:
    """Frame indices where any object scores below ``threshold``."""
    return sorted({fp.index for fp in frames for s in fp.scores.values() if s < threshold})
