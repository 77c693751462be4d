"""Label Studio ``videorectangle`` tracks → per-frame boxes → MOT and YOLO files.

:func:`sequence_boxes` replays a ``value.sequence`` the way the Label Studio 1.23 UI draws
it (see :mod:`backend.ls.tracks`): frame ``t`` shows the last keyframe at or before ``t``
when it is on ``t``, nothing when that keyframe is disabled, else the linear interpolation
towards the next keyframe, or the same box held after the last one. Rotated boxes are
exported as the axis-aligned box around them (Label Studio turns a box about its top-left
corner).

Writers:

* **MOT** (:func:`write_mot`): one text file, a line per shown box
  ``frame,id,left,top,width,height,conf,-1,-1,-1`` with 1-based frames, pixels and
  ``conf`` the frame's score (``meta.frame_scores``), else the region's, else 1.
* **YOLO** (:func:`write_yolo`): one ``.txt`` per frame (empty when nothing is shown),
  lines ``class cx cy w h`` normalised to [0, 1] and clipped to the frame, plus
  ``classes.txt`` with one label a line in class order.

Pure conversion: nothing here talks to Label Studio.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

PercentBox = tuple[float, float, float, float]
"""``(x, y, width, height)`` in percent of the frame."""


@dataclass(frozen=True)
class ExportTrack:
    """One object's shown boxes: ``boxes`` by 1-based Label Studio frame (percent), its
    per-frame ``scores`` where known and the region ``score``."""

    track_id: int
    label: str
    boxes: Mapping[int, PercentBox]
    scores: Mapping[int, float]
    score: float | None = None

    def confidence(self, frame: int) -> float:
        if frame in self.scores:
            return self.scores[frame]
        return 1.0 if self.score is None else self.score


def _wrap(degrees: float) -> float:
    """An angle in (−180, 180], as the UI normalises rotations."""
    return 180.0 - ((180.0 - degrees) % 360.0)


def _shape(key: Mapping[str, Any]) -> tuple[float, float, float, float, float]:
    return (
        float(key["x"]),
        float(key["y"]),
        float(key["width"]),
        float(key["height"]),
        float(key.get("rotation", 0) or 0),
    )


def _between(
    a: Mapping[str, Any], b: Mapping[str, Any], frame: int
) -> tuple[float, float, float, float, float]:
    """Linear interpolation from keyframe ``a`` to ``b``; rotation the short way round."""
    t = (frame - int(a["frame"])) / (int(b["frame"]) - int(a["frame"]))
    sa, sb = _shape(a), _shape(b)
    x, y, w, h = (pa + (pb - pa) * t for pa, pb in zip(sa[:4], sb[:4], strict=True))
    rot = _wrap(sa[4] + _wrap(sb[4] - sa[4]) * t) if sa[4] or sb[4] else 0.0
    return (x, y, w, h, rot)


def sequence_shapes(
    sequence: Sequence[Mapping[str, Any]], frames_count: int | None = None
) -> dict[int, tuple[float, float, float, float, float]]:
    """Shown ``(x, y, width, height, rotation)`` by 1-based frame, as the UI draws them.

    ``frames_count`` bounds how far the last keyframe holds; without it nothing is shown
    after the last keyframe. Of several keyframes on one frame, that frame shows the first
    and the frames after it follow the last (as the UI does).
    """
    groups: dict[int, list[Mapping[str, Any]]] = {}
    for key in sorted(sequence, key=lambda k: int(k["frame"])):
        groups.setdefault(int(key["frame"]), []).append(key)
    if not groups:
        return {}
    frames = sorted(groups)
    end = int(frames_count) if frames_count else frames[-1]
    out: dict[int, tuple[float, float, float, float, float]] = {}
    for n, f0 in enumerate(frames):
        first, last = groups[f0][0], groups[f0][-1]
        out[f0] = _shape(first)
        if not last.get("enabled", True):
            continue
        if n + 1 == len(frames):
            held = _shape(last)
            for f in range(f0 + 1, end + 1):
                out[f] = held
            continue
        nxt = groups[frames[n + 1]][0]
        for f in range(f0 + 1, min(frames[n + 1], end + 1)):
            out[f] = _between(last, nxt, f)
    return {f: v for f, v in out.items() if 1 <= f <= end}


def _axis_aligned(shape: tuple[float, ...], width: int, height: int) -> PercentBox:
    """The axis-aligned percent box around a box turned about its top-left corner."""
    x, y, w, h, rot = shape
    if not rot:
        return (x, y, w, h)
    px, py, pw, ph = x * width / 100, y * height / 100, w * width / 100, h * height / 100
    c, s = math.cos(math.radians(rot)), math.sin(math.radians(rot))
    xs = [px + dx * c - dy * s for dx, dy in ((0, 0), (pw, 0), (0, ph), (pw, ph))]
    ys = [py + dx * s + dy * c for dx, dy in ((0, 0), (pw, 0), (0, ph), (pw, ph))]
    return (
        100 * min(xs) / width,
        100 * min(ys) / height,
        100 * (max(xs) - min(xs)) / width,
        100 * (max(ys) - min(ys)) / height,
    )


def sequence_boxes(
    sequence: Sequence[Mapping[str, Any]],
    frames_count: int | None = None,
    frame_size: tuple[int, int] | None = None,
) -> dict[int, PercentBox]:
    """Shown percent boxes by 1-based frame; rotated boxes become their axis-aligned
    bounds, which needs ``frame_size`` (width, height) (rotation is ignored without it)."""
    shapes = sequence_shapes(sequence, frames_count)
    if frame_size is None:
        return {f: s[:4] for f, s in shapes.items()}
    return {f: _axis_aligned(s, *frame_size) for f, s in shapes.items()}


def _frame_scores(result: Mapping[str, Any]) -> dict[int, float]:
    meta = (result.get("meta") or {}).get("frame_scores") or {}
    first = int(meta.get("first_frame", 1))
    return {
        first + k: v / 100.0
        for k, v in enumerate(meta.get("values") or [])
        if isinstance(v, (int, float))
    }


def tracks_from_results(
    results: Iterable[Mapping[str, Any]],
    frames_count: int | None = None,
    frame_size: tuple[int, int] | None = None,
) -> list[ExportTrack]:
    """Every ``videorectangle`` result as an :class:`ExportTrack`, ids 1, 2, ... in order.

    ``frames_count`` defaults to each result's ``value.framesCount``.
    """
    out = []
    for r in results:
        if r.get("type") != "videorectangle":
            continue
        value = r.get("value") or {}
        labels = value.get("labels") or []
        count = frames_count or value.get("framesCount")
        out.append(
            ExportTrack(
                track_id=len(out) + 1,
                label=str(labels[0]) if labels else "",
                boxes=sequence_boxes(value.get("sequence") or [], count, frame_size),
                scores=_frame_scores(r),
                score=float(r["score"]) if r.get("score") is not None else None,
            )
        )
    return out


def class_indices(tracks: Iterable[ExportTrack], known: Sequence[str] = ()) -> dict[str, int]:
    """0-based class per label: the ``known`` labels (the config's order) first, then the
    others in order of appearance."""
    out = {label: k for k, label in enumerate(dict.fromkeys(known))}
    for t in tracks:
        if t.label not in out:
            log.warning("label %r is not in the known labels; class %d", t.label, len(out))
            out[t.label] = len(out)
    return out


def mot_lines(tracks: Iterable[ExportTrack], width: int, height: int) -> list[str]:
    """MOT lines ``frame,id,left,top,width,height,conf,-1,-1,-1``, by frame then id."""
    rows = []
    for t in tracks:
        for frame, (x, y, w, h) in t.boxes.items():
            rows.append((frame, t.track_id, x, y, w, h, t.confidence(frame)))
    rows.sort(key=lambda r: (r[0], r[1]))
    return [
        f"{f},{tid},{x * width / 100:.2f},{y * height / 100:.2f},"
        f"{w * width / 100:.2f},{h * height / 100:.2f},{conf:.4f},-1,-1,-1"
        for f, tid, x, y, w, h, conf in rows
    ]


def write_mot(tracks: Iterable[ExportTrack], path: Path, width: int, height: int) -> Path:
    """Write the MOT text file at ``path`` (pixels of a ``width``×``height`` frame)."""
    lines = mot_lines(tracks, width, height)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines))
    log.info("MOT: %d boxes → %s", len(lines), path)
    return path


def _clip01(v: float) -> float:
    return min(1.0, max(0.0, v))


def yolo_line(cls: int, box: PercentBox) -> str | None:
    """``class cx cy w h`` normalised and clipped to the frame; ``None`` when nothing of
    the box is inside."""
    x, y, w, h = box
    x0, y0 = _clip01(x / 100), _clip01(y / 100)
    x1, y1 = _clip01((x + w) / 100), _clip01((y + h) / 100)
    if x1 <= x0 or y1 <= y0:
        return None
    return f"{cls} {(x0 + x1) / 2:.6f} {(y0 + y1) / 2:.6f} {x1 - x0:.6f} {y1 - y0:.6f}"


def write_yolo(
    tracks: Sequence[ExportTrack],
    out_dir: Path,
    *,
    frames_count: int,
    classes: Mapping[str, int],
    name_format: str = "{index:06d}.txt",
) -> list[Path]:
    """One label file per frame in ``out_dir`` and ``classes.txt``.

    File names come from ``name_format`` with ``index`` = 0-based frame (the pipeline's and
    the extracted frames' numbering) and ``frame`` = 1-based Label Studio frame.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    boxes = 0
    ordered = sorted(tracks, key=lambda t: t.track_id)
    for frame in range(1, frames_count + 1):
        lines = []
        for t in ordered:
            box = t.boxes.get(frame)
            line = yolo_line(classes[t.label], box) if box is not None else None
            if line is not None:
                lines.append(line)
        path = out_dir / name_format.format(index=frame - 1, frame=frame)
        path.write_text("".join(line + "\n" for line in lines))
        paths.append(path)
        boxes += len(lines)
    names = sorted(classes, key=classes.__getitem__)
    (out_dir / "classes.txt").write_text("".join(n + "\n" for n in names))
    log.info("YOLO: %d boxes on %d frames → %s", boxes, frames_count, out_dir)
    return paths


TRACK_FORMATS = ("mot", "yolo")


def export_video_tasks(
    tasks: Iterable[Mapping[str, Any]],
    fmt: str,
    out: Path,
    *,
    labels: Sequence[str] = (),
    use_predictions: bool = False,
    frame_size: Callable[[Mapping[str, Any]], tuple[int, int]],
) -> dict[str, Any]:
    """Every ``<Video>`` task's tracks as per-frame boxes: ``mot`` (one ``task-<id>.txt``) or
    ``yolo`` (a ``task-<id>/`` folder of per-frame files and ``classes.txt``).

    A task's result is its newest annotation (or, with ``use_predictions``, its newest
    prediction when it has none); ``frame_size(task)`` gives the video's (width, height).
    Returns a summary: tasks, tracks, boxes written, files, tasks skipped (no track).
    """
    from backend.ls.export import ExportError, chosen_result

    if fmt not in TRACK_FORMATS:
        raise ExportError(f"unknown track format {fmt!r}; expected one of mot, yolo")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {"format": fmt, "tasks": 0, "tracks": 0, "boxes": 0, "files": []}
    skipped: list[Any] = []
    for task in tasks:
        result = chosen_result(task, use_predictions=use_predictions) or []
        tracks = tracks_from_results(result)
        if not tracks:
            skipped.append(task.get("id"))
            continue
        width, height = frame_size(task)
        tracks = tracks_from_results(result, frame_size=(width, height))
        name = f"task-{task.get('id')}"
        frames = max((f for t in tracks for f in t.boxes), default=0)
        frames = max(
            [frames, *(int((r.get("value") or {}).get("framesCount") or 0) for r in result)]
        )
        if fmt == "mot":
            path = write_mot(tracks, out / f"{name}.txt", width, height)
            summary["files"].append(path.name)
        else:
            classes = class_indices(tracks, labels)
            write_yolo(tracks, out / name, frames_count=frames, classes=classes)
            summary["files"].append(f"{name}/")
        summary["tasks"] += 1
        summary["tracks"] += len(tracks)
        summary["boxes"] += sum(len(t.boxes) for t in tracks)
    summary["skipped"] = skipped
    return summary
