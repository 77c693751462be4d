"""Label Studio tasks (JSON) → video segmentation datasets: DAVIS, COCO, YouTube-VIS.

Pure conversion: :func:`collect_sequences` reads tasks as Label Studio returns them
(``GET /api/tasks?fields=all``: ``data``, ``annotations``, ``predictions``) and
:func:`export_sequences` writes files. Nothing here talks to Label Studio
(``backend/cli_export.py`` does the fetching).

Rules:

* **Which result.** A task's latest non-cancelled annotation (a ground-truth one first);
  with ``use_predictions`` a task without one falls back to its latest prediction.
* **Objects.** One label = one object. Object id = position of the label in the project's
  ``BrushLabels`` (1-based); labels not in the config follow in order of appearance. The id
  is the DAVIS index, the COCO ``category_id`` and the YouTube-VIS ``track_id``.
* **Frames.** ``item_index`` of a region is the frame inside its task. Tasks of the same
  ``data.video`` are chunks of one sequence, ordered by ``data.frame_offset`` and merged.
  Several regions of one object on one frame are united; where objects overlap the lower
  id keeps the pixel (as the pipeline does).
* **Memory.** Masks stay as LS RLE until they are written, one frame at a time.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from backend.ls import rle
from backend.masks import (  # noqa: F401 - index-image helpers, re-exported
    MAX_OBJECTS,
    davis_palette,
    masks_to_index,
    read_index_png,
    write_index_png,
)

log = logging.getLogger(__name__)

FORMATS = ("davis", "coco", "ytvis")


class ExportError(ValueError):
    """The tasks cannot be exported as asked; the message says why."""


# --------------------------------------------------------------------------- index PNGs


def _index(masks: Mapping[int, np.ndarray], size: tuple[int, int]) -> np.ndarray:
    try:
        return masks_to_index(masks, size)
    except ValueError as exc:
        raise ExportError(str(exc)) from None


# --------------------------------------------------------------------------- tasks → sequences


@dataclass(frozen=True)
class BrushRegion:
    """One LS brush region, still RLE-encoded."""

    obj_id: int
    rle: Sequence[int]
    height: int
    width: int

    def decode(self) -> np.ndarray:
        return rle.decode(self.rle, self.height, self.width)


@dataclass
class ClipSequence:
    """One exported sequence: merged chunks of a video, masks still encoded."""

    name: str
    frames: list[str] = field(default_factory=list)  # frame URLs in order
    regions: dict[int, list[BrushRegion]] = field(default_factory=dict)  # frame → regions
    task_ids: list[int] = field(default_factory=list)
    size: tuple[int, int] | None = None  # (height, width), from the regions

    def frame_masks(self, frame: int) -> dict[int, np.ndarray]:
        """Union of each object's regions on ``frame`` (empty dict: nothing annotated)."""
        out: dict[int, np.ndarray] = {}
        for reg in self.regions.get(frame, []):
            m = reg.decode()
            out[reg.obj_id] = out[reg.obj_id] | m if reg.obj_id in out else m
        return out


def chosen_result(task: Mapping[str, Any], *, use_predictions: bool) -> list[dict] | None:
    """The result list exported for ``task`` (see module rules), or None."""
    anns = [a for a in task.get("annotations") or [] if not a.get("was_cancelled")]
    if anns:
        best = max(
            anns,
            key=lambda a: (
                bool(a.get("ground_truth")),
                str(a.get("updated_at") or a.get("created_at") or ""),
                int(a.get("id") or 0),
            ),
        )
        return list(best.get("result") or [])
    if use_predictions and task.get("predictions"):
        best = max(
            task["predictions"],
            key=lambda p: (str(p.get("created_at") or ""), int(p.get("id") or 0)),
        )
        return list(best.get("result") or [])
    return None


def _brush_results(result: Iterable[Mapping[str, Any]], brush_name: str | None):
    for r in result:
        if r.get("type") != "brushlabels":
            continue
        if brush_name is not None and r.get("from_name") != brush_name:
            continue
        value = r.get("value") or {}
        if "rle" not in value or not value.get("brushlabels"):
            continue
        yield r


def label_ids(config_labels: Sequence[str], results: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """Object id of every label: config position first, then new labels as they appear."""
    ids = {lab: k + 1 for k, lab in enumerate(dict.fromkeys(config_labels))}
    for r in results:
        lab = str(r["value"]["brushlabels"][0])
        if lab not in ids:
            ids[lab] = len(ids) + 1
    if len(ids) > MAX_OBJECTS:
        raise ExportError(f"{len(ids)} labels: at most {MAX_OBJECTS} objects fit an index PNG")
    return ids


def _safe_name(text: str) -> str:
    stem = Path(text.split("?")[0]).stem or text
    return re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._") or "clip"


def collect_sequences(
    tasks: Iterable[Mapping[str, Any]],
    *,
    config_labels: Sequence[str] = (),
    frames_key: str = "frames",
    brush_name: str | None = None,
    use_predictions: bool = False,
) -> tuple[list[ClipSequence], dict[str, int]]:
    """Group tasks into sequences and index their brush regions by sequence frame.

    Returns ``(sequences, label → object id)``. Tasks without an exported result are
    still part of their sequence (their frames get empty masks).
    """
    chunks: list[tuple[str, int, int, Mapping[str, Any], list[dict]]] = []
    for task in tasks:
        data = task.get("data") or {}
        frames = data.get(frames_key)
        if isinstance(frames, str):
            frames = [frames]
        if not isinstance(frames, list) or not frames:
            log.warning("task %s: no %r frame list, skipped", task.get("id"), frames_key)
            continue
        result = chosen_result(task, use_predictions=use_predictions) or []
        video = str(data.get("video") or f"task-{task.get('id')}")
        offset = int(data.get("frame_offset") or 0)
        chunks.append((video, offset, int(task.get("id") or 0), task, result))

    ids = label_ids(config_labels, (r for c in chunks for r in _brush_results(c[4], brush_name)))
    by_video: dict[str, list[tuple[int, int, Mapping[str, Any], list[dict]]]] = {}
    for video, offset, tid, task, result in chunks:
        by_video.setdefault(video, []).append((offset, tid, task, result))

    sequences: list[ClipSequence] = []
    used: set[str] = set()
    for video, parts in by_video.items():
        name = base = _safe_name(video)
        n = 2
        while name in used:
            name, n = f"{base}-{n}", n + 1
        used.add(name)
        seq = ClipSequence(name=name)
        for _offset, tid, task, result in sorted(parts, key=lambda p: (p[0], p[1])):
            start = len(seq.frames)
            frames = task["data"][frames_key]
            frames = [frames] if isinstance(frames, str) else list(frames)
            seq.frames.extend(str(f) for f in frames)
            seq.task_ids.append(tid)
            for r in _brush_results(result, brush_name):
                item = int(r.get("item_index") or 0)
                if not 0 <= item < len(frames):
                    log.warning(
                        "task %s: region on frame %d of %d, skipped", tid, item, len(frames)
                    )
                    continue
                h, w = int(r["original_height"]), int(r["original_width"])
                seq.size = seq.size or (h, w)
                if (h, w) != seq.size:
                    raise ExportError(
                        f"sequence {name!r}: frames of different sizes ({w}x{h} vs "
                        f"{seq.size[1]}x{seq.size[0]})"
                    )
                oid = ids[str(r["value"]["brushlabels"][0])]
                seq.regions.setdefault(start + item, []).append(
                    BrushRegion(oid, r["value"]["rle"], h, w)
                )
        sequences.append(seq)
    return sequences, ids


# --------------------------------------------------------------------------- writers


FrameSize = Callable[[str], tuple[int, int]]  # frame URL → (height, width)


def _resolve_sizes(sequences: list[ClipSequence], frame_size: FrameSize | None) -> list[str]:
    """Fill ``size`` of sequences without regions; returns the names left without a size."""
    missing = []
    for seq in sequences:
        if seq.size is None and frame_size is not None:
            try:
                seq.size = frame_size(seq.frames[0])
            except Exception as exc:  # a missing frame only costs that sequence
                log.warning("sequence %s: cannot read the frame size (%s)", seq.name, exc)
        if seq.size is None:
            missing.append(seq.name)
    return missing


def _iter_frames(seq: ClipSequence) -> Iterator[tuple[int, dict[int, np.ndarray]]]:
    for i in range(len(seq.frames)):
        yield i, seq.frame_masks(i)


def write_davis(sequences: list[ClipSequence], out: Path, *, progress=None) -> int:
    """``out/Annotations/<seq>/00000.png`` palette index PNGs; returns the PNG count."""
    count = 0
    for seq in sequences:
        assert seq.size is not None
        for i, masks in _iter_frames(seq):
            write_index_png(
                out / "Annotations" / seq.name / f"{i:05d}.png", _index(masks, seq.size)
            )
            count += 1
            if progress:
                progress(1)
    sets = out / "ImageSets"
    sets.mkdir(parents=True, exist_ok=True)
    (sets / "sequences.txt").write_text("".join(f"{s.name}\n" for s in sequences))
    return count


def coco_rle(mask: np.ndarray) -> dict[str, Any]:
    """COCO compressed RLE of a bool mask, JSON-ready (``counts`` as str)."""
    from pycocotools import mask as mask_utils

    enc = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {
        "size": [int(enc["size"][0]), int(enc["size"][1])],
        "counts": enc["counts"].decode("ascii"),
    }


def _bbox(mask: np.ndarray) -> list[float]:
    ys, xs = np.nonzero(mask)
    if xs.size == 0:
        return [0.0, 0.0, 0.0, 0.0]
    x0, y0 = int(xs.min()), int(ys.min())
    return [float(x0), float(y0), float(xs.max() - x0 + 1), float(ys.max() - y0 + 1)]


def _categories(ids: Mapping[str, int]) -> list[dict[str, Any]]:
    return [
        {"id": oid, "name": lab, "supercategory": "object"}
        for lab, oid in sorted(ids.items(), key=lambda kv: kv[1])
    ]


def frame_file_name(seq: ClipSequence, index: int) -> str:
    return f"{seq.name}/{index:05d}.jpg"


def coco_dataset(sequences: list[ClipSequence], ids: Mapping[str, int], *, progress=None):
    """COCO instance segmentation dict: one image per frame, RLE ``segmentation``."""
    images, annotations = [], []
    for seq in sequences:
        assert seq.size is not None
        h, w = seq.size
        for i, masks in _iter_frames(seq):
            image_id = len(images) + 1
            images.append(
                {
                    "id": image_id,
                    "file_name": frame_file_name(seq, i),
                    "width": w,
                    "height": h,
                    "video": seq.name,
                    "frame_index": i,
                    "ls_url": seq.frames[i],
                }
            )
            index = _index(masks, seq.size) if masks else None
            for oid in sorted(masks):
                m = index == oid
                if not m.any():
                    continue
                annotations.append(
                    {
                        "id": len(annotations) + 1,
                        "image_id": image_id,
                        "category_id": oid,
                        "track_id": oid,
                        "segmentation": coco_rle(m),
                        "area": int(m.sum()),
                        "bbox": _bbox(m),
                        "iscrowd": 0,
                    }
                )
            if progress:
                progress(1)
    return {
        "info": {"description": "exported from Label Studio by track-anything-ls"},
        "images": images,
        "annotations": annotations,
        "categories": _categories(ids),
    }


def ytvis_dataset(sequences: list[ClipSequence], ids: Mapping[str, int], *, progress=None):
    """YouTube-VIS-style dict: one video per sequence, one track per object."""
    videos, annotations = [], []
    for seq in sequences:
        assert seq.size is not None
        h, w = seq.size
        video_id = len(videos) + 1
        n = len(seq.frames)
        videos.append(
            {
                "id": video_id,
                "name": seq.name,
                "width": w,
                "height": h,
                "length": n,
                "file_names": [frame_file_name(seq, i) for i in range(n)],
                "ls_urls": list(seq.frames),
            }
        )
        tracks: dict[int, dict[str, list]] = {}
        for i, masks in _iter_frames(seq):
            index = _index(masks, seq.size) if masks else None
            for oid in masks:
                m = index == oid
                if not m.any():
                    continue
                t = tracks.setdefault(
                    oid, {"segmentations": [None] * n, "areas": [None] * n, "bboxes": [None] * n}
                )
                t["segmentations"][i] = coco_rle(m)
                t["areas"][i] = int(m.sum())
                t["bboxes"][i] = _bbox(m)
            if progress:
                progress(1)
        for oid in sorted(tracks):
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "video_id": video_id,
                    "category_id": oid,
                    "track_id": oid,
                    "iscrowd": 0,
                    "width": w,
                    "height": h,
                    "length": n,
                    **tracks[oid],
                }
            )
    return {
        "info": {"description": "exported from Label Studio by track-anything-ls"},
        "videos": videos,
        "annotations": annotations,
        "categories": _categories(ids),
    }


@dataclass(frozen=True)
class ExportSummary:
    format: str
    sequences: int
    frames: int
    objects: dict[str, int]
    files: list[str]
    skipped: list[str]

    def as_dict(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "sequences": self.sequences,
            "frames": self.frames,
            "objects": self.objects,
            "files": self.files,
            "skipped": self.skipped,
        }


def export_sequences(
    sequences: list[ClipSequence],
    ids: Mapping[str, int],
    fmt: str,
    out: str | Path,
    *,
    frame_size: FrameSize | None = None,
    progress=None,
) -> ExportSummary:
    """Write ``sequences`` as ``fmt`` under ``out``; also ``out/objects.json``.

    Sequences whose frame size is unknown (no region, and ``frame_size`` cannot tell)
    are skipped and listed in the summary.
    """
    if fmt not in FORMATS:
        raise ExportError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    skipped = _resolve_sizes(sequences, frame_size)
    for name in skipped:
        log.warning("sequence %s: no masks and unknown frame size, skipped", name)
    seqs = [s for s in sequences if s.size is not None]
    files: list[str] = []
    if fmt == "davis":
        write_davis(seqs, out, progress=progress)
        files += [f"Annotations/{s.name}/" for s in seqs]
    else:
        build = coco_dataset if fmt == "coco" else ytvis_dataset
        name = f"{fmt}.json"
        (out / name).write_text(json.dumps(build(seqs, ids, progress=progress)))
        files.append(name)
    meta = {
        "objects": {str(oid): lab for lab, oid in sorted(ids.items(), key=lambda kv: kv[1])},
        "sequences": {s.name: {"tasks": s.task_ids, "frames": s.frames} for s in seqs},
        "skipped": skipped,
    }
    (out / "objects.json").write_text(json.dumps(meta, indent=1))
    files.append("objects.json")
    return ExportSummary(
        fmt, len(seqs), sum(len(s.frames) for s in seqs), dict(ids), files, skipped
    )


def export_tasks(
    tasks: Iterable[Mapping[str, Any]],
    fmt: str,
    out: str | Path,
    *,
    config_labels: Sequence[str] = (),
    frames_key: str = "frames",
    brush_name: str | None = None,
    use_predictions: bool = False,
    frame_size: FrameSize | None = None,
    progress=None,
) -> ExportSummary:
    """Tasks JSON in → dataset files out (see :func:`collect_sequences`)."""
    seqs, ids = collect_sequences(
        tasks,
        config_labels=config_labels,
        frames_key=frames_key,
        brush_name=brush_name,
        use_predictions=use_predictions,
    )
    return export_sequences(seqs, ids, fmt, out, frame_size=frame_size, progress=progress)
