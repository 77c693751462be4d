"""Label Studio interactive context → per-object prompts.

LS re-sends, on every click, *all* keypoints of the clicked label across all
frames (smart points carry ``is_positive``; plain points of the same label do
not and count as positive). Points are in percent of the frame size and carry
the frame in ``item_index``. Brush regions in the context (a mask the
annotator painted or corrected) become keyframe masks.

Object identity: one label = one object. Its id is the label's position in the
BrushLabels control (1-based), so it is stable across requests, across
"accept" (accepted regions keep their label) and across workers.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from backend.ls.labelconfig import ProjectSchema
from backend.types import Box, Click, ObjectPrompt


class PromptError(ValueError):
    """The context cannot be turned into prompts; the message names the region."""


@dataclass(frozen=True)
class RelClick:
    """A click in fractions of the frame size (0..1), as Label Studio sends it."""

    fx: float
    fy: float
    positive: bool


@dataclass
class RelMask:
    """A brush mask from the context with the size it was drawn at."""

    rle: Sequence[int]  # a list from JSON, or bytes when kept compact
    width: int
    height: int
    region: str = "?"  # the region's id, for error messages


@dataclass(frozen=True)
class RelBox:
    """A box prompt in fractions of the frame size (0..1): top-left corner, width, height."""

    fx: float
    fy: float
    fw: float
    fh: float


@dataclass
class PromptSet:
    """Parsed context: ``clicks``, ``masks`` and ``boxes``, each ``[label][frame]``."""

    clicks: dict[str, dict[int, list[RelClick]]] = field(default_factory=dict)
    masks: dict[str, dict[int, RelMask]] = field(default_factory=dict)
    boxes: dict[str, dict[int, RelBox]] = field(default_factory=dict)

    @property
    def labels(self) -> list[str]:
        return sorted(set(self.clicks) | set(self.masks) | set(self.boxes))

    @property
    def keyframes(self) -> set[int]:
        return {k for d in (self.clicks, self.masks, self.boxes) for f in d.values() for k in f}

    def is_empty(self) -> bool:
        return not self.clicks and not self.masks and not self.boxes

    def fingerprint(self) -> str:
        """A stable hash of the prompts (same clicks → same hash), for caches."""
        payload = {
            "c": {
                lab: {
                    str(k): [(round(c.fx, 6), round(c.fy, 6), c.positive) for c in v]
                    for k, v in sorted(frames.items())
                }
                for lab, frames in sorted(self.clicks.items())
            },
            "m": {
                lab: {
                    str(k): hashlib.sha1(json.dumps(m.rle).encode()).hexdigest()
                    for k, m in sorted(frames.items())
                }
                for lab, frames in sorted(self.masks.items())
            },
            "b": {
                lab: {str(k): [round(v, 6) for v in vars(b).values()] for k, b in frames.items()}
                for lab, frames in sorted(self.boxes.items())
            },
        }
        return hashlib.sha1(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def _value(region: dict[str, Any]) -> dict[str, Any]:
    value = region.get("value") or {}
    if not isinstance(value, dict):
        raise PromptError(f"region {region.get('id', '?')}: 'value' must be an object")
    return value


def _region_label(region: dict[str, Any], keys: tuple[str, ...]) -> str:
    value = _value(region)
    for key in keys:
        labels = value.get(key)
        if isinstance(labels, list) and labels:
            if not isinstance(labels[0], str):
                break
            return labels[0]
    raise PromptError(f"region {region.get('id', '?')}: no label in value.{keys[0]}")


def _item_index(region: dict[str, Any], num_frames: int) -> int:
    raw = region.get("item_index", 0)
    if raw is None:
        raw = 0
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise PromptError(f"region {region.get('id', '?')}: item_index {raw!r} is not an integer")
    if not 0 <= raw < num_frames:
        raise PromptError(
            f"region {region.get('id', '?')}: item_index {raw} is out of range "
            f"(the task has {num_frames} frames)"
        )
    return raw


def _percent(value: Any, name: str, region_id: str) -> float:
    try:
        ok = not isinstance(value, bool) and math.isfinite(float(value))
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok or not isinstance(value, (int, float)):
        raise PromptError(f"region {region_id}: {name}={str(value)[:40]!r} is not a number")
    if not 0.0 <= float(value) <= 100.0:
        raise PromptError(
            f"region {region_id}: point {name}={value}% is outside the frame (0..100%)"
        )
    return float(value) / 100.0


def _positive(region: dict[str, Any], rid: str) -> bool:
    """``is_positive`` of a smart keypoint: a boolean (missing = positive); ``"true"`` /
    ``"false"`` and 1 / 0 are read as such, anything else is refused."""
    raw = region.get("is_positive", True)
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw.strip().lower() in ("true", "false"):
        return raw.strip().lower() == "true"
    if isinstance(raw, int) and raw in (0, 1):
        return bool(raw)
    raise PromptError(f"region {rid}: is_positive={str(raw)[:40]!r} is not true or false")


def parse_context(
    context: dict[str, Any] | None, schema: ProjectSchema, num_frames: int
) -> PromptSet:
    """Read clicks and brush masks from an interactive ``context``.

    Regions of other controls are ignored; keypoints whose label is not a
    BrushLabels label raise :class:`PromptError` (we could not answer them).
    """
    prompts = PromptSet()
    if not context:
        return prompts
    if not isinstance(context, dict):
        raise PromptError("context must be a JSON object")
    regions = context.get("result") or []
    if not isinstance(regions, list):
        raise PromptError("context.result must be a list")
    for n, region in enumerate(regions, 1):
        if not isinstance(region, dict):
            raise PromptError("context.result items must be objects")
        rtype = region.get("type")
        from_name = region.get("from_name")
        rid = str(region.get("id") or f"#{n} of context.result")[:80]
        if rtype == "keypointlabels" and from_name in (schema.keypoint_name, None):
            label = _region_label(region, ("keypointlabels", "labels"))
            _check_label(label, schema, rid)
            frame = _item_index(region, num_frames)
            value = _value(region)
            click = RelClick(
                fx=_percent(value.get("x"), "x", rid),
                fy=_percent(value.get("y"), "y", rid),
                positive=_positive(region, rid),
            )
            prompts.clicks.setdefault(label, {}).setdefault(frame, []).append(click)
        elif (
            rtype == "rectanglelabels"
            and schema.rectangle_name is not None
            and from_name
            in (
                schema.rectangle_name,
                None,
            )
        ):
            label = _region_label(region, ("rectanglelabels", "labels"))
            _check_label(label, schema, rid)
            frame = _item_index(region, num_frames)
            prompts.boxes.setdefault(label, {})[frame] = _box(_value(region), rid)
        elif rtype == "brushlabels" and from_name in (schema.brush_name, None):
            value = _value(region)
            rle = value.get("rle")
            if not isinstance(rle, list):
                continue  # strokes ("touches") or data URLs are not brush masks we can read
            label = _region_label(region, ("brushlabels", "labels"))
            _check_label(label, schema, rid)
            frame = _item_index(region, num_frames)
            w, h = region.get("original_width"), region.get("original_height")
            if not (isinstance(w, int) and isinstance(h, int) and w > 0 and h > 0):
                raise PromptError(f"region {rid}: brush mask needs original_width/height")
            prompts.masks.setdefault(label, {})[frame] = RelMask(rle, w, h, rid)
    return prompts


def _box(value: dict[str, Any], rid: str) -> RelBox:
    """A rectangle region's box; it must lie in the frame, have a size and no rotation."""
    x, y = _percent(value.get("x"), "x", rid), _percent(value.get("y"), "y", rid)
    w, h = _percent(value.get("width"), "width", rid), _percent(value.get("height"), "height", rid)
    if w <= 0 or h <= 0:
        raise PromptError(f"region {rid}: the box has no size ({w * 100:g}% x {h * 100:g}%)")
    if x + w > 1.0 + 1e-6 or y + h > 1.0 + 1e-6:
        raise PromptError(f"region {rid}: the box reaches outside the frame")
    rotation = value.get("rotation", 0) or 0
    if not isinstance(rotation, (int, float)) or abs(float(rotation)) > 1e-6:
        raise PromptError(f"region {rid}: rotated boxes are not supported (rotation={rotation!r})")
    return RelBox(x, y, w, h)


def _check_label(label: str, schema: ProjectSchema, rid: str) -> None:
    if label not in schema.brush_labels:
        raise PromptError(
            f"region {rid}: label {label!r} is not a label of <BrushLabels "
            f"name={schema.brush_name!r}> ({', '.join(schema.brush_labels) or 'none'}); "
            "give the KeyPointLabels and BrushLabels the same label values"
        )


def object_id(label: str, schema: ProjectSchema) -> int:
    """Stable object id of a label: its 1-based position in BrushLabels."""
    return schema.brush_labels.index(label) + 1


def to_object_prompts(
    prompts: PromptSet,
    schema: ProjectSchema,
    frame_size: tuple[int, int],
    decode_mask,
) -> list[ObjectPrompt]:
    """Convert relative prompts to pixel prompts for frames of ``frame_size`` (W, H).

    ``decode_mask(rle, height, width) -> bool array`` decodes brush RLE. A mask must be
    drawn at the frame size (checked before decoding, so a region cannot declare a huge
    size); one that does not decode is refused with its region id.
    """
    width, height = frame_size
    objects: list[ObjectPrompt] = []
    for label in prompts.labels:
        obj = ObjectPrompt(obj_id=object_id(label, schema), label=label)
        for frame, clicks in sorted(prompts.clicks.get(label, {}).items()):
            obj.clicks[frame] = [
                Click(
                    x=min(c.fx * width, width - 0.5),
                    y=min(c.fy * height, height - 0.5),
                    positive=c.positive,
                )
                for c in clicks
            ]
        for frame, b in sorted(prompts.boxes.get(label, {}).items()):
            x0, y0 = b.fx * width, b.fy * height
            x1, y1 = min(width, (b.fx + b.fw) * width), min(height, (b.fy + b.fh) * height)
            obj.boxes[frame] = Box(x0, y0, max(x1, x0 + 1), max(y1, y0 + 1))
        for frame, m in sorted(prompts.masks.get(label, {}).items()):
            if (m.width, m.height) != (width, height):
                raise PromptError(
                    f"region {m.region}: brush mask on frame {frame} is {m.width}x{m.height}, "
                    f"but the task's frames are {width}x{height}"
                )
            try:
                obj.masks[frame] = decode_mask(m.rle, m.height, m.width)
            except (ValueError, TypeError, OverflowError) as exc:
                raise PromptError(f"region {m.region}: brush RLE cannot be read ({exc})") from None
        objects.append(obj)
    objects.sort(key=lambda o: o.obj_id)
    return objects


def prompts_to_json(prompts: PromptSet) -> dict[str, Any]:
    """A JSON-able copy of ``prompts`` (for the job store)."""
    return {
        "clicks": {
            lab: {str(k): [[c.fx, c.fy, c.positive] for c in v] for k, v in frames.items()}
            for lab, frames in prompts.clicks.items()
        },
        "masks": {
            lab: {
                str(k): {"rle": m.rle, "width": m.width, "height": m.height}
                for k, m in frames.items()
            }
            for lab, frames in prompts.masks.items()
        },
        "boxes": {
            lab: {str(k): [b.fx, b.fy, b.fw, b.fh] for k, b in frames.items()}
            for lab, frames in prompts.boxes.items()
        },
    }


def prompts_from_json(data: dict[str, Any]) -> PromptSet:
    """Inverse of :func:`prompts_to_json`."""
    return PromptSet(
        clicks={
            lab: {
                int(k): [RelClick(float(x), float(y), bool(p)) for x, y, p in v]
                for k, v in frames.items()
            }
            for lab, frames in data.get("clicks", {}).items()
        },
        masks={
            lab: {int(k): RelMask(**m) for k, m in frames.items()}
            for lab, frames in data.get("masks", {}).items()
        },
        boxes={
            lab: {int(k): RelBox(*(float(v) for v in b)) for k, b in frames.items()}
            for lab, frames in data.get("boxes", {}).items()
        },
    )
