"""A task's prompts → a planned session run → a prediction: the steps the server's batch
``/predict`` (``model.py``, ``model_video.py``) and ``python -m backend bulk`` share, so both
give the same masks for the same annotation.

Which prompts a batch run uses (:func:`choose_prompts`): the task's newest submitted
annotation when it holds any; otherwise its newest draft that does.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from enum import Enum
from typing import Any

from backend.engine import Engine
from backend.frames import FrameSource
from backend.jobs import JobSpec
from backend.ls.labelconfig import ProjectSchema
from backend.ls.media import VideoFiles
from backend.ls.prompts import PromptSet, parse_context, prompts_to_json
from backend.ls.results import PredictionBuilder
from backend.ls.tasks import apply_prompts, frame_urls, newest_result
from backend.ls.tracks import VideoInfo
from backend.ls.video_task import (
    TrackBuilder,
    VideoSchema,
    apply_regions,
    parse_video_config,
    video_regions,
    video_url,
)
from backend.runs import SessionRun, prepare_run
from backend.session import InteractiveSession, SessionKey, media_fingerprint
from backend.video_ls import LSVideoFrameSource

log = logging.getLogger(__name__)

SessionFor = Callable[[SessionKey, int], InteractiveSession]  # a store's get, or a fresh one
SIGNATURE_KEY = "tam_prompts"  # the prompt signature in a prediction's first region's meta


class PromptSource(Enum):
    ANNOTATION = "annotation"
    DRAFT = "draft"
    NONE = "none"


@dataclass(frozen=True)
class ChosenPrompts:
    """The result a batch run reads its prompts from, and where it came from."""

    source: PromptSource
    result: list[Any]
    item_id: int | None = None  # the annotation's or draft's id


def prepare_session_run(
    engine: Engine,
    session: InteractiveSession,
    frames: FrameSource,
    make_out: Callable[[dict[int, str]], Any],
    answer: Iterable[int],
    key: SessionKey,
    *,
    deadline: float,
    busy: Callable[[], str],
) -> SessionRun:
    """The session's plan with its keyframes segmented, and the frames it reuses, collected
    by ``make_out(labels of the answered objects)``."""
    prepared = prepare_run(engine, session, frames, answer=answer, busy=busy,
                           cache_key=key.cache_key, deadline=deadline)  # fmt: skip
    out = make_out({o: session.labels[o] for o in sorted(prepared.answer)})
    for fp in prepared.reused(out.labels):
        out.add(fp)
    for fp in prepared.keyframe_predictions():
        out.add_keyframe(fp)
    return SessionRun(session, prepared, frames, key.cache_key, out)


def sequence_builder(schema: ProjectSchema) -> Callable[[dict[int, str]], PredictionBuilder]:
    """The collector of an image-sequence task's answer: brush regions per frame."""
    return lambda labels: PredictionBuilder(labels, schema)


def sequence_run(
    engine: Engine,
    session: InteractiveSession,
    frames: FrameSource,
    prompts: PromptSet,
    schema: ProjectSchema,
    key: SessionKey,
    *,
    deadline: float,
    busy: Callable[[], str],
    replace_all: bool,
    extend: set[str] | frozenset[str] = frozenset(),
) -> SessionRun:
    """An image-sequence task's prompts given to its session (call inside
    ``session.transaction()``) and the run planned with its keyframes segmented."""
    answer = apply_prompts(session, prompts, schema, frames, replace_all=replace_all,
                           extend=extend)  # fmt: skip
    return prepare_session_run(engine, session, frames, sequence_builder(schema), answer, key,
                               deadline=deadline, busy=busy)  # fmt: skip


def video_run(
    engine: Engine,
    spec: JobSpec,
    videos: VideoFiles,
    session_for: SessionFor,
    *,
    max_pixels: int | None,
    deadline: float,
    busy: Callable[[], str],
    replace_all: bool,
) -> SessionRun:
    """A ``<Video>`` task's job: the video, its session with the regions' boxes, and the run
    planned (``spec`` from :func:`backend.ls.video_task.video_job_spec`)."""
    schema = parse_video_config(spec.label_config)
    path = videos.path(spec.urls[0], task_id=spec.task_id)
    source = LSVideoFrameSource(path, schema.framerate, max_pixels=max_pixels)
    if source.rate_mismatch:
        log.warning("task %s: %s", spec.task_id, source.rate_mismatch)
    regions = video_regions(spec.prompts["video_results"], schema, num_frames=len(source))
    key = SessionKey(**spec.session["key"])
    session = session_for(key, len(source))
    info = VideoInfo(source.width, source.height, len(source), source.duration, schema.framerate)
    with session.transaction():
        by_oid = apply_regions(session, regions, schema, (source.width, source.height),
                               replace_all=replace_all)  # fmt: skip
        out = functools.partial(
            TrackBuilder, schema=schema, regions=by_oid, video=info,
            warning=source.rate_mismatch,
        )  # fmt: skip
        return prepare_session_run(engine, session, source, out, list(by_oid), key,
                                   deadline=deadline, busy=busy)  # fmt: skip


def run_to_end(engine: Engine, run: SessionRun, *, should_stop=None) -> int:
    """Propagate ``run`` in this thread, every finished frame to its collector; returns the
    frames computed (what a front end without a time budget or job store uses)."""
    computed = 0
    for fp in run.session.propagate(engine, run.frames, run.prepared, cache_key=run.cache_key,
                                    should_stop=should_stop):  # fmt: skip
        run.out.add(fp)
        computed += 1
    return computed


def no_deadline(hours: float = 24.0) -> float:
    """A deadline far enough away for a run nobody waits for."""
    return time.monotonic() + hours * 3600


# --------------------------------------------------------------------------- choosing prompts


def _has_prompts(result: list[Any], schema: ProjectSchema | VideoSchema) -> bool:
    if isinstance(schema, VideoSchema):
        return bool(video_regions(result, schema))
    return not parse_context({"result": result}, schema, 1 << 30).is_empty()


def choose_prompts(
    task: Mapping[str, Any],
    schema: ProjectSchema | VideoSchema,
    drafts: Iterable[Any] = (),
) -> ChosenPrompts:
    """Where a batch run reads the task's prompts: its newest annotation that was not
    cancelled (what the server's batch ``/predict`` reads) when that holds any prompt; else
    the newest draft (of any annotator) that does; else none."""
    result = newest_result(dict(task))
    if result and _has_prompts(result, schema):
        return ChosenPrompts(PromptSource.ANNOTATION, result, _newest_annotation_id(task))
    usable = [d for d in drafts if isinstance(d, dict) and isinstance(d.get("result"), list)]
    for draft in sorted(usable, key=lambda d: str(d.get("updated_at") or ""), reverse=True):
        if draft["result"] and _has_prompts(draft["result"], schema):
            return ChosenPrompts(PromptSource.DRAFT, draft["result"], draft.get("id"))
    return ChosenPrompts(PromptSource.NONE, [])


def _newest_annotation_id(task: Mapping[str, Any]) -> int | None:
    annotations = [a for a in task.get("annotations") or [] if isinstance(a, dict)]
    annotations = [a for a in annotations if not a.get("was_cancelled")]
    if not annotations:
        return None
    newest = max(annotations, key=lambda a: str(a.get("updated_at") or a.get("id") or ""))
    return newest.get("id") if isinstance(newest.get("id"), int) else None


# --------------------------------------------------------------------------- signatures


def prompt_signature(
    task: Mapping[str, Any],
    schema: ProjectSchema | VideoSchema,
    result: list[Any],
    *,
    max_frames: int,
) -> str:
    """A stable digest of the prompts a batch run would use and of the task's media (frame
    URL list, or video URL and framerate): equal prompts on equal frames, equal signature."""
    if isinstance(schema, VideoSchema):
        regions = [asdict(r) for r in video_regions(result, schema)]
        media = media_fingerprint([video_url(task, schema), f"framerate={schema.framerate:g}"])
        payload: Any = {"regions": regions}
    else:
        urls = frame_urls(dict(task), schema, max_frames)
        prompts = parse_context({"result": result}, schema, len(urls))
        media = media_fingerprint(urls)
        payload = prompts_to_json(prompts)
    text = json.dumps({"p": payload, "m": media}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def sign_prediction(prediction: dict[str, Any], signature: str) -> dict[str, Any]:
    """The prediction with ``signature`` in its first region's ``meta`` (Label Studio 1.23
    stores a prediction's result as sent, so it comes back on the next read)."""
    result = [dict(r) for r in prediction.get("result") or []]
    if result:
        result[0]["meta"] = {**(result[0].get("meta") or {}), SIGNATURE_KEY: signature}
    return {**prediction, "result": result}


def prediction_signature(prediction: Mapping[str, Any]) -> str | None:
    """The signature :func:`sign_prediction` stored (None when there is none)."""
    for region in prediction.get("result") or []:
        meta = region.get("meta") if isinstance(region, Mapping) else None
        if isinstance(meta, Mapping) and isinstance(meta.get(SIGNATURE_KEY), str):
            return meta[SIGNATURE_KEY]
    return None
