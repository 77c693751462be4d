"""End to end: a click sent through a real Label Studio 1.23.2 comes back as per-frame masks.

The click goes where the UI sends it (``POST /api/ml/{id}/interactive-annotating``), LS relays it
to our backend (``_wsgi.py`` subprocess), the backend fetches the 20 car-shadow frames from LS's
local-files storage with its PAT, and LS hands the regions back. See docs/e2e-testing.md.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

import ls_harness as h
import numpy as np
import pytest
from _echo_backend import ECHO_RADIUS, disk_mask
from ls_harness import FRAME_COUNT, FRAME_H, FRAME_W, FramesProject, Interaction, LabelStudio

from backend.masks import jaccard

log = logging.getLogger(__name__)
pytestmark = pytest.mark.e2e

# Mean J over the 20 frames that the backend's one-click result must reach.
# Measured through LS with the default weights-free engine: mean J 0.793 (min per frame 0.747),
# then 0.782 (min 0.758) after an engine revision; repeated runs of one revision give identical J. References on the same frames (recomputed and logged below):
#   blank 0.00, full frame 0.08, centre box 0.31, frame-0 GT shifted 40 px 0.38,
#   frame-0 GT copied to every frame (perfect first frame, NO tracking) 0.535.
# 0.65 is 0.11 above the best of them, so passing needs a correct first-frame mask AND real
# propagation, and ~0.13 below the measured values, so small engine changes do not flake it.
MIN_MEAN_J = 0.65


def brush_regions(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in results if r.get("type") == "brushlabels"]


def check_region_shape(region: dict[str, Any], project: FramesProject) -> None:
    """One brush region is well-formed for the multi-image config."""
    from_name, to_name, _ = project.brush
    assert region["from_name"] == from_name and region["to_name"] == to_name
    assert (region["original_width"], region["original_height"]) == (FRAME_W, FRAME_H)
    assert region["value"]["format"] == "rle"
    assert region["value"]["brushlabels"] == [project.keypoint[2]]


def masks_by_frame(regions: list[dict[str, Any]]) -> dict[int, np.ndarray]:
    """Decode every region; assert each frame index appears exactly once (one object)."""
    counts = Counter(int(r["item_index"]) for r in regions)
    assert sorted(counts) == list(range(FRAME_COUNT)), f"frames covered: {sorted(counts)}"
    assert set(counts.values()) == {1}, f"regions per frame: {dict(counts)}"
    out = {}
    for r in regions:
        alpha = h.decode_brush(r)
        assert alpha.shape == (FRAME_H, FRAME_W)
        assert set(np.unique(alpha)) <= {0, 255}, f"non-binary alpha {np.unique(alpha)[:10]}"
        out[int(r["item_index"])] = alpha == 255
    return out


def mean_j(masks: list[np.ndarray], gts: list[np.ndarray]) -> float:
    return float(np.mean([jaccard(m, g) for m, g in zip(masks, gts, strict=True)]))


def test_harness_roundtrip_with_echo_backend(
    echo_interaction: Interaction, echo_project: FramesProject
) -> None:
    """Known-answer check of the harness: LS relays the echo backend's exact disks per frame."""
    regions = brush_regions(echo_interaction.results)
    for r in regions:
        check_region_shape(r, echo_project)
    masks = masks_by_frame(regions)
    cx, cy = echo_interaction.click_xy
    expected = disk_mask(FRAME_W, FRAME_H, cx, cy, ECHO_RADIUS) == 255
    for index, mask in masks.items():
        assert np.array_equal(mask, expected), f"frame {index} differs from the echoed disk"


def test_click_through_label_studio_masks_every_frame(
    tam_interaction: Interaction, tam_project: FramesProject, gt_masks: list[np.ndarray]
) -> None:
    """One positive click on frame 0 → one correct, tracked brush mask on each of 20 frames."""
    regions = brush_regions(tam_interaction.results)
    for r in regions:
        check_region_shape(r, tam_project)
    masks = masks_by_frame(regions)
    pred = [masks[i] for i in range(FRAME_COUNT)]

    cx, cy = tam_interaction.click_xy
    assert pred[0][int(cy), int(cx)], "the frame-0 mask does not cover the click"

    per_frame = [jaccard(m, g) for m, g in zip(pred, gt_masks, strict=True)]
    got = float(np.mean(per_frame))
    references = {
        "full frame": mean_j([np.ones_like(gt_masks[0])] * FRAME_COUNT, gt_masks),
        "centre box": mean_j([centre_box(gt_masks[0])] * FRAME_COUNT, gt_masks),
        "frame-0 GT shifted 40 px": mean_j(
            [np.roll(gt_masks[0], 40, axis=1)] * FRAME_COUNT, gt_masks
        ),
        "frame-0 GT, no tracking": mean_j([gt_masks[0]] * FRAME_COUNT, gt_masks),
    }
    log.info(
        "mean J %.3f (min %.3f) in %.1f s; references %s",
        got,
        min(per_frame),
        tam_interaction.seconds,
        {k: round(v, 3) for k, v in references.items()},
    )
    # The threshold must separate tracking from the trivial answers, else this test means nothing.
    assert max(references.values()) + 0.03 < MIN_MEAN_J, references
    assert got >= MIN_MEAN_J, f"mean J {got:.3f} < {MIN_MEAN_J}; per frame {np.round(per_frame, 2)}"


def centre_box(like: np.ndarray) -> np.ndarray:
    """A box over the middle half of the frame: what a guessing backend might return."""
    box = np.zeros_like(like, dtype=bool)
    hh, ww = like.shape
    box[hh // 4 : 3 * hh // 4, ww // 4 : 3 * ww // 4] = True
    return box


def test_accepting_the_prediction_keeps_frames_and_region_ids(
    label_studio: LabelStudio, tam_project: FramesProject, tam_interaction: Interaction
) -> None:
    """Saving the suggestions as an annotation (what "accept all" + Submit stores) keeps, per
    region, its frame (``item_index``), its ``id`` and its label, so objects stay identifiable."""
    client, task_id = label_studio.client, tam_project.task_id
    sent = brush_regions(tam_interaction.results)
    assert sent and all(r.get("id") for r in sent), "regions need ids: the UI keeps them on accept"
    assert len({r["id"] for r in sent}) == len(sent), "region ids must be unique"
    # LS does not store interactive answers as predictions: the UI only shows them as suggestions.
    assert client.get("/api/predictions", params={"task": task_id}) == []

    created = client.post(f"/api/tasks/{task_id}/annotations", {"result": sent})
    stored = client.get(f"/api/annotations/{created['id']}")["result"]

    def key(r: dict[str, Any]) -> tuple:
        return (r.get("id"), r["item_index"], tuple(r["value"]["brushlabels"]))

    assert sorted(map(key, stored)) == sorted(map(key, sent))
    by_id = {r["id"]: r for r in sent}
    for r in stored:
        assert r["value"]["rle"] == by_id[r["id"]]["value"]["rle"]
