"""Reusable harness for end-to-end tests against a real Label Studio 1.23.2.

It installs Label Studio into its own virtual environment (``<repo>/.ls-venv``; LS pins clash with
ours), starts it and an ML backend as subprocesses bound to 127.0.0.1, gets a Personal Access Token
through the login flow, and offers a small REST client plus the mask helpers the tests need.
The process and REST helpers live in ``backend.demo`` (``make demo`` uses them too) and are
re-exported here. Nothing here reaches beyond 127.0.0.1 except ``pip``, which uses the machine's
package index.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from backend import demo as _demo
from backend.demo import (  # noqa: F401  (re-exported for the tests)
    ACCESS_TOKEN_TTL_S,
    DAVIS_DIR,
    LS_DB_NAME,
    LS_VENV,
    LS_VERSION,
    PROJECT_PYTHON,
    REPO_ROOT,
    SHARED_DIR,
    HarnessError,
    LSClient,
    ManagedProcess,
    copy_frames,
    ensure_label_studio,
    free_port,
    get_personal_access_token,
    installed_ls_version,
    local_file_url,
    log_tail,
    snapshot_sqlite,
    spawn,
    start_backend,
    start_label_studio,
    wait_until,
)

log = logging.getLogger(__name__)

LS_DB_TEMPLATE = LS_VENV / f"e2e-db-template-{LS_VERSION}.sqlite3"

# The e2e scenario: the first 20 frames of DAVIS car-shadow (854×480), one object.
FRAME_COUNT = 20
FRAME_W, FRAME_H = 854, 480


@dataclass(frozen=True)
class LSCredentials(_demo.LSCredentials):
    """Test-only superuser that Label Studio creates at its first start."""

    email: str = "e2e@example.com"
    password: str = "e2e-pass-not-secret-123"


def backend_env(ls: LabelStudio, name: str, **extra: str) -> dict[str, str]:
    """Environment for a backend called ``name`` connected to ``ls`` (own MODEL_DIR), plus ``extra``."""
    model_dir = ls.workdir / f"{name}-model-dir"
    model_dir.mkdir(exist_ok=True)
    return {
        "LABEL_STUDIO_URL": ls.base_url,
        "LABEL_STUDIO_API_KEY": ls.pat,
        "MODEL_DIR": str(model_dir),
        "LOG_LEVEL": "INFO",
        **extra,
    }


@contextlib.contextmanager
def running_label_studio(workdir: Path) -> Iterator[LabelStudio]:
    """Label Studio 1.23.2 started in ``workdir`` (its data, ``media/`` as the local-files root,
    ``label-studio.log``) from the template database, with a Personal Access Token; stopped when
    the block ends. Raises :class:`HarnessError` when it cannot be installed or started."""
    media_root = workdir / "media"
    media_root.mkdir()
    creds = LSCredentials()
    t0 = time.monotonic()
    exe = ensure_label_studio()
    t1 = time.monotonic()
    proc = start_label_studio(exe, workdir / "ls-data", media_root, workdir / "label-studio.log",
                              creds, db_template=LS_DB_TEMPLATE)  # fmt: skip
    log.info("LS install check %.1f s, start %.1f s", t1 - t0, time.monotonic() - t1)
    try:
        pat = get_personal_access_token(proc.base_url, creds)
        yield LabelStudio(proc.base_url, LSClient(proc.base_url, pat), pat, media_root, workdir)
    finally:
        proc.stop()


@contextlib.contextmanager
def our_backend(ls: LabelStudio, name: str, **extra: str) -> Iterator[ManagedProcess]:
    """This repository's ``_wsgi.py`` as ``name`` (log ``<workdir>/<name>.log``, env from
    :func:`backend_env` plus ``extra``), stopped when the block ends."""
    env = backend_env(ls, name, **extra)
    proc = start_backend(PROJECT_PYTHON, REPO_ROOT / "_wsgi.py", ls.workdir / f"{name}.log", env)
    try:
        yield proc
    finally:
        proc.stop()


def one_click_brushes(
    ls: LabelStudio, backend: ManagedProcess, label_config: str, sequence: str, frames: int
) -> list[dict[str, Any]]:
    """A fresh project of ``frames`` DAVIS frames of ``sequence`` connected to ``backend``; one
    smart-keypoint click at (400, 240) on frame 0; the brush results that come back, each checked
    to decode to a full-size 0/255 alpha mask."""
    folder = f"{backend.base_url.rsplit(':', 1)[-1]}-{sequence}"
    names = copy_frames(
        DAVIS_DIR / "JPEGImages" / "480p" / sequence, ls.media_root / folder, frames
    )
    data = {"frames": [local_file_url(f"{folder}/{n}") for n in names]}
    pid, tid = create_frames_project(
        ls.client, f"tam-{folder}", label_config, ls.media_root / folder, data
    )
    ml = connect_ml_backend(ls.client, pid, backend.base_url, folder)
    assert ml.get("state") == "CO", ml
    point = smart_keypoint(
        400,
        240,
        FRAME_W,
        FRAME_H,
        0,
        *first_control(label_config, "KeyPointLabels"),
    )
    results = interactive_annotate(ls.client, int(ml["id"]), tid, [point])
    regions = [r for r in results if r.get("type") == "brushlabels"]
    assert regions, backend.describe_failure("no regions")
    assert {r["item_index"] for r in regions} <= set(range(frames))
    for r in regions:
        alpha = decode_brush(r)
        assert alpha.shape == (FRAME_H, FRAME_W) and set(np.unique(alpha)) <= {0, 255}
    return regions


def create_frames_project(
    client: LSClient, title: str, label_config: str, storage_dir: Path, task_data: dict[str, Any]
) -> tuple[int, int]:
    """Create a project, a Local Storage connection on ``storage_dir`` and one task.

    Returns ``(project_id, task_id)``.
    """
    project = client.post("/api/projects", {"title": title, "label_config": label_config})
    pid = int(project["id"])
    client.post(
        "/api/storages/localfiles",
        {"project": pid, "path": str(storage_dir), "title": "frames", "use_blob_urls": False},
    )
    client.post(f"/api/projects/{pid}/import", [{"data": task_data}])
    tasks = client.get("/api/tasks", params={"project": pid})
    tasks = tasks["tasks"] if isinstance(tasks, dict) else tasks
    if len(tasks) != 1:
        raise HarnessError(f"project {pid} has {len(tasks)} tasks after import, expected 1")
    return pid, int(tasks[0]["id"])


def connect_ml_backend(client: LSClient, project_id: int, url: str, title: str) -> dict[str, Any]:
    """Register an interactive ML backend on a project and return LS's backend object."""
    ml = client.post(
        "/api/ml", {"url": url, "project": project_id, "title": title, "is_interactive": True}
    )
    return client.get(f"/api/ml/{ml['id']}")


def interactive_annotate(
    client: LSClient, ml_id: int, task_id: int, context_results: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """POST the UI's interactive-annotating call; return ``data.result`` or raise with LS's errors.

    LS answers HTTP 200 even when the backend failed (``{"errors": [...]}``).
    """
    body = {"task": task_id, "context": {"result": context_results}}
    answer = client.post(f"/api/ml/{ml_id}/interactive-annotating", body)
    if not isinstance(answer, dict) or answer.get("errors") or "data" not in answer:
        raise HarnessError(f"interactive-annotating failed: {json.dumps(answer)[:2000]}")
    return list(answer["data"].get("result", []))


def smart_keypoint(
    x_px: float,
    y_px: float,
    width: int,
    height: int,
    item_index: int,
    from_name: str,
    to_name: str,
    label: str,
    positive: bool = True,
    region_id: str = "e2eClick01",
) -> dict[str, Any]:
    """A smart KeyPointLabels region exactly as the 1.23.2 UI sends it (percent coordinates)."""
    return {
        "original_width": width,
        "original_height": height,
        "image_rotation": 0,
        "item_index": item_index,
        "value": {
            "x": 100.0 * x_px / width,
            "y": 100.0 * y_px / height,
            "width": 0.2,
            "labels": [label],
            "keypointlabels": [label],
        },
        "is_positive": positive,
        "id": region_id,
        "from_name": from_name,
        "to_name": to_name,
        "type": "keypointlabels",
        "origin": "manual",
    }


def first_control(label_config: str, tag: str) -> tuple[str, str, str]:
    """``(from_name, to_name, first_label)`` of the first control ``tag`` in a config."""
    import xml.etree.ElementTree as ET

    root = ET.fromstring(label_config)
    for el in root.iter(tag):
        labels = [lab.get("value", "") for lab in el.iter("Label")]
        return el.get("name", ""), el.get("toName", ""), labels[0] if labels else ""
    raise HarnessError(f"no <{tag}> in the labeling config")


# --------------------------------------------------------------------------- scenario records


@dataclass(frozen=True)
class LabelStudio:
    """A running LS instance and an authorized client for it."""

    base_url: str
    client: LSClient
    pat: str
    media_root: Path
    workdir: Path


@dataclass(frozen=True)
class FramesProject:
    """An LS project holding one multi-image (frames) task."""

    project_id: int
    task_id: int
    label_config: str
    frame_names: list[str]
    brush: tuple[str, str, str]  # from_name, to_name, first label
    keypoint: tuple[str, str, str]


@dataclass(frozen=True)
class Interaction:
    """One click sent through LS to a backend, and what came back."""

    click_xy: tuple[float, float]
    results: list[dict[str, Any]]
    seconds: float


# --------------------------------------------------------------------------- masks


def decode_brush(result: Mapping[str, Any]) -> np.ndarray:
    """Decode a ``brushlabels`` result's LS RLE to an ``H×W`` uint8 alpha mask."""
    from label_studio_sdk.converter.brush import decode_rle

    h, w = int(result["original_height"]), int(result["original_width"])
    flat = decode_rle(result["value"]["rle"])
    if flat.size != h * w * 4:
        raise HarnessError(f"RLE holds {flat.size} values, expected {h}x{w}x4")
    return flat.reshape(h, w, 4)[:, :, 3]


def interior_point(mask: np.ndarray) -> tuple[float, float]:
    """Pixel centre ``(x, y)`` of the distance-transform maximum: the most interior point."""
    import cv2

    dist = cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, 5)
    y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return float(x) + 0.5, float(y) + 0.5


def read_gt_mask(path: Path) -> np.ndarray:
    """DAVIS annotation PNG → bool mask (foreground > 127)."""
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if img is None:
        raise HarnessError(f"cannot read {path}")
    return img > 127
