"""The Label Studio adapter: Label Studio JSON ⇄ interactive-session calls.

Each task has an :class:`~backend.session.InteractiveSession` keyed by what the task is
(instance, project, task id, frames); the session decides what a click recomputes. This
module only reads requests, hands prompts to the session, runs its propagation as a
background job within the time budget, and turns masks into Label Studio predictions.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from backend import __version__
from backend.config import Settings
from backend.engine import Engine, EngineError, build_engine, resolve_engine_name
from backend.frames import FrameSource
from backend.jobs import Job, JobManager, JobSpec, JobStatus, JobStore
from backend.ls.client import LabelStudioConnection, replace_prediction
from backend.ls.labelconfig import ProjectSchema, parse_label_config
from backend.ls.media import MediaFetcher, TaskFrameCache
from backend.ls.prompts import parse_context, prompts_to_json
from backend.ls.results import PredictionBuilder
from backend.ls.tasks import annotation_prompts, apply_prompts, frame_urls, session_key, task_id
from backend.server.errors import BusyError, RequestError
from backend.server.metrics import Metrics
from backend.session import InteractiveSession, PlanKind, Prepared, SessionKey, SessionStore

log = logging.getLogger("tam.model")
KNOWN_EVENTS = {"ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_DELETED",
                "ANNOTATION_DELETED", "START_TRAINING"}  # fmt: skip


@dataclass
class _Work:
    """What a request hands its propagation job (lost if the process dies)."""

    session: InteractiveSession
    prepared: Prepared
    frames: FrameSource
    out: PredictionBuilder  # the answered objects' regions of every frame done so far
    cache_key: tuple


class TrackAnythingModel:
    """Serves /setup, /predict, /webhook, /health and /versions for one engine (built once; a
    broken checkpoint is reported by /health and every /predict, never replaced)."""

    def __init__(self, settings: Settings, *, engine_factory: Callable[[], Engine] | None = None,
                 frames: TaskFrameCache | None = None, metrics: Metrics | None = None):  # fmt: skip
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.connection = LabelStudioConnection(settings)
        self.frames = frames or TaskFrameCache(
            MediaFetcher(settings, self.connection),
            frames_per_task=settings.frame_cache_size,
            max_pixels=settings.max_frame_pixels,
        )
        self.sessions = SessionStore(int(settings.session_cache_mb * 2**20))
        self.engine: Engine | None = None
        self.engine_error: str | None = None
        self.engine_name = resolve_engine_name(settings)
        try:
            self.engine = (engine_factory or (lambda: build_engine(self.engine_name, settings)))()
            self.engine_name = self.engine.name
            log.info("engine %s ready (model_version %s)", self.engine.name, self.model_version)
        except EngineError as exc:
            self.engine_error = str(exc)
            log.error("engine %s failed to load: %s", self.engine_name, exc)
        self.jobs: JobManager[_Work] = JobManager(
            JobStore(settings.model_dir / "jobs.sqlite3"), self._run_job,
            writer=self._write_to_ls, workers=settings.job_workers,
        )  # fmt: skip
        if self.engine is not None:
            self.jobs.resume_interrupted()

    # ------------------------------------------------------------------ info endpoints
    @property
    def model_version(self) -> str:
        return self.engine.model_version if self.engine else f"tam-{self.engine_name}-{__version__}"

    def health(self) -> dict[str, Any]:
        s = self.settings
        body: dict[str, Any] = {
            "status": "UP" if self.engine is not None else "ERROR",
            "engine": self.engine_name,
            "model_version": self.model_version,
            "checkpoints": {"sam": _exists(s.sam_checkpoint), "xmem": _exists(s.xmem_checkpoint)},
            "device": s.device,
        }
        if self.engine_error:
            body["error"] = self.engine_error
        return body

    def versions(self) -> dict[str, Any]:
        return {"versions": [self.model_version]}

    def setup(self, body: dict[str, Any]) -> dict[str, Any]:
        schema_xml = body.get("schema")
        if schema_xml is not None:
            if not isinstance(schema_xml, str):
                raise RequestError("setup: 'schema' must be the labeling config (a string)")
            parse_label_config(schema_xml)  # raises a clear LabelConfigError
        return {"model_version": self.model_version}

    def webhook(self, body: dict[str, Any]) -> dict[str, Any]:
        """Events are acknowledged; sessions notice changed prompts or frames by themselves."""
        action = body.get("action")
        if not isinstance(action, str) or action not in KNOWN_EVENTS:
            return {"status": "ignored", "action": str(action)[:100]}
        if action == "START_TRAINING":
            return {"status": "ok", "detail": "this backend does not train; nothing to do"}
        return {"status": "ok", "action": action}

    # ------------------------------------------------------------------ predict
    def predict(self, body: dict[str, Any]) -> dict[str, Any]:
        if self.engine is None:
            raise EngineError(self.engine_error or "engine not loaded")
        deadline = time.monotonic() + self.settings.predict_budget_s
        tasks, config = body.get("tasks"), body.get("label_config")
        if not isinstance(tasks, list) or not tasks:
            raise RequestError("predict: 'tasks' must be a non-empty list")
        if not isinstance(config, str):
            raise RequestError("predict: 'label_config' (the project's labeling config) is missing")
        params = body.get("params") or {}
        if not isinstance(params, dict):
            raise RequestError("predict: 'params' must be an object")
        schema, context = parse_label_config(config), params.get("context") or None
        tasks = tasks[:1] if context else tasks  # LS uses only results[0] of an interactive answer
        pending = [self._start(t, schema, config, context, deadline) for t in tasks]
        return {"results": [self._answer(p, deadline) for p in pending]}

    def _start(self, task: Any, schema: ProjectSchema, config: str, context: Any, deadline: float):
        """Hand a task's prompts to its session, segment the keyframes and start propagating.

        Returns a finished prediction, or the running :class:`Job` for :meth:`_answer`.
        """
        if not isinstance(task, dict):
            raise RequestError("predict: each task must be an object")
        urls, tid = frame_urls(task, schema, self.settings.max_frames), task_id(task)
        if context is not None:
            prompts = parse_context(context, schema, len(urls))
            if prompts.is_empty():
                raise RequestError("interactive context has no keypoints or brush masks of "
                                   f"<KeyPointLabels name={schema.keypoint_name!r}>")  # fmt: skip
        else:
            prompts = annotation_prompts(task, schema, len(urls))
            if prompts.is_empty():
                log.warning("task %s: no keyframe in its annotations; empty prediction", tid)
                return {"result": [], "score": 0.0, "model_version": self.model_version}
        frames = self.frames.frames(tid, urls)
        first = min(k for f in (*prompts.clicks.values(), *prompts.masks.values()) for k in f)
        height, width = frames[first].shape[:2]
        key = session_key(task, urls, mode="interactive" if context is not None else "batch")
        session = self.sessions.get(key, len(urls))
        answer = apply_prompts(session, prompts, schema, (width, height), replace_all=not context)
        work = self._prepare(session, frames, schema, answer, key, deadline)
        if work.prepared.plan.kind is PlanKind.NONE:
            log.info("task %s: prompts unchanged, answering from the session", tid)
            list(session.propagate(self.engine, frames, work.prepared))  # marks them shown
            for fp in session.results(work.out.labels):
                work.out.add(fp)
            return work.out.prediction(self.model_version)
        spec = JobSpec(
            task_id=tid, key=_job_key(key, session, work.out.labels, self.model_version),
            urls=list(urls), label_config=config, prompts=prompts_to_json(prompts),
            answer_labels=sorted(work.out.labels.values()), model_version=self.model_version,
            session={"key": asdict(key), "prompts": session.export_prompts()},
        )  # fmt: skip
        return self.jobs.submit(spec, work)

    def _prepare(self, session, frames, schema, answer, key: SessionKey, deadline) -> _Work:
        """The session's plan with its keyframes segmented (waits for the engine until
        ``deadline``, else :class:`BusyError`)."""
        assert self.engine is not None
        lock = self.engine.segmenter_lock
        if not lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            counts = self.jobs.counts()
            self.metrics.inc("busy_total", help="requests refused because the budget ran out")
            raise BusyError(
                f"the backend is busy ({counts.get('running', 0)} propagation(s) running, "
                f"{counts.get('queued', 0)} queued) and could not start this request within "
                f"PREDICT_BUDGET_S={self.settings.predict_budget_s:g}s; click again in a moment"
            )
        cache_key = (key.origin, key.project, key.task, key.media)
        try:
            prepared = session.prepare(self.engine, frames, answer=answer, cache_key=cache_key)
        finally:
            lock.release()
        out = PredictionBuilder({o: session.labels[o] for o in sorted(prepared.answer)}, schema)
        for fp in prepared.reused(out.labels):
            out.add(fp)
        for fp in prepared.keyframe_predictions():
            out.add_keyframe(fp)
        return _Work(session, prepared, frames, out, cache_key)

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
            partial = job.payload.out.prediction(self.model_version)
        log.info("task %s: budget reached at %d/%d frames; job %s continues%s", job.spec.task_id,
                 job.state.frames_done, job.state.frames_total, job.state.id,
                 " and will write the full prediction to Label Studio" if job.state.deliver_to_ls
                 else " (LABEL_STUDIO_URL/API_KEY not set: re-send the click for the full result)")  # fmt: skip
        return partial

    def _run_job(self, job: Job[_Work], progress: Callable[[], None]) -> dict[str, Any]:
        """Propagate one job in a worker thread; the session keeps the run when it completes."""
        assert self.engine is not None
        work = job.payload or self._resume(job)
        with job.lock:
            job.payload = work
            job.state.frames_total = work.session.num_frames
            job.state.frames_done = len(work.out.done)
        t0, computed = time.perf_counter(), 0
        for fp in work.session.propagate(self.engine, work.frames, work.prepared,
                                         cache_key=work.cache_key, should_stop=job.cancel.is_set):  # fmt: skip
            with job.lock:
                work.out.add(fp)
                job.state.frames_done = len(work.out.done)
            computed += 1
            progress()
        self.metrics.inc("frames_processed_total", computed, help="frames segmented",
                         engine=self.engine.name)  # fmt: skip
        self.sessions.trim(keep=work.session.key)
        with job.lock:
            prediction = work.out.prediction(job.spec.model_version)
        elapsed = time.perf_counter() - t0
        log.info("task %s: %s run, %d frames recomputed in %.2fs; score %.3f", job.spec.task_id,
                 work.prepared.plan.kind.value, computed, elapsed, prediction["score"])  # fmt: skip
        return prediction

    def _resume(self, job: Job[_Work]) -> _Work:
        """A job found in the store after a crash: its session again, from the saved prompts."""
        spec = job.spec
        if not spec.session:
            raise ValueError("this job was saved by an older version and cannot be resumed")
        frames = self.frames.frames(spec.task_id, spec.urls)
        key = SessionKey(**spec.session["key"])
        session = self.sessions.get(key, len(spec.urls))
        session.import_prompts(spec.session["prompts"])
        answer = [o for o, label in session.labels.items() if label in spec.answer_labels]
        schema = parse_label_config(spec.label_config)
        return self._prepare(session, frames, schema, answer, key, time.monotonic() + 3600)

    def _write_to_ls(self, spec: JobSpec, prediction: dict[str, Any]) -> int | None:
        if spec.task_id is None or not self.connection.configured:
            return None
        return replace_prediction(self.connection, spec.task_id, prediction,
                                  model_version=spec.model_version)  # fmt: skip

    def list_jobs(self) -> dict[str, Any]:
        return {"jobs": [s.public() for s in self.jobs.store.list()]}

    def get_job(self, job_id: str) -> dict[str, Any] | None:
        state = self.jobs.get(job_id)
        return None if state is None else state.public()

    def refresh_metrics(self) -> None:
        counts = self.jobs.counts()
        for status in JobStatus:
            self.metrics.set("jobs", counts.get(status.value, 0), status=status.value,
                             help="propagation jobs in this process by status")  # fmt: skip


def _job_key(key: SessionKey, session: InteractiveSession, labels: Iterable, version: str) -> str:
    """Equal for requests that ask the same session the same thing (duplicate clicks)."""
    text = repr((asdict(key), session.signature(), sorted(labels), version))
    return f"{key.task}:{hashlib.sha1(text.encode()).hexdigest()[:20]}"


def _exists(path: Path | None) -> bool:
    return bool(path) and Path(path).is_file()
