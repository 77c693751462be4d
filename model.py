"""The Label Studio adapter: LS requests → engine → LS predictions.

Thin by design: parsing and validation of Label Studio's payloads, per-task
prompt memory and result caching live here; segmentation and tracking live in
``backend/``. Used by the HTTP server (``_wsgi.py``) and by tests directly.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from backend import __version__, rle
from backend.config import Settings
from backend.engine import Engine, EngineError, build_engine, resolve_engine_name
from backend.labelconfig import ProjectSchema, parse_label_config
from backend.media import FrameSource, MediaFetcher, TaskFrameCache
from backend.pipeline import segment_video
from backend.prompts import PromptSet, parse_context, to_object_prompts
from backend.results import ObjectInfo, build_prediction, low_quality_frames
from backend.server.errors import RequestError
from backend.server.metrics import Metrics

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
        self.frames = frames or TaskFrameCache(
            MediaFetcher(settings),
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
        self._lock = threading.Lock()  # one propagation at a time per process
        self._memory: OrderedDict[int, PromptSet] = OrderedDict()
        self._results: OrderedDict[tuple, dict[str, Any]] = OrderedDict()

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
            return {"results": [self._predict_task(tasks[0], schema, context=context)]}
        return {"results": [self._predict_task(t, schema, context=None) for t in tasks]}

    def _predict_task(
        self, task: Any, schema: ProjectSchema, *, context: dict[str, Any] | None
    ) -> dict[str, Any]:
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
            prompts = self._remember(task_id, prompts)
        else:
            prompts = self._prompts_from_task(task, schema, len(urls))
            answer_labels = prompts.labels
            if prompts.is_empty():
                log.warning(
                    "task %s: no keyframe (no keypoints or brush mask in its annotations); "
                    "returning an empty prediction",
                    task_id,
                )
                return {"result": [], "score": 0.0, "model_version": self.model_version}
        key = (task_id, tuple(urls), prompts.fingerprint(), tuple(answer_labels), self.model_version)
        cached = self._results.get(key)
        if cached is not None:
            log.info("task %s: prompts unchanged, answering from the result cache", task_id)
            return cached
        frames = self.frames.frames(task_id, urls)
        prediction = self._run(task_id, frames, prompts, schema, answer_labels)
        self._results[key] = prediction
        while len(self._results) > 16:
            self._results.popitem(last=False)
        return prediction

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
                clicks={**known.clicks, **prompts.clicks},
                masks={
                    **{k: v for k, v in known.masks.items() if k not in prompts.clicks},
                    **prompts.masks,
                },
            )
            for label in prompts.labels:  # the context is authoritative for its labels
                if label not in prompts.masks:
                    merged.masks.pop(label, None)
                if label not in prompts.clicks:
                    merged.clicks.pop(label, None)
            self._memory[task_id] = merged
            self._memory.move_to_end(task_id)
            while len(self._memory) > 256:
                self._memory.popitem(last=False)
        return merged

    def _forget_results(self, task_id: int) -> None:
        with self._lock:
            for key in [k for k in self._results if k[0] == task_id]:
                del self._results[key]

    def _run(
        self,
        task_id: int | None,
        frames: FrameSource,
        prompts: PromptSet,
        schema: ProjectSchema,
        answer_labels: list[str],
    ) -> dict[str, Any]:
        assert self.engine is not None
        first_key = min(
            min(prompts.clicks.get(lab, {}).keys() | prompts.masks.get(lab, {}).keys())
            for lab in prompts.labels
        )
        height, width = frames[first_key].shape[:2]
        objects = to_object_prompts(prompts, schema, (width, height), rle.decode)
        t0 = time.perf_counter()
        with self._lock:
            out = list(segment_video(self.engine, frames, objects, cache_key=task_id))
        elapsed = time.perf_counter() - t0
        wanted = {o.obj_id for o in objects if o.label in answer_labels}
        for fp in out:
            fp.masks = {k: v for k, v in fp.masks.items() if k in wanted}
            fp.scores = {k: v for k, v in fp.scores.items() if k in wanted}
        self.metrics.inc(
            "frames_processed_total", len(out), help="frames segmented", engine=self.engine.name
        )
        prediction = build_prediction(
            out,
            [ObjectInfo(o.obj_id, o.label) for o in objects if o.obj_id in wanted],
            schema,
            model_version=self.model_version,
            quality_threshold=self.settings.quality_threshold,
        )
        low = low_quality_frames(out, self.settings.quality_threshold)
        log.info(
            "task %s: %d frames × %d object(s) in %.2fs (%.1f frames/s); score %.3f; "
            "%d frame(s) below quality %.2f%s",
            task_id,
            len(out),
            len(wanted),
            elapsed,
            len(out) / elapsed if elapsed > 0 else 0.0,
            prediction["score"],
            len(low),
            self.settings.quality_threshold,
            f": {low[:20]}" if low else "",
        )
        return prediction


def _exists(path: Path | None) -> bool:
    return bool(path) and Path(path).is_file()
