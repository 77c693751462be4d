"""The Label Studio adapter: LS requests → engine → LS predictions.

Thin by design: parsing and validation of Label Studio's payloads, per-task
prompt memory and result caching live here; segmentation and tracking live in
``backend/``. Used by the HTTP server (``_wsgi.py``) and by tests directly.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from backend import __version__
from backend.config import Settings
from backend.engine import (
    Engine,
    EngineError,
    build_engine,
    refine_config,
    resolve_engine_name,
)
from backend.frames import FrameSource
from backend.jobs import Job, JobManager, JobSpec, JobStore
from backend.ls import rle
from backend.ls.client import LabelStudioConnection, replace_prediction
from backend.ls.labelconfig import ProjectSchema, parse_label_config
from backend.ls.media import MediaFetcher, TaskFrameCache
from backend.ls.prompts import (
    PromptSet,
    RelMask,
    parse_context,
    prompts_from_json,
    prompts_to_json,
    to_object_prompts,
)
from backend.ls.results import (
    assemble_prediction,
    compact_region,
    frame_regions,
    low_quality_frames,
    region_id,
)
from backend.pipeline import correction_start, segment_keyframes, segment_video, sticky_prior
from backend.server.errors import BusyError, RequestError
from backend.server.metrics import Metrics
from backend.types import FramePrediction

log = logging.getLogger("tam.model")

KNOWN_EVENTS = {
    "ANNOTATION_CREATED",
    "ANNOTATION_UPDATED",
    "ANNOTATIONS_DELETED",
    "ANNOTATION_DELETED",
    "START_TRAINING",
}


class TrackAnythingModel:
    """Serves /setup, /predict, /webhook, /health and /versions for one engine.

    The engine is built once, at construction (process start), so /health and
    /setup stay fast. A broken checkpoint is reported by /health (status ERROR)
    and by every /predict, never silently replaced by another engine.
    """

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
        self.engine: Engine | None = None
        self.engine_error: str | None = None
        self.engine_name = resolve_engine_name(settings)
        factory = engine_factory or (lambda: build_engine(self.engine_name, settings))
        try:
            self.engine = factory()
            self.engine_name = self.engine.name
            log.info("engine %s ready (model_version %s)", self.engine.name, self.model_version)
        except EngineError as exc:
            self.engine_error = str(exc)
            log.error("engine %s failed to load: %s", self.engine_name, exc)
        self._lock = threading.Lock()  # prompt memory and result cache
        self._memory: OrderedDict[int, PromptSet] = OrderedDict()
        self._results: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._shown: OrderedDict[int, dict[tuple[str, int], RelMask]] = OrderedDict()
        self._priors: dict[int, dict] = {}  # per task: (label, frame) → (clicks, prior)
        self._runs: dict[int, tuple] = {}  # per task: last finished run, for corrections
        self.jobs = JobManager(
            JobStore(settings.model_dir / "jobs.sqlite3"),
            self._run_job,
            writer=self._write_to_ls,
            workers=settings.job_workers,
            on_done=self._job_done,
        )
        self.refine = refine_config(settings, self.engine_name)
        if self.engine is not None:
            self.jobs.resume_interrupted()

    # ------------------------------------------------------------------ info endpoints
    @property
    def model_version(self) -> str:
        if self.engine is not None:
            return self.engine.model_version
        return f"tam-{self.engine_name}-{__version__}"

    def health(self) -> dict[str, Any]:
        s = self.settings
        body: dict[str, Any] = {
            "status": "UP" if self.engine is not None else "ERROR",
            "engine": self.engine_name,
            "model_version": self.model_version,
            "checkpoints": {
                "sam": _exists(s.sam_checkpoint),
                "xmem": _exists(s.xmem_checkpoint),
            },
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
        action = body.get("action")
        if not isinstance(action, str) or action not in KNOWN_EVENTS:
            return {"status": "ignored", "action": str(action)[:100]}
        task = body.get("task")
        if isinstance(task, dict) and isinstance(task.get("id"), int):
            self._forget_results(task["id"])
        if action == "START_TRAINING":
            return {"status": "ok", "detail": "this backend does not train; nothing to do"}
        return {"status": "ok", "action": action}

    # ------------------------------------------------------------------ predict
    def predict(self, body: dict[str, Any]) -> dict[str, Any]:
        if self.engine is None:
            raise EngineError(self.engine_error or "engine not loaded")
        deadline = time.monotonic() + self.settings.predict_budget_s
        tasks = body.get("tasks")
        if not isinstance(tasks, list) or not tasks:
            raise RequestError("predict: 'tasks' must be a non-empty list")
        config = body.get("label_config")
        if not isinstance(config, str):
            raise RequestError("predict: 'label_config' (the project's labeling config) is missing")
        schema = parse_label_config(config)
        params = body.get("params") or {}
        if not isinstance(params, dict):
            raise RequestError("predict: 'params' must be an object")
        context = params.get("context")
        if context:
            tasks = tasks[:1]  # LS uses only results[0] of an interactive answer
        pending = [
            self._start_task(t, schema, config, context=context or None, deadline=deadline)
            for t in tasks
        ]
        results = [self._answer(p, deadline) for p in pending]
        for task, prediction in zip(tasks, results, strict=True):
            if isinstance(task, dict) and isinstance(task.get("id"), int):
                self._show(task["id"], prediction)
        return {"results": results}

    def _start_task(
        self,
        task: Any,
        schema: ProjectSchema,
        config: str,
        *,
        context: dict[str, Any] | None,
        deadline: float,
    ) -> dict[str, Any] | Job:
        """Validate a task, compute its keyframes and start its propagation job.

        Returns a finished prediction (cache hit, no prompts) or the running :class:`Job`.
        """
        if not isinstance(task, dict):
            raise RequestError("predict: each task must be an object")
        task_id = task.get("id") if isinstance(task.get("id"), int) else None
        urls = self._frame_urls(task, schema)
        if context is not None:
            prompts = parse_context(context, schema, len(urls))
            if prompts.is_empty():
                raise RequestError(
                    "interactive context has no keypoints or brush masks of "
                    f"<KeyPointLabels name={schema.keypoint_name!r}>"
                )
            answer_labels = prompts.labels
            merged = self._remember(task_id, prompts)
            signature = _click_signature(merged)
            prompts = self._with_shown_priors(task_id, merged, signature)
        else:
            prompts = self._prompts_from_task(task, schema, len(urls))
            answer_labels = prompts.labels
            signature = {}
            if prompts.is_empty():
                log.warning(
                    "task %s: no keyframe (no keypoints or brush mask in its annotations); "
                    "returning an empty prediction",
                    task_id,
                )
                return {"result": [], "score": 0.0, "model_version": self.model_version}
        key = _job_key(task_id, urls, prompts.fingerprint(), answer_labels, self.model_version)
        cached = self._results.get(key)
        if cached is not None:
            log.info("task %s: prompts unchanged, answering from the result cache", task_id)
            return cached
        frames = self.frames.frames(task_id, urls)
        objects = self._objects(frames, prompts, schema)
        start, reused = self._correction_plan(task_id, urls, signature, prompts, objects)
        if start is not None:
            objects = [_only_frame(o, start) for o in objects]
        lock = self.engine.segmenter_lock
        if not lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            self._waiting_busy()
        try:
            keyframes = segment_keyframes(self.engine, frames, objects, cache_key=task_id)
        finally:
            lock.release()
        spec = JobSpec(
            task_id=task_id,
            key=key,
            urls=list(urls),
            label_config=config,
            prompts=prompts_to_json(prompts),
            answer_labels=list(answer_labels),
            model_version=self.model_version,
        )
        job = self.jobs.submit(spec, keyframes=keyframes)
        if job.keyframes is keyframes:  # a new job, not a duplicate of a running one
            job.start_frame, job.reused, job.signature = start, reused, signature
            job.objects = objects
        labels = {o.obj_id: o.label for o in objects if o.label in answer_labels}
        with job.lock:  # a queued job still answers with its keyframes
            if job.state.frames_done == 0 and not job.keyframe_regions:
                job.keyframe_regions = _keyframe_regions(keyframes, labels, schema)
        return job

    def _waiting_busy(self) -> None:
        counts = self.jobs.counts()
        self.metrics.inc("busy_total", help="requests refused because the budget ran out waiting")
        raise BusyError(
            f"the backend is busy ({counts.get('running', 0)} propagation(s) running, "
            f"{counts.get('queued', 0)} queued) and could not start this request within "
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
            if job.state.status == "failed":
                if job.exception is not None:
                    raise job.exception
                raise RuntimeError(job.state.error or "propagation failed")
            job.state.deliver_to_ls = self.connection.configured and job.spec.task_id is not None
            partial = assemble_prediction(
                [*job.keyframe_regions, *job.regions],
                list(job.scores),
                model_version=self.model_version,
            )
        log.info(
            "task %s: budget of %.0fs reached at %d/%d frames; job %s continues%s",
            job.spec.task_id,
            self.settings.predict_budget_s,
            job.state.frames_done,
            job.state.frames_total,
            job.state.id,
            " and will write the full prediction to Label Studio"
            if job.state.deliver_to_ls
            else " (LABEL_STUDIO_URL/API_KEY not set: re-send the click to get the full result)",
        )
        return partial

    def _objects(self, frames: FrameSource, prompts: PromptSet, schema: ProjectSchema):
        first_key = min(
            min(prompts.clicks.get(lab, {}).keys() | prompts.masks.get(lab, {}).keys())
            for lab in prompts.labels
        )
        height, width = frames[first_key].shape[:2]
        return to_object_prompts(prompts, schema, (width, height), rle.decode)

    def _run_job(self, job: Job, progress: Callable[[], None]) -> dict[str, Any]:
        """Propagate one job (in a worker thread); regions accumulate on the job as frames finish."""
        assert self.engine is not None
        spec = job.spec
        schema = parse_label_config(spec.label_config)
        frames = self.frames.frames(spec.task_id, spec.urls)
        objects = job.objects
        if objects is None or job.keyframes is None:  # resumed after a crash: start over
            objects = self._objects(frames, prompts_from_json(spec.prompts), schema)
            job.start_frame = None
        labels = {o.obj_id: o.label for o in objects if o.label in spec.answer_labels}
        keyframes = job.keyframes
        if keyframes is None:  # resumed after a crash: compute them again
            keyframes = segment_keyframes(self.engine, frames, objects, cache_key=spec.task_id)
        start = job.start_frame  # a correction: frames before it are kept from the last run
        reused = job.reused or {}
        with job.lock:  # a resumed job starts over
            job.state.frames_total = len(frames)
            job.regions = [r for f in sorted(reused) if f < (start or 0) for r in reused[f][0]]
            job.scores = [x for f in sorted(reused) if f < (start or 0) for x in reused[f][1]]
            job.state.frames_done = start or 0
            job.keyframe_regions = _keyframe_regions(keyframes, labels, schema)
        if start is not None:
            log.info("task %s: correction on frame %d, frames 0–%d kept", spec.task_id, start,
                     start - 1)  # fmt: skip
        t0 = time.perf_counter()
        for fp in segment_video(
            self.engine,
            frames,
            objects,
            keyframes=keyframes,
            refine=self.refine,
            cache_key=spec.task_id,
            backward=start is None,
            appearance=None if start is None else _first_keyframe_masks(job),
            should_stop=job.cancel.is_set,
        ):
            regions = [compact_region(r) for r in frame_regions(fp, labels, schema)]
            scores = [s for o, s in fp.scores.items() if o in labels]
            job.frames[fp.index] = (regions, scores)
            with job.lock:
                job.regions.extend(regions)
                job.scores.extend(scores)
                job.keyframe_regions = [
                    r for r in job.keyframe_regions if r.get("item_index", 0) != fp.index
                ]
                job.state.frames_done += 1
            progress()
        elapsed = time.perf_counter() - t0
        self.metrics.inc(
            "frames_processed_total", len(frames), help="frames segmented", engine=self.engine.name
        )
        with job.lock:
            prediction = assemble_prediction(
                job.regions, job.scores, model_version=spec.model_version
            )
        low = low_quality_frames(prediction["result"], self.settings.quality_threshold)
        log.info(
            "task %s: %d frames × %d object(s) in %.2fs (%.1f frames/s); score %.3f; "
            "%d frame(s) below quality %.2f%s",
            spec.task_id,
            len(frames),
            len(labels),
            elapsed,
            len(frames) / elapsed if elapsed > 0 else 0.0,
            prediction["score"],
            len(low),
            self.settings.quality_threshold,
            f": {low[:20]}" if low else "",
        )
        return prediction

    def _job_done(self, job: Job) -> None:
        if job.prediction is not None:
            self._show(job.spec.task_id, job.prediction)
            self._remember_run(job)
            with self._lock:
                self._results[job.spec.key] = job.prediction
                while len(self._results) > 16:
                    self._results.popitem(last=False)

    def _write_to_ls(self, spec: JobSpec, prediction: dict[str, Any]) -> int | None:
        if spec.task_id is None or not self.connection.configured:
            return None
        return replace_prediction(
            self.connection, spec.task_id, prediction, model_version=spec.model_version
        )

    def list_jobs(self) -> dict[str, Any]:
        return {"jobs": [s.public() for s in self.jobs.store.list()]}

    def get_job(self, job_id: str) -> dict[str, Any] | None:
        state = self.jobs.get(job_id)
        return None if state is None else state.public()

    def refresh_metrics(self) -> None:
        for status in ("queued", "running", "done", "failed", "superseded", "cancelled"):
            self.metrics.set(
                "jobs",
                self.jobs.counts().get(status, 0),
                help="propagation jobs in this process by status",
                status=status,
            )

    def _frame_urls(self, task: dict[str, Any], schema: ProjectSchema) -> list[str]:
        data = task.get("data")
        if not isinstance(data, dict):
            raise RequestError("predict: task has no 'data' object")
        value = data.get(schema.frames_key)
        if value is None:
            raise RequestError(
                f"task {task.get('id')}: data has no {schema.frames_key!r} "
                f"(the labeling config reads ${schema.frames_key})"
            )
        urls = value if isinstance(value, list) else [value]
        if not urls:
            raise RequestError(f"task {task.get('id')}: {schema.frames_key!r} is an empty list")
        if not all(isinstance(u, str) and u.strip() for u in urls):
            raise RequestError(
                f"task {task.get('id')}: every item of {schema.frames_key!r} must be a URL string"
            )
        if len(urls) > self.settings.max_frames:
            raise RequestError(
                f"task {task.get('id')}: {len(urls)} frames exceed MAX_FRAMES="
                f"{self.settings.max_frames}; split the video into shorter tasks"
            )
        return urls

    def _prompts_from_task(
        self, task: dict[str, Any], schema: ProjectSchema, num_frames: int
    ) -> PromptSet:
        """Keyframes for batch predict: the newest annotation's keypoints and brush masks."""
        annotations = [a for a in task.get("annotations") or [] if isinstance(a, dict)]
        annotations = [a for a in annotations if not a.get("was_cancelled")]
        if not annotations:
            return PromptSet()
        newest = max(annotations, key=lambda a: str(a.get("updated_at") or a.get("id") or ""))
        return parse_context({"result": newest.get("result") or []}, schema, num_frames)

    def _remember(self, task_id: int | None, prompts: PromptSet) -> PromptSet:
        """Merge this click's labels with the task's other labels from earlier clicks.

        LS sends only the clicked label's points; other objects of the task are
        tracked jointly (so masks never overlap) from what we remember.
        """
        if task_id is None:
            return prompts
        with self._lock:
            known = self._memory.get(task_id, PromptSet())
            merged = PromptSet(
                clicks={k: v for k, v in known.clicks.items() if k not in prompts.labels},
                masks={k: v for k, v in known.masks.items() if k not in prompts.labels},
            )
            merged.clicks.update(prompts.clicks)
            merged.masks.update(prompts.masks)
            self._memory[task_id] = merged
            self._memory.move_to_end(task_id)
            while len(self._memory) > 256:
                self._memory.popitem(last=False)
        return merged

    def _show(self, task_id: int | None, prediction: dict[str, Any]) -> None:
        """Remember what the annotator was shown for the task (priors for correction clicks)."""
        if task_id is None:
            return
        shown = {}
        for r in prediction.get("result", []):
            label = r["value"]["brushlabels"][0]
            rle_value = r["value"]["rle"]
            shown[(label, r.get("item_index", 0))] = RelMask(
                rle=rle_value if isinstance(rle_value, bytes) else bytes(rle_value),
                width=r["original_width"],
                height=r["original_height"],
            )
        labels = {label for label, _ in shown}
        with self._lock:
            kept = {
                key: m for key, m in self._shown.get(task_id, {}).items() if key[0] not in labels
            }
            self._shown[task_id] = {**kept, **shown}
            self._shown.move_to_end(task_id)
            while len(self._shown) > 64:
                self._shown.popitem(last=False)

    def _with_shown_priors(
        self, task_id: int | None, prompts: PromptSet, signature: dict[str, dict[int, tuple]]
    ) -> PromptSet:
        """Clicks on a frame correct the mask shown there: that mask becomes their prior.

        A copy of ``prompts`` with priors added as masks for clicked frames that
        have no painted mask; a frame keeps its prior while its clicks do not
        change (see ``backend.pipeline.sticky_prior``); ``signature`` holds each
        frame's clicks as :func:`_click_signature` gives them.
        """
        if task_id is None:
            return prompts
        with self._lock:
            shown = self._shown.get(task_id, {})
            store = self._priors.setdefault(task_id, {})
            while len(self._priors) > 64:
                self._priors.pop(next(iter(self._priors)))
            masks = {label: dict(frames) for label, frames in prompts.masks.items()}
            for label, frames in prompts.clicks.items():
                for k in frames:
                    if k in masks.get(label, {}):
                        continue
                    prior = sticky_prior(
                        store,
                        (label, k),
                        signature[label][k],
                        lambda key=(label, k): shown.get(key),
                    )
                    if prior is not None:
                        masks.setdefault(label, {})[k] = RelMask(
                            rle=list(prior.rle), width=prior.width, height=prior.height
                        )
        return PromptSet(clicks=prompts.clicks, masks=masks)

    def _remember_run(self, job: Job) -> None:
        """Keep a finished interactive run's per-frame regions, to restart corrections from."""
        task_id, signature = job.spec.task_id, job.signature
        tracked = set(job.spec.prompts.get("clicks", {})) | set(job.spec.prompts.get("masks", {}))
        if task_id is None or not signature or tracked != set(job.spec.answer_labels):
            return  # other objects were tracked jointly but are not in these regions
        start = job.start_frame or 0
        frames = {f: v for f, v in (job.reused or {}).items() if f < start}
        frames.update(job.frames)
        with self._lock:
            self._runs[task_id] = (tuple(job.spec.urls), signature, frames)
            while len(self._runs) > 16:
                self._runs.pop(next(iter(self._runs)))

    def _correction_plan(self, task_id, urls, signature, prompts: PromptSet, objects):
        """``(start, reused)`` for a correction restarted at ``start``, or ``(None, None)``.

        On success the objects hold, on frame ``start``, the masks of the last
        run for objects without clicks there.
        """
        with self._lock:
            last = self._runs.get(task_id)
        if not last or last[0] != tuple(urls):
            return None, None
        start = correction_start(last[1], signature)
        if start is None or not all(f in last[2] for f in range(start)):
            return None, None
        for obj in objects:
            if start in obj.clicks:
                continue
            shown = _run_mask(last[2], obj.obj_id, start)
            if shown is None:
                return None, None
            obj.masks[start] = shown
        return start, last[2]

    def _forget_results(self, task_id: int) -> None:
        with self._lock:
            for key in [k for k, v in self._results.items() if _key_task(k) == task_id]:
                del self._results[key]


def _job_key(task_id, urls, fingerprint: str, labels, model_version: str) -> str:
    digest = hashlib.sha1(
        json.dumps([task_id, list(urls), fingerprint, sorted(labels), model_version]).encode()
    ).hexdigest()[:20]
    return f"{task_id}:{digest}"


def _click_signature(prompts: PromptSet) -> dict[str, dict[int, tuple]]:
    """What the annotator gave per label and frame (clicks and painted masks), comparable."""
    out: dict[str, dict[int, tuple]] = {}
    for label, frames in prompts.clicks.items():
        for k, clicks in frames.items():
            out.setdefault(label, {})[k] = tuple(
                (round(c.fx, 6), round(c.fy, 6), c.positive) for c in clicks
            )
    for label, frames in prompts.masks.items():
        for k, m in frames.items():
            sig = hashlib.sha1(bytes(m.rle)).hexdigest()
            out.setdefault(label, {})[k] = (*out.get(label, {}).get(k, ()), sig)
    return out


def _run_mask(frames: dict, obj_id: int, frame: int):
    """The mask a finished run (``{frame: (regions, scores)}``) showed for an object on a
    frame, or None."""
    regions = frames.get(frame, ([], []))[0]
    region = next((r for r in regions if r["id"] == region_id(obj_id, frame)), None)
    if region is None:
        return None
    return rle.decode(region["value"]["rle"], region["original_height"], region["original_width"])


def _first_keyframe_masks(job: Job) -> dict:
    """``{frame: {obj_id: mask}}`` for a correction restarted at ``job.start_frame``: each
    object's mask on its first keyframe (from the job's click signature), as the run it
    restarts from showed it — the tracker learns the object's looks there."""
    out: dict[int, dict] = {}
    for obj in job.objects or []:
        first = min((job.signature or {}).get(obj.label, {}), default=job.start_frame)
        if first >= job.start_frame:
            continue
        shown = _run_mask(job.reused or {}, obj.obj_id, first)
        if shown is not None:
            out.setdefault(first, {})[obj.obj_id] = shown
    return out


def _only_frame(obj, frame: int):
    """The object's prompts restricted to one frame (a correction's restart frame)."""
    from backend.types import ObjectPrompt

    return ObjectPrompt(
        obj.obj_id,
        obj.label,
        clicks={k: v for k, v in obj.clicks.items() if k == frame},
        masks={k: v for k, v in obj.masks.items() if k == frame},
    )


def _key_task(key: str) -> int | None:
    head = key.split(":", 1)[0]
    return int(head) if head.isdigit() else None


def _keyframe_regions(keyframes, labels: dict[int, str], schema: ProjectSchema) -> list[dict]:
    """Regions of the keyframe masks, shown in a partial answer until their frame is done."""
    out = []
    for k, objs in keyframes.items():
        fp = FramePrediction(
            index=k,
            masks={o: kf.mask for o, kf in objs.items()},
            scores={o: kf.score for o, kf in objs.items()},
        )
        out.extend(frame_regions(fp, labels, schema))
    return out


def _exists(path: Path | None) -> bool:
    return bool(path) and Path(path).is_file()
