"""The ``<Video>`` task form of the Label Studio adapter: ``videorectangle`` boxes in, one
tracked box per object out (masks on every frame in between, by the same session and jobs).

Label Studio 1.23 sends a video task's boxes on three paths (verified on the real UI, see
docs/video-tasks.md): an interactive ``/predict`` when a label is applied to a box (the box
and every other box of that label), a batch ``/predict`` with the task's annotations, and
``ANNOTATION_CREATED``/``ANNOTATION_UPDATED`` webhooks after Submit/Update.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from backend.jobs import Job, JobSpec
from backend.ls.batch import video_run
from backend.ls.tasks import PredictRequest, newest_result, parse_project, session_key, task_id
from backend.ls.video_task import (
    VideoSchema,
    video_job_spec,
    video_regions,
    video_url,
)
from backend.runs import SessionRun
from backend.session import PlanKind

log = logging.getLogger("tam.model")


class VideoTasks:
    """Mixed into :class:`model.TrackAnythingModel` (it provides the jobs, sessions, videos,
    settings and the shared ``_prepare`` / ``_unchanged`` / ``_empty`` steps)."""

    def _start_video(self, task: Any, req: PredictRequest, deadline: float, defer: bool):
        """A ``<Video>`` task: its boxes → masks on every frame → one tracked box per object.
        After Submit, Label Studio sends an empty context: that gets no result."""
        schema, context = req.schema, req.context
        url, tid = video_url(task, schema), task_id(task)
        results = context.get("result") if context is not None else newest_result(task)
        if not video_regions(results or [], schema):
            return self._empty() if context is not None else None
        mode = "video" if context is not None else "video-batch"
        key = session_key(task, [url, f"framerate={schema.framerate:g}"], mode=mode)
        spec = video_job_spec(tid, key, url, req.config, results, self.model_version)
        if defer:
            return self.jobs.submit(spec)
        work = self._video_work(spec, deadline, replace_all=context is None)
        if work.prepared.plan.kind is PlanKind.NONE:
            return self._unchanged(work, tid)
        key = work.session.request_key(work.out.labels, self.model_version)
        return self.jobs.submit(dataclasses.replace(spec, key=key), work)

    def _video_work(self, spec: JobSpec, deadline: float, *, replace_all: bool) -> SessionRun:
        """The video, its task's session with the regions' boxes, and the run planned."""
        return video_run(self.engine, spec, self.videos, self.sessions.get,
                         max_pixels=self.settings.max_frame_pixels, deadline=deadline,
                         busy=self._busy, replace_all=replace_all)  # fmt: skip

    def _video_event(self, body: dict[str, Any]) -> Job | None:
        """A submitted or updated ``<Video>`` annotation: its tracks as a prediction, written
        to Label Studio by a background job (the webhook is answered at once)."""
        project, task, annotation = (body.get(k) for k in ("project", "task", "annotation"))
        if not all(isinstance(x, dict) for x in (project, task, annotation)):
            return None
        config = project.get("label_config")
        if self.engine is None or not isinstance(config, str) or "<Video" not in config:
            return None
        try:
            schema = parse_project(config, self.settings.label_config_max_bytes)
            if not isinstance(schema, VideoSchema):
                return None
            req = PredictRequest([], config, schema, None)
            job = self._start_video({**task, "annotations": [annotation]}, req, 0.0, True)
        except ValueError as exc:  # a bad annotation: nothing to predict, say why in the log
            log.warning("webhook for task %s ignored: %s", task.get("id"), exc)
            return None
        if isinstance(job, Job):
            job.state.deliver_to_ls = self.connection.configured
        return job if isinstance(job, Job) else None
