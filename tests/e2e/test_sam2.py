"""End to end with the SAM 2 engine: a click in a real Label Studio → per-frame masks.

No real weights exist here, so the backend loads SAM 2.1 tiny with random weights from an
official-format checkpoint file through the production loader (``ENGINE=sam2``), at a 64-pixel
input side to stay quick on a CPU. The masks mean nothing; what is tested is the path:
checkpoint → engine → Label Studio suggestions.
"""

from __future__ import annotations

from collections.abc import Iterator

import ls_harness as h
import pytest
import requests
from ls_harness import LabelStudio

from tests.sam2_engine.conftest import SIDE, save_random_checkpoint

pytestmark = pytest.mark.e2e
FRAMES = 4


@pytest.fixture(scope="module")
def sam2_backend(label_studio: LabelStudio) -> Iterator[h.ManagedProcess]:
    weights = label_studio.workdir / "weights"
    weights.mkdir(exist_ok=True)
    checkpoint = save_random_checkpoint(weights / "sam2.1_hiera_tiny.pt")
    with h.our_backend(
        label_studio,
        "sam2",
        SAM2_CHECKPOINT=str(checkpoint),  # auto: SAM 2 is chosen when its checkpoint is set
        SAM2_IMAGE_SIZE=str(SIDE),
        PREDICT_BUDGET_S="90",
    ) as proc:
        yield proc


def test_click_returns_sam2_masks(label_studio: LabelStudio, label_config, sam2_backend):
    health = requests.get(f"{sam2_backend.base_url}/health", timeout=5).json()
    assert health["engine"] == "sam2" and health["checkpoints"]["sam2"] is True
    assert health["device"] == "cpu" and health["model_version"].startswith("tam-sam2.1_hiera_t")
    regions = h.one_click_brushes(
        label_studio, sam2_backend, label_config, "horsejump-high", FRAMES
    )
    assert 0 in {r["item_index"] for r in regions}
    assert "engine sam2 ready" in (label_studio.workdir / "sam2.log").read_text()
