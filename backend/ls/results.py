"""Per-frame masks → Label Studio ``brushlabels`` results and predictions."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from backend.ls import rle
from backend.ls.labelconfig import ProjectSchema
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


def frame_regions(
    fp: FramePrediction, labels: dict[int, str], schema: ProjectSchema
) -> list[dict[str, Any]]:
    """Regions of one frame: one per object with a non-empty mask."""
    return [
        brush_region(
            mask,
            frame=fp.index,
            label=labels[obj_id],
            obj_id=obj_id,
            schema=schema,
            score=fp.scores.get(obj_id, 0.0),
        )
        for obj_id, mask in sorted(fp.masks.items())
        if obj_id in labels and mask.any()
    ]


def compact_region(region: dict[str, Any]) -> dict[str, Any]:
    """The region with its RLE stored as ``bytes`` (8× smaller than a list of ints in Python).

    Jobs keep every finished frame until the end; :func:`assemble_prediction`
    turns the RLE back into the JSON list Label Studio expects.
    """
    value = dict(region["value"], rle=bytes(region["value"]["rle"]))
    return dict(region, value=value)


def _expanded(region: dict[str, Any]) -> dict[str, Any]:
    rle_value = region["value"]["rle"]
    if isinstance(rle_value, (bytes, bytearray)):
        return dict(region, value=dict(region["value"], rle=list(rle_value)))
    return region


def assemble_prediction(
    regions: list[dict[str, Any]], scores: list[float], *, model_version: str
) -> dict[str, Any]:
    """A prediction from regions (sorted by frame, then object) and per-(frame, object) scores.

    Regions may hold compact RLE (see :func:`compact_region`).
    """
    ordered = [
        _expanded(r) for r in sorted(regions, key=lambda r: (r.get("item_index", 0), r["id"]))
    ]
    return {
        "result": ordered,
        "score": round(float(np.mean(scores)), 4) if scores else 0.0,
        "model_version": model_version,
    }


def build_prediction(
    frames: Iterable[FramePrediction],
    objects: list[ObjectInfo],
    schema: ProjectSchema,
    *,
    model_version: str,
) -> dict[str, Any]:
    """A prediction with one region per (frame, object) whose mask is not empty.

    Its ``score`` is the mean quality over every (frame, object), empty ones included.
    """
    labels = {o.obj_id: o.label for o in objects}
    result: list[dict[str, Any]] = []
    scores: list[float] = []
    for fp in frames:
        scores.extend(s for o, s in fp.scores.items() if o in labels)
        result.extend(frame_regions(fp, labels, schema))
    return assemble_prediction(result, scores, model_version=model_version)


class PredictionBuilder:
    """Collects one run's frames as compact regions of the answered objects and builds the
    prediction — complete, or partial (keyframes stand in for frames not reached yet)."""

    def __init__(self, labels: dict[int, str], schema: ProjectSchema):
        self.labels = labels
        self.schema = schema
        self.done: dict[int, tuple[list, list]] = {}  # frame → (regions, scores)
        self.keyframes: dict[int, list] = {}  # frame → keyframe regions

    def add(self, fp: FramePrediction) -> None:
        regions = [compact_region(r) for r in frame_regions(fp, self.labels, self.schema)]
        self.done[fp.index] = (regions, [s for o, s in fp.scores.items() if o in self.labels])

    def add_keyframe(self, fp: FramePrediction) -> None:
        self.keyframes[fp.index] = [
            compact_region(r) for r in frame_regions(fp, self.labels, self.schema)
        ]

    def prediction(self, model_version: str) -> dict[str, Any]:
        pending = [r for k, rs in self.keyframes.items() if k not in self.done for r in rs]
        regions = [r for rs, _ in self.done.values() for r in rs]
        scores = [s for _, ss in self.done.values() for s in ss]
        return assemble_prediction(pending + regions, scores, model_version=model_version)


def low_quality_frames(regions: Iterable[dict[str, Any]], threshold: float) -> list[int]:
    """Frame indices (``item_index``) of regions scoring below ``threshold``."""
    return sorted({r.get("item_index", 0) for r in regions if r["score"] < threshold})
