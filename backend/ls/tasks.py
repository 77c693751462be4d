"""Label Studio tasks → what a session needs: frame URLs, its identity, its prompts."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import numpy as np

from backend.frames import FrameSource
from backend.jobs import JobSpec
from backend.ls import rle
from backend.ls.labelconfig import ProjectSchema, check_config_size, parse_label_config
from backend.ls.prompts import PromptSet, parse_context, prompts_to_json, to_object_prompts
from backend.session import InteractiveSession, SessionKey, media_fingerprint

if TYPE_CHECKING:
    from backend.ls.video_task import VideoSchema


class TaskError(ValueError):
    """A task in the request cannot be served; the message names the task and the field."""


@dataclass(frozen=True)
class PredictRequest:
    """A ``/predict`` body, checked: the tasks, the project's config and the interactive
    context (None for batch predictions)."""

    tasks: list[Any]
    config: str
    schema: ProjectSchema | VideoSchema
    context: dict[str, Any] | None


def read_predict(body: dict[str, Any], *, max_config_bytes: int) -> PredictRequest:
    tasks, config = body.get("tasks"), body.get("label_config")
    if not isinstance(tasks, list) or not tasks:
        raise TaskError("predict: 'tasks' must be a non-empty list")
    if not isinstance(config, str):
        raise TaskError("predict: 'label_config' (the project's labeling config) is missing")
    params = body.get("params") or {}
    if not isinstance(params, dict):
        raise TaskError("predict: 'params' must be an object")
    context = params.get("context") or None
    tasks = tasks[:1] if context else tasks  # LS uses only results[0] of an interactive answer
    return PredictRequest(tasks, config, parse_project(config, max_config_bytes), context)


def parse_project(config: str, max_bytes: int) -> ProjectSchema | VideoSchema:
    """The project's form: an image-sequence project (masks) or a ``<Video>`` one (boxes)."""
    from backend.ls.video_task import parse_video_config  # it builds on this module

    check_config_size(config, max_bytes)
    return parse_video_config(config) or parse_label_config(config, max_bytes=max_bytes)


def newest_result(task: dict[str, Any]) -> list[Any]:
    """The result of the task's newest annotation that was not cancelled ([] when none)."""
    annotations = [a for a in task.get("annotations") or [] if isinstance(a, dict)]
    annotations = [a for a in annotations if not a.get("was_cancelled")]
    if not annotations:
        return []
    newest = max(annotations, key=lambda a: str(a.get("updated_at") or a.get("id") or ""))
    result = newest.get("result") or []
    return result if isinstance(result, list) else []


def task_prompts(
    task: Any, schema: ProjectSchema, context: dict[str, Any] | None, max_frames: int
) -> tuple[list[str], PromptSet]:
    """A task's frame URLs and its prompts: the interactive context's (which must hold some),
    or for batch predictions its newest annotation's (possibly none)."""
    if not isinstance(task, dict):
        raise TaskError("predict: each task must be an object")
    urls = frame_urls(task, schema, max_frames)
    if context is None:
        return urls, annotation_prompts(task, schema, len(urls))
    prompts = parse_context(context, schema, len(urls))
    if prompts.is_empty():
        boxes = f" or boxes of <RectangleLabels name={schema.rectangle_name!r}>"
        raise TaskError(
            "interactive context has no keypoints or brush masks of "
            f"<KeyPointLabels name={schema.keypoint_name!r}>"
            + (boxes if schema.rectangle_name else "")
        )
    return urls, prompts


def job_spec(
    task_id: int | None,
    key: SessionKey,
    urls: list[str],
    config: str,
    prompts: PromptSet,
    model_version: str,
    *,
    session: InteractiveSession | None = None,
    labels: dict[int, str] | None = None,
) -> JobSpec:
    """What the job store keeps to run a task's job again after a crash: the session's
    prompts (or, for a job deferred before its session was set up, Label Studio's)."""
    if session is None:
        return JobSpec(task_id, f"deferred:{key}:{prompts.fingerprint()}", list(urls), config,
                       prompts_to_json(prompts), [], model_version, {"key": asdict(key)})  # fmt: skip
    return JobSpec(
        task_id=task_id,
        key=session.request_key(labels or {}, model_version),
        urls=list(urls),
        label_config=config,
        prompts=prompts_to_json(prompts),
        answer_labels=sorted((labels or {}).values()),
        model_version=model_version,
        session={"key": asdict(key), "prompts": session.export_prompts()},
    )


def frame_urls(task: dict[str, Any], schema: ProjectSchema, max_frames: int) -> list[str]:
    """The task's frame URLs (an image-sequence task's list, or one image)."""
    tid = task.get("id")
    data = task.get("data")
    if not isinstance(data, dict):
        raise TaskError(f"task {tid}: no 'data' object")
    value = data.get(schema.frames_key)
    if value is None:
        raise TaskError(
            f"task {tid}: data has no {schema.frames_key!r} "
            f"(the labeling config reads ${schema.frames_key})"
        )
    urls = value if isinstance(value, list) else [value]
    if not urls:
        raise TaskError(f"task {tid}: {schema.frames_key!r} is an empty list")
    if not all(isinstance(u, str) and u.strip() for u in urls):
        raise TaskError(f"task {tid}: every item of {schema.frames_key!r} must be a URL string")
    for i, url in enumerate(urls):
        check_url(url, i, tid)
    if len(urls) > max_frames:
        raise TaskError(
            f"task {tid}: {len(urls)} frames exceed MAX_FRAMES={max_frames}; "
            "split the video into shorter tasks"
        )
    return urls


def task_id(task: dict[str, Any]) -> int | None:
    """The task's id (None when it has none); an id beyond 64 bits is refused."""
    tid = task.get("id")
    if not isinstance(tid, int) or isinstance(tid, bool):
        return None
    if not -(2**63) <= tid < 2**63:
        raise TaskError(f"task id {str(tid)[:30]} is out of range (a 64-bit integer is expected)")
    return tid


def check_url(url: str, index: int, tid: Any) -> None:
    """A frame URL must be text a URL can hold: no lone surrogates, no NUL or control
    characters (also not percent-encoded)."""
    try:
        url.encode("utf-8")
    except UnicodeEncodeError:
        raise TaskError(f"task {tid}: frame {index} URL is not valid Unicode text") from None
    decoded = unquote(url)
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in url + decoded):
        raise TaskError(f"task {tid}: frame {index} URL contains control characters")


def session_key(task: dict[str, Any], urls: list[str], *, mode: str) -> SessionKey:
    """Identity of a task's session: where it comes from, its project and id, its frames.

    Two Label Studio instances can share task ids but never a task's creation time, so
    ``created_at`` (with ``mode``: interactive clicks and batch annotations are kept
    apart) tells them apart; a task whose frame list changed gets another key.
    """
    project = task.get("project")
    return SessionKey(
        origin=f"{mode}:{str(task.get('created_at') or '')[:64]}",
        project=project if isinstance(project, int) else None,
        task=task_id(task),
        media=media_fingerprint(urls),
    )


def annotation_prompts(task: dict[str, Any], schema: ProjectSchema, num_frames: int) -> PromptSet:
    """Keyframes for batch predict: the newest annotation's keypoints and brush masks."""
    return parse_context({"result": newest_result(task)}, schema, num_frames)


def apply_prompts(
    session: InteractiveSession,
    prompts: PromptSet,
    schema: ProjectSchema,
    frames: FrameSource,
    *,
    replace_all: bool = False,
    extend: set[str] | frozenset[str] = frozenset(),
) -> list[int]:
    """Give the session every label's prompts from ``prompts`` (relative → pixels of the
    frames, brush RLE → masks); returns their object ids. Labels not in ``prompts`` keep
    their earlier prompts (Label Studio sends only the clicked label's points) unless
    ``replace_all``. Labels in ``extend`` keep their earlier keyframes too, the frames in
    ``prompts`` replacing theirs (see :func:`accepted_labels`)."""
    first = min(prompts.keyframes)
    height, width = frames[first].shape[:2]  # the first keyframe is fetched anyway

    def decode(data, height, width) -> np.ndarray:
        return rle.decode(data, height, width)

    objects = to_object_prompts(prompts, schema, (width, height), decode)
    if replace_all:
        for oid in set(session.labels) - {o.obj_id for o in objects}:
            session.remove_object(oid)
    earlier = {o.obj_id: o for o in session.prompts()} if extend else {}
    for obj in objects:
        old = earlier.get(obj.obj_id) if obj.label in extend else None
        if old is not None:
            new_frames = set(obj.keyframes)
            for name in ("clicks", "masks", "boxes"):
                kept = {k: v for k, v in getattr(old, name).items() if k not in new_frames}
                setattr(obj, name, {**kept, **getattr(obj, name)})
        session.set_object(
            obj.obj_id, obj.label, clicks=obj.clicks, masks=obj.masks, boxes=obj.boxes
        )
    return [o.obj_id for o in objects]


_OUR_REGION = re.compile(r"^tam-o\d+-f\d+$")


def accepted_labels(task: dict[str, Any]) -> set[str]:
    """Labels whose suggestions of ours the annotator accepted (regions with our ids in the
    task's drafts or annotations). Label Studio drops a label's clicks when its suggestions
    are accepted, so a later correction arrives alone: for these labels the earlier clicks are
    kept (:func:`apply_prompts` ``extend``) instead of read as removed."""
    out: set[str] = set()
    for item in (*(task.get("drafts") or []), *(task.get("annotations") or [])):
        result = item.get("result") if isinstance(item, dict) else None
        for region in result if isinstance(result, list) else []:
            if not isinstance(region, dict) or not _OUR_REGION.match(str(region.get("id", ""))):
                continue
            value = region.get("value")
            labels = value.get("brushlabels") if isinstance(value, dict) else None
            if isinstance(labels, list) and labels and isinstance(labels[0], str):
                out.add(labels[0])
    return out
