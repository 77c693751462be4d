"""The remote annotator: drives a running backend over HTTP exactly as Label Studio does.

Each click is an interactive ``POST /predict`` whose context holds every keypoint of the
clicked label (``keypointlabels`` in percent of the frame, ``item_index``, ``is_positive``),
on an image-sequence task whose frames are Label Studio local-files URLs relative to the
DAVIS root. When the answer is partial (the server's time budget ran out), the annotator
waits for the task's background job (``GET /jobs``) and sends the same click again, which
the server answers from the finished run — as an annotator who waits for the suggestions.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import requests

from backend.eval.davis import DavisSequence
from backend.frames import FrameSource
from backend.ls import rle
from backend.types import Box, Click

log = logging.getLogger(__name__)

LABEL_CONFIG = """<View>
  <Image name="image" valueList="$frames"/>
  <BrushLabels name="brush" toName="image">{labels}</BrushLabels>
  <KeyPointLabels name="kp" toName="image" smart="true">{labels}</KeyPointLabels>
</View>"""


def label_config(num_objects: int) -> str:
    """A frames project's labeling config with labels ``object 1`` … ``object N`` (label k
    is object id k on the server: its position in the BrushLabels)."""
    labels = "".join(f'<Label value="object {k}"/>' for k in range(1, num_objects + 1))
    return LABEL_CONFIG.format(labels=labels)


def local_files_url(path: Path, root: Path) -> str:
    rel = path.resolve().relative_to(root.resolve()).as_posix()
    return f"/data/local-files/?d={quote(rel)}"


def keypoint(click: Click, frame: int, label: str, size: tuple[int, int], n: int) -> dict:
    """One smart keypoint as Label Studio sends it in ``params.context.result``."""
    width, height = size
    return {
        "id": f"eval-{frame}-{n}",
        "type": "keypointlabels",
        "from_name": "kp",
        "to_name": "image",
        "origin": "manual",
        "item_index": frame,
        "original_width": width,
        "original_height": height,
        "image_rotation": 0,
        "value": {
            "x": 100.0 * click.x / width,
            "y": 100.0 * click.y / height,
            "width": 0.2,
            "keypointlabels": [label],
        },
        "is_positive": click.positive,
    }


class ServerAnnotator:
    """Sends one sequence's clicks to a backend at ``url`` as task ``task_id``."""

    def __init__(self, url: str, root: Path, seq: DavisSequence, frames: FrameSource,
                 num_objects: int, task_id: int, *, timeout_s: float = 3600.0):  # fmt: skip
        self.name = "server"
        self.url = url.rstrip("/")
        self.frames = frames
        self.task_id = task_id
        self.timeout_s = timeout_s
        self.http = requests.Session()
        height, width = frames[0].shape[:2]
        self.size = (width, height)
        self.task = {
            "id": task_id,
            "project": 1,
            "created_at": f"eval:{seq.name}",
            "data": {"frames": [local_files_url(p, root) for p in seq.images]},
        }
        self.config = label_config(num_objects)

    def _predict(self, context: list[dict]) -> dict[str, Any]:
        body = {"tasks": [self.task], "label_config": self.config, "project": "1.0",
                "params": {"login": None, "password": None, "context": {"result": context}}}  # fmt: skip
        resp = self.http.post(f"{self.url}/predict", json=body, timeout=self.timeout_s)
        if resp.status_code != 200:
            raise RuntimeError(f"/predict answered {resp.status_code}: {resp.text[:300]}")
        return resp.json()["results"][0]

    def _wait_for_jobs(self) -> bool:
        """Wait while the task has a queued or running job; True if there was one."""
        waited, t0 = False, time.monotonic()
        while time.monotonic() - t0 < self.timeout_s:
            jobs = self.http.get(f"{self.url}/jobs", timeout=30).json()["jobs"]
            active = [j for j in jobs if j["task_id"] == self.task_id
                      and j["status"] in ("queued", "running")]  # fmt: skip
            if not active:
                return waited
            waited = True
            time.sleep(0.2)
        raise TimeoutError(f"task {self.task_id}: job still running after {self.timeout_s}s")

    def click(
        self,
        obj_id: int,
        label: str,
        clicks: dict[int, list[Click]],
        boxes: dict[int, Box] | None = None,
        masks: dict[int, np.ndarray] | None = None,
    ) -> list[np.ndarray]:
        if boxes or masks:
            raise ValueError("the --server annotator sends clicks only (no boxes or masks)")
        context = [
            keypoint(c, frame, label, self.size, n)
            for frame, cs in sorted(clicks.items())
            for n, c in enumerate(cs)
        ]
        answer = self._predict(context)
        if self._wait_for_jobs():  # partial answer: ask again once the run is complete
            answer = self._predict(context)
        width, height = self.size
        masks = [np.zeros((height, width), bool) for _ in range(len(self.frames))]
        for region in answer["result"]:
            if region["value"]["brushlabels"] == [label]:
                decoded = rle.decode(region["value"]["rle"], height, width)
                masks[region.get("item_index", 0)] = decoded
        return masks


class ServerAnnotators:
    """An annotator factory for :func:`backend.eval.runner.run_davis` (one task per sequence)."""

    name = "server"

    def __init__(self, url: str, root: str | Path):
        self.url = url
        self.root = Path(root)
        self._tasks = 0
        info = requests.get(f"{url.rstrip('/')}/health", timeout=30).json()
        self.name = f"server ({info.get('engine', '?')})"
        log.info("evaluating the backend at %s: %s", url, json.dumps(info))

    def __call__(self, seq: DavisSequence, frames: FrameSource, num_objects: int):
        self._tasks += 1
        return ServerAnnotator(self.url, self.root, seq, frames, num_objects, self._tasks)
