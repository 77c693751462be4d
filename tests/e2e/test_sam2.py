"""End to end with the SAM 2 engine: a click in a real Label Studio → per-frame masks.

No real weights exist here, so the backend loads SAM 2.1 tiny with random weights from an
official-format checkpoint file through the production loader (``ENGINE=sam2``), at a 64-pixel
input side to stay quick on a CPU. The masks mean nothing; what is tested is the path:
checkpoint → engine → Label Studio suggestions.
"""

from __future__ import annotations

from collections.abc import Iterator

import ls_harness as h
import numpy as np
import pytest
import requests
from ls_harness import DAVIS_DIR, FRAME_H, FRAME_W, LabelStudio

from tests.sam2_engine.conftest import SIDE, save_random_checkpoint

pytestmark = pytest.mark.e2e
FRAMES = 4


@pytest.fixture(scope="module")
def sam2_backend(label_studio: LabelStudio) -> Iterator[h.ManagedProcess]:
    weights = label_studio.workdir / "weights"
    weights.mkdir(exist_ok=True)
    checkpoint = save_random_checkpoint(weights / "sam2.1_hiera_tiny.pt")
    env = h.backend_env(
        label_studio,
        "sam2",
        SAM2_CHECKPOINT=str(checkpoint),  # auto: SAM 2 is chosen when its checkpoint is set
        SAM2_IMAGE_SIZE=str(SIDE),
        PREDICT_BUDGET_S="90",
    )
    proc = h.start_backend(
        h.PROJECT_PYTHON, h.REPO_ROOT / "_wsgi.py", label_studio.workdir / "sam2.log", env
    )
    try:
        yield proc
    finally:
        proc.stop()


def test_click_returns_sam2_masks(label_studio: LabelStudio, label_config, sam2_backend):
    health = requests.get(f"{sam2_backend.base_url}/health", timeout=5).json()
    assert health["engine"] == "sam2" and health["checkpoints"]["sam2"] is True
    assert health["device"] == "cpu" and health["model_version"].startswith("tam-sam2.1_hiera_t")
    src = DAVIS_DIR / "JPEGImages" / "480p" / "horsejump-high"
    names = h.copy_frames(src, label_studio.media_root / "s2", FRAMES)
    data = {"frames": [h.local_file_url(f"s2/{n}") for n in names]}
    pid, tid = h.create_frames_project(
        label_studio.client, "tam-sam2", label_config, label_studio.media_root / "s2", data
    )
    ml = h.connect_ml_backend(label_studio.client, pid, sam2_backend.base_url, "sam2")
    assert ml.get("state") == "CO", ml
    kp = h.first_control(label_config, "KeyPointLabels")
    point = h.smart_keypoint(400, 240, FRAME_W, FRAME_H, 0, *kp)
    results = h.interactive_annotate(label_studio.client, int(ml["id"]), tid, [point])
    regions = [r for r in results if r.get("type") == "brushlabels"]
    assert regions, sam2_backend.describe_failure("no regions")
    assert {r["item_index"] for r in regions} <= set(range(FRAMES)) and 0 in {
        r["item_index"] for r in regions
    }
    for r in regions:
        alpha = h.decode_brush(r)
        assert alpha.shape == (FRAME_H, FRAME_W) and set(np.unique(alpha)) <= {0, 255}
    assert "engine sam2 ready" in (label_studio.workdir / "sam2.log").read_text()
