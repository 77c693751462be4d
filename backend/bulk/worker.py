"""One engine, many tasks: what a bulk worker does for one task id, without Ray.

The worker reads the task from Label Studio itself, chooses its prompts
(:func:`backend.ls.batch.choose_prompts`), skips it when our prediction of this model version
already carries the same prompt signature, otherwise fetches the frames itself, runs the
server's session code (:mod:`backend.ls.batch`) and writes one prediction (one API call, then
our older ones of the same model version are deleted). It returns a small
:class:`~backend.bulk.records.TaskResult`; masks never travel back to the driver.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable
from typing import Any

from backend.bulk.records import Failure, Outcome, TaskResult
from backend.config import Settings
from backend.engine import Engine, EngineError, load_engine
from backend.frames import MediaError
from backend.ls.batch import (
    ChosenPrompts,
    PromptSource,
    choose_prompts,
    no_deadline,
    prediction_signature,
    prompt_signature,
    run_to_end,
    sequence_run,
    sign_prediction,
    video_run,
)
from backend.ls.client import (
    LabelStudioConnection,
    LabelStudioError,
    ProjectAPI,
    replace_prediction,
)
from backend.ls.labelconfig import ProjectSchema
from backend.ls.media import MediaFetcher, TaskFrameCache, VideoFiles
from backend.ls.prompts import parse_context
from backend.ls.tasks import frame_urls, parse_project, session_key
from backend.ls.video_task import VideoSchema, video_job_spec, video_url
from backend.pipeline import same_size
from backend.runs import SessionRun
from backend.session import InteractiveSession

log = logging.getLogger(__name__)

# a fetch that timed out, could not connect or met a server error may work the next time
_TRANSIENT_MEDIA = re.compile(r"MEDIA_TIMEOUT_S|VIDEO_TIMEOUT_S|unreachable|HTTP 5\d\d")


def classify(exc: BaseException) -> Failure:
    """Whether another attempt at a task that raised ``exc`` can help."""
    if isinstance(exc, MediaError):
        return Failure.TRANSIENT if _TRANSIENT_MEDIA.search(str(exc)) else Failure.PERMANENT
    if isinstance(exc, LabelStudioError):
        text = str(exc)
        return Failure.PERMANENT if "HTTP 404" in text or "refused" in text else Failure.TRANSIENT
    if isinstance(exc, (ValueError, KeyError, TypeError, EngineError)):
        return Failure.PERMANENT  # bad prompts, bad config, bad task data
    return Failure.TRANSIENT  # OSError, MemoryError, anything unexpected: try once more


class TaskWorker:
    """Builds its engine once; :meth:`process` runs one task. ``name`` tags its results."""

    def __init__(
        self,
        settings: Settings,
        label_config: str,
        *,
        name: str = "worker",
        engine_factory: Callable[[], Engine] | None = None,
    ):
        self.settings = settings
        self.name = name
        self.label_config = label_config
        self.schema = parse_project(label_config, settings.label_config_max_bytes)
        engine, engine_name, error = load_engine(settings, engine_factory)
        if engine is None:
            raise EngineError(error or f"engine {engine_name} failed to load")
        self.engine = engine
        self.connection = LabelStudioConnection(settings)
        self.api = ProjectAPI(self.connection, verify=settings.verify_ssl)
        fetcher = MediaFetcher(settings, self.connection)
        self.frames = TaskFrameCache(fetcher, max_tasks=1, frames_per_task=max(
            settings.frame_cache_size, 1), max_pixels=settings.max_frame_pixels)  # fmt: skip
        # its own folder: another worker on the node trims its videos, never this one's
        folder = settings.model_dir / "videos" / f"bulk-{name}-{os.getpid()}"
        self.videos = VideoFiles(fetcher, folder, keep=2,
                                 max_bytes=settings.max_video_bytes,
                                 timeout_s=settings.video_timeout_s)  # fmt: skip

    @property
    def model_version(self) -> str:
        return self.engine.model_version

    def process(self, task_id: int, *, force: bool = False) -> TaskResult:
        """Run one task; never raises for a task's own problem (the result says why)."""
        t0, cpu0 = time.perf_counter(), time.process_time()
        result = TaskResult(task_id, Outcome.FAILED, worker=self.name)
        try:
            self._process(task_id, result, force=force)
        except Exception as exc:  # reported with its reason, never stops the run
            result.outcome, result.failure = Outcome.FAILED, classify(exc)
            result.reason = _one_line(exc)
            log.warning("task %s failed (%s): %s", task_id, result.failure.value, result.reason)
        result.seconds = round(time.perf_counter() - t0, 3)
        result.cpu_s = round(time.process_time() - cpu0, 3)
        return result

    def _process(self, task_id: int, result: TaskResult, *, force: bool) -> None:
        t0 = time.perf_counter()
        task = self.api.task(task_id)
        chosen = choose_prompts(task, self.schema)
        if chosen.source is PromptSource.NONE:
            chosen = choose_prompts(task, self.schema, self.api.drafts(task_id))
        result.source = chosen.source.value
        result.read_s = round(time.perf_counter() - t0, 3)
        if chosen.source is PromptSource.NONE:
            result.outcome = Outcome.NO_PROMPTS
            result.reason = "no clicks, boxes or painted masks in an annotation or draft"
            return
        signature = prompt_signature(task, self.schema, chosen.result,
                                     max_frames=self.settings.max_frames)  # fmt: skip
        result.signature = signature
        if not force and self._already_done(task, signature):
            result.outcome, result.reason = Outcome.SKIPPED, "same prompts and model version"
            return
        t1 = time.perf_counter()
        run = self._run(task, chosen)
        result.computed = run_to_end(self.engine, run)
        result.frames = run.session.num_frames
        prediction = sign_prediction(run.out.prediction(self.model_version), signature)
        t2 = time.perf_counter()
        result.compute_s = round(t2 - t1, 3)
        result.prediction_id = replace_prediction(
            self.connection, task_id, prediction, model_version=self.model_version
        )
        result.write_s = round(time.perf_counter() - t2, 3)
        result.outcome = Outcome.DONE

    def _already_done(self, task: dict[str, Any], signature: str) -> bool:
        """Our newest prediction of this model version carries ``signature``. Older ones of
        ours left beside it (a run stopped between writing and clearing) are deleted."""
        ours = [p for p in task.get("predictions") or [] if isinstance(p, dict)
                and p.get("model_version") == self.model_version]  # fmt: skip
        if not ours:
            return False
        newest = max(ours, key=lambda p: p.get("id") or 0)
        if prediction_signature(newest) != signature:
            return False
        for old in ours:
            if old is not newest and isinstance(old.get("id"), int):
                self.connection.client.predictions.delete(id=old["id"])
        return True

    def _run(self, task: dict[str, Any], chosen: ChosenPrompts) -> SessionRun:
        """The task's session with the chosen prompts, planned and keyframes segmented: what
        the server does for a batch ``/predict`` of this annotation."""
        tid, deadline = int(task["id"]), no_deadline()

        def busy() -> str:
            return "the engine stayed busy"

        if isinstance(self.schema, VideoSchema):
            url = video_url(task, self.schema)
            key = session_key(task, [url, f"framerate={self.schema.framerate:g}"],
                              mode="video-batch")  # fmt: skip
            spec = video_job_spec(tid, key, url, self.label_config, chosen.result,
                                  self.model_version)  # fmt: skip
            return video_run(self.engine, spec, self.videos, InteractiveSession,
                             max_pixels=self.settings.max_frame_pixels, deadline=deadline,
                             busy=busy, replace_all=True)  # fmt: skip
        schema: ProjectSchema = self.schema
        urls = frame_urls(task, schema, self.settings.max_frames)
        prompts = parse_context({"result": chosen.result}, schema, len(urls))
        key = session_key(task, urls, mode="batch")
        frames = same_size(self.frames.frames(tid, urls))
        session = InteractiveSession(key, len(urls))
        with session.transaction():
            return sequence_run(self.engine, session, frames, prompts, schema, key,
                                deadline=deadline, busy=busy, replace_all=True)  # fmt: skip


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 400 else text[:400] + "…"
