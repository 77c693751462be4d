"""Helpers of the bulk tests: small DAVIS frames and videos as Label Studio tasks, clicks and
boxes as the UI sends them, the projects' records."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

_E2E = str(Path(__file__).resolve().parents[1] / "e2e")
if _E2E not in sys.path:
    sys.path.insert(0, _E2E)
import ls_harness as h  # noqa: E402

from backend.config import Settings  # noqa: E402

SIZE = (320, 180)  # small frames: the tests check the bookkeeping, not the masks' accuracy
FRAMES = 6
FPS = 25
DATA = "bulk"  # the folder under the local-files root that the projects' storage serves
SEQ_CONFIG = (h.REPO_ROOT / "docs" / "labeling-config.xml").read_text()
VIDEO_CONFIG = (h.REPO_ROOT / "docs" / "labeling-config-video.xml").read_text()


@dataclass
class Project:
    """A Label Studio project of the bulk tests and what each task holds."""

    project_id: int
    config: str
    tasks: dict[str, int] = field(default_factory=dict)  # role → task id


@dataclass
class BulkLS:
    ls: h.LabelStudio
    images: Project
    videos: Project

    def settings(self, **extra: Any) -> Settings:
        model_dir = self.ls.workdir / "bulk-model-dir"
        model_dir.mkdir(exist_ok=True)
        env = {"LABEL_STUDIO_URL": self.ls.base_url, "LABEL_STUDIO_API_KEY": self.ls.pat,
               "MODEL_DIR": str(model_dir), "ENGINE": "classical", **extra}  # fmt: skip
        return Settings.from_env(env)

    def predictions(self, task_id: int) -> list[dict[str, Any]]:
        return list(self.ls.client.get("/api/predictions", params={"task": task_id}))


def _gt(seq: str, index: int = 0) -> np.ndarray:
    path = sorted((h.DAVIS_DIR / "Annotations" / "480p" / seq).glob("*.png"))[index]
    mask = h.read_gt_mask(path).astype(np.uint8)
    return cv2.resize(mask, SIZE, interpolation=cv2.INTER_NEAREST).astype(bool)


def _frames(seq: str) -> list[np.ndarray]:
    paths = sorted((h.DAVIS_DIR / "JPEGImages" / "480p" / seq).glob("*.jpg"))[:FRAMES]
    return [cv2.resize(cv2.imread(str(p)), SIZE, interpolation=cv2.INTER_AREA) for p in paths]


def write_frames(root: Path, name: str, seq: str, *, corrupt: int | None = None) -> list[str]:
    """``FRAMES`` small JPEGs of ``seq`` under ``root/name``; frame ``corrupt`` truncated."""
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    urls = []
    for i, img in enumerate(_frames(seq)):
        path = folder / f"{i:05d}.jpg"
        cv2.imwrite(str(path), img)
        if i == corrupt:
            path.write_bytes(path.read_bytes()[:200])  # a truncated JPEG
        urls.append(h.local_file_url(f"{name}/{path.name}"))
    return urls


def write_video(root: Path, name: str, seq: str) -> str:
    """A WebM of ``FRAMES`` small frames of ``seq`` at ``root/name``."""
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"VP80"), FPS, SIZE)
    for img in _frames(seq):
        writer.write(img)
    writer.release()
    return h.local_file_url(name)


def click(seq: str, label: str = "Object 1", frame: int = 0) -> dict[str, Any]:
    """A positive smart keypoint at the most interior point of the object on ``frame``."""
    x, y = h.interior_point(_gt(seq, frame))
    return h.smart_keypoint(x, y, *SIZE, frame, "kp", "image", label,
                            region_id=f"c-{seq}-{frame}")  # fmt: skip


def box(seq: str, label: str = "Car") -> dict[str, Any]:
    ys, xs = np.nonzero(_gt(seq))
    w, hh = SIZE
    key = {"frame": 1, "enabled": True, "rotation": 0, "time": 0.0,
           "x": 100 * xs.min() / w, "y": 100 * ys.min() / hh,
           "width": 100 * (xs.max() + 1 - xs.min()) / w,
           "height": 100 * (ys.max() + 1 - ys.min()) / hh}  # fmt: skip
    return {"id": f"b-{seq}", "type": "videorectangle", "from_name": "box", "to_name": "video",
            "origin": "manual", "value": {"framesCount": FRAMES, "duration": FRAMES / FPS,
                                          "sequence": [key], "labels": [label]}}  # fmt: skip


def project(ls: h.LabelStudio, title: str, config: str, tasks: dict[str, dict]) -> Project:
    client = ls.client
    pid = int(client.post("/api/projects", {"title": title, "label_config": config})["id"])
    client.post("/api/storages/localfiles", {"project": pid, "path": str(ls.media_root / DATA),
                                             "title": "media", "use_blob_urls": False})  # fmt: skip
    roles = list(tasks)
    client.post(f"/api/projects/{pid}/import", [{"data": tasks[r]} for r in roles])
    listed = client.get("/api/tasks", params={"project": pid, "page_size": 100})
    listed = listed["tasks"] if isinstance(listed, dict) else listed
    ids = sorted(int(t["id"]) for t in listed)
    assert len(ids) == len(roles), listed
    return Project(pid, config, dict(zip(roles, ids, strict=True)))


def annotate(ls: h.LabelStudio, task_id: int, result: list[dict]) -> None:
    ls.client.post(f"/api/tasks/{task_id}/annotations", {"result": result, "lead_time": 1.0})
