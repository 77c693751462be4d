"""End to end with the SAM + XMem engine: a click in a real Label Studio → per-frame masks.

No real weights exist here, so the backend loads a tiny SAM and the golden XMem weights from
checkpoint files, through the production loader (``tests/engines.py``). The masks are those of
random weights; what is tested is the path: checkpoints → engine → LS suggestions.
"""

from __future__ import annotations

from collections.abc import Iterator

import ls_harness as h
import numpy as np
import pytest
import requests
import torch
from ls_harness import DAVIS_DIR, FRAME_H, FRAME_W, LabelStudio

from bench.xmem_golden import save_golden_weights
from tests.conftest import SHARED
from tests.segmenter.conftest import build_tiny_sam

pytestmark = pytest.mark.e2e
FRAMES = 4


@pytest.fixture(scope="module")
def sam_xmem_backend(label_studio: LabelStudio) -> Iterator[h.ManagedProcess]:
    weights = label_studio.workdir / "weights"
    weights.mkdir(exist_ok=True)
    torch.manual_seed(0)
    torch.save(build_tiny_sam().state_dict(), weights / "sam_tiny.pth")
    save_golden_weights(SHARED / "xmem-golden", weights / "xmem.pth")
    env = h.backend_env(
        label_studio,
        "sam-xmem",
        ENGINE="tests.engines:tiny_sam_xmem",
        SAM_CHECKPOINT=str(weights / "sam_tiny.pth"),
        XMEM_CHECKPOINT=str(weights / "xmem.pth"),
        PYTHONPATH=str(h.REPO_ROOT),
        PREDICT_BUDGET_S="90",
    )
    proc = h.start_backend(
        h.PROJECT_PYTHON, h.REPO_ROOT / "_wsgi.py", label_studio.workdir / "sam-xmem.log", env
    )
    try:
        yield proc
    finally:
        proc.stop()


def test_click_returns_sam_xmem_masks(label_studio: LabelStudio, label_config, sam_xmem_backend):
    health = requests.get(f"{sam_xmem_backend.base_url}/health", timeout=5).json()
    assert health["engine"] == "sam-xmem" and health["checkpoints"] == {
        "sam": True,
        "xmem": True,
        "sam2": False,
    }
    src = DAVIS_DIR / "JPEGImages" / "480p" / "car-shadow"
    names = h.copy_frames(src, label_studio.media_root / "sx", FRAMES)
    data = {"frames": [h.local_file_url(f"sx/{n}") for n in names]}
    pid, tid = h.create_frames_project(
        label_studio.client, "tam-sam-xmem", label_config, label_studio.media_root / "sx", data
    )
    ml = h.connect_ml_backend(label_studio.client, pid, sam_xmem_backend.base_url, "sam-xmem")
    assert ml.get("state") == "CO", ml
    kp = h.first_control(label_config, "KeyPointLabels")
    point = h.smart_keypoint(400, 240, FRAME_W, FRAME_H, 0, *kp)
    results = h.interactive_annotate(label_studio.client, int(ml["id"]), tid, [point])
    regions = [r for r in results if r.get("type") == "brushlabels"]
    assert regions, sam_xmem_backend.describe_failure("no regions")
    assert {r["item_index"] for r in regions} <= set(range(FRAMES))
    assert all(r["id"].startswith("tam-o1-f") for r in regions)
    for r in regions:
        alpha = h.decode_brush(r)
        assert alpha.shape == (FRAME_H, FRAME_W) and set(np.unique(alpha)) <= {0, 255}
    log_text = (label_studio.workdir / "sam-xmem.log").read_text()
    assert "engine sam-xmem ready" in log_text
