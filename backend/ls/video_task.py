"""Label Studio ``<Video>`` projects: the controls of the config and the box prompts of a task.

A video project is ``<Video value="$video" framerate="…">`` + ``<VideoRectangle>`` (+ a
``<Labels>`` on the video for the label). Every ``videorectangle`` region of a task is one
object; its enabled keyframes are box prompts on those frames (1-based ``frame`` in Label
Studio, 0-based here). Names are read from the config, never assumed.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from label_studio_sdk.label_interface import LabelInterface

from backend.jobs import JobSpec
from backend.ls.labelconfig import LabelConfigError
from backend.ls.prompts import PromptError
from backend.ls.tasks import TaskError, check_url
from backend.ls.tracks import (
    Keyframe,
    ObjectTrack,
    TrackFrame,
    TrackOptions,
    VideoInfo,
    mask_box,
    prediction_score,
    track_results,
)
from backend.session import InteractiveSession, SessionKey
from backend.types import Box, FramePrediction

DEFAULT_FRAMERATE = 24.0  # the <Video> tag's default in Label Studio 1.23


@dataclass(frozen=True)
class VideoSchema:
    """Names taken from a video project's labeling config."""

    video_name: str  # to_name of our results
    video_key: str  # task.data key of the video URL ($video → "video")
    framerate: float  # the config's rate: Label Studio's frame grid, whatever the file's
    rect_name: str  # from_name of the videorectangle results
    labels_name: str | None  # a <Labels> on the video, if any
    labels: tuple[str, ...]


def parse_video_config(config: str) -> VideoSchema | None:
    """The video controls of ``config``, or None when it labels no ``<Video>``.

    Raises :class:`LabelConfigError` for a ``<Video>`` without a ``<VideoRectangle>`` on it
    (this backend answers video tasks with tracked boxes).
    """
    try:
        li = LabelInterface(config)
    except Exception as exc:  # the SDK raises several XML/validation types
        raise LabelConfigError(f"label config is not valid XML: {exc}") from None
    videos = [o for o in li.objects if o.tag == "Video"]
    if not videos:
        return None
    rect = next(
        (
            c
            for c in li.controls
            if c.tag == "VideoRectangle" and c.to_name and c.to_name[0] in {v.name for v in videos}
        ),
        None,
    )
    if rect is None:
        raise LabelConfigError(
            "this project labels a <Video> but has no <VideoRectangle> on it: add "
            '<VideoRectangle name="box" toName="…"/> (see docs/box-prompts.md); Label Studio '
            "1.23 holds masks only on image sequences"
        )
    video = next(v for v in videos if v.name == rect.to_name[0])
    raw = str(video.attr.get("value") or "")
    key = raw[1:] if raw.startswith("$") else raw
    if not key:
        raise LabelConfigError(f"<Video name={video.name!r}> has no value")
    framerate = _framerate(video.attr.get("framerate"))
    labels = next(
        (c for c in li.controls if c.tag == "Labels" and c.to_name and c.to_name[0] == video.name),
        None,
    )
    return VideoSchema(
        video_name=video.name,
        video_key=key,
        framerate=framerate,
        rect_name=rect.name,
        labels_name=labels.name if labels is not None else None,
        labels=tuple(getattr(labels, "labels", None) or ()) if labels is not None else (),
    )


def _framerate(raw: Any) -> float:
    if raw in (None, ""):
        return DEFAULT_FRAMERATE
    try:
        rate = float(raw)
    except (TypeError, ValueError):
        raise LabelConfigError(f"<Video framerate={raw!r}> is not a number") from None
    if not math.isfinite(rate) or not 0 < rate <= 1000:
        raise LabelConfigError(f"<Video framerate={raw!r}> must be between 0 and 1000")
    return rate


@dataclass(frozen=True)
class VideoRegion:
    """One ``videorectangle`` region: an object, its label and its keyframes."""

    region_id: str
    label: str | None
    frames_count: int | None
    duration: float | None
    keyframes: tuple[Keyframe, ...] = field(default_factory=tuple)

    def boxes(self, width: int, height: int) -> dict[int, Box]:
        """Box prompts in pixels of ``width``×``height`` frames: the enabled keyframes."""
        out = {}
        for kf in self.keyframes:
            if kf.enabled:
                x0, y0, x1, y1 = kf.box(width, height).edges
                out[kf.index] = Box(x0, y0, x1, y1)
        return out


def video_regions(
    results: Iterable[Any], schema: VideoSchema, *, num_frames: int | None = None
) -> list[VideoRegion]:
    """The ``videorectangle`` regions of a context or annotation result, checked: every
    keyframe inside the frame, with a size, no rotation, on a frame of the video."""
    out = []
    for n, region in enumerate(results, 1):
        if not isinstance(region, Mapping) or region.get("type") != "videorectangle":
            continue
        if region.get("from_name") not in (schema.rect_name, None):
            continue
        rid = str(region.get("id") or f"#{n} of the result")[:80]
        value = region.get("value")
        if not isinstance(value, Mapping):
            raise PromptError(f"region {rid}: 'value' must be an object")
        sequence = value.get("sequence")
        if not isinstance(sequence, list) or not sequence:
            raise PromptError(f"region {rid}: value.sequence must be a non-empty list")
        frames_count = _int_or_none(value.get("framesCount"))
        limit = num_frames or frames_count
        keyframes = tuple(_keyframe(kf, rid, limit) for kf in sequence)
        labels = value.get("labels")
        label = labels[0] if isinstance(labels, list) and labels else None
        if label is not None and not isinstance(label, str):
            raise PromptError(f"region {rid}: value.labels must hold strings")
        out.append(
            VideoRegion(rid, label, frames_count, _float_or_none(value.get("duration")), keyframes)
        )
    return out


def _keyframe(kf: Any, rid: str, num_frames: int | None) -> Keyframe:
    if not isinstance(kf, Mapping):
        raise PromptError(f"region {rid}: every keyframe of value.sequence must be an object")
    frame = kf.get("frame")
    if isinstance(frame, bool) or not isinstance(frame, int) or frame < 1:
        raise PromptError(
            f"region {rid}: keyframe frame={str(frame)[:20]!r} is not a frame 1, 2, …"
        )
    if num_frames is not None and frame > num_frames:
        raise PromptError(
            f"region {rid}: keyframe on frame {frame} is past the end (the video has "
            f"{num_frames} frames at the config's framerate)"
        )
    values = {}
    for name in ("x", "y", "width", "height"):
        v = kf.get(name)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise PromptError(
                f"region {rid}: frame {frame}: {name}={str(v)[:20]!r} is not a number"
            )
        values[name] = float(v)
    enabled = kf.get("enabled", True) is not False
    if enabled and (values["width"] <= 0 or values["height"] <= 0):
        raise PromptError(f"region {rid}: frame {frame}: the box has no size")
    if enabled and (
        values["x"] < -1e-6
        or values["y"] < -1e-6
        or values["x"] + values["width"] > 100 + 1e-6
        or values["y"] + values["height"] > 100 + 1e-6
    ):
        raise PromptError(f"region {rid}: frame {frame}: the box reaches outside the frame")
    rotation = kf.get("rotation", 0) or 0
    if enabled and (not isinstance(rotation, (int, float)) or abs(float(rotation)) > 1e-6):
        raise PromptError(f"region {rid}: frame {frame}: rotated boxes are not supported")
    return Keyframe(frame - 1, enabled=enabled, rotation=0.0, **values)


def _int_or_none(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) and v > 0 else None


def _float_or_none(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def video_url(task: Mapping[str, Any], schema: VideoSchema) -> str:
    """The task's video URL (``task.data[<key>]``), checked like a frame URL."""
    data = task.get("data")
    url = data.get(schema.video_key) if isinstance(data, Mapping) else None
    if not isinstance(url, str) or not url.strip():
        raise TaskError(
            f"task {task.get('id')}: data has no {schema.video_key!r} video URL "
            f"(the labeling config reads ${schema.video_key})"
        )
    check_url(url, 0, task.get("id"))
    return url


def video_job_spec(
    task_id: int | None,
    key: SessionKey,
    url: str,
    config: str,
    results: list[Any],
    model_version: str,
) -> JobSpec:
    """What the job store keeps to run a video task's job (again, after a crash): the task's
    ``videorectangle`` results as Label Studio sent them and the session's key."""
    digest = hashlib.sha1(json.dumps(results, sort_keys=True, default=str).encode()).hexdigest()
    return JobSpec(
        task_id=task_id,
        key=f"video:{task_id}:{digest[:20]}",
        urls=[url],
        label_config=config,
        prompts={"video_results": results},
        answer_labels=[],
        model_version=model_version,
        session={"key": asdict(key)},
    )


def apply_regions(
    session: InteractiveSession,
    regions: Iterable[VideoRegion],
    schema: VideoSchema,
    size: tuple[int, int],
    *,
    replace_all: bool,
) -> dict[int, VideoRegion]:
    """Give the session one object per region (a stable id per region id) with its enabled
    keyframes as box prompts at ``size`` (W, H); returns the regions by object id. Objects of
    other labels stay (Label Studio sends one label's boxes) unless ``replace_all``; objects of
    the sent labels that were not sent are removed."""
    width, height = size
    by_oid: dict[int, VideoRegion] = {}
    for region in regions:
        oid = session.object_id(region.region_id)
        label = region.label or (schema.labels[0] if schema.labels else "object")
        session.set_object(oid, label, boxes=region.boxes(width, height))
        if oid in session.labels:
            by_oid[oid] = region
    # Label Studio sends every box of the applied label: a box of that label missing from the
    # request was deleted (with ``replace_all``, any box missing was)
    sent = {session.labels[o] for o in by_oid}
    for oid, label in list(session.labels.items()):
        if oid not in by_oid and (replace_all or label in sent):
            session.remove_object(oid)
    return by_oid


class TrackBuilder:
    """Collects a run's frames as boxes of the answered objects and builds the prediction:
    one ``videorectangle`` per object, compressed to the keyframes Label Studio needs —
    complete, or partial (the frames done so far)."""

    def __init__(
        self,
        labels: dict[int, str],
        schema: VideoSchema,
        regions: Mapping[int, VideoRegion],
        video: VideoInfo,
        options: TrackOptions | None = None,
        warning: str | None = None,
    ):
        self.labels = labels
        self.warning = warning  # e.g. the config's framerate disagrees with the file's
        self.schema = schema
        self.regions = regions
        self.video = video
        self.options = options or TrackOptions()
        self.done: dict[int, dict[int, TrackFrame]] = {}  # frame → obj_id → box and score
        self.keyframes: dict[int, dict[int, TrackFrame]] = {}

    def _frames(self, fp: FramePrediction) -> dict[int, TrackFrame]:
        return {
            o: TrackFrame(fp.index, mask_box(m), float(fp.scores.get(o, 0.0)))
            for o, m in fp.masks.items()
            if o in self.labels
        }

    def add(self, fp: FramePrediction) -> None:
        self.done[fp.index] = self._frames(fp)

    def add_keyframe(self, fp: FramePrediction) -> None:
        self.keyframes[fp.index] = self._frames(fp)

    def prediction(self, model_version: str) -> dict[str, Any]:
        frames = {**self.keyframes, **self.done}
        tracks = []
        for oid, label in sorted(self.labels.items()):
            region = self.regions.get(oid)
            seq = [frames[f][oid] for f in sorted(frames) if oid in frames[f]]
            tracks.append(
                ObjectTrack(
                    region_id=region.region_id if region else f"tam-o{oid}",
                    label=label,
                    frames=seq,
                    keyframes=region.keyframes if region else (),
                )
            )
        results = track_results(
            tracks,
            from_name=self.schema.rect_name,
            to_name=self.schema.video_name,
            video=self.video,
            options=self.options,
        )
        if self.warning:  # shown with the region in Label Studio's editor (meta.text)
            for r in results:
                r.setdefault("meta", {})["text"] = self.warning
        return {
            "result": results,
            "score": round(prediction_score(results), 4),
            "model_version": model_version,
        }
