"""The Label Studio adapter: Label Studio JSON ⇄ interactive-session calls.

Each task has an :class:`~backend.session.InteractiveSession` keyed by what the task is
(instance, project, task id, frames); the session decides what a click recomputes. This
module reads requests, hands prompts to the session, runs the plan within the time budget
(:mod:`backend.runs`) and turns masks into Label Studio predictions.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from backend import __version__
from backend.config import Settings
from backend.engine import Engine, EngineError, load_engine
from backend.jobs import Job, JobManager, JobSpec, JobStatus, JobStore
from backend.ls.batch import prepare_session_run, sequence_builder, sequence_run
from backend.ls.client import LabelStudioConnection, replace_prediction
from backend.ls.labelconfig import parse_label_config
from backend.ls.media import MediaFetcher, TaskFrameCache, VideoFiles
from backend.ls.prompts import prompts_from_json
from backend.ls.results import PredictionBuilder, low_quality_frames
from backend.ls.tasks import (
    PredictRequest,
    accepted_labels,
    apply_prompts,
    job_spec,
    parse_project,
    read_predict,
    session_key,
    task_id,
    task_prompts,
)
from backend.ls.video_task import (
    TrackBuilder,
    VideoSchema,
)
from backend.pipeline import same_size
from backend.runs import SessionRun, propagate_run
from backend.server.errors import RequestError
from backend.server.metrics import Metrics
from backend.session import PlanKind, SessionKey, SessionStore
from model_video import VideoTasks

log = logging.getLogger("tam.model")
EVENTS = {"ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_DELETED", "ANNOTATION_DELETED"}
Work = SessionRun[PredictionBuilder | TrackBuilder]  # a job's payload: the run, output so far


class TrackAnythingModel(VideoTasks):
    """Serves /setup, /predict, /webhook, /health and /versions for one engine (built once; a
    broken checkpoint is reported by /health and every /predict, never replaced)."""

    def __init__(
        self,
        settings: Settings,
        *,
        engine_factory: Callable[[], Engine] | None = None,
        frames: TaskFrameCache | None = None,
        metrics: Metrics | None = None,
    ):
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.connection = LabelStudioConnection(settings)
        self.frames = frames or TaskFrameCache(
            MediaFetcher(settings, self.connection),
            frames_per_task=settings.frame_cache_size,
            max_pixels=settings.max_frame_pixels,
        )
        self.videos = VideoFiles(self.frames.fetcher, settings.model_dir / "videos",
                                 max_bytes=settings.max_video_bytes,
                                 timeout_s=settings.video_timeout_s)  # fmt: skip
        self.sessions = SessionStore(
            int(settings.session_cache_mb * 2**20),
            reach_back=settings.correction_reach == "back",
        )
        self.engine, self.engine_name, self.engine_error = load_engine(settings, engine_factory)
        store = JobStore(settings.model_dir / "jobs.sqlite3")
        self.jobs: JobManager[Work] = JobManager(
            store, self._run_job, writer=self._write_to_ls, workers=settings.job_workers
        )
        if self.engine is not None:
            self.jobs.resume_interrupted()

    # ------------------------------------------------------------------ info endpoints
    @property
    def model_version(self) -> str:
        return self.engine.model_version if self.engine else f"tam-{self.engine_name}-{__version__}"

    def health(self) -> dict[str, Any]:
        """UP only while the engine is loaded and the job store works (else 503 with why)."""
        s = self.settings
        store_error = self.jobs.store.check()
        body: dict[str, Any] = {
            "status": "UP" if self.engine is not None and store_error is None else "ERROR",
            "engine": self.engine_name,
            "model_version": self.model_version,
            "checkpoints": {
                "sam": _exists(s.sam_checkpoint),
                "xmem": _exists(s.xmem_checkpoint),
                "sam2": _exists(s.sam2_checkpoint),
            },
            "device": s.device,
        }
        errors = [e for e in (self.engine_error, store_error) if e]
        if errors:
            body["error"] = "; ".join(errors)
        return body

    def versions(self) -> dict[str, Any]:
        return {"versions": [self.model_version]}

    def setup(self, body: dict[str, Any]) -> dict[str, Any]:
        schema_xml = body.get("schema")
        if schema_xml is not None:
            if not isinstance(schema_xml, str):
                raise RequestError("setup: 'schema' must be the labeling config (a string)")
            parse_project(schema_xml, self.settings.label_config_max_bytes)  # clear errors
        return {"model_version": self.model_version}

    def webhook(self, body: dict[str, Any]) -> dict[str, Any]:
        """Events are acknowledged; sessions notice changed prompts or frames by themselves."""
        action = body.get("action")
        if action == "START_TRAINING":
            return {"status": "ok", "detail": "this backend does not train; nothing to do"}
        if not isinstance(action, str) or action not in EVENTS:
            return {"status": "ignored", "action": str(action)[:100]}
        job = (
            self._video_event(body)
            if action in ("ANNOTATION_CREATED", "ANNOTATION_UPDATED")
            else None
        )
        return {"status": "ok", "action": action, **({"job": job.state.id} if job else {})}

    # ------------------------------------------------------------------ predict
    def predict(self, body: dict[str, Any]) -> dict[str, Any]:
        if self.engine is None:
            raise EngineError(self.engine_error or "engine not loaded")
        deadline = time.monotonic() + self.settings.predict_budget_s
        req = read_predict(body, max_config_bytes=self.settings.label_config_max_bytes)
        pending = []
        for task in req.tasks:  # batch tasks past the budget go straight to background jobs
            late = req.context is None and pending and time.monotonic() > deadline
            pending.append(self._start(task, req, deadline, defer=bool(late)))
        if all(p is None for p in pending):  # nothing to predict: Label Studio stores nothing
            return {"results": []}
        return {"results": [self._answer(p or self._empty(), deadline) for p in pending]}

    def _start(self, task: Any, req: PredictRequest, deadline: float, defer: bool = False):
        """Hand a task's prompts to its session, segment the keyframes and start propagating
        (``defer``: all of it in a background job). Returns a finished prediction, the
        :class:`Job` for :meth:`_answer`, or None when the task has no prompts."""
        if isinstance(req.schema, VideoSchema):
            return self._start_video(task, req, deadline, defer)
        schema, context = req.schema, req.context
        urls, prompts = task_prompts(task, schema, context, self.settings.max_frames)
        tid = task_id(task)
        if prompts.is_empty():
            log.info("task %s: no clicks or masks in its annotations yet", tid)
            return None
        key = session_key(task, urls, mode="interactive" if context is not None else "batch")
        if defer:
            return self.jobs.submit(
                job_spec(tid, key, urls, req.config, prompts, self.model_version)
            )
        frames = same_size(self.frames.frames(tid, urls))  # one frame size per task
        session = self.sessions.get(key, len(urls))
        with session.transaction():  # a bad prompt (or a refused job) is not remembered
            extend = accepted_labels(task) if context else set()  # see accepted_labels
            work = sequence_run(self.engine, session, frames, prompts, schema, key,
                                deadline=deadline, busy=self._busy, replace_all=not context,
                                extend=extend)  # fmt: skip
            if work.prepared.plan.kind is not PlanKind.NONE:
                spec = job_spec(tid, key, urls, req.config, prompts, self.model_version,
                                session=session, labels=work.out.labels)  # fmt: skip
                return self.jobs.submit(spec, work)
        return self._unchanged(work, tid)

    def _unchanged(self, work: Work, tid: int | None) -> dict[str, Any]:
        """The answer when the prompts did not change: the session's last run, nothing run."""
        log.info("task %s: prompts unchanged, answering from the session", tid)
        list(work.session.propagate(self.engine, work.frames, work.prepared))  # marks them shown
        for fp in work.session.results(work.out.labels):
            work.out.add(fp)
        return work.out.prediction(self.model_version)

    def _prepare(self, session, frames, make_out, answer, key: SessionKey, deadline) -> Work:
        """The session's plan with its keyframes segmented, and the frames it reuses."""
        assert self.engine is not None
        return prepare_session_run(self.engine, session, frames, make_out, answer, key,
                                   deadline=deadline, busy=self._busy)  # fmt: skip

    def _empty(self) -> dict[str, Any]:
        return {"result": [], "score": 0.0, "model_version": self.model_version}

    def _busy(self) -> str:
        self.metrics.inc("busy_total", help="requests refused because the budget ran out")
        return (
            f"the backend is busy ({self.jobs.load()}) and could not start this request within "
            f"PREDICT_BUDGET_S={self.settings.predict_budget_s:g}s; click again in a moment"
        )

    def _answer(self, pending: dict[str, Any] | Job, deadline: float) -> dict[str, Any]:
        """The full prediction if the job ends before ``deadline``, else what is done so far."""
        if isinstance(pending, dict):
            return pending
        job = pending
        job.finished.wait(max(0.0, deadline - time.monotonic()))
        with job.lock:
            if job.prediction is not None:
                return job.prediction
            if job.state.status is JobStatus.FAILED:
                raise job.exception or RuntimeError(job.state.error or "propagation failed")
            job.state.deliver_to_ls = self.connection.configured and job.spec.task_id is not None
            partial = (
                job.payload.out.prediction(self.model_version) if job.payload else self._empty()
            )
        then = "will write the result to Label Studio" if job.state.deliver_to_ls else "continues"
        log.info("task %s: budget reached at %d/%d frames; job %s %s", job.spec.task_id,
                 job.state.frames_done, job.state.frames_total, job.state.id, then)  # fmt: skip
        return partial

    def _run_job(self, job: Job[Work], progress: Callable[[], None]) -> dict[str, Any]:
        """Propagate one job in a worker thread; the session keeps the run when it completes."""
        assert self.engine is not None
        work = job.payload = job.payload or self._resume(job)
        t0 = time.perf_counter()
        computed = propagate_run(self.engine, work, job, progress, work.out.add)
        self.metrics.inc("frames_processed_total", computed, help="frames", engine=self.engine.name)
        self.sessions.trim(keep=work.session.key)
        with job.lock:
            prediction = work.out.prediction(job.spec.model_version)
        masks = [r for r in prediction["result"] if r.get("type") == "brushlabels"]
        low = low_quality_frames(masks, self.settings.quality_threshold)
        log.info("task %s: %s run, %d frames recomputed in %.2fs; score %.3f; %d frame(s) below "
                 "quality %.2f%s", job.spec.task_id, work.prepared.plan.kind.value, computed,
                 time.perf_counter() - t0, prediction["score"], len(low),
                 self.settings.quality_threshold, f": {low[:20]}" if low else "")  # fmt: skip
        return prediction

    def _resume(self, job: Job[Work]) -> Work:
        """A job found in the store after a crash: its session again, from the saved prompts."""
        spec = job.spec
        if not spec.session:
            raise ValueError("this job was saved by an older version and cannot be resumed")
        if "video_results" in spec.prompts:
            return self._video_work(spec, time.monotonic() + 3600, replace_all=True)
        frames = same_size(self.frames.frames(spec.task_id, spec.urls))
        key = SessionKey(**spec.session["key"])
        schema = parse_label_config(
            spec.label_config, max_bytes=self.settings.label_config_max_bytes
        )
        session = self.sessions.get(key, len(spec.urls))
        if "prompts" in spec.session:
            session.import_prompts(spec.session["prompts"])
            answer = [o for o, label in session.labels.items() if label in spec.answer_labels]
        else:  # deferred batch task: its prompts as Label Studio gave them
            answer = apply_prompts(session, prompts_from_json(spec.prompts), schema, frames,
                                   replace_all=True)  # fmt: skip
        return self._prepare(
            session, frames, sequence_builder(schema), answer, key, time.monotonic() + 3600
        )

    def _write_to_ls(
        self, spec: JobSpec, prediction: dict[str, Any], is_current: Callable[[], bool]
    ) -> int | None:
        """Replace our prediction of the task unless a newer request exists (``is_current``)."""
        if spec.task_id is None or not self.connection.configured:
            return None
        return replace_prediction(
            self.connection,
            spec.task_id,
            prediction,
            model_version=spec.model_version,
            is_current=is_current,
        )

    def list_jobs(self) -> dict[str, Any]:
        return {"jobs": [s.public() for s in self.jobs.store.list()]}

    def get_job(self, job_id: str) -> dict[str, Any] | None:
        state = self.jobs.get(job_id)
        return None if state is None else state.public()

    def refresh_metrics(self) -> None:
        counts, help_ = self.jobs.counts(), "propagation jobs in this process by status"
        for s in JobStatus:
            self.metrics.set("jobs", counts.get(s.value, 0), status=s.value, help=help_)


def _exists(path: Path | None) -> bool:
    return bool(path) and Path(path).is_file()
