"""End to end with the SAM + XMem engine: a click in a real Label Studio → per-frame masks.

No real weights exist here, so the backend loads a tiny SAM and the golden XMem weights from
checkpoint files, through the production loader (``tests/engines.py``). The masks are those of
random weights; what is tested is the path: checkpoints → engine → LS suggestions.
"""

from __future__ import annotations

from collections.abc import Iterator

import ls_harness as h
import pytest
import requests
import torch
from ls_harness import LabelStudio

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
    with h.our_backend(
        label_studio,
        "sam-xmem",
        ENGINE="tests.engines:tiny_sam_xmem",
        SAM_CHECKPOINT=str(weights / "sam_tiny.pth"),
        XMEM_CHECKPOINT=str(weights / "xmem.pth"),
        PYTHONPATH=str(h.REPO_ROOT),
        PREDICT_BUDGET_S="90",
    ) as proc:
        yield proc


def test_click_returns_sam_xmem_masks(label_studio: LabelStudio, label_config, sam_xmem_backend):
    health = requests.get(f"{sam_xmem_backend.base_url}/health", timeout=5).json()
    assert health["engine"] == "sam-xmem" and health["checkpoints"] == {
        "sam": True,
        "xmem": True,
        "sam2": False,
    }
    regions = h.one_click_brushes(
        label_studio, sam_xmem_backend, label_config, "car-shadow", FRAMES
    )
    assert all(r["id"].startswith("tam-o1-f") for r in regions)
    log_text = (label_studio.workdir / "sam-xmem.log").read_text()
    assert "engine sam-xmem ready" in log_text
